"""``hwflow pull``: merge a board's results database into a workstation one.

The board writes the same schema as the workstation (``hwflow.results``), with its own name in the
``board`` column, so merging is copying rows: the campaign (whose spec must be the one the
workstation has under that name), its fault-free baselines and its trials. Pulling twice is
harmless (identical rows are already there); a row that exists with *different* values is refused,
since two runs of one trial on one board must agree.

The source comes from another machine, so it is read-only and trusted in nothing: a file that is
not an hwflow results database (another SQLite file, a truncated or damaged one), a row of the
wrong type or out of range (``correct > samples``, a negative count, a rate outside [0, 1]), or a
trial whose seed is not the one its campaign's seed derives for its key (an edited key or seed)
is refused. Everything is checked before the target is touched, and the target is written in one
transaction: a refused pull leaves it exactly as it was (a missing target is created only once the
source has been accepted).
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from hwflow.results import Baseline, ResultsDB, TrialRow
from hwflow.results.db import SCHEMA_VERSION, ResultsError

_COMPARED = ("seed", "faults", "effective", "samples", "correct", "mismatches")
_STUDIES = ("sweep", "layer", "bit", "layer-bit")
_TABLES = {
    "meta": ("key", "value"),
    "campaigns": ("name", "spec", "created"),
    "baselines": tuple(Baseline.__dataclass_fields__),
    "trials": tuple(TrialRow.__dataclass_fields__),
}


@dataclass(frozen=True)
class PullResult:
    campaigns: tuple[str, ...]
    boards: tuple[str, ...]
    added: int  # trials copied
    present: int  # trials already in the target, identical
    baselines: int


@dataclass(frozen=True)
class _Source:
    """Everything read from the source, checked."""

    specs: dict[str, dict]  # campaign -> spec, in creation order
    baselines: list[Baseline]
    rows: list[TrialRow]


def pull(source: str | Path, into: str | Path) -> PullResult:
    """Copy every campaign, baseline and trial of ``source`` into ``into`` (created if missing)."""
    source, into = Path(source), Path(into)
    if not source.is_file():
        msg = f"{source}: no such results database (copy results.sqlite from the board's bundle folder first)"
        raise ResultsError(msg)
    if into.exists() and source.resolve() == into.resolve():
        msg = f"pulling {source} into itself: give the workstation's database with --into"
        raise ResultsError(msg)
    src = read_source(source)
    with ResultsDB(into) as dst:
        try:
            plan = _plan_campaigns(dst, src.specs)
            _check_conflicts(dst, src, source, into)
            with dst.conn:  # one transaction: all of it, or (on any error) none of it
                for name, action in plan.items():
                    text = json.dumps(src.specs[name], sort_keys=True)
                    if action == "insert":
                        dst.conn.execute("INSERT INTO campaigns VALUES (?, ?, ?)", (name, text, time.time()))
                    elif action == "replace":  # a stored campaign without trials (see register_campaign)
                        dst.conn.execute("UPDATE campaigns SET spec=? WHERE name=?", (text, name))
                        dst.conn.execute("DELETE FROM baselines WHERE campaign=?", (name,))
                columns = _TABLES["baselines"]
                dst.conn.executemany(
                    f"INSERT OR REPLACE INTO baselines ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' for _ in columns)})",
                    [tuple(getattr(b, c) for c in columns) for b in src.baselines])
                before = dst.conn.total_changes
                columns = _TABLES["trials"]
                dst.conn.executemany(
                    f"INSERT OR IGNORE INTO trials ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
                    [tuple(getattr(r, c) for c in columns) for r in src.rows])
                added = dst.conn.total_changes - before
        except sqlite3.Error as err:
            msg = f"{into}: cannot merge into it ({err}); nothing was written"
            raise ResultsError(msg) from None
    boards = tuple(sorted({r.board for r in src.rows} | {b.board for b in src.baselines}))
    return PullResult(tuple(src.specs), boards, added, len(src.rows) - added, len(src.baselines))


# --- the source: read-only, checked ------------------------------------------------------------------

def read_source(path: Path) -> _Source:
    """Every campaign, baseline and trial of a board's database, or a ResultsError saying what is wrong."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as err:
        msg = f"{path} cannot be opened as a results database ({err})"
        raise ResultsError(msg) from None
    try:
        _check_schema(conn, path)
        specs = {name: _spec(path, name, text) for name, text in
                 conn.execute("SELECT name, spec FROM campaigns ORDER BY created, name")}
        baselines = [_typed(path, Baseline, "baselines", r) for r in conn.execute(
            f"SELECT {', '.join(_TABLES['baselines'])} FROM baselines ORDER BY campaign, variant, board")]
        rows = [_typed(path, TrialRow, "trials", r) for r in conn.execute(
            f"SELECT {', '.join(_TABLES['trials'])} FROM trials ORDER BY campaign, variant, study, fault_model, "
            "target_layer, target_bit, rate, trial, board")]
    except (sqlite3.Error, UnicodeDecodeError) as err:  # a truncated or damaged file fails here (or in the check)
        msg = f"{path} is not a readable hwflow results database ({err}); copy it from the board again"
        raise ResultsError(msg) from None
    finally:
        conn.close()
    for b in baselines:
        _check_baseline(path, b, specs)
    for r in rows:
        _check_row(path, r, specs)
    return _Source(specs, baselines, rows)


