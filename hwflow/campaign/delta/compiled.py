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


# --- 1. a convolution's accumulator: fault-free codes + input term + faulty words, wrapped, pooled

def conv_sum(gold, channels, samples, grid, db, wrap, partial, xv, xg, xch, wt, src, wptr, wky, wkx, wci, wval,
             geometry, win, sgn, out, dtype=np.float64) -> None:
    """``out[ci, si, q]``: for output channel ``c = channels[ci]`` and sample ``n = samples[si]``, the
    faulty accumulator at grid position ``(y, x)`` (``y < GH, x < GW`` of the full ``(H, W)``) is

        gold[c, n, y, x] + db[ci] + partial[si, y, x, ci]
          + sum_{j, ky, kx} wt[ky, kx, j, ci] * (xv[si, iy, ix, j] - xg[n, iy, ix, xch[j]])
          + sum_w wval[w] * src[n, y * sy + wky[w] - pt, x * sx + wkx[w] - pl, wci[w]]

    with ``iy = y * sy + ky - pt``, ``ix = x * sx + kx - pl`` and every term read outside the input
    plane zero (the padding); ``w`` runs over ``wptr[ci]:wptr[ci + 1]``. ``gold`` is the fault-free
    accumulator ``(m, N, H, W)``; ``partial`` ``(S, GH, GW, |C|)`` an input term computed elsewhere
    (empty: none); ``xv`` ``(S, IH, IW, |B|)`` the faulty input codes of input channels ``xch`` and
    ``xg`` ``(N, IH, IW, Cin)`` the fault-free ones, ``wt`` ``(KH, KW, |B|, |C|)`` the faulty
    weights of those input channels (empty ``xv``: no input term); ``src`` ``(N, IH, IW, Cin)`` the
    fault-free input the changed words ``(wky, wkx, wci, wval)`` multiply. ``geometry`` is
    ``(KH, KW, sy, sx, pt, pl)``; ``grid = (GH, GW)``. The result is wrapped into ``wrap = (bits,
    min_code)`` when ``bits > 0``. With pooling windows ``win`` (``(Q, size)`` flat indices ``y * GW
    + x``; ``sgn`` +1/-1 per channel) ``out`` is ``(|C|, S, Q)`` and holds ``sgn * max(sgn * acc)``
    over each window; without (``win`` empty) it is ``(|C|, S, GH * GW)``, the accumulator itself.

    Neither term is an im2col: a changed word adds its difference times a shifted, strided slice of
    the fault-free input (no stored columns), and each faulty weight of the input block adds itself
    times a shifted slice of the block's difference, padded once per sample. ``dtype``: what the
    kernel adds in, float32 where the caller's bound keeps every partial sum below 2**24, float64
    below 2**53, int64 otherwise (float adds vectorize; the wrap converts to int64 first)."""
    gh, gw = grid
    kh, kw, sh, sw, pt, pl = (int(v) for v in geometry)
    dtype = np.dtype(dtype)
    args = (gold, channels, samples, gh, gw, db.astype(dtype), int(wrap[0]), int(wrap[1]), partial, xv, xg, xch,
            wt.astype(dtype), src, wptr, wky, wkx, wci, wval.astype(dtype), kh, kw, sh, sw, pt, pl, win, sgn, out)
    if not enabled():
        conv_sum_numpy(*args)
        return
    _conv_sum_nb(*args, np.zeros(1, dtype=dtype))


def _padded(planes: np.ndarray, pt: int, pl: int, rows: int, cols: int) -> np.ndarray:
    """``planes`` ``(S, IH, IW, ...)`` inside zeros: ``rows x cols`` positions, the plane at ``(pt, pl)``."""
    big = np.zeros((planes.shape[0], rows, cols) + planes.shape[3:], dtype=planes.dtype)
    hh, ww = max(0, min(planes.shape[1], rows - pt)), max(0, min(planes.shape[2], cols - pl))
    big[:, pt : pt + hh, pl : pl + ww] = planes[:, :hh, :ww]
    return big


