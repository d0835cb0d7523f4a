"""Run a campaign: plan the trials, skip those already in the database, evaluate the rest in
parallel (local processes, or a Dask cluster), and commit results as they arrive.

Each finished task (a few trials) is committed in one transaction, so a campaign killed at any
moment — SIGKILL included — loses at most the trials in flight, and the same command resumes it.
Trial results do not depend on which worker ran them or in which order: a resumed, a parallel
and a Dask campaign give the same rows as one uninterrupted serial run.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwflow.campaign.engine import TrialEvaluator
from hwflow.campaign.metric import npz_targets
from hwflow.campaign.plan import Trial, plan
from hwflow.campaign.spec import CampaignSpec, only_more_trials
from hwflow.campaign.variants import Variant, build_variants
from hwflow.results import Baseline, ResultsDB, TrialRow

log = logging.getLogger(__name__)

TASK_TRIALS = 8  # trials per task: small enough to lose little when killed, large enough to amortize IPC
PROCESS_TASKS = 8  # with the default worker count, fewer tasks per core than this run in this process


@dataclass(frozen=True)
class Payload:
    """Everything a worker needs to evaluate trials; sent once per worker."""

    campaign: str
    variants: dict[str, tuple]  # label -> (program, image)
    x: np.ndarray
    y: np.ndarray
    chunk: int
    run_id: str = ""  # unique per run_campaign call: evaluators cached for one run are never reused by another
    metrics: dict = field(default_factory=dict)  # label -> MetricSpec: each variant's metric (default top-1)
    targets: np.ndarray | None = None  # a regression metric's targets (the .npz's), one row per sample


@dataclass(frozen=True)
class CampaignResult:
    planned: int
    skipped: int  # already in the database (resumed)
    ran: int


def evaluation_data(spec: CampaignSpec) -> tuple[np.ndarray, np.ndarray]:
    from hwflow.data import load_dataset

    data = load_dataset(spec.dataset, root=spec.data_root)
    x, y = (data.x_test, data.y_test) if spec.split == "test" else (data.x_val, data.y_val)
    if spec.samples is not None:
        x, y = x[: spec.samples], y[: spec.samples]
    return x, y


def run_campaign(spec: CampaignSpec, db_path: str | Path, workers: int | None = None,
                 scheduler: str | None = None, progress: bool = True,
                 variants: list[Variant] | None = None) -> CampaignResult:
    """Run (or resume) ``spec``, writing to ``db_path``.

    ``workers``: local processes (default: every core, or this process on threads for a short
    campaign; 1 runs in this process). ``scheduler``: a Dask scheduler address, or ``"local"`` for a
    local Dask cluster; overrides ``workers``.
    """
    x, y = evaluation_data(spec)
    variants = variants if variants is not None else build_variants(spec, progress=progress)
    payload = Payload(spec.name, {v.label: (v.program, v.image) for v in variants}, x, y, spec.batch_size,
                      uuid.uuid4().hex, {v.label: spec.metric_for(v.label) for v in variants},
                      npz_targets(spec.dataset, spec.split, spec.samples))
    with ResultsDB(db_path) as db:
        db.register_campaign(spec.name, spec.to_json(), extends=only_more_trials)
        done = db.done(spec.name)
        todo: list[tuple[str, Trial]] = []
        planned = 0
        for v in variants:
            trials = plan(spec, v.label, v.widths())
            planned += len(trials)
            todo += [(v.label, t) for t in trials if t.key not in done]
            if not any(b.variant == v.label for b in db.baselines(spec.name)):
                ev = _evaluator(payload, v.label)
                db.put_baseline(Baseline(spec.name, v.label, "emulator", len(y), ev.golden_correct, ev.metric.name,
                                         ev.metric.golden_value, ev.metric.metric.higher_is_better))
        log.info("%s: %d trials planned, %d already done, %d to run", spec.name, planned, planned - len(todo),
                 len(todo))
        ran = _run_trials(payload, todo, db, workers, scheduler, spec.name, progress)
        grown = 0
        while spec.precision is not None:  # grow the points whose intervals are still too wide, round by round
            grown, more = _grown_points(spec, db, [v.label for v in variants])
            if not more:
                break
            log.info("%s: %d trials more for the precision target (±%g)", spec.name, len(more),
                     spec.precision.half_width)
            ran += _run_trials(payload, more, db, workers, scheduler, spec.name, progress)
    return CampaignResult(planned + grown, planned + grown - ran, ran)


def _run_trials(payload: Payload, todo: list[tuple[str, Trial]], db: ResultsDB, workers: int | None,
                scheduler: str | None, name: str, progress: bool) -> int:
    """Run ``todo``, committing each task's rows as it finishes; returns how many trials ran."""
    tasks = [todo[i : i + TASK_TRIALS] for i in range(0, len(todo), TASK_TRIALS)]
    bar = _progress(len(todo), name, progress)
    try:
        for rows in _execute(payload, tasks, workers, scheduler):
            db.add_trials(rows)
            bar.update(len(rows))
    finally:
        bar.close()
    return len(todo)


