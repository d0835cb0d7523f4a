"""``hwflow gate``: run (or resume) a campaign in batches and judge its requirements after each one.

The runner is not touched: a campaign grows when its spec asks for more trials, keeping the trials it
has (``only_more_trials``), and a trial's seed depends on its key and index only. So the gate runs
the spec at ``b, 2b, 3b, ...`` trials per point (every fault entry and the sensitivity study alike,
each capped at its own count), and judges after each batch on the first ``n`` trials. It stops once
every verdict is certain, or when the spec's counts are reached.

Reproducible: the schedule depends on the spec and the batch size only, the values on the seeds, and
the verdicts on the first ``n`` trials only (trials a database already holds beyond ``n`` are not
looked at), so a rerun, on the same database or a fresh one, stops at the same batch with the same
verdicts.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from hwflow.campaign.spec import CampaignSpec
from hwflow.gate.errors import GateError
from hwflow.gate.judge import FAILS, HOLDS, UNDECIDED, Check, Verdict, alpha_each, expand, judge
from hwflow.gate.values import metric_info, per_trial_values

log = logging.getLogger(__name__)

BATCHES = 10
"""Default number of batches: the batch size is the largest trial count over ten, rounded up."""


@dataclass(frozen=True)
class GateConfig:
    batch: int | None = None
    """Trials per point per batch; None: ``ceil(max trials / BATCHES)``."""
    workers: int | None = 1
    """Worker processes for the trials (``run_campaign``'s ``workers``)."""
    progress: bool = False
    cache: str | Path | None = None
    """CI cache folder for trained models, conversions and fault-free passes (``hwflow.gate.cache``); None: no cache."""


@dataclass(frozen=True)
class GateResult:
    spec: CampaignSpec
    verdicts: list[Verdict]
    trials_per_point: int
    """Trials per point at the batch the gate stopped (the largest fault entry's)."""
    max_trials: int
    """Trials per point the spec plans (the largest entry's)."""
    used: int
    """Trials of the campaign up to the stopping batch (all points, variants and studies)."""
    planned: int
    """Trials of the whole campaign as the spec plans it."""
    ran: int
    """Trials this gate ran (the others were already in the database)."""
    batches: int
    rows: list = field(default_factory=list, repr=False)
    """The judged trial rows (the first ``n`` of each point), for reports."""
    baselines: list = field(default_factory=list, repr=False)

    @property
    def saved(self) -> int:
        return self.planned - self.used

    @property
    def passed(self) -> bool:
        return all(v.status == HOLDS for v in self.verdicts)

    @property
    def exit_code(self) -> int:
        """0 when every requirement holds, 1 otherwise (a requirement fails, or is undecided)."""
        return 0 if self.passed else 1

    def counts(self) -> dict[str, int]:
        return {s: sum(v.status == s for v in self.verdicts) for s in (HOLDS, FAILS, UNDECIDED)}

    def summary_line(self) -> str:
        c = self.counts()
        pct = 100.0 * self.saved / self.planned if self.planned else 0.0
        return (f"gate {self.spec.name}: {c[HOLDS]} hold, {c[FAILS]} fail, {c[UNDECIDED]} undecided; stopped at "
                f"{self.trials_per_point} of {self.max_trials} trials per point after {self.batches} batch(es): "
                f"{self.used} of {self.planned} planned trials used, {self.saved} saved ({pct:.0f}%), "
                f"{self.ran} run now")


def scaled_spec(spec: CampaignSpec, n: int) -> CampaignSpec:
    """The spec with every trial count capped at ``n`` (the campaign after ``n`` trials per point)."""
    faults = tuple(replace(f, trials=min(f.trials, n)) for f in spec.faults)
    sens = spec.sensitivity
    return replace(spec, faults=faults, sensitivity=replace(sens, trials=min(sens.trials, n)) if sens else None,
                   precision=None)  # the gate stops on its verdicts, not on the intervals' width


def schedule(spec: CampaignSpec, batch: int | None) -> list[int]:
    """Trials per point after each batch: b, 2b, ... up to the largest count of the spec."""
    counts = [f.trials for f in spec.faults] + ([spec.sensitivity.trials] if spec.sensitivity else [])
    top = max(counts)
    b = batch if batch is not None else max(1, math.ceil(top / BATCHES))
    if b < 1:
        msg = f"batch size must be at least 1, got {b}"
        raise GateError(msg)
    steps = list(range(b, top, b)) + [top]
    return steps


def checks_of(spec: CampaignSpec) -> list[Check]:
    if not spec.require:
        msg = (f"{spec.source}: no 'require:' list: the gate has nothing to judge; add requirements, e.g. "
               "'require: [{variant: all, fault: bitflip, rate: 1.0e-4, min: 0.9}]'")
        raise GateError(msg)
    labels = [f"{m.name}/{v}" for m in spec.models for v in m.variants]
    own = {m.name: (m.metric or spec.metric).name for m in spec.models}  # a model may override the metric

    def metric_for(req, variant: str):
        info = metric_info(req.metric, own[variant.rpartition("/")[0]])
        return info if req.metric is not None else replace(info, named=False)

    checks = expand(spec.require, labels, metric_for)
    for check in checks:  # the campaign's metric is known only now: check what the spec could not
        lo, hi = check.span
        where = f"{spec.source}: require[{check.index}]"
        if not (math.isfinite(lo) and math.isfinite(hi)):
            msg = (f"{where}.range: {check.variant} is scored with {check.metric.name}, which has no upper bound: "
                   "give the values a trial can take, e.g. 'range: [0, 10]'")
            raise GateError(msg)
        if not lo <= check.requirement.bound <= hi:
            msg = (f"{where}.{check.requirement.kind}: {check.requirement.bound:g} is outside the values "
                   f"{check.metric.name}{' gains' if check.other else ''} can take ([{lo:g}, {hi:g}])")
            raise GateError(msg)
    return checks


def run_gate(spec: CampaignSpec, db_path: str | Path, config: GateConfig = GateConfig(), variants=None) -> GateResult:
    """Run ``spec`` in batches into ``db_path`` until every requirement is decided; see the module docstring."""
    from hwflow.campaign.plan import plan
    from hwflow.results import ResultsDB

    checks = checks_of(spec)
    if variants is None:
        if config.cache is not None:
            from hwflow.gate.cache import cached_variants

            variants = cached_variants(spec, config.cache, progress=config.progress)
        else:
            from hwflow.campaign.variants import build_variants

            variants = build_variants(spec, progress=config.progress)
    alphas = alpha_each(checks)
    steps = schedule(spec, config.batch)
    planned = sum(len(plan(spec, v.label, v.widths())) for v in variants)
    ran, verdicts, n, step = 0, [], steps[0], 0
    rows, baselines = [], []
    for step, n in enumerate(steps, start=1):
        current = scaled_spec(spec, n)
        ran += _ensure(current, db_path, variants, config)
        with ResultsDB(db_path) as db:
            all_rows = db.trials(spec.name, board="emulator")
            baselines = db.baselines(spec.name)
        limit = {f_label: f.trials for f_label, f in _fault_labels(current)}
        rows = [r for r in all_rows if r.study == "sweep" and r.trial < limit.get(r.fault_model, 0)]
        verdicts = _judge_all(checks, alphas, rows, current, spec)
        log.info("batch %d: %d trials per point: %s", step, n, ", ".join(v.status for v in verdicts))
        if all(v.certain or v.trials >= v.planned for v in verdicts):  # decided, or no more trials to come
            break
    used = sum(len(plan(scaled_spec(spec, n), v.label, v.widths())) for v in variants)
    return GateResult(spec, verdicts, n, steps[-1], used, planned, ran, step, rows, baselines)


def _fault_labels(spec: CampaignSpec):
    from hwflow.campaign.plan import fault_label

    return [(fault_label(f.spec), f) for f in spec.faults]


def _ensure(current: CampaignSpec, db_path, variants, config: GateConfig) -> int:
    """Run the trials of ``current`` the database lacks; returns how many ran.

    A database whose campaign already plans more trials (an earlier, longer run) keeps its counts:
    the campaign is run at the larger of the two, since a spec with fewer trials would be refused.
    """
    from hwflow.campaign import run_campaign
    from hwflow.campaign.plan import plan
    from hwflow.campaign.spec import only_more_trials
    from hwflow.results import ResultsDB
    from hwflow.results.db import ResultsError

    with ResultsDB(db_path) as db:
        done = db.done(current.name)
        try:
            stored = db.campaign_spec(current.name)
        except ResultsError:
            stored = None
    mine = current.to_json()
    if stored is not None and stored != mine and not only_more_trials(mine, stored) \
            and not only_more_trials(stored, mine):
        # trial keys carry no seed: another spec's trials would pass for this one's
        msg = (f"{db_path} already holds a campaign named {current.name!r} with a different spec: use another --db, "
               "or another campaign name, to keep results apart (only trial counts may differ)")
        raise ResultsError(msg)
    missing = [t for v in variants for t in plan(current, v.label, v.widths()) if t.key not in done]
    if not missing and stored is not None:
        return 0
    target = current
    if stored is not None and only_more_trials(mine, stored) and stored != mine:
        faults = tuple(replace(f, trials=max(f.trials, int(s["trials"])))
                       for f, s in zip(current.faults, stored["faults"], strict=True))
        sens = current.sensitivity
        if sens is not None:
            sens = replace(sens, trials=max(sens.trials, int(stored["sensitivity"]["trials"])))
        target = replace(current, faults=faults, sensitivity=sens)
        if stored.get("precision") is not None:  # its target stays: dropping it reads as fewer trials
            from hwflow.campaign.spec import PrecisionSpec

            target = replace(target, precision=PrecisionSpec(**stored["precision"]))
    from hwflow.campaign.golden_cache import active
    from hwflow.gate.cache import golden_folder

    with active(golden_folder(config.cache)):  # the campaign's evaluators (and workers) read and keep their passes
        result = run_campaign(target, db_path, workers=config.workers, progress=config.progress, variants=variants)
    return result.ran


def _judge_all(checks: list[Check], alphas: dict[int, float], rows, current: CampaignSpec, spec: CampaignSpec):
    """Every check on the first trials ``current`` plans (``spec``: the whole campaign, for the planned counts)."""
    by_metric = {}
    counts = dict((label, f.trials) for label, f in _fault_labels(current))
    planned_all = dict((label, f.trials) for label, f in _fault_labels(spec))
    verdicts = []
    for i, check in enumerate(checks):
        if check.metric not in by_metric:
            by_metric[check.metric] = per_trial_values(rows, check.metric)
        values = by_metric[check.metric]
        req = check.requirement
        key = (check.variant, req.fault_model, float(req.rate))
        n = counts[req.fault_model]
        mine = values.get(key)
        theirs = values.get((check.other, req.fault_model, float(req.rate))) if check.other else None
        if mine is None or (check.other and theirs is None):
            msg = (f"{check.name}: no trials of {check.other if mine is not None else check.variant} at "
                   f"{req.fault_model} rate {req.rate:g} in the results: the campaign did not run them")
            raise GateError(msg)
        mine = mine[:n]
        theirs = theirs[:n] if theirs is not None else None
        short = len(mine) < n or (theirs is not None and len(theirs) < n)
        final = n >= planned_all[req.fault_model] and not short  # this point has all the trials the spec plans
        verdicts.append(judge(check, mine, theirs, alphas[i], planned_all[req.fault_model], final))
    return verdicts
