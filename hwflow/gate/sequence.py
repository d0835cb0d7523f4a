"""A confidence sequence for the mean of bounded per-trial values: valid at every look, so the gate
may stop as soon as a verdict is certain (optional stopping) without inflating its error.

Why not a t-interval after each batch: looking at a fixed-n interval again and again, and stopping
the first time it clears the bound, makes the error rate grow with the number of looks (a repeated
significance test). A confidence sequence covers the true mean at *every* trial count at once, with
probability at least 1 - alpha, so any stopping rule keeps its confidence.

The construction is the betting ("hedged capital") confidence sequence of Waudby-Smith & Ramdas,
*Estimating means of bounded random variables by betting* (JRSS-B, 2023), for values in [0, 1]:

- for a candidate mean ``m``, two gamblers bet on ``X - m`` (one for "above", one for "below")
  with the predictable plug-in fractions ``lam_t = sqrt(2 log(2/alpha) / (s2_{t-1} t log(1+t)))``,
  capped at ``c/m`` and ``c/(1-m)`` (``c = 3/4``) so that no bet can lose everything;
- ``K+_t(m) = prod (1 + min(lam_i, c/m) (X_i - m))`` and ``K-_t(m) = prod (1 - min(lam_i, c/(1-m)) (X_i - m))``
  are non-negative martingales with mean 1 when ``m`` is the true mean, so by Ville's inequality
  each exceeds ``2/alpha`` at *any* time with probability at most ``alpha/2``;
- ``m`` is rejected once either capital has reached ``2/alpha``; the sequence is the set of ``m``
  never rejected (the running intersection over trials).

Each capital factor is monotone in ``m`` (``K+`` non-increasing, ``K-`` non-decreasing), so "every
mean at or below the bound is rejected" is decided exactly by ``K+`` at the bound itself: verdicts
need no search at all; the interval that is printed is found by bisection on each end.

The predictable variance ``s2`` and mean use the running estimates ``(1/4 + sum (X_i - mu_i)^2) / (t+1)`` and
``(1/2 + sum X_i) / (t+1)`` of the paper. Everything is deterministic: the same values give the same
interval and the same decision time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BET_CAP = 0.75
"""``c``: the largest fraction of the capital a bet may risk (the paper suggests 1/2 or 3/4)."""
TOLERANCE = 1e-6
"""Width to which the printed interval's ends are found (bisection), rounded outward."""


@dataclass(frozen=True)
class Decision:
    """When the sequence first put the mean above or below a bound (trial counts, 1-based), or None."""

    above_at: int | None
    """First trial count after which every mean <= bound is rejected (the mean is above the bound)."""
    below_at: int | None
    """First trial count after which every mean >= bound is rejected (the mean is below the bound)."""


def _lambdas(x: np.ndarray, alpha: float) -> np.ndarray:
    """Predictable plug-in bet sizes ``lam_t``, t = 1..n (each uses trials before t only)."""
    t = np.arange(1, x.size + 1, dtype=np.float64)
    mu = (0.5 + np.cumsum(x)) / (t + 1)
    s2 = (0.25 + np.cumsum((x - mu) ** 2)) / (t + 1)
    s2_before = np.concatenate([[0.25], s2[:-1]])
    return np.sqrt(2.0 * math.log(2.0 / alpha) / (s2_before * t * np.log1p(t)))


def log_capitals(x: np.ndarray, m: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """``log K+`` and ``log K-`` after each trial, for every candidate mean: arrays ``(len(m), len(x))``."""
    x = _check(x)
    m = np.asarray(m, dtype=np.float64).reshape(-1, 1)
    lam = _lambdas(x, alpha)
    with np.errstate(divide="ignore"):
        up = np.minimum(lam, BET_CAP / m)
        down = np.minimum(lam, BET_CAP / (1.0 - m))
    d = x - m
    return np.cumsum(np.log1p(up * d), axis=1), np.cumsum(np.log1p(-down * d), axis=1)


def decide(x: np.ndarray, bound: float, alpha: float) -> Decision:
    """When (if ever) the sequence at level ``alpha`` (two-sided) put the mean of ``x`` above or below ``bound``."""
    if not 0.0 <= bound <= 1.0:
        msg = f"bound {bound} is outside [0, 1] (values are scaled to [0, 1] first)"
        raise ValueError(msg)
    if x.size == 0:
        return Decision(None, None)
    up, down = log_capitals(x, np.array([bound]), alpha)
    threshold = math.log(2.0 / alpha)
    return Decision(_first(up[0] >= threshold), _first(down[0] >= threshold))


def interval(x: np.ndarray, alpha: float) -> tuple[float, float]:
    """The sequence after the last value: the means never rejected at any trial count so far.

    By the monotonicity above, the means ``K+`` ever rejected are those below a point ``L``, and those ``K-``
    ever rejected lie above a point ``U``: both are found by bisection, to ``TOLERANCE``, rounded outward
    (so the interval printed never excludes a mean the sequence keeps). (0, 1) with no values; NaN, NaN in the
    (vanishingly rare) case that every mean was rejected.
    """
    x = _check(x)
    if x.size == 0:
        return 0.0, 1.0
    threshold = math.log(2.0 / alpha)

    def rejected(m: float, side: int) -> bool:
        up, down = log_capitals(x, np.array([m]), alpha)
        return bool(((up if side > 0 else down)[0] >= threshold).any())

    lo_a, lo_b = 0.0, 1.0  # K+ rejects every m below the bound L in [lo_a, lo_b]
    hi_a, hi_b = 0.0, 1.0  # K- rejects every m above the bound U in [hi_a, hi_b]
    while lo_b - lo_a > TOLERANCE:
        mid = (lo_a + lo_b) / 2
        lo_a, lo_b = (mid, lo_b) if rejected(mid, +1) else (lo_a, mid)
    while hi_b - hi_a > TOLERANCE:
        mid = (hi_a + hi_b) / 2
        hi_a, hi_b = (hi_a, mid) if rejected(mid, -1) else (mid, hi_b)
    if lo_a > hi_b:
        return math.nan, math.nan
    return lo_a, hi_b


def _first(hits: np.ndarray) -> int | None:
    idx = np.flatnonzero(hits)
    return int(idx[0]) + 1 if idx.size else None


def _check(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size and (not np.all(np.isfinite(x)) or x.min() < 0.0 or x.max() > 1.0):
        msg = "confidence sequence values must be finite and in [0, 1] (scale them by the metric's range first)"
        raise ValueError(msg)
    return x
