"""Variant names: one parser decides what 'saq+clipact+scale' means, and refuses nonsense clearly."""

from __future__ import annotations

import pytest

from hwflow.errors import HardenError
from hwflow.harden.recipe import Recipe


@pytest.mark.parametrize(("name", "canonical", "methods"), [
    ("baseline", "baseline", []),
    ("scale", "scale", ["scale"]),
    ("clipact+saq", "saq+clipact", ["saq", "clipact"]),
    ("all", "saq+clipact+scale", ["saq", "clipact", "scale"]),
    ("scale+float16", "float16+scale", ["scale"]),
    ("saq+sparse", "sparse+saq", ["saq"]),
    ("clipact-saturate+scale-search", "clipact-saturate+scale-search", ["clipact", "scale"]),
])  # fmt: skip
def test_names_are_canonical_and_order_free(name, canonical, methods):
    recipe = Recipe.parse(name)
    assert recipe.name == canonical
    assert recipe.methods == methods
    assert Recipe.parse(recipe.name) == recipe


def test_fields_of_a_full_stack():
    r = Recipe.parse("float32+sparse+saq+clipact-saturate+scale-search")
    assert (r.training, r.clip_mode, r.scale, r.storage) == ("sparse-saq", "saturate", "search", "float32")


@pytest.mark.parametrize(("name", "words"), [
    ("", "empty"),
    ("scal", "unknown hardening method 'scal'"),
    ("baseline+scale", "cannot be combined"),
    ("float16+float32", "two storage formats"),
    ("clipact+clipact-saturate", "two clip modes"),
    ("scale+scale-search", "two scaling modes"),
])  # fmt: skip
def test_bad_names_are_refused_with_the_reason(name, words):
    with pytest.raises(HardenError, match=words):
        Recipe.parse(name)


def test_campaign_spec_checks_variants(tmp_path):
    from hwflow.campaign.spec import parse_spec
    from hwflow.errors import SpecError

    base = {"name": "x", "seed": 1, "rates": [1e-3], "trials": 2, "faults": [{"model": "bitflip"}]}
    spec = parse_spec({**base, "models": [{"zoo": "cnn-digits", "variants": ["baseline", "clipact+scale"]}]})
    assert spec.models[0].variants == ("baseline", "clipact+scale")
    with pytest.raises(SpecError, match="models\\[0\\].variants: unknown hardening method 'nope'"):
        parse_spec({**base, "models": [{"zoo": "cnn-digits", "variants": ["nope"]}]})
    with pytest.raises(SpecError, match="training methods"):
        parse_spec({**base, "models": [{"path": "m.h5", "variants": ["saq"]}]})
