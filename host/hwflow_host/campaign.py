"""The campaign loop on a Board: the same code for the PYNQ board, the emulator and the C-sim.

The workstation plans the campaign (``hwflow deploy``: trial keys, seeds, fault model specs and the
digest of each trial's FaultMap) and the host runs it:

1. scrub: write every golden word, read them all back (a word that does not read back is a hard
   fault of the device: ``HardFaultError``, nothing more is recorded). Done first on every start,
   so a campaign interrupted by a reboot or a power loss resumes on clean weights;
2. the fault-free run of the test set: the baseline, and the reference for mismatches;
3. per trial not yet in the database: sample the FaultMap from the trial's seed with hwflow's own
   fault models (its digest must equal the workstation's, else numpy samples differently here and
   the campaign stops), apply it as a read-modify-write of each touched word
   (``new = ((stored ^ flips) & ~stuck0) | stuck1``), check the faulty words read back, run the test
   set, scrub, and commit the trial (one transaction per trial).

Stuck-at faults are emulated: the memory is not really stuck, so every write of the trial to a word
with a stuck bit goes through ``StuckBits.force`` (the bit is forced again after each write); the
scrub ends the trial's faults. A trial is recorded only after the scrub verified the memory, so a
hard fault found by the scrub never leaves a trial measured on corrupted weights in the results.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwflow.faults import FaultMap, fault_model_from_spec
from hwflow.image import WeightImage
from hwflow.metrics import MetricError, MetricSpec, Scorer, metric_of_spec, output_values, reference
from hwflow.results import Baseline, ResultsDB, TrialKey, TrialRow
from hwflow_host.board import Board, CampaignError, HardFaultError, check_address, read_words, write_words

log = logging.getLogger(__name__)

PLAN_FORMAT = "hwflow-campaign-plan"
PLAN_VERSION = 1
_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


@dataclass(frozen=True)
class HostTrial:
    """One planned trial: its key, its seed, its fault model spec and the digest of its FaultMap."""

    key: TrialKey
    seed: int
    fault: dict
    digest: str | None = None  # FaultMap.digest() on the workstation; None: not checked

    def to_json(self) -> dict:
        k = self.key
        return {"study": k.study, "fault_model": k.fault_model, "target_layer": k.target_layer,
                "target_bit": k.target_bit, "rate": k.rate, "trial": k.trial, "seed": self.seed,
                "fault": self.fault, "digest": self.digest}

    def sample(self, image: WeightImage) -> FaultMap:
        """The trial's FaultMap: the workstation's fault model code, the trial's own seed."""
        model = fault_model_from_spec(self.fault, self.key.rate)
        return model.sample(image, np.random.default_rng(self.seed))


@dataclass(frozen=True)
class CampaignPlan:
    """The trials one variant runs, planned on the workstation (``hwflow.deploy``)."""

    campaign: str
    spec: dict  # the campaign spec as JSON (CampaignSpec.to_json()): registered with the results
    variant: str  # "<model>/<variant>"
    samples: int  # test samples per trial
    trials: tuple[HostTrial, ...]

    def to_json(self) -> dict:
        return {"format": PLAN_FORMAT, "version": PLAN_VERSION, "campaign": self.campaign, "spec": self.spec,
                "variant": self.variant, "samples": self.samples, "trials": [t.to_json() for t in self.trials]}

    @classmethod
    def from_json(cls, data: object, where: str = "campaign plan") -> CampaignPlan:
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            msg = f"{where}: not an hwflow campaign plan (written by `hwflow deploy`)"
            raise CampaignError(msg)
        if data.get("version") != PLAN_VERSION:
            msg = f"{where}: plan version {data.get('version')!r}, this host reads version {PLAN_VERSION}"
            raise CampaignError(msg)
        try:
            variant = str(data["variant"])
            trials = tuple(
                HostTrial(TrialKey(variant, str(t["study"]), str(t["fault_model"]), str(t["target_layer"]),
                                   int(t["target_bit"]), float(t["rate"]), int(t["trial"])),
                          int(t["seed"]), dict(t["fault"]), t.get("digest"))
                for t in data["trials"])
            plan = cls(str(data["campaign"]), dict(data["spec"]), variant, int(data["samples"]), trials)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:  # a field of the wrong kind
            msg = f"{where}: malformed campaign plan ({err!r})"
            raise CampaignError(msg) from None
        bad = [t.seed for t in plan.trials if t.seed < 0]  # numpy takes no negative seed
        if bad or plan.samples < 1:
            msg = (f"{where}: malformed campaign plan (seed {bad[0]} is negative)" if bad else
                   f"{where}: malformed campaign plan ({plan.samples} samples)") + "; redeploy with hwflow deploy"
            raise CampaignError(msg)
        return plan

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), separators=(",", ":")))
        return path

    @classmethod
    def load(cls, path: str | Path) -> CampaignPlan:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError) as err:
            msg = f"{path}: cannot read the campaign plan ({err})"
            raise CampaignError(msg) from None
        return cls.from_json(data, str(path))


