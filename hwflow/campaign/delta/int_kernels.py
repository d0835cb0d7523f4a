"""Compiled kernels that write compact integer codes: a folded per-channel chain, and a merge.

On a residual network every trial at 1e-4 reaches every sample, so the per-channel layers and the
merges between the convolutions see dense blocks: with numpy each batch norm, ReLU and Add is a few
float64 passes over them, and every layer writes float64 codes the next one converts again. These
kernels do a whole folded chain (``hwflow.emulator.step``: ``clamp(R(s * alpha + beta)) * scale``) or
a whole merge (``hwflow.emulator.merge``: the exact sum, difference, product or comparison, then one
cast) in one pass, and write the result in the narrowest integer dtype of its type.

Both have a numpy reference of the same contract (``*_numpy``); ``tests/test_engine_graph_speed.py``
checks they agree on random codes and types. As in ``hwflow.campaign.delta.compiled``, the references
run when numba is absent or switched off (``HWFLOW_NO_NUMBA``, ``compiled.use_numba(False)``).
"""

from __future__ import annotations

import numpy as np

from hwflow.campaign.delta import compiled
from hwflow.campaign.delta.compiled import ROUNDING_CODES, _jit
from hwflow.emulator.merge import _exact, product_type, sum_type
from hwflow.errors import EmulatorError
from hwflow.fixed import FixedType, Overflow, requantize, value_range

OPS = {"add": 0, "subtract": 1, "average": 2, "multiply": 3, "maximum": 4, "minimum": 5}
OVERFLOW_CODES = {Overflow.WRAP: 0, Overflow.SAT: 1, Overflow.SAT_ZERO: 2, Overflow.SAT_SYM: 3}
PLANE = 32  # positions per sample from which a block is stepped plane by plane
ROW_CHUNK = 1024  # rows stepped at a time, every channel (the chunk and the float64 buffer stay in cache)


# --- 1. a folded chain: the bound step function, written as integer codes --------------------------

def step_codes(values: np.ndarray, alpha, beta, rounding: int, lo, hi, scale: float, out: np.ndarray) -> None:
    """``out[s, p, c]`` = ``clamp(R(values[s, p, c] * alpha[c] + beta[c]), lo[c], hi[c]) * scale`` in
    float64 (exact: ``hwflow.emulator.step`` checked the bound), stored in ``out``'s integer dtype.
    ``values`` ``(S, P, C)`` any strides and dtype; ``lo`` / ``hi`` empty: no clamp; ``scale`` 0: none."""
    if not compiled.enabled():
        step_codes_numpy(values, alpha, beta, rounding, lo, hi, scale, out)
        return
    # Per channel over positions: contiguous for a convolution's accumulator block (channel first,
    # ``ChannelMajor``), strided for a channels-last one. Planes of many positions go one sample at a time;
    # few positions (a Dense layer's block has one) as rows over every sample, so the loops stay long.
    s_n, n_p, n_c = values.shape
    first = np.moveaxis(values, -1, 0)
    if n_p >= PLANE:
        _step_planes_nb(first, alpha, beta, rounding, lo, hi, scale, out)
    else:
        _step_rows_nb(first.reshape(n_c, s_n * n_p), alpha, beta, rounding, lo, hi, scale,
                      out.reshape(s_n * n_p, n_c))


def step_codes_numpy(values, alpha, beta, rounding, lo, hi, scale, out) -> None:
    v = np.multiply(values, alpha, dtype=np.float64)
    v += beta
    compiled._round_numpy(v, rounding)
    if lo.size:
        np.maximum(v, lo, out=v)
    if hi.size:
        np.minimum(v, hi, out=v)
    if scale:
        v *= scale
    out[...] = v


def _round_row(buf, rounding):  # pragma: no cover - compiled
    """``buf`` rounded to integers in place with an ap_fixed mode (``compiled.ROUNDING_CODES``), one
    branch-free loop per mode."""
    n = buf.shape[0]
    if rounding == 1:
        for p in range(n):
            buf[p] = np.floor(buf[p])
    elif rounding == 2:
        for p in range(n):
            buf[p] = np.trunc(buf[p])
    elif rounding == 3:
        for p in range(n):
            buf[p] = np.floor(buf[p] + 0.5)
    elif rounding == 4:
        for p in range(n):
            buf[p] = np.rint(buf[p])
    elif rounding == 5:
        for p in range(n):
            buf[p] = np.ceil(buf[p] - 0.5)
    elif rounding == 6:
        for p in range(n):
            buf[p] = np.copysign(np.ceil(np.abs(buf[p]) - 0.5), buf[p])
    elif rounding == 7:
        for p in range(n):
            buf[p] = np.copysign(np.floor(np.abs(buf[p]) + 0.5), buf[p])


_round_row_nb = _jit(_round_row)