def conv_sum_numpy(gold, channels, samples, gh, gw, db, bits, lo, partial, xv, xg, xch, wt, src, wptr, wky, wkx,
                   wci, wval, kh, kw, sh, sw, pt, pl, win, sgn, out) -> None:
    """The reference: the same sums in numpy, shifted slices of zero-padded planes, in ``db``'s dtype."""
    dtype = db.dtype
    s_n = len(samples)
    acc = np.take(np.take(gold, channels, axis=0), samples, axis=1)[:, :, :gh, :gw].astype(dtype)
    acc += db[:, None, None, None]
    if partial.size:
        acc += np.moveaxis(partial, -1, 0).astype(dtype)
    rows, cols = pt + sh * gh + kh, pl + sw * gw + kw
    if xv.size:
        dx = xv.astype(dtype) - np.take(np.take(xg, samples, axis=0), xch, axis=-1).astype(dtype)
        big = _padded(dx, pt, pl, rows, cols)
        for ky in range(kh):
            for kx in range(kw):
                part = big[:, ky : ky + sh * gh : sh, kx : kx + sw * gw : sw]  # (S, GH, GW, |B|)
                acc += np.moveaxis(part @ wt[ky, kx], -1, 0)
    for ci in range(len(channels)):
        for w in range(wptr[ci], wptr[ci + 1]):
            plane = np.take(src[..., wci[w]], samples, axis=0).astype(dtype)
            big = _padded(plane, pt, pl, rows, cols)
            acc[ci] += big[:, wky[w] : wky[w] + sh * gh : sh, wkx[w] : wkx[w] + sw * gw : sw] * wval[w]
    acc = acc.reshape(len(channels), s_n, gh * gw)
    if bits > 0:
        acc = ((acc.astype(np.int64) - lo) & ((1 << bits) - 1)) + lo
    if win.shape[0] == 0:
        out[...] = acc
        return
    signs = sgn.astype(acc.dtype)[:, None, None]
    acc = acc * signs
    best = acc[:, :, win[:, 0]]
    for t in range(1, win.shape[1]):
        np.maximum(best, acc[:, :, win[:, t]], out=best)
    out[...] = best * signs


