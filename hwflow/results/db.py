"""The results database: a row per trial, written in transactions, so a killed campaign resumes.

One schema serves the emulator, the C simulation and the board (``board`` column), so results from
different places can be merged and compared trial by trial (same campaign, key and seed). SQLite's
journal makes each committed transaction durable: after a SIGKILL the database holds exactly the
trials whose transaction committed, and a rerun skips them (``done``), so nothing is lost or
counted twice.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from hwflow.errors import HwflowError

SCHEMA_VERSION = 2
"""2: the task's metric (name and value) on every trial and baseline, the direction on baselines; a schema-1
file is migrated when opened (its rows are top-1 accuracies: ``metric_value = correct / samples``)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS campaigns (
    name TEXT PRIMARY KEY,          -- the campaign's name (from its spec)
    spec TEXT NOT NULL,             -- the spec as JSON, to refuse resuming with a different one
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS baselines (
    campaign TEXT NOT NULL,
    variant TEXT NOT NULL,          -- model and hardening, e.g. "cnn-digits/baseline"
    board TEXT NOT NULL,            -- where it ran: emulator, csim, or a board name
    samples INTEGER NOT NULL,
    correct INTEGER NOT NULL,       -- fault-free correct predictions
    metric TEXT NOT NULL DEFAULT 'top1',  -- the campaign's metric for this variant (hwflow.metrics)
    metric_value REAL,              -- its fault-free value (NULL: undefined, e.g. an AUC without both classes)
    higher_is_better INTEGER NOT NULL DEFAULT 1,  -- the metric's direction: 1 higher is better, 0 lower
    PRIMARY KEY (campaign, variant, board)
);
CREATE TABLE IF NOT EXISTS trials (
    campaign TEXT NOT NULL,
    variant TEXT NOT NULL,
    study TEXT NOT NULL,            -- "sweep", or "layer" / "bit" for sensitivity trials
    fault_model TEXT NOT NULL,      -- label of the fault model (with its restriction)
    target_layer TEXT NOT NULL,     -- layer the faults were restricted to, "" when not restricted
    target_bit INTEGER NOT NULL,    -- bit position the faults were restricted to, -1 when not
    rate REAL NOT NULL,
    trial INTEGER NOT NULL,         -- index of the trial at this (variant, fault model, rate)
    seed INTEGER NOT NULL,          -- the trial's own seed: np.random.default_rng(seed) resamples its faults
    faults INTEGER NOT NULL,        -- faults applied
    effective INTEGER NOT NULL,     -- faults that changed a stored bit
    samples INTEGER NOT NULL,
    correct INTEGER NOT NULL,
    mismatches INTEGER NOT NULL,    -- samples whose output differs from the fault-free run
    board TEXT NOT NULL,
    seconds REAL NOT NULL,
    metric TEXT NOT NULL DEFAULT 'top1',  -- the metric of this trial (the campaign's, or the model's own)
    metric_value REAL,              -- its value under the trial's faults (NULL: undefined)
    PRIMARY KEY (campaign, variant, study, fault_model, target_layer, target_bit, rate, trial, board)
);
"""

_MIGRATE_1_TO_2 = """
ALTER TABLE baselines ADD COLUMN metric TEXT NOT NULL DEFAULT 'top1';
ALTER TABLE baselines ADD COLUMN metric_value REAL;
ALTER TABLE baselines ADD COLUMN higher_is_better INTEGER NOT NULL DEFAULT 1;
UPDATE baselines SET metric_value = CAST(correct AS REAL) / samples WHERE samples > 0;
ALTER TABLE trials ADD COLUMN metric TEXT NOT NULL DEFAULT 'top1';
ALTER TABLE trials ADD COLUMN metric_value REAL;
UPDATE trials SET metric_value = CAST(correct AS REAL) / samples WHERE samples > 0;
UPDATE meta SET value = '2' WHERE key = 'schema_version';
"""


def _top1_default(row) -> None:
    """Rows made without a metric are top-1 rows: their value is the accuracy (frozen: set once here)."""
    if row.metric_value is None and row.metric == "top1" and row.samples:
        object.__setattr__(row, "metric_value", row.correct / row.samples)


class ResultsError(HwflowError):
    """The results database is unreadable, of another schema, or disagrees with the campaign."""


@dataclass(frozen=True)
class TrialKey:
    """What identifies a trial: rerunning the same key must give the same result."""

    variant: str
    study: str
    fault_model: str
    target_layer: str
    target_bit: int
    rate: float
    trial: int


@dataclass(frozen=True)
class TrialRow:
    campaign: str
    variant: str
    study: str
    fault_model: str
    target_layer: str
    target_bit: int
    rate: float
    trial: int
    seed: int
    faults: int
    effective: int
    samples: int
    correct: int
    mismatches: int
    board: str = "emulator"
    seconds: float = 0.0
    metric: str = "top1"
    """The metric this trial was scored with (``hwflow.metrics.get(metric)`` gives its direction)."""
    metric_value: float | None = None
    """Its value; None: undefined (a top-1 row made without one gets ``correct / samples``)."""

    def __post_init__(self) -> None:
        _top1_default(self)

    @property
    def value(self) -> float:
        """The metric's value, NaN when undefined."""
        return float(self.metric_value) if self.metric_value is not None else float("nan")

    @property
    def key(self) -> TrialKey:
        return TrialKey(self.variant, self.study, self.fault_model, self.target_layer, self.target_bit,
                        self.rate, self.trial)

    @property
    def accuracy(self) -> float:
        return self.correct / self.samples if self.samples else float("nan")


@dataclass(frozen=True)
class Baseline:
    campaign: str
    variant: str
    board: str
    samples: int
    correct: int
    metric: str = "top1"
    metric_value: float | None = None
    higher_is_better: bool = True

    def __post_init__(self) -> None:
        _top1_default(self)
        object.__setattr__(self, "higher_is_better", bool(self.higher_is_better))

    @property
    def value(self) -> float:
        return float(self.metric_value) if self.metric_value is not None else float("nan")

    @property
    def accuracy(self) -> float:
        return self.correct / self.samples if self.samples else float("nan")


_BASELINE_COLUMNS = tuple(Baseline.__dataclass_fields__)
_TRIAL_COLUMNS = tuple(TrialRow.__dataclass_fields__)


class ResultsDB:
    """A results file; opening creates the schema, or checks the one that is there."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_file():
            msg = f"{self.path} is not a file: give a path for the results database (e.g. results.sqlite)"
            raise ResultsError(msg)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=60)
            self.conn.executescript(SCHEMA)
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                with self.conn:
                    self.conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif row[0] == "1":
                with self.conn:
                    for statement in _MIGRATE_1_TO_2.strip().split(";\n"):
                        self.conn.execute(statement.rstrip(";"))
            elif int(row[0]) != SCHEMA_VERSION:
                msg = f"{self.path}: results schema {row[0]}, this hwflow writes schema {SCHEMA_VERSION}"
                raise ResultsError(msg)
        except sqlite3.DatabaseError as err:
            msg = f"{self.path} is not an hwflow results database ({err})"
            raise ResultsError(msg) from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- campaigns --------------------------------------------------------------------------------

    def register_campaign(self, name: str, spec: dict, extends=None) -> None:
        """Record a campaign, or check that a resumed one has the same spec (else its trials would mix).

        ``extends(old, new) -> bool``: a predicate accepting a changed spec as a continuation of the
        stored one (e.g. more trials of the same trials); the stored spec is then replaced by ``spec``.

        A stored campaign without a single trial (one that failed before its first trial, e.g. on its
        data) holds no results to mix: a changed spec replaces it, and its fault-free baselines go with it.
        """
        text = json.dumps(spec, sort_keys=True)
        row = self.conn.execute("SELECT spec FROM campaigns WHERE name=?", (name,)).fetchone()
        if row is None:
            with self.conn:
                self.conn.execute("INSERT INTO campaigns VALUES (?, ?, ?)", (name, text, time.time()))
        elif row[0] != text and self.trial_count(name) == 0:
            with self.conn:
                self.conn.execute("UPDATE campaigns SET spec=? WHERE name=?", (text, name))
                self.conn.execute("DELETE FROM baselines WHERE campaign=?", (name,))
        elif row[0] != text and extends is not None and extends(json.loads(row[0]), spec):
            with self.conn:
                self.conn.execute("UPDATE campaigns SET spec=? WHERE name=?", (text, name))
        elif row[0] != text:
            msg = (f"{self.path} already holds a campaign named {name!r} with a different spec: use another --db, "
                   "or another campaign name, to keep results apart (only raising trial counts continues a campaign)")
            raise ResultsError(msg)

    def trial_count(self, campaign: str) -> int:
        """Trials recorded for ``campaign``, on every board."""
        return int(self.conn.execute("SELECT COUNT(*) FROM trials WHERE campaign=?", (campaign,)).fetchone()[0])

    def campaigns(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM campaigns ORDER BY created")]

    def campaign_spec(self, name: str) -> dict:
        row = self.conn.execute("SELECT spec FROM campaigns WHERE name=?", (name,)).fetchone()
        if row is None:
            msg = f"{self.path} has no campaign {name!r}; it has: {', '.join(self.campaigns()) or 'none'}"
            raise ResultsError(msg)
        return json.loads(row[0])

    # --- baselines and trials -------------------------------------------------------------------

    def put_baseline(self, baseline: Baseline) -> None:
        with self.conn:
            self.conn.execute(f"INSERT OR REPLACE INTO baselines ({', '.join(_BASELINE_COLUMNS)}) "
                              f"VALUES ({', '.join('?' for _ in _BASELINE_COLUMNS)})",
                              tuple(getattr(baseline, c) for c in _BASELINE_COLUMNS))

    def baselines(self, campaign: str | None = None) -> list[Baseline]:
        sql, args = f"SELECT {', '.join(_BASELINE_COLUMNS)} FROM baselines", ()
        if campaign is not None:
            sql, args = sql + " WHERE campaign=?", (campaign,)
        return [Baseline(*r) for r in self.conn.execute(sql + " ORDER BY campaign, variant, board", args)]

    def metric(self, campaign: str, variant: str | None = None) -> tuple[str, bool]:
        """The metric ``campaign`` (one variant, or its first) was scored with: ``(name, higher_is_better)``,
        from the fault-free runs; ``("top1", True)`` for a campaign without one."""
        sql, args = "SELECT metric, higher_is_better FROM baselines WHERE campaign=?", [campaign]
        if variant is not None:
            sql, args = sql + " AND variant=?", [*args, variant]
        row = self.conn.execute(sql + " ORDER BY variant, board LIMIT 1", args).fetchone()
        return (str(row[0]), bool(row[1])) if row is not None else ("top1", True)

    def add_trials(self, rows: Iterable[TrialRow]) -> int:
        """Insert trials in one transaction (all or none); a trial already present is kept, not doubled."""
        values = [tuple(asdict(r)[c] for c in _TRIAL_COLUMNS) for r in rows]
        with self.conn:
            before = self.conn.total_changes
            self.conn.executemany(
                f"INSERT OR IGNORE INTO trials ({', '.join(_TRIAL_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in _TRIAL_COLUMNS)})", values)
            return self.conn.total_changes - before

    def done(self, campaign: str, board: str = "emulator") -> set[TrialKey]:
        """Keys of the trials already recorded: a resumed campaign skips them."""
        rows = self.conn.execute(
            "SELECT variant, study, fault_model, target_layer, target_bit, rate, trial FROM trials "
            "WHERE campaign=? AND board=?", (campaign, board))
        return {TrialKey(*r) for r in rows}

    def trials(self, campaign: str | None = None, board: str | None = None) -> list[TrialRow]:
        sql, where, args = f"SELECT {', '.join(_TRIAL_COLUMNS)} FROM trials", [], []
        if campaign is not None:
            where.append("campaign=?")
            args.append(campaign)
        if board is not None:
            where.append("board=?")
            args.append(board)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY campaign, variant, study, fault_model, target_layer, target_bit, rate, trial, board"
        return [TrialRow(*r) for r in self.conn.execute(sql, args)]
