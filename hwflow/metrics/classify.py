"""Classification: top-1 and top-k accuracy against integer class labels.

Ties are broken as ``np.argmax`` breaks them, by the lower output index: a sample is correct at k
when fewer than k outputs rank before its label's output, an output ranking before it when it is
larger, or equal at a lower index. For k = 1 that is exactly ``argmax(outputs) == label``, the
accuracy campaigns recorded before metrics existed.
"""

from __future__ import annotations

import numpy as np

from hwflow.metrics.base import Metric, MetricError, Reference


class TopK(Metric):
    """Fraction of samples whose label is among the k largest outputs."""

    higher_is_better = True
    needs = "labels"

    def __init__(self, k: int = 1):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            msg = f"metric topk: k must be a positive integer, got {k!r}"
            raise MetricError(msg)
        self.k = int(k)
        self.name = f"top{self.k}"
        self.unit = f"top-{self.k} accuracy"

    def terms(self, outputs: np.ndarray, ref: Reference) -> np.ndarray:
        labels = np.asarray(ref.labels, dtype=np.int64)
        n, width = outputs.shape
        if self.k == 1:
            return (np.argmax(outputs, axis=1) == labels).astype(np.float64) if n else np.zeros(0)
        mine = outputs[np.arange(n), labels][:, None]
        before = (outputs > mine) | ((outputs == mine) & (np.arange(width)[None, :] < labels[:, None]))
        return (np.count_nonzero(before, axis=1) < self.k).astype(np.float64)

    def check(self, n_outputs: int, ref: Reference) -> None:
        if ref.labels is None:
            msg = f"metric {self.name}: the data has no labels"
            raise MetricError(msg)
        if self.k > n_outputs:
            msg = (f"metric {self.name}: k = {self.k} but the model has only {n_outputs} outputs: give a k of at "
                   f"most {n_outputs}")
            raise MetricError(msg)
        labels = np.asarray(ref.labels)
        if labels.size and (labels.min() < 0 or labels.max() >= n_outputs):
            msg = (f"metric {self.name}: the labels go up to {int(labels.max())} but the model has {n_outputs} "
                   "outputs: a classifier needs one output per class (for a regression or an autoencoder, "
                   "choose metric mse, mae or auc)")
            raise MetricError(msg)
