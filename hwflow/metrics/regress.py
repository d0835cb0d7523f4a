"""Regression: mean squared and mean absolute error of the output values against targets.

The mean runs over every output value of every sample (Keras's ``mse`` averaged over the test set).
Targets are the data set's (``.npz`` keys ``targets_test`` / ``targets_val``) or, for an autoencoder,
its own input (``target: input``). Lower is better.
"""

from __future__ import annotations

import numpy as np

from hwflow.metrics.base import Metric, Reference, absolute_error, check_targets, rows, squared_error


class _Regression(Metric):
    higher_is_better = False
    needs = "targets"
    upper = float("inf")

    def reduce(self, terms: np.ndarray, ref: Reference) -> float:
        per_sample = int(np.prod(ref.targets.shape[1:]))  # output values per sample
        return float(np.sum(terms) / (len(terms) * per_sample)) if len(terms) else float("nan")

    def check(self, n_outputs: int, ref: Reference) -> None:
        check_targets(self, n_outputs, ref)


class MSE(_Regression):
    """Mean squared error."""

    name = "mse"
    unit = "MSE"

    def terms(self, outputs: np.ndarray, ref: Reference) -> np.ndarray:
        return squared_error(outputs, rows(ref.targets))


class MAE(_Regression):
    """Mean absolute error."""

    name = "mae"
    unit = "MAE"

    def terms(self, outputs: np.ndarray, ref: Reference) -> np.ndarray:
        return absolute_error(outputs, rows(ref.targets))
