"""Quantization-aware training of the zoo models, repeatable to the last bit.

A fault campaign's baseline is the fault-free model; if retraining gave different weights, every
stored result would silently stop referring to the model on disk. So training is seeded
(``tf.keras.utils.set_random_seed``) and runs with TensorFlow's op determinism on, and the
model is saved with a JSON sidecar recording how it was made. :func:`load_or_train` uses that
sidecar to reuse a model trained with the same configuration (the demo's cache).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import hwflow
from hwflow.data import Dataset, canonical_name, load_dataset
from hwflow.errors import DatasetError, ModelError
from hwflow.harden.saq import DEFAULT_RHO, DEFAULT_SPARSITY, check_options, hardening_record, training_record
from hwflow.harden.saq import fit as saq_fit
from hwflow.harden.sharpness import activation_sparsity, sharpness
from hwflow.quiet import saving_h5
from hwflow.zoo.loading import load_model, read_sidecar, sidecar_path, write_sidecar
from hwflow.zoo.models import build_model, check_bits, get_spec

if TYPE_CHECKING:
    import tensorflow as tf

log = logging.getLogger(__name__)

# Sidecar keys that must match the configuration for a saved model to be reused.
_MATCH_KEYS = (
    "model", "dataset", "weight_bits", "act_bits", "weight_integer",
    "epochs", "batch_size", "learning_rate", "seed", "hwflow_version",
    "method", "rho", "asam", "sparsity",
)  # fmt: skip
# What a sidecar written before a key existed means by its absence (a standard model).
_MATCH_DEFAULTS = {"method": "standard", "rho": None, "asam": None, "sparsity": None}


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how; ``None`` fields take the zoo model's defaults (see :meth:`resolved`)."""

    model: str
    """Zoo model name (``mlp-digits``, ``cnn-digits``, ``cnn-fmnist``)."""
    dataset: str | None = None
    """Data set name or ``.npz`` path; None: the zoo model's own data set."""
    weight_bits: int | None = None
    """Total bits of each weight and bias, sign included (2..16); None: the zoo model's published width."""
    act_bits: int | None = None
    """Total bits of each ReLU output (2..16); None: the zoo model's."""
    weight_integer: int | None = None
    """Integer bits of the weights, sign excluded (0..weight_bits-1); 0 means weights in [-1, 1); None: the
    zoo model's."""
    epochs: int | None = None
    """Training epochs; None: the zoo model's default."""
    batch_size: int | None = None
    """Training batch size; None: the zoo model's default."""
    learning_rate: float | None = None
    """Adam learning rate; None: the zoo model's default."""
    seed: int = 0
    """Seed of the initial weights, the shuffling and every other random choice in training."""
    out: Path | None = None
    """Where to save the model (``.h5``; the sidecar goes next to it as ``.json``);
    None: ``models/<model>-w<weight_bits>i<weight_integer>a<act_bits>-s<seed>.h5``."""
    data_root: Path | None = None
    """Directory of the Fashion-MNIST files when not in ``/usr/share/datasets/fashion-mnist``."""
    method: str = "standard"
    """``standard`` QAT, ``saq`` (FlatENN's sharpness-aware QAT), ``sparse`` (QAT with an L1
    activity penalty) or ``sparse-saq`` (both); see :mod:`hwflow.harden.saq`."""
    rho: float = DEFAULT_RHO
    """SAM's neighbourhood radius (``saq`` and ``sparse-saq`` only)."""
    asam: bool = False
    """Use adaptive SAM (perturbation scaled elementwise by |w|) instead of SAM (``saq`` methods only)."""
    sparsity: float = DEFAULT_SPARSITY
    """Strength of the L1 activity penalty on the mean |ReLU output| (``sparse`` methods only)."""

    def resolved(self) -> TrainConfig:
        """A copy with every None replaced by the zoo model's default, checked for sense."""
        spec = get_spec(self.model)
        bits = [d if v is None else v for v, d in zip((self.weight_bits, self.act_bits, self.weight_integer),
                                                      spec.default_bits, strict=True)]
        check_bits(*bits)
        dataset = self.dataset if self.dataset is not None else spec.default_dataset(self.data_root)
        if dataset is None:
            msg = (f"zoo model {self.model!r} has no data set of its own: pass one (--dataset), a .npz holding "
                   f"x_train, y_train, x_test and y_test whose samples have shape {spec.input_shape}")
            raise DatasetError(msg)
        w, a, i = bits
        config = dataclasses.replace(
            self,
            weight_bits=w,
            act_bits=a,
            weight_integer=i,
            dataset=canonical_name(dataset),
            epochs=self.epochs if self.epochs is not None else spec.epochs,
            batch_size=self.batch_size if self.batch_size is not None else spec.batch_size,
            learning_rate=float(self.learning_rate if self.learning_rate is not None else spec.learning_rate),
            out=Path(self.out) if self.out is not None else Path("models") / (
                f"{self.model}-w{w}i{i}a{a}-s{self.seed}.h5"
            ),
            data_root=Path(self.data_root) if self.data_root is not None else None,
        )
        for label in ("epochs", "batch_size"):
            value = getattr(config, label)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                msg = f"training configuration: {label} must be a positive integer, got {value!r}"
                raise ModelError(msg)
        if not (np.isfinite(config.learning_rate) and config.learning_rate > 0):
            msg = f"training configuration: learning_rate must be positive, got {config.learning_rate!r}"
            raise ModelError(msg)
        if isinstance(config.seed, bool) or not isinstance(config.seed, (int, np.integer)) or config.seed < 0:
            msg = f"training configuration: seed must be a non-negative integer, got {config.seed!r}"
            raise ModelError(msg)
        if config.out.suffix.lower() != ".h5":
            msg = f"training configuration: out must be an .h5 file, got {config.out}"
            raise ModelError(msg)
        check_options(config.method, config.rho, config.asam, config.sparsity)
        return config

    def metadata(self) -> dict[str, Any]:
        """The sidecar fields describing this (resolved) configuration."""
        return {
            "model": self.model,
            "dataset": self.dataset,
            "weight_bits": int(self.weight_bits),
            "act_bits": int(self.act_bits),
            "weight_integer": int(self.weight_integer),
            "epochs": int(self.epochs) if self.epochs is not None else None,
            "batch_size": int(self.batch_size) if self.batch_size is not None else None,
            "learning_rate": self.learning_rate,
            "seed": int(self.seed),
            "hwflow_version": hwflow.__version__,
            **training_record(self.method, self.rho, self.asam, self.sparsity),
        }


