"""A campaign spec's ``keep_softmax`` model field: checked, stored only when set, and given to the converter."""

from __future__ import annotations

import pytest

from hwflow.campaign.spec import parse_spec
from hwflow.errors import SpecError


def _spec(**model):
    return {"name": "t", "seed": 1, "dataset": "digits", "rates": [1e-3], "trials": 2,
            "faults": [{"model": "bitflip"}], "models": [{"zoo": "mlp-digits", **model}]}


def test_keep_softmax_is_read_checked_and_reaches_the_options():
    from hwflow.campaign.variants import model_options

    kept = parse_spec(_spec(keep_softmax=True), "spec.yaml")
    default = parse_spec(_spec(), "spec.yaml")
    assert kept.models[0].keep_softmax is True
    assert default.models[0].keep_softmax is False
    assert model_options(kept, kept.models[0]).keep_softmax is True
    assert model_options(default, default.models[0]).keep_softmax is False
    for bad in ("yes", 1, None):
        with pytest.raises(SpecError, match=r"spec.yaml: models\[0\]\.keep_softmax: must be true or false"):
            parse_spec(_spec(keep_softmax=bad), "spec.yaml")


def test_keep_softmax_is_stored_only_when_set():
    """A spec without it compares equal to one stored before the field existed; a kept softmax is another design."""
    kept = parse_spec(_spec(keep_softmax=True), "spec.yaml").to_json()
    default = parse_spec(_spec(), "spec.yaml").to_json()
    assert "keep_softmax" not in default["models"][0]
    assert kept["models"][0]["keep_softmax"] is True
    assert parse_spec(_spec(keep_softmax=False), "spec.yaml").to_json() == default