def _check_schema(conn: sqlite3.Connection, path: Path) -> None:
    problem = conn.execute("PRAGMA quick_check").fetchone()[0]
    if problem != "ok":
        msg = f"{path} is damaged (SQLite's check: {problem}); copy it from the board again"
        raise ResultsError(msg)
    for table, columns in _TABLES.items():
        found = tuple(r[1] for r in conn.execute(f"PRAGMA table_info({table})"))
        if found != columns:
            what = "has no table" if not found else f"has another table ({', '.join(found)}) as"
            msg = f"{path} is not an hwflow results database: it {what} {table!r}"
            raise ResultsError(msg)
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None or str(row[0]) != str(SCHEMA_VERSION):
        msg = (f"{path}: results schema {row[0] if row else 'missing'}, this hwflow reads schema {SCHEMA_VERSION}; "
               "run the board with the hwflow this workstation has")
        raise ResultsError(msg)


_TEXT, _INT, _NUMBER = (str,), (int,), (int, float)
_TYPES = {"campaign": _TEXT, "variant": _TEXT, "study": _TEXT, "fault_model": _TEXT, "target_layer": _TEXT,
          "board": _TEXT, "metric": _TEXT, "target_bit": _INT, "trial": _INT, "seed": _INT, "faults": _INT,
          "effective": _INT, "samples": _INT, "correct": _INT, "mismatches": _INT, "higher_is_better": _INT,
          "rate": _NUMBER, "seconds": _NUMBER, "metric_value": (int, float, type(None))}


def _typed(path: Path, cls, table: str, raw: tuple):
    """A row as ``cls``, once every cell has its column's type (SQLite stores any value in any column)."""
    for column, value in zip(_TABLES[table], raw, strict=True):
        kinds = _TYPES.get(column, (str, int, float, type(None)))
        if isinstance(value, bool) or not isinstance(value, kinds):
            _refuse(path, f"{table} row {raw[:3]!r}", f"{column} holds {value!r}, not a {kinds[0].__name__}")
    return cls(*raw)


def _spec(path: Path, name: object, text: object) -> dict:
    try:
        spec = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        spec = None
    if not isinstance(name, str) or not isinstance(spec, dict) or not _is_int(spec.get("seed")):
        msg = f"{path}: campaign {name!r} has no readable spec (a JSON object with its seed): the file was altered"
        raise ResultsError(msg)
    return spec


def _is_int(value: object, low: int = 0, high: int = 2**63 - 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_number(value: object, low: float, high: float) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and low <= value <= high)


def _refuse(path: Path, what: str, problem: str):
    msg = f"{path}: {what}: {problem}; the file was altered or damaged, copy it from the board again"
    raise ResultsError(msg)


def _check_baseline(path: Path, b: Baseline, specs: dict) -> None:
    what = f"fault-free run of {b.campaign!r} {b.variant!r} on {b.board!r}"
    if not all(isinstance(v, str) for v in (b.campaign, b.variant, b.board)):
        _refuse(path, what, "a name is not text")
    if b.campaign not in specs:
        _refuse(path, what, "its campaign is not in the file")
    if not (_is_int(b.samples, 1) and _is_int(b.correct, 0, b.samples)):
        _refuse(path, what, f"{b.correct!r} correct of {b.samples!r} samples")


