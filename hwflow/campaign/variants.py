"""From a campaign's model entries to what the engine runs: a Program and a WeightImage per variant.

A variant is a hardening recipe (``hwflow.harden.recipe``) applied to a model entry: zoo models
are trained on first use with the recipe's training method and cached (``models_dir``); clipping
and scaling are searched once and the hardened model cached beside it (its sidecar records the
search settings, so a changed setting hardens again). Model files are loaded with their own
hardening record. Conversion goes through hls4ml, so each variant is emulated exactly as it would
be built.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hwflow.campaign.spec import CampaignSpec, ModelSpec
from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls
from hwflow.emulator import Program
from hwflow.errors import SpecError
from hwflow.harden.pipeline import HardenConfig, Hardened, harden, load_hardened, save_hardened
from hwflow.harden.recipe import Recipe
from hwflow.image import WeightImage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    label: str  # "<model>/<variant>"
    program: Program
    image: WeightImage

    def widths(self) -> dict[str, int]:
        """Widest stored word of each layer holding weight memory, in image order."""
        out: dict[str, int] = {}
        for arr in self.image:
            out[arr.layer] = max(out.get(arr.layer, 0), arr.format.width)
        return out


def _zoo_path(spec: CampaignSpec, model: ModelSpec, training: str) -> Path:
    method = "" if training == "standard" else f"-{training}"
    return spec.resolve(spec.models_dir) / (
        f"{model.zoo}-w{model.weight_bits}i{model.weight_integer}a{model.act_bits}-s{model.train_seed}{method}.h5")


def trained_model(spec: CampaignSpec, model: ModelSpec, training: str = "standard",
                  progress: bool = False) -> tuple[Path, Hardened]:
    """The model file of an entry, trained (or reused) for zoo names with ``training``, and its record."""
    if model.zoo is not None:
        from hwflow.zoo.train import TrainConfig, load_or_train

        cfg = TrainConfig(model.zoo, dataset=None, weight_bits=model.weight_bits, act_bits=model.act_bits,
                          weight_integer=model.weight_integer, seed=model.train_seed,
                          out=_zoo_path(spec, model, training), data_root=spec.data_root, method=training)
        result = load_or_train(cfg, progress=progress)
        return result.path, Hardened(result.model, None, dict(result.metadata.get("hardening") or {}))
    path = spec.resolve(model.path)
    if not path.is_file():
        msg = f"{spec.source}: models: {model.name}: model file {path} not found"
        raise SpecError(msg)
    return path, load_hardened(path)


def load_keras_model(spec: CampaignSpec, model: ModelSpec, progress: bool = False):
    """The Keras model of an entry as trained (kept for callers that need only the baseline)."""
    return trained_model(spec, model, progress=progress)[1].model


def hardened_model(spec: CampaignSpec, model: ModelSpec, recipe: Recipe, progress: bool = False) -> Hardened:
    """The entry's model hardened per ``recipe``; searched once, then reused from ``models_dir``."""
    path, base = trained_model(spec, model, recipe.training, progress)
    if recipe.clip_mode is None and recipe.scale is None and recipe.storage == "fixed":
        return base
    from hwflow.zoo.loading import read_sidecar

    config = HardenConfig(**(spec.hardening or {}))
    tail = Recipe(clip_mode=recipe.clip_mode, scale=recipe.scale, storage=recipe.storage).name
    cached = spec.resolve(spec.models_dir) / f"{path.stem}--{tail}.h5"
    side = read_sidecar(cached) if cached.is_file() else None
    if side and side.get("hardened_from") == path.name and (side.get("hardening") or {}).get("config") == \
            config.to_json() and side.get("source_mtime") == path.stat().st_mtime:
        log.info("reusing %s (hardened with the same settings)", cached)
        return load_hardened(cached)
    from hwflow.data import load_dataset

    data = load_dataset(spec.dataset, root=spec.data_root)
    hardened = harden(base.model, recipe, data, config, progress=progress, base_record=base.record)
    save_hardened(hardened, cached, {"hardened_from": path.name, "source_mtime": path.stat().st_mtime,
                                     "variant": recipe.name})
    return hardened


def convert_hardened(hardened: Hardened, options: HlsOptions, out_dir: Path, source: dict | None = None):
    """hls4ml ModelGraph, Program and WeightImage of a (hardened) model, storage plan applied."""
    hls_model = convert(hardened.model, options, out_dir, storage=hardened.storage)
    program = program_from_hls(hls_model, source=source)
    image = image_from_hls(hls_model, storage=hardened.storage)
    return hls_model, program, image


def build_variants(spec: CampaignSpec, progress: bool = False) -> list[Variant]:
    """Every (model, variant) of the campaign, hardened, converted and read back from hls4ml."""
    variants = []
    options = HlsOptions.make(spec.io, spec.backend, spec.strategy, spec.reuse_factor)
    for model in spec.models:
        for name in model.variants:
            hardened = hardened_model(spec, model, Recipe.parse(name), progress)
            with tempfile.TemporaryDirectory(prefix="hwflow-campaign-") as tmp:
                _, program, image = convert_hardened(hardened, options, Path(tmp) / "model",
                                                     {"model": model.name, "variant": name})
            variants.append(Variant(f"{model.name}/{name}", program, image))
    return variants
