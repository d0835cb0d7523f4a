"""The task metrics (hwflow.metrics): each against scikit-learn or a hand computation, the incremental
scorer against the full computation, the spec's metric field, and results databases of schema 1."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, roc_auc_score, top_k_accuracy_score

from hwflow import metrics
from hwflow.campaign.spec import parse_spec
from hwflow.errors import SpecError
from hwflow.metrics import MetricError, MetricSpec, Reference
from hwflow.results import Baseline, ResultsDB, TrialRow

RNG_SEED = 15


def _codes(rng, n, width, high=8):
    """Output values on a coarse grid, so ties are common (fixed-point outputs tie often)."""
    return np.ldexp(rng.integers(-high, high, size=(n, width)).astype(np.float64), -2)


def test_get_names_direction_and_refusals():
    assert (metrics.get("top1").name, metrics.get("top1").higher_is_better) == ("top1", True)
    assert metrics.get("topk", k=5).name == "top5" == metrics.get("top5").name
    assert not metrics.get("mse").higher_is_better
    assert not metrics.get("MAE").higher_is_better
    assert metrics.get("auc").higher_is_better
    for bad, k in (("f1", None), ("topk", None), ("mse", 3), ("top5", 3), ("topk", 0)):
        with pytest.raises(MetricError):
            metrics.get(bad, k)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_topk_equals_sklearn_and_argmax_with_ties(k):
    rng = np.random.default_rng(RNG_SEED + k)
    out = _codes(rng, 400, 10, high=3)  # many ties
    y = rng.integers(0, 10, 400)
    got = metrics.get(f"top{k}").score(out, None, Reference(y))
    if k == 1:
        assert got == np.mean(np.argmax(out, axis=1) == y)
    # scikit-learn breaks ties differently: compare where the label's output has no tie
    mine = out[np.arange(400), y][:, None]
    untied = np.sum(out == mine, axis=1) == 1
    sub = Reference(y[untied])
    assert metrics.get(f"top{k}").score(out[untied], None, sub) == pytest.approx(
        top_k_accuracy_score(y[untied], out[untied], k=k, labels=np.arange(10)), abs=0, rel=1e-15)


def test_topk_ties_by_hand():
    out = np.array([[1.0, 1.0, 1.0, 0.0]])
    m2 = metrics.get("top2")
    assert [m2.score(out, None, Reference(np.array([c]))) for c in range(4)] == [1.0, 1.0, 0.0, 0.0]


def test_mse_mae_equal_sklearn():
    rng = np.random.default_rng(RNG_SEED)
    out, t = _codes(rng, 300, 7), rng.normal(size=(300, 7))
    ref = Reference(np.zeros(300, np.int64), t)
    assert metrics.get("mse").score(out, None, ref) == pytest.approx(mean_squared_error(t, out), rel=1e-14)
    assert metrics.get("mae").score(out, None, ref) == pytest.approx(mean_absolute_error(t, out), rel=1e-14)


def test_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(RNG_SEED)
    x = _codes(rng, 500, 16, high=2)
    out = _codes(rng, 500, 16, high=2)
    labels = rng.integers(0, 2, 500)
    spec = MetricSpec("auc")
    ref = metrics.reference(spec, x, labels)
    errors = np.mean((out - x) ** 2, axis=1)
    assert len(np.unique(errors)) < 200  # ties present
    assert metrics.get("auc").score(out, None, ref) == pytest.approx(roc_auc_score(labels, errors), rel=1e-14)
    assert metrics.roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75  # sklearn's example


def test_auc_normal_classes_map_labels():
    x = np.zeros((6, 2))
    ref = metrics.reference(MetricSpec("auc", normal=(0, 1)), x, np.array([0, 1, 2, 3, 1, 9]))
    np.testing.assert_array_equal(ref.labels, [0, 0, 1, 1, 0, 1])


@pytest.mark.parametrize("name", ["top1", "top3", "mse", "mae", "auc"])
def test_incremental_scorer_equals_full_computation(name):
    """A sample whose outputs did not change keeps its fault-free term: the value equals the full one exactly."""
    rng = np.random.default_rng(RNG_SEED)
    n, width = 360, 10
    x = _codes(rng, n, width)
    y = rng.integers(0, 2 if name == "auc" else width, n)
    spec = MetricSpec(name, target="input" if name in ("mse", "mae") else "data")
    golden = _codes(rng, n, width)
    scorer = metrics.scorer(spec, golden, x, y)
    assert scorer.golden_value == scorer.full(golden)
    for trial in range(20):
        changed = np.sort(rng.choice(n, size=int(rng.integers(1, 40)), replace=False))
        faulty = golden.copy()
        faulty[changed] = _codes(rng, len(changed), width, high=20)
        assert scorer.value(changed, faulty[changed]) == scorer.full(faulty), trial


def test_a_metric_that_does_not_fit_is_refused():
    rng = np.random.default_rng(RNG_SEED)
    x, golden = rng.normal(size=(20, 64)), rng.normal(size=(20, 10))
    digits = np.arange(20) % 10
    with pytest.raises(MetricError, match="k = 11"):
        metrics.scorer(MetricSpec("top11"), golden, x, digits)
    with pytest.raises(MetricError, match="no targets"):
        metrics.scorer(MetricSpec("mse"), golden, x, digits)
    with pytest.raises(MetricError, match="64 values"):
        metrics.scorer(MetricSpec("mse", target="input"), golden, x, digits)
    with pytest.raises(MetricError, match="normal"):
        metrics.scorer(MetricSpec("auc"), x, x, digits)
    with pytest.raises(MetricError, match="both normal"):
        metrics.scorer(MetricSpec("auc"), x, x, np.zeros(20, np.int64))
    with pytest.raises(MetricError, match="labels go up to 9"):
        metrics.scorer(MetricSpec("top1"), golden[:, :5], x, digits)


BASE = {"name": "m", "seed": 1, "dataset": "digits", "models": [{"zoo": "mlp-digits"}],
        "faults": [{"model": "bitflip", "rates": [1e-3], "trials": 2}]}


def test_spec_metric_field():
    assert parse_spec(BASE).metric == MetricSpec()
    assert "metric" not in parse_spec(BASE).to_json()  # old specs compare equal
    spec = parse_spec({**BASE, "metric": "top5"})
    assert spec.metric == MetricSpec("top5")
    assert spec.to_json()["metric"] == {"name": "top5"}
    spec = parse_spec({**BASE, "metric": {"name": "topk", "k": 3}})
    assert spec.metric.name == "top3"
    spec = parse_spec({**BASE, "metric": {"name": "mse", "target": "input"},
                       "models": [{"zoo": "mlp-digits", "metric": {"name": "auc", "normal": [3, 1]}}]})
    assert spec.metric_for("mlp-digits/baseline") == MetricSpec("auc", normal=(1, 3))
    assert spec.to_json()["models"][0]["metric"] == {"name": "auc", "normal": [1, 3]}
    assert MetricSpec.from_json(spec.to_json()["models"][0]["metric"]) == MetricSpec("auc", normal=(1, 3))


@pytest.mark.parametrize(("metric", "field"), [
    ("f1", "metric.name"), ({"name": "topk"}, "metric.name"), ({"name": "top1", "target": "input"}, "metric.target"),
    ({"name": "mse", "target": "output"}, "metric.target"), ({"name": "mse", "normal": [1]}, "metric.normal"),
    ({"name": "auc", "normal": "x"}, "metric.normal"), ({"name": "mse", "kk": 1}, "metric.kk"), (3, "metric"),
    ({"name": "auc", "target": "input"}, "metric.target"),
])
def test_spec_metric_refused_with_field_named(metric, field):
    with pytest.raises(SpecError, match=f"{field}:"):
        parse_spec({**BASE, "metric": metric})


SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE campaigns (name TEXT PRIMARY KEY, spec TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE baselines (campaign TEXT NOT NULL, variant TEXT NOT NULL, board TEXT NOT NULL, samples INTEGER NOT NULL,
    correct INTEGER NOT NULL, PRIMARY KEY (campaign, variant, board));
CREATE TABLE trials (campaign TEXT NOT NULL, variant TEXT NOT NULL, study TEXT NOT NULL, fault_model TEXT NOT NULL,
    target_layer TEXT NOT NULL, target_bit INTEGER NOT NULL, rate REAL NOT NULL, trial INTEGER NOT NULL,
    seed INTEGER NOT NULL, faults INTEGER NOT NULL, effective INTEGER NOT NULL, samples INTEGER NOT NULL,
    correct INTEGER NOT NULL, mismatches INTEGER NOT NULL, board TEXT NOT NULL, seconds REAL NOT NULL,
    PRIMARY KEY (campaign, variant, study, fault_model, target_layer, target_bit, rate, trial, board));
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO campaigns VALUES ('c', '{"seed": 1}', 0);
INSERT INTO baselines VALUES ('c', 'm/baseline', 'emulator', 40, 38);
INSERT INTO trials VALUES ('c', 'm/baseline', 'sweep', 'bitflip', '', -1, 0.001, 0, 7, 3, 3, 40, 30, 9, 'emulator',
    0.5);
"""


