"""The gate's own error: bad input to the gate (exit status 2), never a failed requirement (status 1)."""

from hwflow.errors import HwflowError


class GateError(HwflowError):
    """The gate cannot judge: no requirements, a value outside the range a requirement assumes, missing trials."""
