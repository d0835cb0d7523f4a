"""``hwflow deploy``: pack a build and a campaign into one bundle the board runs on its own.

The bundle carries everything the board needs and nothing it cannot import: the build's manifest,
golden WeightImage, program, bitstream and ``.hwh``; the campaign spec and its plan for the built
variant (trial keys, seeds, FaultMap digests); the test inputs and labels; the host package; and a
copy of exactly the hwflow modules the host imports (``hwflow.deploy.vendor``: numpy and the
standard library only), taken from the installed hwflow at deploy time so the board samples
FaultMaps with the workstation's code.
See ``hwflow_host.bundle`` for the layout.
"""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import hwflow_host
import numpy as np
from hwflow_host.bundle import BUNDLE_FILE, BUNDLE_FORMAT, BUNDLE_VERSION
from hwflow_host.manifest import Manifest, load_manifest

import hwflow
from hwflow.deploy.vendor import vendored_modules
from hwflow.errors import DeployError
from hwflow.image import WeightImage

log = logging.getLogger(__name__)

DEFAULT_OVERLAY = "hwflow"  # the bitstream's basename when the manifest names none (hwflow.hardware.vivado)

RUN_SH = """#!/bin/bash
# Start (or resume) this bundle's fault campaign on the board. Run it as root (pynq maps the
# device): sudo ./run.sh [--db results.sqlite] [--max-trials N]; paths are relative to where you are.
# Rerunning the same command resumes: finished trials are kept, the memories are scrubbed first.
set -e
here="$(cd "$(dirname "$0")" && pwd)"
for f in /etc/profile.d/pynq_venv.sh /etc/profile.d/xrt_setup.sh; do
    if [ -f "$f" ]; then source "$f"; fi
done
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m hwflow_host "$here" "$@"
"""


@dataclass(frozen=True)
class PackResult:
    path: Path  # the .tar.gz
    top: str  # the folder the archive unpacks to
    campaign: str
    variant: str
    trials: int
    samples: int
    bitstream: str | None  # file name of the bitstream in the bundle; None for a dry-run bundle
    layout_note: str | None = None  # why `hwflow campaign`'s rows are not this build's reference, if they are not


def grown_on_the_emulator(spec, label: str, db_path: str | Path) -> list:
    """The trials a precision target added to ``label``'s points in the emulator campaign of ``db_path``;
    refused when that campaign is another spec's or has not finished growing (the board would run other
    trials than the emulator ends with)."""
    from hwflow.campaign.runner import grown_trials
    from hwflow.campaign.spec import only_more_trials
    from hwflow.results import ResultsDB
    from hwflow.results.db import ResultsError

    if not Path(db_path).is_file():
        msg = f"{db_path}: no results database there (--db: the emulator campaign's, written by hwflow campaign)"
        raise DeployError(msg)
    with ResultsDB(db_path) as db:
        try:
            stored = db.campaign_spec(spec.name)
        except ResultsError:
            msg = f"{db_path} holds no campaign {spec.name!r}: run hwflow campaign with this spec and --db {db_path}"
            raise DeployError(msg) from None
        rows = db.trials(spec.name, board="emulator")
    mine = spec.to_json()
    if stored != mine and not only_more_trials(mine, stored):
        msg = (f"{db_path}: campaign {spec.name!r} was run with another spec than {spec.source}: the board's trials "
               "would not pair up with its trials")
        raise DeployError(msg)
    if spec.precision is None:
        return []
    asked, missing = grown_trials(spec, rows, label)
    if missing or not any(r.variant == label for r in rows):
        msg = (f"{db_path}: campaign {spec.name!r} has not finished its precision target for {label} ("
               f"{len(missing)} trials to run at least): run hwflow campaign {spec.source} --db {db_path} to its end "
               "first, so that the board runs the trials the emulator ends with")
        raise DeployError(msg)
    return asked


