"""Precision targets: rate sweep points grow until their 95 % t interval is as narrow as asked.

The rule itself, the spec field and its checks, continuing a stored campaign, and a real campaign: its
points reach the counts the rule gives on the full sequence of trial values, their rows are exactly the
first rows of a fixed-size campaign, and a run killed between rounds resumes to the same rows."""

import math
import sqlite3
from dataclasses import replace

import numpy as np
import pytest

from hwflow.campaign import parse_spec, run_campaign
from hwflow.campaign.precision import MARGIN, next_count, trials_needed
from hwflow.campaign.spec import PrecisionSpec, only_more_trials
from hwflow.errors import SpecError
from hwflow.report.stats import t_interval
from hwflow.results import ResultsDB

TARGET = PrecisionSpec(half_width=0.02, max_trials=100)


def test_a_point_within_the_target_is_done():
    values = [0.90, 0.91, 0.90, 0.91] * 5
    assert t_interval(values)[3] < TARGET.half_width
    assert next_count(values, 20, TARGET) == 20


def test_a_wide_point_grows_to_what_its_spread_says_with_the_margin():
    values = [0.5, 0.9] * 10
    half = t_interval(values)[3]
    assert next_count(values, 20, PrecisionSpec(0.02, 1000)) == math.ceil(MARGIN * 20 * (half / 0.02) ** 2) == 508
    assert next_count(values, 20, PrecisionSpec(0.02, 30)) == 30  # capped
    assert next_count(values, 30, PrecisionSpec(0.02, 30)) == 30  # at the cap: done


def test_a_point_just_over_the_target_grows_by_a_tenth_at_least():
    values = [0.5, 0.9] * 10
    half = t_interval(values)[3]
    assert next_count(values, 20, PrecisionSpec(half * 0.999, 1000)) == 23  # ceil(1.1 · 20 · 1.001)


def test_one_trial_or_an_undefined_metric():
    assert next_count([0.5], 1, TARGET) == 2  # one trial has no spread: a second one is needed
    assert next_count([math.nan, 0.5, 0.7], 3, TARGET) == 3  # more trials do not define it


def test_rounds_look_only_at_the_first_n_trials():
    rng = np.random.default_rng(3)
    values = list(rng.uniform(0.3, 1.0, 400))
    final = trials_needed(values, 10, TARGET)
    assert 10 < final <= TARGET.max_trials
    # What a database holds beyond a round's count changes nothing: each prefix gives the same rounds.
    for held in range(10, 400, 7):
        reached = trials_needed(values[:held], 10, TARGET)
        assert reached == final if held >= final else reached > held or reached == final
    n, rounds = 10, [10]
    while (grown := next_count(values, n, TARGET)) != n:
        n = grown
        rounds.append(n)
    assert n == final
    assert len(rounds) >= 2
    assert trials_needed(values, 10, None) == 10


def test_stopped_intervals_keep_most_of_their_coverage_on_skewed_outcomes():
    """Trial outcomes as on resnet8 at 1e-4: most maps cost a few points, one in eight collapses the network.
    Stopping when the spread looks small is slightly optimistic there; the rule must stay near 95 %."""
    rng = np.random.default_rng(11)

    def outcomes(n):
        collapse = rng.random(n) < 0.12
        return np.where(collapse, rng.uniform(0.1, 0.8, n), np.clip(rng.normal(0.91, 0.02, n), 0, 1))

    mean = 0.12 * 0.45 + 0.88 * 0.91  # the mixture's mean (the clip at 0 and 1 moves it by nothing measurable)
    target = PrecisionSpec(0.02, 2000)
    covered, drift, counts = 0, [], []
    for _ in range(400):
        values = outcomes(2000)
        n = trials_needed(list(values), 200, target)
        m, low, high, half = t_interval(values[:n])
        assert half <= target.half_width
        covered += low <= mean <= high
        drift.append(m - mean)
        counts.append(n)
    assert 200 < np.median(counts) < 2000  # the points grew, and stopped
    assert covered / 400 >= 0.90
    assert abs(np.mean(drift)) < 0.003  # optimistic by a few tenths of a point at most


def _spec(cnn_digits_file, **over):
    data = {"name": "p", "seed": 5, "dataset": "digits", "samples": 120,
            "models": [{"path": str(cnn_digits_file), "name": "cnn"}], "rates": [1e-4, 5e-2], "trials": 4,
            "faults": [{"model": "bitflip"}]}
    data.update(over)
    return parse_spec(data, "spec.yaml")


@pytest.mark.parametrize(
    ("precision", "message"),
    [
        ({"half_width": 0, "max_trials": 10}, "half_width: must be a number above 0"),
        ({"half_width": -0.1, "max_trials": 10}, "half_width: must be a number above 0"),
        ({"half_width": "narrow", "max_trials": 10}, "half_width: must be a number above 0"),
        ({"half_width": True, "max_trials": 10}, "half_width: must be a number above 0"),
        ({"max_trials": 10}, "half_width: missing"),
        ({"half_width": 0.02}, "max_trials: missing"),
        ({"half_width": 0.02, "max_trials": 3}, r"max_trials: must be at least the trials a point runs anyway \(4\)"),
        ({"half_width": 0.02, "max_trials": 10, "confidence": 0.9}, "confidence: unknown field"),
        ([0.02, 10], "precision: must be a mapping"),
    ],
)
def test_spec_errors_name_the_field(cnn_digits_file, precision, message):
    with pytest.raises(SpecError, match=message):
        _spec(cnn_digits_file, precision=precision)


