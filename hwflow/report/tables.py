"""CSV files of a report: every trial as recorded (plus its accuracy), and every summary row."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import astuple
from pathlib import Path

from hwflow.report.stats import SUMMARY_FIELDS, Summary
from hwflow.results import TrialRow

TRIAL_FIELDS = (*TrialRow.__dataclass_fields__, "accuracy")


def _cell(value):
    if isinstance(value, float) and math.isnan(value):
        return ""  # empty, not "nan": spreadsheets and pandas read it as missing
    return repr(value) if isinstance(value, float) else value


def write_trials_csv(rows: Iterable[TrialRow], path: str | Path) -> Path:
    """One line per trial: every column of the results table, then ``accuracy`` (correct / samples)."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(TRIAL_FIELDS)
        for r in rows:
            w.writerow([_cell(v) for v in (*astuple(r), r.accuracy)])
    return path


def write_summary_csv(summaries: Iterable[Summary], path: str | Path) -> Path:
    """One line per ``Summary``, columns named as its fields; NaN written as an empty cell."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(SUMMARY_FIELDS)
        for s in summaries:
            w.writerow([_cell(v) for v in astuple(s)])
    return path