@dataclass(frozen=True)
class HostResult:
    planned: int
    skipped: int  # already in the database (resumed)
    ran: int
    baseline_correct: int
    seconds: float
    metric: str = "top1"
    baseline_value: float = float("nan")  # the fault-free value of the metric


class StuckBits:
    """The emulated stuck-at bits of the current trial: a write to a word with a stuck bit keeps
    that bit at its stuck value (``force``), until the scrub ends the trial."""

    def __init__(self, addrs: np.ndarray, and_: np.ndarray, or_: np.ndarray, widths: np.ndarray):
        full = (np.left_shift(np.uint64(1), widths.astype(np.uint64)) - np.uint64(1)).astype(np.uint64)
        stuck = (and_ != full) | (or_ != 0)
        self.masks = {int(a): (int(x), int(o)) for a, x, o in zip(addrs[stuck], and_[stuck], or_[stuck], strict=True)}

    def force(self, addrs: np.ndarray, values: np.ndarray) -> np.ndarray:
        out = np.array(values, dtype=np.uint64)
        for i, a in enumerate(np.asarray(addrs).tolist()):
            if a in self.masks:
                and_, or_ = self.masks[a]
                out[i] = (int(out[i]) & and_) | or_
        return out


def golden_words(image: WeightImage, addrs: np.ndarray) -> np.ndarray:
    """The golden words at image word ``addrs``; an address outside the image is a BoardError."""
    words = np.concatenate([a.words for a in image]) if len(image) else np.zeros(0, np.uint64)
    addrs = np.asarray(addrs, dtype=np.int64).reshape(-1)
    outside = (addrs < 0) | (addrs >= words.size)
    if np.any(outside):
        check_address(int(addrs[outside][0]), int(words.size))  # raises, naming the address
    return words[addrs]


def scrub(board: Board, image: WeightImage, addrs: np.ndarray) -> None:
    """Rewrite the golden words at ``addrs`` and read them all back; a word that does not read back
    is a hard fault of the device."""
    golden = golden_words(image, addrs)
    write_words(board, addrs, golden)
    back = read_words(board, addrs)
    bad = np.flatnonzero(back != golden)
    if bad.size:
        raise HardFaultError(_hard_fault_message(image, addrs[bad], golden[bad], back[bad], "scrub"))


def _hard_fault_message(image: WeightImage, addrs, expected, got, when: str) -> str:
    shown = []
    for a, e, g in list(zip(addrs.tolist(), expected.tolist(), got.tolist(), strict=True))[:5]:
        arr, index = image.locate(int(a))
        shown.append(f"address {a} ({arr.key}[{index}]): wrote {int(e):#x}, read {int(g):#x}")
    more = f" and {len(addrs) - 5} more" if len(addrs) > 5 else ""
    return (f"hard fault of the device during the {when}: {len(addrs)} weight word(s) do not read back what was "
            f"written: {'; '.join(shown)}{more}. The campaign stopped; the trials recorded so far are intact. "
            "Check the board (power, reset, another board) before resuming.")


def host_scorer(plan: CampaignPlan, golden_out: np.ndarray, x: np.ndarray, y: np.ndarray,
                output_frac: int | None, targets: np.ndarray | None = None) -> tuple[MetricSpec, Scorer]:
    """The campaign's metric for the plan's variant (from the plan's spec), bound to the board's fault-free
    outputs: the same ``hwflow.metrics`` code the workstation's engine scores with."""
    spec = metric_of_spec(plan.spec, plan.variant)
    if output_frac is None and spec.name != "top1":
        msg = (f"metric {spec.name} scores output values: pass the output type's fractional bits (output_frac, "
               "from the bundle's manifest)")
        raise CampaignError(msg)
    try:
        ref = reference(spec, x, y, targets)
        return spec, Scorer(spec.metric, ref, output_values(golden_out, output_frac or 0))
    except MetricError as err:
        msg = (f"metric {spec.name} cannot score this bundle's outputs ({err}); the host has the inputs and labels "
               "and labels, and the targets only when hwflow deploy found them in the .npz (targets_<split>)")
        raise CampaignError(msg) from None


