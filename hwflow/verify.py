"""Prove that the emulator speaks for the hardware: compare it with hls4ml's C simulation, bit for bit.

The C simulation is driven with float64 samples (whose values are the float32 data, exactly), so
it returns its outputs as doubles: every output word up to 53 bits comes back exactly and the
comparison is on codes, not within a tolerance. When something differs, the C simulation is
recompiled with tracing and both sides are compared layer by layer on the first differing sample,
to name the first layer that disagrees.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwflow.convert import HlsOptions, compile_csim, convert, image_from_hls, program_from_hls
from hwflow.convert.extract import COPIES
from hwflow.convert.hls import quiet
from hwflow.convert.names import names_of
from hwflow.emulator import Emulator, Program
from hwflow.image import StoragePlan, WeightImage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mismatch:
    """Where the emulator and the C simulation first disagree."""

    layer: str
    sample: int
    index: int
    emulator: float
    csim: float

    def __str__(self) -> str:
        return (f"first mismatch at layer {self.layer}, sample {self.sample}, index {self.index}: "
                f"emulator {self.emulator!r} vs C-sim {self.csim!r}")


@dataclass(frozen=True)
class VerifyResult:
    samples: int
    layers: int
    mismatches: int  # output words that differ
    first: Mismatch | None

    @property
    def ok(self) -> bool:
        return self.mismatches == 0

    def summary(self) -> str:
        line = f"verify: {self.samples} samples, {self.layers} layers, {self.mismatches} mismatches"
        return line if self.first is None else f"{line}; {self.first}"


@dataclass
class CSimModel:
    """A converted, compiled hls4ml model with the emulator's view of it."""

    hls_model: object
    program: Program
    image: WeightImage
    output_dir: Path

    @property
    def config(self):
        """The merge report of the user's hls4ml configuration (``ConfigReport``), or None for hwflow's own."""
        return getattr(self.hls_model, "hwflow_config", None)

    def csim_logits(self, x: np.ndarray) -> np.ndarray:
        """C simulation outputs (float64, exact) for float inputs."""
        x64 = np.ascontiguousarray(np.asarray(x, dtype=np.float32), dtype=np.float64)
        with quiet():
            y = self.hls_model.predict(x64)
        return np.asarray(y, dtype=np.float64).reshape(len(x), -1)


def build_csim(model, options: HlsOptions | None = None, output_dir: str | Path | None = None,
               storage: StoragePlan | None = None, hls_model=None) -> CSimModel:
    """Convert a Keras/QKeras model and compile its C simulation (the slow part: g++).

    ``options.user_config``: the user's own hls4ml configuration (``hwflow.convert.resolve_options``).
    ``hls_model``: an hls4ml ModelGraph the user configured and converted; its Keras model and its
    configuration are taken instead of ``model`` and ``options`` (``hwflow.convert.from_hls_model``).

    ``storage``: weight scaling. Power-of-two scales in fixed point are compiled into the C
    simulation (bit-exact comparison of the scaled model); constant scales and float storage are
    in the image only (the C simulation keeps the trained weights, so ``compare`` then checks that
    the divide-back restores them; float16 words round 16-bit batch-norm values, which shows up
    as mismatches that are the float16 format's, not the scaling's).
    """
    if hls_model is not None:
        from hwflow.convert import from_hls_model

        design = from_hls_model(hls_model)
        model, options = design.model, design.options
    options = options or HlsOptions()
    out = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="hwflow-hls-"))
    hls_model = convert(model, options, out, storage=storage)
    compile_csim(hls_model)
    program = program_from_hls(hls_model, source={"backend": options.backend.value,
                                                  "strategy": options.strategy.value})
    return CSimModel(hls_model, program, image_from_hls(hls_model, storage), out)


def compare(csim: CSimModel, x: np.ndarray, locate: bool = True) -> VerifyResult:
    """Run both on ``x`` and compare the outputs word for word."""
    emulator = Emulator(csim.program, csim.image)
    emu = emulator.logits(x).reshape(len(x), -1)
    ref = csim.csim_logits(x)
    diff = emu != ref
    count = int(diff.sum())
    first = None
    if count:
        sample, index = (int(v) for v in np.argwhere(diff)[0])
        first = Mismatch(csim.program.output.name, sample, index, float(emu[sample, index]),
                         float(ref[sample, index]))
        if locate:
            first = locate_mismatch(csim, emulator, x[sample : sample + 1], sample) or first
    return VerifyResult(len(x), len(csim.program.layers), count, first)


@dataclass(frozen=True)
class LayerCheck:
    """Which layers a layer-by-layer comparison covered, which it could not, and why."""

    compared: tuple[str, ...]
    not_compared: dict[str, str]  # layer -> why hls4ml's trace has nothing to compare it with
    first: Mismatch | None  # first differing layer (in program order), sample and index

    def summary(self) -> str:
        line = f"{len(self.compared)} layers equal hls4ml's trace" if self.first is None else str(self.first)
        skipped = "; ".join(f"{name}: {why}" for name, why in self.not_compared.items())
        return f"{line}; not compared: {skipped}" if skipped else line


def compare_layers(csim: CSimModel, x: np.ndarray, emulator: Emulator | None = None,
                   first_sample: int = 0) -> LayerCheck:
    """Every layer's output on ``x`` against hls4ml's trace (which recompiles with tracing).

    hls4ml traces only the layers it runs as a C++ function; the others (the input, a reshape that
    io_parallel leaves as the same array) are returned in ``not_compared`` with the reason, so a
    caller can assert how many layers were compared instead of trusting a silent skip.
    """
    emulator = emulator or Emulator(csim.program, csim.image)
    names = names_of(csim.hls_model)  # layers hls4ml could not carry are renamed inside: map back
    hls_layers = {names.to_user(layer.name): layer for layer in csim.hls_model.get_layers()}
    for layer in csim.hls_model.get_layers():  # not a stream copy: hls4ml 1.3.0 cannot trace its two outputs
        layer.set_attr("trace", layer.class_name not in COPIES)
    x64 = np.ascontiguousarray(np.asarray(x, dtype=np.float32), dtype=np.float64)
    with quiet():
        _, hls_traced = csim.hls_model.trace(x64)
    traced = {names.to_user(name): value for name, value in hls_traced.items()}
    ours = emulator.trace(x)
    compared, not_compared, first = [], {}, None
    for spec in csim.program.layers:
        if spec.name not in traced:
            layer = hls_layers.get(spec.name)
            not_compared[spec.name] = ("not in hls4ml's graph" if layer is None else
                                       "no C++ function of its own in hls4ml (its output is its input's array)"
                                       if not layer.get_attr("function_cpp", None) else "not traced by hls4ml")
            continue
        compared.append(spec.name)
        theirs = np.asarray(traced[spec.name], dtype=np.float64).reshape(len(x), -1)
        mine = spec.result.to_float(ours[spec.name]).reshape(len(x), -1)
        bad = np.argwhere(mine != theirs)
        if bad.size and first is None:
            s, i = (int(v) for v in bad[0])
            first = Mismatch(spec.name, first_sample + s, i, float(mine[s, i]), float(theirs[s, i]))
    return LayerCheck(tuple(compared), not_compared, first)


def locate_mismatch(csim: CSimModel, emulator: Emulator, x: np.ndarray, sample: int) -> Mismatch | None:
    """First layer whose output differs, from hls4ml's trace (which recompiles with tracing)."""
    check = compare_layers(csim, x, emulator, sample)
    if check.not_compared:
        log.info("layers not in hls4ml's trace: %s", ", ".join(f"{k} ({v})" for k, v in check.not_compared.items()))
    return check.first
