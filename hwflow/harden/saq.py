"""FlatENN's sharpness-aware quantization-aware training (SAQ), and an activation-sparse variant.

FlatENN (Malhotra & Gupta; docs/methods.md) finds that quantized networks in sharp minima lose
more accuracy to weight faults, and trains them with sharpness-aware minimization (SAM, Foret et al.
2021) inside quantization-aware training. One SAM step at weights w:

1. g = dL/dv at the unperturbed network;
2. e = rho * g / ||g|| (ASAM, Kwon et al. 2021: e = rho * T^2 g / ||T g||, T = |v| + eta elementwise);
3. g' = dL/dv at v + e, and the optimizer applies g' at the *original* w.

What v is matters for a quantized network. Perturbing the float (latent) weights, as plain SAM
would, is mostly undone by the quantizer: a perturbation smaller than half a step rounds away,
and the loss sees no change. SAQ (Liu et al. 2021, "Sharpness-aware quantization") perturbs the
*quantized* weights instead, and so do we: for every quantized kernel and bias, v = Q(w) and the
perturbation is added after the QKeras quantizer (:class:`QuantizedPerturbation`); every other
trainable variable (batch-normalization gamma and beta) is perturbed directly. The gradient g' is
carried back to w by the quantizer's straight-through estimator as in ordinary QKeras training.
The batch-normalization moving statistics keep the update of the unperturbed pass only.

The activation-sparse variant adds ``sparsity * mean over activation layers of mean(|a|)`` to the
loss (an L1 activity penalty on the ReLU outputs, normalized per element so one strength suits
every model). The penalty is computed by the training step, not by a Keras ``activity_regularizer``,
so the saved model is the plain zoo architecture and converts exactly like a standard one.

Training is as deterministic as :func:`hwflow.zoo.train.train`: the SAM step has no random op.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hwflow.errors import HardenError

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf

log = logging.getLogger(__name__)

METHODS = ("standard", "saq", "sparse", "sparse-saq")
"""Training methods: plain QAT, SAQ, QAT with an L1 activity penalty, and both."""
DEFAULT_RHO = 0.05
"""SAM's neighbourhood radius (Foret et al.'s default; SAQ's scripts use ~0.4 for 4-bit weights)."""
DEFAULT_SPARSITY = 0.5
"""Strength of the L1 activity penalty. Measured on cnn-digits (30 epochs, seed 0): the fraction of
zero ReLU outputs on the test split goes from 0.515 (standard) to 0.752 with test accuracy 0.975
(standard 0.967); a strength of 2 gives 0.843 zeros at 0.958 accuracy, 0.1 gives 0.603."""
ASAM_ETA = 0.01
"""ASAM's eta: T = |v| + eta keeps weights at zero perturbable (the ASAM authors' default)."""
RELU_ACTIVATIONS = frozenset({"relu", "quantized_relu"})
"""Activations whose outputs count as the network's activations (penalized, measured for sparsity)."""


def uses_sam(method: str) -> bool:
    """True if ``method`` trains with sharpness-aware minimization."""
    return method in ("saq", "sparse-saq")


def uses_sparsity(method: str) -> bool:
    """True if ``method`` adds the L1 activity penalty."""
    return method in ("sparse", "sparse-saq")


