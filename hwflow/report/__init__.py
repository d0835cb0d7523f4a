"""Reports of fault campaigns: accuracy with confidence intervals, plots, CSV and a self-contained HTML file.

``write_report(db, out_dir)`` is the one call; the pieces are usable alone: ``stats`` (pure
functions over trial rows), ``plots`` (matplotlib, no screen), ``tables`` (CSV), ``html``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hwflow.report.errors import ReportError
from hwflow.report.load import ReportData, load_report_data
from hwflow.report.stats import (
    HEADLINE_INTERVAL,
    Discrepancy,
    SensitivityTable,
    Summary,
    compare_boards,
    sensitivity_table,
    sensitivity_tables,
    summarize,
)

log = logging.getLogger(__name__)

__all__ = [
    "HEADLINE_INTERVAL",
    "Discrepancy",
    "ReportData",
    "ReportError",
    "ReportFiles",
    "SensitivityTable",
    "Summary",
    "compare_boards",
    "load_report_data",
    "sensitivity_table",
    "sensitivity_tables",
    "summarize",
    "write_report",
]


@dataclass(frozen=True)
class ReportFiles:
    """What ``write_report`` wrote, and the numbers it wrote them from."""

    out_dir: Path
    html: Path
    trials_csv: Path
    summary_csv: Path
    accuracy_vs_rate: Path | None  # None when there are no "sweep" trials
    sensitivity: dict[str, Path]  # study -> heatmap PNG, for each sensitivity study present
    data: ReportData  # the trials, baselines, summaries, tables and discrepancies shown

    @property
    def paths(self) -> list[Path]:
        extra = [self.accuracy_vs_rate] if self.accuracy_vs_rate else []
        return [self.html, self.trials_csv, self.summary_csv, *extra, *self.sensitivity.values()]


def write_report(db_path: str | Path, out_dir: str | Path, campaign: str | None = None, *,
                 layer_order: Sequence[str] | None = None) -> ReportFiles:
    """Write the report of one campaign (or every campaign in the database) into ``out_dir``.

    Files: ``report.html`` (self-contained), ``trials.csv``, ``summary.csv``,
    ``accuracy_vs_rate.png`` (when there are "sweep" trials) and ``sensitivity_<study>.png`` for
    each sensitivity study present ("layer", "bit", "layer-bit"). Raises ``ReportError`` when the
    database is missing or empty, or has no such campaign. ``layer_order``: layers in the order
    the sensitivity tables show them (the results do not record it; default: natural order of names).
    """
    from hwflow.report.html import render_html
    from hwflow.report.plots import plot_accuracy_vs_rate, plot_sensitivity_heatmap
    from hwflow.report.tables import write_summary_csv, write_trials_csv

    data = load_report_data(db_path, campaign, layer_order=layer_order)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        msg = f"{out} is a file: give a directory for the report (--out)"
        raise ReportError(msg)
    out.mkdir(parents=True, exist_ok=True)
    trials_csv = write_trials_csv(data.rows, out / "trials.csv")
    summary_csv = write_summary_csv(data.summaries, out / "summary.csv")
    accuracy = None
    if any(s.study == "sweep" for s in data.summaries):
        accuracy = plot_accuracy_vs_rate(data.summaries, out / "accuracy_vs_rate.png")
    heatmaps = {}
    for study in dict.fromkeys(t.study for t in data.sensitivity):
        tables = [t for t in data.sensitivity if t.study == study]
        title = (f"{study} sensitivity: accuracy drop — campaign{'s' if len(data.campaigns) > 1 else ''} "
                 f"{', '.join(data.campaigns)}")
        heatmaps[study] = plot_sensitivity_heatmap(tables, out / f"sensitivity_{study}.png", title)
    html_path = out / "report.html"
    html_path.write_text(render_html(data, accuracy, heatmaps, files=[trials_csv.name, summary_csv.name]),
                         encoding="utf-8")
    log.info("report of %s written to %s", ", ".join(data.campaigns), out)
    return ReportFiles(out, html_path, trials_csv, summary_csv, accuracy, heatmaps, data)
