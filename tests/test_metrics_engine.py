"""The campaign's metric wherever a network is scored: the engine (its delta path, where unchanged samples
keep their fault-free terms) equals the metric of full emulation over seeded fault maps, and the board's
host, scoring the board's outputs with the vendored numpy-only code, gives the same values trial for trial."""

from __future__ import annotations

import numpy as np
import pytest
from hwflow_host.campaign import run_host_campaign

from hwflow.campaign import TrialEvaluator, parse_spec
from hwflow.campaign.metric import TrialMetric
from hwflow.campaign.runner import evaluation_data
from hwflow.deploy.plan import host_plan
from hwflow.emulator import Emulator
from hwflow.faults import fault_model_from_spec
from hwflow.hardware.emulator_board import EmulatorBoard
from hwflow.metrics import MetricSpec
from hwflow.results import ResultsDB
from tests.fake_pynq import converted

NORMAL = (0, 1, 2, 3, 4)
FAULTS = ({"model": "bitflip"}, {"model": "stuck-at", "value": "mixed"}, {"model": "bitflip", "bits": ["msb"]})


@pytest.fixture(scope="module")
def ad08():
    return converted("ad08")


@pytest.fixture(scope="module")
def mlp():
    return converted("mlp-digits")


def _maps(image, seed: int, rates=(1e-3, 1e-2), per=4):
    rng = np.random.default_rng(seed)
    for spec in FAULTS:
        for rate in rates:
            for _ in range(per):
                yield fault_model_from_spec(spec, rate).sample(image, np.random.default_rng(rng.integers(2**32)))


@pytest.mark.parametrize(("net", "metric"), [
    ("ad08", MetricSpec("auc", normal=NORMAL)), ("ad08", MetricSpec("mse", target="input")),
    ("ad08", MetricSpec("mae", target="input")), ("mlp", MetricSpec("top1")), ("mlp", MetricSpec("top3")),
])
def test_engine_metric_equals_the_metric_of_full_emulation(request, digits, net, metric):
    program, image = request.getfixturevalue(net)
    x, y = digits.x_test[:200], digits.y_test[:200]
    evaluator = TrialEvaluator(program, image, x, y, metric=metric)
    tm = TrialMetric(metric, Emulator(program, image).run(x), program.output.result.frac, x, y)
    assert evaluator.metric.golden_value == tm.golden_value
    changed = 0
    for m in _maps(image, seed=15):
        reference = tm.full(Emulator(program, m.apply(image)).run(x))
        outcome = evaluator.evaluate(m)
        assert outcome.metric == reference
        assert evaluator.full_evaluate(m, x).metric == reference
        changed += outcome.metric != tm.golden_value
    assert changed > 5  # the faults did move the metric


def test_host_scores_the_board_outputs_like_the_workstation(ad08, digits, tmp_path):
    """The host's rows (board: the emulator) carry the metric of the faulty network's outputs, exactly."""
    program, image = ad08
    spec = parse_spec({"name": "ad-host", "seed": 3, "dataset": "digits", "samples": 120,
                       "metric": {"name": "auc", "normal": list(NORMAL)}, "models": [{"zoo": "ad08", "name": "ad"}],
                       "faults": [{"model": "bitflip", "rates": [1e-3, 1e-2], "trials": 3}]})
    x, y = evaluation_data(spec)
    plan = host_plan(spec, "ad/baseline", image, len(y))
    result = run_host_campaign(EmulatorBoard(program, image), image, plan, x, y, tmp_path / "h.sqlite",
                               output_frac=program.output.result.frac)
    tm = TrialMetric(spec.metric, Emulator(program, image).run(x), program.output.result.frac, x, y)
    assert (result.metric, result.baseline_value) == ("auc", tm.golden_value)
    by_key = {t.key: t for t in plan.trials}
    with ResultsDB(tmp_path / "h.sqlite") as db:
        rows = db.trials("ad-host")
        (base,) = db.baselines("ad-host")
    assert (base.metric, base.metric_value, base.higher_is_better) == ("auc", tm.golden_value, True)
    assert len(rows) == 6
    for r in rows:
        faulty = by_key[r.key].sample(image).apply(image)
        assert (r.metric, r.metric_value) == ("auc", tm.full(Emulator(program, faulty).run(x)))


