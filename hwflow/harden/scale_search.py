"""Choose weight-scaling constants by accuracy under faults, on a validation split (``mode="search"``).

For each array in turn (image order), every candidate scale is tried with the other arrays at their
current choice (the rule's plan to start with), and the one with the best mean accuracy over the
configured fault rates and trials is kept. Candidates: the powers of two ``2**0 .. 2**max_fit`` (the
rule's shift is the largest) and, when asked, ``constants`` non-power-of-two values between
consecutive powers and up to the largest constant that does not saturate.

Scoring is the campaign engine's (``TrialEvaluator``) on the validation split only: the test split
is for reporting results, and choosing constants on it would report a tuned number. Faults are
sampled with seeds derived from ``config.seed`` and the array and trial, identical for every
candidate of an array (a paired comparison: the same bits flip in each candidate's memory).
Ties keep the earlier candidate, and the rule's shift comes first.

What the score emulates: each candidate image is run with the ``program`` given (normally the
unscaled model's). Fault-free that is exact; under faults it is the deployed model except that the
bits of a flipped word below the trained weight's LSB are truncated where the products enter the
trained accumulator type (the re-converted model's accumulators keep them) — a difference far below
the effect of the high bits that scaling is about. Float storage (an emulator analysis, contract 7)
is searched over ``float_steps`` powers of two from the float rule's shift down to ``2**0``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from hwflow.campaign.engine import TrialEvaluator
from hwflow.campaign.metric import data_targets, search_values
from hwflow.emulator import Program
from hwflow.errors import HardenError
from hwflow.faults import BitFlip
from hwflow.faults.target import Target
from hwflow.harden.scale import float_shift, max_fit_constant, max_fit_shift, plan_rule, selected_arrays
from hwflow.image import Scale, StoragePlan, StoredArray, WeightImage
from hwflow.image.plan import STORAGE_KINDS
from hwflow.metrics import MetricSpec

log = logging.getLogger(__name__)

SCOPES = ("array", "all")


@dataclass(frozen=True)
class ScaleSearchConfig:
    """How the search scores candidate scales."""

    storage: str = "fixed"
    """Word format of the whole weight memory: ``fixed``, ``float16`` or ``float32``."""
    rates: tuple[float, ...] = (1e-3,)
    """Bit-error rates at which each candidate is scored (the score is the mean over rates)."""
    trials: int = 20
    """Fault maps per rate and candidate."""
    seed: int = 0
    """Master seed of the fault maps (each array and trial derives its own)."""
    mode: str = "bernoulli"
    """Flip count per trial: ``bernoulli`` (each bit independently) or ``exact`` (round(rate x bits))."""
    scope: str = "array"
    """Where faults go while an array is scored: ``array`` (only its own words: isolates its effect) or
    ``all`` (the whole weight memory)."""
    constants: int = 0
    """Fixed storage: non-power-of-two candidates between consecutive powers of two (0: none)."""
    float_steps: int = 8
    """Float storage: candidate shifts, evenly spaced from the float rule's shift down to 0."""
    layers: tuple[str, ...] | None = None
    """Layers to scale (None: every layer with weights)."""
    batchnorm: bool = True
    """Also scale batch-norm scale and bias."""
    samples: int | None = None
    """Use only the first this many validation samples (None: all)."""
    metric: MetricSpec | None = None
    """The campaign's metric (``hwflow.metrics``) the candidates are scored with; None: top-1 accuracy. For a
    lower-is-better metric (MSE, MAE) the scores are its negated value, so the best is still the largest."""

    def __post_init__(self) -> None:
        rates = tuple(self.rates) if not isinstance(self.rates, (int, float)) else (self.rates,)
        if not rates or any(isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1
                            for r in rates):
            msg = f"scale search: rates must be numbers in (0, 1], got {self.rates!r}"
            raise HardenError(msg)
        object.__setattr__(self, "rates", tuple(float(r) for r in rates))
        if self.storage not in STORAGE_KINDS:
            msg = f"scale search: storage must be one of {', '.join(STORAGE_KINDS)}, got {self.storage!r}"
            raise HardenError(msg)
        for name, low in (("trials", 1), ("seed", 0), ("constants", 0), ("float_steps", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                msg = f"scale search: {name} must be an integer >= {low}, got {value!r}"
                raise HardenError(msg)
        if self.mode not in ("bernoulli", "exact"):
            msg = f"scale search: mode must be 'bernoulli' or 'exact', got {self.mode!r}"
            raise HardenError(msg)
        if self.scope not in SCOPES:
            msg = f"scale search: scope must be one of {', '.join(SCOPES)}, got {self.scope!r}"
            raise HardenError(msg)
        if self.samples is not None and (isinstance(self.samples, bool) or not isinstance(self.samples, int)
                                         or self.samples < 1):
            msg = f"scale search: samples must be a positive integer or None, got {self.samples!r}"
            raise HardenError(msg)
        if self.layers is not None:
            object.__setattr__(self, "layers", (self.layers,) if isinstance(self.layers, str) else tuple(self.layers))


@dataclass(frozen=True)
class CandidateScore:
    """One candidate scale of one array and its accuracy under faults (validation split)."""

    scale: Scale
    accuracy: float
    """Mean accuracy over rates and trials."""
    per_rate: tuple[float, ...] = field(default=())
    """Mean accuracy at each rate of the configuration."""


def candidates(array: StoredArray, constants: int = 0, storage: str = "fixed", float_steps: int = 8) -> list[Scale]:
    """Fixed point: the rule's shift first, then smaller shifts, then (if asked) constants between
    powers of two. Float: ``float_steps`` shifts from the float rule's down to 0."""
    if storage != "fixed":  # the float rule's shift first, then evenly spaced down to 0
        top = float_shift(array, storage)[0]
        steps = min(float_steps, abs(top) + 1)
        shifts = np.linspace(top, 0, steps).round().astype(int).tolist() if steps > 1 else [top]
        return [Scale(int(s)) for s in dict.fromkeys(shifts)]
    top = max_fit_shift(array)
    out = [Scale(s) for s in range(top, -1, -1)]
    if constants:
        c_max = max_fit_constant(array)
        for s in range(top + 1):
            for j in range(1, constants + 1):
                c = round(2.0 ** (s + j / (constants + 1)), 6)
                if c <= c_max:
                    out.append(Scale(0, c))
    return out


def _validation(data, y) -> tuple[np.ndarray, np.ndarray]:
    """The validation split: ``data`` a Dataset, an ``(x_val, y_val)`` pair, or ``x_val`` with ``y = y_val``."""
    if y is not None:
        return np.asarray(data), np.asarray(y)
    if isinstance(data, tuple) and len(data) == 2:
        return np.asarray(data[0]), np.asarray(data[1])
    if hasattr(data, "x_val") and hasattr(data, "y_val"):
        return np.asarray(data.x_val), np.asarray(data.y_val)
    msg = "scale search: pass a Dataset (its validation split is used), an (x_val, y_val) pair, or x_val, y_val"
    raise HardenError(msg)


def _seed(master: int, array_index: int, rate_index: int, trial: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([master, array_index, rate_index, trial]))


def score(program: Program, image: WeightImage, x: np.ndarray, y: np.ndarray, config: ScaleSearchConfig,
          target: Target, array_index: int, targets: np.ndarray | None = None) -> tuple[float, tuple[float, ...]]:
    """Mean metric (top-1 accuracy unless ``config.metric``; signed: higher is better) of ``image`` under bit
    flips in ``target`` (paired seeds per array and trial); ``targets``: a regression metric's."""
    evaluator = TrialEvaluator(program, image, x, y, metric=config.metric, targets=targets)
    per_rate = []
    for r, rate in enumerate(config.rates):
        model = BitFlip(rate, config.mode, target)
        maps = [model.sample(image, _seed(config.seed, array_index, r, t)) for t in range(config.trials)]
        values, _ = search_values(evaluator, config.metric, maps, x, y, targets)
        per_rate.append(float(np.mean(values)))
    return float(np.mean(per_rate)), tuple(per_rate)


def search_scales(program: Program, image: WeightImage, data, y=None, config: ScaleSearchConfig | None = None,
                  progress: bool = False, targets: np.ndarray | None = None,
                  ) -> tuple[StoragePlan, dict[str, list[CandidateScore]]]:
    """Search per array for the scale with the best accuracy under faults (see the module docstring).

    Validation data, either ``search_scales(program, image, dataset, config=...)`` (a Dataset: only
    ``x_val`` / ``y_val`` are read; an ``(x_val, y_val)`` pair also works) or
    ``search_scales(program, image, x_val, y_val, config)``. Returns the plan (mode ``search``; its
    details record the configuration and every score) and the scores per array key, in candidate order.
    ``targets``: a regression metric's validation targets (default: a ``.npz`` Dataset's ``targets_val``).
    """
    if isinstance(y, ScaleSearchConfig):  # search_scales(program, image, dataset, config)
        y, config = None, y
    config = config or ScaleSearchConfig()
    x, y = _validation(data, y)
    targets = targets if targets is not None else data_targets(data, "val")
    if config.samples is not None:
        x, y = x[: config.samples], y[: config.samples]
        targets = targets[: config.samples] if targets is not None else None
    if len(x) == 0 or len(x) != len(y):
        msg = f"scale search: the validation split has {len(x)} inputs and {len(y)} labels"
        raise HardenError(msg)
    plan = plan_rule(image, config.storage, config.layers, config.batchnorm)
    scales = dict(plan.scales)
    arrays = selected_arrays(image, config.layers, config.batchnorm)
    scores: dict[str, list[CandidateScore]] = {}
    for i, arr in enumerate(arrays):
        target = Target(layers=(arr.layer,), arrays=(arr.name,)) if config.scope == "array" else Target()
        index = image.arrays.index(arr)
        results = []
        for cand in candidates(arr, config.constants, config.storage, config.float_steps):
            trial_plan = StoragePlan(config.storage, {**scales, arr.key: cand}, "search")
            acc, per_rate = score(program, trial_plan.apply(image), x, y, config, target, index, targets)
            results.append(CandidateScore(cand, acc, per_rate))
        best = max(results, key=lambda c: c.accuracy)  # max keeps the first of equals: the rule's shift
        scales[arr.key] = best.scale
        scores[arr.key] = results
        msg = "scale search %d/%d %s: x%s (accuracy %.4f; rule x%s: %.4f)"
        (log.info if progress else log.debug)(msg, i + 1, len(arrays), arr.key, best.scale, best.accuracy,
                                              results[0].scale, results[0].accuracy)
    details = {
        "storage": config.storage, "rates": list(config.rates), "trials": config.trials, "seed": config.seed,
        "mode": config.mode,
        "scope": config.scope, "constants": config.constants, "samples": len(x), "split": "validation",
        **({"metric": config.metric.to_json()} if config.metric is not None and config.metric.name != "top1" else {}),
        "scores": {k: [[str(c.scale), _round(c.accuracy)] for c in v] for k, v in scores.items()},
    }
    return StoragePlan(config.storage, scales, "search", details), scores


def _round(value: float) -> float:
    return float(f"{value:.6g}") if math.isfinite(value) else value
