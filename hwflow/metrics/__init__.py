"""The task's metric, per trial: top-1 / top-k accuracy, MSE / MAE, reconstruction-error ROC AUC.

A campaign spec names its metric (``metric:``, contract 6); every part that scores a network (the
engine and its delta path, the hardening searches, the board's host, the reports) takes it from
here, by name, with its direction::

    m = hwflow.metrics.get("mse")      # .name, .higher_is_better, .unit, .score(outputs, golden, ref)

numpy and the standard library only (the board runs it). One module per metric family
(``classify``, ``regress``, ``anomaly``); ``Scorer`` is the incremental form the engine uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwflow.metrics.anomaly import ReconstructionAUC, roc_auc
from hwflow.metrics.base import TARGETS, Metric, MetricError, Reference, Scorer, rows
from hwflow.metrics.classify import TopK
from hwflow.metrics.regress import MAE, MSE

NAMES = ("top1", "topk", "mse", "mae", "auc")
"""The metric names a spec takes (``topN`` for short, e.g. ``top5``, is ``topk`` with ``k: N``)."""

DEFAULT = "top1"


def get(name: str, k: int | None = None) -> Metric:
    """The metric called ``name`` (``top1``, ``top5``, ``topk`` with ``k``, ``mse``, ``mae``, ``auc``)."""
    if not isinstance(name, str):
        msg = f"metric must be a name, got {name!r}"
        raise MetricError(msg)
    key = name.strip().lower().replace("-", "")
    if key == "topk":
        if k is None:
            msg = "metric topk needs k (e.g. k: 5), or write top5"
            raise MetricError(msg)
        return TopK(k)
    if key.startswith("top") and key[3:].isdigit():
        if k is not None and int(key[3:]) != k:
            msg = f"metric {name} with k: {k}: give one of them"
            raise MetricError(msg)
        return TopK(int(key[3:]))
    if k is not None:
        msg = f"metric {name}: k applies to topk only"
        raise MetricError(msg)
    known = {"mse": MSE, "mae": MAE, "auc": ReconstructionAUC}
    if key not in known:
        msg = f"unknown metric {name!r} (known: {', '.join(NAMES)}; top5 is topk with k 5)"
        raise MetricError(msg)
    return known[key]()


@dataclass(frozen=True)
class MetricSpec:
    """A campaign's metric as its spec gives it (``metric:``), before it meets the data."""

    name: str = DEFAULT
    """``top1`` (default), ``topN``, ``mse``, ``mae`` or ``auc`` (the name recorded: ``topk`` with k 5 is ``top5``)."""
    target: str = "data"
    """MSE / MAE: compare with the data set's targets (``data``) or with the input (``input``, autoencoders).
    AUC always scores the reconstruction of the input."""
    normal: tuple[int, ...] | None = None
    """AUC: the class labels that are normal (the others anomalous), for data labelled by class;
    None: the labels are already 0 normal / 1 anomalous."""

    @property
    def metric(self) -> Metric:
        return get(self.name)

    def to_json(self) -> dict:
        data: dict = {"name": self.name}
        if self.target != "data":
            data["target"] = self.target
        if self.normal is not None:
            data["normal"] = list(self.normal)
        return data

    @classmethod
    def from_json(cls, data: dict | str | None) -> MetricSpec:
        """From a spec's recorded JSON (a name alone, a mapping, or None for the default)."""
        if data is None:
            return cls()
        if isinstance(data, str):
            return cls(data)
        normal = data.get("normal")
        return cls(str(data.get("name", DEFAULT)), str(data.get("target", "data")),
                   tuple(int(v) for v in normal) if normal is not None else None)


def metric_of_spec(spec: dict, variant: str) -> MetricSpec:
    """The metric of ``variant`` (``<model>/<variant>``) in a campaign spec's JSON (``CampaignSpec.to_json()``):
    the model's own, else the campaign's, else top-1. The board's host reads it from its plan this way."""
    model = variant.split("/", 1)[0]
    for m in spec.get("models") or []:
        if isinstance(m, dict) and m.get("name") == model and m.get("metric") is not None:
            return MetricSpec.from_json(m["metric"])
    return MetricSpec.from_json(spec.get("metric"))


def reference(spec: MetricSpec, x: np.ndarray, labels: np.ndarray, targets: np.ndarray | None = None) -> Reference:
    """What ``spec``'s metric scores against, from the evaluation inputs, labels and (optional) data targets."""
    metric = spec.metric
    if spec.target not in TARGETS:
        msg = f"metric target must be one of {', '.join(TARGETS)}, got {spec.target!r}"
        raise MetricError(msg)
    labels = np.asarray(labels)
    if spec.normal is not None:
        labels = np.where(np.isin(labels, np.asarray(spec.normal, dtype=np.int64)), 0, 1).astype(np.int64)
    wanted = None
    if metric.needs in ("targets", "both"):
        use_input = spec.target == "input" or isinstance(metric, ReconstructionAUC)
        source = x if use_input else targets
        wanted = None if source is None else rows(source)
    return Reference(labels, wanted)


def scorer(spec: MetricSpec, golden: np.ndarray, x: np.ndarray, labels: np.ndarray,
           targets: np.ndarray | None = None) -> Scorer:
    """The incremental scorer of ``spec``'s metric for fault-free outputs ``golden`` (values)."""
    return Scorer(spec.metric, reference(spec, x, labels, targets), golden)


def output_values(codes: np.ndarray, frac: int) -> np.ndarray:
    """Output values of integer output codes with ``frac`` fractional bits (exact in float64), one row per sample."""
    codes = np.asarray(codes)
    return np.ldexp(codes.reshape(codes.shape[0], int(np.prod(codes.shape[1:]))).astype(np.float64), -int(frac))


__all__ = [
    "DEFAULT", "MAE", "MSE", "NAMES", "Metric", "MetricError", "MetricSpec", "Reference", "ReconstructionAUC",
    "Scorer", "TopK", "get", "metric_of_spec", "output_values", "reference", "roc_auc", "scorer",
]
