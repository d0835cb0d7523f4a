"""Verdicts: a requirement against the per-trial values, through the confidence sequence.

Values are scaled to [0, 1] by the metric's range (for a gain, by the range of a difference), and
``max:`` bounds are mirrored into ``min:`` ones, so one test serves every requirement: "is the mean
above the bound?". Each requirement gets an equal share of the gate's error (a union bound over the
checks, ``alpha_i = (1 - confidence) / checks``), so at the stated confidence *every* certain verdict
is right at once, at whatever batch the gate stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hwflow.gate import sequence
from hwflow.gate.requirements import Requirement
from hwflow.gate.values import MetricInfo

HOLDS, FAILS, UNDECIDED = "holds", "fails", "undecided"


@dataclass(frozen=True)
class Check:
    """One requirement applied to one variant (``all`` expands to one check per variant)."""

    requirement: Requirement
    index: int
    """Position of the requirement in ``require:``."""
    variant: str
    other: str | None
    """The variant it must beat (``gain_over``), as a label."""
    metric: MetricInfo

    @property
    def name(self) -> str:
        req = self.requirement
        if not req.name:
            return req.describe(self.variant, self.metric.name)
        return req.name if req.variant != "all" else f"{req.name} [{self.variant}]"

    @property
    def span(self) -> tuple[float, float]:
        lo, hi = self.requirement.range or (self.metric.lower, self.metric.upper)
        return (lo - hi, hi - lo) if self.other else (lo, hi)


@dataclass(frozen=True)
class Verdict:
    check: Check
    status: str
    """``holds``, ``fails`` or ``undecided``."""
    certain: bool
    """True when the confidence sequence decided it (else the trials ran out: ``on: mean`` took the mean)."""
    trials: int
    """Trials judged (the first ``trials`` of the sequence)."""
    planned: int
    """Trials the whole spec plans for this point (the gate may stop before)."""
    decided_at: int | None
    """Trial count at which the sequence first became certain (None if it never did)."""
    mean: float
    """Mean value over the judged trials (of the difference for a gain), in the metric's units."""
    low: float
    """The confidence sequence after the judged trials, in the metric's units."""
    high: float
    alpha: float
    """This check's share of the error."""

    @property
    def line(self) -> str:
        req = self.check.requirement
        sign = ">=" if req.kind == "min" else "<="
        how = f"certain after {self.decided_at} trials" if self.certain else (
            "by the mean, not certain" if self.status != UNDECIDED else "interval straddles the bound")
        return (f"{self.status.upper():9s} {self.check.name}: mean {self.mean:.4f}, {100 * (1 - self.alpha):.2f}% "
                f"interval [{self.low:.4f}, {self.high:.4f}] {sign} {req.bound:g}? ({self.trials} of {self.planned} "
                f"trials; {how})")


def expand(requirements, labels: list[str], metric_for) -> list[Check]:
    """Checks of every requirement; ``metric_for(requirement, variant) -> MetricInfo``."""
    checks = []
    for i, req in enumerate(requirements):
        variants = labels if req.variant == "all" else [req.variant]
        for variant in variants:
            other = req.gain_over
            if other is not None and "/" not in other:
                other = f"{variant.rpartition('/')[0]}/{other}"
            if other == variant:
                continue  # 'all' with gain_over: the variant beaten is not compared with itself
            checks.append(Check(req, i, variant, other, metric_for(req, variant)))
    return checks


def alpha_each(checks: list[Check]) -> dict[int, float]:
    """Error share of each check (by position): the union bound, ``(1 - confidence) / len(checks)``."""
    return {i: (1.0 - c.requirement.confidence) / len(checks) for i, c in enumerate(checks)}


def scaled(check: Check, values: np.ndarray, other: np.ndarray | None) -> tuple[np.ndarray, float, np.ndarray]:
    """(values in [0, 1] oriented so that "holds" means "mean above the bound", the bound likewise, raw values).

    Raw values are the metric (or the gain, in the metric's good direction) the bound is stated in.
    """
    req = check.requirement
    raw = values
    if other is not None:
        n = min(len(values), len(other))
        raw = values[:n] - other[:n]
        if not check.metric.higher_is_better:
            raw = -raw
    lo, hi = check.span
    bad = raw[(raw < lo) | (raw > hi) | ~np.isfinite(raw)]
    if bad.size:
        from hwflow.gate.errors import GateError

        msg = (f"{check.name}: a trial's value {bad[0]:g} lies outside the range [{lo:g}, {hi:g}] the interval "
               "assumes: widen the requirement's 'range'")
        raise GateError(msg)
    x = (raw - lo) / (hi - lo)
    b = (req.bound - lo) / (hi - lo)
    if req.kind == "max":
        x, b = 1.0 - x, 1.0 - b
    return np.clip(x, 0.0, 1.0), min(1.0, max(0.0, b)), raw


def judge(check: Check, values: np.ndarray, other: np.ndarray | None, alpha: float, planned: int,
          final: bool) -> Verdict:
    """The verdict on the first trials; ``final``: no more trials will come (the spec's count is reached)."""
    x, b, raw = scaled(check, values, other)
    d = sequence.decide(x, b, alpha)
    lo, hi = check.span
    s_low, s_high = sequence.interval(x, alpha)
    if check.requirement.kind == "max":
        s_low, s_high = 1.0 - s_high, 1.0 - s_low
    low, high = lo + s_low * (hi - lo), lo + s_high * (hi - lo)
    mean = float(raw.mean()) if raw.size else math.nan
    firsts = [(t, s) for t, s in ((d.above_at, HOLDS), (d.below_at, FAILS)) if t is not None]
    if firsts:
        t, status = min(firsts)
        return Verdict(check, status, True, len(x), planned, t, mean, low, high, alpha)
    if not final or check.requirement.on == "interval" or not raw.size:
        return Verdict(check, UNDECIDED, False, len(x), planned, None, mean, low, high, alpha)
    bound = check.requirement.bound
    holds = mean >= bound if check.requirement.kind == "min" else mean <= bound
    return Verdict(check, HOLDS if holds else FAILS, False, len(x), planned, None, mean, low, high, alpha)
