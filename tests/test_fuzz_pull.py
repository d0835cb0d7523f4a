"""Fuzzing ``hwflow pull`` (``hwflow.deploy.pull``): tampered, truncated, damaged and foreign SQLite files.

A board's database that is altered (any cell set to any value, a table dropped or rebuilt), cut
short, bit-flipped, or that is some other SQLite file, is either merged (when what is left is a
valid set of results) or refused with a ResultsError; a refused pull leaves the target byte for
byte as it was (and does not create a missing one). What is merged satisfies the results'
invariants (counts within their samples, seeds derived from the campaign's seed).
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from hwflow.campaign.plan import trial_seed
from hwflow.deploy import pull
from hwflow.errors import HwflowError
from hwflow.results import Baseline, ResultsDB, TrialKey, TrialRow
from hwflow.results.db import ResultsError
from tests.fuzzing import answers, fuzz_settings

SPEC = {"name": "c", "seed": 5, "dataset": "digits", "models": [{"zoo": "mlp-digits"}]}


def _row(trial: int, rate: float, board: str, correct: int) -> TrialRow:
    key = TrialKey("mlp/baseline", "sweep", "bitflip", "", -1, rate, trial)
    return TrialRow("c", *(getattr(key, f) for f in ("variant", "study", "fault_model", "target_layer",
                                                     "target_bit", "rate", "trial")),
                    trial_seed(SPEC["seed"], key), 3, 3, 40, correct, 40 - correct, board, 0.01)


def _database(path: Path, board: str, trials: range) -> bytes:
    with ResultsDB(path) as db:
        db.register_campaign("c", SPEC)
        db.put_baseline(Baseline("c", "mlp/baseline", board, 40, 38))
        db.add_trials([_row(t, rate, board, 30 + t) for t in trials for rate in (1e-3, 1e-2)])
    return path.read_bytes()


with tempfile.TemporaryDirectory() as _tmp:
    SOURCE = _database(Path(_tmp) / "board.sqlite", "pynq-z2", range(4))
    TARGET = _database(Path(_tmp) / "ws.sqlite", "emulator", range(3))

COLUMNS = {"trials": tuple(TrialRow.__dataclass_fields__), "baselines": tuple(Baseline.__dataclass_fields__),
           "campaigns": ("name", "spec", "created"), "meta": ("key", "value")}
VALUES = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=6), st.binary(max_size=4),
                   st.sampled_from([0, 1, 40, 41, -1, 0.5, 2.0, "sweep", "c", "{}", '{"seed": 5}', "2", 63, 64]))


def _edits():
    cell = st.tuples(st.just("set"), st.sampled_from(sorted(COLUMNS)), st.integers(1, 9)).flatmap(
        lambda t: st.tuples(st.just(t), st.sampled_from(COLUMNS[t[1]]), VALUES))
    sql = st.sampled_from([
        "DROP TABLE trials", "DROP TABLE meta", "DELETE FROM campaigns", "DELETE FROM meta",
        "ALTER TABLE trials RENAME COLUMN seed TO seeds", "ALTER TABLE baselines ADD COLUMN extra INTEGER",
        "DROP TABLE baselines; CREATE TABLE baselines (campaign TEXT, x INTEGER)",
        "INSERT INTO trials (campaign) VALUES ('c')", "UPDATE meta SET value='2'",
        "INSERT INTO campaigns VALUES ('d', 'not json', 0)",
        "UPDATE trials SET trial = trial + 100", "UPDATE trials SET board = 'other'",
    ]).map(lambda q: (("sql", q), None, None))
    return st.lists(st.one_of(cell, sql), min_size=1, max_size=3)


def _tamper(path: Path, edits) -> None:
    conn = sqlite3.connect(path)
    for (kind, *where), column, value in edits:
        try:
            if kind == "sql":
                conn.executescript(where[0])
            else:
                table, rowid = where
                conn.execute(f"UPDATE {table} SET {column}=? WHERE rowid=?", (value, rowid))
            conn.commit()
        except sqlite3.Error:  # an edit the altered file no longer allows: skip it
            conn.rollback()
    conn.close()


def _pull_and_check(tmp: Path, source: Path, target_exists: bool = True) -> object:
    target = tmp / "ws.sqlite"
    if target_exists:
        target.write_bytes(TARGET)
    out = answers(lambda: pull(source, target))
    if isinstance(out, HwflowError):
        assert isinstance(out, ResultsError), out
        if target_exists:
            assert target.read_bytes() == TARGET, "a refused pull changed the target"
        else:
            assert not target.exists(), "a refused pull created the target"
        return out
    with ResultsDB(target) as db:
        for r in db.trials():
            assert 0 <= r.correct <= r.samples
            assert 0 <= r.mismatches <= r.samples
            assert 0 <= r.effective <= r.faults
            assert r.seed == trial_seed(db.campaign_spec(r.campaign)["seed"], r.key)
    return out


@fuzz_settings(100)
@given(_edits(), st.booleans())
@example([(("set", "trials", 1), "correct", 41)], True)
@example([(("set", "trials", 2), "seed", 12345)], True)
@example([(("set", "trials", 1), "rate", "abc")], False)
@example([(("sql", "DROP TABLE trials"), None, None)], True)
@example([(("set", "trials", 1), "metric_value", None), (("set", "trials", 1), "samples", "abc")], True)
@example([(("set", "baselines", 1), "metric_value", None), (("set", "baselines", 1), "samples", b"x")], True)
def test_tampered_databases_are_merged_or_refused_untouched(tmp_path_factory, edits, target_exists):
    tmp = tmp_path_factory.mktemp("pull")
    source = tmp / "board.sqlite"
    source.write_bytes(SOURCE)
    _tamper(source, edits)
    _pull_and_check(tmp, source, target_exists)


@fuzz_settings(80)
@given(st.one_of(st.tuples(st.just("truncate"), st.integers(0, len(SOURCE) - 1)),
                 st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, len(SOURCE) - 1), st.integers(1, 255)),
                                                     min_size=1, max_size=6))),
       st.booleans())
@example(("truncate", 4096), True)
@example(("truncate", 100), False)
@example(("flip", [(3571, 128)]), True)  # text that is not UTF-8 raised UnicodeDecodeError
def test_truncated_or_damaged_databases_are_refused_untouched(tmp_path_factory, damage, target_exists):
    kind, arg = damage
    raw = bytearray(SOURCE)
    if kind == "truncate":
        raw = raw[:arg]
    else:
        for pos, mask in arg:
            raw[pos] ^= mask
    tmp = tmp_path_factory.mktemp("pull")
    source = tmp / "board.sqlite"
    source.write_bytes(bytes(raw))
    _pull_and_check(tmp, source, target_exists)


@fuzz_settings(80)
@given(st.lists(st.tuples(st.sampled_from(["meta", "campaigns", "trials", "baselines", "data", "t"]),
                          st.lists(st.sampled_from(["key", "value", "name", "spec", "created", "campaign", "x"]),
                                   min_size=1, max_size=3, unique=True)), min_size=0, max_size=4))
@example([("data", ["x"])])
@example([("meta", ["key", "value"]), ("campaigns", ["name", "spec", "created"])])
def test_foreign_sqlite_files_are_refused_untouched(tmp_path_factory, tables):
    tmp = tmp_path_factory.mktemp("pull")
    source = tmp / "other.sqlite"
    conn = sqlite3.connect(source)
    for name, cols in dict(tables).items():
        conn.execute(f"CREATE TABLE {name} ({', '.join(cols)})")
        conn.execute(f"INSERT INTO {name} VALUES ({', '.join('?' for _ in cols)})", tuple(range(len(cols))))
    conn.commit()
    conn.close()
    before = source.read_bytes()
    out = _pull_and_check(tmp, source)
    assert isinstance(out, ResultsError)
    assert source.read_bytes() == before, "pull changed the board's file"


def test_the_valid_pair_merges_and_the_source_is_not_written(tmp_path):
    source = tmp_path / "board.sqlite"
    source.write_bytes(SOURCE)
    result = _pull_and_check(tmp_path, source)
    assert (result.added, result.present, result.baselines, result.boards) == (8, 0, 1, ("pynq-z2",))
    assert source.read_bytes() == SOURCE
