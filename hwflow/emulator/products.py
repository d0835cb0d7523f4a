"""hls4ml's special products and threshold layers (QKeras binary, ternary, po2, alpha), bit-exact on codes.

``nnet_mult.h`` picks a product per layer (``hwflow.convert.layers_quant``):

- ``weight_binary`` / ``weight_ternary``: ``w == 0 ? -a : a`` and ``0 / -a / a``; the WeightImage
  decodes those words to multipliers -1, 0, +1 (``hwflow.image.quantized``), so the ordinary
  fixed-point kernels compute them exactly and nothing here is needed;
- ``data_binary``: the input is XNOR data (0 meaning -1): ``a == 0 ? -w : w``, i.e. the input code
  ``2a - 1`` times the weight;
- ``both_binary``: ``a == w`` (0 or 1) summed into ``accum_t``; the result is
  ``(ap_int<ceillog2(n_in)+2>)(2 acc - n_in)`` (``nnet::cast`` for ``ap_uint<1>`` data and weights:
  an ``ap_fixed`` becomes an ``ap_int`` truncated toward zero, as C converts a double), then ``res_t``;
- ``weight_exponential``: ``r_T y = (r_T) a << e; sign ? y : -y`` with
  ``r_T = ap_fixed<2 (E + Wx), E + Wx>`` (E exponent bits, Wx input width), then ``accum_t``.

Exponent products are computed as fixed-point multipliers ``+-2**e`` where every ``e`` present keeps
the shift exact in ``r_T`` (a trained network; most faults); otherwise with Python integers, shift for
shift as ``ap_fixed`` does it (a flipped exponent bit that shifts a word out of ``r_T``). Shifts of
``r_T``'s width or more follow ``ap_private``'s one-word rules (``shl``: 0 at the width, the sign
beyond; ``ashr``: 0 at the width) where ``r_T`` fits 64 bits. Beyond that the C++ is undefined (a
wider ``ap_private`` shifts outside its words, a one-word ``ashr`` past 63 shifts modulo 64) and we
take a shifter's answer: 0 to the left, the sign to the right, which is also what hls4ml's C
simulation gave for every such fault we measured (18-bit exponents flipped up to 2^16 against a
68-bit ``r_T``, ``tests/test_quantizers.py``), though the C++ does not promise it.

Threshold layers: ``BatchNormalizationQuantizedTanh`` (``normalize_binary_tanh``: ``x >= t``;
``normalize_ternary_tanh``: ``x > hi`` -> 1, ``x <= lo`` -> -1, else 0), and the activation
``binary_tanh`` (+-1, or 1/0 into ``ap_uint<1>``). A ternary activation hls4ml does not merge into a
batch norm (a ``TernaryTanh``) gets no C++ call from hls4ml 1.3.0: the converter refuses it.
``ApplyAlpha`` is hls4ml's ``normalize`` with the product of its scale type.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwflow.emulator import ops
from hwflow.emulator.kernels import register_op
from hwflow.emulator.program import Kind, LayerSpec
from hwflow.errors import EmulatorError
from hwflow.fixed import FixedType, Overflow, Rounding, cast, overflow, requantize
from hwflow.image import quantized

DATA_BINARY = ("data_binary", "both_binary")
THRESHOLD_ACTIVATIONS = ("binary_tanh", "binary")
_MAX_FAST_WIDTH = 40  # widest +-2**e multiplier type the fixed-point kernels are given


@dataclass(frozen=True)
class Exponents:
    """A po2 array as stored: per weight a sign (1: positive) and a signed exponent of ``bits`` bits."""

    sign: np.ndarray
    exponent: np.ndarray
    bits: int

    def reshape(self, shape) -> Exponents:
        return Exponents(self.sign.reshape(shape), self.exponent.reshape(shape), self.bits)

    @classmethod
    def of(cls, array) -> Exponents:
        """From a StoredArray in the exponent format, in the logical layout."""
        bits = array.format.exponent_bits
        sign, e = quantized.exponent_fields(array.words, bits)
        return cls(array.to_logical(sign), array.to_logical(e), bits)


def special(layer: LayerSpec, w) -> bool:
    """Whether a multiply-accumulate layer needs this module (XNOR data, or po2 weights): the fused path
    and the linear delta rule must leave it alone."""
    return layer.attrs.get("product") in DATA_BINARY or getattr(w, "exponent", None) is not None


# --- multiply-accumulate ---------------------------------------------------------------------------


def linear(layer: LayerSpec, x: np.ndarray, x_type: FixedType, w, b, accum: FixedType, result: FixedType,
           order: np.ndarray | None = None, shape: tuple[int, int] | None = None) -> np.ndarray:
    """hls4ml's dense (or a convolution's im2col rows) with the layer's product; ``w``/``b``: Weights."""
    product = layer.attrs.get("product", "mult")
    if accum is None:
        msg = f"layer {layer.name} has no accumulator type"
        raise EmulatorError(msg)
    b_codes, b_type = (b.codes, b.type) if b is not None and b.is_fixed else (None, None)
    if b is not None and not b.is_fixed:
        msg = f"layer {layer.name}: a {product} product with a non-fixed-point bias is not emulated"
        raise EmulatorError(msg)
    if product in DATA_BINARY:
        x = 2 * np.asarray(x, dtype=np.int64) - 1  # XNOR data: 0 means -1
        x_type = quantized.MULTIPLIER_TYPE
    exps = getattr(w, "exponent", None)
    if exps is not None:
        exps = exps.reshape(shape) if shape is not None else exps
        return linear_exponent(x, x_type, exps, b_codes, b_type, accum, result, order)
    wmat = w.codes.reshape(shape) if shape is not None else w.codes
    if product == "both_binary":
        return _both_binary(x, wmat, b_codes, b_type, accum, result)
    return ops.linear_fixed(x, x_type, wmat, w.type, b_codes, b_type, accum, result, order)


