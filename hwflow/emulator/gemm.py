"""The dense path's data movement: input quantization, im2col and GEMM in float32 where it is exact.

Integer codes are exact in float32 while every partial sum of a product stays below 2**24, and
BLAS's sgemm is twice as fast as dgemm on half the memory; so the multiply-accumulate of the
fused path runs in float32 whenever a bound on ``|x|`` (from the data for the network input, which
never faults, from the type elsewhere) and on ``|w|`` (always from the type: weights fault) allow.

Two ways to feed a convolution to the GEMM:

- ``im2col``: one float32 matrix of every window, built by one strided copy (no float64 pass);
- ``pool_window``: when a max pooling follows (stride equal to its size), one row per *pooled*
  output holding the input patch that all its conv positions read, against a wider weight matrix
  with one column block per position in the pooling window. A 3x3 kernel on one channel becomes a
  16-wide GEMM instead of a 9-wide one (BLAS is poor at tiny inner dimensions), and the window
  maximum is taken over column blocks that the GEMM has just written.
"""

from __future__ import annotations

import numpy as np

from hwflow.fixed import FixedType, Rounding

F32_EXACT = 2**24
BLOCK_VALUES = 1 << 17  # GEMM output values per block of conv_pooled (512 KiB in float32)
SPLIT_MAX_K = 64  # pool-window GEMMs this narrow run one product per pooling offset


def max_code(t: FixedType) -> int:
    return max(-t.min_code, t.max_code)


