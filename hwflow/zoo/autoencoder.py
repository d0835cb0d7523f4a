"""Training and scoring of the zoo's autoencoders (``ad08``): trained on the normal classes only, to
reconstruct their input, scored by the ROC AUC of the reconstruction error on every class.

This is MLPerf Tiny's anomaly-detection task on data we have: an autoencoder that has only seen the
normal samples reconstructs them well and the others badly, so its per-sample reconstruction error
separates them. The metric is :mod:`hwflow.metrics`' ``auc``, the one the fault campaigns record, so
the number the training reports and the fault-free value of a campaign are the same computation.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from hwflow.errors import ModelError
from hwflow.metrics import MetricSpec, get, reference

if TYPE_CHECKING:
    import tensorflow as tf

    from hwflow.data import Dataset

log = logging.getLogger(__name__)


def normal_only(x: np.ndarray, y: np.ndarray, normal: tuple[int, ...]) -> np.ndarray:
    """The samples of ``x`` whose label is a normal class."""
    keep = np.isin(y, np.asarray(normal, dtype=np.int64))
    if not np.any(keep):
        msg = f"no sample of the normal classes {list(normal)} to train the autoencoder on"
        raise ModelError(msg)
    return x[keep]


def flat(x: np.ndarray) -> np.ndarray:
    """Inputs as the vectors the autoencoder reconstructs (its ``Flatten`` order)."""
    return np.asarray(x, dtype=np.float32).reshape(len(x), -1)


def fit_autoencoder(model: tf.keras.Model, optimizer, data: Dataset, normal: tuple[int, ...], epochs: int,
                    batch_size: int, callbacks: list, config=None) -> None:
    """Fit ``model`` to reconstruct the normal training samples (mean squared error), validated on the
    normal validation samples. ``config`` (a TrainConfig) with a method other than ``standard``: the same
    loss through :mod:`hwflow.harden.saq`'s trainer (SAQ's sharpness-aware steps, the sparsity penalty)."""
    import tensorflow as tf

    x = normal_only(data.x_train, data.y_train, normal)
    xv = normal_only(data.x_val, data.y_val, normal)
    log.info("autoencoder: %d normal training samples (classes %s)", len(x), list(normal))
    if config is not None and config.method != "standard":
        from hwflow.harden.saq import fit as saq_fit

        saq_fit(model, config.method, optimizer, x, flat(x), rho=config.rho, asam=config.asam,
                sparsity=config.sparsity, validation_data=(xv, flat(xv)), epochs=epochs, batch_size=batch_size,
                verbose=0, loss="mse")
        return
    model.compile(optimizer=optimizer, loss=tf.keras.losses.MeanSquaredError())
    model.fit(x, flat(x), validation_data=(xv, flat(xv)), epochs=epochs, batch_size=batch_size, shuffle=True,
              verbose=0, callbacks=callbacks)


def reconstruction_auc(model: tf.keras.Model, x: np.ndarray, y: np.ndarray, normal: tuple[int, ...],
                       batch_size: int = 1024) -> float:
    """ROC AUC of the reconstruction error of ``x`` (classes ``normal`` normal, the rest anomalous)."""
    spec = MetricSpec("auc", normal=tuple(normal))
    out = model.predict(x, batch_size=batch_size, verbose=0)
    return get("auc").score(out, None, reference(spec, x, y))
