"""Fuzzing the bundle reader on the board (``hwflow_host.bundle.load_bundle``) and the WeightImage reader.

A bundle folder is written by hand (the layout ``hwflow deploy`` writes: bundle.json, the build's
manifest and WeightImage, the campaign plan, the data), then one of its files is mutated (a JSON
tree edited, a file replaced by other bytes, cut short or removed). The reader answers with a
Bundle or with one of the host's errors, never another exception, and reads nothing outside the folder.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from hwflow_host.bundle import Bundle, load_bundle
from hwflow_host.campaign import CampaignPlan
from hypothesis import example, given
from hypothesis import strategies as st

from hwflow.errors import HwflowError
from hwflow.image import Scale, StorageFormat, StoredArray, WeightImage
from tests.fake_pynq import layout_manifest
from tests.fuzzing import answers, fuzz_settings, mutated

SAMPLES = 6


def _write_bundle(root: Path) -> None:
    f8 = StorageFormat.parse("fixed<8,1>")
    image = WeightImage((StoredArray("d1", "weight", "w2", (4, 2), (0, 1), f8, Scale(), np.arange(8, dtype=np.uint64)),
                         StoredArray("d1", "bias", "b2", (2,), (0,), f8, Scale(1), np.array([3, 250], np.uint64))))
    build = root / "build"
    image.save(build)
    manifest = layout_manifest(image, input_shape=[4], input_type="fixed<16,6>", output_shape=[2],
                               output_type="fixed<16,6>")
    (build / "manifest.json").write_text(json.dumps(manifest))
    plan = {"format": "hwflow-campaign-plan", "version": 1, "campaign": "c", "spec": {"name": "c", "seed": 1},
            "variant": "m/baseline", "samples": SAMPLES,
            "trials": [{"study": "sweep", "fault_model": "bitflip", "target_layer": "", "target_bit": -1,
                        "rate": 0.01, "trial": 0, "seed": 3, "fault": {"model": "bitflip"}, "digest": None}]}
    CampaignPlan.from_json(plan).save(root / "campaign.json")
    (root / "data").mkdir()
    np.save(root / "data" / "x.npy", np.zeros((SAMPLES, 4), np.float32))
    np.save(root / "data" / "y.npy", np.arange(SAMPLES) % 2)
    (root / "bundle.json").write_text(json.dumps({
        "format": "hwflow-bundle", "version": 1, "manifest": "build/manifest.json", "plan": "campaign.json",
        "x": "data/x.npy", "y": "data/y.npy", "bitstream": None}))


_TEMPLATE = Path(tempfile.mkdtemp(prefix="hwflow-fuzz-bundle-"))
_write_bundle(_TEMPLATE)
JSON_FILES = ["bundle.json", "build/manifest.json", "build/weight_image.json", "campaign.json"]
TREES = {name: json.loads((_TEMPLATE / name).read_text()) for name in JSON_FILES}
OTHER_FILES = ["data/x.npy", "data/y.npy", "build/d1__weight.npy", "build/d1__bias.npy"]
KEYS = st.sampled_from(["manifest", "plan", "x", "y", "bitstream", "arrays", "file", "base", "words", "shape", "axes",
                        "format", "scale", "trials", "samples", "weight_memories", "depth", "first_word", "layer"])
PATHS = st.sampled_from(["../outside.json", "/etc/hostname", "build", "data/x.npy", "build/manifest.json",
                         "../" + _TEMPLATE.name + "/bundle.json", "campaign.json"])
ARRAYS = st.sampled_from([np.zeros(0), np.zeros((SAMPLES, 4)), np.zeros((SAMPLES, 2, 2), np.float32),
                          np.array(3.0), np.full(SAMPLES, -1), np.full(SAMPLES, 0.5), np.array(["a"] * SAMPLES),
                          np.zeros((SAMPLES + 1, 4), np.float32), np.full(8, 2**40, np.uint64),
                          np.full(8, -3, np.int64), np.full(8, np.nan), np.zeros((2, 4), np.uint8),
                          np.full(SAMPLES, np.inf, np.float32)])


def _mutations():
    json_edit = st.sampled_from(JSON_FILES).flatmap(
        lambda name: st.tuples(st.just("json"), st.just(name), mutated(TREES[name], KEYS) | PATHS.map(
            lambda p, n=name: {**TREES[n], "manifest": p} if n == "bundle.json" else TREES[n])))
    array = st.tuples(st.just("array"), st.sampled_from(OTHER_FILES), ARRAYS)
    damage = st.tuples(st.sampled_from(["bytes", "truncate", "remove"]), st.sampled_from(JSON_FILES + OTHER_FILES),
                       st.binary(max_size=40))
    return st.lists(st.one_of(json_edit, array, damage), min_size=1, max_size=2)


def _apply(root: Path, mutation) -> None:
    kind, name, arg = mutation
    path = root / name
    if kind == "json":
        path.write_text(json.dumps(arg))
    elif kind == "array":
        np.save(path, arg)
        if path.suffix != ".npy":  # np.save adds .npy to other names
            path.with_suffix(path.suffix + ".npy").replace(path)
    elif kind == "bytes":
        path.write_bytes(arg)
    elif kind == "truncate":
        if path.exists():
            path.write_bytes(path.read_bytes()[: len(arg)])
    elif path.exists():
        path.unlink()


def test_the_template_bundle_loads():
    bundle = load_bundle(_TEMPLATE)
    assert len(bundle.y) == SAMPLES
    assert bundle.image.total_words == 10


@fuzz_settings(200)
@given(_mutations())
@example([("json", "build/weight_image.json", [1, 2])])
@example([("json", "build/weight_image.json", {**TREES["build/weight_image.json"], "arrays": [
    {**TREES["build/weight_image.json"]["arrays"][0], "file": "../data/x.npy"}]})])
@example([("array", "build/d1__weight.npy", np.full(8, 0.5))])  # float words were cast silently
@example([("bytes", "build/d1__weight.npy", b"")])  # EOFError
@example([("array", "data/x.npy", np.array(3.0))])  # TypeError: len() of unsized object
@example([("json", "bundle.json", {**TREES["bundle.json"], "manifest": "../outside.json"})])
@example([("json", "bundle.json", {**TREES["bundle.json"], "bitstream": 7})])  # TypeError
def test_mutated_bundles_are_loaded_or_refused(tmp_path_factory, mutations):
    root = tmp_path_factory.mktemp("bundle") / "b"
    shutil.copytree(_TEMPLATE, root)
    (root.parent / "outside.json").write_text(json.dumps(TREES["build/manifest.json"]))
    for m in mutations:
        _apply(root, m)
    out = answers(lambda: load_bundle(root))
    if isinstance(out, HwflowError):
        return
    assert isinstance(out, Bundle)
    assert out.x.shape[0] == len(out.y) == out.plan.samples
    for name in ("manifest", "plan", "x", "y"):
        (root / out.info[name]).resolve().relative_to(root.resolve())  # nothing read from outside
