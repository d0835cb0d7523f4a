"""A cache folder for CI: trained zoo models, hls4ml conversions and fault-free passes, under content keys.

A CI job restores one folder (``.hwflow-cache`` by default, see ``hwflow gate --cache``) and goes
straight to the trials: no training, no hardening search, no hls4ml, not even TensorFlow's import,
and no fault-free pass.

- ``models/``: the trained (and hardened) zoo model files of the spec's ``models_dir``, copied back
  into it when missing there. ``load_or_train`` then reuses them through its own sidecar check
  (configuration and hwflow version), so a stale file is retrained, never trusted.
- ``designs/<key>/``: each variant's Program and WeightImage as hls4ml converted them. The key is a
  SHA-256 of what decides the design: the model file's bytes and its sidecar (for hardened variants
  the hardened file's too), the model entry, the variant, the HLS options, the user's hls4ml
  configuration (its record), the hardening settings, and the hwflow and hls4ml versions. A key whose
  model file does not exist yet is a miss: the variant is built the ordinary way
  (``build_variants``) and stored under the key its files then have.

- ``golden/<key>/``: each campaign evaluator's fault-free pass (the engine's compact codes of every
  evaluation sample), written and read by ``hwflow.campaign.golden_cache``, which the gate points at
  this folder around each batch's campaign run (``golden_folder``). The key is a SHA-256 of the
  Program, the weight words and their formats, the samples and their range, the store layout, and
  hwflow's version and sources; entries are checksummed, and a damaged one is recomputed. The gate
  starts the engine afresh for every batch (and in every worker), so without this the pass ran once
  per batch, variant and worker. Measured here (2 cores, ``benchmarks/bench_golden_cache.py``):
  cnn-fmnist on its 10,000 test images takes 6 s per pass and keeps 963 MiB, read back in 0.2-0.4 s
  (a quiet machine; 12 s against 0.6-1.3 s with others' jobs running); a 4-batch gate of it took
  78-83 s with the conversion cached but not the pass, 28-38 s with both (others' jobs running). The
  digits demo's pass takes 5 ms and is read back in 1-3 ms: reading was faster at every size
  measured (1 to 963 MiB), so every pass is cached. Entries are never deleted: remove ``golden/`` to
  reclaim the space (it is refilled on the next run).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import asdict, replace
from importlib import metadata
from pathlib import Path

import hwflow
from hwflow.campaign.spec import CampaignSpec, ModelSpec

log = logging.getLogger(__name__)

KEY_VERSION = 1
"""Bumped when the key's recipe or the stored layout changes (old entries then simply miss)."""


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def model_files(spec: CampaignSpec, model: ModelSpec, variant: str) -> list[Path]:
    """The files a variant is made from (base model, sidecar, hardened model and its sidecar), as named by
    ``hwflow.campaign.variants``; some may not exist yet."""
    from hwflow.campaign.variants import _zoo_path
    from hwflow.harden.recipe import Recipe
    from hwflow.zoo.loading import sidecar_path

    recipe = Recipe.parse(variant)
    base = _zoo_path(spec, model, recipe.training) if model.zoo is not None else spec.resolve(model.path)
    files = [base, sidecar_path(base)]
    if recipe.clip_mode is not None or recipe.scale is not None or recipe.storage != "fixed":
        tail = Recipe(clip_mode=recipe.clip_mode, scale=recipe.scale, storage=recipe.storage).name
        hardened = spec.resolve(spec.models_dir) / f"{base.stem}--{tail}.h5"
        files += [hardened, sidecar_path(hardened)]
    return files


def design_key(spec: CampaignSpec, model: ModelSpec, variant: str) -> str | None:
    """The content key of a variant's conversion, or None while a model file it needs does not exist."""
    from hwflow.campaign.variants import model_options

    files = model_files(spec, model, variant)
    if not files[0].is_file() or (len(files) > 2 and not files[2].is_file()):
        return None
    h = hashlib.sha256()
    options = model_options(spec, model)
    hls_config = None
    if model.hls_config is not None:
        from hwflow.convert.hls_config import load_hls_config

        hls_config = load_hls_config(spec.resolve(model.hls_config)).record()
    head = {"key": KEY_VERSION, "hwflow": hwflow.__version__, "hls4ml": _version("hls4ml"),
            "model": {k: v for k, v in asdict(model).items() if k != "metric"}, "variant": variant,
            "options": repr(options), "hls_config": hls_config, "hardening": spec.hardening,
            "dataset": spec.dataset}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes() if f.is_file() else b"-")
    return h.hexdigest()[:32]


def cached_variants(spec: CampaignSpec, cache_dir: str | Path, progress: bool = False) -> list:
    """Every variant of ``spec``, from the cache where its key is there, else built and stored."""
    from hwflow.campaign.variants import Variant, build_variants
    from hwflow.emulator import Program
    from hwflow.image import WeightImage

    cache = Path(cache_dir)
    # zoo models only: a model file of the user's own is theirs to keep, never restored by name
    files = [f for m in spec.models if m.zoo is not None for name in m.variants for f in model_files(spec, m, name)]
    _copy_missing(files, cache / "models")
    out = []
    for model in spec.models:
        for name in model.variants:
            label = f"{model.name}/{name}"
            key = design_key(spec, model, name)
            entry = cache / "designs" / key if key else None
            if entry is not None and (entry / "done").is_file():
                log.info("%s: conversion from the cache (%s)", label, entry)
                out.append(Variant(label, Program.load(entry / "program.json"), WeightImage.load(entry / "image")))
                continue
            one = replace(spec, models=(replace(model, variants=(name,)),))
            (variant,) = build_variants(one, progress=progress)
            out.append(variant)
            key = design_key(spec, model, name)
            if key is not None:
                _store(cache / "designs" / key, variant)
    _copy_missing(files, cache / "models", back=True)
    return out


def golden_folder(cache_dir: str | Path | None) -> Path | None:
    """Where the campaign engine keeps fault-free passes in the cache folder (``hwflow.campaign.golden_cache``)."""
    return None if cache_dir is None else Path(cache_dir) / "golden"


def _store(entry: Path, variant) -> None:
    """Write an entry in a temporary folder and rename it: a killed job leaves no half entry."""
    if (entry / "done").is_file():
        return
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
    variant.program.save(tmp / "program.json")
    variant.image.save(tmp / "image")
    (tmp / "done").write_text(json.dumps({"label": variant.label, "hwflow": hwflow.__version__}))
    if entry.exists():
        shutil.rmtree(entry)
    tmp.rename(entry)
    log.info("%s: conversion cached in %s", variant.label, entry)


def _copy_missing(files: list[Path], cache: Path, back: bool = False) -> None:
    """Restore the spec's model files from ``cache`` where the models folder lacks them, or (``back``) keep a
    copy in ``cache`` of those it lacks. Times are kept: a hardened model's sidecar compares its source's."""
    for f in files:
        src, dst = (f, cache / f.name) if back else (cache / f.name, f)
        if src.is_file() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