def quantize_f32(x: np.ndarray, dst: FixedType) -> np.ndarray | None:
    """``quantize_float`` of float32 samples as exact float32 codes, or None (caller falls back).

    Scaling a float32 by ``2**frac`` is exact (no overflow, no subnormals: checked), and floor,
    trunc and rint are exact; the ties of the other rounding modes are found as ``|rint(v)-v| ==
    0.5`` (an exact difference) and moved. Falls back when a value is not finite or the codes do not
    fit the type without overflow (wrapping is left to the int64 reference).
    """
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0 or dst.frac < 0 or dst.frac > 100:
        return None
    lo, hi = float(x.min()), float(x.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or max(abs(lo), abs(hi)) * 2.0**dst.frac >= 2.0**60:
        return None
    v = x * np.float32(2.0**dst.frac)
    mode = dst.rounding
    if mode is Rounding.TRN:
        np.floor(v, out=v)
    elif mode is Rounding.TRN_ZERO:
        np.trunc(v, out=v)
    else:
        r = np.rint(v)
        d = r - v  # exact: r is the nearest integer to v
        ties = np.abs(d) == 0.5
        if ties.any():
            t, rt = v[ties], r[ties]
            up = {Rounding.RND: t > rt, Rounding.RND_ZERO: (t > rt) & (t < 0), Rounding.RND_INF: (t > rt) & (t > 0),
                  Rounding.RND_MIN_INF: np.zeros(t.shape, bool), Rounding.RND_CONV: np.zeros(t.shape, bool)}[mode]
            down = {Rounding.RND: np.zeros(t.shape, bool), Rounding.RND_ZERO: (t < rt) & (t > 0),
                    Rounding.RND_INF: (t < rt) & (t < 0), Rounding.RND_MIN_INF: t < rt,
                    Rounding.RND_CONV: np.zeros(t.shape, bool)}[mode]
            rt = rt + up.astype(np.float32) - down.astype(np.float32)
            r[ties] = rt
        v = r
    if float(v.min()) < dst.min_code or float(v.max()) > dst.max_code:
        return None
    return v


def data_bound(x: np.ndarray) -> int:
    """The largest ``|code|`` in ``x`` (integer-valued), rounded up to a power of two (few distinct plans)."""
    if x.size == 0:
        return 1
    m = max(abs(float(x.min())), abs(float(x.max())))
    return 1 << max(0, int(m)).bit_length()


def gemm_dtype(x_bound: int, w_type: FixedType, k: int) -> type | None:
    """float32 or float64 when every partial sum of ``x @ w`` is exact there, else None."""
    bound = x_bound * max_code(w_type) * k
    return np.float32 if bound < F32_EXACT else np.float64 if bound < 2**53 else None


def padded(x: np.ndarray, before: tuple[int, ...], after: tuple[int, ...]) -> np.ndarray:
    if not any(before) and not any(after):
        return x
    width = [(0, 0)] + list(zip(before, after, strict=True)) + [(0, 0)]
    return np.pad(x, width)


def _windows(x: np.ndarray, size: tuple[int, ...], step: tuple[int, ...], count: tuple[int, ...],
             dtype: type) -> np.ndarray:
    """``(N, *count, *size, C)`` windows of ``x`` copied once into a new ``dtype`` array."""
    nd = len(size)
    view = np.lib.stride_tricks.sliding_window_view(x, size, axis=tuple(range(1, 1 + nd)))
    view = view[(slice(None),) + tuple(slice(0, (c - 1) * s + 1, s) for c, s in zip(count, step, strict=True))]
    order = (0,) + tuple(range(1, 1 + nd)) + tuple(range(2 + nd, 2 + 2 * nd)) + (1 + nd,)
    view = view.transpose(order)
    out = np.empty(view.shape, dtype=dtype)
    np.copyto(out, view, casting="unsafe")  # integer or float codes -> float, exact
    return out


def conv_im2col(x: np.ndarray, w: np.ndarray, size: tuple[int, ...], stride: tuple[int, ...],
                out_shape: tuple[int, ...]) -> np.ndarray:
    """``x (N, *spatial, C)`` (already padded) convolved with ``w (K, M)``: ``(N, *out, M)`` in w's dtype."""
    cols = _windows(x, size, stride, out_shape, w.dtype)
    n = x.shape[0]
    return (cols.reshape(-1, w.shape[0]) @ w).reshape((n,) + tuple(out_shape) + (w.shape[1],))


def pool_window_weights(w: np.ndarray, size: tuple[int, ...], stride: tuple[int, ...],
                        pool: tuple[int, ...]) -> np.ndarray:
    """The ``(patch * C, P * M)`` matrix of :func:`conv_pooled` from a Keras kernel ``(*size, C, M)``."""
    nd = len(size)
    patch = tuple((p - 1) * s + k for p, s, k in zip(pool, stride, size, strict=True))
    c, m = w.shape[nd], w.shape[nd + 1]
    big = np.zeros(patch + (c,) + tuple(pool) + (m,), dtype=w.dtype)
    for offset in np.ndindex(*pool):
        where = tuple(slice(o * s, o * s + k) for o, s, k in zip(offset, stride, size, strict=True))
        big[where + (slice(None),) + offset + (slice(None),)] = w
    return big.reshape(int(np.prod(patch)) * c, int(np.prod(pool)) * m)


def conv_pooled(x: np.ndarray, big: np.ndarray, size: tuple[int, ...], stride: tuple[int, ...],
                pool: tuple[int, ...], pooled_shape: tuple[int, ...]) -> np.ndarray:
    """Max over each pooling window (stride = pool size) of the convolution: ``(N, *pooled, M)``.

    Rows go through the GEMM in blocks whose product stays in cache while its maximum is taken.
    """
    patch = tuple((p - 1) * s + k for p, s, k in zip(pool, stride, size, strict=True))
    step = tuple(p * s for p, s in zip(pool, stride, strict=True))
    cols = _windows(x, patch, step, pooled_shape, big.dtype).reshape(-1, big.shape[0])
    groups = int(np.prod(pool))
    m = big.shape[1] // groups
    out = np.empty((cols.shape[0], m), dtype=big.dtype)
    if big.shape[0] <= SPLIT_MAX_K:
        _pooled_split(cols, big, groups, m, out)
        return out.reshape((x.shape[0],) + tuple(pooled_shape) + (m,))
    rows = max(256, BLOCK_VALUES // big.shape[1])
    y = np.empty((min(rows, cols.shape[0]), big.shape[1]), dtype=big.dtype)
    for start in range(0, cols.shape[0], rows):
        part = cols[start : start + rows]
        yb = y[: len(part)]
        np.matmul(part, big, out=yb)
        _block_max(yb, groups, m, out[start : start + len(part)])
    return out.reshape((x.shape[0],) + tuple(pooled_shape) + (m,))


def _pooled_split(cols: np.ndarray, big: np.ndarray, groups: int, m: int, out: np.ndarray) -> None:
    """One GEMM per pooling offset into its own contiguous block, then maxima over whole blocks.

    With a short inner dimension the GEMM is cheap and the maxima dominate; on column slices of
    one wide product they run 16 values at a time, on separate products they run end to end.
    """
    parts = [np.ascontiguousarray(big[:, g * m : (g + 1) * m]) for g in range(groups)]
    rows = max(256, BLOCK_VALUES // (groups * m))
    scratch = np.empty((min(rows, cols.shape[0]), m), dtype=big.dtype)
    for start in range(0, cols.shape[0], rows):
        part = cols[start : start + rows]
        acc = out[start : start + len(part)]
        np.matmul(part, parts[0], out=acc)
        tmp = scratch[: len(part)]
        for w in parts[1:]:
            np.matmul(part, w, out=tmp)
            np.maximum(acc, tmp, out=acc)


def _block_max(y: np.ndarray, groups: int, m: int, out: np.ndarray) -> None:
    """``out = max`` of the ``groups`` column blocks of width ``m`` of ``y`` (halving: long rows)."""
    while groups > 2:
        half = groups // 2
        odd = groups - 2 * half
        z = y[:, : half * m]
        np.maximum(z, y[:, half * m : 2 * half * m], out=z)  # in place: y is scratch
        if odd:
            np.maximum(z[:, :m], y[:, 2 * half * m : (2 * half + 1) * m], out=z[:, :m])
        y, groups = z, half
    if groups == 2:
        np.maximum(y[:, :m], y[:, m : 2 * m], out=out)
    else:
        out[...] = y[:, :m]
