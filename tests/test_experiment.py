"""Experiments: several campaigns into one database, reports, the evidence table and the precision table."""

from __future__ import annotations

import pytest
import yaml

from hwflow.errors import SpecError
from hwflow.experiment import load_experiment, run_experiment

from .conftest import zoo_model


def _write(tmp_path, data) -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("exp-model") / "cnn.h5"
    zoo_model("cnn-digits", 8, 8).save(path)
    return path


def test_runs_campaigns_and_writes_evidence(model_file, tmp_path):
    data = {"name": "tiny", "defaults": {"seed": 3, "rates": [3e-3], "trials": 3, "faults": [{"model": "bitflip"}],
                                         "dataset": "digits", "samples": 50, "models_dir": str(tmp_path / "m")},
            "campaigns": [{"name": "a", "models": [{"path": str(model_file), "name": "cnn",
                                                    "variants": ["baseline", "scale"]}]},
                          {"name": "b", "split": "val", "models": [{"path": str(model_file), "name": "cnn"}]}]}
    experiment = load_experiment(_write(tmp_path, data))
    assert [c.name for c in experiment.campaigns] == ["a", "b"]
    result = run_experiment(experiment, tmp_path / "out", workers=1, progress=False)
    assert result.trials_run == 3 * 2 + 3
    assert set(result.reports) == {"a", "b"}
    text = result.evidence_md.read_text()
    assert "| cnn/scale |" in text
    assert "cnn/scale" in (tmp_path / "out" / "precision.md").read_text()
    again = run_experiment(experiment, tmp_path / "out", workers=1, progress=False)
    assert (again.trials_run, again.trials_reused) == (0, 9)


@pytest.mark.parametrize(("data", "words"), [
    ({"campaigns": []}, "name: missing"),
    ({"name": "x", "campaigns": []}, "campaigns: must be a non-empty list"),
    ({"name": "x", "campaigns": [{"name": "a"}], "extra": 1}, "extra: unknown field"),
    ({"name": "x", "defaults": [], "campaigns": [{}]}, "defaults: must be a mapping"),
    ({"name": "x", "campaigns": [{"name": "a", "seed": 1, "models": [{"zoo": "nope"}]}]}, "unknown zoo model"),
])  # fmt: skip
def test_bad_experiment_files_name_the_field(tmp_path, data, words):
    with pytest.raises(SpecError, match=words):
        load_experiment(_write(tmp_path, data))


def test_the_shipped_experiment_parses():
    from pathlib import Path

    experiment = load_experiment(Path(__file__).parent.parent / "experiments" / "seeds.yaml")
    assert {c.dataset for c in experiment.campaigns} == {"digits", "fashion-mnist"}
    assert all(c.hardening for c in experiment.campaigns)
