"""FT-ClipAct's clipped activation on fixed-point codes: the emulator's half of a bit-exact pair.

The hardware (``hls/nnet_clipact.h``) compares each input word with a threshold held in the
*input* type of the layer (the type the comparison is made in), then assigns the result to the
layer's output type. Both halves quantize the threshold with :func:`threshold_code`, so they
compare against the very same word:

- ``T`` (a real, ``>= 0``) becomes ``floor(T * 2**frac)`` of the input type, clamped to
  ``[0, max_code]``. Rounding down is exact for a comparison: for every value ``x`` the input type
  can hold, ``x <= T`` if and only if ``code(x) <= floor(T * 2**frac)``. A threshold at or above the
  input type's largest value clips nothing.
- ``mode="zero"`` (the paper's form): ``y = x`` if ``0 < x <= T``, else 0.
- ``mode="saturate"``: ``y = min(max(x, 0), T)``.
- Then ``y`` is cast to the output type (its rounding and overflow modes), as for hls4ml's ReLU.

The sloped forms (``Kind.CLIPACT_SLOPED``: a clipped LeakyReLU, PReLU or ``quantized_relu`` with a
negative slope, ``hls/nnet_clipact.h``'s ``clipact_sloped`` / ``clipact_prelu``) clip the positive
side exactly so and keep the negative side as the activation computes it: for ``x <= 0``,
``y = (res_T)(alpha * x)``, the exact product of the input word and ``alpha`` in ``param_t`` (one
scalar, the C++ literal converted to ``param_t``; or PReLU's ``param`` array, one word per input
position, held in weight memory and faulted like any weight), then cast. A clipped ELU keeps hls4ml's
ELU below zero (``alpha * elu_table[index]``, ``hwflow.emulator.activations.param_activation``).
"""

from __future__ import annotations

import math

import numpy as np

from hwflow.emulator.activations import param_activation, prelu_codes
from hwflow.emulator.kernels import register_op
from hwflow.emulator.program import Kind, LayerSpec, Program, register_arrays
from hwflow.errors import EmulatorError
from hwflow.fixed import FixedType, cast, parse_type, quantize_float

CLIP_KINDS = (Kind.CLIPACT, Kind.CLIPACT_SLOPED)
"""The clipped activations: a clipped ReLU, and one whose negative side has a slope."""
ALPHA_FORMS = ("scalar", "array", "elu")
"""A sloped clip's negative side: ``alpha x`` with one ``param`` attribute (LeakyReLU, quantized_relu), with a
``param`` array (PReLU), or ELU's ``alpha * table(x)`` (hls4ml's ELU table, ``table_size`` / ``table_t``)."""

register_arrays(Kind.CLIPACT_SLOPED, ("param",))

MODES = ("zero", "saturate")
"""Clip modes: values above the threshold become 0 (``zero``, the paper's) or the threshold."""


