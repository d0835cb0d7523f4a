"""Numeric kernels on integer codes, each mirroring one hls4ml C++ routine.

Multiply-accumulate is where the time goes. hls4ml casts each product to the accumulator type and
sums in it; when the accumulator keeps every product bit and wraps, that equals one exact integer
matrix product followed by one wrap, which BLAS computes exactly in floating point as long as every
partial sum is an integer below the mantissa limit (2**24 in float32, 2**53 in float64). The bound
is taken from the *types*, not the data, so a faulty weight can never push a sum past exactness.
When the accumulator truncates products or saturates, the slow path adds products one input at a
time in hls4ml's loop order.
"""

from __future__ import annotations

import functools

import numpy as np

from hwflow.errors import EmulatorError
from hwflow.fixed import FixedType, Overflow, cast, overflow, quantize_float, requantize, value_range

_F32_EXACT = 2**24
_F64_EXACT = 2**53


def _max_abs_code(width: int, signed: bool) -> int:
    return 1 << (width - 1) if signed else (1 << width) - 1


def matmul_bound(x_type: FixedType, w_type: FixedType, k: int) -> int:
    """Largest possible ``|x @ w|`` over ``k`` terms, from the types alone."""
    return _max_abs_code(x_type.width, x_type.signed) * _max_abs_code(w_type.width, w_type.signed) * k


def matmul_dtype(x_type: FixedType, w_type: FixedType, k: int) -> type:
    """The float dtype in which ``x @ w`` is exact (float32 is twice as fast), or int64."""
    bound = matmul_bound(x_type, w_type, k)
    return np.float32 if bound < _F32_EXACT else np.float64 if bound < _F64_EXACT else np.int64


def exact_matmul(x: np.ndarray, w: np.ndarray, x_type: FixedType, w_type: FixedType) -> np.ndarray:
    """``x @ w`` on integer codes, exactly, with the fastest dtype the types allow.

    Returns float64 codes when they are exact there, int64 otherwise.
    """
    k = w.shape[0]
    if matmul_bound(x_type, w_type, k) >= 2**62:
        msg = f"products of {x_type} and {w_type} summed over {k} terms exceed 62 bits"
        raise EmulatorError(msg)
    dtype = matmul_dtype(x_type, w_type, k)
    out = np.matmul(x.astype(dtype, copy=False), w.astype(dtype, copy=False))
    return out if dtype is np.int64 else out.astype(np.float64, copy=False)


def linear_fixed(
    x: np.ndarray,
    x_type: FixedType,
    w: np.ndarray,
    w_type: FixedType,
    b: np.ndarray | None,
    b_type: FixedType | None,
    accum: FixedType,
    result: FixedType,
    order: np.ndarray | None = None,
) -> np.ndarray:
    """hls4ml's ``dense`` on codes: ``x (R, K) @ w (K, M) + b`` -> result codes ``(R, M)``.

    Mirrors dense_latency / dense_resource: ``acc = (accum_t) bias; acc += (accum_t)(x * w);
    res = (res_t) acc``. ``order`` (from :func:`accumulation_order`): per output, the inputs in the
    order hls4ml adds their products; it matters only to an accumulator that saturates.
    """
    p_frac = x_type.frac + w_type.frac
    if x_type.width + w_type.width > 62:
        msg = f"a product of {x_type} and {w_type} exceeds the emulator's 62-bit integers"
        raise EmulatorError(msg)
    if b is not None:
        bias = requantize(b, b_type.frac, accum)
        b_lo, b_hi = value_range(b_type, accum)
    else:
        bias, b_lo, b_hi = np.zeros(w.shape[1], dtype=np.int64), 0, 0
    if accum.overflow is Overflow.WRAP and accum.frac >= p_frac:
        up = accum.frac - p_frac
        bound = matmul_bound(x_type, w_type, w.shape[0]) << up
        acc = exact_matmul(x, w, x_type, w_type)
        if acc.dtype == np.float64 and bound + max(abs(b_lo), abs(b_hi)) < 2**53:
            if up:
                acc = np.ldexp(acc, up, out=acc)
            acc += bias.astype(np.float64)
            if not (accum.min_code <= b_lo - bound and b_hi + bound <= accum.max_code):
                acc = overflow(acc.astype(np.int64), accum)
            return cast(acc, accum, result)
        acc = np.left_shift(acc.astype(np.int64), up) + bias
        return requantize(overflow(acc, accum), accum.frac, result)
    if accum.overflow is Overflow.WRAP:
        order = None  # a wrapping sum (modulo 2**W) does not depend on the order of its terms
    return requantize(_linear_stepwise(x, w, p_frac, bias, accum, order), accum.frac, result)