def _both_binary(x: np.ndarray, w: np.ndarray, b, b_type, accum: FixedType, result: FixedType) -> np.ndarray:
    """``acc = bias + sum(a == w)``, then ``(ap_int<ceillog2(n)+2>)(2 acc - n)``, then ``res_t``."""
    n = w.shape[0]
    agree = (ops.exact_matmul(x, w, quantized.MULTIPLIER_TYPE, quantized.MULTIPLIER_TYPE).astype(np.int64) + n) // 2
    one = 1 << accum.frac if accum.frac >= 0 else 0  # the product ap_uint<1>(1) in accum_t (TRN: 0 if no unit)
    bias = requantize(b, b_type.frac, accum) if b is not None else np.zeros(w.shape[1], dtype=np.int64)
    if accum.overflow not in (Overflow.WRAP, Overflow.SAT):
        msg = f"an XNOR product into a {accum.overflow.value} accumulator is not emulated"
        raise EmulatorError(msg)
    acc = overflow(bias[None, :] + agree * one, accum)  # non-negative steps: a saturating sum clips once
    bits = ceillog2(n) + 2
    out_t = FixedType(bits, bits, rounding=Rounding.TRN_ZERO)  # ap_fixed -> ap_int truncates toward zero (C-like)
    if accum.frac >= 0:
        twice, frac = 2 * acc - (n << accum.frac), accum.frac
    else:
        twice, frac = (2 * acc << -accum.frac) - n, 0
    return cast(requantize(twice, frac, out_t), out_t, result)


