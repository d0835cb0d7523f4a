"""Read an unpacked deployment bundle (written by ``hwflow deploy``).

Layout (paths relative to the bundle folder; ``bundle.json`` names them)::

    bundle.json           what is where, and which hwflow packed it
    build/manifest.json   the build manifest (contract 8), its WeightImage and program beside it
    build/<top>.bit/.hwh  the bitstream and its hardware handoff (absent in a dry-run bundle)
    campaign.yaml         the campaign spec, as given to hwflow deploy (for people)
    campaign.json         the plan: trials, seeds, fault specs, FaultMap digests (for the host)
    data/x.npy, y.npy     the test inputs (float) and labels
    data/targets.npy      a regression metric's targets, one row per sample (only when the metric needs them)
    hwflow_host/, hwflow/ this package and the numpy-only part of hwflow it uses
    run.sh                starts (or resumes) the campaign on the board
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwflow.errors import FormatError
from hwflow.image import WeightImage
from hwflow_host.board import BoardError
from hwflow_host.campaign import CampaignPlan
from hwflow_host.manifest import Manifest, load_manifest

BUNDLE_FORMAT = "hwflow-bundle"
BUNDLE_VERSION = 1
BUNDLE_FILE = "bundle.json"


class BundleError(BoardError):
    """The bundle folder is incomplete or inconsistent; unpack it again or redeploy."""


@dataclass(frozen=True)
class Bundle:
    root: Path
    info: dict  # bundle.json
    manifest: Manifest
    image: WeightImage  # the golden weight words
    plan: CampaignPlan
    x: np.ndarray
    y: np.ndarray
    bitstream: Path | None  # None: a dry-run bundle without a bitstream
    targets: np.ndarray | None = None  # a regression metric's targets (mse/mae against the data set's)

    @property
    def program_path(self) -> Path:
        return self._manifest_dir / self.manifest.program

    @property
    def _manifest_dir(self) -> Path:
        return (self.root / self.info["manifest"]).parent

    def addresses(self) -> np.ndarray:
        """Image word addresses held in the weight memories: what the scrub rewrites."""
        parts = [np.arange(m.first_word, m.first_word + m.depth, dtype=np.int64) for m in self.manifest.memories]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def load_bundle(root: str | Path) -> Bundle:
    root = Path(root)
    info_path = root / BUNDLE_FILE
    if not info_path.is_file():
        msg = f"{root} is not an unpacked hwflow bundle ({BUNDLE_FILE} missing): unpack the tar.gz from hwflow deploy"
        raise BundleError(msg)
    try:
        info = json.loads(info_path.read_text())
    except ValueError as err:
        msg = f"{info_path}: not valid JSON ({err})"
        raise BundleError(msg) from None
    if not isinstance(info, dict) or info.get("format") != BUNDLE_FORMAT or info.get("version") != BUNDLE_VERSION:
        msg = f"{info_path}: not a version {BUNDLE_VERSION} hwflow bundle; redeploy with a matching hwflow"
        raise BundleError(msg)
    for key in ("manifest", "plan", "x", "y"):
        if not isinstance(info.get(key), str) or not (root / info[key]).is_file():
            msg = f"{info_path}: {key}: file {info.get(key)!r} is missing from the bundle; unpack it again"
            raise BundleError(msg)
        if not _inside(root, root / info[key]):  # the host reads only what the bundle holds
            msg = f"{info_path}: {key}: {info[key]!r} points outside the bundle folder; redeploy"
            raise BundleError(msg)
    manifest = load_manifest(root / info["manifest"])
    try:
        image = WeightImage.load((root / info["manifest"]).parent / Path(manifest.weight_image).parent)
    except FormatError as err:
        msg = f"{root}: the golden WeightImage cannot be read: {err}"
        raise BundleError(msg) from None
    manifest.check_image(image)
    plan = CampaignPlan.load(root / info["plan"])
    try:
        x = np.load(root / info["x"], allow_pickle=False)
        y = np.load(root / info["y"], allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        msg = f"{root}: the test data cannot be read ({err}); unpack the bundle again"
        raise BundleError(msg) from None
    _check_data(root, x, y)
    if len(x) != len(y) or len(y) != plan.samples:
        msg = f"{root}: {len(x)} inputs, {len(y)} labels, the plan expects {plan.samples} samples: redeploy"
        raise BundleError(msg)
    if int(np.prod(x.shape[1:])) != manifest.data.input_elements:
        msg = f"{root}: inputs of shape {x.shape[1:]}, the accelerator takes {manifest.data.input_shape}: redeploy"
        raise BundleError(msg)
    bitstream = info.get("bitstream")
    if bitstream is not None and (not isinstance(bitstream, str) or not _inside(root, root / bitstream)):
        msg = f"{info_path}: bitstream: {bitstream!r} is not a file name inside the bundle; redeploy"
        raise BundleError(msg)
    bitstream = root / bitstream if bitstream else None
    return Bundle(root, info, manifest, image, plan, x, y, bitstream, _targets(root, info, len(y)))


def _targets(root: Path, info: dict, samples: int) -> np.ndarray | None:
    """The optional regression targets: finite numbers, one row per sample, read only from inside the bundle."""
    name = info.get("targets")
    if name is None:
        return None
    if not isinstance(name, str) or not _inside(root, root / name) or not (root / name).is_file():
        msg = f"{root / BUNDLE_FILE}: targets: {name!r} is not a file inside the bundle; unpack it again or redeploy"
        raise BundleError(msg)
    try:
        targets = np.load(root / name, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        msg = f"{root}: the regression targets cannot be read ({err}); unpack the bundle again"
        raise BundleError(msg) from None
    if not isinstance(targets, np.ndarray) or targets.ndim < 1 or len(targets) != samples \
            or not np.issubdtype(targets.dtype, np.floating) or not np.all(np.isfinite(targets)):
        msg = f"{root}: the regression targets are not finite numbers, one row per sample ({samples}): redeploy"
        raise BundleError(msg)
    return targets.reshape(samples, -1)


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _check_data(root: Path, x: object, y: object) -> None:
    """Inputs: real finite numbers, one row per sample; labels: one integer class index per sample."""
    if not isinstance(x, np.ndarray) or x.ndim < 1 or not (np.issubdtype(x.dtype, np.integer)
                                                          or np.issubdtype(x.dtype, np.floating)):
        msg = f"{root}: the inputs are not an array of numbers, one row per sample: redeploy"
        raise BundleError(msg)
    if not np.all(np.isfinite(x)):
        msg = f"{root}: the inputs hold NaN or infinite values: redeploy"
        raise BundleError(msg)
    if not isinstance(y, np.ndarray) or y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) \
            or (y.size and int(y.min()) < 0):
        msg = f"{root}: the labels are not one class index (an integer >= 0) per sample: redeploy"
        raise BundleError(msg)
