"""Layers that keep channels apart: batch normalization, activations, FT-ClipAct, pooling,
global pooling and zero padding.

Each output channel depends on the same input channel only, and every sample on itself, so a
block of changed samples x channels maps to a block of the same samples x channels: the layer's
kernel runs on the block alone (its weights sliced to the block's channels). Batch-norm words that
a fault changed add their channels, for every sample, recomputed from the fault-free input.
Pooling reads whole windows: a block holds all spatial positions of its channels, so the windows
holding a changed input are inside it. Weightless kinds use the emulator's own kernel
(``Emulator._layer``); batch normalization, whose weights the block slices, calls the same
``hwflow.emulator.ops`` kernels the emulator calls.

FT-ClipAct's clip is monotone only in saturate mode (and with a cast that cannot wrap); its sloped form
(``Kind.CLIPACT_SLOPED``: a clipped LeakyReLU / PReLU) has its own rule, ``delta.clipact``.
"""

from __future__ import annotations

import numpy as np

from hwflow.campaign.delta.registry import Step, register_rule
from hwflow.campaign.delta.state import Block, Delta, spread_channels
from hwflow.emulator import Kind, LayerSpec, activations, ops
from hwflow.emulator.run import Weights
from hwflow.fixed import FixedType, Overflow, requantize_unbounded, value_range

MONOTONE_OVERFLOW = (Overflow.SAT, Overflow.SAT_SYM)  # overflow modes that keep a cast non-decreasing


def slice_channels(w: Weights, channels: np.ndarray | None) -> Weights:
    """An array's per-channel entries (last logical axis) for ``channels`` only."""
    if channels is None:
        return w
    if w.codes is not None:
        return Weights(np.take(w.codes, channels, axis=-1), w.type, None)
    return Weights(None, None, np.take(w.values, channels, axis=-1))


def changed_channels(step: Step) -> np.ndarray:
    """Output channels of the layer's arrays whose words a fault changed."""
    n = int(step.layer.output_shape[-1])
    parts = [np.asarray(idx) % n for idx in step.changed.values()]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


class Channelwise:
    """Weightless per-channel layers: the emulator's kernel on each block."""

    def full(self, step: Step, x: np.ndarray, weights: dict[str, Weights]) -> np.ndarray:
        return step.emulator._layer(step.layer, x, step.x_type)

    def delta(self, step: Step) -> Delta:
        return [Block(b.samples, b.channels, self.full(step, b.values, {})) for b in step.inputs]

    def needs_input(self, layer: LayerSpec) -> bool:
        return False

    def monotone(self, step: Step) -> np.ndarray | int | None:
        """Per output channel, +1 where the layer is non-decreasing in its input and -1 where it is
        non-increasing; ``None`` when it is neither (a wrapping cast, FT-ClipAct's zero mode).

        Max pooling commutes with such a function (with the minimum where it decreases), which lets
        the engine pool a block before it, on a quarter of the values."""
        layer = step.layer
        if layer.kind is Kind.ACTIVATION and layer.attrs.get("activation") in ("relu", "linear"):
            return 1 if _cast_monotone(step.x_type, layer.result) else None
        if layer.kind is Kind.CLIPACT and layer.attrs.get("mode") == "saturate":
            return 1 if _cast_monotone(step.x_type, layer.result) else None
        if layer.kind is Kind.ACTIVATION and layer.attrs.get("activation") in activations.LUT_FUNCTIONS:
            return activations.lut_direction(layer, step.x_type)  # sigmoid, tanh, ...: tables checked
        return None


class BatchNorm(Channelwise):
    """hls4ml's ``normalize``, per channel; faulty scale/bias words add their channels."""

    def full(self, step: Step, x: np.ndarray, weights: dict[str, Weights]) -> np.ndarray:
        s, b = weights["scale"], weights["bias"]
        if s.is_fixed and b.is_fixed:
            return ops.batchnorm_fixed(x, step.x_type, s.codes, s.type, b.codes, b.type, step.layer.result)
        return ops.batchnorm_float(x, step.x_type, s.real(), b.real(), step.layer.result)

    def delta(self, step: Step) -> Delta:
        blocks = spread_channels(step.inputs, changed_channels(step), step.golden[step.input_name])
        out = []
        for b in blocks:
            weights = {name: slice_channels(w, b.channels) for name, w in step.weights.items()}
            out.append(Block(b.samples, b.channels, self.full(step, b.values, weights)))
        return out

    def needs_input(self, layer: LayerSpec) -> bool:
        return True

    def monotone(self, step: Step) -> np.ndarray | int | None:
        s, b = step.weights["scale"], step.weights["bias"]
        if not (s.is_fixed and b.is_fixed):
            return None
        result, x_type = step.layer.result, step.x_type
        p_frac = x_type.frac + s.type.frac
        frac = max(p_frac, b.type.frac)
        scale = s.codes.astype(np.int64).reshape(-1)
        bias = np.left_shift(b.codes.astype(np.int64).reshape(-1), frac - b.type.frac)
        if result.overflow not in MONOTONE_OVERFLOW:  # the sum must never leave the result's range
            for x in (x_type.min_code, x_type.max_code):
                if abs(x) * int(np.abs(scale).max(initial=0)) >= 2**61:
                    return None
                ends = requantize_unbounded(np.left_shift(x * scale, frac - p_frac) + bias, frac, result)
                if ends.min() < result.min_code or ends.max() > result.max_code:
                    return None
        return np.where(scale < 0, -1, 1)


class ZeroPad(Channelwise):
    """Zero padding: a block's codes written into zeros in their own dtype where the cast to the result is
    the identity (the emulator's kernel would convert them to float64 and back); else the kernel."""

    def delta(self, step: Step) -> Delta:
        layer = step.layer
        if not _identity(step.x_type, layer.result):
            return super().delta(step)
        a = layer.attrs
        if layer.kind is Kind.ZEROPAD2D:
            before, after = (a["pad_top"], a["pad_left"]), (a["pad_bottom"], a["pad_right"])
        else:
            before, after = (a["pad_left"],), (a["pad_right"],)
        out = []
        for b in step.inputs:
            values = np.asarray(b.values)
            spatial = values.shape[1:-1]
            padded = np.zeros((len(values),) + tuple(n + lo + hi for n, lo, hi in zip(spatial, before, after,
                                                                                    strict=True))
                              + values.shape[-1:], dtype=values.dtype)
            padded[(slice(None),) + tuple(slice(lo, lo + n) for n, lo in zip(spatial, before, strict=True))] = values
            out.append(Block(b.samples, b.channels, padded))
        return out


def _identity(src: FixedType, dst: FixedType) -> bool:
    """Whether assigning ``src`` codes to ``dst`` leaves every code as it is."""
    lo, hi = value_range(src, dst)
    return src.frac == dst.frac and dst.min_code <= lo and hi <= dst.max_code


def _cast_monotone(src: FixedType, dst: FixedType) -> bool:
    lo, hi = value_range(src, dst)
    return dst.overflow in MONOTONE_OVERFLOW or (dst.min_code <= lo and hi <= dst.max_code)


register_rule(Kind.BATCHNORM, BatchNorm())
for _kind in (Kind.ACTIVATION, Kind.CLIPACT, Kind.GLOBALPOOL1D, Kind.GLOBALPOOL2D):
    register_rule(_kind, Channelwise())  # POOL1D / POOL2D: ``pooling.Pool``
for _kind in (Kind.ZEROPAD1D, Kind.ZEROPAD2D):
    register_rule(_kind, ZeroPad())
