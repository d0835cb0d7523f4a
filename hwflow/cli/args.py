"""Argument types shared by the sub-commands: argparse reports their errors as usage errors."""

from __future__ import annotations

import argparse
from dataclasses import replace


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        msg = f"must be an integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def positive(text: str) -> int:
    value = integer(text)
    if value < 1:
        msg = f"must be a positive integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


HLS_CONFIG_HELP = ("your own hls4ml configuration: the HLSConfig dictionary as YAML (Model + LayerName/LayerType, "
                   "as hls4ml.utils.config_from_keras_model(..., granularity='name') returns it) or an hls4ml "
                   "project file (IOType, Backend, Part, ClockPeriod, HLSConfig). Every type, reuse factor and "
                   "strategy it sets is the design's; --io/--backend/--strategy/--reuse-factor fill in what it "
                   "leaves open and must agree with what it sets")


def add_hls_options(p, hls_config: bool = True) -> None:
    """--io, --backend, --strategy, --reuse-factor (None when not given, so that --hls-config can decide) and
    --hls-config."""
    p.add_argument("--io", choices=["parallel", "stream"], help="hls4ml io type (default parallel)")
    p.add_argument("--backend", choices=["Vitis", "Vivado"], help="hls4ml backend (default Vitis)")
    p.add_argument("--strategy", choices=["Latency", "Resource"], help="hls4ml strategy (default Latency)")
    p.add_argument("--reuse-factor", type=integer, help="hls4ml reuse factor (default 1)")
    p.add_argument("--keep-softmax", action="store_true",
                   help="keep the model's final softmax and compare after it (default: removed, logits compared)")
    p.add_argument("--softmax", choices=["latency", "stable", "legacy", "argmax"],
                   help="hls4ml's implementation of the softmax layers kept (default stable)")
    if hls_config:
        p.add_argument("--hls-config", metavar="FILE", help=HLS_CONFIG_HELP)


def hls_options(args):
    """HlsOptions from the flags of ``add_hls_options``: hwflow's defaults, or resolved against --hls-config."""
    from hwflow.convert import HlsOptions
    from hwflow.convert.hls_config import load_hls_config, resolve_options
    from hwflow.errors import ConversionError

    io, backend, strategy, reuse = (getattr(args, k, None) for k in ("io", "backend", "strategy", "reuse_factor"))
    path = getattr(args, "hls_config", None)
    keep = bool(getattr(args, "keep_softmax", False))
    softmax = getattr(args, "softmax", None)
    if path is None:
        reuse = 1 if reuse is None else reuse
        return HlsOptions.make(io or "parallel", backend or "Vitis", strategy or "Latency", reuse, keep_softmax=keep,
                               softmax_implementation=softmax)
    if softmax is not None:
        msg = f"--softmax with --hls-config: set the softmax layers' Implementation in {path} instead"
        raise ConversionError(msg)
    return replace(resolve_options(load_hls_config(path), io, backend, strategy, reuse), keep_softmax=keep)


def config_line(report) -> str:
    """The CLI's short summary of the merge with the user's hls4ml configuration."""
    if report is None:
        return "hls4ml configuration: hwflow's own"
    lines = [f"hls4ml configuration {report.name} ({report.digest}): {report.checked} settings as written"]
    lines += [f"  merged: {note}" for note in report.notes]
    return "\n".join(lines)
