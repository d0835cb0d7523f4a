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
import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from hwflow.campaign.spec import CampaignSpec, ModelSpec
from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls
from hwflow.emulator import Program
from hwflow.errors import HardenError, SpecError
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


def hardened_model(spec: CampaignSpec, model: ModelSpec, recipe: Recipe, progress: bool = False,
                   options: HlsOptions | None = None) -> Hardened:
    """The entry's model hardened per ``recipe``; searched once, then reused from ``models_dir``.

    ``options``: the design the searches score on (the model's own hls4ml configuration, when it has
    one); a cached result is reused only when it was searched on the same configuration."""
    path, base = trained_model(spec, model, recipe.training, progress)
    if recipe.clip_mode is None and recipe.scale is None and recipe.storage == "fixed":
        return base
    from hwflow.zoo.loading import read_sidecar

    config = HardenConfig(**(spec.hardening or {}))
    tail = Recipe(clip_mode=recipe.clip_mode, scale=recipe.scale, storage=recipe.storage).name
    cached = spec.resolve(spec.models_dir) / f"{path.stem}--{tail}.h5"
    user = options.user_config.record() if options is not None and options.user_config is not None else None
    metric = spec.metric_for(model.name)
    metric_record = metric.to_json() if metric.name != "top1" else None  # the searches score with it
    side = read_sidecar(cached) if cached.is_file() else None
    if side and side.get("hardened_from") == path.name and (side.get("hardening") or {}).get("config") == \
            config.to_json() and side.get("source_mtime") == path.stat().st_mtime and \
            (side.get("hardening") or {}).get("hls_config") == user and \
            (side.get("hardening") or {}).get("metric") == metric_record:
        log.info("reusing %s (hardened with the same settings)", cached)
        return load_hardened(cached)
    from hwflow.data import load_dataset

    data = load_dataset(spec.dataset, root=spec.data_root)
    hardened = harden(base.model, recipe, data, config, progress=progress, base_record=base.record,
                      options=options, metric=metric)
    save_hardened(hardened, cached, {"hardened_from": path.name, "source_mtime": path.stat().st_mtime,
                                     "variant": recipe.name})
    return hardened


def convert_hardened(hardened: Hardened, options: HlsOptions, out_dir: Path, source: dict | None = None):
    """hls4ml ModelGraph, Program and WeightImage of a (hardened) model, storage plan applied."""
    hls_model = convert(hardened.model, options, out_dir, storage=hardened.storage)
    program = program_from_hls(hls_model, source=source)
    image = image_from_hls(hls_model, storage=hardened.storage)
    return hls_model, program, image


def check_data(spec: CampaignSpec) -> None:
    """Refuse a data set that does not fit a model of the campaign, before any training, search or trial
    (a campaign that failed on its data used to leave a registered campaign behind)."""
    from hwflow.data import load_dataset
    from hwflow.data.fit import check_fits
    from hwflow.errors import DatasetError
    from hwflow.zoo.loading import load_model
    from hwflow.zoo.models import ZOO

    data = load_dataset(spec.dataset, root=spec.data_root)
    outputs: dict[str, int] = {}
    for model in spec.models:
        label = f"{spec.source}: models: {model.name}"
        if model.zoo is not None:
            expected = tuple(ZOO[model.zoo].input_shape)
            if data.input_shape != expected:
                msg = (f"{label}: zoo model {model.zoo} takes inputs of shape {expected}, but data set {data.name} "
                       f"has samples of shape {data.input_shape}: use the zoo model's data set "
                       f"({ZOO[model.zoo].dataset}) or a zoo model for this one")
                raise DatasetError(msg)
            continue
        path = spec.resolve(model.path)
        if not path.is_file():
            msg = f"{label}: model file {path} not found"
            raise SpecError(msg)
        keras_model = load_model(path)
        check_fits(keras_model, data, f"{label} ({path})")
        if not isinstance(keras_model.output_shape, list):
            outputs[model.name] = int(math.prod(keras_model.output_shape[1:]))
    from hwflow.campaign.metric import check_metrics

    x, y = (data.x_test, data.y_test) if spec.split == "test" else (data.x_val, data.y_val)
    check_metrics(spec, x[: spec.samples], y[: spec.samples], outputs)  # the metric fits the data and models


def build_variants(spec: CampaignSpec, progress: bool = False) -> list[Variant]:
    """Every (model, variant) of the campaign, hardened, converted and read back from hls4ml."""
    check_data(spec)
    variants = []
    for model in spec.models:
        options = model_options(spec, model)
        for name in model.variants:
            hardened = hardened_model(spec, model, Recipe.parse(name), progress,
                                      options if model.hls_config is not None else None)
            with tempfile.TemporaryDirectory(prefix="hwflow-campaign-") as tmp:
                try:
                    hls_model, program, image = convert_hardened(hardened, options, Path(tmp) / "model",
                                                                 {"model": model.name, "variant": name})
                except HardenError as err:
                    if model.hls_config is None:
                        raise
                    msg = (f"{spec.source}: models: {model.name}/{name}: {err} (the design of {model.hls_config}): "
                           "scale with a configuration that keeps the weight, bias and batch-norm types")
                    raise HardenError(msg) from None
            if hls_model.hwflow_config is not None:
                log.info("%s/%s: %s", model.name, name, hls_model.hwflow_config.summary())
            variants.append(Variant(f"{model.name}/{name}", program, image))
    return variants