def _finish_row(buf, rounding, lo, hi, scale, c):  # pragma: no cover - compiled
    """The rest of a step function on ``buf`` (``v * alpha + beta`` already there) for channel ``c``:
    round, clamp, scale."""
    n = buf.shape[0]
    _round_row_nb(buf, rounding)
    if lo.size > 0:
        m = lo[c]
        for p in range(n):
            buf[p] = max(buf[p], m)
    if hi.size > 0:
        m2 = hi[c]
        for p in range(n):
            buf[p] = min(buf[p], m2)
    if scale != 0.0:
        for p in range(n):
            buf[p] = buf[p] * scale


_finish_row_nb = _jit(_finish_row)


def _step_planes_kernel(values, alpha, beta, rounding, lo, hi, scale, out):  # pragma: no cover - compiled
    """Input ``values (C, S, P)``: one (sample, channel) plane at a time through a float64 buffer, each stage
    a loop over the plane (each vectorizes), stored into ``out (S, P, C)`` (one sample's codes in cache)."""
    n_c, s_n, n_p = values.shape
    buf = np.empty(n_p, dtype=np.float64)
    for s in range(s_n):
        dst = out[s]
        for c in range(n_c):
            a = alpha[c]
            b = beta[c]
            row = values[c, s]
            for p in range(n_p):
                buf[p] = np.float64(row[p]) * a + b
            _finish_row_nb(buf, rounding, lo, hi, scale, c)
            for p in range(n_p):
                dst[p, c] = buf[p]


def _step_rows_kernel(values, alpha, beta, rounding, lo, hi, scale, out):  # pragma: no cover - compiled
    """Input ``values (C, R)``: chunks of rows, each channel's part through a float64 buffer, each stage a
    loop over the chunk (each vectorizes), stored into ``out (R, C)``."""
    n_c, n_r = values.shape
    buf = np.empty(min(n_r, ROW_CHUNK), dtype=np.float64)
    for r0 in range(0, n_r, ROW_CHUNK):  # a chunk of rows for every channel: the block's cache lines read once
        n = min(ROW_CHUNK, n_r - r0)
        part = buf[:n]
        for c in range(n_c):
            a = alpha[c]
            b = beta[c]
            row = values[c]
            for r in range(n):
                part[r] = np.float64(row[r0 + r]) * a + b
            _finish_row_nb(part, rounding, lo, hi, scale, c)
            for r in range(n):
                out[r0 + r, c] = part[r]


_step_planes_nb = _jit(_step_planes_kernel)
_step_rows_nb = _jit(_step_rows_kernel)


# --- 2. an elementwise merge on integer codes --------------------------------------------------------

