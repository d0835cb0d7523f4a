"""Apply a hardening recipe to a trained model, save it with its record, and read it back.

A hardened model is an ordinary QKeras ``.h5`` (FT-ClipAct layers are Keras layers in it) plus its
JSON sidecar, whose ``"hardening"`` section records what was done: the methods in order, the clip
thresholds, the storage plan of weight scaling (scaling is a property of how the weights are
*stored*, applied at conversion, so it is not in the Keras weights), and the search settings. Every
later step — convert, emulate, verify, campaign, build — reads the model through
:func:`load_hardened`, so a hardened model goes wherever a plain one goes.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hwflow.data import Dataset
from hwflow.errors import HardenError, ModelError
from hwflow.harden.recipe import Recipe
from hwflow.image.plan import StoragePlan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HardenConfig:
    """Settings of the searches (both score candidates under faults on the validation split)."""

    clip_rates: tuple[float, ...] = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)
    """FT-ClipAct: bit-error rates whose accuracy curve's area scores a threshold."""
    clip_trials: int = 8
    """FT-ClipAct: seeded trials per rate per candidate."""
    clip_rounds: int = 4
    """FT-ClipAct: rounds of the interval search (each shrinks the interval around the best)."""
    scale_rates: tuple[float, ...] = (1e-4, 1e-3)
    """Scale search: bit-error rates a candidate constant is scored at."""
    scale_trials: int = 8
    """Scale search: seeded trials per rate per candidate."""
    val_samples: int | None = 2000
    """Validation samples the searches score on (None: the whole validation split)."""
    io: str = "parallel"
    """hls4ml io type of the design the searches emulate."""
    seed: int = 0
    """Seed of every search's fault maps."""

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class Hardened:
    """A model with what was done to it."""

    model: Any
    """The Keras model (with ClipActivation layers when clipped)."""
    storage: StoragePlan | None = None
    """How its weights are stored (format, per-array scale); None: the trained fixed-point types."""
    record: dict = field(default_factory=dict)
    """The sidecar's ``"hardening"`` section."""


def validation(data: Dataset, config: HardenConfig):
    """The validation split the searches use (never the test split)."""
    n = config.val_samples
    x, y = data.x_val, data.y_val
    return (x[:n], y[:n]) if n is not None else (x, y)


def harden(model, recipe: Recipe, data: Dataset, config: HardenConfig | None = None, *,
           progress: bool = False, base_record: dict | None = None, options=None, metric=None) -> Hardened:
    """Clip and/or scale ``model`` (already trained as ``recipe.training`` asks) per ``recipe``.

    ``base_record``: the model's existing ``"hardening"`` record (e.g. SAQ training), extended here.
    ``options``: the HlsOptions of the design the model will be built as (a user's own hls4ml
    configuration included); the searches score candidates on exactly that design's arithmetic.
    Default: hwflow's own configuration with ``config.io``.
    ``metric``: the campaign's ``hwflow.metrics.MetricSpec`` the searches score with (None: top-1 accuracy).
    """
    config = config or HardenConfig()
    if options is None:
        from hwflow.convert import HlsOptions

        options = HlsOptions.make(config.io)
    record: dict[str, Any] = {"methods": list((base_record or {}).get("methods", []))}
    record.update({k: v for k, v in (base_record or {}).items() if k != "methods"})
    if recipe.training != "standard" and "training" not in record:
        record["training"] = {"method": recipe.training}
    if recipe.clip_mode:
        model, record["clipact"] = _clip(model, recipe.clip_mode, data, config, options, progress, metric)
        record["methods"].append("clipact")
    storage = None
    if recipe.scale or recipe.storage != "fixed":
        storage, record["scale"] = _storage(model, recipe, data, config, options, progress, metric)
        if recipe.scale:
            record["methods"].append("scale")
    record["config"] = config.to_json()
    if metric is not None and metric.name != "top1":  # recorded: a cached model searched on another is not reused
        record["metric"] = metric.to_json()
    if options.user_config is not None:
        record["hls_config"] = options.user_config.record()
    return Hardened(model, storage, record)


