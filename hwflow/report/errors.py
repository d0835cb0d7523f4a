"""The report's error: the results are missing, empty, or not what was asked for."""

from hwflow.errors import HwflowError


class ReportError(HwflowError):
    """No results to report (missing or empty database, unknown campaign) or an ambiguous request."""
