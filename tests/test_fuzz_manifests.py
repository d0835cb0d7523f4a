"""Fuzzing the readers of what a build and a deployment write: the storage plan (``StoragePlan.from_json``),
the build manifest on the workstation (``hwflow.hardware.manifest.Manifest``) and on the board
(``hwflow_host.manifest``), and the host's campaign plan (``CampaignPlan``).

Random JSON trees, random bytes, and mutations of valid documents: each answers with a value or
with an HwflowError (the host's errors derive from it), never another exception.
"""

from __future__ import annotations

import json

import numpy as np
from hwflow_host.campaign import CampaignPlan
from hwflow_host.manifest import Manifest as HostManifest
from hwflow_host.manifest import load_manifest, parse_manifest
from hypothesis import example, given
from hypothesis import strategies as st

from hwflow.hardware.manifest import Manifest
from hwflow.image import Scale, StorageFormat, StoredArray, WeightImage
from hwflow.image.plan import StoragePlan
from tests.fake_pynq import layout_manifest
from tests.fuzzing import answers, fuzz_settings, mutated, trees


def _stored(layer, name, fmt, words):
    words = np.asarray(words, dtype=np.uint64)
    return StoredArray(layer, name, f"{name[0]}_{layer}", (words.size,), (0,), StorageFormat.parse(fmt), Scale(), words)


IMAGE = WeightImage((
    _stored("conv1", "weight", "fixed<8,1>", [0x00, 0x7F, 0x80, 0xFF, 0x0F, 0xA5, 0x01, 0x02, 0x03]),
    _stored("conv1", "bias", "fixed<16,6>", [0x0000, 0xFFFF, 0x1234]),
    _stored("out", "weight", "fixed<6,2>", [1, 2, 3, 63, 0]),
))
MANIFEST = layout_manifest(IMAGE, input_shape=[4], input_type="fixed<16,6>", output_shape=[3],
                           output_type="fixed<16,6>")
PLAN = {"format": 1, "storage": "fixed", "mode": "rule",
        "scales": {"conv1/weight": {"shift": 1, "constant": None}, "conv1/bias": {"shift": 0, "constant": 3.0}},
        "details": {"rule": "fill"}}
HOST_PLAN = {"format": "hwflow-campaign-plan", "version": 1, "campaign": "c", "spec": {"name": "c"},
             "variant": "m/baseline", "samples": 4,
             "trials": [{"study": "sweep", "fault_model": "bitflip", "target_layer": "", "target_bit": -1,
                         "rate": 1e-3, "trial": 0, "seed": 7, "fault": {"model": "bitflip"}, "digest": None}]}
NUMBERS = st.sampled_from([0, -1, 1, 2**31, 2**63, 2**64, 10**400, 1e400, float("nan"), 0.5, True, "1", None])


def test_the_valid_documents_are_read():
    assert isinstance(StoragePlan.from_json(PLAN), StoragePlan)
    assert isinstance(parse_manifest(MANIFEST), HostManifest)
    assert isinstance(Manifest.from_json(MANIFEST), Manifest)
    assert isinstance(CampaignPlan.from_json(HOST_PLAN), CampaignPlan)


# --- the storage plan ------------------------------------------------------------------------------

@fuzz_settings(250)
@given(mutated(PLAN, st.sampled_from(["shift", "constant", "format", "storage", "mode", "scales", "details",
                                      "conv1/weight", "out/weight", "x"]))
       | trees())
@example({"format": 1, "scales": {"conv1/weight": {"shift": 10**400}}})
@example({"format": 1, "storage": "float16", "scales": {"out/weight": {"shift": 1023, "constant": None}}})
def test_storage_plans_are_read_and_applied_or_refused(data):
    plan = answers(lambda: StoragePlan.from_json(data))
    if isinstance(plan, StoragePlan):
        answers(lambda: plan.apply(IMAGE))
        answers(lambda: plan.describe())
        assert StoragePlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan


# --- the build manifest, workstation and host ----------------------------------------------------

MANIFEST_KEYS = st.sampled_from(["format", "model", "data", "weight_memories", "base", "range", "depth", "word_bits",
                                 "lanes", "first_word", "scale", "input_shape", "input_type", "clock_mhz", "name",
                                 "interface", "shift", "constant", "x"])


def _mutated_manifest():
    return st.one_of(mutated(MANIFEST, MANIFEST_KEYS, max_mutations=4), trees(MANIFEST_KEYS),
                     st.tuples(st.sampled_from(range(len(MANIFEST["weight_memories"]))),
                               st.sampled_from(["base", "range", "depth", "word_bits", "lanes", "first_word"]),
                               NUMBERS).map(_set_memory_field))


def _set_memory_field(change):
    i, key, value = change
    data = json.loads(json.dumps(MANIFEST))
    data["weight_memories"][i][key] = value
    return data


@fuzz_settings(300)
@given(_mutated_manifest())
@example({**MANIFEST, "clock_mhz": 10**400})
@example([1, 2])
def test_host_manifests_are_read_or_refused(data):
    manifest = answers(lambda: parse_manifest(data))
    if isinstance(manifest, HostManifest):
        answers(lambda: manifest.check_image(IMAGE))
        for addr in (-1, 0, 5, manifest.total_words, 2**70):
            answers(lambda a=addr: manifest.locate(a))


@fuzz_settings(300)
@given(_mutated_manifest())
@example([1, 2])
@example({**MANIFEST, "weight_memories": [{**MANIFEST["weight_memories"][0], "scale": [1]}]})
def test_workstation_manifests_are_read_or_refused(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("manifest") / "manifest.json"
    path.write_text(json.dumps(data))
    answers(lambda: Manifest.load(path))


@fuzz_settings(80)
@given(st.binary(max_size=60) | st.sampled_from([b"[" * 100_000, b"\xff", b"{}", b'{"format": 1}']))
@example(b"[" * 100_000)
def test_manifest_files_are_read_or_refused(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("manifest") / "manifest.json"
    path.write_bytes(raw)
    answers(lambda: load_manifest(path))
    answers(lambda: Manifest.load(path))


# --- the host's campaign plan ----------------------------------------------------------------------

@fuzz_settings(250)
@given(mutated(HOST_PLAN, st.sampled_from(["trials", "seed", "rate", "trial", "target_bit", "fault", "digest",
                                           "samples", "spec", "format", "version"]))
       | st.tuples(st.sampled_from(["seed", "rate", "trial", "target_bit", "fault"]), NUMBERS).map(
           lambda kv: {**HOST_PLAN, "trials": [{**HOST_PLAN["trials"][0], kv[0]: kv[1]}]})
       | trees())
@example({**HOST_PLAN, "trials": [[1, 2]]})
@example({**HOST_PLAN, "trials": [{**HOST_PLAN["trials"][0], "seed": 1e400}]})
def test_host_plans_are_read_or_refused(data):
    plan = answers(lambda: CampaignPlan.from_json(data))
    if isinstance(plan, CampaignPlan):
        for trial in plan.trials:
            answers(lambda t=trial: t.sample(IMAGE))


@fuzz_settings(60)
@given(st.binary(max_size=60) | st.sampled_from([b"[" * 100_000, b"\xff\xfe"]))
@example(b"[" * 100_000)
def test_host_plan_files_are_read_or_refused(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("plan") / "campaign.json"
    path.write_bytes(raw)
    answers(lambda: CampaignPlan.load(path))
