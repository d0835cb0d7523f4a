"""Statistics over trial rows: accuracy with confidence intervals, sensitivity matrices, board checks.

Pure functions over ``TrialRow`` / ``Baseline`` (numpy and scipy only, no database, no plotting).

Which interval is the headline
------------------------------
Trials at the same (variant, fault model, rate) differ by their fault map, and that is the
variance that matters: "how accurate is this network when a random 1e-3 of its weight bits flip?"
is a question about the distribution of fault maps. So the headline interval is the Student-t
interval over the per-trial accuracies::

    mean ± t(0.975, n-1) · s / √n        (s: sample standard deviation, ddof=1)

It needs two trials or more: with one trial the half-width and both bounds are NaN (one fault map
says nothing about the spread of fault maps). The bounds are clipped to [0, 1], the range accuracy
lives in (which keeps the coverage); ``half_width`` is the unclipped t half-width.

The Wilson score interval on the pooled ``sum(correct) / sum(samples)`` is reported as a secondary
column. It treats every evaluated sample as an independent Bernoulli draw, which they are not (all
trials reuse the same test samples, and samples within a trial share one fault map), so it is too
narrow whenever fault maps matter: read it as "how precisely did we measure these particular fault
maps", not as the uncertainty of the campaign's answer.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from hwflow.report.errors import ReportError
from hwflow.results import Baseline, TrialRow

CONFIDENCE = 0.95
SWEEP = "sweep"
SENSITIVITY_STUDIES = ("layer", "bit", "layer-bit")

HEADLINE_INTERVAL = (
    "Intervals are 95% Student-t confidence intervals over the per-trial accuracies "
    "(mean ± t(0.975, n-1)·s/√n, clipped to [0, 1]; undefined with fewer than 2 trials): trials differ by "
    "their fault map, and that is the variance that matters. The Wilson score interval on the pooled "
    "correct/samples is shown as a secondary column; it treats samples as independent, so it is narrower "
    "and only measures how precisely these particular fault maps were evaluated."
)


@dataclass(frozen=True)
class Summary:
    """Accuracy of one group of trials: same campaign, variant, study, fault model, target, rate, board."""

    campaign: str
    variant: str
    study: str
    fault_model: str
    target_layer: str  # "" when the faults were not restricted to a layer
    target_bit: int  # -1 when the faults were not restricted to a bit
    rate: float
    board: str
    n_trials: int
    mean_accuracy: float  # mean of the per-trial accuracies (the headline estimate)
    ci_low: float  # Student-t 95% interval over trials, clipped to [0, 1]; NaN when n_trials < 2
    ci_high: float
    half_width: float  # t(0.975, n-1)·s/√n, unclipped; NaN when n_trials < 2
    pooled_accuracy: float  # sum(correct) / sum(samples)
    wilson_low: float  # Wilson score 95% interval on the pooled proportion (secondary)
    wilson_high: float
    mean_faults: float  # faults applied per trial
    mean_effective: float  # faults that changed a stored bit, per trial
    mean_mismatch_rate: float  # mean over trials of mismatches / samples (outputs differing from fault-free)
    fault_free_accuracy: float  # from the Baseline of this campaign, variant and board; NaN if absent
    accuracy_drop: float  # fault_free_accuracy - mean_accuracy (positive: accuracy lost)
    # The task's metric (contract 6), in its own units and direction; for top-1 these equal the accuracy fields.
    metric: str = "top1"  # its name (hwflow.metrics), as the trials recorded it
    higher_is_better: bool = True  # its direction: a "gain" is a move this way (for MSE: down)
    mean_value: float = math.nan  # mean of the per-trial values (the headline estimate)
    value_low: float = math.nan  # Student-t 95% interval over trials, clipped to the metric's range
    value_high: float = math.nan
    value_half_width: float = math.nan  # unclipped; NaN when n_trials < 2
    fault_free_value: float = math.nan  # from the Baseline; NaN if absent
    value_loss: float = math.nan  # how much worse than fault-free, in the metric's direction (positive: worse)

    def __post_init__(self) -> None:
        """A top-1 summary made without metric values (before metrics existed) takes them from its accuracy."""
        if self.metric == "top1" and math.isnan(self.mean_value) and not math.isnan(self.mean_accuracy):
            for value_field, accuracy_field in (("mean_value", "mean_accuracy"), ("value_low", "ci_low"),
                                                ("value_high", "ci_high"), ("value_half_width", "half_width"),
                                                ("fault_free_value", "fault_free_accuracy"),
                                                ("value_loss", "accuracy_drop")):
                object.__setattr__(self, value_field, getattr(self, accuracy_field))

    @property
    def group(self) -> tuple:
        """The key the trials were grouped by."""
        return (self.campaign, self.variant, self.study, self.fault_model, self.target_layer, self.target_bit,
                self.rate, self.board)


SUMMARY_FIELDS = tuple(Summary.__dataclass_fields__)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """(mean, low, high, half_width) of the Student-t interval; bounds and half-width NaN when n < 2.

    The bounds are *not* clipped here (``summarize`` clips them to [0, 1]).
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n == 0:
        return (math.nan,) * 4
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    s = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * s / math.sqrt(n)
    return mean, mean - half, mean + half, half