def layout_note(spec, manifest: Manifest, program_source: dict) -> str | None:
    """Does ``hwflow campaign`` emulate this build? It converts with the spec's io, backend and strategy;
    another strategy or backend may store the weights in another order (hls4ml transposes some for
    Resource), so the same seeds would fault other weights and the trials would not pair up."""
    built = (manifest.io_type, program_source.get("backend", "Vitis"), program_source.get("strategy", "Latency"))
    emulated = (f"io_{spec.io}", spec.backend, spec.strategy)
    if built == emulated:
        return None
    return (f"this build is {'/'.join(built)}, the campaign spec emulates {'/'.join(emulated)}: compare the board "
            "with the bundle's own emulator run (python -m hwflow_host BUNDLE --board emulator --name emulator), "
            f"or set io: {built[0][3:]}, backend: {built[1]}, strategy: {built[2]} in the spec and rerun "
            "hwflow campaign")


def find_bitstream(build_dir: Path, overlay: str | None) -> Path | None:
    """The build's bitstream in the build folder: ``<overlay>.bit`` (the manifest's ``overlay``, default
    ``hwflow``, as the Vivado step names it), else the only ``*.bit`` there."""
    found = sorted(build_dir.glob("*.bit"))
    named = build_dir / f"{overlay or DEFAULT_OVERLAY}.bit"
    if named.is_file():
        return named
    if len(found) <= 1:
        return found[0] if found else None
    msg = f"{build_dir} holds several bitstreams ({', '.join(p.name for p in found)}); name one with --bitstream"
    raise DeployError(msg)


def choose_variant(spec, manifest: Manifest, variant: str | None) -> str:
    labels = [f"{m.name}/{v}" for m in spec.models for v in m.variants]
    if variant is not None:
        if variant not in labels:
            msg = f"variant {variant!r} is not in campaign {spec.name} (it has: {', '.join(labels)})"
            raise DeployError(msg)
        return variant
    if len(labels) == 1:
        return labels[0]
    matching = [label for label in labels if label.split("/", 1)[0] == manifest.model]
    if len(matching) == 1:
        return matching[0]
    msg = (f"campaign {spec.name} measures {len(labels)} variants ({', '.join(labels)}); say which one this build "
           "is with --variant")
    raise DeployError(msg)


