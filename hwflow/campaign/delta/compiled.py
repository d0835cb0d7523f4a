"""Exact compiled kernels of the delta rules' hot loops, each beside its numpy reference.

At high fault rates nearly every trial changes a channel of the first convolution, so every sample
reaches the wide convolutions after it: tens of millions of accumulator codes per trial are summed,
pooled, stepped and compared with the fault-free codes. numpy does that in one pass per operation
(8 to 10 passes over the widest tensors, plus a float64 copy or two); the kernels here do each
chain in one memory-bound pass over its input, adding in float64 where the rule's bound keeps every
partial sum below 2**53 and in int64 elsewhere (exact for every code the rules carry).

Every kernel has a numpy reference of the same contract (``*_numpy``), and
``tests/test_engine_compiled.py`` checks both give identical codes on random inputs. The numpy
references run when numba cannot be imported, when ``HWFLOW_NO_NUMBA`` is set to anything but
``0`` (as for the emulator's kernels, ``hwflow.emulator.compiled``), or under ``use_numba(False)``.
Kernels are compiled once per machine (``cache=True``) and release the GIL (``nogil=True``), so
trials evaluated on threads run them side by side.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np

from hwflow.fixed import Rounding

try:  # numba is pinned in pyproject.toml; the engine still works (more slowly) without it
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised where numba is absent
    numba = None
    HAVE_NUMBA = False

_forced: list[bool] = []  # use_numba(...) overrides, innermost last


def enabled() -> bool:
    """Whether the compiled kernels run (numba importable, not switched off)."""
    if _forced:
        return _forced[-1] and HAVE_NUMBA
    return HAVE_NUMBA and os.environ.get("HWFLOW_NO_NUMBA", "0").strip() in ("", "0")  # as hwflow.emulator.compiled


@contextlib.contextmanager
def use_numba(on: bool) -> Iterator[None]:
    """Run the compiled kernels (``True``) or their numpy references (``False``) inside the block."""
    _forced.append(bool(on))
    try:
        yield
    finally:
        _forced.pop()


def _jit(fn):
    return numba.njit(cache=True, nogil=True)(fn) if HAVE_NUMBA else fn


# --- rounding modes as small integers (numba cannot take the enum) -----------------------------------

ROUNDING_CODES = {None: 0, Rounding.TRN: 1, Rounding.TRN_ZERO: 2, Rounding.RND: 3, Rounding.RND_CONV: 4,
                  Rounding.RND_MIN_INF: 5, Rounding.RND_ZERO: 6, Rounding.RND_INF: 7}


# --- 1. a convolution's accumulator: partial products + fault-free codes + faulty words, wrapped, pooled

def conv_sum(partial, gold, channels, samples, cols, wptr, wrow, wval, db, wrap, grid, win, sgn, out,
             exact_float: bool = True) -> None:
    """``out[ci, si, q]``: for output channel ``c = channels[ci]`` and sample ``n = samples[si]``, the
    faulty accumulator at grid position ``(y, x)`` (``y < GH, x < GW`` of the full ``(H, W)``) is

        gold[c, n, y, x] + partial[si, y, x, ci] + db[ci] + sum_w cols[wrow[w], n, y, x] * wval[w]

    (``w`` over ``wptr[ci]:wptr[ci + 1]``; ``gold`` ``(m, N, H, W)``, ``cols`` ``(k, N, H, W)``,
    ``partial`` ``(S, GH, GW, |C|)``, ``grid = (GH, GW)``; an empty ``partial``: no input term; an
    empty ``cols``: no words), wrapped into ``wrap = (bits, min_code)`` when ``bits > 0``. With
    pooling windows ``win`` (``(Q, size)`` flat indices ``y * GW + x``; ``sgn`` +1/-1 per channel)
    ``out`` is ``(|C|, S, Q)`` and holds ``sgn * max(sgn * acc)`` over each window; without (``win``
    empty) it is ``(|C|, S, GH * GW)``, the accumulator itself. ``exact_float``: every partial sum
    is below 2**53, so the kernel may add in float64 (converting to it vectorizes, to int64 does
    not); otherwise it adds in int64."""
    gh, gw = grid
    args = (partial, gold, channels, samples, cols, wptr, wrow, wval, db, int(wrap[0]), int(wrap[1]), win, sgn, out,
            gh, gw)
    if not enabled():
        conv_sum_numpy(*args, exact_float=exact_float)
        return
    buf = np.empty(gh * gw, dtype=np.float64 if exact_float and not wrap[0] else np.int64)
    args = args[:7] + (wval.astype(buf.dtype), db.astype(buf.dtype)) + args[9:]  # in buf's dtype: no conversions
    _conv_sum_nb(*args, buf)


def conv_sum_numpy(partial, gold, channels, samples, cols, wptr, wrow, wval, db, bits, lo, win, sgn, out,
                   gh, gw, exact_float: bool = False) -> None:
    """The reference: the same sums in numpy, in int64 (float64 where ``exact_float`` and no wrap)."""
    dtype = np.float64 if exact_float and not bits else np.int64
    every_c, every_s = len(channels) == gold.shape[0], len(samples) == gold.shape[1]
    acc = gold if every_c else np.take(gold, channels, axis=0)
    acc = acc if every_s else np.take(acc, samples, axis=1)
    acc = acc[:, :, :gh, :gw].astype(dtype).reshape(len(channels), len(samples), gh * gw)
    if partial.size:
        acc += np.moveaxis(partial.reshape(len(samples), gh * gw, len(channels)), -1, 0).astype(dtype)
    acc += db.astype(dtype)[:, None, None]
    if cols.size:
        for ci in range(len(channels)):
            for w in range(wptr[ci], wptr[ci + 1]):
                x = cols[wrow[w]] if every_s else np.take(cols[wrow[w]], samples, axis=0)
                acc[ci] += x[:, :gh, :gw].reshape(len(samples), -1).astype(dtype) * wval[w]
    if bits > 0:
        acc = ((acc - lo) & ((1 << bits) - 1)) + lo
    if win.shape[0] == 0:
        out[...] = acc
        return
    signs = sgn.astype(dtype)[:, None, None]
    acc *= signs
    best = acc[:, :, win[:, 0]]
    for t in range(1, win.shape[1]):
        np.maximum(best, acc[:, :, win[:, t]], out=best)
    out[...] = best * signs


def _conv_sum_kernel(partial, gold, channels, samples, cols, wptr, wrow, wval, db, bits, lo, win, sgn, out, gh, gw,
                     buf):  # pragma: no cover - compiled
    """Samples in blocks of ``SAMPLE_BLOCK`` (their ``partial`` rows stay in cache while each channel
    reads its column of them), one channel at a time inside a block (``gold`` and ``cols`` stream)."""
    has_partial = partial.size > 0
    has_cols = cols.size > 0
    pooled = win.shape[0] > 0
    mask = (np.int64(1) << bits) - 1 if bits > 0 else np.int64(0)
    n_s = samples.shape[0]
    n_p = gh * gw
    for s0 in range(0, n_s, SAMPLE_BLOCK):
        s1 = min(n_s, s0 + SAMPLE_BLOCK)
        for ci in range(channels.shape[0]):
            c = channels[ci]
            d = db[ci]
            for si in range(s0, s1):
                n = samples[si]
                for y in range(gh):
                    for x in range(gw):
                        buf[y * gw + x] = gold[c, n, y, x] + d
                if has_partial:
                    for y in range(gh):
                        for x in range(gw):
                            buf[y * gw + x] += partial[si, y, x, ci]
                if has_cols:
                    for w in range(wptr[ci], wptr[ci + 1]):
                        r = wrow[w]
                        dv = wval[w]
                        for y in range(gh):
                            for x in range(gw):
                                buf[y * gw + x] += cols[r, n, y, x] * dv
                if bits > 0:
                    for p in range(n_p):
                        v = np.int64(buf[p])
                        buf[p] = ((v - lo) & mask) + lo
                if pooled:
                    sg = sgn[ci]
                    for q in range(win.shape[0]):
                        best = buf[win[q, 0]] * sg
                        for t in range(1, win.shape[1]):
                            v2 = buf[win[q, t]] * sg
                            if v2 > best:
                                best = v2
                        out[ci, si, q] = best * sg
                else:
                    for p in range(n_p):
                        out[ci, si, p] = buf[p]


SAMPLE_BLOCK = 64


_conv_sum_nb = _jit(_conv_sum_kernel)


# --- 2. the im2col of an input difference -------------------------------------------------------

def dx_columns(values, golden, samples, channels, size, stride, pad, out) -> None:
    """``out[si, oy, ox, k]`` with ``k = (ky * KW + kx) * |C| + c``: the input difference
    ``values[si, iy, ix, c] - golden[samples[si], iy, ix, channels[c]]`` at ``iy = oy * sy + ky -
    pad_top`` (``ix`` likewise), zero in the padding. ``values`` ``(S, H, W, |C|)``, ``golden``
    ``(N, H, W, C)`` (any strides), ``out`` ``(S, OH, OW, KH * KW * |C|)``, where ``OH, OW`` may
    be a crop of the full output (its leading positions)."""
    (_dx_columns_nb if enabled() else dx_columns_numpy)(values, golden, samples, channels, size[0], size[1],
                                                        stride[0], stride[1], pad[0], pad[1], out)


def dx_columns_numpy(values, golden, samples, channels, kh, kw, sh, sw, pt, pl, out) -> None:
    s_n, h, w, nc = values.shape
    out_h, out_w = out.shape[1:3]
    dx = values.astype(np.float64) - np.take(np.take(golden, samples, axis=0), channels, axis=-1)
    big = np.zeros((s_n, pt + sh * out_h + kh, pl + sw * out_w + kw, nc))  # zero padding on every side
    hh, ww = min(h, big.shape[1] - pt), min(w, big.shape[2] - pl)
    big[:, pt : pt + hh, pl : pl + ww] = dx[:, :hh, :ww]
    for ky in range(kh):
        for kx in range(kw):
            k0 = (ky * kw + kx) * nc
            out[..., k0 : k0 + nc] = big[:, ky : ky + sh * out_h : sh, kx : kx + sw * out_w : sw]


def _dx_columns_kernel(values, golden, samples, channels, kh, kw, sh, sw, pt, pl, out):  # pragma: no cover
    """Per sample: the difference once into a zero-padded plane, then each (output position, kernel
    row) copies one contiguous run of ``KW * |C|`` values (the padded plane's row, the output's row)."""
    s_n, h, w, nc = values.shape
    out_h, out_w = out.shape[1], out.shape[2]
    ph = max(h + pt, (out_h - 1) * sh + kh)
    pw = max(w + pl, (out_w - 1) * sw + kw)
    plane = np.zeros((ph, pw * nc), dtype=out.dtype)
    run = kw * nc
    for si in range(s_n):
        n = samples[si]
        for iy in range(h):
            for ix in range(w):
                base = (ix + pl) * nc
                for c in range(nc):
                    dv = np.float64(values[si, iy, ix, c]) - np.float64(golden[n, iy, ix, channels[c]])
                    plane[iy + pt, base + c] = dv
        for oy in range(out_h):
            for ox in range(out_w):
                o = out[si, oy, ox]
                start = ox * sw * nc
                for ky in range(kh):
                    src = plane[oy * sh + ky]
                    k0 = ky * run
                    for t in range(run):
                        o[k0 + t] = src[start + t]


_dx_columns_nb = _jit(_dx_columns_kernel)


# --- 3. a folded step function on channel-first codes ---------------------------------------------

def step_channels_first(s, alpha, beta, rounding, lo, hi, scale, out) -> None:
    """``out[c, r]`` = the bound step function (``hwflow.emulator.step.BoundStep``) of ``s[c, r]``:
    ``v = s * alpha[c] + beta[c]`` in ``out``'s float dtype, rounded (``ROUNDING_CODES``), clamped
    below by ``lo`` and above by ``hi`` (empty: no clamp), times ``scale`` (0: none)."""
    (_step_nb if enabled() else step_numpy)(s, alpha, beta, rounding, lo, hi, scale, out)


def step_numpy(s, alpha, beta, rounding, lo, hi, scale, out) -> None:
    dtype = out.dtype
    v = np.multiply(s, alpha[:, None], dtype=dtype)
    v += beta[:, None]
    _round_numpy(v, rounding)
    if lo.size:
        np.maximum(v, lo[:, None], out=v)
    if hi.size:
        np.minimum(v, hi[:, None], out=v)
    if scale:
        v *= dtype.type(scale)
    out[...] = v


def _round_numpy(v: np.ndarray, mode: int) -> None:
    if mode == 1:
        np.floor(v, out=v)
    elif mode == 2:
        np.trunc(v, out=v)
    elif mode == 3:
        v += 0.5
        np.floor(v, out=v)
    elif mode == 4:
        np.rint(v, out=v)
    elif mode == 5:
        v -= 0.5
        np.ceil(v, out=v)
    elif mode == 6:
        v[...] = np.copysign(np.ceil(np.abs(v) - 0.5), v)
    elif mode == 7:
        v[...] = np.copysign(np.floor(np.abs(v) + 0.5), v)


def _step_kernel(s, alpha, beta, rounding, lo, hi, scale, out):  # pragma: no cover - compiled
    """One row at a time, each stage a branch-free loop over the row (in cache), so each vectorizes."""
    n_r = s.shape[1]
    for c in range(s.shape[0]):
        o = out[c]
        row = s[c]
        for r in range(n_r):
            o[r] = row[r]  # the input in out's dtype, as numpy's multiply(dtype=) converts it
        a = alpha[c]
        b = beta[c]
        for r in range(n_r):
            o[r] = o[r] * a + b
        if rounding == 1:
            for r in range(n_r):
                o[r] = np.floor(o[r])
        elif rounding == 2:
            for r in range(n_r):
                o[r] = np.trunc(o[r])
        elif rounding == 3:
            for r in range(n_r):
                o[r] = np.floor(o[r] + 0.5)
        elif rounding == 4:
            for r in range(n_r):
                o[r] = np.rint(o[r])
        elif rounding == 5:
            for r in range(n_r):
                o[r] = np.ceil(o[r] - 0.5)
        elif rounding == 6:
            for r in range(n_r):
                o[r] = np.copysign(np.ceil(np.abs(o[r]) - 0.5), o[r])
        elif rounding == 7:
            for r in range(n_r):
                o[r] = np.copysign(np.floor(np.abs(o[r]) + 0.5), o[r])
        if lo.size > 0:
            m = lo[c]
            for r in range(n_r):
                o[r] = max(o[r], m)
        if hi.size > 0:
            m2 = hi[c]
            for r in range(n_r):
                o[r] = min(o[r], m2)
        if scale != 0:
            for r in range(n_r):
                o[r] = o[r] * scale


_step_nb = _jit(_step_kernel)


# --- 4. which (sample, channel) cells of a block differ from the fault-free codes ----------------

def differs(values, golden, samples, channels, out) -> None:
    """``out[si, c]``: whether ``values[si, p, c] != golden[samples[si], p, channels[c]]`` at some
    position ``p`` (``values`` ``(S, P, |C|)``, ``golden`` ``(N, P, C)``, any strides)."""
    (_differs_nb if enabled() else differs_numpy)(values, golden, samples, channels, out)


def differs_numpy(values, golden, samples, channels, out) -> None:
    g = np.take(np.take(golden, samples, axis=0), channels, axis=-1)
    out[...] = (values != g).any(axis=1)


def _differs_kernel(values, golden, samples, channels, out):  # pragma: no cover - compiled
    s_n, n_pos, nc = values.shape
    for si in range(s_n):
        n = samples[si]
        for c in range(nc):
            ch = channels[c]
            hit = False
            for p in range(n_pos):
                if values[si, p, c] != golden[n, p, ch]:
                    hit = True
                    break
            out[si, c] = hit


_differs_nb = _jit(_differs_kernel)
