"""Batch norm, activations, clips and casts after a multiply-accumulate, as one exact step function.

FINN absorbs a batch norm and a quantized activation into a MultiThreshold: one monotone step
function of the accumulator per channel. On our integer codes the thresholds need not be listed:
every step that hls4ml applies between the accumulator and the next layer's input is either exact
affine arithmetic (adding the bias, a batch norm computed in full precision, a cast that only moves
the binary point) or a monotone rounding and clamping (a cast that drops bits, a ReLU, a saturating
cast, FT-ClipAct's saturate mode). Interpreting the chain symbolically gives, per channel ``c``,

    out_c(s) = clamp(R((s * M_c + Q_c) * 2**-K), lo, hi) * 2**J

with integers ``M_c, Q_c`` and one rounding ``R`` (an ``ap_fixed`` mode): the closed form of the
MultiThreshold, whose thresholds are where ``R`` steps. It is bit-identical to running the layers
one by one as long as every intermediate is exact, which the derivation checks from the types
(and the bound on ``s``); where a step breaks that (a wrapping cast, a second rounding, a batch
norm after a rounding, FT-ClipAct's zero mode, float-stored arrays), :func:`derive` returns
``None`` and the caller runs the plain kernels. ``out_c`` is non-decreasing in ``s`` where
``M_c >= 0`` and non-increasing where ``M_c <= 0``, which is what lets max pooling move before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hwflow.emulator.clip import threshold_code
from hwflow.fixed import FixedType, Overflow, Rounding, _round_float, requantize_unbounded

_EXACT64 = 2**52  # |s*M + Q| below this: float64 holds it, and its RND half-adds, exactly
_EXACT32 = 2**23
MAX_LEVELS = 1 << 16


class NotCollapsible(Exception):
    """A step of the chain cannot be folded exactly (internal: ``derive`` returns None)."""


@dataclass(frozen=True)
class StepFunction:
    """``clamp(R((s*M + Q) * 2**-K), lo, hi) * 2**J`` per channel (last axis), exact for ``|s| <= bound``."""

    m: tuple[int, ...]
    q: tuple[int, ...]
    k: int
    rounding: Rounding | None  # None: nothing rounded (then k == 0)
    lo: tuple[int, ...]
    hi: tuple[int, ...]
    j: int
    bound: int
    clamp_lo: tuple[int, ...] | None = None  # the clamps that bite (a ReLU, a saturation); None: none
    clamp_hi: tuple[int, ...] | None = None

    @property
    def direction(self) -> np.ndarray:
        """Per channel: +1 non-decreasing, -1 non-increasing, 0 constant (M_c == 0)."""
        return np.sign(np.array(self.m, dtype=np.float64)).astype(np.int64)

    def out_range(self) -> tuple[int, int]:
        """Smallest and largest output code over all channels."""
        return min(self.lo) << self.j, max(self.hi) << self.j

    def num_bound(self) -> int:
        return max(abs(m) * self.bound + abs(q) for m, q in zip(self.m, self.q, strict=True))

    def exact(self, s: np.ndarray, channel: int) -> np.ndarray:
        """The step of ``channel`` on integers ``s`` in int64 arithmetic (the reference of ``__call__``)."""
        n = np.asarray(s, dtype=np.int64) * self.m[channel] + self.q[channel]
        r = n if self.rounding is None or self.k <= 0 else requantize_unbounded(
            n, self.k, FixedType(62, 62, True, self.rounding))
        r = np.clip(r, self.lo[channel], self.hi[channel])
        return r << self.j

    def thresholds(self, channel: int) -> tuple[np.ndarray, int, int]:
        """The MultiThreshold form of ``channel``: ``out(s) = (base + sign * searchsorted(t, s, 'right')) << J``.

        ``t`` (ascending, one entry per unit step of the output, repeated where it jumps several)
        is found by bisection on the exact integer step over ``[-bound, bound]``.
        """
        lo, hi = -self.bound, self.bound
        r_lo, r_hi = (int(v) >> self.j for v in self.exact(np.array([lo, hi]), channel))
        sign = 1 if r_hi >= r_lo else -1
        if abs(r_hi - r_lo) > MAX_LEVELS:
            msg = f"channel {channel} steps through {abs(r_hi - r_lo)} output codes: too many thresholds to list"
            raise ValueError(msg)
        levels = np.arange(min(r_lo, r_hi) + 1, max(r_lo, r_hi) + 1, dtype=np.int64)
        a = np.full(levels.shape, lo, dtype=np.int64)  # invariant: step not yet crossed at a
        b = np.full(levels.shape, hi, dtype=np.int64)  # crossed at b
        while np.any(b - a > 1):
            mid = (a + b) // 2
            r = self.exact(mid, channel) >> self.j
            crossed = r >= levels if sign > 0 else r < levels
            a, b = np.where(crossed, a, mid), np.where(crossed, mid, b)
        return (b if sign > 0 else b[::-1].copy()), r_lo, sign

    def __call__(self, s: np.ndarray, sign: np.ndarray | None = None) -> np.ndarray:
        """Output codes (float64 or float32, exact) of integer-valued ``s`` (channels last).

        ``sign`` (+1/-1 per channel) evaluates at ``sign * s``: the caller pooled ``sign * s``.
        """
        return self.bind(sign, s.dtype == np.float32)(s)

    def bind(self, sign: np.ndarray | None = None, float32_input: bool = True) -> BoundStep:
        """The constants of :meth:`__call__`, computed once (a campaign evaluates a group many times)."""
        small = float32_input and self.num_bound() < _EXACT32 and self.k <= 23
        dtype = np.float32 if small else np.float64
        m = [v * (1 if sign is None else int(g)) for v, g in zip(self.m, sign if sign is not None else self.m,
                                                                 strict=True)]
        alpha = np.array([math.ldexp(float(v), -self.k) for v in m], dtype=dtype)
        beta = np.array([math.ldexp(float(v), -self.k) for v in self.q], dtype=dtype)
        clamps = []
        for bounds, fn in ((self.clamp_lo, np.maximum), (self.clamp_hi, np.minimum)):
            if bounds is not None:  # arrays even when equal: numpy's scalar maximum is the slower loop
                clamps.append((fn, np.array(bounds, dtype=dtype)))
        rounding = self.rounding if self.rounding is not None and self.k > 0 else None
        return BoundStep(dtype, alpha, beta, rounding, tuple(clamps), 2.0**self.j if self.j else None)


@dataclass(frozen=True)
class BoundStep:
    """A StepFunction ready to run: ``v = s * alpha + beta``, round, clamp, scale (in ``dtype``, exactly).

    numpy's loops are slow on a short innermost axis, so the per-channel constants are tiled to a
    whole sample (channels last) or broadcast down long rows (channels first).
    """

    dtype: type
    alpha: np.ndarray
    beta: np.ndarray
    rounding: Rounding | None
    clamps: tuple  # (np.maximum or np.minimum, per-channel bound)
    scale: float | None
    _tiles: dict = field(default_factory=dict, compare=False, repr=False)

    def clamp_bounds(self, dtype: type) -> tuple[np.ndarray, np.ndarray]:
        """The lower and upper per-channel clamps as arrays of ``dtype`` (empty where the step has none), the
        form the compiled step kernels take."""
        lo = hi = np.zeros(0, dtype=dtype)
        for op, bound in self.clamps:
            if op is np.maximum:
                lo = np.asarray(bound, dtype=dtype)
            else:
                hi = np.asarray(bound, dtype=dtype)
        return lo, hi

    def __call__(self, s: np.ndarray) -> np.ndarray:
        """Channels last: ``s (..., C)``."""
        shape, c = s.shape, len(self.alpha)
        if s.ndim < 2 or s.size == 0:
            return self._run(s, self.alpha, self.beta, [b for _, b in self.clamps])
        flat = s.reshape(shape[0], -1)
        length = flat.shape[1]
        if length not in self._tiles:
            reps = length // c
            self._tiles[length] = (np.tile(self.alpha, reps), np.tile(self.beta, reps),
                                   [np.tile(b, reps) for _, b in self.clamps])
        alpha, beta, bounds = self._tiles[length]
        return self._run(flat, alpha, beta, bounds).reshape(shape)

    def channels_first(self, s: np.ndarray) -> np.ndarray:
        """Channels first: ``s (C, R)``."""
        col = (slice(None), None)
        return self._run(s, self.alpha[col], self.beta[col], [b[col] for _, b in self.clamps])

    def _run(self, s, alpha, beta, bounds) -> np.ndarray:
        v = np.multiply(s, alpha, dtype=self.dtype)
        v += beta
        if self.rounding is not None:
            _round_float(v, self.rounding)
        for (fn, _), bound in zip(self.clamps, bounds, strict=True):
            fn(v, bound, out=v)
        if self.scale is not None:
            v *= self.scale
        return v


@dataclass
class _State:
    """The chain so far: value ``y = clamp(R(N * 2**-K), lo, hi) * 2**J`` at ``frac``, ``N = s*M + Q``."""

    m: list[int]
    q: list[int]
    frac: int  # fractional bits of the current value (y's code)
    bound: int
    k: int = 0
    rounding: Rounding | None = None
    lo: list[float] | None = None  # clamp on r = R(N * 2**-K); None: phase 0 (exact, unclamped)
    hi: list[float] | None = None
    j: int = 0

    @property
    def exact(self) -> bool:
        return self.lo is None

    def n_range(self) -> list[tuple[int, int]]:
        return [(min(-m * self.bound, m * self.bound) + q, max(-m * self.bound, m * self.bound) + q)
                for m, q in zip(self.m, self.q, strict=True)]

    def r_range(self) -> list[tuple[float, float]]:
        """Range of r per channel (before 2**J)."""
        if self.exact:
            return [(float(a), float(b)) for a, b in self.n_range()]
        out = []
        for (a, b), lo, hi in zip(self.n_range(), self.lo, self.hi, strict=True):
            ra, rb = _round_scalar(a, self.k, self.rounding), _round_scalar(b, self.k, self.rounding)
            out.append((min(max(ra, lo), hi), min(max(rb, lo), hi)))
        return out

    def clamp(self, lo: list[float], hi: list[float]) -> None:
        """Clamp r (enter phase 1 if still exact)."""
        if self.exact:
            self.lo, self.hi = [-math.inf] * len(self.m), [math.inf] * len(self.m)
        self.lo = [max(a, b) for a, b in zip(self.lo, lo, strict=True)]
        self.hi = [min(a, b) for a, b in zip(self.hi, hi, strict=True)]


def _round_scalar(n: int, k: int, rounding: Rounding | None) -> int:
    if rounding is None or k <= 0:
        return n << -k if k < 0 else n
    return int(requantize_unbounded(np.array([n], dtype=np.int64), k, FixedType(62, 62 - 0, True, rounding))[0])


def _check62(state: _State) -> None:
    if any(max(abs(a), abs(b)) >= 2**61 for a, b in state.n_range()):
        raise NotCollapsible


def _cast(state: _State, dst: FixedType) -> None:
    """Assign the current value to ``dst`` (rounding, then overflow)."""
    shift = state.frac - dst.frac
    if state.exact and shift <= 0:
        state.m = [m << -shift for m in state.m]
        state.q = [q << -shift for q in state.q]
    elif state.exact:  # the one rounding: from here on r = R(N * 2**-k)
        state.k, state.rounding = shift, dst.rounding
        state.clamp([-math.inf] * len(state.m), [math.inf] * len(state.m))
    elif shift <= 0:
        state.j += -shift
    elif state.j >= shift:
        state.j -= shift  # y = r * 2**j: dropping bits below 2**j drops nothing
    elif state.rounding is None:
        # r = clamp(N) (nothing rounded yet): R(clamp(N) * 2**-t) = clamp(R(N * 2**-t), R(lo), R(hi))
        t = shift - state.j
        state.k, state.rounding, state.j = t, dst.rounding, 0
        state.lo = [v if math.isinf(v) else _round_scalar(int(v), t, dst.rounding) for v in state.lo]
        state.hi = [v if math.isinf(v) else _round_scalar(int(v), t, dst.rounding) for v in state.hi]
    else:
        raise NotCollapsible  # a second rounding does not compose
    state.frac = dst.frac
    _check62(state)
    _overflow(state, dst)


def _overflow(state: _State, dst: FixedType) -> None:
    lo_code = -dst.max_code if dst.overflow is Overflow.SAT_SYM and dst.signed else dst.min_code
    scale = 1 << state.j
    fits = all(a * scale >= dst.min_code and b * scale <= dst.max_code for a, b in state.r_range())
    if fits:
        return
    if dst.overflow not in (Overflow.SAT, Overflow.SAT_SYM) or state.j:
        raise NotCollapsible  # wraps or zeroes (not monotone), or saturates to a word off the 2**J grid
    state.clamp([float(-((-lo_code) // scale))] * len(state.m), [float(dst.max_code // scale)] * len(state.m))


def start_mac(bias: np.ndarray | None, up: int, accum: FixedType, bound: int, channels: int) -> _State:
    """The accumulator ``s * 2**up + bias`` (bias codes already at ``accum.frac``), ``|s| <= bound``."""
    q = [0] * channels if bias is None else [int(v) for v in np.asarray(bias).reshape(-1)]
    state = _State([1 << up] * channels, q, accum.frac, bound)
    if any(a < accum.min_code or b > accum.max_code for a, b in state.n_range()):
        raise NotCollapsible  # the accumulator may wrap
    return state


def start_codes(x_type: FixedType, channels: int, bound: int | None = None) -> _State:
    """The chain applied to input codes of ``x_type`` themselves (a group without multiply-accumulate)."""
    b = max(-x_type.min_code, x_type.max_code) if bound is None else bound
    return _State([1] * channels, [0] * channels, x_type.frac, b)


def batchnorm(state: _State, scale: np.ndarray, s_type: FixedType, bias: np.ndarray, b_type: FixedType,
              result: FixedType) -> None:
    """hls4ml's ``normalize`` in full precision, then the cast to ``result`` (see ops.batchnorm_fixed)."""
    if not state.exact:
        raise NotCollapsible
    scale = [int(v) for v in np.asarray(scale).reshape(-1)]
    bias = [int(v) for v in np.asarray(bias).reshape(-1)]
    if len(scale) != len(state.m) and len(scale) != 1:
        raise NotCollapsible
    scale = scale * len(state.m) if len(scale) == 1 else scale
    bias = bias * len(state.m) if len(bias) == 1 else bias
    p_frac = state.frac + s_type.frac
    frac = max(p_frac, b_type.frac)
    up, bup = frac - p_frac, frac - b_type.frac
    state.m = [(m * s) << up for m, s in zip(state.m, scale, strict=True)]
    state.q = [((q * s) << up) + (b << bup) for q, s, b in zip(state.q, scale, bias, strict=True)]
    state.frac = frac
    _check62(state)
    _cast(state, result)