def test_a_schema_1_database_is_migrated_and_stays_readable(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_1)
    conn.close()
    with ResultsDB(path) as db:
        (row,) = db.trials("c")
        (base,) = db.baselines("c")
        assert (row.correct, row.samples, row.metric, row.metric_value) == (30, 40, "top1", 0.75)
        assert (base.metric, base.metric_value, base.higher_is_better) == ("top1", 38 / 40, True)
        assert db.metric("c") == ("top1", True)
        db.add_trials([TrialRow("c", "m/baseline", "sweep", "bitflip", "", -1, 1e-3, 1, 8, 3, 3, 40, 20, 9,
                                metric="top1", metric_value=0.5)])
    with ResultsDB(path) as db:  # reopened: schema 2 now, both rows there
        assert [r.metric_value for r in db.trials("c")] == [0.75, 0.5]
        assert db.conn.execute("SELECT value FROM meta").fetchone()[0] == "2"


def test_metric_name_value_and_direction_round_trip(tmp_path):
    with ResultsDB(tmp_path / "r.sqlite") as db:
        db.register_campaign("c", {"seed": 1})
        db.put_baseline(Baseline("c", "ad/baseline", "emulator", 360, 0, "auc", 0.93, True))
        db.put_baseline(Baseline("c", "reg/baseline", "emulator", 360, 0, "mse", 0.0125, False))
        db.add_trials([TrialRow("c", "reg/baseline", "sweep", "bitflip", "", -1, 1e-3, 0, 8, 3, 3, 360, 0, 9,
                                metric="mse", metric_value=0.02),
                       TrialRow("c", "ad/baseline", "sweep", "bitflip", "", -1, 1e-3, 0, 8, 3, 3, 360, 0, 9,
                                metric="auc", metric_value=float("nan"))])
        assert db.metric("c", "reg/baseline") == ("mse", False)
        assert db.metric("c", "ad/baseline") == ("auc", True)
        rows = {r.variant: r for r in db.trials("c")}
        assert rows["reg/baseline"].value == 0.02
        assert np.isnan(rows["ad/baseline"].value)