def check_threshold(threshold: object, where: str = "threshold", error: type[Exception] = EmulatorError) -> float:
    """The threshold as a float, or ``error`` saying what a threshold must be."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        msg = f"{where} must be a real number >= 0, got {threshold!r}"
        raise error(msg)
    value = float(threshold)
    if not math.isfinite(value) or value < 0:
        msg = f"{where} must be a finite number >= 0, got {threshold!r}"
        raise error(msg)
    return value


def check_mode(mode: object, where: str = "mode", error: type[Exception] = EmulatorError) -> str:
    """The mode, or ``error`` naming the two modes."""
    if not isinstance(mode, str) or mode not in MODES:
        msg = f"{where} must be one of {', '.join(MODES)}, got {mode!r}"
        raise error(msg)
    return str(mode)


def threshold_code(threshold: float, x_type: FixedType) -> int:
    """The threshold's code in the input type: ``floor(T * 2**frac)`` clamped to ``[0, max_code]``.

    ``math.floor`` of ``ldexp`` is exact (a power-of-two scaling of a double), so the same code
    comes out on every machine; the C++ side receives this code's value (see ``threshold_value``).
    """
    t = check_threshold(threshold)
    scaled = math.ldexp(t, x_type.frac)
    if scaled >= x_type.max_code:
        return int(x_type.max_code)
    return max(0, min(int(math.floor(scaled)), x_type.max_code))


def threshold_value(threshold: float, x_type: FixedType) -> float:
    """The real value of :func:`threshold_code` (exact in float64 for types up to 53 bits)."""
    if x_type.width > 53:
        msg = (f"the clipped activation's input type {x_type} is wider than 53 bits: its threshold "
               "cannot be written exactly; narrow the preceding layer's result type")
        raise EmulatorError(msg)
    return math.ldexp(float(threshold_code(threshold, x_type)), -x_type.frac)


def clip_codes(x: np.ndarray, x_type: FixedType, result: FixedType, threshold: float, mode: str) -> np.ndarray:
    """The clipped activation of input codes ``x`` (exact float64 or integer codes) as ``result`` codes."""
    mode = check_mode(mode)
    t = float(threshold_code(threshold, x_type))
    x = np.asarray(x, dtype=np.float64)
    if mode == "zero":
        y = np.where(x > t, 0.0, x)
        np.maximum(y, 0.0, out=y)
    else:
        y = np.clip(x, 0.0, t)
    return cast(y, x_type, result)


def clip_layer(layer: LayerSpec, x: np.ndarray, x_type: FixedType) -> np.ndarray:
    """A ``Kind.CLIPACT`` layer of a Program (attributes ``threshold`` and ``mode``) on codes ``x``."""
    where = f"clipped activation {layer.name}"
    threshold = check_threshold(layer.attrs.get("threshold"), f"{where}: threshold")
    mode = check_mode(layer.attrs.get("mode"), f"{where}: mode")
    return clip_codes(x, x_type, layer.result, threshold, mode)


def sloped_codes(x: np.ndarray, x_type: FixedType, result: FixedType, threshold: float, mode: str,
                 alpha: np.ndarray | int, alpha_type: FixedType) -> np.ndarray:
    """A sloped clip on input codes ``x``: the positive side as :func:`clip_codes`, ``(res_T)(alpha * x)``
    for ``x <= 0`` (``alpha``: codes in ``alpha_type``, one scalar or shaped to broadcast with a sample)."""
    codes = np.asarray(x)
    positive = clip_codes(codes, x_type, result, threshold, mode)
    negative = prelu_codes(np.minimum(codes, 0), x_type, alpha, alpha_type, result)
    return np.where(codes > 0, positive, negative)


def scalar_alpha(layer: LayerSpec) -> tuple[int, FixedType]:
    """The slope's code in ``param_t``: the literal hls4ml writes into the call, converted as C++ does."""
    try:
        param_t = parse_type(layer.attrs["param_t"])
        alpha = float(layer.attrs["param"])
    except (KeyError, TypeError, ValueError):
        msg = f"clipped activation {layer.name} has no param/param_t in its program; convert the model again"
        raise EmulatorError(msg) from None
    return int(quantize_float(np.float64(alpha), param_t)), param_t


def scalar_sloped_codes(layer: LayerSpec, x: np.ndarray, x_type: FixedType) -> np.ndarray:
    """A sloped clip whose negative side holds no array: one slope (``alpha: scalar``) or ELU's table."""
    where = f"clipped activation {layer.name}"
    threshold = check_threshold(layer.attrs.get("threshold"), f"{where}: threshold")
    mode = check_mode(layer.attrs.get("mode"), f"{where}: mode")
    if layer.attrs.get("alpha") != "elu":
        alpha, alpha_type = scalar_alpha(layer)
        return sloped_codes(x, x_type, layer.result, threshold, mode, alpha, alpha_type)
    codes = np.asarray(x)
    elu = LayerSpec(layer.name, Kind.PARAM_ACTIVATION, layer.inputs, layer.output_shape, layer.result,
                    attrs={**layer.attrs, "activation": "elu"})
    negative = param_activation(elu, np.minimum(codes, 0), x_type)
    return np.where(codes > 0, clip_codes(codes, x_type, layer.result, threshold, mode), negative)


def sloped_layer(emulator, layer: LayerSpec, inputs: list[np.ndarray], types: list[FixedType]) -> np.ndarray:
    """A ``Kind.CLIPACT_SLOPED`` layer (attributes ``threshold``, ``mode``, ``alpha`` and, for a scalar
    slope, ``param``/``param_t``; PReLU's words come from the image's ``param`` array)."""
    where = f"clipped activation {layer.name}"
    threshold = check_threshold(layer.attrs.get("threshold"), f"{where}: threshold")
    mode = check_mode(layer.attrs.get("mode"), f"{where}: mode")
    x = inputs[0]
    if layer.attrs.get("alpha") == "array":
        w = emulator.weights(layer, "param")
        if w is None or not w.is_fixed:
            held = "none" if w is None else "floats"
            msg = f"{where} needs its param array in fixed point (the WeightImage holds {held})"
            raise EmulatorError(msg)
        alpha, alpha_type = np.asarray(w.codes).reshape(tuple(np.shape(x)[1:])), w.type
        return sloped_codes(x, types[0], layer.result, threshold, mode, alpha, alpha_type)
    return scalar_sloped_codes(layer, x, types[0])


register_op(Kind.CLIPACT_SLOPED, sloped_layer)


def hardware_thresholds(program: Program) -> dict[str, float]:
    """The threshold each clipped activation of ``program`` really compares with (quantized)."""
    out = {}
    for layer in program.layers:
        if layer.kind in CLIP_KINDS:
            x_type = program.layer(layer.inputs[0]).result
            out[layer.name] = threshold_value(layer.attrs["threshold"], x_type)
    return out