def _check_row(path: Path, r: TrialRow, specs: dict) -> None:
    from hwflow.campaign.plan import trial_seed

    what = f"trial {r.trial!r} of {r.campaign!r} {r.variant!r} {r.fault_model!r} rate {r.rate!r} on {r.board!r}"
    if not all(isinstance(v, str) for v in (r.campaign, r.variant, r.study, r.fault_model, r.target_layer, r.board)):
        _refuse(path, what, "a name is not text")
    if r.campaign not in specs:
        _refuse(path, what, "its campaign is not in the file")
    if r.study not in _STUDIES:
        _refuse(path, what, f"unknown study {r.study!r}")
    checks = (("target_bit", _is_int(r.target_bit, -1, 63)), ("rate", _is_number(r.rate, 0.0, 1.0)),
              ("trial", _is_int(r.trial)), ("seed", _is_int(r.seed)), ("faults", _is_int(r.faults)),
              ("samples", _is_int(r.samples, 1)), ("seconds", _is_number(r.seconds, 0.0, math.inf)))
    bad = [name for name, ok in checks if not ok]
    if bad:
        _refuse(path, what, f"{bad[0]} {getattr(r, bad[0])!r} is not a valid value")
    for name in ("effective", "correct", "mismatches"):
        bound = r.faults if name == "effective" else r.samples
        if not _is_int(getattr(r, name), 0, bound):
            _refuse(path, what, f"{name} {getattr(r, name)!r} is outside 0..{bound}")
    expected = trial_seed(specs[r.campaign]["seed"], r.key)
    if r.seed != expected:
        _refuse(path, what, f"seed {r.seed} is not the seed campaign seed {specs[r.campaign]['seed']} gives this "
                f"trial ({expected})")


# --- the target: everything checked before the one transaction ------------------------------------

def _plan_campaigns(dst: ResultsDB, specs: dict[str, dict]) -> dict[str, str]:
    """Per campaign: ``insert``, ``keep`` (same spec) or ``replace`` (the stored one has no trials), with
    ``ResultsDB.register_campaign``'s rules; a different spec over stored trials is refused."""
    plan = {}
    for name, spec in specs.items():
        text = json.dumps(spec, sort_keys=True)
        row = dst.conn.execute("SELECT spec FROM campaigns WHERE name=?", (name,)).fetchone()
        if row is None:
            plan[name] = "insert"
        elif row[0] == text:
            plan[name] = "keep"
        elif dst.trial_count(name) == 0:
            plan[name] = "replace"
        else:
            msg = (f"{dst.path} already holds a campaign named {name!r} with a different spec: pull into another "
                   "database, or rerun the board with the spec the workstation ran")
            raise ResultsError(msg)
    return plan


def _check_conflicts(dst: ResultsDB, src: _Source, source: Path, into: Path) -> None:
    existing = {(r.campaign, r.key, r.board): r for r in dst.trials()}
    conflicts = []
    for r in src.rows:
        old = existing.get((r.campaign, r.key, r.board))
        if old is not None and any(getattr(old, f) != getattr(r, f) for f in _COMPARED):
            conflicts.append((old, r))
    if conflicts:
        old, new = conflicts[0]
        diff = ", ".join(f"{f} {getattr(old, f)} vs {getattr(new, f)}" for f in _COMPARED
                         if getattr(old, f) != getattr(new, f))
        msg = (f"{len(conflicts)} trial(s) of {source} are already in {into} for board {new.board} with other "
               f"results (first: {new.campaign} {new.variant} {new.fault_model} rate {new.rate:g} "
               f"trial {new.trial}: "
               f"{diff}); pull into a fresh database, or record the new run under another board name")
        raise ResultsError(msg)
    for b in src.baselines:
        same = [o for o in dst.baselines(b.campaign) if (o.variant, o.board) == (b.variant, b.board)]
        if same and (same[0].samples, same[0].correct) != (b.samples, b.correct):
            msg = (f"{into} already has a different fault-free run of {b.campaign} {b.variant} on {b.board} "
                   f"({same[0].correct}/{same[0].samples} vs {b.correct}/{b.samples}); pull into a fresh database")
            raise ResultsError(msg)
