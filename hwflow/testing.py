"""A pytest plugin for resilience checks in a user's own test suite (registered as ``pytest11: hwflow``).

``assert_resilient(model, spec)`` runs the spec's campaign on the emulator through the gate (batches,
confidence sequence, early stop) and raises ``AssertionError`` with the gate's lines unless every
requirement holds; the ``hwflow_gate`` fixture is the same function with the results database in
the test's temporary folder and a cache shared by the session's tests::

    def test_my_model_survives_bit_flips(hwflow_gate):
        hwflow_gate("model.h5", {"name": "ci", "seed": 1, "dataset": "digits", "rates": [1e-3],
                                 "trials": 50, "faults": [{"model": "bitflip"}],
                                 "require": [{"rate": 1e-3, "min": 0.9}]})

Importing this module imports neither TensorFlow nor hls4ml (pytest loads it in every session).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hwflow.errors import SpecError


def _spec(model, spec, where: Path):
    from hwflow.campaign import load_spec, parse_spec
    from hwflow.campaign.spec import read_yaml

    if isinstance(spec, (str, Path)):
        if model is None:
            return load_spec(spec)
        data, source = read_yaml(spec), str(spec)
    elif isinstance(spec, dict):
        data, source = dict(spec), str(where / "spec.yaml")
    else:
        msg = f"spec must be a YAML file or a dict of spec fields, got {type(spec).__name__}"
        raise SpecError(msg)
    if model is not None:
        path = Path(model) if isinstance(model, (str, Path)) else _save(model, where)
        data = {**data, "models": [{"path": str(path.resolve()), "name": path.stem}]}
    return parse_spec(data, source)


def _save(model, where: Path) -> Path:
    """A Keras model given as an object: saved to an .h5 file the campaign can load."""
    path = where / f"{getattr(model, 'name', 'model') or 'model'}.h5"
    model.save(path)
    return path


def assert_resilient(model=None, spec=None, *, db: str | Path | None = None, cache: str | Path | None = None,
                     batch: int | None = None, workers: int = 1):
    """Gate ``spec`` (a YAML file or a dict with ``require:``) on ``model`` (an .h5 path, a Keras model, or None
    for the spec's own models); returns the ``GateResult`` when every requirement holds, else raises
    ``AssertionError`` with one line per requirement."""
    from hwflow.gate import GateConfig, run_gate

    if spec is None:
        msg = "assert_resilient needs a spec (a YAML file or a dict) with a 'require:' list"
        raise SpecError(msg)
    with tempfile.TemporaryDirectory(prefix="hwflow-testing-") as tmp:
        where = Path(tmp)
        campaign = _spec(model, spec, where)
        result = run_gate(campaign, db if db is not None else where / "results.sqlite",
                          GateConfig(batch=batch, workers=workers, cache=cache))
    if not result.passed:
        lines = "\n".join(v.line for v in result.verdicts)
        msg = f"{result.summary_line()}\n{lines}"
        raise AssertionError(msg)
    return result


try:
    import pytest
except ImportError:  # pragma: no cover - assert_resilient works without pytest
    pytest = None

if pytest is not None:

    @pytest.fixture
    def hwflow_gate(tmp_path, tmp_path_factory):
        """``assert_resilient`` with the results in the test's own temporary folder, and one cache for the
        session (``HWFLOW_CACHE`` names a lasting one, e.g. the folder a CI job restores)."""
        import os

        cache = os.environ.get("HWFLOW_CACHE") or tmp_path_factory.getbasetemp() / "hwflow-cache"

        def gate(model=None, spec=None, **kwargs):
            kwargs.setdefault("db", tmp_path / "hwflow-gate.sqlite")
            kwargs.setdefault("cache", cache)
            return assert_resilient(model, spec, **kwargs)

        return gate
