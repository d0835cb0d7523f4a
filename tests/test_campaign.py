"""Campaigns: spec validation, the engine against full emulation, seeds, resume after SIGKILL,
and identical results serially, in local worker processes and on a Dask cluster."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from hwflow.campaign import TrialEvaluator, load_spec, parse_spec, run_campaign
from hwflow.campaign.plan import plan, trial_seed
from hwflow.campaign.runner import evaluation_data
from hwflow.errors import SpecError
from hwflow.results import ResultsDB


def _spec_dict(cnn_digits_file, **over):
    base = {
        "name": "t",
        "seed": 11,
        "dataset": "digits",
        "samples": 120,
        "models": [{"path": str(cnn_digits_file), "name": "cnn"}],
        "rates": [1e-3, 1e-2],
        "trials": 6,
        "faults": [{"model": "bitflip"}, {"model": "stuck-at", "value": "mixed"}],
        "sensitivity": {"rate": 1e-2, "trials": 2, "studies": ["layer", "bit"]},
    }
    base.update(over)
    return base


def _write(tmp_path, data, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rates": [1e-3, 1.5]}, "rates: rate 1.5 is outside"),
        ({"trials": 0}, "trials: must be >= 1"),
        ({"faults": [{"model": "cosmic-ray"}]}, "cosmic-ray"),
        ({"faults": [{"model": "bitflip", "mode": "sometimes"}]}, "mode"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"models": [{"zoo": "resnet-9000"}]}, "models[0].zoo: unknown zoo model"),
        ({"models": [{"name": "x"}]}, "exactly one of 'zoo'"),
        ({"split": "train"}, "split: must be one of"),
        ({"seed": -1}, "seed: must be >= 0"),
        ({"strategy": "Fastest"}, "strategy: must be one of Latency, Resource"),
        ({"reuse_factor": 0}, "reuse_factor: must be >= 1"),
    ],
)
def test_spec_errors_name_the_field(cnn_digits_file, change, message):
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_spec(_spec_dict(cnn_digits_file, **change), "spec.yaml")


def test_hls_options_are_recorded_only_when_they_differ_from_the_defaults(cnn_digits_file):
    # Specs registered before the HLS options existed stay equal to the same spec read today.
    plain = parse_spec(_spec_dict(cnn_digits_file), "spec.yaml")
    assert not {"backend", "strategy", "reuse_factor"} & set(plain.to_json())
    resource = parse_spec(_spec_dict(cnn_digits_file, strategy="Resource", reuse_factor=8), "spec.yaml")
    assert (resource.backend, resource.strategy, resource.reuse_factor) == ("Vitis", "Resource", 8)
    recorded = resource.to_json()
    assert (recorded["strategy"], recorded["reuse_factor"]) == ("Resource", 8)


def test_missing_spec_file_and_missing_model(tmp_path, cnn_digits_file):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")
    spec = load_spec(_write(tmp_path, _spec_dict(cnn_digits_file, models=[{"path": "gone.h5"}])))
    with pytest.raises(SpecError, match="gone.h5"):
        run_campaign(spec, tmp_path / "r.sqlite", workers=1, progress=False)


def test_examples_parse():
    paths = sorted((Path(__file__).parent.parent / "examples").glob("campaign-*.yaml"))  # not the hls4ml config
    assert paths
    for path in paths:
        spec = load_spec(path)
        assert spec.faults
        assert spec.models


@pytest.fixture(scope="module")
def variant(cnn_digits_file, tmp_path_factory):
    from hwflow.campaign.variants import build_variants

    spec = parse_spec(_spec_dict(cnn_digits_file), str(tmp_path_factory.mktemp("s") / "spec.yaml"))
    return spec, build_variants(spec)[0]


def test_engine_equals_full_emulation_on_many_fault_maps(variant, digits, monkeypatch):
    from hwflow.faults import fault_model_from_spec

    _, v = variant
    x, y = digits.x_test[:200], digits.y_test[:200]
    evaluator = TrialEvaluator(v.program, v.image, x, y, chunk=64)
    from hwflow.campaign.delta.mac import Mac

    delta_path = []
    original = Mac._linear_delta
    monkeypatch.setattr(Mac, "_linear_delta", lambda self, *a: delta_path.append(1) or original(self, *a))
    rng = np.random.default_rng(5)
    models = [
        ({"model": "bitflip"}, 1e-3), ({"model": "bitflip"}, 2e-2), ({"model": "bitflip", "mode": "exact"}, 1e-4),
        ({"model": "stuck-at", "value": "mixed"}, 5e-3), ({"model": "bitflip", "layers": ["out"]}, 1e-2),
        ({"model": "bitflip", "layers": ["bn1"]}, 5e-2), ({"model": "bitflip", "bits": ["msb"]}, 1e-2),
        ({"model": "burst", "length": 3}, 1e-2), ({"model": "bitflip", "mode": "exact"}, 3e-5),
        ({"model": "stuck-at", "value": "mixed", "layers": ["conv2"]}, 1e-3),
    ]
    seen_masked = seen_faulty = 0
    for i in range(120):
        spec, rate = models[i % len(models)]
        faultmap = fault_model_from_spec(spec, rate).sample(v.image, rng)
        fast = evaluator.evaluate(faultmap)
        assert fast == evaluator.full_evaluate(faultmap, x), (spec, rate, i)
        seen_faulty += fast.mismatches > 0
        seen_masked += fast.effective > 0 and fast.mismatches == 0
    assert seen_faulty > 10  # the maps really hurt
    assert seen_masked > 5  # and some were masked
    assert len(delta_path) > 20  # multiply-accumulate layers took the delta rule acc + W'·Δa + ΔW·a


def test_trial_seed_reproduces_the_fault_map(variant):
    from hwflow.faults import fault_model_from_spec

    spec, v = variant
    trials = plan(spec, v.label, v.widths())
    assert len({t.seed for t in trials}) == len(trials)
    t = trials[7]
    assert trial_seed(spec.seed, t.key) == t.seed
    model = fault_model_from_spec(t.fault, t.key.rate)
    a = model.sample(v.image, np.random.default_rng(t.seed))
    b = model.sample(v.image, np.random.default_rng(t.seed))
    assert a.to_json() == b.to_json()
    # The seed ignores the variant: paired trials across variants see the same faults.
    other = plan(spec, "other/baseline", v.widths())
    assert [x.seed for x in other] == [x.seed for x in trials]


def _rows(db_path):
    with ResultsDB(db_path) as db:
        return [replace(r, seconds=0.0) for r in db.trials()]


@pytest.mark.slow
def test_parallel_and_dask_equal_serial(variant, tmp_path):
    spec, v = variant
    spec = replace(spec, sensitivity=None)
    run_campaign(spec, tmp_path / "serial.sqlite", workers=1, progress=False, variants=[v])
    run_campaign(spec, tmp_path / "local.sqlite", workers=2, progress=False, variants=[v])
    run_campaign(spec, tmp_path / "dask.sqlite", scheduler="local", progress=False, variants=[v])
    serial = _rows(tmp_path / "serial.sqlite")
    assert len(serial) == 2 * 2 * 6
    assert _rows(tmp_path / "local.sqlite") == serial
    assert _rows(tmp_path / "dask.sqlite") == serial


def test_raising_trials_continues_a_campaign_and_lowering_is_refused(variant, tmp_path):
    from hwflow.results.db import ResultsError

    spec, v = variant
    spec = replace(spec, sensitivity=None)
    db = tmp_path / "grow.sqlite"
    first = run_campaign(spec, db, workers=1, progress=False, variants=[v])
    grown = replace(spec, faults=tuple(replace(f, trials=f.trials + 2) for f in spec.faults))
    second = run_campaign(grown, db, workers=1, progress=False, variants=[v])
    assert (second.skipped, second.ran) == (first.planned, second.planned - first.planned)
    run_campaign(grown, tmp_path / "direct.sqlite", workers=1, progress=False, variants=[v])
    assert _rows(db) == _rows(tmp_path / "direct.sqlite")  # the grown campaign equals one run at the new size
    with pytest.raises(ResultsError, match="only raising trial counts"):
        run_campaign(spec, db, workers=1, progress=False, variants=[v])
    other = replace(spec, seed=spec.seed + 1)
    with pytest.raises(ResultsError, match="different spec"):
        run_campaign(other, db, workers=1, progress=False, variants=[v])


def test_a_second_run_in_the_same_process_uses_its_own_variant(variant, tmp_path):
    """Evaluators are cached per run: same campaign and label with other weights must not reuse them."""
    from hwflow.campaign.variants import Variant
    from hwflow.emulator import Emulator

    spec, v = variant
    spec = replace(spec, sensitivity=None)
    arr = v.image.arrays[0]
    other = Variant(v.label, v.program, v.image.replace_array(arr.with_words(np.zeros_like(arr.words))))
    run_campaign(spec, tmp_path / "a.sqlite", workers=1, progress=False, variants=[v])
    run_campaign(spec, tmp_path / "b.sqlite", workers=1, progress=False, variants=[other])
    x, y = evaluation_data(spec)
    expected = int(np.sum(Emulator(other.program, other.image).predict_classes(x) == y))
    with ResultsDB(tmp_path / "b.sqlite") as db:
        assert db.baselines(spec.name)[0].correct == expected


@pytest.mark.slow
def test_sigkill_and_resume_equals_uninterrupted(cnn_digits_file, tmp_path):
    spec_path = _write(tmp_path, _spec_dict(cnn_digits_file, trials=30, rates=[1e-3, 3e-3, 1e-2]))
    clean = tmp_path / "clean.sqlite"
    run_campaign(load_spec(spec_path), clean, workers=1, progress=False)
    killed = tmp_path / "killed.sqlite"
    cmd = [sys.executable, "-m", "hwflow", "campaign", str(spec_path), "--db", str(killed), "--workers", "1",
           "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    count = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if killed.exists():
            try:
                with ResultsDB(killed) as db:
                    count = len(db.trials())
            except Exception:  # noqa: BLE001 - the file may be mid-creation
                count = 0
            if count >= 16:
                os.kill(proc.pid, signal.SIGKILL)
                break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the campaign finished before it could be killed"
    partial = _rows(killed)
    assert 16 <= len(partial) < len(_rows(clean))
    assert subprocess.run(cmd, capture_output=True, check=False).returncode == 0
    assert _rows(killed) == _rows(clean)


def test_resume_refuses_a_changed_spec(variant, tmp_path):
    spec, v = variant
    spec = replace(spec, sensitivity=None, faults=spec.faults[:1])
    db = tmp_path / "r.sqlite"
    run_campaign(spec, db, workers=1, progress=False, variants=[v])
    first = _rows(db)
    again = run_campaign(spec, db, workers=1, progress=False, variants=[v])
    assert again.ran == 0
    assert _rows(db) == first
    from hwflow.results.db import ResultsError

    with pytest.raises(ResultsError, match="different spec"):
        run_campaign(replace(spec, seed=12), db, workers=1, progress=False, variants=[v])