def relu(state: _State, result: FixedType) -> None:
    state.clamp([0.0] * len(state.m), [math.inf] * len(state.m))
    _cast(state, result)


def clip_saturate(state: _State, x_type: FixedType, threshold: float, result: FixedType) -> None:
    """FT-ClipAct's saturate mode: ``min(max(x, 0), T)`` on ``x_type`` codes, then the cast."""
    t = threshold_code(threshold, x_type)
    scale = 1 << state.j
    if t % scale:
        raise NotCollapsible  # the clip would land off the 2**J grid
    state.clamp([0.0] * len(state.m), [float(t // scale)] * len(state.m))
    _cast(state, result)


def cast(state: _State, dst: FixedType) -> None:
    _cast(state, dst)


def finish(state: _State) -> StepFunction | None:
    """The step function, or None when float64 could not evaluate it exactly."""
    if any(max(abs(a), abs(b)) >= _EXACT64 for a, b in state.n_range()) or state.k > 52:
        return None
    n = len(state.m)
    lo = state.lo if state.lo is not None else [-math.inf] * n
    hi = state.hi if state.hi is not None else [math.inf] * n
    ranges = state.r_range()
    lo = [int(max(a, r[0])) for a, r in zip(lo, ranges, strict=True)]  # finite: the reachable range
    hi = [int(min(b, r[1])) for b, r in zip(hi, ranges, strict=True)]
    lo = [min(a, b) for a, b in zip(lo, hi, strict=True)]
    # A clamp bites where the unclamped reachable range passes it; elsewhere it is skipped.
    free = [(_round_scalar(a, state.k, state.rounding), _round_scalar(b, state.k, state.rounding))
            for a, b in state.n_range()]
    clamp_lo = tuple(lo) if any(f[0] < v for f, v in zip(free, lo, strict=True)) else None
    clamp_hi = tuple(hi) if any(f[1] > v for f, v in zip(free, hi, strict=True)) else None
    return StepFunction(tuple(state.m), tuple(state.q), state.k, state.rounding, tuple(lo), tuple(hi),
                        state.j, state.bound, clamp_lo, clamp_hi)
