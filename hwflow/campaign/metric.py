"""The campaign's metric, bound to a variant's evaluation samples: what the engine, the runner and the
checks before a campaign call (``hwflow.metrics`` holds the metrics themselves, numpy only).

``TrialMetric`` turns output codes into the metric's value: the fault-free value once, then per trial
from the samples whose output codes changed (every other sample keeps its fault-free term, so a trial
costs what its changed samples cost, and equals the metric of the full faulty outputs exactly).
``check_metrics`` refuses a metric that does not fit the data or a model before any training or trial.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hwflow.errors import DatasetError, SpecError
from hwflow.metrics import Metric, MetricError, MetricSpec, Scorer, output_values, reference

TARGET_KEYS = {"test": "targets_test", "val": "targets_val", "train": "targets_train"}
"""The ``.npz`` keys of a regression data set's targets per split (one row of output values per sample)."""


def npz_targets(dataset: str, split: str, samples: int | None = None) -> np.ndarray | None:
    """The regression targets of ``split`` in a ``.npz`` data set (first ``samples``), None when there are none."""
    if not str(dataset).lower().endswith(".npz") or not Path(dataset).is_file():
        return None
    with np.load(dataset, allow_pickle=False) as archive:
        key = TARGET_KEYS[split]
        if key not in archive.files:
            return None
        targets = np.asarray(archive[key], dtype=np.float64)
    if not np.all(np.isfinite(targets)):
        msg = f"{dataset}: {key} holds NaN or infinite values"
        raise DatasetError(msg)
    targets = targets.reshape(len(targets), -1)
    return targets[:samples] if samples is not None else targets


def changed_rows(delta, golden: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The samples the engine's blocks ``delta`` hold (sorted) and their whole faulty output rows (codes, one
    flat row each): ``golden`` (the fault-free output codes) with each block's channels replaced."""
    if not delta:
        return np.zeros(0, dtype=np.int64), np.zeros((0, int(np.prod(np.shape(golden)[1:]))), dtype=np.int64)
    samples, parts = [], []
    for b in delta:
        idx = np.asarray(b.samples, dtype=np.int64)
        part = np.asarray(golden)[idx].astype(np.int64)
        part[..., np.asarray(b.channels, dtype=np.int64)] = b.values
        samples.append(idx)
        parts.append(part.reshape(part.shape[0], -1) if part.shape[0] else part.reshape(0, golden[0].size))
    samples_all = np.concatenate(samples)
    order = np.argsort(samples_all, kind="stable")
    return samples_all[order], np.concatenate(parts)[order]


class TrialMetric:
    """A metric on one variant's evaluation samples, scored from output codes with ``frac`` fractional bits."""

    def __init__(self, spec: MetricSpec, golden_codes: np.ndarray, frac: int, x: np.ndarray, y: np.ndarray,
                 targets: np.ndarray | None = None):
        self.spec = spec
        self.frac = int(frac)
        golden_codes = np.asarray(golden_codes, dtype=np.int64)
        self.golden_codes = golden_codes.reshape(golden_codes.shape[0], int(np.prod(golden_codes.shape[1:])))
        self.scorer = Scorer(spec.metric, reference(spec, x, y, targets), output_values(self.golden_codes, frac))

    @property
    def metric(self) -> Metric:
        return self.scorer.metric

    @property
    def name(self) -> str:
        return self.metric.name

    @property
    def golden_value(self) -> float:
        return self.scorer.golden_value

    def changed(self, samples: np.ndarray, codes: np.ndarray) -> float:
        """The value when ``samples`` (distinct indices) have output ``codes`` (one row each), the rest their
        fault-free outputs."""
        return self.scorer.value(samples, output_values(codes, self.frac))

    def of_blocks(self, delta, golden: np.ndarray, offset: int = 0) -> float:
        """The value of a trial whose output differs from ``golden`` (the fault-free output codes of samples
        ``offset..``, in the engine's layout) by ``delta`` (the engine's blocks, indices from ``offset``)."""
        samples, codes = changed_rows(delta, golden)
        return self.changed(samples + offset, codes)

    def full(self, codes: np.ndarray) -> float:
        """The value of complete output codes (the reference path: ``full_evaluate``, the board)."""
        codes = np.asarray(codes)
        return self.scorer.full(output_values(codes, self.frac))


def trial_metric(spec, label: str, program, golden_codes: np.ndarray, x: np.ndarray, y: np.ndarray) -> TrialMetric:
    """The campaign ``spec``'s metric for variant ``label`` (``<model>/<variant>``) of ``program``."""
    targets = npz_targets(spec.dataset, spec.split, spec.samples)
    return TrialMetric(spec.metric_for(label), golden_codes, program.output.result.frac, x, y, targets)


def check_metrics(spec, x: np.ndarray, y: np.ndarray, outputs: dict[str, int] | None = None) -> None:
    """Refuse, naming the field, a metric of ``spec`` that does not fit its evaluation data, or (``outputs``:
    model name -> output values per sample) a model's outputs. Runs before any training or trial."""
    targets = npz_targets(spec.dataset, spec.split, spec.samples)
    for model in spec.models:
        metric_spec = spec.metric_for(model.name)
        field = f"models: {model.name}: metric" if model.metric is not None else "metric"
        try:
            ref = reference(metric_spec, x, y, targets)
            metric = metric_spec.metric
            n_outputs = (outputs or {}).get(model.name)
            if n_outputs is None:  # what the data alone decides: labels or targets present and well formed
                n_outputs = _data_width(metric, ref)
            metric.check(n_outputs, ref)
        except MetricError as err:
            msg = f"{spec.source}: {field}: {err}"
            raise SpecError(msg) from None


def _data_width(metric: Metric, ref) -> int:
    """An output size the data itself implies (to check the data before a model is known)."""
    if metric.needs in ("targets", "both") and ref.targets is not None:
        return int(ref.targets.shape[1])
    labels = np.asarray(ref.labels)
    k = getattr(metric, "k", 1)
    return max(int(labels.max()) + 1 if labels.size else 1, k)


def search_values(evaluator, spec: MetricSpec | None, maps: list, x: np.ndarray, y: np.ndarray,
                  targets: np.ndarray | None = None) -> tuple[list[float], float]:
    """What the hardening searches maximize: per fault map, the metric's value signed so that higher is better
    (an error is negated), and the fault-free one. ``spec`` None or top-1: ``correct / samples`` as before."""
    n = evaluator.samples
    if spec is None or spec.name == "top1":
        return [o.correct / n for o in evaluator.evaluate_many(maps)], evaluator.golden_correct / n
    tm = getattr(evaluator, "metric", None)
    if tm is not None and tm.spec == spec:  # the engine scores it per trial (changed samples only)
        sign = 1.0 if tm.metric.higher_is_better else -1.0
        return [sign * o.metric for o in evaluator.evaluate_many(maps)], sign * tm.golden_value
    tm = TrialMetric(spec, evaluator.golden, evaluator.program.output.result.frac, x, y, targets)
    sign = 1.0 if tm.metric.higher_is_better else -1.0
    return [sign * tm.full(evaluator.output_codes(m)) for m in maps], sign * tm.golden_value


def data_targets(data, split: str) -> np.ndarray | None:
    """A data set's regression targets of ``split`` (a ``.npz`` data set's ``targets_<split>``), else None."""
    name = getattr(data, "name", None)
    return npz_targets(name, split) if isinstance(name, str) else None
