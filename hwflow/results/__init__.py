"""Results of fault campaigns: one SQLite schema for every campaign, wherever it ran."""

from hwflow.results.db import Baseline, ResultsDB, TrialKey, TrialRow

__all__ = ["Baseline", "ResultsDB", "TrialKey", "TrialRow"]
