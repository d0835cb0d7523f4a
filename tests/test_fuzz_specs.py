"""Fuzzing the campaign spec (``parse_spec``, ``load_spec``) and the experiment file (``load_experiment``).

Random YAML trees, random YAML text, and random mutations of the specs we ship (examples/*.yaml,
experiments/*.yaml): each answers with a spec or a SpecError (an HwflowError), never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from hwflow.campaign.spec import CampaignSpec, load_spec, parse_spec
from hwflow.errors import HwflowError
from hwflow.experiment import Experiment, load_experiment
from tests.fuzzing import answers, fuzz_settings, mutated, trees

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("campaign-*.yaml"))  # the campaign specs (not hls4ml configs)
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))
SPEC_KEYS = st.sampled_from([
    "name", "seed", "dataset", "split", "samples", "batch_size", "io", "backend", "strategy", "reuse_factor",
    "models", "faults", "rates", "trials", "sensitivity", "hardening", "data_root", "models_dir", "zoo", "path",
    "variants", "weight_bits", "act_bits", "weight_integer", "train_seed", "model", "mode", "value", "bits",
    "layers", "arrays", "length", "rate", "studies", "clip_rates", "clip_trials", "defaults", "campaigns",
    "trails", "hls_config",
])


def _shipped(paths: list[Path]) -> list[tuple[Path, dict]]:
    return [(p, yaml.safe_load(p.read_text())) for p in paths]


SPECS = _shipped(EXAMPLES)
EXPERIMENT_FILES = _shipped(EXPERIMENTS)


def _parse(tree: object, where: str = "<fuzz>"):
    out = answers(lambda: parse_spec(tree, where))
    assert isinstance(out, (CampaignSpec, HwflowError))
    return out


def test_the_shipped_specs_parse():
    assert SPECS, "examples/*.yaml"
    for path, tree in SPECS:
        assert isinstance(parse_spec(tree, str(path)), CampaignSpec)


@fuzz_settings(300)
@given(trees(SPEC_KEYS))
@example({"name": "x", "seed": 0, "models": [{"zoo": "cnn-digits"}], "rates": [1e-3], "trials": 1,
          "faults": [{"model": "bitflip"}], "dataset": None})
@example({"name": "x", "seed": 0, "models": [{"zoo": "cnn-digits"}], "rates": [1e-3], "trials": 1,
          "faults": [{"model": "bitflip", "trails": 3}]})
def test_random_trees_are_parsed_or_refused(tree):
    _parse(tree)


@fuzz_settings(300)
@given(st.sampled_from(range(len(SPECS))).flatmap(lambda i: st.tuples(st.just(i), mutated(SPECS[i][1], SPEC_KEYS))))
def test_mutated_shipped_specs_are_parsed_or_refused(case):
    i, tree = case
    _parse(tree, str(SPECS[i][0]))


@fuzz_settings(150)
@given(st.text(max_size=200) | st.sampled_from(["name: [", "a: !!binary AAAA", "? [a, b]\n: c", "x: 2001-01-01",
                                                "- !!set {a, b}", "name: x\nname: y", "&a [*a]", "\t", "%YAML 9"]))
def test_random_yaml_text_is_read_or_refused(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    path.write_text(text)
    out = answers(lambda: load_spec(path))
    assert isinstance(out, (CampaignSpec, HwflowError))


@fuzz_settings(150)
@given(st.sampled_from(range(len(EXPERIMENT_FILES))).flatmap(
    lambda i: st.tuples(st.just(i), mutated(EXPERIMENT_FILES[i][1], SPEC_KEYS)))
    | st.tuples(st.just(-1), trees(SPEC_KEYS)))
def test_mutated_experiment_files_are_read_or_refused(tmp_path_factory, case):
    i, tree = case
    path = tmp_path_factory.mktemp("exp") / "exp.yaml"
    path.write_text(yaml.safe_dump(tree))
    out = answers(lambda: load_experiment(path))
    assert isinstance(out, (Experiment, HwflowError))