class MergePlan:
    """The integer form of one elementwise merge of ``ta`` and ``tb`` codes to ``result``
    (``hwflow.emulator.merge.elementwise``): the shifts aligning both inputs, and the one cast."""

    def __init__(self, op: str, ta: FixedType, tb: FixedType, result: FixedType):
        if op not in OPS:
            msg = f"merge operation {op!r} is not emulated; supported: {', '.join(OPS)}"
            raise EmulatorError(msg)
        self.op, self.ta, self.tb, self.result = op, ta, tb, result
        self.sa = self.sb = 0
        if op in ("add", "subtract", "average"):
            t = sum_type(ta, tb, minus=op == "subtract")
            self.sa, self.sb = t.frac - ta.frac, t.frac - tb.frac
            src = t.frac + (op == "average")  # (a + b) * 0.5: the same codes, one more fractional bit
            if op == "average":
                _exact(t.width + 1, t.integer, t.signed)
        elif op == "multiply":
            src = product_type(ta, tb).frac
        else:  # maximum, minimum: compare at the finer fraction, then cast the chosen input
            frac = max(ta.frac, tb.frac)
            _exact(max(ta.width + frac - ta.frac, tb.width + frac - tb.frac), 0, True)  # refuses over 62 bits
            self.sa, self.sb = frac - ta.frac, frac - tb.frac
            src = 0
        self.shift = src - result.frac  # the cast of the combined value
        self.shift_a, self.shift_b = ta.frac - result.frac, tb.frac - result.frac  # maximum / minimum: each input
        lo, hi = result.min_code, result.max_code
        if result.overflow is Overflow.SAT_SYM and result.signed:
            lo = -hi
        # The cast is a move of the binary point that nothing overflows where the types say so (hls4ml's
        # inferred merge types often make it exact): then the kernel only shifts.
        if op in ("maximum", "minimum"):
            exact = _moves_only(ta, result) and _moves_only(tb, result)
        elif op == "multiply":
            exact = _moves_only(product_type(ta, tb), result)
        else:
            t = sum_type(ta, tb, minus=op == "subtract")
            exact = _moves_only(FixedType(t.width + (op == "average"), t.integer, t.signed), result)
        self.cast_args = (ROUNDING_CODES[result.rounding], OVERFLOW_CODES[result.overflow], lo, hi, result.width,
                          result.min_code, exact)

    def numpy(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The reference: the same integer expression in numpy (int64 codes of ``result``)."""
        a, b = np.asarray(a).astype(np.int64), np.asarray(b).astype(np.int64)
        if self.op in ("maximum", "minimum"):
            x, y = a << self.sa, b << self.sb
            first = x > y if self.op == "maximum" else x < y
            return np.where(first, requantize(a, self.ta.frac, self.result), requantize(b, self.tb.frac, self.result))
        if self.op == "multiply":
            total = a * b
        else:
            total = (a << self.sa) - (b << self.sb) if self.op == "subtract" else (a << self.sa) + (b << self.sb)
        return requantize(total, self.shift + self.result.frac, self.result)


def _moves_only(src: FixedType, dst: FixedType) -> bool:
    """Whether assigning ``src`` to ``dst`` drops no bit and cannot overflow (a left shift at most)."""
    lo, hi = value_range(src, dst)
    return src.frac <= dst.frac and dst.min_code <= lo and hi <= dst.max_code


def _step_args(fn) -> tuple:
    """A folded step function's constants as the merge kernel takes them (``fn``: a ``chain.FoldedChain``,
    its arrays indexed by the layer's channel, or None: no step)."""
    if fn is None:
        empty = np.zeros(0, dtype=np.float64)
        return empty, empty, empty, empty, 0, 0.0, False
    return fn.alpha, fn.beta, fn.lo, fn.hi, fn.rounding, fn.scale, True


def merge_codes(plan: MergePlan, ga, va, ra, pa, gb, vb, rb, pb, samples, channels, out, pre_a=None, pre_b=None,
                post=None) -> None:
    """``out[s, p, c]``: the merge of input A and input B at sample ``samples[s]``, position ``p``,
    channel ``channels[c]``. Input A's code is ``va[ra[s], p, pa[c]]`` where ``ra[s] >= 0`` and
    ``pa[c] >= 0`` (its delta block holds it), else the fault-free ``ga[samples[s], p, channels[c]]``;
    likewise B. ``ga``, ``gb`` ``(N, P, C)``, ``va``, ``vb`` ``(rows, P, channels)``, any strides and dtypes
    holding exact integer codes; ``out`` ``(S, P, |channels|)`` in an integer dtype of the result.

    ``pre_a`` / ``pre_b``: a folded chain (``chain.FoldedChain``) between the block's codes and the merge
    (its block holds the chain's input; the fault-free codes are the merge input's own); ``post``: one
    after the merge (``out`` then holds its codes). Compiled only: the numpy path runs the chains apart."""
    if not compiled.enabled():
        if pre_a is not None or pre_b is not None or post is not None:
            msg = "merge_codes runs folded chains in its compiled kernel only; apply them apart without numba"
            raise EmulatorError(msg)
        merge_codes_numpy(plan, ga, va, ra, pa, gb, vb, rb, pb, samples, channels, out)
        return
    _merge_codes_nb(ga, va, ra, pa, *_step_args(pre_a), gb, vb, rb, pb, *_step_args(pre_b), samples, channels,
                    OPS[plan.op], plan.sa, plan.sb, plan.shift, plan.shift_a, plan.shift_b, *plan.cast_args,
                    *_step_args(post), out)


def _gather(g, v, rows, pos, samples, channels) -> np.ndarray:
    x = np.take(np.take(g, samples, axis=0), channels, axis=-1).astype(np.int64)
    held_r, held_c = np.flatnonzero(rows >= 0), np.flatnonzero(pos >= 0)
    if len(held_r) and len(held_c):
        part = np.take(np.take(v, rows[held_r], axis=0), pos[held_c], axis=-1).astype(np.int64)
        x[np.ix_(held_r, np.arange(x.shape[1]), held_c)] = part
    return x


def merge_codes_numpy(plan, ga, va, ra, pa, gb, vb, rb, pb, samples, channels, out) -> None:
    out[...] = plan.numpy(_gather(ga, va, ra, pa, samples, channels), _gather(gb, vb, rb, pb, samples, channels))


def _cast_one(v, shift, rounding, ovf, lo, hi, width, min_code, exact):  # pragma: no cover - compiled
    """``requantize`` of one int64 code ``v`` with ``shift`` bits dropped (negative: added); ``exact``: the
    types say nothing is dropped and nothing overflows (only the shift)."""
    if exact:
        return v << (-shift)
    if shift <= 0:
        r = v << (-shift)
    else:
        fl = v >> shift
        rem = v - (fl << shift)
        half = np.int64(1) << (shift - 1)
        up = False
        if rounding == 2:  # TRN_ZERO
            up = rem != 0 and v < 0
        elif rounding >= 3:
            if rounding == 3:  # RND
                tie_up = True
            elif rounding == 4:  # RND_CONV
                tie_up = (fl & 1) != 0
            elif rounding == 5:  # RND_MIN_INF
                tie_up = False
            elif rounding == 6:  # RND_ZERO
                tie_up = v < 0
            else:  # RND_INF
                tie_up = v >= 0
            up = rem > half or (rem == half and tie_up)
        r = fl + 1 if up else fl
    if ovf == 0:
        span_mask = (np.int64(1) << width) - 1
        return ((r - min_code) & span_mask) + min_code
    if r < lo or r > hi:
        if ovf == 2:
            return np.int64(0)
        return lo if r < lo else hi
    return r


_cast_one_nb = _jit(_cast_one)


def _load_side(dst, fbuf, g, v, row, k, n, ch, alpha, beta, lo, hi, rounding, scale, active):  # pragma: no cover
    """One input's codes at sample row ``row`` of its block (or fault-free sample ``n``), channel ``ch``,
    every position, into ``dst`` (int64): the block's through its folded chain where ``active``."""
    n_p = dst.shape[0]
    if row >= 0 and k >= 0:
        if active:
            a, b = alpha[ch], beta[ch]
            for p in range(n_p):
                fbuf[p] = np.float64(v[row, p, k]) * a + b
            _finish_row_nb(fbuf, rounding, lo, hi, scale, ch)
            for p in range(n_p):
                dst[p] = np.int64(fbuf[p])
        else:
            for p in range(n_p):
                dst[p] = np.int64(v[row, p, k])
    else:
        for p in range(n_p):
            dst[p] = np.int64(g[n, p, ch])


_load_side_nb = _jit(_load_side)


def _merge_codes_kernel(ga, va, ra, pa, a_alpha, a_beta, a_lo, a_hi, a_round, a_scale, a_on,
                        gb, vb, rb, pb, b_alpha, b_beta, b_lo, b_hi, b_round, b_scale, b_on,
                        samples, channels, op, sa, sb, shift, shift_a, shift_b, rounding, ovf, lo, hi, width,
                        min_code, exact, o_alpha, o_beta, o_lo, o_hi, o_round, o_scale, o_on, out):  # pragma: no cover
    """One (sample, channel) row at a time: each input's row loaded once (its block's, through its chain,
    or the fault-free codes), the operation's loop over the positions, the chain after it, stored."""
    s_n, n_p, n_c = out.shape
    buf = np.empty(n_p, dtype=np.int64)
    fbuf = np.empty(n_p, dtype=np.float64)
    x = np.empty(n_p, dtype=np.int64)
    y = np.empty(n_p, dtype=np.int64)
    for s in range(s_n):
        n = samples[s]
        for ci in range(n_c):
            ch = channels[ci]
            _load_side_nb(x, fbuf, ga, va, ra[s], pa[ci], n, ch, a_alpha, a_beta, a_lo, a_hi, a_round, a_scale, a_on)
            _load_side_nb(y, fbuf, gb, vb, rb[s], pb[ci], n, ch, b_alpha, b_beta, b_lo, b_hi, b_round, b_scale, b_on)
            if op == 4 or op == 5:
                for p in range(n_p):
                    xp, yp = x[p], y[p]
                    first = (xp << sa) > (yp << sb) if op == 4 else (xp << sa) < (yp << sb)
                    if first:
                        buf[p] = _cast_one_nb(xp, shift_a, rounding, ovf, lo, hi, width, min_code, exact)
                    else:
                        buf[p] = _cast_one_nb(yp, shift_b, rounding, ovf, lo, hi, width, min_code, exact)
            else:
                if op == 3:
                    for p in range(n_p):
                        buf[p] = x[p] * y[p]
                elif op == 1:
                    for p in range(n_p):
                        buf[p] = (x[p] << sa) - (y[p] << sb)
                else:
                    for p in range(n_p):
                        buf[p] = (x[p] << sa) + (y[p] << sb)
                if not exact:
                    for p in range(n_p):
                        buf[p] = _cast_one_nb(buf[p], shift, rounding, ovf, lo, hi, width, min_code, False)
                elif shift < 0:
                    for p in range(n_p):
                        buf[p] = buf[p] << (-shift)
            dst = out[s]
            if o_on:
                a, b = o_alpha[ch], o_beta[ch]
                for p in range(n_p):
                    fbuf[p] = np.float64(buf[p]) * a + b
                _finish_row_nb(fbuf, o_round, o_lo, o_hi, o_scale, ch)
                for p in range(n_p):
                    dst[p, ci] = fbuf[p]
            else:
                for p in range(n_p):
                    dst[p, ci] = buf[p]


_merge_codes_nb = _jit(_merge_codes_kernel)
