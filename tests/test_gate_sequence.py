"""The gate's confidence sequence and verdicts: coverage under optional stopping (seeded simulation),
early stops on clear passes and failures, the union bound, and the verdict rules."""

import numpy as np
import pytest

from hwflow.gate import sequence
from hwflow.gate.judge import FAILS, HOLDS, UNDECIDED, Check, alpha_each, judge
from hwflow.gate.requirements import Requirement
from hwflow.gate.values import ACCURACY, MetricInfo


def test_coverage_holds_at_every_look_by_simulation():
    """The running sequence must miss the true mean at *any* of 300 trial counts in at most alpha of the runs."""
    rng = np.random.default_rng(2026)
    alpha, runs, n = 0.1, 200, 300
    clipped_mean = float(np.clip(np.random.default_rng(7).normal(0.97, 0.03, 2_000_000), 0, 1).mean())
    for draw, mean in ((lambda: rng.beta(2, 5, n), 2 / 7), (lambda: rng.binomial(1, 0.9, n).astype(float), 0.9),
                       (lambda: np.clip(rng.normal(0.97, 0.03, n), 0, 1), clipped_mean)):
        missed = 0
        for _ in range(runs):
            d = sequence.decide(draw(), mean, alpha)
            missed += d.above_at is not None or d.below_at is not None
        assert missed / runs <= alpha


def test_a_naive_repeated_t_test_would_not_cover():
    """Why a sequence: stopping at the first batch whose t-interval excludes the true mean errs far more often."""
    from scipy import stats

    rng = np.random.default_rng(3)
    wrong = 0
    for _ in range(200):
        x = rng.beta(2, 5, 300)
        for n in range(10, 301, 10):
            half = stats.t.ppf(0.975, n - 1) * x[:n].std(ddof=1) / np.sqrt(n)
            if abs(x[:n].mean() - 2 / 7) > half:
                wrong += 1
                break
    assert wrong / 200 > 0.1  # vs <= 0.05 for the sequence at the same level (test above)


def test_clear_pass_and_fail_stop_early():
    rng = np.random.default_rng(1)
    x = np.clip(rng.normal(0.93, 0.04, 200), 0, 1)
    holds = sequence.decide(x, 0.80, 0.05)
    fails = sequence.decide(x, 0.99, 0.05)
    assert holds.below_at is None
    assert holds.above_at is not None
    assert holds.above_at <= 40
    assert fails.above_at is None
    assert fails.below_at is not None
    assert fails.below_at <= 40
    close = sequence.decide(x, float(x.mean()), 0.05)  # at the mean itself: never certain
    assert close == sequence.Decision(None, None)


def test_interval_contains_mean_and_shrinks():
    rng = np.random.default_rng(5)
    x = rng.beta(8, 2, 400)
    lo20, hi20 = sequence.interval(x[:20], 0.05)
    lo, hi = sequence.interval(x, 0.05)
    assert lo20 <= x[:20].mean() <= hi20
    assert lo <= x.mean() <= hi
    assert hi - lo < hi20 - lo20
    assert sequence.interval(np.array([]), 0.05) == (0.0, 1.0)


def test_values_outside_unit_range_are_refused():
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        sequence.decide(np.array([0.5, 1.5]), 0.5, 0.05)


def _check(**over):
    base = {"variant": "m/baseline", "fault_model": "bitflip", "rate": 1e-3, "bound": 0.8}
    base.update(over)
    metric = over.pop("metric_info", ACCURACY) if "metric_info" in over else ACCURACY
    base.pop("metric_info", None)
    req = Requirement(**base)
    other = None
    if req.gain_over:
        other = req.gain_over if "/" in req.gain_over else f"m/{req.gain_over}"
    return Check(req, 0, req.variant, other, metric)


def test_verdicts_min_max_mean_and_undecided():
    rng = np.random.default_rng(9)
    x = np.clip(rng.normal(0.9, 0.05, 100), 0, 1)
    assert judge(_check(bound=0.7), x, None, 0.05, 100, final=False).status == HOLDS
    v = judge(_check(bound=0.97), x, None, 0.05, 100, final=False)
    assert (v.status, v.certain) == (FAILS, True)
    assert v.decided_at <= 20
    assert judge(_check(bound=0.95, kind="max"), x, None, 0.05, 100, final=False).status == HOLDS
    assert judge(_check(bound=0.7, kind="max"), x, None, 0.05, 100, final=False).status == FAILS
    near = float(x.mean()) - 0.002
    assert judge(_check(bound=near), x, None, 0.05, 100, final=False).status == UNDECIDED
    assert judge(_check(bound=near), x, None, 0.05, 100, final=True).status == UNDECIDED  # on: interval
    by_mean = judge(_check(bound=near, on="mean"), x, None, 0.05, 100, final=True)
    assert (by_mean.status, by_mean.certain) == (HOLDS, False)
    assert judge(_check(bound=near, on="mean"), x, None, 0.05, 100, final=False).status == UNDECIDED


def test_gain_is_paired_and_follows_the_metric_direction():
    rng = np.random.default_rng(4)
    base = np.clip(rng.normal(0.6, 0.15, 150), 0, 0.8)
    hardened = base + 0.2 + rng.normal(0, 0.01, 150)  # paired: same fault maps, +20 points
    assert judge(_check(gain_over="baseline", bound=0.05), hardened, base, 0.05, 150, False).status == HOLDS
    assert judge(_check(gain_over="baseline", bound=0.35), hardened, base, 0.05, 150, False).status == FAILS
    assert judge(_check(gain_over="baseline", bound=0.05), base, hardened, 0.05, 150, False).status == FAILS
    mse = MetricInfo("mse", False, 0.0, float("inf"))
    lower_is_better = _check(gain_over="baseline", bound=0.05, range=(0.0, 1.0), metric_info=mse)
    assert judge(lower_is_better, base, hardened, 0.05, 150, False).status == HOLDS  # less error is a gain


def test_union_bound_splits_the_error():
    checks = [_check(), _check(), _check(confidence=0.99)]
    alphas = alpha_each(checks)
    assert alphas[0] == pytest.approx(0.05 / 3)
    assert alphas[2] == pytest.approx(0.01 / 3)


def test_printed_interval_agrees_with_the_verdicts():
    """Certain "above b" exactly when the interval's lower end is above b (the same capital, two ways)."""
    rng = np.random.default_rng(11)
    x = rng.beta(6, 3, 120)
    lo, hi = sequence.interval(x, 0.05)
    for b in np.linspace(0.0, 1.0, 201):
        if min(abs(b - lo), abs(b - hi)) < 1e-5:
            continue
        d = sequence.decide(x, float(b), 0.05)
        assert (d.above_at is not None) == (b < lo)
        assert (d.below_at is not None) == (b > hi)