def test_spec_reads_the_target_and_stores_it_only_when_given(cnn_digits_file):
    given = _spec(cnn_digits_file, precision={"half_width": "2e-2", "max_trials": 50})
    assert given.precision == PrecisionSpec(0.02, 50)
    plain = _spec(cnn_digits_file)
    assert plain.precision is None
    assert "precision" not in plain.to_json()
    assert _spec(cnn_digits_file, precision={"half_width": 0.02, "max_trials": 50}).to_json()["precision"] == {
        "half_width": 0.02, "max_trials": 50}


@pytest.mark.parametrize(
    ("old", "new", "continues"),
    [
        (None, {"half_width": 0.02, "max_trials": 50}, True),  # adding a target: more trials
        ({"half_width": 0.02, "max_trials": 50}, None, False),  # dropping it: fewer
        ({"half_width": 0.02, "max_trials": 50}, {"half_width": 0.01, "max_trials": 50}, True),
        ({"half_width": 0.02, "max_trials": 50}, {"half_width": 0.03, "max_trials": 50}, False),
        ({"half_width": 0.02, "max_trials": 50}, {"half_width": 0.02, "max_trials": 80}, True),
        ({"half_width": 0.02, "max_trials": 50}, {"half_width": 0.02, "max_trials": 40}, False),
    ],
)
def test_which_target_changes_continue_a_campaign(cnn_digits_file, old, new, continues):
    a = _spec(cnn_digits_file, **({"precision": old} if old else {})).to_json()
    b = _spec(cnn_digits_file, **({"precision": new} if new else {})).to_json()
    assert only_more_trials(a, b) is continues
    assert not only_more_trials(a, _spec(cnn_digits_file, seed=6, **({"precision": new} if new else {})).to_json())


def _values_by_point(db_path):
    with ResultsDB(db_path) as db:
        rows = db.trials()
    points = {}
    for r in rows:
        points.setdefault((r.fault_model, r.rate), {})[r.trial] = replace(r, seconds=0.0)
    return {k: [v[i] for i in sorted(v)] for k, v in points.items()}


@pytest.fixture(scope="module")
def variant(cnn_digits_file):
    from hwflow.campaign.variants import build_variants

    return build_variants(_spec(cnn_digits_file))[0]


def test_a_campaign_grows_its_wide_points_to_a_fixed_campaigns_first_trials(cnn_digits_file, variant, tmp_path):
    target = PrecisionSpec(half_width=0.02, max_trials=60)
    spec = _spec(cnn_digits_file, precision={"half_width": target.half_width, "max_trials": target.max_trials})
    fixed = replace(spec, precision=None, faults=tuple(replace(f, trials=target.max_trials) for f in spec.faults))
    run_campaign(fixed, tmp_path / "fixed.sqlite", workers=1, progress=False, variants=[variant])
    result = run_campaign(spec, tmp_path / "grown.sqlite", workers=1, progress=False, variants=[variant])
    full, grown = _values_by_point(tmp_path / "fixed.sqlite"), _values_by_point(tmp_path / "grown.sqlite")
    counts = {}
    for point, rows in full.items():
        n = trials_needed([r.value for r in rows], 4, target)
        counts[point] = n
        assert grown[point] == rows[:n], point  # the same trials as the fixed campaign's first n
        assert t_interval([r.value for r in rows[:n]])[3] <= target.half_width or n == target.max_trials
    assert sorted(counts.values())[0] == 4 < sorted(counts.values())[-1]  # the quiet rate stayed, the wide one grew
    assert (result.planned, result.ran) == (sum(counts.values()), sum(counts.values()))

    # Killed between rounds (its last trials lost), the same command resumes to the same rows.
    with sqlite3.connect(tmp_path / "grown.sqlite") as conn:
        conn.execute("DELETE FROM trials WHERE trial >= 9")
    again = run_campaign(spec, tmp_path / "grown.sqlite", workers=1, progress=False, variants=[variant])
    assert _values_by_point(tmp_path / "grown.sqlite") == grown
    assert again.ran == sum(n - 9 for n in counts.values() if n > 9)
    assert run_campaign(spec, tmp_path / "grown.sqlite", workers=1, progress=False, variants=[variant]).ran == 0


def test_a_stored_fixed_campaign_continues_under_a_target(cnn_digits_file, variant, tmp_path):
    spec = _spec(cnn_digits_file)
    db = tmp_path / "c.sqlite"
    first = run_campaign(spec, db, workers=1, progress=False, variants=[variant])
    target = replace(spec, precision=PrecisionSpec(0.02, 60))
    second = run_campaign(target, db, workers=1, progress=False, variants=[variant])
    assert second.skipped == first.planned
    assert second.ran > 0
    from hwflow.results.db import ResultsError

    with pytest.raises(ResultsError, match="only raising trial counts"):  # dropping the target again: fewer trials
        run_campaign(spec, db, workers=1, progress=False, variants=[variant])


def test_the_gate_judges_fixed_batches_without_the_target(cnn_digits_file):
    from hwflow.gate.run import scaled_spec

    spec = _spec(cnn_digits_file, precision={"half_width": 0.02, "max_trials": 50})
    assert scaled_spec(spec, 2).precision is None