def check_options(method: Any, rho: Any, asam: Any, sparsity: Any) -> None:
    """Raise :class:`HardenError` unless the training method and its parameters make sense."""
    if not isinstance(method, str) or method not in METHODS:
        msg = f"training configuration: method must be one of {', '.join(METHODS)}, got {method!r}"
        raise HardenError(msg)
    if not isinstance(asam, bool):
        msg = f"training configuration: asam must be True or False, got {asam!r}"
        raise HardenError(msg)
    for label, value in (("rho", rho), ("sparsity", sparsity)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            msg = f"training configuration: {label} must be a finite number, got {value!r}"
            raise HardenError(msg)
    if uses_sam(method) and rho <= 0:
        msg = f"training configuration: rho must be positive for method {method!r}, got {rho!r}"
        raise HardenError(msg)
    if uses_sparsity(method) and sparsity <= 0:
        msg = f"training configuration: sparsity must be positive for method {method!r}, got {sparsity!r}"
        raise HardenError(msg)


def training_record(method: str, rho: float, asam: bool, sparsity: float) -> dict[str, Any]:
    """How the model was trained, for the sidecar; parameters the method does not use are None."""
    sam = uses_sam(method)
    return {
        "method": method,
        "rho": float(rho) if sam else None,
        "asam": bool(asam) if sam else None,
        "sparsity": float(sparsity) if uses_sparsity(method) else None,
    }


def hardening_record(method: str, rho: float, asam: bool, sparsity: float) -> dict[str, Any]:
    """The sidecar's ``"hardening"`` entry of a freshly trained model.

    ``methods`` lists ``"sparse"`` (not a hardening, but a training choice the fault results
    depend on) and ``"saq"`` in that order, as far as the training method used them.
    """
    methods = [name for name, used in (("sparse", uses_sparsity(method)), ("saq", uses_sam(method))) if used]
    return {"methods": methods, "training": training_record(method, rho, asam, sparsity)}


def _activation_name(activation: Any) -> str:
    if isinstance(activation, str):
        return activation.split("(")[0]
    name = getattr(activation, "__name__", None)
    return name if isinstance(name, str) else type(activation).__name__


def activation_layers(model: tf.keras.Model) -> list:
    """The layers whose outputs are ReLU activations (QActivation/Activation/ReLU, or a fused relu)."""
    layers = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "ReLU":
            layers.append(layer)
        elif getattr(layer, "activation", None) is not None:
            if _activation_name(layer.activation) in RELU_ACTIVATIONS:
                layers.append(layer)
    return layers


@dataclass
class _Slot:
    """One quantized weight array: Q(variable) + eps is what the layer computes with."""

    layer: Any
    attribute: str
    variable: Any
    quantizer: Any
    eps: Any


class _Perturbed:
    """Stands in for a QKeras quantizer: the quantized value plus a perturbation variable."""

    def __init__(self, quantizer: Any, eps: Any) -> None:
        self.quantizer = quantizer
        self.eps = eps

    def __call__(self, x: Any) -> Any:
        return self.quantizer(x) + self.eps


class QuantizedPerturbation:
    """Lets a model's quantized kernels and biases be perturbed *after* quantization.

    While active (``with perturbation:``), each QKeras layer computes with ``Q(w) + eps`` where
    ``eps`` is a variable of :attr:`slots` (zero unless set). Leaving the block restores the
    original quantizers, so the model saves and converts as before, and drops the model's cached
    Keras functions, which were traced with the stand-ins. Trace new ``tf.function``s inside
    the block.
    """

    def __init__(self, model: tf.keras.Model, kernels_only: bool = False) -> None:
        import tensorflow as tf

        self.model = model
        self.slots: list[_Slot] = []
        parts = (("kernel", "kernel_quantizer"),) if kernels_only else (
            ("kernel", "kernel_quantizer"), ("bias", "bias_quantizer"),
        )  # fmt: skip
        for layer in model.layers:
            for var_name, quantizer_name in parts:
                variable = getattr(layer, var_name, None)
                quantizer = getattr(layer, f"{quantizer_name}_internal", None)
                if variable is None or quantizer is None or not getattr(layer, quantizer_name, None):
                    continue
                eps = tf.Variable(tf.zeros_like(variable), trainable=False, name=f"{layer.name}_{var_name}_eps")
                self.slots.append(_Slot(layer, f"{quantizer_name}_internal", variable, quantizer, eps))
        self._active = False

    @property
    def eps(self) -> list:
        """The perturbation variables, one per slot."""
        return [slot.eps for slot in self.slots]

    def quantized(self) -> list:
        """Q(w) of every slot, as tensors (without the perturbation)."""
        return [slot.quantizer(slot.variable) for slot in self.slots]

    def clear(self) -> None:
        """Set every perturbation to zero."""
        import tensorflow as tf

        for slot in self.slots:
            slot.eps.assign(tf.zeros_like(slot.eps))

    def _forget_traced_functions(self) -> None:
        for name in ("train_function", "test_function", "predict_function"):
            if getattr(self.model, name, None) is not None:
                setattr(self.model, name, None)

    def __enter__(self) -> QuantizedPerturbation:
        if self._active:
            msg = "the quantized-weight perturbation is already active on this model"
            raise HardenError(msg)
        self._forget_traced_functions()
        for slot in self.slots:
            # object.__setattr__: Keras would otherwise track the stand-in as a new sub-module.
            object.__setattr__(slot.layer, slot.attribute, _Perturbed(slot.quantizer, slot.eps))
        self._active = True
        return self

    def __exit__(self, *exc: object) -> None:
        for slot in self.slots:
            object.__setattr__(slot.layer, slot.attribute, slot.quantizer)
        self.clear()
        self._forget_traced_functions()
        self._active = False


def sam_perturbation(grads: list, values: list, rho: float, asam: bool = False, eta: float = ASAM_ETA) -> list:
    """SAM's (or ASAM's) ascent step e for gradients ``grads`` at ``values``.

    SAM: ``e = rho * g / ||g||``; ASAM: ``e = rho * T^2 g / ||T g||`` with ``T = |v| + eta``;
    the norms are global over all arrays.
    """
    import tensorflow as tf

    if asam:
        scales = [tf.abs(v) + eta for v in values]
        scaled = [t * g for t, g in zip(scales, grads, strict=True)]
        norm = tf.linalg.global_norm(scaled) + 1e-12
        return [rho * t * s / norm for t, s in zip(scales, scaled, strict=True)]
    norm = tf.linalg.global_norm(grads) + 1e-12
    return [rho * g / norm for g in grads]


@functools.cache
def _trainer_class() -> type:
    """The Keras model subclass, defined on first use so that importing this module needs no TF."""
    import tensorflow as tf

    class SharpnessAwareTrainer(tf.keras.Model):
        """Trains ``inner`` (shared layers) with SAM/ASAM and/or an L1 activity penalty."""

        def __init__(self, inner: tf.keras.Model, sam: bool, rho: float, asam: bool, sparsity: float,
                     eta: float = ASAM_ETA, loss: str = "crossentropy") -> None:  # fmt: skip
            super().__init__(name=f"{inner.name}_trainer")
            self.inner = inner
            self.sam, self.rho, self.asam, self.eta, self.sparsity = sam, float(rho), asam, float(eta), float(sparsity)
            self.perturbation = QuantizedPerturbation(inner)
            covered = {id(slot.variable) for slot in self.perturbation.slots}
            self._plain = [v for v in inner.trainable_variables if id(v) not in covered]
            # "mse": an autoencoder reconstructing its input (hwflow.zoo.autoencoder); no accuracy then
            self._ce = (tf.keras.losses.MeanSquaredError() if loss == "mse"
                        else tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            self._loss_tracker = tf.keras.metrics.Mean(name="loss")
            self._accuracy = tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy") if loss != "mse" else None
            self._probe = None
            if self.sparsity > 0:
                acts = activation_layers(inner)
                if not acts:
                    msg = f"model {inner.name!r} has no ReLU activation layer for the sparsity penalty"
                    raise HardenError(msg)
                self._probe = tf.keras.Model(inner.inputs, [inner.outputs[0], *[a.output for a in acts]])

        @property
        def metrics(self) -> list:
            return [self._loss_tracker] + ([self._accuracy] if self._accuracy is not None else [])

        def call(self, x: Any, training: bool = False) -> Any:
            return self.inner(x, training=training)

        def _objective(self, x: Any, y: Any, training: bool) -> tuple:
            if self._probe is None:
                logits = self.inner(x, training=training)
                return logits, self._ce(y, logits)
            logits, *acts = self._probe(x, training=training)
            penalty = tf.add_n([tf.reduce_mean(tf.abs(a)) for a in acts]) / len(acts)
            return logits, self._ce(y, logits) + self.sparsity * penalty

        def _report(self, y: Any, logits: Any, loss: Any) -> dict:
            self._loss_tracker.update_state(loss)
            if self._accuracy is not None:
                self._accuracy.update_state(y, logits)
            return {m.name: m.result() for m in self.metrics}

        def train_step(self, data: Any) -> dict:
            x, y, _ = tf.keras.utils.unpack_x_y_sample_weight(data)
            variables = self.inner.trainable_variables
            if not self.sam:
                with tf.GradientTape() as tape:
                    logits, loss = self._objective(x, y, training=True)
                grads = tape.gradient(loss, variables)
                self.optimizer.apply_gradients(zip(grads, variables, strict=True))
                return self._report(y, logits, loss)

            eps = self.perturbation.eps
            with tf.GradientTape() as tape:
                tape.watch(eps)
                logits, loss = self._objective(x, y, training=True)
            grads = tape.gradient(loss, eps + self._plain, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            values = self.perturbation.quantized() + [tf.identity(v) for v in self._plain] if self.asam else grads
            ascent = sam_perturbation(grads, values, self.rho, self.asam, self.eta)
            n = len(eps)
            for var, e in zip(eps, ascent[:n], strict=True):
                var.assign(e)
            saved_plain = [tf.identity(v) for v in self._plain]
            for var, e in zip(self._plain, ascent[n:], strict=True):
                var.assign_add(e)
            # Only the unperturbed pass may move the batch-normalization statistics.
            saved_stats = [tf.identity(v) for v in self.inner.non_trainable_variables]
            with tf.GradientTape() as tape:
                _, perturbed_loss = self._objective(x, y, training=True)
            sharp_grads = tape.gradient(perturbed_loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            for var in eps:
                var.assign(tf.zeros_like(var))
            for var, value in zip(self._plain, saved_plain, strict=True):
                var.assign(value)
            for var, value in zip(self.inner.non_trainable_variables, saved_stats, strict=True):
                var.assign(value)
            self.optimizer.apply_gradients(zip(sharp_grads, variables, strict=True))
            return self._report(y, logits, loss)

        def test_step(self, data: Any) -> dict:
            x, y, _ = tf.keras.utils.unpack_x_y_sample_weight(data)
            logits, loss = self._objective(x, y, training=False)
            return self._report(y, logits, loss)

    return SharpnessAwareTrainer


def make_trainer(
    model: tf.keras.Model, method: str, rho: float = DEFAULT_RHO, asam: bool = False,
    sparsity: float = DEFAULT_SPARSITY, eta: float = ASAM_ETA, loss: str = "crossentropy",
) -> tf.keras.Model:  # fmt: skip
    """A Keras model that trains ``model``'s own layers with ``method`` (not ``"standard"``).

    Compile it with an optimizer only (it has its own loss and metrics: sparse categorical
    cross-entropy from logits, plus the penalty, and accuracy; ``loss="mse"``: mean squared error against
    ``y``, for autoencoders, no accuracy) and call ``fit`` inside
    ``with trainer.perturbation:``, or use :func:`fit`. Save ``model``, not the trainer.
    """
    check_options(method, rho, asam, sparsity)
    if method == "standard":
        msg = "method 'standard' trains the model itself; make_trainer is for saq, sparse and sparse-saq"
        raise HardenError(msg)
    cls = _trainer_class()
    return cls(model, uses_sam(method), rho, asam, sparsity if uses_sparsity(method) else 0.0, eta, loss)


def fit(
    model: tf.keras.Model, method: str, optimizer: Any, x: np.ndarray, y: np.ndarray, *,
    rho: float = DEFAULT_RHO, asam: bool = False, sparsity: float = DEFAULT_SPARSITY,
    validation_data: tuple | None = None, epochs: int = 1, batch_size: int = 32, verbose: int = 0,
    loss: str = "crossentropy", callbacks: list | None = None,
) -> Any:  # fmt: skip
    """Train ``model`` in place with ``method`` (``saq``, ``sparse`` or ``sparse-saq``); Keras's History.
    ``loss="mse"`` trains an autoencoder (``y``: the targets it reconstructs)."""
    trainer = make_trainer(model, method, rho, asam, sparsity, loss=loss)
    trainer.compile(optimizer=optimizer)
    log.info(
        "training with %s (rho %s, asam %s, sparsity %s)", method,
        trainer.rho if trainer.sam else "-", trainer.asam if trainer.sam else "-", trainer.sparsity or "-",
    )  # fmt: skip
    with trainer.perturbation:
        return trainer.fit(
            x, y, validation_data=validation_data, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=verbose,
            callbacks=callbacks,
        )
