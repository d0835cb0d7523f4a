"""Average pooling and global pooling, bit-exact with hls4ml 1.3.0's ``nnet_pooling.h`` and
``nnet_pooling_stream.h``.

hls4ml does not average with a multiplication by a reciprocal: it adds the window in ``accum_t`` and
divides that by an *integer* (``ap_fixed / unsigned``). ``ap_fixed``'s division keeps the dividend's
fractional bits and truncates the integer quotient of the codes toward zero (``APInt::sdiv``), so
the average is ``trunc(acc_code / n)`` at ``accum_t``'s binary point, then cast to ``res_t``. Where
the two io types differ, and why it matters:

- **io_parallel** (``pooling*_cl``, ``global_pooling*_cl``): ``accum_t y = 0; y += x[i]`` in window
  order (rows, then columns), each sum exact and then cast to ``accum_t`` (so a narrower accumulator
  rounds every partial sum); padded cells are 0 and the divisor is the number of real pixels in the
  window (``count_pad`` false, as Keras) or the whole window (``count_pad`` true).
- **io_stream** (``reduce_pool``): every value is first cast to ``accum_t``, then added in
  hls4ml's balanced tree (``nnet::reduce``), each sum cast to ``accum_t``; the window never holds
  padding (hls4ml asserts none: the converter refuses padded stream pooling), so the divisor is the
  window. Global pooling adds one pixel at a time onto ``accum_t`` zero and divides by the pixel
  count; global max pooling keeps the maximum of the values cast to ``accum_t``.

An accumulator that wraps and keeps every fractional bit makes all of these one exact sum followed
by one wrap (a sum modulo ``2**W`` does not depend on the order), which is the fast path; the others
add in hls4ml's order.
"""

from __future__ import annotations

import numpy as np

from hwflow.emulator import ops
from hwflow.emulator.program import Kind, LayerSpec
from hwflow.errors import EmulatorError
from hwflow.fixed import FixedType, Overflow, cast, overflow, requantize


def geometry(layer: LayerSpec) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Window, stride, padding before and after of a (1D or 2D) pooling layer."""
    a = layer.attrs
    if layer.kind is Kind.POOL2D:
        return ((a["pool_height"], a["pool_width"]), (a["stride_height"], a["stride_width"]),
                (a["pad_top"], a["pad_left"]), (a["pad_bottom"], a["pad_right"]))
    return (a["pool_width"],), (a["stride_width"],), (a["pad_left"],), (a["pad_right"],)


def average_pool(layer: LayerSpec, x: np.ndarray, x_type: FixedType, io_type: str) -> np.ndarray:
    """AveragePooling1D/2D on codes ``(N, *spatial, C)`` -> ``layer.result`` codes."""
    size, stride, before, after = geometry(layer)
    accum = layer.accum or x_type
    out = tuple(layer.output_shape[:-1])
    stream = io_type == "io_stream"
    if stream and (any(before) or any(after)):
        msg = f"layer {layer.name}: hls4ml's io_stream pooling has no padding (its C simulation asserts none)"
        raise EmulatorError(msg)
    xi = np.asarray(x).astype(np.int64)
    windows = _windows(ops.pad(xi, before, after), size, stride, out)  # (N, *out, P, C)
    if stream or layer.attrs.get("count_pad", False):
        count = np.int64(int(np.prod(size)))
    else:  # the real pixels of each window: the padded cells do not count (Keras's average)
        ones = np.ones((1,) + tuple(x.shape[1:-1]) + (1,), dtype=np.int64)
        count = _windows(ops.pad(ones, before, after), size, stride, out).sum(axis=-2)[0]
    if stream:
        acc = _sum_tree(cast_codes(windows, x_type, accum), accum)
    else:
        acc = _sum_in_order(windows, x_type, accum)
    return cast(divide(acc, count), accum, layer.result)


def global_pool(layer: LayerSpec, x: np.ndarray, x_type: FixedType, io_type: str) -> np.ndarray:
    """GlobalMax/AveragePooling1D/2D on codes ``(N, *spatial, C)`` -> ``(N, C)`` result codes."""
    accum = layer.accum or x_type
    flat = np.asarray(x).reshape(x.shape[0], -1, x.shape[-1])  # pixels in row-major order, as hls4ml reads them
    stream = io_type == "io_stream"
    if layer.attrs["pool_op"] == "Max":
        if stream:  # each pixel is cast to accum_t before the comparison (accum_t may be narrower)
            return cast(cast_codes(flat, x_type, accum).max(axis=1), accum, layer.result)
        return cast(cast(flat.max(axis=1), x_type, accum), accum, layer.result)
    if layer.attrs["pool_op"] != "Average":
        msg = f"layer {layer.name}: unknown pooling operation {layer.attrs['pool_op']!r}"
        raise EmulatorError(msg)
    xi = flat.astype(np.int64)
    acc = _sum_sequential(cast_codes(xi, x_type, accum), accum) if stream else _sum_in_order(xi, x_type, accum)
    return cast(divide(acc, np.int64(flat.shape[1])), accum, layer.result)


def divide(acc: np.ndarray, count) -> np.ndarray:
    """``ap_fixed / unsigned``: the codes' integer quotient, truncated toward zero (same binary point)."""
    acc = np.asarray(acc, dtype=np.int64)
    q = np.abs(acc) // count
    return np.where(acc < 0, -q, q)