def ceillog2(x: int) -> int:
    """``nnet::ceillog2`` (nnet_helpers.h)."""
    return 1 if x <= 2 else 1 + ceillog2((x + 1) // 2)


def exact_multipliers(exps: Exponents, x_type: FixedType) -> tuple[np.ndarray, FixedType] | None:
    """``+-2**e`` as fixed-point codes when every shift is exact in ``r_T`` (and the type is narrow), else None."""
    if exps.sign.size == 0:
        return np.zeros(exps.sign.shape, dtype=np.int64), FixedType(2, 2)
    wr, fr = 2 * (exps.bits + x_type.width), exps.bits + x_type.width
    up = fr - x_type.frac  # a in r_T: its code shifted left by `up`
    lo, hi = int(exps.exponent.min()), int(exps.exponent.max())
    a_bits = x_type.width + (0 if x_type.signed else 1)  # as a signed number
    if up < 0 or lo < -up or a_bits + up + hi > wr - 1 or x_type.integer > fr:
        return None
    width = hi - lo + 2
    if width > _MAX_FAST_WIDTH:
        return None
    codes = np.where(exps.sign == 1, 1, -1) * np.left_shift(np.int64(1), exps.exponent - lo)
    return codes.astype(np.int64), FixedType(width, hi + 2)


def exponent_products(a: np.ndarray, x_type: FixedType, sign: np.ndarray, e: np.ndarray, bits: int) -> np.ndarray:
    """``weight_exponential`` on Python integers: the products as ``r_T`` codes (object array, frac ``E + Wx``)."""
    wr, fr = 2 * (bits + x_type.width), bits + x_type.width
    a = np.asarray(a).astype(np.int64).astype(object)
    up = fr - x_type.frac
    big = a * (1 << up) if up >= 0 else np.floor_divide(a, 1 << -up)  # (r_T) a: TRN
    big = _wrap(big, wr)
    e = np.asarray(e).astype(object)
    y = np.empty(np.broadcast(big, e).shape, dtype=object)
    big, e, s = np.broadcast_arrays(big, e, np.asarray(sign))
    flat_a, flat_e, flat_s, flat_y = big.reshape(-1), e.reshape(-1), s.reshape(-1), y.reshape(-1)
    for i in range(flat_y.size):
        v, sh = int(flat_a[i]), int(flat_e[i])
        if sh >= wr:  # ap_private::shl of one word: 0 at the width, the sign beyond; wider r_T: shifted out
            r = 0 if sh == wr or v >= 0 or wr > 64 else -1
        elif sh >= 0:
            r = _wrap_int(v << sh, wr)
        elif -sh == wr and wr <= 64:  # ap_private::ashr of one word: 0 at the width
            r = 0
        else:
            r = v >> min(-sh, wr + 1)  # arithmetic: 0 or -1 once everything is shifted out
        flat_y[i] = r if int(flat_s[i]) == 1 else _wrap_int(-r, wr)
    return y


def _wrap_int(v: int, width: int) -> int:
    span = 1 << width
    v &= span - 1
    return v - span if v >= span >> 1 else v


def _wrap(a: np.ndarray, width: int) -> np.ndarray:
    return np.vectorize(lambda v: _wrap_int(int(v), width), otypes=[object])(a) if a.size else a


def _requantize_int(codes: np.ndarray, src_frac: int, dst: FixedType) -> np.ndarray:
    """``requantize`` on Python integers of any size (object arrays), to int64 codes of ``dst``."""
    shift = src_frac - dst.frac
    if shift <= 0:
        moved = codes * (1 << -shift)
    else:
        floor = np.floor_divide(codes, 1 << shift)
        rem = codes - floor * (1 << shift)
        from hwflow.fixed import _round_up

        neg = np.array([int(v) < 0 for v in codes.reshape(-1)], dtype=bool).reshape(codes.shape)
        up = _round_up(floor.astype(object), rem.astype(object), 1 << shift, neg, dst.rounding)
        moved = floor + up.astype(object)
    # overflow on big integers: reduce into 62 bits first where it is modular, clamp where it saturates
    if dst.overflow is Overflow.WRAP:
        span = 1 << dst.width
        moved = np.vectorize(lambda v: ((int(v) - dst.min_code) % span) + dst.min_code, otypes=[object])(moved)
    else:
        lo, hi = dst.min_code, dst.max_code
        clamp = lo - 1, hi + 1
        moved = np.vectorize(lambda v: min(max(int(v), clamp[0]), clamp[1]), otypes=[object])(moved)
    return overflow(moved.astype(np.int64), dst)


def linear_exponent(x: np.ndarray, x_type: FixedType, exps: Exponents, b, b_type, accum: FixedType,
                    result: FixedType, order: np.ndarray | None = None) -> np.ndarray:
    """Dense with ``weight_exponential`` products: ``x (R, K)``, exponents ``(K, M)``."""
    fast = exact_multipliers(exps, x_type)
    if fast is not None and x_type.width + fast[1].width + max(1, exps.sign.shape[0]).bit_length() < 60:
        return ops.linear_fixed(x, x_type, fast[0], fast[1], b, b_type, accum, result, order)
    fr = exps.bits + x_type.width
    x = np.asarray(x)
    k, m = exps.sign.shape
    acc = (requantize(b, b_type.frac, accum) if b is not None else np.zeros(m, dtype=np.int64))
    acc = np.broadcast_to(acc, (x.shape[0], m)).astype(np.int64)
    outputs = np.arange(m)
    for step in range(k):
        rows = np.full(m, step) if order is None or accum.overflow is Overflow.WRAP else order[:, step]
        y = exponent_products(x[:, rows], x_type, exps.sign[rows, outputs][None, :],
                              exps.exponent[rows, outputs][None, :], exps.bits)
        acc = overflow(acc + _requantize_int(y, fr, accum), accum)
    return requantize(acc, accum.frac, result)


# --- ApplyAlpha ------------------------------------------------------------------------------------


def _per_channel(values: np.ndarray, layer: LayerSpec) -> np.ndarray:
    """hls4ml's index into a scale/bias array: per channel (``n_filt``), or per element (``n_filt = -1``)."""
    shape = tuple(layer.output_shape)
    if int(layer.attrs.get("n_filt", -1)) == -1 and values.size == int(np.prod(shape)) and len(shape) > 1:
        return values.reshape(shape)
    return values.reshape(-1)


def apply_alpha(emulator, layer: LayerSpec, inputs: list[np.ndarray], types: list[FixedType]) -> np.ndarray:
    """``res = product(x, scale) + bias`` (``nnet::normalize`` with the scale's product type)."""
    return alpha_on(layer, inputs[0], types[0], {name: emulator.weights(layer, name) for name in ("scale", "bias")})


def alpha_on(layer: LayerSpec, x: np.ndarray, x_type: FixedType, weights: dict) -> np.ndarray:
    """ApplyAlpha on given arrays (``Weights``: the image's, or a delta rule's channels of them)."""
    s, b = weights.get("scale"), weights.get("bias")
    if s is None:
        msg = f"layer {layer.name}: ApplyAlpha has no scale array"
        raise EmulatorError(msg)
    if b is None or not b.is_fixed:
        msg = f"layer {layer.name}: ApplyAlpha needs a fixed-point bias"
        raise EmulatorError(msg)
    bias = _per_channel(b.codes, layer)
    exps = getattr(s, "exponent", None)
    if exps is None:
        if not s.is_fixed:
            msg = f"layer {layer.name}: an ApplyAlpha scale stored as floats is not emulated"
            raise EmulatorError(msg)
        return ops.batchnorm_fixed(x, x_type, _per_channel(s.codes, layer), s.type, bias, b.type, layer.result)
    exps = Exponents(_per_channel(exps.sign, layer), _per_channel(exps.exponent, layer), exps.bits)
    fast = exact_multipliers(exps, x_type)
    if fast is not None:
        return ops.batchnorm_fixed(x, x_type, fast[0], fast[1], bias, b.type, layer.result)
    fr = exps.bits + x_type.width
    y = exponent_products(x, x_type, exps.sign, exps.exponent, exps.bits)
    frac = max(fr, b.type.frac)
    total = y * (1 << (frac - fr)) + np.asarray(bias).astype(np.int64).astype(object) * (1 << (frac - b.type.frac))
    return _requantize_int(total, frac, layer.result).astype(np.float64)


# --- thresholds ------------------------------------------------------------------------------------


def _aligned(x: np.ndarray, x_type: FixedType, t: np.ndarray, t_type: FixedType) -> tuple[np.ndarray, np.ndarray]:
    """Both operands as integers on a common binary point (an exact comparison of their values)."""
    frac = max(x_type.frac, t_type.frac)
    xs = np.asarray(x).astype(np.int64) << (frac - x_type.frac)
    ts = np.asarray(t).astype(np.int64) << (frac - t_type.frac)
    return xs, ts


def threshold_names(layer: LayerSpec) -> tuple[str, ...]:
    return ("threshold",) if layer.attrs["quantize"] == 2 else ("threshold_hi", "threshold_lo")


def bn_quantized_tanh(emulator, layer: LayerSpec, inputs: list[np.ndarray], types: list[FixedType]) -> np.ndarray:
    """``normalize_binary_tanh`` (``x >= t``: 1, else 0) and ``normalize_ternary_tanh``."""
    return thresholds_on(layer, inputs[0], types[0], {n: emulator.weights(layer, n) for n in threshold_names(layer)})


def thresholds_on(layer: LayerSpec, x: np.ndarray, x_type: FixedType, weights: dict) -> np.ndarray:
    """BatchNormalizationQuantizedTanh on given threshold arrays (``Weights``)."""
    names = threshold_names(layer)
    arrays = [weights.get(name) for name in names]
    if any(a is None or not a.is_fixed for a in arrays):
        msg = f"layer {layer.name}: thresholds {', '.join(names)} must be fixed-point arrays in the WeightImage"
        raise EmulatorError(msg)
    if layer.attrs["quantize"] == 2:
        xs, ts = _aligned(x, x_type, _per_channel(arrays[0].codes, layer), arrays[0].type)
        y = np.where(xs >= ts, 1, 0)
    else:
        xs, hi = _aligned(x, x_type, _per_channel(arrays[0].codes, layer), arrays[0].type)
        _, lo = _aligned(x, x_type, _per_channel(arrays[1].codes, layer), arrays[1].type)
        y = np.where(xs > hi, 1, np.where(xs <= lo, -1, 0))
    out_t = FixedType(1, 1, False) if layer.attrs["quantize"] == 2 else FixedType(2, 2)
    return cast(y, out_t, layer.result)


def threshold_activation(layer: LayerSpec, x: np.ndarray, x_type: FixedType, io_type: str) -> np.ndarray:
    """``binary_tanh`` (``nnet_activation.h`` / ``nnet_activation_stream.h``): +-1 in an ``ap_int<2>``,
    then ``binary_cast`` (1 if positive, else 0, into ``ap_uint<1>``; a plain cast into any other type)."""
    y = np.where(np.asarray(x) >= 0, 1, -1)
    r = layer.result
    if (r.width, r.integer, r.signed) == (1, 1, False):  # ap_uint<1> (XNOR or plain)
        return np.where(y > 0, 1, 0).astype(np.float64)
    return cast(y, FixedType(2, 2), layer.result)


register_op(Kind.APPLY_ALPHA, apply_alpha)
register_op(Kind.BN_QUANTIZED_TANH, bn_quantized_tanh)
