"""Read what a report needs from a results database, and compute its statistics once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hwflow.report.errors import ReportError
from hwflow.report.stats import (
    Discrepancy,
    SensitivityTable,
    Summary,
    compare_boards,
    paired_counts,
    sensitivity_tables,
    summarize,
)
from hwflow.results import Baseline, ResultsDB, TrialRow


@dataclass(frozen=True)
class ReportData:
    """Everything a report shows: the recorded rows and what is computed from them."""

    db_path: Path
    campaigns: list[str]  # in the order they were registered (then unregistered ones by name)
    specs: dict[str, dict | None]  # campaign -> its spec, None when the database has none recorded
    rows: list[TrialRow]
    baselines: list[Baseline]
    summaries: list[Summary]
    sensitivity: list[SensitivityTable]
    discrepancies: list[Discrepancy]
    paired: dict[tuple[str, str], int]  # (reference board, other board) -> trials run on both

    @property
    def boards(self) -> list[str]:
        return sorted({r.board for r in self.rows} | {b.board for b in self.baselines})

    def baseline_mismatches(self) -> list[tuple[Baseline, Baseline]]:
        """Fault-free runs of one (campaign, variant) whose correct count differs between boards."""
        by_variant: dict[tuple[str, str], list[Baseline]] = {}
        for b in self.baselines:
            by_variant.setdefault((b.campaign, b.variant), []).append(b)
        out = []
        for group in by_variant.values():
            ref = next((b for b in group if b.board == "emulator"), group[0])
            out += [(ref, b) for b in group if b is not ref and (b.correct, b.samples) != (ref.correct, ref.samples)]
        return out


def load_report_data(db_path: str | Path, campaign: str | None = None, *,
                     layer_order: Sequence[str] | None = None) -> ReportData:
    """Read the trials and baselines of one campaign (or all) and summarize them.

    ``layer_order``: layers in the order sensitivity tables show them (default: natural order of names).
    Raises ``ReportError`` when the database does not exist, holds no trials, or has no such campaign.
    """
    db_path = Path(db_path)
    if not db_path.is_file():
        msg = f"no results database at {db_path}: run `hwflow campaign SPEC.yaml --db {db_path}` first"
        raise ReportError(msg)
    with ResultsDB(db_path) as db:
        registered = db.campaigns()
        rows = db.trials(campaign)
        baselines = db.baselines(campaign)
        if campaign is not None and not rows:
            if campaign in registered:
                msg = f"campaign {campaign!r} in {db_path} has no trials yet: run (or resume) it with hwflow campaign"
            else:
                known = sorted(set(registered) | {r.campaign for r in db.trials()})
                msg = f"{db_path} has no campaign {campaign!r}; it has: {', '.join(known) or 'none'}"
            raise ReportError(msg)
        if not rows:
            extra = f" (campaigns registered without trials: {', '.join(registered)})" if registered else ""
            msg = f"{db_path} holds no trials{extra}: nothing to report; run hwflow campaign first"
            raise ReportError(msg)
        present = {r.campaign for r in rows}
        campaigns = [c for c in registered if c in present] + sorted(present - set(registered))
        specs = {c: db.campaign_spec(c) if c in registered else None for c in campaigns}
    summaries = summarize(rows, baselines)
    tables = sensitivity_tables(summaries, layer_order=layer_order)
    return ReportData(db_path, campaigns, specs, rows, baselines, summaries, tables, compare_boards(rows),
                      paired_counts(rows))