@pytest.mark.parametrize(("metric", "problem"), [
    ({"name": "auc"}, "labels must be 0 .normal. or 1"),  # digit labels without normal classes
    ({"name": "mse"}, "no targets"),  # the digits have no regression targets
    ({"name": "mse", "target": "input"}, None),  # fine for the data; the model's outputs are checked later
])
def test_campaign_refuses_a_metric_that_does_not_fit_its_data_before_any_work(metric, problem):
    from hwflow.campaign.variants import check_data

    spec = parse_spec({**BASE, "metric": metric}, "spec.yaml")
    if problem is None:
        check_data(spec)
        return
    with pytest.raises(SpecError, match=f"spec.yaml: metric: metric .*{problem}"):
        check_data(spec)


def test_model_metric_refused_with_the_model_named():
    from hwflow.campaign.variants import check_data

    spec = parse_spec({**BASE, "models": [{"zoo": "mlp-digits", "metric": {"name": "auc", "normal": [0]}},
                                          {"zoo": "cnn-digits", "name": "c", "metric": "mae"}]}, "spec.yaml")
    with pytest.raises(SpecError, match="models: c: metric: metric mae"):
        check_data(spec)


def test_npz_targets_feed_mse(tmp_path):
    from hwflow.campaign.metric import check_metrics, npz_targets

    rng = np.random.default_rng(RNG_SEED)
    path = tmp_path / "reg.npz"
    x = rng.normal(size=(50, 4)).astype(np.float32)
    np.savez(path, x_train=x, y_train=np.zeros(50, np.int64), x_test=x[:20], y_test=np.zeros(20, np.int64),
             targets_test=x[:20, :2] * 2)
    spec = parse_spec({**BASE, "dataset": str(path), "samples": 10, "metric": "mse"}, "spec.yaml")
    t = npz_targets(spec.dataset, "test", spec.samples)
    np.testing.assert_array_equal(t, (x[:10, :2] * 2).astype(np.float64))
    check_metrics(spec, x[:10], np.zeros(10), {"mlp-digits": 2})
    with pytest.raises(SpecError, match="3 outputs per sample but the targets have 2"):
        check_metrics(spec, x[:10], np.zeros(10), {"mlp-digits": 3})


