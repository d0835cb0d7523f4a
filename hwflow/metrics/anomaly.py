"""Anomaly detection: the ROC AUC of the per-sample reconstruction error (MLPerf Tiny's AD metric).

An autoencoder trained on normal samples reconstructs them well and anomalies badly; the anomaly
score of a sample is its mean squared reconstruction error, and the metric is the area under the ROC
curve of that score against the labels (0 normal, 1 anomalous). The AUC is computed from ranks
(Mann-Whitney), ties counted half, which equals scikit-learn's ``roc_auc_score``; the rank sum is an
exact integer, so the value is one correctly rounded division. Higher is better.
"""

from __future__ import annotations

import numpy as np

from hwflow.metrics.base import Metric, MetricError, Reference, check_targets, rows, squared_error


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` (higher: more anomalous) against 0/1 ``labels``; NaN without both classes."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(labels) == 1
    n_pos = int(np.count_nonzero(positive))
    n_neg = len(scores) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    starts = np.concatenate(([0], np.flatnonzero(ordered[1:] != ordered[:-1]) + 1))
    ends = np.concatenate((starts[1:], [len(scores)]))
    twice_rank = np.empty(len(scores), dtype=np.int64)  # 2 x the average 1-based rank of each tie group
    twice_rank[order] = np.repeat(starts + 1 + ends, ends - starts)
    u_twice = int(twice_rank[positive].sum()) - n_pos * (n_pos + 1)
    return u_twice / (2 * n_pos * n_neg)


class ReconstructionAUC(Metric):
    """ROC AUC of the mean squared reconstruction error, labels 0 normal / 1 anomalous."""

    name = "auc"
    unit = "ROC AUC"
    higher_is_better = True
    needs = "both"

    def terms(self, outputs: np.ndarray, ref: Reference) -> np.ndarray:
        targets = rows(ref.targets)
        return squared_error(outputs, targets) / targets.shape[1]

    def reduce(self, terms: np.ndarray, ref: Reference) -> float:
        return roc_auc(terms, ref.labels)

    def check(self, n_outputs: int, ref: Reference) -> None:
        check_targets(self, n_outputs, ref)
        labels = np.asarray(ref.labels) if ref.labels is not None else np.zeros(0)
        values = set(np.unique(labels).tolist())
        if not values <= {0, 1}:
            msg = (f"metric auc: labels must be 0 (normal) or 1 (anomalous), the data's go up to {max(values)}: "
                   "give 'normal: [classes]' with the metric to count those classes as normal and the rest as "
                   "anomalous")
            raise MetricError(msg)
        if values != {0, 1}:
            msg = (f"metric auc: the evaluation samples are all {'anomalous' if 1 in values else 'normal'}: a ROC AUC "
                   "needs both normal (0) and anomalous (1) samples")
            raise MetricError(msg)