def model_options(spec: CampaignSpec, model: ModelSpec) -> HlsOptions:
    """The HLS options of a model's design: the spec's, or the model's own hls4ml configuration.

    With ``hls_config``, the spec's io, backend, strategy and reuse_factor apply where the file leaves
    them open; a spec value other than the default that the file contradicts is refused.
    """
    if model.hls_config is None:
        return HlsOptions.make(spec.io, spec.backend, spec.strategy, spec.reuse_factor, keep_softmax=model.keep_softmax)
    from hwflow.campaign.spec import HLS_DEFAULTS
    from hwflow.convert.hls_config import load_hls_config, resolve_options

    user = load_hls_config(spec.resolve(model.hls_config))
    asked = {"io": spec.io if spec.io != "parallel" else None}
    for key, default in HLS_DEFAULTS.items():
        value = getattr(spec, key)
        asked[key] = value if value != default else None
    options = resolve_options(user, **asked, label=lambda key: f"{spec.source}: {key}:")
    return replace(options, keep_softmax=model.keep_softmax) if model.keep_softmax else options


def variant_from_hls_model(graph, label: str, storage=None) -> Variant:
    """A campaign variant from an hls4ml ModelGraph the user configured and converted
    (``run_campaign(spec, db, variants=[...])``); ``storage``: a hardened model's StoragePlan."""
    from hwflow.convert import from_hls_model

    design = from_hls_model(graph)
    label = label if "/" in label else f"{label}/baseline"
    model, variant = label.split("/", 1)
    with tempfile.TemporaryDirectory(prefix="hwflow-campaign-") as tmp:
        _, program, image = convert_hardened(Hardened(design.model, storage, {}), design.options, Path(tmp) / "model",
                                             {"model": model, "variant": variant})
    return Variant(label, program, image)


def check_build_config(spec: CampaignSpec, label: str, program_source: dict, hls_config: str | None = None) -> None:
    """Refuse a build whose hls4ml configuration is not the one the campaign emulated for ``label``.

    The build's Program records the configuration's digest (``hwflow.convert.extract``); a campaign
    model without ``hls_config`` emulates hwflow's own configuration, recorded as none. ``hls_config``:
    a file the user names as the build's (``hwflow deploy --hls-config``), checked too.
    """
    from hwflow.convert.hls_config import load_hls_config
    from hwflow.errors import DeployError

    name = label.split("/", 1)[0]
    model = next((m for m in spec.models if m.name == name), None)
    if model is None:
        return
    built = program_source.get("hls_config")
    built_name = program_source.get("hls_config_name", "?")
    expected = load_hls_config(spec.resolve(model.hls_config)) if model.hls_config else None
    wanted = [(f"campaign {spec.name}'s hls_config", expected)]
    if hls_config is not None:
        wanted.append(("--hls-config", load_hls_config(hls_config)))
    for what, user in wanted:
        if (user.digest if user else None) != built:
            theirs = user.label if user else "none (hwflow's own configuration)"
            mine = f"{built_name} ({built})" if built else "none (hwflow's own configuration)"
            msg = (f"the build was made with hls4ml configuration {mine}, but {what} is {theirs}: another "
                   "configuration is another design (other types, other weight order); build again with the "
                   "campaign's configuration (hwflow build --hls-config), or campaign with the build's")
            raise DeployError(msg)


def check_build_dir(build_dir, spec_path, variant: str | None = None,
                    hls_config: str | None = None) -> tuple[bool, str | None]:
    """``check_build_config`` for a build folder and a campaign spec file (``hwflow deploy``).

    Returns whether the campaign's model has its own configuration, and then whether the build is the
    design the campaign emulated: None when it is, else a note saying how they differ. (For such a
    model the spec's io, backend and strategy are not the emulated design: the file decides them.)
    """
    import json

    from hwflow_host.manifest import load_manifest

    from hwflow.campaign.spec import load_spec
    from hwflow.deploy.bundle import choose_variant

    manifest_path = Path(build_dir) / "manifest.json"
    if not manifest_path.is_file():
        return False, None  # hwflow.deploy.pack says what is missing
    manifest = load_manifest(manifest_path)
    program = Path(build_dir) / manifest.program
    if not program.is_file():
        return False, None
    spec = load_spec(spec_path)
    label = choose_variant(spec, manifest, variant)
    source = json.loads(program.read_text()).get("source", {})
    check_build_config(spec, label, source, hls_config)
    model = next(m for m in spec.models if m.name == label.split("/", 1)[0])
    if model.hls_config is None:
        return False, None
    options = model_options(spec, model)
    built = (manifest.io_type, source.get("backend", "Vitis"), source.get("strategy", "Latency"))
    emulated = (options.io_type.value, options.backend.value, options.strategy.value)
    if built == emulated:
        return True, None
    return True, (f"this build is {'/'.join(built)}, campaign {spec.name} emulates {model.name} as "
                  f"{'/'.join(emulated)} (its hls_config and the spec): build with the same --io/--backend/--strategy, "
                  "or compare the board with the bundle's own emulator run")
