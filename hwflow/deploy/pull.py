"""``hwflow pull``: merge a board's results database into a workstation one.

The board writes the same schema as the workstation (``hwflow.results``), with its own name in the
``board`` column, so merging is copying rows: the campaign (whose spec must be the one the
workstation has under that name), its fault-free baselines and its trials. Pulling twice is
harmless (identical rows are already there); a row that exists with *different* values is refused,
since two runs of one trial on one board must agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hwflow.results import ResultsDB
from hwflow.results.db import ResultsError

_COMPARED = ("seed", "faults", "effective", "samples", "correct", "mismatches")


@dataclass(frozen=True)
class PullResult:
    campaigns: tuple[str, ...]
    boards: tuple[str, ...]
    added: int  # trials copied
    present: int  # trials already in the target, identical
    baselines: int


def pull(source: str | Path, into: str | Path) -> PullResult:
    """Copy every campaign, baseline and trial of ``source`` into ``into`` (created if missing)."""
    source, into = Path(source), Path(into)
    if not source.is_file():
        msg = f"{source}: no such results database (copy results.sqlite from the board's bundle folder first)"
        raise ResultsError(msg)
    if source.resolve() == into.resolve():
        msg = f"pulling {source} into itself: give the workstation's database with --into"
        raise ResultsError(msg)
    with ResultsDB(source) as src, ResultsDB(into) as dst:
        campaigns = src.campaigns()
        rows = src.trials()
        baselines = src.baselines()
        for name in campaigns:
            dst.register_campaign(name, src.campaign_spec(name))  # refuses a different spec under the same name
        existing = {(r.campaign, r.key, r.board): r for r in dst.trials()}
        conflicts = []
        for r in rows:
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
        for b in baselines:
            same = [o for o in dst.baselines(b.campaign) if (o.variant, o.board) == (b.variant, b.board)]
            if same and (same[0].samples, same[0].correct) != (b.samples, b.correct):
                msg = (f"{into} already has a different fault-free run of {b.campaign} {b.variant} on {b.board} "
                       f"({same[0].correct}/{same[0].samples} vs {b.correct}/{b.samples}); pull into a fresh database")
                raise ResultsError(msg)
        for b in baselines:
            dst.put_baseline(b)
        added = dst.add_trials(rows)
    boards = tuple(sorted({r.board for r in rows} | {b.board for b in baselines}))
    return PullResult(tuple(campaigns), boards, added, len(rows) - added, len(baselines))



