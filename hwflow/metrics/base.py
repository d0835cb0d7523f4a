"""What every metric shares: the reference a trial is scored against, the metric interface, and the
incremental scorer the campaign engine uses.

numpy and the standard library only: the board's host computes the same metric from the board's
outputs with this very code (``hwflow deploy`` vendors the package into the bundle).

Why per-sample terms: a fault changes the outputs of a few samples; every other sample keeps its
fault-free term. A metric is a per-sample term (a correct prediction, a squared error, a
reconstruction error) and a reduction over all of them (a mean, a ROC AUC). Terms are computed row
by row with elementwise operations only (no reductions along a row, whose rounding could depend on
how many rows are in the array), so the term of a sample is the same number whether it is computed
for the whole data set or for the few samples a fault changed, and the incremental value equals the
full computation exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwflow.errors import HwflowError

TARGETS = ("data", "input")
"""Where a regression metric's targets come from: the data set's targets, or the input itself (autoencoders)."""


class MetricError(HwflowError):
    """A metric is unknown, or does not fit the model or the data it is asked to score."""


@dataclass(frozen=True)
class Reference:
    """What a trial's outputs are scored against, one entry per evaluation sample.

    ``labels``: integer class labels (top-k) or 0 normal / 1 anomalous (AUC), ``(N,)``.
    ``targets``: the values the outputs should have (MSE/MAE against data or input; the input an
    autoencoder reconstructs for AUC), ``(N, F)`` float64, or None when the metric needs none.
    """

    labels: np.ndarray | None = None
    targets: np.ndarray | None = None

    def take(self, samples: np.ndarray) -> Reference:
        """The reference of ``samples`` only (indices into the evaluation samples)."""
        return Reference(None if self.labels is None else self.labels[samples],
                         None if self.targets is None else self.targets[samples])

    @property
    def samples(self) -> int:
        return len(self.labels) if self.labels is not None else len(self.targets)


class Metric:
    """A task's metric. Subclasses set ``name``, ``higher_is_better``, ``unit`` and implement ``terms``;
    ``reduce`` defaults to the mean of the terms over the samples."""

    name: str = ""
    """The name recorded with every trial row (``top1``, ``top5``, ``mse``, ``mae``, ``auc``)."""
    higher_is_better: bool = True
    """Direction: True for accuracies and AUC, False for errors. A "gain" is a move in this direction."""
    unit: str = ""
    """What the value is, for axes and table headers (``top-1 accuracy``, ``MSE``, ``ROC AUC``)."""
    needs: str = "labels"
    """What the reference must hold: ``labels``, ``targets`` or ``both``."""
    lower: float = 0.0
    """The smallest value the metric takes (intervals are clipped to [lower, upper])."""
    upper: float = 1.0
    """The largest value (``inf`` for errors)."""

    @property
    def direction(self) -> str:
        return "higher" if self.higher_is_better else "lower"

    def terms(self, outputs: np.ndarray, ref: Reference) -> np.ndarray:
        """Per-sample terms (float64, ``(N,)``) of ``outputs`` (``(N, F)`` output values)."""
        raise NotImplementedError

    def reduce(self, terms: np.ndarray, ref: Reference) -> float:
        """The metric's value from the terms of every evaluation sample."""
        return float(np.sum(terms) / len(terms)) if len(terms) else float("nan")

    def check(self, n_outputs: int, ref: Reference) -> None:
        """Raise MetricError (saying what to change) unless this metric can score a network with
        ``n_outputs`` output values per sample against ``ref``."""

    def score(self, outputs: np.ndarray, golden: np.ndarray | None, ref: Reference) -> float:
        """The metric of ``outputs`` (output values, one row per sample). ``golden`` (the fault-free
        outputs) is not needed by the metrics here; it is part of the signature for metrics that
        compare against the fault-free run."""
        return self.reduce(self.terms(rows(outputs), ref), ref)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.direction} is better)"


def rows(outputs: np.ndarray) -> np.ndarray:
    """Outputs as float64 rows, one per sample."""
    out = np.asarray(outputs, dtype=np.float64)
    return out.reshape(out.shape[0], int(np.prod(out.shape[1:])))


def squared_error(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-sample sum of squared errors, summed column by column (row-independent rounding)."""
    acc = np.zeros(len(outputs), dtype=np.float64)
    for j in range(outputs.shape[1]):
        d = outputs[:, j] - targets[:, j]
        acc += d * d
    return acc


def absolute_error(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-sample sum of absolute errors, summed column by column."""
    acc = np.zeros(len(outputs), dtype=np.float64)
    for j in range(outputs.shape[1]):
        acc += np.abs(outputs[:, j] - targets[:, j])
    return acc


def check_targets(metric: Metric, n_outputs: int, ref: Reference) -> None:
    if ref.targets is None:
        msg = (f"metric {metric.name}: no targets to compare the outputs with: give the .npz targets "
               "(targets_test / targets_val) or 'target: input' for an autoencoder")
        raise MetricError(msg)
    width = int(np.prod(ref.targets.shape[1:])) if ref.targets.ndim > 1 else 1
    if width != n_outputs:
        msg = (f"metric {metric.name}: the model has {n_outputs} outputs per sample but the targets have {width} "
               "values: give targets of the output's size (for 'target: input', a model that reconstructs its input)")
        raise MetricError(msg)


class Scorer:
    """A metric bound to the evaluation samples and the fault-free outputs: the fault-free value once, then
    a trial's value from the samples whose outputs changed (the others keep their fault-free terms)."""

    def __init__(self, metric: Metric, ref: Reference, golden: np.ndarray):
        self.metric = metric
        self.ref = ref
        golden = rows(golden)
        metric.check(golden.shape[1], ref)
        self.golden_terms = metric.terms(golden, ref)
        self.golden_value = metric.reduce(self.golden_terms, ref)

    def value(self, samples: np.ndarray, outputs: np.ndarray) -> float:
        """The metric when ``samples`` (indices, distinct) have ``outputs`` (values, one row each) and
        every other sample its fault-free outputs."""
        samples = np.asarray(samples, dtype=np.int64)
        if samples.size == 0:
            return self.golden_value
        terms = self.golden_terms.copy()
        terms[samples] = self.metric.terms(rows(outputs), self.ref.take(samples))
        return self.metric.reduce(terms, self.ref)

    def full(self, outputs: np.ndarray) -> float:
        """The metric of a complete set of outputs (the reference path)."""
        return self.metric.score(outputs, None, self.ref)
