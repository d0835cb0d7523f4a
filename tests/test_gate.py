"""hwflow gate end to end: requirements in the spec, sequential batches, reruns, exit codes, JUnit XML,
the Markdown summary, the CI cache, and the example workflow against the README."""

import base64
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from hwflow.campaign import parse_spec
from hwflow.cli import main
from hwflow.errors import SpecError
from hwflow.results import ResultsDB
from tests.conftest import zoo_model

ROOT = Path(__file__).resolve().parent.parent
PASS = {"rate": 1e-3, "min": 0.01, "name": "keeps 1% at 1e-3"}  # an untrained model scores ~10%
FAIL = {"rate": 1e-2, "min": 0.5, "name": "keeps 50% at 1e-2"}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gate-model") / "mlp.h5"
    zoo_model("mlp-digits", 8, 8, seed=1).save(path)
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("gate-cache")


def _spec(model_file, require, **over):
    data = {"name": "g", "seed": 3, "dataset": "digits", "samples": 120,
            "models": [{"path": str(model_file), "name": "mlp"}], "rates": [1e-3, 1e-2], "trials": 100,
            "faults": [{"model": "bitflip"}], "require": require}
    data.update(over)
    return data


def _write(tmp_path, data):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"rate": 1e-3}, "require\\[0\\]: give exactly one bound"),
        ({"rate": 1e-3, "min": 0.5, "max": 0.9}, "require\\[0\\]: give exactly one bound"),
        ({"rate": 5e-3, "min": 0.5}, "require\\[0\\].rate: 0.005 is not a rate of this fault model"),
        ({"min": 0.5}, "require\\[0\\].rate: missing"),
        ({"rate": 1e-3, "min": 95}, "require\\[0\\].min: 95 is outside .* 95% is 0.95"),
        ({"rate": 1e-3, "min": 0.5, "variant": "scale"}, "require\\[0\\].variant: no variant 'scale'"),
        ({"rate": 1e-3, "min": 0.5, "fault": "stuck-at"}, "require\\[0\\].fault: no fault model 'stuck-at'"),
        ({"rate": 1e-3, "min": 0.5, "on": "median"}, "require\\[0\\].on: must be one of interval, mean"),
        ({"rate": 1e-3, "min": 0.5, "confidence": 1.5}, "require\\[0\\].confidence: must be between 0 and 1"),
        ({"rate": 1e-3, "min": 0.5, "metric": "f1"}, "require\\[0\\].metric: unknown metric"),
        ({"rate": 1e-3, "max": 0.5, "metric": "mse"}, "require\\[0\\].range: mse has no upper bound"),
        ({"rate": 1e-3, "min": 0.5, "gain_over": "baseline"}, "require\\[0\\].gain_over: .* compared with itself"),
        ({"rate": 1e-3, "min": 0.5, "tolerance": 1}, "require\\[0\\].tolerance: unknown field"),
    ],
)
def test_requirement_errors_name_the_field(model_file, entry, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(_spec(model_file, [entry]), "spec.yaml")


def test_requirements_resolve_names_and_leave_the_stored_spec_alone(model_file):
    spec = parse_spec(_spec(model_file, [{"variant": "baseline", "fault": "bit-flip", "rate": "1e-3", "max": 0.99,
                                          "on": "mean", "metric": "accuracy"}]), "spec.yaml")
    (req,) = spec.require
    assert (req.variant, req.fault_model, req.rate, req.kind, req.on) == ("mlp/baseline", "bitflip", 1e-3, "max",
                                                                          "mean")
    entry = yaml.safe_load("{rate: 1.0e-3, min: 0.5, on: mean}")
    assert True in entry  # YAML 1.1 reads the key 'on' as true
    yaml_on = parse_spec(_spec(model_file, [entry]), "spec.yaml")
    assert yaml_on.require[0].on == "mean"
    assert "require" not in spec.to_json()
    assert spec.to_json() == parse_spec(_spec(model_file, None), "spec.yaml").to_json()


def _gate(tmp_path, spec_path, db, cache, *extra):
    return main(["gate", str(spec_path), "--db", str(db), "--batch", "10", "--cache", str(cache), "--quiet", *extra])


def test_gate_stops_early_reruns_alike_and_exits_by_verdict(model_file, cache, tmp_path, capsys):
    both = _write(tmp_path, _spec(model_file, [PASS, FAIL]))
    db = tmp_path / "r.sqlite"
    junit, summary = tmp_path / "out" / "gate.xml", tmp_path / "out" / "summary.md"
    assert _gate(tmp_path, both, db, cache, "--junit", str(junit), "--summary", str(summary)) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("HOLDS")
    assert "keeps 1% at 1e-3" in lines[0]
    assert lines[1].startswith("FAILS")
    assert "keeps 50% at 1e-2" in lines[1]
    m = re.search(r"stopped at (\d+) of 100 trials per point .*: (\d+) of 200 planned trials used, (\d+) saved", out)
    assert m is not None
    assert int(m[1]) < 100
    assert int(m[3]) == 200 - int(m[2]) > 0
    with ResultsDB(db) as r:
        rows = sorted((t.rate, t.trial, t.seed, t.correct) for t in r.trials("g"))
    assert len(rows) == 2 * int(m[1])

    # A rerun on the same database runs nothing and says the same; a fresh database gives the same rows.
    assert _gate(tmp_path, both, db, cache) == 1
    again = capsys.readouterr().out
    assert again.splitlines()[:2] == lines[:2]
    assert "0 run now" in again
    fresh = tmp_path / "fresh.sqlite"
    assert _gate(tmp_path, both, fresh, cache) == 1
    assert capsys.readouterr().out.splitlines()[:2] == lines[:2]
    with ResultsDB(fresh) as r:
        assert sorted((t.rate, t.trial, t.seed, t.correct) for t in r.trials("g")) == rows

    # The stopped campaign resumes as an ordinary one: hwflow campaign grows it to the spec's trials.
    assert main(["campaign", str(both), "--db", str(db), "--workers", "1", "--quiet"]) == 0
    capsys.readouterr()
    with ResultsDB(db) as r:
        assert r.trial_count("g") == 200
    assert _gate(tmp_path, both, db, cache) == 1  # judged on the same first trials: the same verdicts
    assert capsys.readouterr().out.splitlines()[:2] == lines[:2]

    passing = _write(tmp_path, _spec(model_file, [PASS]))
    assert _gate(tmp_path, passing, tmp_path / "p.sqlite", cache) == 0
    assert capsys.readouterr().out.startswith("HOLDS")

    _check_junit(junit)
    _check_summary(summary)


def test_bad_input_exits_2(model_file, cache, tmp_path, capsys):
    none = _write(tmp_path, _spec(model_file, None))
    assert _gate(tmp_path, none, tmp_path / "x.sqlite", cache) == 2
    assert "no 'require:' list" in capsys.readouterr().err
    bad = _write(tmp_path, _spec(model_file, [{"rate": 1e-3}]))
    junit = tmp_path / "error.xml"
    assert _gate(tmp_path, bad, tmp_path / "x.sqlite", cache, "--junit", str(junit)) == 2
    assert "require[0]: give exactly one bound" in capsys.readouterr().err
    root = ET.parse(junit).getroot()  # CI shows why: one test case in error
    for element in root.iter():
        allowed, required = JUNIT_ATTRIBUTES[element.tag]
        assert set(element.attrib) <= allowed
        assert required <= set(element.attrib)
    assert (root.get("tests"), root.get("errors")) == ("1", "1")
    assert "give exactly one bound" in root.find("testsuite/testcase/error").get("message")
    with pytest.raises(SystemExit) as exc:
        main(["gate", str(bad)])  # --db missing: argparse's usage error
    assert exc.value.code == 2


JUNIT_ATTRIBUTES = {  # the common JUnit XSD (Jenkins' junit-10.xsd, which GitLab and GitHub reporters read)
    "testsuites": ({"name", "time", "tests", "failures", "errors", "skipped", "disabled"}, set()),
    "testsuite": ({"name", "tests", "failures", "errors", "skipped", "time", "timestamp", "hostname", "id", "package",
                   "disabled", "file"}, {"name", "tests"}),
    "properties": (set(), set()),
    "property": ({"name", "value"}, {"name", "value"}),
    "testcase": ({"name", "classname", "time", "assertions", "status", "file", "line"}, {"name"}),
    "failure": ({"message", "type"}, set()),
    "error": ({"message", "type"}, set()),
    "skipped": ({"message"}, set()),
    "system-out": (set(), set()),
    "system-err": (set(), set()),
}


def _check_junit(path):
    """The JUnit schema's structure (as Jenkins/GitLab read it): element names, attributes, counts."""
    root = ET.parse(path).getroot()
    for element in root.iter():
        allowed, required = JUNIT_ATTRIBUTES[element.tag]
        assert set(element.attrib) <= allowed, element.tag
        assert required <= set(element.attrib), element.tag
    for element in (root, *root.iter("testsuite")):
        for count in ("tests", "failures", "errors", "skipped"):
            assert element.get(count, "0").isdigit(), count
    assert root.tag == "testsuites"
    suites = list(root)
    assert [s.tag for s in suites] == ["testsuite"]
    suite = suites[0]
    for attr in ("name", "tests", "failures", "errors", "skipped", "time", "timestamp", "hostname"):
        assert attr in suite.attrib, attr
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", suite.get("timestamp"))
    float(suite.get("time"))
    cases = [c for c in suite if c.tag == "testcase"]
    assert [c.tag for c in suite] == ["properties"] + ["testcase"] * len(cases)
    assert all(p.tag == "property" and set(p.attrib) == {"name", "value"} for p in suite.find("properties"))
    assert int(suite.get("tests")) == len(cases) == 2
    failed = [c for c in cases if c.find("failure") is not None]
    assert int(suite.get("failures")) == len(failed) == 1
    assert suite.get("errors") == "0"
    assert root.get("tests") == suite.get("tests")
    assert root.get("failures") == suite.get("failures")
    for case in cases:
        assert {"classname", "name", "time"} <= set(case.attrib)
        assert {child.tag for child in case} <= {"failure", "error", "skipped", "system-out", "system-err"}
    fail = failed[0].find("failure")
    assert fail.get("type") == "RequirementFailed"
    assert "keeps 50% at 1e-2" in fail.get("message")
    assert failed[0].get("name") == "keeps 50% at 1e-2"


def _check_summary(path):
    import markdown

    text = path.read_text()
    assert len(text.encode()) < 1024 * 1024  # GitHub's limit for one step's job summary
    html = markdown.markdown(text, extensions=["tables"])
    root = ET.fromstring(f"<div>{html}</div>")
    table = root.find("table")
    head = [th.text for th in table.find("thead").iter("th")]
    assert head[0] == "Requirement"
    assert head[-1] == "Verdict"
    body = [[td.text for td in tr.iter("td")] for tr in table.find("tbody").iter("tr")]
    assert [r[0] for r in body] == ["keeps 1% at 1e-3", "keeps 50% at 1e-2"]
    assert body[0][-1].endswith("holds")
    assert body[1][-1].endswith("fails")
    img = root.find(".//img")
    src = img.get("src")
    assert src.startswith("data:image/png;base64,")
    assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_cache_skips_conversion(model_file, tmp_path, monkeypatch):
    from hwflow.campaign import variants as variants_module
    from hwflow.campaign.runner import evaluation_data
    from hwflow.emulator import Emulator
    from hwflow.gate.cache import cached_variants

    spec = parse_spec(_spec(model_file, [PASS]), "spec.yaml")
    cache = tmp_path / "cache"
    (first,) = cached_variants(spec, cache)
    assert len(list((cache / "designs").iterdir())) == 1

    def no_build(*args, **kwargs):
        msg = "converted again despite the cache"
        raise AssertionError(msg)

    monkeypatch.setattr(variants_module, "build_variants", no_build)
    (second,) = cached_variants(spec, cache)
    x, _ = evaluation_data(spec)
    assert second.label == first.label
    assert second.image.equal_words(first.image)
    assert (Emulator(second.program, second.image).predict_classes(x)
            == Emulator(first.program, first.image).predict_classes(x)).all()
    import json
    import subprocess
    import sys

    script = ("import json, sys\nfrom hwflow.campaign import parse_spec\n"
              "from hwflow.gate.cache import cached_variants\n"
              f"cached_variants(parse_spec(json.loads({json.dumps(json.dumps(_spec(model_file, [PASS])))}), 's.yaml'), "
              f"{str(cache)!r})\nprint(sorted(m for m in ('tensorflow', 'hls4ml', 'keras') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"  # a cache hit imports neither TensorFlow nor hls4ml
    other = tmp_path / "other.h5"  # other model bytes: another key
    zoo_model("mlp-digits", 8, 8, seed=2).save(other)
    monkeypatch.undo()
    cached_variants(parse_spec(_spec(other, [PASS]), "spec.yaml"), cache)
    assert len(list((cache / "designs").iterdir())) == 2


def test_a_database_holding_more_trials_is_judged_on_the_same_first_ones(model_file, cache, tmp_path, capsys):
    """A campaign run before at 13 trials per point (more than the first batch, fewer than the second) is
    continued, not refused, and the verdicts equal those of a fresh database."""
    spec = _write(tmp_path, _spec(model_file, [PASS, FAIL]))
    fresh = tmp_path / "fresh.sqlite"
    assert _gate(tmp_path, spec, fresh, cache) == 1
    expected = capsys.readouterr().out.splitlines()[:3]
    (tmp_path / "other").mkdir()
    grown = _write(tmp_path / "other", _spec(model_file, [PASS, FAIL], trials=13))
    db = tmp_path / "before.sqlite"
    assert main(["campaign", str(grown), "--db", str(db), "--workers", "1", "--quiet"]) == 0
    capsys.readouterr()
    import sqlite3

    with sqlite3.connect(db) as conn:  # as if killed while running: a trial of the first batch is missing
        conn.execute("DELETE FROM trials WHERE trial = 5")
    assert _gate(tmp_path, spec, db, cache) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == expected[:2]
    assert "stopped at 20 of 100" in out[2]
    assert "stopped at 20 of 100" in expected[2]


def test_values_seam_reads_the_recorded_metric_and_stops_at_a_gap():
    from hwflow.gate.values import metric_info, per_trial_values
    from hwflow.results import TrialRow

    def row(trial, metric="top1", value=None, correct=50):
        return TrialRow("c", "m/baseline", "sweep", "bitflip", "", -1, 1e-3, trial, trial, 1, 1, 100, correct, 0,
                        metric=metric, metric_value=value)

    top1 = per_trial_values([row(0), row(1, correct=70), row(3)], metric_info(None))
    assert top1[("m/baseline", "bitflip", 1e-3)].tolist() == [0.5, 0.7]  # trial 2 missing: the sequence ends
    mse = metric_info(None, "mse")
    assert (mse.name, mse.higher_is_better, mse.bounded) == ("mse", False, False)
    values = per_trial_values([row(0, "mse", 0.25), row(1, "mse", 0.5)], mse)
    assert values[("m/baseline", "bitflip", 1e-3)].tolist() == [0.25, 0.5]
    accuracy = per_trial_values([row(0, "mse", 0.25, correct=40)], metric_info("accuracy"))
    assert accuracy[("m/baseline", "bitflip", 1e-3)].tolist() == [0.4]  # counts are on every row
    with pytest.raises(SpecError, match="scored with mse, not top5"):
        per_trial_values([row(0, "mse", 0.25)], metric_info("top5"))
    from dataclasses import replace

    with pytest.raises(SpecError, match="scored with top1, but the campaign's metric for this model is auc"):
        per_trial_values([row(0)], replace(metric_info("auc"), named=False))


def test_all_expands_per_variant_and_gain_over_takes_each_models_variant():
    from hwflow.gate.judge import expand
    from hwflow.gate.requirements import Requirement
    from hwflow.gate.values import ACCURACY

    labels = ["a/baseline", "a/scale", "b/baseline", "b/scale"]
    checks = expand([Requirement("all", "bitflip", 1e-3, 0.0, gain_over="baseline")], labels,
                    lambda req, variant: ACCURACY)
    assert [(c.variant, c.other) for c in checks] == [("a/scale", "a/baseline"), ("b/scale", "b/baseline")]
    assert checks[0].name == "a/scale bitflip @ 0.001: top1 gain over baseline >= 0"


@pytest.mark.slow
def test_readme_worked_example(tmp_path, capsys):
    """The demo spec's requirements, gated from scratch (training and hardening included), print the README's lines."""
    data = yaml.safe_load((ROOT / "examples" / "campaign-digits.yaml").read_text())
    data["models_dir"] = str(tmp_path / "models")
    spec = _write(tmp_path, data)
    assert main(["gate", str(spec), "--db", str(tmp_path / "demo.sqlite"), "--workers", "1", "--quiet",
                 "--cache", str(tmp_path / "cache")]) == 1
    printed = capsys.readouterr().out.splitlines()[:4]
    readme = (ROOT / "README.md").read_text().split("## Resilience requirements in CI", 1)[1]
    block = re.search(r"\n```\n(HOLDS.*?)```", readme, re.S)[1].splitlines()
    assert printed == block


def test_undecided_when_the_trials_run_out_and_no_batch_is_wasted_on_it(model_file, cache, tmp_path, capsys):
    """A requirement at its bound stays undecided (exit 1); once its point has all its trials, the gate stops
    instead of running the other entries' trials for nothing."""
    data = _spec(model_file, [{"fault": "bitflip", "rate": 1e-3, "min": 0.09}],
                 faults=[{"model": "bitflip", "trials": 20}, {"model": "stuck-at", "value": "mixed"}])
    assert _gate(tmp_path, _write(tmp_path, data), tmp_path / "u.sqlite", cache) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("UNDECIDED")
    assert "(20 of 20 trials; interval straddles the bound)" in out[0]
    assert "stopped at 20 of 100 trials per point after 2 batch(es)" in out[1]


def test_a_database_holding_another_spec_of_that_name_is_refused(model_file, cache, tmp_path, capsys):
    """Trial keys carry no seed: the gate must not judge another spec's trials as this one's (exit 2)."""
    spec = _write(tmp_path, _spec(model_file, [PASS]))
    db = tmp_path / "r.sqlite"
    assert _gate(tmp_path, spec, db, cache) == 0
    capsys.readouterr()
    other = _write(tmp_path, _spec(model_file, [PASS], seed=4))
    assert _gate(tmp_path, other, db, cache) == 2
    assert "with a different spec" in capsys.readouterr().err


def test_malformed_requirements_raise_spec_errors_only(model_file):
    """Seeded random require: lists: every malformed one is a SpecError naming the field, never a crash."""
    import random

    rng = random.Random(0)
    values = [None, True, 0, 1, -1, 0.5, 1e-3, 1e-2, "1e-3", "x", "", "all", "baseline", "scale", "mlp/baseline",
              "bitflip", "stuck-at", [], [0, 1], [1, 0], ["a"], {}, {"a": 1}, float("nan"), float("inf"), "mean",
              "top1", "mse", "auc", "top5", 2**70, "+", "/", "a/b/c"]
    keys = ["name", "variant", "fault", "rate", "metric", "min", "max", "on", "gain_over", "confidence", "range",
            True, 3, "zzz"]
    base = _spec(model_file, None, faults=[{"model": "bitflip"}, {"model": "stuck-at", "value": "mixed"}])
    base["models"][0]["variants"] = ["baseline", "scale"]
    parsed, messages = 0, []
    for _ in range(1500):
        entry = {"fault": "bitflip", "rate": 1e-3, "min": 0.05}  # valid, then up to three fields changed
        entry.update({rng.choice(keys): rng.choice(values) for _ in range(rng.randint(0, 3))})
        require = rng.choice([[entry], entry, [entry, entry], "x", [], [1]])
        try:
            spec = parse_spec({**base, "require": require}, "spec.yaml")
        except SpecError as err:
            messages.append(str(err))
            continue
        parsed += 1
        assert all(r.kind in ("min", "max") and math.isfinite(r.bound) for r in spec.require)
    assert parsed > 0
    assert [m for m in messages if not m.startswith("spec.yaml: require")] == []


def test_an_unbounded_campaign_metric_needs_a_range(model_file, cache, tmp_path, capsys):
    """The campaign's metric (here MSE, for the whole campaign) is known when the gate runs: no range, exit 2."""
    data = _spec(model_file, [{"rate": 1e-3, "max": 0.5}], metric={"name": "mse", "target": "input"})
    assert _gate(tmp_path, _write(tmp_path, data), tmp_path / "m.sqlite", cache) == 2
    assert "require[0].range: mlp/baseline is scored with mse, which has no upper bound" in capsys.readouterr().err


def test_requirements_judge_the_campaigns_metric_by_default(tmp_path, cache, capsys):
    """An autoencoder scored by the reconstruction-error ROC AUC: the requirement names no metric and gets auc."""
    path = tmp_path / "ad08.h5"
    zoo_model("ad08", 8, 8, seed=1).save(path)
    data = _spec(path, [{"rate": 1e-3, "min": 0.05}], metric={"name": "auc", "normal": [0, 1, 2, 3, 4]},
                 rates=[1e-3], trials=40)
    data["models"][0]["name"] = "ad08"
    assert _gate(tmp_path, _write(tmp_path, data), tmp_path / "a.sqlite", cache) == 0
    assert capsys.readouterr().out.startswith("HOLDS     ad08/baseline bitflip @ 0.001: auc >= 0.05")