def _clip(model, mode: str, data: Dataset, config: HardenConfig, options, progress: bool, metric=None):
    from hwflow.harden.clipact import CLIP_RULES, apply_clipact, describe_thresholds
    from hwflow.harden.thresholds import ClipSearchConfig, search_thresholds

    search = ClipSearchConfig(mode=mode, rates=config.clip_rates, trials=config.clip_trials,
                              rounds=config.clip_rounds, val_samples=config.val_samples, seed=config.seed,
                              options=options, metric=metric)
    result = search_thresholds(model, data, search, progress=progress)
    clipped = result.model if result.model is not None else apply_clipact(model, result.thresholds, mode)
    log.info("FT-ClipAct (%s: %s): %s (score %.4f, unclipped %.4f)", mode, CLIP_RULES[mode],
             describe_thresholds(model, result.thresholds), result.score, result.baseline_score)
    entry = result.sidecar_entry()
    entry.update(hardware_thresholds=dict(result.hardware_thresholds), score=result.score,
                 baseline_score=result.baseline_score, clean_accuracy=result.clean_accuracy,
                 baseline_clean_accuracy=result.baseline_clean_accuracy, seconds=round(result.seconds, 1))
    return clipped, entry


def _storage(model, recipe: Recipe, data: Dataset, config: HardenConfig, options, progress: bool, metric=None):
    from hwflow.convert import convert, image_from_hls, program_from_hls
    from hwflow.harden.scale import plan_rule

    with tempfile.TemporaryDirectory(prefix="hwflow-harden-") as tmp:
        hls_model = convert(model, options, Path(tmp) / "plain")
        program, image = program_from_hls(hls_model), image_from_hls(hls_model)
    if recipe.scale == "rule":
        plan = plan_rule(image, recipe.storage)
    elif recipe.scale == "search":
        from hwflow.campaign.metric import data_targets
        from hwflow.harden.scale_search import ScaleSearchConfig, search_scales

        x, y = validation(data, config)
        targets = data_targets(data, "val")
        search = ScaleSearchConfig(storage=recipe.storage, rates=config.scale_rates, trials=config.scale_trials,
                                   seed=config.seed, metric=metric)
        plan, _ = search_scales(program, image, x, y, search, progress=progress,
                                targets=targets[: len(x)] if targets is not None else None)
    else:
        plan = StoragePlan(recipe.storage)
    return plan, plan.to_json()


def save_hardened(hardened: Hardened, path: str | Path, metadata: dict | None = None) -> Path:
    """Write the model (``.h5``) and its sidecar with the ``"hardening"`` record; returns the path."""
    from hwflow.quiet import saving_h5
    from hwflow.zoo.loading import write_sidecar

    path = Path(path)
    if path.suffix.lower() != ".h5":
        msg = f"{path}: a hardened model is saved as .h5 (give --out hardened.h5)"
        raise HardenError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with saving_h5():
            hardened.model.save(path, save_format="h5", include_optimizer=False)
    except OSError as err:
        msg = f"cannot save the hardened model to {path}: {err}"
        raise HardenError(msg) from err
    side = dict(metadata or {})
    side["hardening"] = hardened.record
    write_sidecar(path, side)
    return path


def load_hardened(path: str | Path) -> Hardened:
    """A model file with its hardening record (an unhardened model gives an empty record)."""
    from hwflow.zoo.loading import check_supported, load_model, read_sidecar

    model = load_model(path)
    check_supported(model)
    side = read_sidecar(path) or {}
    record = side.get("hardening") or {}
    if not isinstance(record, dict):
        msg = f"{path}: the sidecar's 'hardening' section is not a mapping; remove it or re-run hwflow harden"
        raise ModelError(msg)
    storage = None
    if record.get("scale"):
        try:
            storage = StoragePlan.from_json(record["scale"])
        except (KeyError, TypeError, ValueError) as err:
            msg = f"{path}: the sidecar's storage plan is malformed ({err}); re-run hwflow harden"
            raise ModelError(msg) from None
    return Hardened(model, storage, record)
