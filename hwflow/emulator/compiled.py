"""Compiled kernels of the fused path (numba), each with a numpy reference beside it.

The fused path's numpy passes are memory-bound: an im2col copy of the whole chunk, a GEMM output
four times wider than what survives the max pooling, a float64 step function over it and a cast to
the narrow dtype, each a pass through main memory. These kernels keep one block of a group in cache
from the input codes to the next layer's codes:

- :func:`gather` copies the windows of a block of output positions into the GEMM's float left
  operand, from codes of any dtype (im2col of one block);
- the GEMM stays numpy's (BLAS);
- :func:`max_step` takes the maximum over the pooling window and evaluates the group's step
  function (``step.StepFunction``) in exact int64 arithmetic, writing the next layer's codes in
  their narrowest integer dtype: no float64 pass.

:func:`conv_group` runs that loop for a convolution (:class:`ConvPlan`); ``fused`` calls it.
:func:`merge_step` runs a residual network's Add (or Subtract) and the step function after it in
one pass over the two inputs' codes.

Every kernel has a numpy reference (``*_ref``, same arguments; ``step_ref`` is checked against
``StepFunction.exact``); ``tests/test_emulator_compiled.py`` checks both bit-identical on random
codes and step functions (every rounding mode and its ties, saturation, negative slopes). Numba
runs when it imports and ``HWFLOW_NO_NUMBA`` is unset or ``0`` (:func:`enabled`); otherwise the
references run and ``fused`` keeps its plain numpy path. Numba compiles on first call (cached on
disk, ``cache=True``; a source change recompiles): a benchmark warms the kernels up first.

Why the kernels index with unsigned integers: numba wraps a negative signed index around (Python
semantics), a branch per access that keeps LLVM from vectorizing the loop; an unsigned index has none.

Exported for other engines (e.g. a campaign's delta kernels): :class:`StepParams`,
:func:`step_params`, :func:`max_step`, :func:`apply_step`, :func:`merge_step`, :func:`gather`, :func:`enabled`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from hwflow.emulator.step import StepFunction
from hwflow.fixed import Rounding

try:  # numba is optional at run time: everything has a numpy reference
    import numba
except ImportError:  # pragma: no cover - numba is a pinned dependency
    numba = None

BLOCK_BYTES = 1 << 19
"""Bytes of gathered windows plus GEMM output per block of :func:`conv_group` (stays in L2)."""
SPECIALIZE = 8
"""Channel counts divisible by this get kernels compiled for their shape (one compile each, cached)."""

# Rounding as flags of one branch-free formula (see _max_step_kernel): round up when
# g * (rem > half or (rem == half and tie)) or z * (rem != 0 and n < 0), where
# tie = ta or (tn and n < 0) or (tp and n >= 0) or (td and floor is odd).
_FLAGS = {  # g, z, ta, tn, tp, td
    Rounding.TRN: (0, 0, 0, 0, 0, 0),
    Rounding.TRN_ZERO: (0, 1, 0, 0, 0, 0),
    Rounding.RND: (1, 0, 1, 0, 0, 0),
    Rounding.RND_ZERO: (1, 0, 0, 1, 0, 0),
    Rounding.RND_INF: (1, 0, 0, 0, 1, 0),
    Rounding.RND_MIN_INF: (1, 0, 0, 0, 0, 0),
    Rounding.RND_CONV: (1, 0, 0, 0, 0, 1),
}


def enabled() -> bool:
    """Whether the numba kernels run (numba imports, and ``HWFLOW_NO_NUMBA`` is unset or ``0``)."""
    return numba is not None and os.environ.get("HWFLOW_NO_NUMBA", "0") in ("", "0")


@dataclass(frozen=True)
class StepParams:
    """A step function ``clamp(R((s*m + q) * 2**-k), lo, hi) << j`` per channel, as kernel arguments.

    ``m`` already holds the per-channel sign the caller pooled with (the caller's ``s`` is
    ``sign * accumulator``). ``k == 0`` with all flags zero: nothing is rounded.
    """

    m: np.ndarray  # (C,) int64
    q: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    k: int
    flags: np.ndarray  # (6,) int64, see _FLAGS
    j: int


def step_params(fn: StepFunction, sign: np.ndarray | None = None) -> StepParams:
    """The kernel form of ``fn`` at ``sign * s``: exact, since ``fn`` bounds ``|s*m + q|`` below 2**52."""
    m = np.array(fn.m, dtype=np.int64)
    if sign is not None:
        m = m * np.asarray(sign, dtype=np.int64)
    rounded = fn.rounding is not None and fn.k > 0  # as StepFunction.exact: k <= 0 rounds nothing
    flags = _FLAGS[fn.rounding] if rounded else (0,) * 6
    return StepParams(m, np.array(fn.q, dtype=np.int64), np.array(fn.lo, dtype=np.int64),
                      np.array(fn.hi, dtype=np.int64), int(fn.k) if rounded else 0,
                      np.array(flags, dtype=np.int64), int(fn.j))


def narrow_dtype(lo: int, hi: int) -> type:
    """The narrowest integer dtype holding ``[lo, hi]`` (what ``fused.compact`` casts to)."""
    for dtype in (np.int8, np.uint8, np.int16, np.uint16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return dtype
    return np.int64


def _jit(fn):
    """``numba.njit``, cached on disk where numba finds a writable cache directory, else in memory only."""
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available" (read-only install)
        return numba.njit(nogil=True)(fn)


# --- max over the pooling window, then the step function -----------------------------------------


def max_step(y: np.ndarray, pool: int, row_step: int, col_step: int, p: StepParams, out: np.ndarray) -> np.ndarray:
    """``out[b, c] = step(max over t < pool of y[b + t*row_step, t*col_step + c])``, in place.

    ``y`` is a 2D GEMM output (float or integer codes): column blocks per pooling offset
    (``row_step=0, col_step=C``), row blocks per offset (``row_step=B, col_step=0``), or no pooling
    (``pool=1``). ``out (B, C)`` has any integer (or float) dtype that holds the step's range.
    """
    if enabled():
        _max_step_for(out.shape[1], pool, col_step != 0, p)(y, pool, row_step, col_step, p.m, p.q, p.lo, p.hi, p.k,
                                                             p.flags, p.j, out)
        return out
    return max_step_ref(y, pool, row_step, col_step, p, out)


def _max_step_for(channels: int, pool: int, cols: bool, p: StepParams):
    """The compiled :func:`max_step` for this shape and rounding: specialized, or the generic one."""
    if channels % SPECIALIZE:
        return _max_step_kernel(0, 0, False, (0,) * 6, 0, 0)
    return _max_step_kernel(channels, pool, cols, tuple(int(v) for v in p.flags), p.k, p.j)


def max_step_ref(y: np.ndarray, pool: int, row_step: int, col_step: int, p: StepParams,
                 out: np.ndarray) -> np.ndarray:
    """numpy reference of :func:`max_step` (int64 arithmetic, as ``StepFunction.exact``)."""
    b, c = out.shape
    s = y[:b, :c]
    for t in range(1, pool):
        s = np.maximum(s, y[t * row_step : t * row_step + b, t * col_step : t * col_step + c])
    out[...] = step_ref(s, p)
    return out


def step_ref(s: np.ndarray, p: StepParams) -> np.ndarray:
    """The step function on integer-valued ``s (..., C)`` as int64 codes (numpy, the reference)."""
    n = np.asarray(s).astype(np.int64) * p.m + p.q
    g, z, ta, tn, tp, td = (bool(v) for v in p.flags)
    if p.k > 0:
        floor = n >> p.k
        rem = n - (floor << p.k)
        half = np.int64(1) << (p.k - 1)
        neg = n < 0
        tie = np.full(n.shape, ta) | (tn & neg) | (tp & ~neg) | (td & ((floor & 1) != 0))
        up = (g & ((rem > half) | ((rem == half) & tie))) | (z & (rem != 0) & neg)
        n = floor + up
    return np.clip(n, p.lo, p.hi) << p.j


def apply_step(s: np.ndarray, p: StepParams, dtype: type) -> np.ndarray:
    """The step function on integer-valued ``s`` (channels last, any shape) as a new ``dtype`` array."""
    flat = np.ascontiguousarray(s).reshape(-1, s.shape[-1])
    out = np.empty(flat.shape, dtype=dtype)
    return max_step(flat, 1, 0, 0, p, out).reshape(s.shape)


@functools.cache
def _max_step_kernel(channels: int, pool: int, cols: bool, flags: tuple, shift: int, scale: int):
    """:func:`max_step` compiled with the shape and the rounding as constants.

    LLVM then unrolls and vectorizes the channel loop (with runtime counts it runs scalar) and folds
    the rounding formula to the few operations of one mode; ``cols``: offsets are column blocks;
    ``flags, shift, scale``: the step's rounding flags, ``k`` and ``j``. ``channels == 0``: the one
    generic kernel (everything at run time), for odd channel counts, so that small test networks do
    not compile a kernel per shape.
    """
    u = numba.uint64
    generic = channels == 0

    def kernel(y, pool_, row_step, col_step, m, q, lo, hi, k_, flags_, j_, out):  # pragma: no cover - compiled
        k = k_ if generic else shift
        j = j_ if generic else scale
        half = (np.int64(1) << (k - 1)) if k > 0 else np.int64(0)
        if generic:
            g, z, ta, tn, tp, td = flags_[0], flags_[1], flags_[2], flags_[3], flags_[4], flags_[5]
        else:
            g, z, ta, tn, tp, td = flags
        rs, cs = u(row_step), u(col_step)
        count = out.shape[1] if generic else channels
        windows = pool_ if generic else pool
        for b in range(out.shape[0]):
            ub = u(b)
            for c in range(count):
                uc = u(c)
                s = y[ub, uc]
                for t in range(1, windows):
                    if generic:
                        v = y[ub + u(t) * rs, u(t) * cs + uc]
                    else:
                        v = y[ub, u(t * channels) + uc] if cols else y[ub + u(t) * rs, uc]
                    s = v if v > s else s
                n = np.int64(s) * m[uc] + q[uc]
                fl = n >> k
                rem = n - (fl << k)
                neg = np.int64(n < 0)
                tie = ta | (tn & neg) | (tp & (1 - neg)) | (td & fl)
                up = (g & (np.int64(rem > half) | (np.int64(rem == half) & tie))) | (z & np.int64(rem != 0) & neg)
                out[ub, uc] = min(max(fl + (up & 1), lo[uc]), hi[uc]) << j

    return _jit(kernel)


# --- a merge and the step function after it ---------------------------------------------------------


def merge_step(a: np.ndarray, b: np.ndarray, sa: int, sb: int, minus: bool, p: StepParams,
               out: np.ndarray) -> np.ndarray:
    """``out[r, c] = step((a[r, c] << sa) +- (b[r, c] << sb))``, in place: an Add or Subtract whose
    result type holds the sum exactly, and the chain after it, in one pass over integer codes.

    ``a, b (R, C)``: codes of any dtype (float ones hold exact integers); ``out (R, C)``: any integer
    dtype holding the step's range. Saves the merge's wide (int64) result and a second pass over it.
    """
    if enabled():
        _merge_step_for(out.shape[1], minus, p)(a, b, sa, sb, p.m, p.q, p.lo, p.hi, p.k, p.flags, p.j, out)
        return out
    return merge_step_ref(a, b, sa, sb, minus, p, out)


def merge_step_ref(a: np.ndarray, b: np.ndarray, sa: int, sb: int, minus: bool, p: StepParams,
                   out: np.ndarray) -> np.ndarray:
    """numpy reference of :func:`merge_step` (int64 arithmetic)."""
    x = np.left_shift(np.asarray(a).astype(np.int64), sa)
    y = np.left_shift(np.asarray(b).astype(np.int64), sb)
    out[...] = step_ref(x - y if minus else x + y, p)
    return out


def _merge_step_for(channels: int, minus: bool, p: StepParams):
    if channels % SPECIALIZE:
        return _merge_step_kernel(0, minus, (0,) * 6, 0, 0)
    return _merge_step_kernel(channels, minus, tuple(int(v) for v in p.flags), p.k, p.j)


@functools.cache
def _merge_step_kernel(channels: int, minus: bool, flags: tuple, shift: int, scale: int):
    """:func:`merge_step` compiled with the channel count and the rounding as constants (``channels
    == 0``: the generic kernel), as :func:`_max_step_kernel`."""
    u = numba.uint64
    generic = channels == 0
    sign = -1 if minus else 1

    def kernel(a, b, sa, sb, m, q, lo, hi, k_, flags_, j_, out):  # pragma: no cover - compiled
        k = k_ if generic else shift
        j = j_ if generic else scale
        half = (np.int64(1) << (k - 1)) if k > 0 else np.int64(0)
        if generic:
            g, z, ta, tn, tp, td = flags_[0], flags_[1], flags_[2], flags_[3], flags_[4], flags_[5]
        else:
            g, z, ta, tn, tp, td = flags
        count = out.shape[1] if generic else channels
        for r in range(out.shape[0]):
            ur = u(r)
            for c in range(count):
                uc = u(c)
                s = (np.int64(a[ur, uc]) << sa) + sign * (np.int64(b[ur, uc]) << sb)
                n = s * m[uc] + q[uc]
                fl = n >> k
                rem = n - (fl << k)
                neg = np.int64(n < 0)
                tie = ta | (tn & neg) | (tp & (1 - neg)) | (td & fl)
                up = (g & (np.int64(rem > half) | (np.int64(rem == half) & tie))) | (z & np.int64(rem != 0) & neg)
                out[ur, uc] = min(max(fl + (up & 1), lo[uc]), hi[uc]) << j

    return _jit(kernel)


# --- window gather (im2col of one block) -----------------------------------------------------------


def gather(x: np.ndarray, out: np.ndarray, start: int, grid: tuple[int, int], size: tuple[int, int],
           step: tuple[int, int], offsets: np.ndarray) -> np.ndarray:
    """Windows of the output positions ``start .. start + B`` into ``out (P, B, K)``, in place.

    ``x (N, H, W*C)``: codes of any dtype, channels folded into rows, C-contiguous. Position ``g``
    is sample ``g // (gh*gw)``, grid cell ``(py, px)``; its window ``t`` starts at row ``py*step[0]
    + offsets[t, 0]``, column ``px*step[1] + offsets[t, 1]`` and is ``size[0]`` rows of
    ``size[1] * C`` values (``K = size[0] * size[1] * C``, the Keras kernel's order).
    """
    if enabled():
        c = out.shape[2] // (size[0] * size[1])
        _gather_for(out.shape[0], size, c)(x, out, start, grid[0], grid[1], size[0], step[0], step[1], c, offsets)
        return out
    return gather_ref(x, out, start, grid, size, step, offsets)


def _gather_for(windows: int, size: tuple[int, int], c: int):
    """The compiled :func:`gather` for this shape: specialized, or the generic one."""
    special = c % SPECIALIZE == 0 or (c == 1 and size[1] <= SPECIALIZE)  # a network's first layer: C == 1
    return _gather_kernel(windows, size[0], size[1] * c) if special else _gather_kernel(0, 0, 0)


def gather_ref(x: np.ndarray, out: np.ndarray, start: int, grid: tuple[int, int], size: tuple[int, int],
               step: tuple[int, int], offsets: np.ndarray) -> np.ndarray:
    """numpy reference of :func:`gather` (fancy indexing)."""
    _, b_count, k = out.shape
    c = k // (size[0] * size[1])
    g = np.arange(start, start + b_count)
    n, r = np.divmod(g, grid[0] * grid[1])
    py, px = np.divmod(r, grid[1])
    for t, (oy, ox) in enumerate(np.asarray(offsets)):
        rows = (py * step[0] + oy)[:, None] + np.arange(size[0])[None, :]  # (B, kh)
        cols = ((px * step[1] + ox) * c)[:, None] + np.arange(size[1] * c)[None, :]  # (B, kw*C)
        out[t] = x[n[:, None, None], rows[:, :, None], cols[:, None, :]].reshape(b_count, k)
    return out


@functools.cache
def _gather_kernel(windows: int, rows: int, run: int):
    """:func:`gather` compiled for ``windows`` per position, ``rows`` window rows of ``run`` values
    (constants: short copies unrolled); ``windows == 0``: the generic kernel (counts at run time)."""
    u = numba.uint64
    generic = windows == 0

    def kernel(x, out, start, gh, gw, kh, sh, sw, c, offsets):  # pragma: no cover - compiled
        per = gh * gw
        windows_ = out.shape[0] if generic else windows
        rows_ = kh if generic else rows
        run_ = out.shape[2] // kh if generic else run
        n = start // per  # then counted on: two integer divisions per position cost more than the copy
        py = (start - n * per) // gw
        px = start - n * per - py * gw
        for b in range(out.shape[1]):
            for t in range(windows_):
                y0 = py * sh + offsets[t, 0]
                x0 = u((px * sw + offsets[t, 1]) * c)
                for ky in range(rows_):
                    yy, base = u(y0 + ky), u(ky * run_)
                    for i in range(run_):
                        out[u(t), u(b), base + u(i)] = x[u(n), yy, x0 + u(i)]
            px += 1
            if px == gw:
                px = 0
                py += 1
                if py == gh:
                    py = 0
                    n += 1

    return _jit(kernel)


# --- one convolution group: gather, GEMM, max and step, block by block ---------------------------


@dataclass(frozen=True)
class ConvPlan:
    """How :func:`conv_group` runs a convolution (optionally max-pooled) and its step function.

    ``w (K, P*C)`` with ``layout="cols"`` (one window per pooled output, one column block per
    pooling offset: ``gemm.pool_window_weights``), or ``w (K, C)`` with ``layout="rows"`` (one
    window per pooling offset, ``offsets``). ``grid``: the output grid (pooled, or the conv's own).
    """

    w: np.ndarray
    grid: tuple[int, int]
    size: tuple[int, int]
    step: tuple[int, int]
    offsets: np.ndarray  # (windows, 2) int64
    pool: int  # positions per pooling window (1: no pooling)
    layout: str  # "cols" or "rows"
    params: StepParams

    @property
    def channels(self) -> int:
        return self.w.shape[1] // (self.pool if self.layout == "cols" else 1)


def conv_group(x: np.ndarray, plan: ConvPlan, dtype: type) -> np.ndarray:
    """The group's output codes ``(N, *grid, C)`` in ``dtype`` from (padded) 2D input codes ``x (N, H, W, C_in)``."""
    n = x.shape[0]
    x3 = np.ascontiguousarray(x).reshape(n, x.shape[1], -1)
    total = n * plan.grid[0] * plan.grid[1]
    windows, k = len(plan.offsets), plan.w.shape[0]
    out = np.empty((total, plan.channels), dtype=dtype)
    width, c_in = plan.w.shape[1], k // (plan.size[0] * plan.size[1])
    rows = max(64, min(total, BLOCK_BYTES // (plan.w.dtype.itemsize * windows * (k + width))))
    cols_buf = np.empty(windows * rows * k, dtype=plan.w.dtype)
    y_buf = np.empty(windows * rows * width, dtype=plan.w.dtype)
    cols_layout = plan.layout == "cols"
    p = plan.params
    numba_on = enabled()  # resolved once: a block costs a few microseconds of Python, held under the GIL
    if numba_on:
        gather_k = _gather_for(windows, plan.size, c_in)
        step_k = _max_step_for(plan.channels, plan.pool, cols_layout, p)
    for start in range(0, total, rows):
        b = min(rows, total - start)
        cols = cols_buf[: windows * b * k].reshape(windows, b, k)
        y = y_buf[: windows * b * width].reshape(windows * b, width)
        part = out[start : start + b]
        row_step, col_step = (0, plan.channels) if cols_layout else (b, 0)
        if numba_on:
            gather_k(x3, cols, start, plan.grid[0], plan.grid[1], plan.size[0], plan.step[0], plan.step[1], c_in,
                     plan.offsets)
            np.matmul(cols.reshape(windows * b, k), plan.w, out=y)
            step_k(y, plan.pool, row_step, col_step, p.m, p.q, p.lo, p.hi, p.k, p.flags, p.j, part)
        else:
            gather_ref(x3, cols, start, plan.grid, plan.size, plan.step, plan.offsets)
            np.matmul(cols.reshape(windows * b, k), plan.w, out=y)
            max_step_ref(y, plan.pool, row_step, col_step, p, part)
    return out.reshape((n,) + tuple(plan.grid) + (plan.channels,))