def cast_codes(codes: np.ndarray, src: FixedType, dst: FixedType) -> np.ndarray:
    """``src`` codes assigned to ``dst``, as int64."""
    return requantize(np.asarray(codes).astype(np.int64), src.frac, dst)


def _windows(x: np.ndarray, size, stride, out) -> np.ndarray:
    """The pooling windows of ``x`` (already padded), ``(N, *out, P, C)``, P in row-major window order."""
    cols = ops.patches(x, tuple(size), tuple(stride))  # (N, *o, *size, C)
    cols = cols[(slice(None),) + tuple(slice(0, o) for o in out)]
    nd = len(size)
    return cols.reshape(cols.shape[: 1 + nd] + (int(np.prod(size)), cols.shape[-1]))


def _exact(accum: FixedType, x_frac: int) -> bool:
    """Whether adding in ``accum`` is one exact sum and one wrap: a wrapping accumulator that keeps
    every fractional bit (a sum modulo ``2**W`` does not depend on its order)."""
    return accum.overflow is Overflow.WRAP and accum.frac >= x_frac


def _sum_in_order(values: np.ndarray, x_type: FixedType, accum: FixedType) -> np.ndarray:
    """io_parallel: ``y = 0; y += v`` along axis -2 in order, each exact sum cast to ``accum``."""
    values = np.asarray(values).astype(np.int64)
    if _exact(accum, x_type.frac):
        return overflow(np.left_shift(values.sum(axis=-2), accum.frac - x_type.frac), accum)
    frac = max(accum.frac, x_type.frac)
    acc = np.zeros(values.shape[:-2] + values.shape[-1:], dtype=np.int64)
    for i in range(values.shape[-2]):
        total = np.left_shift(acc, frac - accum.frac) + np.left_shift(values[..., i, :], frac - x_type.frac)
        acc = requantize(total, frac, accum)
    return acc


def _sum_sequential(values: np.ndarray, accum: FixedType) -> np.ndarray:
    """io_stream global pooling: ``acc = acc + v`` (both ``accum_t``) along axis -2 in order."""
    if _exact(accum, accum.frac):
        return overflow(values.sum(axis=-2), accum)
    acc = np.zeros(values.shape[:-2] + values.shape[-1:], dtype=np.int64)
    for i in range(values.shape[-2]):
        acc = overflow(acc + values[..., i, :], accum)
    return acc


def _sum_tree(values: np.ndarray, accum: FixedType) -> np.ndarray:
    """``nnet::reduce`` with ``Op_add<accum_t>`` along axis -2: a balanced tree whose left part is the
    largest power of two below the length, each sum cast to ``accum``."""
    if _exact(accum, accum.frac):
        return overflow(values.sum(axis=-2), accum)

    def reduce(lo: int, n: int) -> np.ndarray:
        if n == 1:
            return values[..., lo, :]
        if n == 2:
            return overflow(values[..., lo, :] + values[..., lo + 1, :], accum)
        left = 1 << ((n - 1).bit_length() - 1)  # pow2(floorlog2(n - 1))
        return overflow(reduce(lo, left) + reduce(lo + left, n - left), accum)

    return reduce(0, values.shape[-2])
