"""hls4ml's lookup-table and parametrized activations and its softmax, bit-exact on codes.

Each kernel mirrors one routine of hls4ml 1.3.0's ``nnet_activation.h`` / ``nnet_activation_stream.h``:

- **Tables** (sigmoid, tanh, softplus, softsign, ELU, softmax's exp and 1/x) are filled by the C++
  in single precision (``float`` arithmetic and libm's ``expf`` / ``tanhf``), then assigned to the
  table type. We call the same libm functions (``ctypes``) with the same float32 roundings, so the
  words are the C simulation's, not an approximation of them (numpy's own float32 ``exp`` differs
  from libm's in the last bit now and then, which moves a table word across a rounding boundary).
- **Indices**: ``int index = x * table_size / 16 + 8 * table_size / 16`` computes the product and
  the quotient exactly in ``ap_fixed`` and truncates toward zero when it becomes an ``int``: one
  integer division toward zero of the code, then clamped to the table. Softmax's latency and stable
  implementations instead take the top ``log2(size)`` bits of the word as the index.
- **Parametrized** (LeakyReLU, ThresholdedReLU, ELU): the parameter is the C++ literal converted to
  ``param_t``; products are exact, then cast to the result type. PReLU's ``alpha`` array is a weight
  array (``param``), read from the WeightImage like any other, so faults reach it.
- **Hard** sigmoid / tanh (QKeras' ``quantized_sigmoid`` / ``quantized_tanh``): ``slope * x + shift``
  exactly, clamped to ``[0, 1]`` (tanh: ``2 y - 1``), then cast.
- **Softmax** over the slices hls4ml's config makes: ``latency``, ``stable``, ``legacy`` and ``argmax``, with the
  adder tree of ``nnet::reduce`` (a cast to ``accum_t`` after each addition) and, for ``legacy``,
  the types and sizes its config inherits from ``nnet::activ_config`` (hls4ml's softmax config does
  not set ``table_t``; the stream kernel reads ``table_size``, which it does not set either).

Codes come in as exact integers (any dtype) and leave as float64 codes, like the other kernels.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import numpy as np

from hwflow.emulator.kernels import register_op
from hwflow.emulator.program import Kind, LayerSpec, register_arrays
from hwflow.errors import EmulatorError, UnsupportedLayerError
from hwflow.fixed import (
    FixedType,
    Overflow,
    _round_up,
    cast,
    overflow,
    parse_type,
    quantize_float,
    requantize,
)

register_arrays(Kind.PRELU, ("param",))

LUT_FUNCTIONS = ("sigmoid", "tanh", "softplus", "softsign", "selu")
"""Table activations of an ``Activation`` layer (``activation`` attribute)."""
SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_LAMBDA_T = FixedType(16, 1, signed=False)  # io_parallel's ``typedef ap_ufixed<16, 1> selu_const_t``
PARAM_FUNCTIONS = ("leaky_relu", "thresholded_relu", "elu")
HARD_FUNCTIONS = ("hard_sigmoid", "hard_tanh")
SOFTMAX_IMPLEMENTATIONS = ("latency", "stable", "legacy", "argmax")

# What hls4ml's softmax config inherits from nnet::activ_config (legacy reads these).
LEGACY_TABLE_T = FixedType(18, 8)
LEGACY_STREAM_TABLE_SIZE = 1024

_INT32 = 1 << 32


# --- libm, as the C simulation calls it ------------------------------------------------------------


@functools.cache
def _libm():
    path = ctypes.util.find_library("m")
    try:
        lib = ctypes.CDLL(path) if path else ctypes.CDLL(None)
    except OSError as err:  # pragma: no cover - every Linux and macOS has a libm
        msg = f"the C math library (libm) cannot be loaded ({err}); hls4ml's tables are made with it"
        raise EmulatorError(msg) from None
    for name in ("expf", "tanhf"):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    fn = lib.log
    fn.restype, fn.argtypes = ctypes.c_double, [ctypes.c_double]
    return lib


def _f32(value: float) -> float:
    """A double rounded to float, as a C ``float`` variable holds it."""
    return float(np.float32(value))


def expf(x: float) -> float:
    return float(_libm().expf(_f32(x)))


def tanhf(x: float) -> float:
    return float(_libm().tanhf(_f32(x)))


def _to_table(values: list[float], table_t: FixedType) -> np.ndarray:
    """Table words: ``table_t`` assigned from each float (``ap_fixed`` from a double; an infinity
    saturates where the type saturates and reads as 0 where it wraps, as ``ap_fixed`` does)."""
    v = np.asarray(values, dtype=np.float64)
    codes = quantize_float(v, table_t)
    if table_t.overflow not in (Overflow.SAT, Overflow.SAT_SYM):
        codes = np.where(np.isinf(v), 0, codes)
    elif table_t.overflow is Overflow.SAT_SYM and table_t.signed:
        codes = np.where(np.isneginf(v), -table_t.max_code, codes)
    return codes.astype(np.int64)


# --- the tables --------------------------------------------------------------------------------------


def _centered(ii: int, n: int, half_range: float) -> float:
    """``float in_val = 2 * R * (ii - float(N) / 2.0) / float(N)`` (double arithmetic, then float)."""
    return _f32(2 * half_range * (ii - float(n) / 2.0) / float(n))


def _sigmoid(x: float) -> float:
    return _f32(1.0 / _f32(1 + expf(-x)))  # 1.0 / (1 + std::exp(-input)), returned as float


def _softplus(x: float) -> float:
    return _f32(_libm().log(expf(x) + 1.0))  # std::log(std::exp(input) + 1.)


def _softsign(x: float) -> float:
    return _f32(x / (abs(x) + 1.0))  # input / (std::abs(input) + 1.)


_LUT = {  # function -> (value of one entry, R: the table spans [-R, R), index divisor D)
    "sigmoid": (_sigmoid, 8.0, 16),
    "tanh": (tanhf, 4.0, 8),
    "softplus": (_softplus, 8.0, 16),
    "softsign": (_softsign, 8.0, 16),
}


@functools.lru_cache(maxsize=64)
def lut_table(fn: str, size: int, table_t: FixedType) -> np.ndarray:
    """``init_<fn>_table``: entry ``ii`` holds ``fn`` at ``2 R (ii - N/2) / N``."""
    value, half_range, _ = _LUT[fn]
    return _to_table([value(_centered(ii, size, half_range)) for ii in range(size)], table_t)


@functools.lru_cache(maxsize=64)
def selu_table(size: int, table_t: FixedType) -> np.ndarray:
    """``init_selu_table``: entry ``ii`` holds ``lambda alpha (exp(x) - 1)`` at ``x = -8 ii / N`` (the
    constants in double, ``exp`` in float)."""
    return _to_table([_f32(SELU_LAMBDA * (SELU_ALPHA * (expf(_f32(-8.0 * ii / float(size))) - 1.0)))
                      for ii in range(size)], table_t)


@functools.lru_cache(maxsize=64)
def elu_table(size: int, table_t: FixedType) -> np.ndarray:
    """``init_elu_table``: entry ``ii`` holds ``exp(x) - 1`` at ``x = -8 ii / N``."""
    return _to_table([_f32(expf(_f32(-8.0 * ii / float(size))) - 1.0) for ii in range(size)], table_t)


def _top_bits_value(i: int, bits: int, t: FixedType) -> float:
    """``softmax_real_val_from_idx``: the value of a ``t`` word whose top ``bits`` bits are ``i``."""
    code = i << (t.width - bits)
    if t.signed and code >= 1 << (t.width - 1):
        code -= 1 << t.width
    return float(np.ldexp(float(code), -t.frac))


def index_bits(size: int) -> int:
    """``ceillog2(size)`` of nnet_helpers.h (1 for sizes up to 2)."""
    return 1 if size <= 2 else 1 + index_bits((size + 1) // 2)


@functools.lru_cache(maxsize=64)
def exp_table(size: int, addr_t: FixedType, table_t: FixedType, scale: float, negative: bool) -> np.ndarray:
    """``init_exp_table<addr_t>``: ``exp(x * exp_scale)`` (``exp(-x ...)`` for the stable form) at the
    value each index stands for."""
    bits = index_bits(size)
    out = []
    for i in range(size):
        x = _f32(_top_bits_value(i, bits, addr_t) * _f32(scale))
        out.append(expf(-x if negative else x))
    return _to_table(out, table_t)


@functools.lru_cache(maxsize=64)
def invert_table(size: int, addr_t: FixedType, table_t: FixedType) -> np.ndarray:
    """``init_invert_table<addr_t>``: ``1 / x`` in float at the value each index stands for."""
    bits = index_bits(size)
    out = []
    for i in range(size):
        x = _f32(_top_bits_value(i, bits, addr_t))
        out.append(_f32(np.float32(1) / np.float32(x)) if x != 0 else float("inf"))
    return _to_table(out, table_t)


@functools.lru_cache(maxsize=16)
def legacy_tables(exp_size: int, inv_size: int, table_t: FixedType) -> tuple[np.ndarray, np.ndarray]:
    """``init_exp_table_legacy`` (exp over [-8, 8)) and ``init_invert_table_legacy`` (1/x over
    [0, 64), in double, entry 0 holding 0)."""
    exps = [expf(_centered(ii, exp_size, 8.0)) for ii in range(exp_size)]
    invs = []
    for ii in range(inv_size):
        x = _f32(64.0 * ii / float(inv_size))
        invs.append(1.0 / x if x > 0.0 else 0.0)
    return _to_table(exps, table_t), _to_table(invs, table_t)


# --- index arithmetic ---------------------------------------------------------------------------------


def _int_codes(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(np.int64)


def scaled_index(codes: np.ndarray, t: FixedType, size: int, divisor: int) -> np.ndarray:
    """``int(x * size / divisor)``: exact in ``ap_fixed``, truncated toward zero, kept to 32 bits as
    the C ``int`` keeps it (``divisor`` may be negative: ELU divides by -8)."""
    if t.width + size.bit_length() + abs(divisor).bit_length() > 62:
        msg = f"a table index of an input of type {t} exceeds the emulator's 62-bit integers"
        raise EmulatorError(msg)
    num = _int_codes(codes) * size * (1 if divisor > 0 else -1)
    den = abs(divisor)
    if t.frac >= 0:
        den <<= t.frac
    else:
        num = np.left_shift(num, -t.frac)
    q = np.sign(num) * (np.abs(num) // den)
    return ((q + (_INT32 >> 1)) % _INT32) - (_INT32 >> 1)


def top_bits(codes: np.ndarray, t: FixedType, size: int) -> np.ndarray:
    """``softmax_idx_from_real_val``: the top ``ceillog2(size)`` bits of each word, unsigned."""
    bits = index_bits(size)
    if bits > t.width:
        msg = f"a softmax table of {size} entries needs {bits}-bit indices, wider than its {t} addresses"
        raise EmulatorError(msg)
    return (_int_codes(codes) & ((1 << t.width) - 1)) >> (t.width - bits)


def _product(a: np.ndarray, a_type: FixedType, b: np.ndarray | int, b_type: FixedType, result: FixedType):
    """``(res_T)(a * b)``: the exact product, then the cast (in Python integers where the product is
    wider than int64: hls4ml's inferred types reach 37 bits, so ``x * alpha`` may take 74)."""
    frac = a_type.frac + b_type.frac
    if a_type.width + b_type.width <= 62:
        return requantize(_int_codes(a) * np.asarray(b, dtype=np.int64), frac, result)
    wide = _int_codes(a).astype(object) * np.asarray(b, dtype=np.int64).astype(object)
    return requantize_wide(wide, frac, result)


def requantize_wide(codes: np.ndarray, src_frac: int, dst: FixedType) -> np.ndarray:
    """``fixed.requantize`` on Python integers (an object array of any width): round, then overflow."""
    c = np.asarray(codes, dtype=object)
    shift = src_frac - dst.frac
    if shift <= 0:
        r = c * (1 << -shift)
    else:
        floor = c >> shift
        up = _round_up(floor, c - (floor << shift), 1 << shift, c < 0, dst.rounding)
        r = floor + up.astype(np.int64).astype(object)
    lo, hi = dst.min_code, dst.max_code
    if dst.overflow is Overflow.WRAP:
        r = ((r - lo) & ((1 << dst.width) - 1)) + lo
    elif dst.overflow is Overflow.SAT:
        r = np.minimum(np.maximum(r, lo), hi)
    elif dst.overflow is Overflow.SAT_ZERO:
        r = np.where((r < lo) | (r > hi), 0, r)
    else:
        r = np.minimum(np.maximum(r, -hi if dst.signed else lo), hi)
    return np.asarray(r).astype(np.int64)


def _type(layer: LayerSpec, name: str) -> FixedType:
    try:
        return parse_type(layer.attrs[name])
    except KeyError:
        msg = f"layer {layer.name} ({layer.kind.value}) has no {name} in its program; convert the model again"
        raise EmulatorError(msg) from None


# --- the kernels -------------------------------------------------------------------------------------


def lut(layer: LayerSpec, x: np.ndarray, x_type: FixedType, io_type: str = "io_parallel") -> np.ndarray:
    """sigmoid / tanh / softplus / softsign: ``res = (res_T) table[clamp(x * N / D + N / 2)]``."""
    fn = layer.attrs["activation"]
    size, table_t = int(layer.attrs["table_size"]), _type(layer, "table_t")
    if fn == "selu":
        return _selu(layer, x, x_type, size, table_t, io_type)
    _, half_range, divisor = _LUT[fn]
    index = scaled_index(x, x_type, size, divisor) + int(half_range) * size // divisor
    table = lut_table(fn, size, table_t)
    return cast(table[np.clip(index, 0, size - 1)], table_t, layer.result)


def _selu(layer: LayerSpec, x: np.ndarray, x_type: FixedType, size: int, table_t: FixedType,
          io_type: str) -> np.ndarray:
    """``selu``: ``lambda x`` for ``x >= 0`` (lambda in ``ap_ufixed<16,1>`` in io_parallel, in the input
    type in io_stream), the table at ``clamp(x * N / -8)`` below."""
    codes = _int_codes(x)
    lam_t = x_type if io_type == "io_stream" else SELU_LAMBDA_T
    lam = int(quantize_float(np.float64(SELU_LAMBDA), lam_t))
    pos = _product(codes, x_type, lam, lam_t, layer.result)
    index = np.clip(scaled_index(np.minimum(codes, 0), x_type, size, -8), 0, size - 1)
    neg = cast(selu_table(size, table_t)[index], table_t, layer.result)
    return np.where(codes >= 0, pos, neg).astype(np.float64)


def param_activation(layer: LayerSpec, x: np.ndarray, x_type: FixedType) -> np.ndarray:
    """LeakyReLU, ThresholdedReLU and ELU with their scalar parameter in ``param_t``."""
    fn = layer.attrs["activation"]
    param_t = _type(layer, "param_t")
    param = int(quantize_float(np.float64(layer.attrs["param"]), param_t))
    codes = _int_codes(x)
    same = requantize(codes, x_type.frac, layer.result)
    if fn == "leaky_relu":
        return np.where(codes > 0, same, _product(codes, x_type, param, param_t, layer.result)).astype(np.float64)
    if fn == "thresholded_relu":
        frac = max(x_type.frac, param_t.frac)
        above = np.left_shift(codes, frac - x_type.frac) > (param << (frac - param_t.frac))
        return np.where(above, same, 0).astype(np.float64)
    if fn == "elu":
        size, table_t = int(layer.attrs["table_size"]), _type(layer, "table_t")
        index = np.minimum(scaled_index(np.minimum(codes, 0), x_type, size, -8), size - 1)
        neg = _product(elu_table(size, table_t)[index], table_t, param, param_t, layer.result)
        return np.where(codes >= 0, same, neg).astype(np.float64)
    msg = f"parametrized activation {fn!r} of layer {layer.name} is not emulated ({', '.join(PARAM_FUNCTIONS)} are)"
    raise UnsupportedLayerError(msg)


def hard_activation(layer: LayerSpec, x: np.ndarray, x_type: FixedType) -> np.ndarray:
    """``hard_sigmoid``: clip(slope x + shift, 0, 1); ``hard_tanh``: 2 hard_sigmoid - 1, exactly."""
    fn = layer.attrs["activation"]
    if fn not in HARD_FUNCTIONS:
        msg = f"hard activation {fn!r} of layer {layer.name} is not emulated ({', '.join(HARD_FUNCTIONS)} are)"
        raise UnsupportedLayerError(msg)
    slope_t, shift_t = _type(layer, "slope_t"), _type(layer, "shift_t")
    slope = int(quantize_float(np.float64(layer.attrs["slope"]), slope_t))
    shift = int(quantize_float(np.float64(layer.attrs["shift"]), shift_t))
    p_frac = x_type.frac + slope_t.frac
    frac = max(p_frac, shift_t.frac, 0)
    if x_type.width + slope_t.width + (frac - p_frac) > 61:
        msg = f"hard activation {layer.name}: the sum's type exceeds the emulator's 62-bit integers"
        raise EmulatorError(msg)
    y = np.left_shift(_int_codes(x) * slope, frac - p_frac) + (shift << (frac - shift_t.frac))
    one = 1 << frac
    y = np.clip(y, 0, one)
    if fn == "hard_tanh":
        y = 2 * y - one
    return requantize(y, frac, layer.result).astype(np.float64)


def prelu(emulator, layer: LayerSpec, inputs: list[np.ndarray], types: list[FixedType]) -> np.ndarray:
    """``res = x > 0 ? x : alpha[i] * x`` with ``alpha`` one word per input position (``param``)."""
    w = emulator.weights(layer, "param")
    if w is None or not w.is_fixed:
        msg = (f"PReLU layer {layer.name} needs its param array in fixed point (the WeightImage holds "
               f"{'none' if w is None else 'float words'})")
        raise EmulatorError(msg)
    x = inputs[0]
    return prelu_codes(x, types[0], np.asarray(w.codes).reshape(tuple(x.shape[1:])), w.type, layer.result)


def prelu_codes(x: np.ndarray, x_type: FixedType, alpha: np.ndarray, alpha_type: FixedType,
                result: FixedType) -> np.ndarray:
    """PReLU on codes with ``alpha`` shaped like one sample (the delta rule passes a channel slice)."""
    codes = _int_codes(x)
    same = requantize(codes, x_type.frac, result)
    return np.where(codes > 0, same, _product(codes, x_type, alpha, alpha_type, result)).astype(np.float64)


def softmax(layer: LayerSpec, x: np.ndarray, x_type: FixedType, io_type: str) -> np.ndarray:
    """hls4ml's softmax in the layer's implementation, over the slices its config makes.

    io_stream normalizes each pack (the last axis). io_parallel views a sample's words as
    ``(n_outer, n_slice, n_inner)`` and normalizes along ``n_slice`` (``softmax_multidim``); with
    ``n_outer = n_inner = 1``, what hls4ml 1.3.0 configures for a Keras softmax on a feature map, that
    is the whole flattened sample, not each pixel's channels."""
    if io_type == "io_stream":
        return _softmax_last(layer, x, x_type, io_type)
    outer, inner = int(layer.attrs.get("n_outer", 1)), int(layer.attrs.get("n_inner", 1))
    view = np.moveaxis(np.asarray(x).reshape(len(x), outer, -1, inner), 2, -1)
    y = _softmax_last(layer, view, x_type, io_type)
    return np.moveaxis(y, -1, 2).reshape(np.shape(x))


def _softmax_last(layer: LayerSpec, x: np.ndarray, x_type: FixedType, io_type: str) -> np.ndarray:
    """Softmax along the last axis (each slice a row)."""
    impl = layer.attrs["implementation"]
    codes = _int_codes(x)
    if impl == "argmax":
        out = np.zeros(codes.shape, dtype=np.int64)
        one = int(requantize(np.array([1]), 0, layer.result)[0])
        np.put_along_axis(out, np.argmax(codes, axis=-1)[..., None], one, axis=-1)
        return out.astype(np.float64)
    if impl == "legacy":
        return _softmax_legacy(layer, codes, x_type, io_type)
    if impl not in ("latency", "stable"):
        msg = (f"softmax implementation {impl!r} of layer {layer.name} is not emulated; "
               f"use one of {', '.join(SOFTMAX_IMPLEMENTATIONS)}")
        raise UnsupportedLayerError(msg)
    a = layer.attrs
    exp_t, inv_t, inv_inp_t = _type(layer, "exp_table_t"), _type(layer, "inv_table_t"), _type(layer, "inv_inp_t")
    accum = layer.accum or _type(layer, "accum_t")
    exp_size, inv_size = int(a["exp_table_size"]), int(a["inv_table_size"])
    scale = float(a.get("exp_scale", 1.0))
    if impl == "stable":
        norm_t = _type(layer, "inp_norm_t")
        diff_t = FixedType(min(x_type.width + 1, 62), x_type.integer + 1, True)
        d = cast(codes.max(axis=-1, keepdims=True) - codes, diff_t, norm_t)
        index = top_bits(d, norm_t, exp_size)
        table = exp_table(exp_size, norm_t, exp_t, scale, True)
    else:
        index = top_bits(codes, x_type, exp_size)
        table = exp_table(exp_size, x_type, exp_t, scale, False)
    terms = requantize(table[index], exp_t.frac, accum)  # exp_res[i] = exp_table[x] (accum_t)
    total = cast(_tree_sum(terms, accum), accum, inv_inp_t)
    inv = invert_table(inv_size, inv_inp_t, inv_t)[top_bits(total, inv_inp_t, inv_size)]
    return _product(terms, accum, inv, inv_t, layer.result).astype(np.float64)


def _tree_sum(terms: np.ndarray, accum: FixedType) -> np.ndarray:
    """``nnet::reduce`` with ``Op_add<accum_t>`` over the last axis: each sum is cast to ``accum_t``
    (a saturating accumulator sees the tree's order), keeping the axis."""
    n = terms.shape[-1]
    if n == 1:
        return terms
    left = 1 << ((n - 1).bit_length() - 1) if n > 2 else 1  # pow2(floorlog2(N - 1))
    a = _tree_sum(terms[..., :left], accum)
    b = _tree_sum(terms[..., left:], accum)
    return overflow(a + b, accum)


def _softmax_legacy(layer: LayerSpec, codes: np.ndarray, x_type: FixedType, io_type: str) -> np.ndarray:
    """``softmax_legacy``: sum over j of exp(x_j - x_i) from a table over [-8, 8), then 1/x from a
    table over [0, 64); everything in ``nnet::activ_config``'s ``ap_fixed<18,8>``."""
    t = LEGACY_TABLE_T
    if io_type == "io_stream":
        exp_size = inv_size = LEGACY_STREAM_TABLE_SIZE
    else:
        exp_size, inv_size = int(layer.attrs["exp_table_size"]), int(layer.attrs["inv_table_size"])
    exps, invs = legacy_tables(exp_size, inv_size, t)
    diff_t = FixedType(min(x_type.width + 1, 62), x_type.integer + 1, True)
    diff = codes[..., None, :] - codes[..., :, None]  # [..., i, j] = x_j - x_i
    index = np.clip(scaled_index(diff, diff_t, exp_size, 16) + 8 * exp_size // 16, 0, exp_size - 1)
    eye = np.eye(codes.shape[-1], dtype=bool)
    terms = np.where(eye, 1 << t.frac, exps[index])  # exp_diff_res = 1 where i == j
    total = overflow(terms.sum(axis=-1), t)  # exp_res[i] += ...: table_t wraps, so the order does not matter
    inv_index = np.clip(scaled_index(total, t, inv_size, 64), 0, inv_size - 1)
    return cast(invs[inv_index], t, layer.result)


def lut_direction(layer: LayerSpec, x_type: FixedType) -> int | None:
    """+1 when a table activation is non-decreasing in its input, else None (the delta engine may then
    pool before it). The index only grows with the input (a truncation, then a clamp) while the C
    ``int`` holds it; the table's words cast to the result type are checked, not assumed (a wrapping
    cast can fold a table over)."""
    fn = layer.attrs.get("activation")
    if fn not in _LUT:  # selu's two branches meet in the result type: not checked, so not claimed
        return None
    size, table_t = int(layer.attrs["table_size"]), _type(layer, "table_t")
    biggest = max(-x_type.min_code, x_type.max_code) * size  # |x| * N in units of 2**-frac
    if (biggest >> max(x_type.frac, 0) << max(-x_type.frac, 0)) // _LUT[fn][2] >= 2**31 - size:
        return None  # the C int holding x * N / D could wrap
    words = cast(lut_table(fn, size, table_t), table_t, layer.result)  # what each index outputs
    return 1 if bool(np.all(np.diff(words) >= 0)) else None


# --- dispatch -----------------------------------------------------------------------------------------


def activation(layer: LayerSpec, x: np.ndarray, x_type: FixedType, io_type: str = "io_parallel") -> np.ndarray | None:
    """The kernel of an ``Activation`` layer's function, or None when this module has none for it."""
    if layer.attrs.get("activation") in LUT_FUNCTIONS:
        return lut(layer, x, x_type, io_type)
    return None


def _param_op(emulator, layer, inputs, types):
    return param_activation(layer, inputs[0], types[0])


def _hard_op(emulator, layer, inputs, types):
    return hard_activation(layer, inputs[0], types[0])


def _softmax_op(emulator, layer, inputs, types):
    return softmax(layer, inputs[0], types[0], emulator.program.io_type)


register_op(Kind.PARAM_ACTIVATION, _param_op)
register_op(Kind.HARD_ACTIVATION, _hard_op)
register_op(Kind.PRELU, prelu)
register_op(Kind.SOFTMAX, _softmax_op)
