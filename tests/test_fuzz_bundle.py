"""Fuzzing the bundle reader on the board (``hwflow_host.bundle.load_bundle``) and the WeightImage reader.

A bundle folder is written by hand (the layout ``hwflow deploy`` writes: bundle.json, the build's
manifest and WeightImage, the campaign plan, the data), then one of its files is mutated (a JSON
tree edited, a file replaced by other bytes, cut short or removed). The reader answers with a
Bundle or with one of the host's errors, never another exception, and reads nothing outside the folder.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from hwflow_host.bundle import Bundle, load_bundle
from hwflow_host.campaign import CampaignPlan
from hypothesis import example, given
from hypothesis import strategies as st

from hwflow.deploy import unpack
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


# --- the archive hwflow deploy writes, unpacked on the workstation (hwflow.deploy.unpack) -------------

def _archive(extra: list[tarfile.TarInfo] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(_TEMPLATE, arcname="bundle")
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buf.getvalue()


ARCHIVE = _archive()


def _member(kind: str, name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    if kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc"
    elif kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, "/etc/hostname"
    elif kind == "device":
        info.type = tarfile.CHRTYPE
    elif kind == "fifo":
        info.type = tarfile.FIFOTYPE
    else:
        info.size = 1
    return info


def _unpacked(tmp: Path, raw: bytes):
    archive = tmp / "bundle.tar.gz"
    archive.write_bytes(raw)
    out = answers(lambda: unpack(archive, tmp / "board"))
    if not isinstance(out, HwflowError):
        for path in (tmp / "board").rglob("*"):
            assert not path.is_symlink(), f"{path} is a link"
            path.resolve().relative_to((tmp / "board").resolve())
    return out


@fuzz_settings(100)
@given(st.one_of(st.tuples(st.just("truncate"), st.integers(0, len(ARCHIVE) - 1)),
                 st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, len(ARCHIVE) - 1), st.integers(1, 255)),
                                                     min_size=1, max_size=4))))
@example(("truncate", len(ARCHIVE) // 2))  # EOFError from the gzip stream before the fix
def test_damaged_archives_are_unpacked_or_refused(tmp_path_factory, damage):
    kind, arg = damage
    raw = bytearray(ARCHIVE)
    if kind == "truncate":
        raw = raw[:arg]
    else:
        for pos, mask in arg:
            raw[pos] ^= mask
    _unpacked(tmp_path_factory.mktemp("unpack"), bytes(raw))


@fuzz_settings(60)
@given(st.lists(st.tuples(st.sampled_from(["symlink", "hardlink", "device", "fifo", "file"]),
                          st.sampled_from(["bundle/link", "bundle/data/x.npy", "/abs", "bundle/../up", "other/file",
                                           "bundle/build/evil"])), min_size=1, max_size=3))
@example([("symlink", "bundle/link"), ("file", "bundle/link/passwd")])  # a link out, then a write through it
@example([("hardlink", "bundle/data/x.npy")])
def test_archives_with_links_or_odd_paths_are_refused(tmp_path_factory, members):
    tmp = tmp_path_factory.mktemp("unpack")
    out = _unpacked(tmp, _archive([_member(kind, name) for kind, name in members]))
    if any(kind != "file" for kind, _ in members) or any(not n.startswith("bundle/") or ".." in n
                                                          for _, n in members):
        assert isinstance(out, HwflowError), members