def test_summary_direction_gain_means_better_for_mse():
    from hwflow.report.evidence import evidence_rows
    from hwflow.report.stats import summarize

    def row(variant, trial, value):
        return TrialRow("c", variant, "sweep", "bitflip", "", -1, 1e-3, trial, trial, 3, 3, 100, 0, 5,
                        metric="mse", metric_value=value)

    rows = [row("m/baseline", t, v) for t, v in enumerate((0.10, 0.14, 0.12))]
    rows += [row("m/scale", t, v) for t, v in enumerate((0.05, 0.07, 0.06))]
    bases = [Baseline("c", "m/baseline", "emulator", 100, 0, "mse", 0.04, False),
             Baseline("c", "m/scale", "emulator", 100, 0, "mse", 0.04, False)]
    by = {s.variant: s for s in summarize(rows, bases)}
    assert by["m/baseline"].metric == "mse"
    assert not by["m/baseline"].higher_is_better
    assert by["m/baseline"].mean_value == pytest.approx(0.12)
    assert by["m/baseline"].value_loss == pytest.approx(0.08)  # worse than fault-free: positive
    assert by["m/baseline"].value_low < 0.12 < by["m/baseline"].value_high
    (_, table), = evidence_rows(by.values()).values()
    gain = {r["variant"]: r[("gain", 1e-3)] for r in table}
    assert gain["m/scale"] == pytest.approx(0.06)  # lower MSE than the baseline: a positive gain


def test_compare_boards_checks_the_metric_value():
    from hwflow.report.stats import compare_boards

    def row(board, value):
        return TrialRow("c", "ad/baseline", "sweep", "bitflip", "", -1, 1e-3, 0, 8, 3, 3, 360, 0, 9, board,
                        metric="auc", metric_value=value)

    assert compare_boards([row("emulator", 0.9), row("pynq-z2", 0.9)]) == []
    assert compare_boards([row("emulator", float("nan")), row("pynq-z2", None)]) == []
    (d,) = compare_boards([row("emulator", 0.9), row("pynq-z2", 0.8)])
    assert d.differs == ("metric_value",)
