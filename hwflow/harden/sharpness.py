"""How sharp a trained model's minimum is, and how sparse its activations are.

FlatENN's argument is that flat minima tolerate weight faults; these two numbers let a fault
campaign's results be read next to the property each training method is meant to change.

**Sharpness** is the mean rise of the cross-entropy loss on a data set over ``samples`` random
weight perturbations, drawn from a ``numpy`` Generator seeded with ``seed``. Each perturbation is
*filter-normalized* (Li et al. 2018, "Visualizing the loss landscape of neural nets"): a Gaussian
direction d for every kernel, rescaled output channel by output channel (the kernel's last axis)
to the norm of that channel's weights, and the network evaluated at ``w + eps * d``. Filter
normalization makes the number indifferent to the rescaling of a channel that a following
batch normalization undoes, which raw weight-space sharpness is not. As in Li et al., biases and
batch-normalization parameters are left unperturbed. For QKeras layers the perturbation is
added to the *quantized* kernel Q(w) (as SAQ's training does; :mod:`hwflow.harden.saq`), since a
perturbation of the float weights mostly rounds away. The same seed gives the same directions
for models of the same shapes, so comparing two training methods uses common random numbers.
At a minimum the rise is positive in expectation (the loss is locally convex there); single
draws can be negative.

**Activation sparsity** is the fraction of exact zeros among the outputs of the ReLU layers
(:func:`hwflow.harden.saq.activation_layers`) over a data set, pooled over layers and inputs,
with the fraction of each layer alongside. For a quantized ReLU a small positive value that
rounds to zero counts as zero, as it does in the hardware.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hwflow.errors import HardenError
from hwflow.harden.saq import QuantizedPerturbation, activation_layers

if TYPE_CHECKING:
    import tensorflow as tf

log = logging.getLogger(__name__)

DEFAULT_EPS = 0.1
"""Relative size of the perturbation: each output channel of each kernel moves by 10% of its norm.
(At 0.05 the rise is mostly the first-order term, which averages out, and 20 draws leave a 20%
standard error on cnn-digits; at 0.1 the second-order term dominates and the error is about 10%.)"""
DEFAULT_SAMPLES = 20
"""Number of random perturbations averaged."""
DEFAULT_SEED = 0
"""Seed of the perturbation directions (fixed, so that models are compared on the same draws)."""
MEASURE = "filter-normalized gaussian on (quantized) kernels, mean cross-entropy rise"
"""Recorded with the figures, so that a sidecar says what its sharpness number means."""


@dataclass(frozen=True)
class Sharpness:
    """The loss rise of a model under random relative weight perturbations."""

    loss_rise: float
    """Mean over the draws of (perturbed loss - unperturbed loss); the sharpness."""
    base_loss: float
    """Mean cross-entropy of the unperturbed model on the data set."""
    rises: tuple[float, ...]
    """The rise of each draw, in draw order."""
    eps: float
    """Relative size of the perturbation."""
    seed: int
    """Seed of the draws."""

    def to_json(self) -> dict[str, Any]:
        """The figures as plain JSON types (the sidecar's ``sharpness_measure``)."""
        return {
            "measure": MEASURE,
            "loss_rise": self.loss_rise,
            "base_loss": self.base_loss,
            "rises": list(self.rises),
            "eps": self.eps,
            "samples": len(self.rises),
            "seed": self.seed,
        }


@dataclass(frozen=True)
class ActivationSparsity:
    """Fraction of exact zeros at the ReLU outputs."""

    overall: float
    """Zeros over all ReLU output values of all inputs, pooled."""
    layers: dict[str, float] = field(default_factory=dict)
    """The fraction of each ReLU layer, by layer name."""


def _check_data(x: Any, y: Any | None) -> tuple[np.ndarray, np.ndarray | None]:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2 or len(x) == 0:
        msg = f"need a non-empty batch of inputs (N, ...), got shape {x.shape}"
        raise HardenError(msg)
    if y is None:
        return x, None
    y = np.asarray(y)
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        msg = f"labels must be {len(x)} integers (one per input), got shape {y.shape} and dtype {y.dtype}"
        raise HardenError(msg)
    return x, y.astype(np.int64)


def _batched(fn: Any, x: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """``fn`` over ``x`` in batches; a list (one entry per output) of concatenated numpy arrays."""
    parts: list[list[np.ndarray]] = []
    for start in range(0, len(x), batch_size):
        out = fn(x[start : start + batch_size])
        out = out if isinstance(out, (list, tuple)) else [out]
        if not parts:
            parts = [[] for _ in out]
        for store, value in zip(parts, out, strict=True):
            store.append(np.asarray(value))
    return [np.concatenate(store) for store in parts]


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean softmax cross-entropy of integer labels ``y`` under ``logits``, in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    if int(y.max()) >= logits.shape[1] or int(y.min()) < 0:
        msg = f"labels must be in 0..{logits.shape[1] - 1} for a model with {logits.shape[1]} outputs"
        raise HardenError(msg)
    top = logits.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(log_norm - logits[np.arange(len(y)), y]))


def _filter_normalized(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """A Gaussian direction with each output channel (last axis) as long as that channel of ``weights``."""
    direction = rng.standard_normal(weights.shape)
    channels = weights.reshape(-1, weights.shape[-1]).astype(np.float64)
    d = direction.reshape(-1, weights.shape[-1])
    d_norm = np.linalg.norm(d, axis=0)
    scale = np.divide(np.linalg.norm(channels, axis=0), d_norm, out=np.zeros_like(d_norm), where=d_norm > 0)
    return (d * scale).reshape(weights.shape)


def sharpness(
    model: tf.keras.Model, x: Any, y: Any, eps: float = DEFAULT_EPS, samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED, batch_size: int = 1024,
) -> Sharpness:  # fmt: skip
    """The mean loss rise of ``model`` on ``(x, y)`` under ``samples`` perturbations of size ``eps``.

    The model is left exactly as it was (its float weights are never written for QKeras layers;
    plain layers' kernels are restored from a copy).
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        msg = f"sharpness: eps must be a non-negative number, got {eps!r}"
        raise HardenError(msg)
    for label, value in (("samples", samples), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            msg = f"sharpness: {label} must be a positive integer, got {value!r}"
            raise HardenError(msg)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        msg = f"sharpness: seed must be a non-negative integer, got {seed!r}"
        raise HardenError(msg)
    x, y = _check_data(x, y)
    import tensorflow as tf

    perturbation = QuantizedPerturbation(model, kernels_only=True)
    hooked = {id(slot.layer) for slot in perturbation.slots}
    plain = [
        layer.kernel for layer in model.layers
        if getattr(layer, "kernel", None) is not None and id(layer) not in hooked
    ]  # fmt: skip
    saved = [v.numpy() for v in plain]
    rng = np.random.default_rng(seed)
    rises = []
    with perturbation:
        forward = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)
        base = cross_entropy(_batched(forward, x, batch_size)[0], y)
        quantized = [q.numpy() for q in perturbation.quantized()]
        try:
            for _ in range(samples):
                for slot, q in zip(perturbation.slots, quantized, strict=True):
                    slot.eps.assign((eps * _filter_normalized(rng, q)).astype(np.float32))
                for var, w in zip(plain, saved, strict=True):
                    var.assign((w + eps * _filter_normalized(rng, w)).astype(w.dtype))
                rises.append(cross_entropy(_batched(forward, x, batch_size)[0], y) - base)
        finally:
            for var, w in zip(plain, saved, strict=True):
                var.assign(w)
    result = Sharpness(float(np.mean(rises)), base, tuple(float(r) for r in rises), float(eps), int(seed))
    log.info("sharpness (eps %g, %d draws): loss %.4f rises by %.4f on average", eps, samples, base, result.loss_rise)
    return result


def activation_sparsity(model: tf.keras.Model, x: Any, batch_size: int = 1024) -> ActivationSparsity:
    """The fraction of exact zeros at ``model``'s ReLU outputs over the inputs ``x``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        msg = f"activation_sparsity: batch_size must be a positive integer, got {batch_size!r}"
        raise HardenError(msg)
    x, _ = _check_data(x, None)
    layers = activation_layers(model)
    if not layers:
        msg = f"model {model.name!r} has no ReLU activation layer whose sparsity could be measured"
        raise HardenError(msg)
    import tensorflow as tf

    probe = tf.keras.Model(model.inputs, [layer.output for layer in layers])
    forward = tf.function(lambda batch: probe(batch, training=False), reduce_retracing=True)
    outputs = _batched(forward, x, batch_size)
    zeros = [int(np.count_nonzero(out == 0)) for out in outputs]
    sizes = [int(out.size) for out in outputs]
    per_layer = {layer.name: z / n for layer, z, n in zip(layers, zeros, sizes, strict=True)}
    return ActivationSparsity(sum(zeros) / sum(sizes), per_layer)