def run_host_campaign(board: Board, image: WeightImage, plan: CampaignPlan, x: np.ndarray, y: np.ndarray,
                      db_path: str | Path, board_name: str | None = None, *, max_trials: int | None = None,
                      addresses: np.ndarray | None = None,
                      on_trial: Callable[[int, int, TrialRow], None] | None = None,
                      output_frac: int | None = None, targets: np.ndarray | None = None) -> HostResult:
    """Run (or resume) ``plan`` on ``board``, committing one row per trial to ``db_path``.

    ``output_frac``: fractional bits of the output type (the manifest's), to score a metric on output values;
    top-1 needs none (the arg-max of the codes). ``targets``: a regression metric's targets (the bundle's).

    ``addresses``: the image words the scrub rewrites (default: every word of the image).
    ``max_trials``: stop after this many new trials (the rest resume on the next call).
    ``on_trial(done, total, row)``: called after each committed trial (progress display).
    """
    start = time.perf_counter()
    name = board_name or getattr(board, "name", None) or "board"
    y = np.asarray(y)
    if len(x) != len(y) or len(y) != plan.samples:
        msg = f"the plan expects {plan.samples} samples, the bundle holds {len(x)} inputs and {len(y)} labels"
        raise CampaignError(msg)
    addrs = np.arange(image.total_words, dtype=np.int64) if addresses is None else np.asarray(addresses, np.int64)
    widths = np.concatenate([np.full(a.size, a.format.width, np.int64) for a in image])
    with ResultsDB(db_path) as db:
        db.register_campaign(plan.campaign, plan.spec)
        done = db.done(plan.campaign, name)
        pending = [t for t in plan.trials if t.key not in done]
        todo = pending if max_trials is None else pending[:max_trials]
        log.info("%s on %s: %d trials planned, %d already done, %d to run", plan.campaign, name, len(plan.trials),
                 len(plan.trials) - len(pending), len(todo))
        scrub(board, image, addrs)  # first: whatever a reboot or a power loss left in the memories
        golden_out = np.asarray(board.run(x), dtype=np.int64).reshape(len(y), -1)
        golden_correct = int(np.sum(np.argmax(golden_out, axis=1) == y))
        spec, scorer = host_scorer(plan, golden_out, x, y, output_frac, targets)
        _check_baseline(db, Baseline(plan.campaign, plan.variant, name, len(y), golden_correct, scorer.metric.name,
                                     scorer.golden_value, scorer.metric.higher_is_better))
        for n, trial in enumerate(todo, 1):
            row = run_trial(board, image, trial, x, y, golden_out, widths, addrs, plan.campaign, name,
                            (scorer, output_frac or 0))
            db.add_trials([row])
            if on_trial is not None:
                on_trial(n, len(todo), row)
    return HostResult(len(plan.trials), len(plan.trials) - len(pending), len(todo), golden_correct,
                      time.perf_counter() - start, scorer.metric.name, scorer.golden_value)


def _check_baseline(db: ResultsDB, baseline: Baseline) -> None:
    """Record the fault-free run; a resumed campaign must see the same one (else its mismatch
    counts would mix two references)."""
    for old in db.baselines(baseline.campaign):
        if (old.variant, old.board) == (baseline.variant, baseline.board) and \
                (old.samples, old.correct) != (baseline.samples, baseline.correct):
            msg = (f"the fault-free run on {baseline.board} now gives {baseline.correct}/{baseline.samples} correct, "
                   f"the recorded one {old.correct}/{old.samples}: the device or the bundle changed since the "
                   "campaign started; use another --db for the new setup")
            raise CampaignError(msg)
    db.put_baseline(baseline)


def run_trial(board: Board, image: WeightImage, trial: HostTrial, x: np.ndarray, y: np.ndarray,
              golden_out: np.ndarray, widths: np.ndarray, scrub_addrs: np.ndarray, campaign: str,
              board_name: str, metric: tuple[Scorer, int] | None = None) -> TrialRow:
    """Sample, apply, run, scrub: one trial's row (not yet committed). ``metric``: the campaign's scorer and
    the output's fractional bits (None: top-1 from the counts); samples whose outputs did not change keep
    their fault-free terms."""
    start = time.perf_counter()
    faultmap = trial.sample(image)
    if trial.digest is not None and faultmap.digest() != trial.digest:
        msg = (f"trial {trial.key} (seed {trial.seed}): the FaultMap sampled here differs from the workstation's "
               f"(numpy {np.__version__} draws differently from the numpy that planned the campaign): results "
               "would not be comparable. Install the workstation's numpy version on the board, or ship the maps")
        raise CampaignError(msg)
    addrs, xor, and_, or_ = faultmap.touched_words(image)
    stuck = StuckBits(addrs, and_, or_, widths[addrs])
    old = read_words(board, addrs)
    new = ((old ^ xor) & and_) | or_
    changed = new != old
    write_words(board, addrs[changed], stuck.force(addrs[changed], new[changed]))
    back = read_words(board, addrs[changed])
    if np.any(back != new[changed]):
        bad = np.flatnonzero(back != new[changed])
        raise HardFaultError(_hard_fault_message(image, addrs[changed][bad], new[changed][bad], back[bad],
                                                 "fault injection"))
    effective = int(_POPCOUNT8[(old ^ new).astype(np.uint64).view(np.uint8)].sum())
    out = np.asarray(board.run(x), dtype=np.int64).reshape(len(y), -1)
    scrub(board, image, scrub_addrs)
    correct = int(np.sum(np.argmax(out, axis=1) == y))
    changed = np.flatnonzero(np.any(out != golden_out, axis=1))
    mismatches = int(changed.size)
    name, value = "top1", correct / len(y)
    if metric is not None:
        scorer, frac = metric
        name, value = scorer.metric.name, scorer.value(changed, output_values(out[changed], frac))
    k = trial.key
    return TrialRow(campaign, k.variant, k.study, k.fault_model, k.target_layer, k.target_bit, k.rate, k.trial,
                    trial.seed, len(faultmap), effective, len(y), correct, mismatches, board_name,
                    time.perf_counter() - start, name, value)