def _linear_stepwise(x: np.ndarray, w: np.ndarray, p_frac: int, bias: np.ndarray,
                     accum: FixedType, order: np.ndarray | None = None) -> np.ndarray:
    """Per-product cast and per-step overflow, in hls4ml's loop order: inputs in order (dense_latency),
    or per output in ``order`` (the Resource kernels)."""
    acc = np.broadcast_to(bias, (x.shape[0], w.shape[1])).astype(np.int64)
    x = np.asarray(x).astype(np.int64)
    w = w.astype(np.int64)
    if order is not None and np.all(order == order[:1]):  # one order for every output: permute the inputs
        x, w, order = x[:, order[0]], w[order[0]], None
    if order is None:
        for i in range(w.shape[0]):
            product = requantize(x[:, i, None] * w[None, i, :], p_frac, accum)
            acc = overflow(acc + product, accum)
        return acc
    outputs = np.arange(w.shape[1])
    for step in range(w.shape[0]):
        inputs = order[:, step]
        product = requantize(x[:, inputs] * w[inputs, outputs][None, :], p_frac, accum)
        acc = overflow(acc + product, accum)
    return acc


@functools.lru_cache(maxsize=64)
def accumulation_order(n_in: int, n_out: int, reuse: int) -> np.ndarray | None:
    """The order in which hls4ml's Resource kernels add each output's products: ``(n_out, n_in)``
    input indices, or None for input order.

    Follows nnet_dense_resource.h and nnet_conv*_resource.h (hls4ml 1.3.0). With ``reuse <= n_in``
    (``dense_resource_rf_leq_nin``, ``conv_*_resource_cl``) the reuse loop is outer: output ``o`` gets
    inputs ``r, r+R, r+2R, ...`` for ``r = 0..R-1``, i.e. ordered by ``(i mod R, i)``. With ``reuse``
    a multiple of ``n_in`` (``rf_gt_nin_rem0``) each output's inputs come in order. Otherwise
    (``rf_gt_nin``) the products come ordered by their weight index modulo ``R``.
    """
    if reuse <= 1:
        return None
    if reuse <= n_in:
        block = -(-n_in * n_out // reuse)
        multscale = block // n_out
        seen: list[list[int]] = [[] for _ in range(n_out)]
        for r in range(reuse):  # the loops of dense_resource_rf_leq_nin, index arithmetic only
            i, o, step = r, 0, 0
            for _ in range(block):
                if o < n_out:
                    seen[o].append(i)
                i += reuse
                if i >= n_in:
                    i = r
                if step + 1 >= multscale:
                    step, o = 0, o + 1
                else:
                    step += 1
        order = np.array(seen, dtype=np.int64) if all(len(s) == n_in for s in seen) else None
        if order is None or not all(np.array_equal(np.sort(row), np.arange(n_in)) for row in order):
            return None  # a reuse factor hls4ml's kernel does not cover exactly: input order
        return order
    if reuse % n_in == 0:
        return None
    w_index = np.arange(n_out)[:, None] * n_in + np.arange(n_in)[None, :]
    return np.argsort(w_index % reuse, axis=1, kind="stable")


def linear_float(x: np.ndarray, x_type: FixedType, w: np.ndarray, b: np.ndarray | None,
                 result: FixedType) -> np.ndarray:
    """A layer whose weights are stored as floats (or divided back by a non-power-of-two constant).

    Our analysis choice, for the weight-scaling study of float16/float32 storage: products and sums
    in float64, the sum cast to the layer's result type (NaN -> 0, +-inf -> the extreme codes).
    """
    xf = x_type.to_float(x)
    with np.errstate(over="ignore", invalid="ignore"):
        out = xf @ w
        if b is not None:
            out = out + b
    return quantize_float(out, result)


def batchnorm_fixed(x: np.ndarray, x_type: FixedType, scale: np.ndarray, s_type: FixedType,
                    bias: np.ndarray, b_type: FixedType, result: FixedType) -> np.ndarray:
    """hls4ml's ``normalize``: ``res = (res_t)(x * scale + bias)`` with the product and sum in full
    precision; ``scale``/``bias`` are per channel (last axis)."""
    p_frac = x_type.frac + s_type.frac
    frac = max(p_frac, b_type.frac)
    bound = (_max_abs_code(x_type.width, x_type.signed) * _max_abs_code(s_type.width, s_type.signed)
             << (frac - p_frac)) + (_max_abs_code(b_type.width, b_type.signed) << (frac - b_type.frac))
    if bound >= 2**62:
        msg = f"batch normalization of {x_type} by {s_type} plus {b_type} exceeds the emulator's 62-bit integers"
        raise EmulatorError(msg)
    width = bound.bit_length() + 1
    sum_type = FixedType(width, width - frac)  # holds x * scale + bias exactly
    if bound < 2**53:
        total = np.asarray(x, dtype=np.float64) * np.ldexp(scale.astype(np.float64), frac - p_frac)
        total += np.ldexp(bias.astype(np.float64), frac - b_type.frac)
        return cast(total, sum_type, result)
    prod = np.left_shift(np.asarray(x).astype(np.int64) * scale.astype(np.int64), frac - p_frac)
    return requantize(prod + np.left_shift(bias.astype(np.int64), frac - b_type.frac), frac, result)


def batchnorm_float(x: np.ndarray, x_type: FixedType, scale: np.ndarray, bias: np.ndarray,
                    result: FixedType) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return quantize_float(x_type.to_float(x) * scale + bias, result)


def patches(x: np.ndarray, size: tuple[int, ...], stride: tuple[int, ...]) -> np.ndarray:
    """Sliding windows over the spatial axes of a channels-last tensor ``(N, *spatial, C)``.

    Returns ``(N, *out_spatial, *size, C)`` as a view where possible: the im2col of a convolution
    (window position major, then kernel rows, columns, channels: the order of a Keras kernel).
    """
    nd = len(size)
    axes = tuple(range(1, 1 + nd))
    view = np.lib.stride_tricks.sliding_window_view(x, size, axis=axes)
    view = view[(slice(None),) + tuple(slice(None, None, s) for s in stride)]
    # (N, *out, C, *size) -> (N, *out, *size, C)
    order = (0,) + tuple(range(1, 1 + nd)) + tuple(range(2 + nd, 2 + 2 * nd)) + (1 + nd,)
    return view.transpose(order)


def max_pool(x: np.ndarray, size: tuple[int, ...], stride: tuple[int, ...]) -> np.ndarray:
    """Window maxima over the spatial axes of ``(N, *spatial, C)``; reshapes when windows tile."""
    nd = len(size)
    if tuple(size) == tuple(stride):
        # Windows tile the input: the maximum of the strided slices, one per window offset.
        out = [d // s for d, s in zip(x.shape[1 : 1 + nd], size, strict=True)]
        result = None
        for offset in np.ndindex(*size):
            part = x[(slice(None),) + tuple(slice(o, o + n * s, s) for o, n, s in zip(offset, out, size, strict=True))]
            result = part.copy() if result is None else np.maximum(result, part, out=result)
        return result
    cols = patches(x, size, stride)
    return cols.max(axis=tuple(range(1 + nd, 1 + 2 * nd)))


def pad(x: np.ndarray, before: tuple[int, ...], after: tuple[int, ...], value: int = 0) -> np.ndarray:
    if not any(before) and not any(after):
        return x
    width = [(0, 0)] + list(zip(before, after, strict=True)) + [(0, 0)]
    return np.pad(x, width, constant_values=value)
