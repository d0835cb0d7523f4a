"""The gate's one seam to the results: per-trial values of a metric, with its direction and range.

A requirement judges "the campaign's metric by default": the one each trial row records
(:mod:`hwflow.metrics`: top-1 unless the spec says otherwise, with its direction and range). Every row
also records ``correct`` and ``samples``, so top-1 accuracy can be judged in any campaign.
Whatever the metric, the gate sees the same thing: for a (variant, fault model, rate), the values
of trials 0, 1, 2, ... in trial order (the order of the seeds, so a rerun sees the same sequence),
and whether higher is better.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from hwflow.errors import SpecError
from hwflow.results import TrialRow

SWEEP = "sweep"
BOARD = "emulator"


@dataclass(frozen=True)
class MetricInfo:
    """What the gate needs to know of a metric."""

    name: str
    higher_is_better: bool
    """Direction: a requirement's ``gain_over`` is a move in this direction."""
    lower: float
    """Smallest value a trial can take (the confidence sequence needs a bounded range)."""
    upper: float
    """Largest value; ``inf`` for errors (MSE, MAE): a requirement on those gives its own ``range``."""
    named: bool = True
    """False when the requirement names no metric and this is the campaign's (the model's) own."""

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.lower) and math.isfinite(self.upper)


ACCURACY = MetricInfo("top1", True, 0.0, 1.0)
"""Top-1 accuracy: recorded on every trial row, and always ``correct / samples``."""
_ALIASES = {"accuracy": "top1", "acc": "top1", "top-1": "top1"}


def metric_info(name: str | None, default: str | None = None) -> MetricInfo:
    """The metric a requirement names, else the campaign's (``default``), else top-1 accuracy."""
    from hwflow.metrics import MetricError, get

    key = name if name is not None else default
    if key is None:
        return ACCURACY
    key = _ALIASES.get(str(key).strip().lower(), str(key))
    try:
        m = get(key)
    except MetricError as err:
        raise SpecError(str(err)) from None
    return MetricInfo(m.name, bool(m.higher_is_better), float(m.lower), float(m.upper))


def row_value(row: TrialRow, metric: MetricInfo) -> float:
    """One trial's value of ``metric``: the row's own metric value, or top-1 accuracy from its counts."""
    if row.metric == metric.name:
        return row.value
    if metric.name == ACCURACY.name:
        return row.correct / row.samples if row.samples else math.nan
    where = f"trial {row.trial} of {row.variant} at {row.fault_model} rate {row.rate:g}"
    if metric.named:
        msg = (f"{where} was scored with {row.metric}, not {metric.name}: judge the metric the campaign records "
               "(leave 'metric:' out of the requirement), or run the campaign with that metric")
    else:
        msg = (f"{where} was scored with {row.metric}, but the campaign's metric for this model is {metric.name}: "
               f"the gate judges what the trials record; name that metric in the requirement ('metric: {row.metric}'), "
               f"or run the campaign into another --db with a runner that records {metric.name}")
    raise SpecError(msg)


def per_trial_values(rows: Iterable[TrialRow], metric: MetricInfo) -> dict[tuple[str, str, float], np.ndarray]:
    """Values of the rate-sweep trials on the emulator, by (variant, fault model, rate), in trial order.

    Only the unbroken run of trials 0..n-1 is returned: a trial missing in the middle (an interrupted
    campaign) ends the sequence there, so the gate never judges a sequence with a gap.
    """
    groups: dict[tuple[str, str, float], dict[int, float]] = defaultdict(dict)
    for r in rows:
        if r.study == SWEEP and r.board == BOARD:
            groups[(r.variant, r.fault_model, float(r.rate))][r.trial] = row_value(r, metric)
    out = {}
    for key, by_trial in groups.items():
        n = 0
        while n in by_trial:
            n += 1
        out[key] = np.array([by_trial[i] for i in range(n)], dtype=np.float64)
    return out