def _conv_sum_kernel(gold, channels, samples, gh, gw, db, bits, lo, partial, xv, xg, xch, wt, src, wptr, wky, wkx,
                     wci, wval, kh, kw, sh, sw, pt, pl, win, sgn, out, buf):  # pragma: no cover - compiled
    """Samples in blocks of ``SAMPLE_BLOCK``: each sample's input difference and the input channels its
    changed words read go once into zero-padded planes (rows of ``pw`` values); then one channel at a
    time, the block's samples in turn (``gold`` and ``out`` stream), every term is summed into ``wide``
    laid out as those rows (position ``(y, x)`` at ``y * pw + x``), so that with unit strides each
    faulty weight's and each changed word's term is one contiguous loop over a shifted plane; then the
    wrap and the pooling or the copy out. Indices are unsigned (``u``): numba then drops its
    negative-index wraparound and LLVM vectorizes the loops."""
    u = np.uint64
    has_partial = partial.size > 0
    has_input = xv.size > 0
    pooled = win.shape[0] > 0
    mask = (np.int64(1) << bits) - 1 if bits > 0 else np.int64(0)
    n_c = channels.shape[0]
    n_b = xch.shape[0]
    ih, iw = src.shape[1], src.shape[2]
    pw = max(iw + pl, (gw - 1) * sw + kw)
    ph = max(ih + pt, (gh - 1) * sh + kh)
    # The unit-stride loops run over whole rows, rounded up to whole vectors (no scalar tail); the
    # planes are long enough for the last shifted read (the extra values are zeros or unused columns).
    span = (gh * pw + VECTOR - 1) // VECTOR * VECTOR
    length = max(ph * pw, (kh - 1) * pw + kw - 1 + span)
    wide = np.zeros(span, dtype=buf.dtype)
    n_q = win.shape[0]
    wwin = np.empty((n_q, win.shape[1]), dtype=np.uint64)  # the windows' positions in wide's layout
    for q in range(n_q):
        for t in range(win.shape[1]):
            wwin[q, t] = (win[q, t] // gw) * pw + win[q, t] % gw
    unit = sh == 1 and sw == 1
    # The input channels the changed words read, each into a plane of its own (slot).
    n_w = wci.shape[0]
    slot = np.empty(n_w, dtype=np.int64)
    used = np.full(src.shape[3], -1, dtype=np.int64)
    n_used = 0
    for w in range(n_w):
        if used[wci[w]] < 0:
            used[wci[w]] = n_used
            n_used += 1
        slot[w] = used[wci[w]]
    word_ch = np.empty(n_used, dtype=np.uint64)
    for ch in range(src.shape[3]):
        if used[ch] >= 0:
            word_ch[used[ch]] = ch
    block = min(SAMPLE_BLOCK, max(1, samples.shape[0]))
    plane = np.zeros((max(n_b, 1), length), dtype=buf.dtype)
    inp = np.zeros((block if has_input else 1, n_c if has_input else 1, span), dtype=buf.dtype)
    wplane = np.zeros((block, max(n_used, 1), length), dtype=buf.dtype)
    for s0 in range(0, samples.shape[0], block):
        s1 = min(samples.shape[0], s0 + block)
        for si in range(s0, s1):
            n = u(samples[si])
            b = u(si - s0)
            if has_input:  # the input term of every channel: each faulty weight times a shifted plane
                for j in range(n_b):
                    cj = u(xch[j])
                    for iy in range(xv.shape[1]):
                        base = u((iy + pt) * pw + pl)
                        for ix in range(xv.shape[2]):
                            plane[u(j), base + u(ix)] = xv[u(si), u(iy), u(ix), u(j)]
                            plane[u(j), base + u(ix)] -= xg[n, u(iy), u(ix), cj]
                acc = inp[b]
                acc[:, :] = 0
                for j in range(n_b):
                    for ky in range(kh):
                        for kx in range(kw):
                            if unit:
                                shifted = plane[j, ky * pw + kx : ky * pw + kx + span]
                                for ci in range(n_c):
                                    wv = wt[ky, kx, j, ci]
                                    if wv != 0:
                                        for q in range(span):
                                            acc[ci, q] += wv * shifted[q]
                            else:
                                for ci in range(n_c):
                                    wv = wt[u(ky), u(kx), u(j), u(ci)]
                                    if wv == 0:
                                        continue
                                    for y in range(gh):
                                        start = u((y * sh + ky) * pw + kx)
                                        base = u(y * pw)
                                        for x in range(gw):
                                            acc[u(ci), base + u(x)] += wv * plane[u(j), start + u(x * sw)]
            for k in range(n_used):
                cw = word_ch[k]
                for iy in range(ih):
                    base = u((iy + pt) * pw + pl)
                    for ix in range(iw):
                        wplane[b, u(k), base + u(ix)] = src[n, u(iy), u(ix), cw]
        for ci in range(n_c):
            c = u(channels[ci])
            dc = db[ci]
            for si in range(s0, s1):
                n = u(samples[si])
                b = u(si - s0)
                for y in range(gh):
                    base = u(y * pw)
                    for x in range(gw):
                        wide[base + u(x)] = gold[c, n, u(y), u(x)] + dc
                if has_partial:
                    for y in range(gh):
                        base = u(y * pw)
                        for x in range(gw):
                            wide[base + u(x)] += partial[u(si), u(y), u(x), u(ci)]
                if has_input:
                    for q in range(span):
                        wide[u(q)] += inp[b, u(ci), u(q)]
                for w in range(wptr[ci], wptr[ci + 1]):
                    ky, kx, dv = wky[w], wkx[w], wval[w]
                    k = u(slot[w])
                    if unit:
                        off = u(ky * pw + kx)
                        for q in range(span):
                            wide[u(q)] += dv * wplane[b, k, off + u(q)]
                    else:
                        for y in range(gh):
                            start = u((y * sh + ky) * pw + kx)
                            base = u(y * pw)
                            for x in range(gw):
                                wide[base + u(x)] += dv * wplane[b, k, start + u(x * sw)]
                if bits > 0:
                    for y in range(gh):
                        base = u(y * pw)
                        for x in range(gw):
                            v = np.int64(wide[base + u(x)])
                            wide[base + u(x)] = ((v - lo) & mask) + lo
                if pooled:
                    sg = sgn[ci]
                    for q in range(n_q):
                        best = wide[wwin[q, 0]] * sg
                        for t in range(1, wwin.shape[1]):
                            v2 = wide[wwin[q, t]] * sg
                            if v2 > best:
                                best = v2
                        out[u(ci), u(si), u(q)] = best * sg
                else:
                    for y in range(gh):
                        base = u(y * pw)
                        dest = u(y * gw)
                        for x in range(gw):
                            out[u(ci), u(si), dest + u(x)] = wide[base + u(x)]


VECTOR = 16  # values per unrolled vector loop of the kernel (two AVX-512 float32 registers)
SAMPLE_BLOCK = 32  # samples whose planes are built before the channel loop (they stay in cache)
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
    """Per sample: the difference once into a zero-padded plane (channel by channel: a channel-first
    block reads each channel's values in order), then each (output position, kernel row) copies one
    contiguous run of ``KW * |C|`` values (the padded plane's row, the output's row). Indices are
    unsigned: numba then drops its negative-index wraparound and the copies vectorize."""
    u = np.uint64
    s_n, h, w, nc = values.shape
    out_h, out_w = out.shape[1], out.shape[2]
    ph = max(h + pt, (out_h - 1) * sh + kh)
    pw = max(w + pl, (out_w - 1) * sw + kw)
    row = pw * nc
    plane = np.zeros(ph * row, dtype=out.dtype)
    run = kw * nc
    for si in range(s_n):
        n = u(samples[si])
        for c in range(nc):
            ch = u(channels[c])
            for iy in range(h):
                base = u((iy + pt) * row + pl * nc + c)
                for ix in range(w):
                    plane[base + u(ix * nc)] = (np.float64(values[u(si), u(iy), u(ix), u(c)])
                                                - np.float64(golden[n, u(iy), u(ix), ch]))
        for oy in range(out_h):
            for ox in range(out_w):
                for ky in range(kh):
                    src0 = u((oy * sh + ky) * row + ox * sw * nc)
                    dst0 = u(ky * run)
                    for t in range(run):
                        out[u(si), u(oy), u(ox), dst0 + u(t)] = plane[src0 + u(t)]


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
    """Indices as unsigned integers (numba then drops its negative-index wraparound); a block of
    one position per channel (a Dense layer's) compares a whole row without the early exit, which
    vectorizes."""
    s_n, n_pos, nc = values.shape
    if n_pos == 1:
        chans = np.empty(nc, dtype=np.uint64)
        for c in range(nc):
            chans[c] = channels[c]
        for si in range(s_n):
            n = np.uint64(samples[si])
            for c in range(nc):
                out[si, c] = values[si, 0, c] != golden[n, 0, chans[c]]
        return
    for si in range(s_n):
        n = np.uint64(samples[si])
        for c in range(nc):
            ch = np.uint64(channels[c])
            hit = False
            for p in range(n_pos):
                if values[si, p, c] != golden[n, p, ch]:
                    hit = True
                    break
            out[si, c] = hit


_differs_nb = _jit(_differs_kernel)