def pack(build_dir: str | Path, spec_path: str | Path, out: str | Path, *, variant: str | None = None,
         bitstream: str | Path | None = None, require_bitstream: bool = True,
         db: str | Path | None = None) -> PackResult:
    """Write the bundle ``out`` (a .tar.gz unpacking to one folder named after it).

    ``db``: the emulator campaign's results; under a precision target the board then runs every trial the
    emulator's points grew to, so that the two pair up on all of them (without it: each point's ``trials``)."""
    from hwflow.campaign import load_spec
    from hwflow.campaign.metric import npz_targets
    from hwflow.campaign.runner import evaluation_data
    from hwflow.deploy.plan import host_plan

    build_dir, out = Path(build_dir), Path(out)
    manifest_path = build_dir / "manifest.json"
    if not manifest_path.is_file():
        msg = f"{build_dir} has no manifest.json: give the output folder of `hwflow build`"
        raise DeployError(msg)
    manifest = load_manifest(manifest_path)
    image_dir = build_dir / Path(manifest.weight_image).parent
    image = WeightImage.load(image_dir)
    manifest.check_image(image)
    program = build_dir / manifest.program
    if not program.is_file():
        msg = f"{manifest_path}: program {manifest.program} is missing from {build_dir}; rebuild"
        raise DeployError(msg)
    overlay = json.loads(manifest_path.read_text()).get("overlay")
    bit = Path(bitstream) if bitstream is not None else find_bitstream(build_dir, overlay)
    if bit is not None and (not bit.is_file() or not bit.with_suffix(".hwh").is_file()):
        msg = f"{bit}: the bitstream and its .hwh (same name, beside it) are both needed by pynq's Overlay"
        raise DeployError(msg)
    if bit is None and require_bitstream:
        msg = (f"{build_dir} has no bitstream (<top>.bit and .hwh): run the Vivado step of the build where Vivado is "
               "installed, or pass --no-bitstream for a bundle that can only be dry-run with --board emulator")
        raise DeployError(msg)
    spec = load_spec(spec_path)
    label = choose_variant(spec, manifest, variant)
    x, y = evaluation_data(spec)
    targets = npz_targets(spec.dataset, spec.split, spec.samples)
    grown = grown_on_the_emulator(spec, label, db) if db is not None else None
    plan = host_plan(spec, label, image, len(y), in_memory={m.key for m in manifest.memories}, grown=grown)
    note = layout_note(spec, manifest, json.loads(program.read_text()).get("source", {}))

    name = out.name[: -len(".tar.gz")] if out.name.endswith(".tar.gz") else out.stem
    with tempfile.TemporaryDirectory(prefix="hwflow-deploy-") as tmp:
        root = Path(tmp) / name
        (root / "build").mkdir(parents=True)
        shutil.copy2(manifest_path, root / "build" / "manifest.json")
        image.save(root / "build" / Path(manifest.weight_image).parent)
        shutil.copy2(program, root / "build" / manifest.program)
        if bit is not None:
            shutil.copy2(bit, root / "build" / bit.name)
            shutil.copy2(bit.with_suffix(".hwh"), root / "build" / bit.with_suffix(".hwh").name)
        shutil.copy2(spec_path, root / "campaign.yaml")
        plan.save(root / "campaign.json")
        (root / "data").mkdir()
        np.save(root / "data" / "x.npy", np.asarray(x))
        np.save(root / "data" / "y.npy", np.asarray(y))
        if targets is not None:  # a regression metric scores the board's outputs against them
            np.save(root / "data" / "targets.npy", np.asarray(targets, dtype=np.float64))
        copy_host(root)
        (root / "run.sh").write_text(RUN_SH)
        (root / "run.sh").chmod(0o755)
        info = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "created": time.time(),
                "hwflow": hwflow.__version__, "numpy": np.__version__, "campaign": spec.name, "variant": label,
                "manifest": "build/manifest.json", "bitstream": f"build/{bit.name}" if bit is not None else None,
                "plan": "campaign.json", "spec": "campaign.yaml", "x": "data/x.npy", "y": "data/y.npy",
                "targets": "data/targets.npy" if targets is not None else None,
                "vendored": [f"hwflow/{rel}" for rel in vendored_modules()]}
        (root / BUNDLE_FILE).write_text(json.dumps(info, indent=1))
        out.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(out, "w:gz") as tar:
            tar.add(root, arcname=name)
    log.info("packed %s: %s, %d trials", out, label, len(plan.trials))
    return PackResult(out, name, spec.name, label, len(plan.trials), len(y), bit.name if bit is not None else None,
                      note)


def copy_host(root: Path) -> None:
    """The host package and the vendored hwflow modules, from the installed packages."""
    host_src = Path(hwflow_host.__file__).parent
    (root / "hwflow_host").mkdir()
    for f in sorted(host_src.glob("*.py")):
        shutil.copy2(f, root / "hwflow_host" / f.name)
    src = Path(hwflow.__file__).parent
    for rel in vendored_modules():
        dst = root / "hwflow" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not (src / rel).is_file():
            msg = f"the installed hwflow ({src}) has no {rel}: reinstall hwflow"
            raise DeployError(msg)
        shutil.copy2(src / rel, dst)


def unpack(archive: str | Path, into: str | Path) -> Path:
    """Unpack a bundle (what the board does with tar); returns the bundle folder."""
    into = Path(into)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            names = {m.name.split("/", 1)[0] for m in tar.getmembers()}
            for m in tar.getmembers():
                if m.name.startswith("/") or ".." in Path(m.name).parts:
                    msg = f"{archive}: unsafe path {m.name} in the archive"
                    raise DeployError(msg)
                if not (m.isfile() or m.isdir()):  # a link could point outside the folder; a bundle has none
                    msg = f"{archive}: {m.name} is a link or a device, not a file: not a bundle hwflow deploy wrote"
                    raise DeployError(msg)
            tar.extractall(into)
    except (OSError, EOFError, zlib.error, tarfile.TarError) as err:  # EOFError, zlib.error: a cut or damaged file
        msg = f"{archive}: not a readable bundle ({err})"
        raise DeployError(msg) from None
    if len(names) != 1:
        msg = f"{archive}: a bundle unpacks to one folder, this one to {sorted(names)}"
        raise DeployError(msg)
    return into / names.pop()

