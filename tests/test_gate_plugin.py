"""The pytest plugin: the hwflow_gate fixture in a user's own test suite (run with pytester), its
entry point, and assert_resilient's message."""

import re
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import zoo_model

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent


def _installed() -> bool:
    return any(ep.value == "hwflow.testing" for ep in metadata.entry_points(group="pytest11"))


def test_entry_point_is_declared():
    text = (ROOT / "pyproject.toml").read_text()  # (tomllib is Python 3.11+; the project supports 3.10)
    section = re.search(r"^\[project\.entry-points\.pytest11\]\n(.*?)(?:^\[|\Z)", text, re.M | re.S)
    assert section is not None
    assert re.search(r'^hwflow = "hwflow\.testing"', section[1], re.M)


def test_fixture_passes_and_fails_a_users_test(pytester, tmp_path, monkeypatch):
    monkeypatch.delenv("HWFLOW_CACHE", raising=False)
    model = tmp_path / "mlp.h5"
    zoo_model("mlp-digits", 8, 8, seed=1).save(model)
    pytester.makepyfile(test_resilience=f'''
        SPEC = {{"name": "user", "seed": 5, "dataset": "digits", "samples": 100, "rates": [1.0e-3], "trials": 60,
                 "faults": [{{"model": "bitflip"}}]}}

        def test_keeps_some_accuracy(hwflow_gate):
            result = hwflow_gate({str(model)!r}, {{**SPEC, "require": [{{"min": 0.01}}]}}, batch=10)
            assert result.passed and result.trials_per_point < 60

        def test_demands_too_much(hwflow_gate):
            hwflow_gate({str(model)!r}, {{**SPEC, "require": [{{"min": 0.9, "name": "ninety"}}]}}, batch=10)
    ''')
    args = [] if _installed() else ["-p", "hwflow.testing"]
    base = pytester.path / "base"
    result = pytester.runpytest(*args, "-q", "-p", "no:cacheprovider", f"--basetemp={base}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: gate user: 0 hold, 1 fail*", "*FAILS*ninety*"])
    designs = list((base / "hwflow-cache" / "designs").iterdir())
    assert len(designs) == 1  # one cache for the session: the second test converted nothing


def test_assert_resilient_needs_a_spec():
    from hwflow.errors import SpecError
    from hwflow.testing import assert_resilient

    with pytest.raises(SpecError, match="needs a spec"):
        assert_resilient("model.h5")
