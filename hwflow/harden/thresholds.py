"""FT-ClipAct's thresholds: profile each layer, then refine it by a fault-aware interval search.

1. **Profile** (``profile_thresholds``): the largest activation of each clippable layer on a
   seeded subset of the *training* split; the search interval of a layer starts as ``[0, max]``.
2. **Search**, one layer at a time in network order (the others held at their current best):
   ``candidates`` equally spaced thresholds in the interval are each scored, the best is kept, and
   the interval shrinks to one candidate spacing on either side of it; the layer stops when a
   round after the first gains less than ``tolerance`` over the best so far, or after ``rounds``
   rounds.
3. **Score**: the normalized area under accuracy-vs-fault-rate on the *validation* split (never
   the test split): the mean accuracy over ``trials`` fault maps at each rate, integrated over
   ``log10(rate)`` with the trapezoid rule and divided by the log-span, so a score is an accuracy.

Why this is fast and exact: the threshold changes neither a type nor a stored word, so the clipped
model is converted by hls4ml once, and each candidate is that Program with other threshold
attributes (``hwflow.emulator.clip`` quantizes them exactly as the hardware does). Every candidate
is scored on the *same* fault maps (sampled once per rate and trial from ``seed``: a paired
comparison), with the campaign engine's ``TrialEvaluator``; candidates whose thresholds quantize
to the same hardware words share one score.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwflow.campaign.engine import TrialEvaluator
from hwflow.campaign.metric import data_targets, search_values
from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls
from hwflow.emulator import Program
from hwflow.emulator.clip import CLIP_KINDS, check_mode, hardware_thresholds, threshold_code
from hwflow.errors import FaultSpecError, HardenError
from hwflow.faults import FaultMap, fault_model_from_spec
from hwflow.harden.clipact import (
    DEFAULT_MODE,
    apply_clipact,
    clip_layers,
    describe_thresholds,
    profile_thresholds,
    sidecar_entry,
    unclippable,
)
from hwflow.image import WeightImage
from hwflow.metrics import MetricSpec

if TYPE_CHECKING:
    import tensorflow as tf

    from hwflow.data import Dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipSearchConfig:
    """How FT-ClipAct's thresholds are searched."""

    mode: str = DEFAULT_MODE
    """Clip mode: ``zero`` (values above the threshold become 0, the paper's) or ``saturate``."""
    fault: Mapping = field(default_factory=lambda: {"model": "bitflip"})
    """Fault model spec without the rate, as in a campaign (``hwflow.faults.fault_model_from_spec``)."""
    rates: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3)
    """Fault rates of the accuracy curve (log-spaced; > 0, at least one)."""
    trials: int = 20
    """Fault maps per rate (the same maps for every candidate)."""
    candidates: int = 4
    """Equally spaced thresholds per round, interval ends included (>= 3)."""
    rounds: int = 5
    """Largest number of rounds per layer."""
    tolerance: float = 1e-3
    """A layer's search stops when a round improves the best score by less than this (accuracy units)."""
    seed: int = 0
    """Seed of the profiling subset and of every fault map."""
    profile_samples: int = 1000
    """Training samples the profile runs on (a seeded subset; all when the split is smaller)."""
    val_samples: int | None = None
    """Validation samples the score runs on (the first ones); None: the whole validation split."""
    layers: tuple[str, ...] | None = None
    """Layers to clip; None: every clippable layer (quantized ReLUs with or without a negative slope, LeakyReLU, ELU,
    PReLU, existing ClipActivations)."""
    options: HlsOptions = field(default_factory=HlsOptions)
    """hls4ml options of the conversion the scores are computed on (use the deployment's)."""
    metric: MetricSpec | None = None
    """The campaign's metric (``hwflow.metrics``) the curve is made of; None: top-1 accuracy. For a
    lower-is-better metric (MSE, MAE) scores and the fault-free value are its negated value, so the best
    score is still the largest."""

    def __post_init__(self) -> None:
        check_mode(self.mode, "ClipSearchConfig.mode", HardenError)
        rates = tuple(self.rates) if isinstance(self.rates, (list, tuple)) else ()
        if not rates or any(isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1
                            for r in rates):
            msg = f"ClipSearchConfig.rates must be fault rates in (0, 1], at least one; got {self.rates!r}"
            raise HardenError(msg)
        if len(set(rates)) != len(rates):
            msg = f"ClipSearchConfig.rates has a repeated rate: {self.rates!r}"
            raise HardenError(msg)
        object.__setattr__(self, "rates", tuple(sorted(float(r) for r in rates)))
        for name, low in (("trials", 1), ("candidates", 3), ("rounds", 1), ("profile_samples", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                msg = f"ClipSearchConfig.{name} must be an integer >= {low}, got {value!r}"
                raise HardenError(msg)
        if self.val_samples is not None and (isinstance(self.val_samples, bool) or
                                             not isinstance(self.val_samples, (int, np.integer)) or
                                             self.val_samples < 1):
            msg = f"ClipSearchConfig.val_samples must be None or an integer >= 1, got {self.val_samples!r}"
            raise HardenError(msg)
        if not (isinstance(self.tolerance, (int, float)) and math.isfinite(self.tolerance) and self.tolerance >= 0):
            msg = f"ClipSearchConfig.tolerance must be a number >= 0, got {self.tolerance!r}"
            raise HardenError(msg)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            msg = f"ClipSearchConfig.seed must be a non-negative integer, got {self.seed!r}"
            raise HardenError(msg)
        try:
            fault_model_from_spec(self.fault, self.rates[0], "ClipSearchConfig.fault")
        except FaultSpecError as err:
            raise HardenError(str(err)) from None


@dataclass(frozen=True)
class SearchRound:
    """One round of one layer's search."""

    layer: str
    round: int
    candidates: tuple[float, ...]
    """Thresholds tried (as requested; the hardware compares their rounded-down values)."""
    scores: tuple[float, ...]
    """Score of each candidate (normalized area under accuracy vs log rate, validation split)."""
    best: float
    """The layer's best threshold after this round."""
    best_score: float


@dataclass
class ClipSearchResult:
    """What the search found, and how it got there."""

    mode: str
    profile: dict[str, float]
    """Largest activation of each layer on the training subset (the initial interval ends)."""
    thresholds: dict[str, float]
    """Chosen threshold per layer, as requested (what the ClipActivation layers hold)."""
    hardware_thresholds: dict[str, float]
    """The values the hardware compares with: each threshold rounded down in its layer's input type."""
    score: float
    """Score of the chosen thresholds."""
    initial_score: float
    """Score with every threshold at its profiled maximum (the search's starting point)."""
    baseline_score: float
    """Score of the model as given (unclipped, for a plain model) on the same fault maps."""
    clean_accuracy: float
    """Fault-free validation accuracy of the chosen thresholds."""
    baseline_clean_accuracy: float
    """Fault-free validation accuracy of the model as given."""
    rounds: list[SearchRound]
    evaluations: int
    """Distinct threshold settings scored (each on rates x trials fault maps)."""
    seconds: float
    model: Any = None
    """The clipped Keras model (``apply_clipact`` with the chosen thresholds)."""

    def sidecar_entry(self) -> dict:
        """The ``hardening.clipact`` value of the hardened model's sidecar."""
        return sidecar_entry(self.mode, self.thresholds)

    def to_json(self) -> dict:
        """Everything but the Keras model, as plain JSON values."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("model", "rounds")}
        out["rounds"] = [r.__dict__ for r in self.rounds]
        return out


def with_thresholds(program: Program, thresholds: Mapping[str, float], mode: str) -> Program:
    """``program`` with other thresholds (and mode) on its clipped activations; nothing else changes."""
    layers = tuple(
        replace(layer, attrs={**layer.attrs, "threshold": float(thresholds[layer.name]), "mode": mode})
        if layer.kind in CLIP_KINDS and layer.name in thresholds else layer
        for layer in program.layers
    )
    return replace(program, layers=layers)


def auc(rates: tuple[float, ...], accuracies: np.ndarray) -> float:
    """Normalized area under accuracy vs ``log10(rate)`` (the mean accuracy for a single rate)."""
    acc = np.asarray(accuracies, dtype=np.float64)
    if len(rates) == 1:
        return float(acc[0])
    logs = np.log10(np.asarray(rates, dtype=np.float64))
    area = float(np.sum((acc[1:] + acc[:-1]) * np.diff(logs)) / 2)
    return area / float(logs[-1] - logs[0])


def sample_faultmaps(config: ClipSearchConfig, image: WeightImage) -> list[list[FaultMap]]:
    """``trials`` fault maps per rate, each from its own seed (``SeedSequence(seed, (rate, trial))``)."""
    maps = []
    for r, rate in enumerate(config.rates):
        model = fault_model_from_spec(config.fault, rate, "ClipSearchConfig.fault")
        maps.append([model.sample(image, np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(r, t))))
                     for t in range(config.trials)])
    return maps


class _Scorer:
    """Scores threshold settings of one converted program on fixed fault maps (memoized by hardware words)."""

    def __init__(self, program: Program, image: WeightImage, x: np.ndarray, y: np.ndarray,
                 config: ClipSearchConfig, maps: list[list[FaultMap]], targets: np.ndarray | None = None):
        self.program, self.image, self.x, self.y, self.targets = program, image, x, y, targets
        self.config, self.maps = config, maps
        self.types = {layer.name: program.layer(layer.inputs[0]).result
                      for layer in program.layers if layer.kind in CLIP_KINDS}
        self.memo: dict[tuple, tuple[float, float]] = {}

    def key(self, thresholds: Mapping[str, float]) -> tuple:
        return tuple((name, threshold_code(thresholds[name], t)) for name, t in sorted(self.types.items()))

    def __call__(self, thresholds: Mapping[str, float]) -> tuple[float, float]:
        """(score, fault-free accuracy)."""
        key = self.key(thresholds)
        if key not in self.memo:
            program = with_thresholds(self.program, thresholds, self.config.mode)
            self.memo[key] = score_program(program, self.image, self.x, self.y, self.config.rates, self.maps,
                                           self.config.metric, self.targets)
        return self.memo[key]


def score_program(program: Program, image: WeightImage, x: np.ndarray, y: np.ndarray,
                  rates: tuple[float, ...], maps: list[list[FaultMap]], metric: MetricSpec | None = None,
                  targets: np.ndarray | None = None) -> tuple[float, float]:
    """(normalized AUC over ``rates``, fault-free value) of ``program`` on ``maps`` (per rate), in the units of
    ``metric`` (None: top-1 accuracy; a lower-is-better metric negated)."""
    evaluator = TrialEvaluator(program, image, x, y, metric=metric, targets=targets)
    clean = 0.0
    acc = []
    for row in maps:
        values, clean = search_values(evaluator, metric, row, x, y, targets)
        acc.append(np.mean(values))
    if not maps:
        _, clean = search_values(evaluator, metric, [], x, y, targets)
    return auc(rates, np.array(acc)), clean


def _convert(model: tf.keras.Model, options: HlsOptions, label: str) -> tuple[Program, WeightImage]:
    with tempfile.TemporaryDirectory(prefix=f"hwflow-clipact-{label}-") as tmp:
        hls_model = convert(model, options, Path(tmp) / label)
        return program_from_hls(hls_model, source={"model": model.name}), image_from_hls(hls_model)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="clipact search", unit="setting", disable=not enabled, leave=False)


def search_thresholds(model: tf.keras.Model, dataset: Dataset, config: ClipSearchConfig | None = None,
                      progress: bool = False) -> ClipSearchResult:
    """Profile and search FT-ClipAct thresholds for ``model`` on ``dataset`` (train: profile; val: score)."""
    config = config or ClipSearchConfig()
    start = time.perf_counter()
    available = clip_layers(model)
    layers = list(config.layers) if config.layers is not None else list(available)
    unknown = [n for n in layers if n not in available]
    if unknown or not layers:
        msg = (f"cannot clip {', '.join(unknown) or 'no layers'} in {model.name}; "
               f"clippable layers: {', '.join(available) or 'none'}{unclippable(model, unknown)}")
        raise HardenError(msg)
    if len(dataset.x_val) == 0:
        msg = f"data set {dataset.name} has an empty validation split: the search scores on it"
        raise HardenError(msg)

    rng = np.random.default_rng(config.seed)
    n_train = len(dataset.x_train)
    pick = np.sort(rng.choice(n_train, size=min(config.profile_samples, n_train), replace=False))
    profile = profile_thresholds(model, dataset.x_train[pick], layers)
    log.info("clipact profile (largest ReLU input on %d training samples): %s", len(pick),
             describe_thresholds(model, profile))

    program, image = _convert(apply_clipact(model, profile, config.mode), config.options, "clipped")
    base_program, base_image = _convert(model, config.options, "baseline")
    count = config.val_samples or len(dataset.x_val)
    x_val, y_val = dataset.x_val[:count], dataset.y_val[:count]
    targets = data_targets(dataset, "val")
    targets = targets[:count] if targets is not None else None
    maps = sample_faultmaps(config, image)
    scorer = _Scorer(program, image, x_val, y_val, config, maps, targets)
    baseline_score, baseline_clean = score_program(base_program, base_image, x_val, y_val, config.rates, maps,
                                                   config.metric, targets)

    current = dict(profile)
    initial_score, _ = scorer(current)
    best_score = initial_score
    rounds: list[SearchRound] = []
    bar = _progress(len(layers) * config.rounds * config.candidates, progress)
    try:
        for name in layers:
            lo, hi = 0.0, profile[name]
            for r in range(config.rounds):
                cands = [float(c) for c in np.linspace(lo, hi, config.candidates)]
                scores = []
                for c in cands:
                    scores.append(scorer({**current, name: c})[0])
                    bar.update(1)
                top = max(scores)
                i = max(k for k, s in enumerate(scores) if s == top)  # ties: the largest threshold
                gain = top - best_score
                if top >= best_score:
                    current[name], best_score = cands[i], top
                rounds.append(SearchRound(name, r, tuple(cands), tuple(scores), current[name], best_score))
                log.info("clipact %s round %d: best threshold on its input %.4g (score %.4f, gain %+.4f)", name,
                         r, current[name], best_score, gain)
                step = (hi - lo) / (config.candidates - 1)
                lo, hi = max(lo, cands[i] - step), min(hi, cands[i] + step)
                if (r > 0 and gain < config.tolerance) or step == 0:  # round 0 only sets the interval
                    break
    finally:
        bar.close()

    score, clean = scorer(current)
    clipped = apply_clipact(model, current, config.mode)
    result = ClipSearchResult(
        mode=config.mode, profile=profile, thresholds=current,
        hardware_thresholds=hardware_thresholds(with_thresholds(program, current, config.mode)),
        score=score, initial_score=initial_score, baseline_score=baseline_score, clean_accuracy=clean,
        baseline_clean_accuracy=baseline_clean, rounds=rounds, evaluations=len(scorer.memo),
        seconds=time.perf_counter() - start, model=clipped,
    )
    log.info("clipact search: score %.4f (initial %.4f, unclipped %.4f), %d settings in %.1f s", score,
             initial_score, baseline_score, result.evaluations, result.seconds)
    return result