@dataclass
class TrainResult:
    """A trained (or reused) model, where it is, and how good it is."""

    model: tf.keras.Model
    """The trained Keras model."""
    path: Path
    """The saved ``.h5`` file."""
    sidecar: Path
    """The JSON sidecar next to it."""
    test_accuracy: float
    """Accuracy on the data set's test split (an autoencoder's: its reconstruction-error ROC AUC)."""
    val_accuracy: float
    """Accuracy on the validation split (likewise)."""
    seconds: float
    """Wall time of training (0 when reused)."""
    reused: bool = False
    """True when :func:`load_or_train` found a matching saved model."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """The sidecar's contents."""
    sharpness: float | None = None
    """Mean test-loss rise under random weight perturbations (:mod:`hwflow.harden.sharpness`);
    None for a reused model whose sidecar predates the measure."""
    activation_sparsity: float | None = None
    """Fraction of zero ReLU outputs on the test split; None as for ``sharpness``."""


def accuracy(model: tf.keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> float:
    """Fraction of ``x`` whose arg-max logit is the label ``y``."""
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == y))


def _check_fits(config: TrainConfig, data: Dataset, model: tf.keras.Model) -> None:
    expected = tuple(model.input_shape[1:])
    if data.input_shape != expected:
        msg = (
            f"zoo model {config.model!r} takes inputs of shape {expected}, but data set "
            f"{data.name!r} has {data.input_shape}; pick a matching --dataset or zoo model"
        )
        raise DatasetError(msg)
    n_outputs = int(model.output_shape[-1])
    if data.n_classes > n_outputs:
        msg = (
            f"data set {data.name!r} has {data.n_classes} classes "
            f"but zoo model {config.model!r} has {n_outputs} outputs"
        )
        raise DatasetError(msg)