def test_campaign_records_mse_against_npz_targets(tmp_path, digits):
    """A regression campaign end to end: each row's MSE is that of the fully emulated faulty network against
    the .npz's targets_test; the baseline records the metric and its direction (lower is better)."""
    from hwflow.campaign import run_campaign
    from hwflow.campaign.variants import Variant

    program, image = converted("mlp-digits")
    rng = np.random.default_rng(7)
    path = tmp_path / "reg.npz"
    targets = rng.normal(size=(len(digits.x_test), 10))
    np.savez(path, x_train=digits.x_train, y_train=digits.y_train, x_test=digits.x_test, y_test=digits.y_test,
             targets_test=targets)
    spec = parse_spec({"name": "reg", "seed": 5, "dataset": str(path), "samples": 100, "metric": "mse",
                       "models": [{"zoo": "mlp-digits", "name": "m"}],
                       "faults": [{"model": "bitflip", "rates": [1e-3, 1e-2], "trials": 3}]})
    run_campaign(spec, tmp_path / "r.sqlite", workers=1, progress=False,
                 variants=[Variant("m/baseline", program, image)])
    x, y = evaluation_data(spec)
    tm = TrialMetric(spec.metric, Emulator(program, image).run(x), program.output.result.frac, x, y, targets[:100])
    with ResultsDB(tmp_path / "r.sqlite") as db:
        (base,) = db.baselines("reg")
        rows = db.trials("reg")
        assert db.metric("reg") == ("mse", False)
    assert (base.metric, base.metric_value) == ("mse", tm.golden_value)
    from hwflow.campaign.plan import plan
    from hwflow.deploy.plan import layer_widths

    seeds = {t.key: t for t in plan(spec, "m/baseline", layer_widths(image))}
    for r in rows:
        m = fault_model_from_spec(seeds[r.key].fault, r.rate).sample(image, np.random.default_rng(r.seed))
        assert (r.metric, r.metric_value) == ("mse", tm.full(Emulator(program, m.apply(image)).run(x)))


@pytest.mark.parametrize("metric", [MetricSpec("auc", normal=NORMAL), MetricSpec("mse", target="input")])
def test_scale_search_scores_with_the_campaign_metric(ad08, digits, metric):
    """A candidate's score is the mean metric of full emulation over the search's seeded maps (an error
    negated: higher is better for the search); the chosen scale of an array is the best by that score."""
    from hwflow.faults import BitFlip
    from hwflow.faults.target import Target
    from hwflow.harden.scale_search import ScaleSearchConfig, _seed, score

    program, image = ad08
    x, y = digits.x_val, digits.y_val
    config = ScaleSearchConfig(rates=(1e-3, 1e-2), trials=3, metric=metric)
    got, per_rate = score(program, image, x, y, config, Target(), 2)
    tm = TrialMetric(metric, Emulator(program, image).run(x), program.output.result.frac, x, y)
    sign = 1.0 if tm.metric.higher_is_better else -1.0
    expected = []
    for r, rate in enumerate(config.rates):
        values = [sign * tm.full(Emulator(program, BitFlip(rate, "bernoulli", Target()).sample(
            image, _seed(0, 2, r, t)).apply(image)).run(x)) for t in range(3)]
        expected.append(float(np.mean(values)))
    assert per_rate == tuple(expected)
    assert got == float(np.mean(expected))


def test_board_scores_mse_against_the_bundles_targets_like_the_workstation(tmp_path, digits):
    """hwflow deploy packs the .npz's targets when the metric needs them; the host scores the board's outputs
    against them, and its rows equal the workstation's trial for trial (board: the emulator)."""
    import yaml
    from hwflow_host.__main__ import main as host_main
    from hwflow_host.bundle import load_bundle

    from hwflow.campaign import load_spec, run_campaign
    from hwflow.campaign.variants import Variant
    from hwflow.deploy import pack, unpack
    from tests.test_deploy import make_build

    program, image = converted("mlp-digits")
    path = tmp_path / "reg.npz"
    targets = np.random.default_rng(8).normal(size=(len(digits.x_test), 10))
    np.savez(path, x_train=digits.x_train, y_train=digits.y_train, x_test=digits.x_test, y_test=digits.y_test,
             targets_test=targets)
    spec_path = tmp_path / "reg.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "reg-board", "seed": 6, "dataset": str(path), "samples": 60, "metric": "mae",
        "models": [{"zoo": "mlp-digits", "name": "mlp"}],
        "faults": [{"model": "bitflip", "rates": [3e-3, 1e-2], "trials": 3}]}))
    spec = load_spec(spec_path)
    run_campaign(spec, tmp_path / "ws.sqlite", workers=1, progress=False,
                 variants=[Variant("mlp/baseline", program, image)])
    build = make_build(tmp_path / "build", program, image)
    root = unpack(pack(build, spec_path, tmp_path / "b.tar.gz").path, tmp_path / "board")
    np.testing.assert_array_equal(load_bundle(root).targets, targets[:60])
    assert host_main([str(root), "--board", "emulator"]) == 0
    with ResultsDB(tmp_path / "ws.sqlite") as ws, ResultsDB(root / "results.sqlite") as board:
        ours = {r.key: (r.metric, r.metric_value) for r in ws.trials("reg-board")}
        theirs = {r.key: (r.metric, r.metric_value) for r in board.trials("reg-board")}
        (base,) = board.baselines("reg-board")
    assert theirs == ours
    assert len(ours) == 6
    assert {m for m, _ in ours.values()} == {"mae"}
    assert base.metric == "mae"
    assert base.higher_is_better is False