def _grown_points(spec: CampaignSpec, db: ResultsDB, labels: list[str]) -> tuple[int, list[tuple[str, Trial]]]:
    """(trials beyond the spec's counts the precision target asks for so far, those of them not yet run)."""
    grown, more = 0, []
    rows = db.trials(spec.name, board="emulator")
    for label in labels:
        asked, missing = grown_trials(spec, rows, label)
        grown += len(asked)
        more += [(label, t) for t in missing]
    return grown, more


def grown_trials(spec: CampaignSpec, rows: list[TrialRow], label: str) -> tuple[list[Trial], list[Trial]]:
    """The rate sweep trials of variant ``label`` beyond the spec's counts that its precision target asks for,
    given the emulator's ``rows`` so far, and those of them the rows lack. None asked without a target; a
    finished campaign lacks none (``hwflow deploy`` plans the board's trials with them)."""
    from hwflow.campaign.plan import fault_label, sweep_trial
    from hwflow.campaign.precision import trials_needed

    stored: dict[tuple, dict[int, float]] = {}
    for r in rows:
        if r.study == "sweep" and r.variant == label and r.board == "emulator":
            stored.setdefault((r.fault_model, float(r.rate)), {})[r.trial] = r.value
    asked, missing = [], []
    for fault in spec.faults:
        for rate in fault.rates:
            values = stored.get((fault_label(fault.spec), float(rate)), {})
            prefix = list(itertools.takewhile(lambda v: v is not None, (values.get(i) for i in itertools.count())))
            for i in range(fault.trials, trials_needed(prefix, fault.trials, spec.precision)):
                trial = sweep_trial(spec.seed, label, fault, rate, i)
                asked.append(trial)
                if i not in values:
                    missing.append(trial)
    return asked, missing


def _execute(payload: Payload, tasks: list, workers: int | None, scheduler: str | None) -> Iterator[list]:
    if not tasks:
        return
    if scheduler:
        from hwflow.campaign.dask_executor import run_on_dask

        yield from run_on_dask(payload, tasks, scheduler)
        return
    cores = os.cpu_count() or 1
    if workers is None and len(tasks) < PROCESS_TASKS * cores:
        # A short campaign: worker processes would spend longer starting (imports, the payload, a
        # fault-free pass each) than evaluating; the trials of each task run side by side on threads.
        for task in tasks:
            yield run_task(payload, task, threads=cores)
        return
    workers = workers or cores
    if workers <= 1 or len(tasks) == 1:
        for task in tasks:
            yield run_task(payload, task)
        return
    # "spawn": the parent may hold TensorFlow's threads, which do not survive a fork.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(payload,)) as pool:
        yield from pool.imap_unordered(_run_task_in_worker, tasks)


# --- worker side -------------------------------------------------------------------------------------

_WORKER_PAYLOAD: Payload | None = None
_EVALUATORS: dict[tuple[str, str], TrialEvaluator] = {}  # per process and run: the fault-free run of each variant


def _init_worker(payload: Payload) -> None:
    global _WORKER_PAYLOAD
    _WORKER_PAYLOAD = payload
    _limit_threads()


def _limit_threads() -> None:
    """One BLAS thread per worker process: the processes already use every core."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass


def _run_task_in_worker(task: list) -> list[TrialRow]:
    return run_task(_WORKER_PAYLOAD, task)


def _evaluator(payload: Payload, label: str) -> TrialEvaluator:
    key = (payload.run_id, label)
    if key not in _EVALUATORS:
        for stale in [k for k in _EVALUATORS if k[0] != payload.run_id]:  # an earlier run's variants
            del _EVALUATORS[stale]
        program, image = payload.variants[label]
        _EVALUATORS[key] = TrialEvaluator(program, image, payload.x, payload.y, payload.chunk,
                                          metric=payload.metrics.get(label), targets=payload.targets)
    return _EVALUATORS[key]


def run_task(payload: Payload, task: list[tuple[str, Trial]], threads: int = 1) -> list[TrialRow]:
    """Evaluate a few trials; pure function of its inputs (the evaluator cache only saves time).

    The trials of one variant go to the evaluator together (``evaluate_many``); each row records its
    share of the time they took."""
    from hwflow.faults import fault_model_from_spec

    rows = []
    for label, group in _by_variant(task):
        start = time.perf_counter()
        evaluator = _evaluator(payload, label)
        maps = [fault_model_from_spec(t.fault, t.key.rate).sample(evaluator.image, np.random.default_rng(t.seed))
                for t in group]
        outcomes = evaluator.evaluate_many(maps, threads=threads)
        seconds = (time.perf_counter() - start) / len(group)
        for trial, outcome in zip(group, outcomes, strict=True):
            k = trial.key
            rows.append(TrialRow(payload.campaign, k.variant, k.study, k.fault_model, k.target_layer, k.target_bit,
                                 k.rate, k.trial, trial.seed, outcome.faults, outcome.effective, evaluator.samples,
                                 outcome.correct, outcome.mismatches, "emulator", seconds, evaluator.metric.name,
                                 outcome.metric))
    return rows


def _by_variant(task: list[tuple[str, Trial]]) -> Iterator[tuple[str, list[Trial]]]:
    """Consecutive trials of the same variant, in task order."""
    for label, group in itertools.groupby(task, key=lambda item: item[0]):
        yield label, [trial for _, trial in group]


def _progress(total: int, name: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="trial", disable=not enabled or total == 0, smoothing=0.1)