def _EpochBar(epochs: int, enabled: bool):  # noqa: N802 (a class, built late: Keras loads lazily)
    """One progress bar over the epochs on stderr (Keras's own bars print one per epoch, to stdout),
    each epoch's metrics in the DEBUG log."""
    import tensorflow as tf
    from tqdm import tqdm

    class EpochBar(tf.keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = tqdm(total=epochs, desc="training", unit="epoch", disable=not enabled, leave=False)

        def on_epoch_end(self, epoch, logs=None):
            metrics = {k: round(float(v), 4) for k, v in (logs or {}).items()}
            log.debug("epoch %d/%d: %s", epoch + 1, epochs, metrics)
            self.bar.set_postfix({k: metrics[k] for k in ("loss", "val_accuracy") if k in metrics}, refresh=False)
            self.bar.update(1)

        def on_train_end(self, logs=None):
            self.bar.close()

    return EpochBar()


def train(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train ``config.model`` with quantization-aware training and save it with its sidecar."""
    config = config.resolved()
    data = load_dataset(config.dataset, root=config.data_root)
    try:  # before training, not after minutes of it
        config.out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        msg = f"cannot create the output directory {config.out.parent}: {err}"
        raise ModelError(msg) from err

    import tensorflow as tf

    from hwflow.zoo.models import logits_model

    tf.config.experimental.enable_op_determinism()
    saved = build_model(config.model, config.weight_bits, config.act_bits, config.weight_integer, config.seed)
    _check_fits(config, data, saved)
    model = logits_model(saved)  # trained and scored on logits; a final softmax (jet-mlp) is saved with it
    zoo = get_spec(config.model)
    autoencoder = zoo.task == "autoencode"  # hwflow.zoo.autoencoder: MSE on the normal classes, scored by AUC
    steps = config.epochs * -(-len(data.y_train) // config.batch_size)
    # Cosine decay to zero: the last epochs fine-tune at small steps, which quantized weights need
    # to settle on their grid; it costs nothing and is as deterministic as a constant rate.
    schedule = tf.keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=steps)
    optimizer = tf.keras.optimizers.Adam(learning_rate=schedule)
    if config.method == "standard" and not autoencoder:
        model.compile(
            optimizer=optimizer,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
    log.info(
        "training %s on %s (%d train / %d val / %d test), %d-bit weights (%d integer bits), "
        "%d-bit activations, %d epochs, seed %d, method %s",
        config.model, data.name, len(data.y_train), len(data.y_val), len(data.y_test),
        config.weight_bits, config.weight_integer, config.act_bits, config.epochs, config.seed, config.method,
    )  # fmt: skip
    start = time.perf_counter()
    if autoencoder:
        from hwflow.zoo.autoencoder import fit_autoencoder

        fit_autoencoder(model, optimizer, data, zoo.normal, config.epochs, config.batch_size,
                        [_EpochBar(config.epochs, progress)], config)
    elif config.method == "standard":
        model.fit(
            data.x_train,
            data.y_train,
            validation_data=(data.x_val, data.y_val),
            epochs=config.epochs,
            batch_size=config.batch_size,
            shuffle=True,
            verbose=0,
            callbacks=[_EpochBar(config.epochs, progress)],
        )
    else:
        saq_fit(
            model, config.method, optimizer, data.x_train, data.y_train, rho=config.rho, asam=config.asam,
            sparsity=config.sparsity, validation_data=(data.x_val, data.y_val), epochs=config.epochs,
            batch_size=config.batch_size, verbose=0, callbacks=[_EpochBar(config.epochs, progress)],
        )  # fmt: skip
    seconds = time.perf_counter() - start
    if autoencoder:  # "accuracy" is the reconstruction-error ROC AUC; sharpness is a cross-entropy measure
        from hwflow.zoo.autoencoder import reconstruction_auc

        test_acc = reconstruction_auc(model, data.x_test, data.y_test, zoo.normal)
        val_acc = reconstruction_auc(model, data.x_val, data.y_val, zoo.normal)
        sharp = None
    else:
        test_acc = accuracy(model, data.x_test, data.y_test)
        val_acc = accuracy(model, data.x_val, data.y_val)
        sharp = sharpness(model, data.x_test, data.y_test)
    sparse = activation_sparsity(model, data.x_test)

    try:
        with saving_h5():
            saved.save(config.out, save_format="h5", include_optimizer=False)
    except OSError as err:
        msg = f"cannot save the model to {config.out}: {err}"
        raise ModelError(msg) from err
    metadata = {
        **config.metadata(),
        "test_accuracy": test_acc,
        "val_accuracy": val_acc,
        "train_seconds": round(seconds, 2),
        "input_shape": list(data.input_shape),
        "n_classes": data.n_classes,
        "sharpness": sharp.loss_rise if sharp is not None else None,
        "sharpness_measure": sharp.to_json() if sharp is not None else None,
        "metric": zoo.metric,
        "activation_sparsity": sparse.overall,
        "activation_sparsity_layers": sparse.layers,
        "hardening": hardening_record(config.method, config.rho, config.asam, config.sparsity),
    }
    try:
        side = write_sidecar(config.out, metadata)
    except OSError as err:
        msg = f"cannot write the sidecar of {config.out}: {err}"
        raise ModelError(msg) from err
    log.info(
        "test %s %.4f, val %s %.4f, sharpness %s, activation sparsity %.3f, %.1f s; saved %s",
        zoo.metric, test_acc, zoo.metric, val_acc, f"{sharp.loss_rise:.4f}" if sharp is not None else "n/a",
        sparse.overall, seconds, config.out,
    )  # fmt: skip
    return TrainResult(
        saved, config.out, side, test_acc, val_acc, seconds, reused=False, metadata=metadata,
        sharpness=sharp.loss_rise if sharp is not None else None, activation_sparsity=sparse.overall,
    )  # fmt: skip


def _matches(side: dict, wanted: dict, key: str) -> bool:
    return side.get(key, _MATCH_DEFAULTS.get(key)) == wanted[key]


def load_or_train(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Reuse ``config.out`` if its sidecar says it was trained with this configuration, else train."""
    config = config.resolved()
    side = read_sidecar(config.out) if config.out.is_file() else None
    wanted = config.metadata()
    if side is not None and all(_matches(side, wanted, key) for key in _MATCH_KEYS):
        try:
            model = load_model(config.out)
        except ModelError as err:
            log.warning("cannot reuse %s, training again: %s", config.out, err)
        else:
            log.info("reusing %s (trained with the same configuration)", config.out)
            return TrainResult(
                model, config.out, sidecar_path(config.out),
                float(side.get("test_accuracy", float("nan"))), float(side.get("val_accuracy", float("nan"))),
                0.0, reused=True, metadata=side,
                sharpness=_optional_float(side.get("sharpness")),
                activation_sparsity=_optional_float(side.get("activation_sparsity")),
            )  # fmt: skip
    elif side is not None:
        changed = [key for key in _MATCH_KEYS if not _matches(side, wanted, key)]
        log.info("%s was trained with a different %s; training again", config.out, ", ".join(changed))
    return train(config, progress=progress)


def _optional_float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