def wilson_interval(successes: int, total: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (NaN, NaN) when total is 0."""
    if total <= 0:
        return math.nan, math.nan
    z = float(sps.norm.ppf(0.5 + confidence / 2))
    p = successes / total
    denom = 1 + z * z / total
    center = (p + z * z / (2 * total)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return max(0.0, center - half), min(1.0, center + half)


def _group_key(r: TrialRow) -> tuple:
    return (r.campaign, r.variant, r.study, r.fault_model, r.target_layer, r.target_bit, r.rate, r.board)


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def summarize(rows: Iterable[TrialRow], baselines: Iterable[Baseline]) -> list[Summary]:
    """One ``Summary`` per (campaign, variant, study, fault model, target layer, target bit, rate, board).

    Sorted by that key, rates numerically. ``fault_free_accuracy`` comes from the baseline with the
    same campaign, variant and board (NaN when there is none, and so is ``accuracy_drop``).
    """
    groups: dict[tuple, list[TrialRow]] = defaultdict(list)
    for r in rows:
        groups[_group_key(r)].append(r)
    baselines = list(baselines)
    fault_free = {(b.campaign, b.variant, b.board): b.accuracy for b in baselines}
    fault_free_value = {(b.campaign, b.variant, b.board): b.value for b in baselines}
    out = []
    for key in sorted(groups):
        trials = groups[key]
        campaign, variant, _, _, _, _, _, board = key
        accs = [_ratio(r.correct, r.samples) for r in trials]
        mean, low, high, half = t_interval(accs)
        correct = sum(r.correct for r in trials)
        samples = sum(r.samples for r in trials)
        w_low, w_high = wilson_interval(correct, samples)
        ff = fault_free.get((campaign, variant, board), math.nan)
        out.append(_with_metric(trials, fault_free_value.get((campaign, variant, board), math.nan), Summary(
            *key,
            n_trials=len(trials),
            mean_accuracy=mean,
            ci_low=max(0.0, low) if not math.isnan(low) else low,
            ci_high=min(1.0, high) if not math.isnan(high) else high,
            half_width=half,
            pooled_accuracy=_ratio(correct, samples),
            wilson_low=w_low,
            wilson_high=w_high,
            mean_faults=float(np.mean([r.faults for r in trials])),
            mean_effective=float(np.mean([r.effective for r in trials])),
            mean_mismatch_rate=float(np.mean([_ratio(r.mismatches, r.samples) for r in trials])),
            fault_free_accuracy=ff,
            accuracy_drop=ff - mean,
        )))
    return out


def metric_direction(name: str) -> tuple[bool, float, float]:
    """(higher_is_better, lower bound, upper bound) of a recorded metric name; an unknown name (a newer hwflow's)
    is taken as higher-is-better and unbounded."""
    from hwflow.metrics import MetricError, get

    try:
        m = get(name)
    except MetricError:
        return True, -math.inf, math.inf
    return m.higher_is_better, m.lower, m.upper


def _with_metric(trials: list[TrialRow], fault_free: float, summary: Summary) -> Summary:
    """``summary`` with the metric fields of its trials (their recorded metric; a group holds one)."""
    from dataclasses import replace

    names = sorted({r.metric for r in trials})
    if len(names) > 1:
        msg = f"trials of {summary.variant} at rate {summary.rate:g} were scored with different metrics ({names})"
        raise ReportError(msg)
    higher, lo, hi = metric_direction(names[0])
    values = [r.value for r in trials if not math.isnan(r.value)]
    mean, low, high, half = t_interval(values)
    loss = (fault_free - mean) if higher else (mean - fault_free)
    return replace(summary, metric=names[0], higher_is_better=higher, mean_value=mean,
                   value_low=max(lo, low) if not math.isnan(low) else low,
                   value_high=min(hi, high) if not math.isnan(high) else high, value_half_width=half,
                   fault_free_value=fault_free, value_loss=loss)


# --- sensitivity ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SensitivityTable:
    """Accuracy drop of one sensitivity study of one (campaign, variant, fault model, board).

    ``drop[i, j]`` is the accuracy drop (fault-free minus mean faulty accuracy) at row ``i``,
    column ``j``; NaN where no trials ran (e.g. a bit beyond a narrower layer's word width).
    Rows and columns by study: "layer-bit": layers × bits; "layer": layers × rates;
    "bit": bits × rates. Layers follow ``layer_order`` when given (e.g. the WeightImage's
    order), else the natural order of their names ("conv2d_2" before "conv2d_10"; the results
    do not record the image order); bits ascending (0 = LSB); rates ascending.
    """

    study: str
    campaign: str
    variant: str
    fault_model: str
    board: str
    row_title: str
    col_title: str
    row_labels: list[str]
    col_labels: list[str]
    drop: np.ndarray
    accuracy: np.ndarray  # mean faulty accuracy per cell (NaN where no trials)
    n_trials: np.ndarray  # trials per cell (0 where none)
    metric: str = "top1"  # the metric of ``accuracy`` and ``drop`` (for others than top-k: its value and its loss
    # in the metric's direction, fault-free minus faulty for AUC, faulty minus fault-free for MSE)

    def __iter__(self):
        """Unpacks as ``row_labels, col_labels, drop``."""
        return iter((self.row_labels, self.col_labels, self.drop))

    @property
    def name(self) -> str:
        return f"{self.campaign} · {self.variant} · {self.fault_model} · {self.board}"


def natural_key(text: str) -> list:
    """Sort key putting "dense_2" before "dense_10"."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def _rate_label(rate: float) -> str:
    return f"{rate:g}"


# study -> (row title, column title, row value of a Summary, column value of a Summary)
_AXES = {
    "layer-bit": ("layer", "bit position (0 = LSB)", lambda s: s.target_layer, lambda s: s.target_bit),
    "layer": ("layer", "fault rate", lambda s: s.target_layer, lambda s: s.rate),
    "bit": ("bit position (0 = LSB)", "fault rate", lambda s: s.target_bit, lambda s: s.rate),
}


def sensitivity_tables(summaries: Iterable[Summary], study: str | None = None, *,
                       layer_order: Sequence[str] | None = None) -> list[SensitivityTable]:
    """Every sensitivity table present: one per (study, campaign, variant, fault model, board).

    A "layer-bit" study with several rates gives one table per rate (its ``fault_model`` then
    reads ``"<label> @ <rate>"``). ``study`` keeps only that study. ``layer_order`` lists layers
    in the order to show them; layers not in it follow, in natural order.
    """
    rank = {name: i for i, name in enumerate(layer_order or ())}

    def sort_key(value):
        if isinstance(value, str):
            return (rank.get(value, len(rank)), natural_key(value))
        return (0, value)

    if study is not None and study not in SENSITIVITY_STUDIES:
        msg = f"unknown sensitivity study {study!r} (known: {', '.join(SENSITIVITY_STUDIES)})"
        raise ReportError(msg)
    groups: dict[tuple, list[Summary]] = defaultdict(list)
    for s in summaries:
        if s.study in SENSITIVITY_STUDIES and (study is None or s.study == study):
            groups[(SENSITIVITY_STUDIES.index(s.study), s.campaign, s.variant, s.fault_model, s.board)].append(s)
    tables = []
    for (index, campaign, variant, fault_model, board), cells in sorted(groups.items()):
        st = SENSITIVITY_STUDIES[index]
        rates = sorted({s.rate for s in cells})
        if st != "layer-bit" or len(rates) == 1:
            tables.append(_table(st, campaign, variant, fault_model, board, cells, sort_key))
            continue
        for rate in rates:  # layer x bit has no room for a rate axis: one table per rate
            tables.append(_table(st, campaign, variant, f"{fault_model} @ {rate:g}", board,
                                 [s for s in cells if s.rate == rate], sort_key))
    return tables


def _table(study, campaign, variant, fault_model, board, cells: list[Summary], sort_key) -> SensitivityTable:
    row_title, col_title, row_of, col_of = _AXES[study]
    rows = sorted({row_of(s) for s in cells}, key=sort_key)
    cols = sorted({col_of(s) for s in cells}, key=sort_key)
    drop = np.full((len(rows), len(cols)), np.nan)
    acc = np.full_like(drop, np.nan)
    n = np.zeros(drop.shape, dtype=np.int64)
    ri, ci = {r: i for i, r in enumerate(rows)}, {c: j for j, c in enumerate(cols)}
    for s in cells:
        i, j = ri[row_of(s)], ci[col_of(s)]
        drop[i, j], acc[i, j], n[i, j] = s.value_loss, s.mean_value, s.n_trials  # the campaign's metric

    def label(v):
        return _rate_label(v) if isinstance(v, float) else str(v)

    return SensitivityTable(study, campaign, variant, fault_model, board, row_title, col_title,
                            [label(r) for r in rows], [label(c) for c in cols], drop, acc, n,
                            cells[0].metric if cells else "top1")


def sensitivity_table(summaries: Iterable[Summary], study: str, *, campaign: str | None = None,
                      variant: str | None = None, fault_model: str | None = None,
                      board: str | None = None, layer_order: Sequence[str] | None = None) -> SensitivityTable:
    """The one sensitivity table of ``study`` (narrowed by the keywords); unpacks as (rows, cols, drop).

    Raises ``ReportError`` when there is none, or several (name the variant / board / ... to pick).
    """
    want = {"campaign": campaign, "variant": variant, "fault_model": fault_model, "board": board}
    found = [t for t in sensitivity_tables(summaries, study, layer_order=layer_order)
             if all(v is None or getattr(t, k) == v for k, v in want.items())]
    if not found:
        msg = f"no {study!r} sensitivity trials" + "".join(f", {k}={v!r}" for k, v in want.items() if v)
        raise ReportError(msg)
    if len(found) > 1:
        msg = (f"{len(found)} {study!r} sensitivity tables match ({'; '.join(t.name for t in found)}): "
               "pass campaign=, variant=, fault_model= or board= to pick one")
        raise ReportError(msg)
    return found[0]


# --- boards ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Discrepancy:
    """The same trial on two boards did not agree.

    ``kind`` is "result" when the seeds agree but the outcome differs (``differs`` names the
    fields: a real hardware/emulator disagreement, or faults sampled differently from one seed),
    or "seed" when the two boards ran the trial with different seeds (the trials are not
    comparable: the campaigns were not run from the same spec and master seed).
    """

    kind: str
    campaign: str
    variant: str
    study: str
    fault_model: str
    target_layer: str
    target_bit: int
    rate: float
    trial: int
    reference_board: str
    board: str
    reference: TrialRow
    other: TrialRow
    differs: tuple[str, ...]


COMPARED_FIELDS = ("samples", "correct", "mismatches", "faults", "effective", "metric", "metric_value")
"""What must agree between two boards' runs of one trial: the counts, and the task's metric (name and value;
both compute it with the same ``hwflow.metrics`` code from bit-identical outputs, so exactly)."""


def _same(a, b) -> bool:
    """Equal, an undefined metric value (None, NaN) equal to another undefined one."""
    undefined = (a is None or (isinstance(a, float) and math.isnan(a)),
                 b is None or (isinstance(b, float) and math.isnan(b)))
    return all(undefined) if any(undefined) else a == b


def reference_board(boards: Iterable[str]) -> str:
    """The board others are compared with: "emulator" when present, else the first by name."""
    boards = sorted(set(boards))
    return "emulator" if "emulator" in boards else boards[0]


def _paired(rows: Iterable[TrialRow]) -> dict[tuple, dict[str, TrialRow]]:
    by_trial: dict[tuple, dict[str, TrialRow]] = defaultdict(dict)
    for r in rows:
        trial_id = (r.campaign, r.variant, r.study, r.fault_model, r.target_layer, r.target_bit, r.rate, r.trial)
        by_trial[trial_id][r.board] = r
    return {k: v for k, v in by_trial.items() if len(v) > 1}


def compare_boards(rows: Iterable[TrialRow]) -> list[Discrepancy]:
    """Trials run on several boards whose seeds or outcomes disagree, each against the reference board.

    A trial is identified by (campaign, variant, study, fault model, target layer, target bit,
    rate, trial index); each board other than the reference (``reference_board``) is compared
    with it. Same seed: any difference in samples, correct, mismatches, faults or effective is a
    "result" discrepancy. Different seeds: one "seed" discrepancy (outcomes not compared).
    """
    out = []
    for key, boards in sorted(_paired(rows).items()):
        ref_name = reference_board(boards)
        ref = boards[ref_name]
        for name in sorted(boards):
            if name == ref_name:
                continue
            other = boards[name]
            if other.seed != ref.seed:
                kind, differs = "seed", ("seed",)
            else:
                kind = "result"
                derived = ref.metric == other.metric == "top1"  # its value is correct / samples: not twice
                differs = tuple(f for f in COMPARED_FIELDS if not (derived and f == "metric_value")
                                and not _same(getattr(ref, f), getattr(other, f)))
                if not differs:
                    continue
            out.append(Discrepancy(kind, *key, ref_name, name, ref, other, differs))
    return out


def paired_counts(rows: Iterable[TrialRow]) -> dict[tuple[str, str], int]:
    """How many trials each (reference board, other board) pair has in common: what ``compare_boards`` checked."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for boards in _paired(rows).values():
        ref = reference_board(boards)
        for name in boards:
            if name != ref:
                counts[(ref, name)] += 1
    return dict(sorted(counts.items()))
