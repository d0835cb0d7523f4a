"""FT-ClipAct (Hoang, Hanif & Shafique, DATE 2020) as a Keras layer: a ReLU with a per-layer threshold.

A weight fault makes some activations far larger than any the network saw in training; an
unbounded ReLU passes them on. :class:`ClipActivation` replaces a zoo model's
``QActivation(quantized_relu(bits, integer))`` one for one (same name, same output quantization)
and squashes every value above its threshold ``T``:

- ``mode="zero"`` (the paper's form, the default): ``y = q(x)`` if ``x <= T``, else ``0``;
- ``mode="saturate"``: ``y = q(min(x, T))``;

where ``q`` is the replaced layer's ``quantized_relu(bits, integer)`` (which also maps ``x < 0``
to 0). With ``mode="saturate"`` and ``T`` at or above the output type's largest value the layer is
the original ``QActivation``: the quantizer saturates there anyway.

The ReLU family with a negative side (``form``) is clipped on its positive side only, the negative
side kept as the activation computes it: ``quantized_leaky`` (``quantized_relu(bits, integer,
negative_slope)``, ``q`` then being that quantizer), ``leaky`` (Keras ``LeakyReLU``: ``alpha * x``
below 0, no quantizer), ``prelu`` (Keras ``PReLU`` without ``shared_axes``: its ``alpha`` array,
one per position, kept as a trainable weight and, in hardware, as a weight array in memory) and
``elu`` (Keras ``ELU``: ``alpha (e^x - 1)`` below 0, hls4ml's ELU table in hardware).
``ThresholdedReLU`` is refused (``unclippable`` says why; ``docs/methods.md``).

The layer is a real Keras layer, so a clipped model still trains and saves to ``.h5``;
:func:`hwflow.zoo.loading.load_model` knows it. In hardware (``hls/nnet_clipact.h``) and in the
emulator (``hwflow.emulator.clip``) ``T`` is compared in the layer's *input* type, rounded down to
that type's grid; see ``hwflow.emulator.clip`` for the exact rule. The thresholds are searched
under faults by ``hwflow.harden.thresholds``.

The hardened model's sidecar records ``"hardening": {"methods": [..., "clipact"], "clipact":
sidecar_entry(mode, thresholds)}``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import tensorflow as tf

from hwflow.emulator.clip import MODES, check_mode, check_threshold
from hwflow.errors import HardenError

log = logging.getLogger(__name__)

DEFAULT_MODE = "zero"
"""The paper's clip: values above the threshold become zero."""


def _check_bits(bits: object, integer: object, where: str) -> tuple[int, int]:
    for label, value in (("bits", bits), ("integer", integer)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            msg = f"{where}: {label} must be an integer, got {value!r}"
            raise HardenError(msg)
    if not 1 <= int(bits) <= 32 or not 0 <= int(integer) <= int(bits):
        msg = f"{where}: need 1 <= bits <= 32 and 0 <= integer <= bits, got bits={bits}, integer={integer}"
        raise HardenError(msg)
    return int(bits), int(integer)


FORMS = ("relu", "quantized_leaky", "leaky", "prelu", "elu")
"""What a ClipActivation replaced: a plain quantized ReLU, a ``quantized_relu`` with a negative slope, a
Keras ``LeakyReLU``, a Keras ``PReLU`` or a Keras ``ELU`` (``negative_slope`` holding its alpha)."""
SLOPED_FORMS = FORMS[1:]
"""The forms with a negative side (``hwflow.emulator.clip``'s ``Kind.CLIPACT_SLOPED``)."""


def _check_form(form: object, negative_slope: object, where: str) -> tuple[str, float]:
    if not isinstance(form, str) or form not in FORMS:
        msg = f"{where}: form must be one of {', '.join(FORMS)}, got {form!r}"
        raise HardenError(msg)
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float, np.integer, np.floating)) \
            or not np.isfinite(float(negative_slope)):
        msg = f"{where}: negative_slope must be a finite number, got {negative_slope!r}"
        raise HardenError(msg)
    slope = float(negative_slope)
    if form in ("quantized_leaky", "leaky", "elu") and slope == 0.0:
        msg = f"{where}: form {form!r} needs a non-zero negative_slope (use form 'relu' for a plain ReLU)"
        raise HardenError(msg)
    if form in ("relu", "prelu") and slope != 0.0:
        msg = f"{where}: form {form!r} takes no negative_slope (got {slope})"
        raise HardenError(msg)
    return form, slope


class ClipActivation(tf.keras.layers.Layer):
    """A ReLU-family activation that clips values above ``threshold`` to zero or to the threshold.

    ``bits`` and ``integer`` are those of QKeras's ``quantized_relu(bits, integer)`` (forms ``relu``
    and ``quantized_leaky``): the output is then ``ufixed<bits, integer>`` (``fixed<bits, integer + 1>``
    with a negative slope) rounded to nearest and saturated, as hls4ml converts that quantizer. The
    ``leaky`` and ``prelu`` forms are float Keras layers; hls4ml types them as the layer they replace.
    """

    def __init__(self, threshold: float, mode: str = DEFAULT_MODE, bits: int = 8, integer: int = 3,
                 form: str = "relu", negative_slope: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        where = f"ClipActivation {self.name}"
        self.threshold = check_threshold(threshold, f"{where}: threshold", HardenError)
        self.mode = check_mode(mode, f"{where}: mode", HardenError)
        self.bits, self.integer = _check_bits(bits, integer, where)
        self.form, self.negative_slope = _check_form(form, negative_slope, where)
        from qkeras import quantized_relu

        self._quantizer = None
        if self.form == "relu":
            self._quantizer = quantized_relu(self.bits, self.integer)
        elif self.form == "quantized_leaky":
            self._quantizer = quantized_relu(self.bits, self.integer, negative_slope=self.negative_slope)

    def build(self, input_shape: Any) -> None:
        if self.form == "prelu":  # PReLU's alpha, one per position (hls4ml converts no shared_axes)
            self.alpha = self.add_weight(name="alpha", shape=tuple(input_shape[1:]), initializer="zeros",
                                         trainable=True)
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        t = tf.constant(self.threshold, dtype=inputs.dtype)
        if self.mode == "zero":
            clipped = tf.where(inputs <= t, inputs, tf.zeros_like(inputs))
        else:
            clipped = tf.minimum(inputs, t)
        if self._quantizer is not None:  # quantized_relu maps x < 0 to 0 or, with a slope, to its slope
            return self._quantizer(clipped)
        if self.form == "elu":  # alpha (e^x - 1) below zero
            return tf.where(inputs > 0, clipped, self.negative_slope * (tf.exp(tf.minimum(inputs, 0.0)) - 1.0))
        alpha = self.alpha if self.form == "prelu" else tf.constant(self.negative_slope, dtype=inputs.dtype)
        return tf.where(inputs > 0, clipped, alpha * inputs)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"threshold": self.threshold, "mode": self.mode, "bits": self.bits, "integer": self.integer,
                       "form": self.form, "negative_slope": self.negative_slope})
        return config


def custom_objects() -> dict[str, Any]:
    """What ``tf.keras.models.load_model`` needs for QKeras layers and ``ClipActivation``."""
    from qkeras.utils import _add_supported_quantized_objects

    objects: dict[str, Any] = {}
    _add_supported_quantized_objects(objects)
    objects["ClipActivation"] = ClipActivation
    return objects


def _relu_quantizer(layer: Any) -> tuple[int, int] | None:
    """(bits, integer) of a plain ``QActivation(quantized_relu(...))``, else None."""
    form = _clip_form(layer)
    return form[1:3] if form is not None and form[0] == "relu" else None


def _clip_form(layer: Any) -> tuple[str, int, int, float] | None:
    """``(form, bits, integer, negative_slope)`` of a layer FT-ClipAct can replace, else None.

    ``QActivation(quantized_relu(bits, integer[, negative_slope]))`` without sigmoid form, upper bound
    or stochastic rounding; Keras ``LeakyReLU``; Keras ``PReLU`` without ``shared_axes``; Keras ``ELU``; a
    ``ClipActivation`` (clipped again with another threshold)."""
    kind = type(layer).__name__
    if isinstance(layer, ClipActivation):
        return layer.form, layer.bits, layer.integer, layer.negative_slope
    if kind == "LeakyReLU":
        config = layer.get_config()
        slope = float(config.get("negative_slope", config.get("alpha", 0.3)))
        return ("leaky", 8, 3, slope) if slope != 0.0 else None
    if kind == "PReLU":
        return ("prelu", 8, 3, 0.0) if layer.get_config().get("shared_axes") is None else None
    if kind == "ELU":
        alpha = float(layer.get_config().get("alpha", 1.0))
        return ("elu", 8, 3, alpha) if alpha != 0.0 else None
    if kind != "QActivation":
        return None
    quantizer = getattr(layer, "quantizer", None)  # the object, also when the layer was given a string
    if type(quantizer).__name__ != "quantized_relu":
        return None
    plain = (not quantizer.use_sigmoid and quantizer.relu_upper_bound is None
             and not quantizer.use_stochastic_rounding)
    if not plain:
        return None
    slope = float(quantizer.negative_slope)
    return ("relu" if slope == 0.0 else "quantized_leaky", int(quantizer.bits), int(quantizer.integer), slope)


def clip_layers(model: tf.keras.Model) -> dict[str, tuple[int, int]]:
    """The layers FT-ClipAct can clip, with their ``(bits, integer)``: plain quantized ReLUs
    (``QActivation(quantized_relu(bits, integer))``), quantized ReLUs with a negative slope, Keras
    ``LeakyReLU``, ``PReLU`` (no ``shared_axes``) and ``ELU``, and existing ``ClipActivation`` layers."""
    out = {}
    for layer in model.layers:
        if (form := _clip_form(layer)) is not None:
            out[layer.name] = form[1:3]
    return out


def clip_forms(model: tf.keras.Model) -> dict[str, tuple[str, int, int, float]]:
    """``name -> (form, bits, integer, negative_slope)`` of every layer FT-ClipAct can clip."""
    return {layer.name: form for layer in model.layers if (form := _clip_form(layer)) is not None}


RELU_FAMILY = ("LeakyReLU", "PReLU", "ELU", "ThresholdedReLU", "ReLU")
"""ReLU-like Keras layers; those ``clip_layers`` does not take are explained by ``unclippable``."""
_UNCLIPPABLE = {
    "ELU": "ELU with alpha 0: make it a quantized_relu",
    "ThresholdedReLU": "ThresholdedReLU: it already zeroes a band of inputs, a second threshold is not implemented",
    "ReLU": "a float Keras ReLU layer: quantize it as QActivation(quantized_relu(bits, integer)) first",
    "PReLU": "PReLU with shared_axes: hls4ml 1.3.0 converts one alpha per position only",
    "LeakyReLU": "LeakyReLU with a zero slope: make it a quantized_relu",
}


def unclippable(model: tf.keras.Model, names: list[str]) -> str:
    """Why the ReLU-family layers among ``names`` are not clipped ('' when none of them is one)."""
    reasons = []
    by_name = {layer.name: layer for layer in model.layers}
    for name in names:
        layer = by_name.get(name)
        kind = type(layer).__name__ if layer is not None else ""
        quantizer = getattr(layer, "activation", None) if kind == "QActivation" else None
        q_name = quantizer.split("(")[0] if isinstance(quantizer, str) else type(quantizer).__name__
        if kind in _UNCLIPPABLE:
            reasons.append(f"{name} ({_UNCLIPPABLE[kind]})")
        elif q_name == "quantized_relu":
            reasons.append(f"{name} (quantized_relu with a sigmoid form, upper bound or stochastic rounding)")
    if not reasons:
        return ""
    return f"; FT-ClipAct does not clip {', '.join(reasons)}"


def _check_thresholds(model: tf.keras.Model, thresholds: dict[str, float]) -> dict[str, float]:
    if not isinstance(thresholds, dict) or not thresholds:
        msg = "thresholds must be a non-empty mapping {layer name: threshold}"
        raise HardenError(msg)
    layers = clip_layers(model)
    if not layers:
        msg = (f"model {model.name} has no layer FT-ClipAct can clip: it replaces "
               "QActivation(quantized_relu(...)) layers without upper bound, LeakyReLU, PReLU and ELU layers")
        raise HardenError(msg)
    unknown = sorted(set(thresholds) - set(layers))
    if unknown:
        msg = (f"no clippable layer named {', '.join(unknown)} in {model.name}; clippable: {', '.join(layers)}"
               f"{unclippable(model, unknown)}")
        raise HardenError(msg)
    return {name: check_threshold(t, f"threshold of {name}", HardenError) for name, t in thresholds.items()}


def apply_clipact(model: tf.keras.Model, thresholds: dict[str, float], mode: str = DEFAULT_MODE) -> tf.keras.Model:
    """A copy of ``model`` whose layers named in ``thresholds`` are ``ClipActivation(threshold, mode)``.

    Each replaced layer keeps its name, its inputs and its output quantization; every other layer
    (and every weight) is copied unchanged. Layers not named stay as they are.
    """
    mode = check_mode(mode, "clip mode", HardenError)
    checked = _check_thresholds(model, thresholds)
    forms = clip_forms(model)

    def clone(layer: Any) -> Any:
        if layer.name not in checked:
            return layer.__class__.from_config(layer.get_config())
        form, b, i, slope = forms[layer.name]
        return ClipActivation(checked[layer.name], mode, b, i, form=form, negative_slope=slope, name=layer.name,
                              dtype=layer.dtype)

    try:
        clone_model = tf.keras.models.clone_model(model, clone_function=clone)
    except (TypeError, ValueError, KeyError) as err:
        msg = f"cannot rebuild {model.name} with clipped activations ({type(err).__name__}: {err})"
        raise HardenError(msg) from err
    for layer in clone_model.layers:
        weights = model.get_layer(layer.name).get_weights()
        if weights:
            layer.set_weights(weights)
    log.info("clipped %s (%s): %s", model.name, mode,
             ", ".join(f"{k}<={v:g}" for k, v in checked.items()))
    return clone_model


def profile_thresholds(model: tf.keras.Model, x: np.ndarray, layers: list[str] | None = None,
                       batch_size: int = 256) -> dict[str, float]:
    """The largest activation of each clippable layer on ``x``: ``max(0, max of the layer's input)``.

    This is the paper's profile (the maximum output of the *unbounded* ReLU), so it may exceed the
    quantized output type's range; the threshold search starts from ``[0, profile]``.
    """
    available = clip_layers(model)
    names = list(available) if layers is None else list(layers)
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        msg = (f"cannot profile {', '.join(unknown) or 'no layers'} in {model.name}; "
               f"clippable layers: {', '.join(available) or 'none'}")
        raise HardenError(msg)
    x = np.asarray(x)
    if len(x) == 0:
        msg = "profiling needs at least one sample"
        raise HardenError(msg)
    probe = tf.keras.Model(model.inputs, [model.get_layer(n).input for n in names])
    outs = probe.predict(x, batch_size=batch_size, verbose=0)
    if len(names) == 1:
        outs = [outs]
    return {n: max(0.0, float(np.max(o))) for n, o in zip(names, outs, strict=True)}


def clip_settings(model: tf.keras.Model) -> dict | None:
    """``{"mode": ..., "thresholds": {...}}`` of the model's ClipActivation layers (None if it has none).

    A model whose clipped layers use different modes is refused: the sidecar records one mode.
    """
    layers = [layer for layer in model.layers if isinstance(layer, ClipActivation)]
    if not layers:
        return None
    modes = {layer.mode for layer in layers}
    if len(modes) > 1:
        msg = f"model {model.name} mixes clip modes {sorted(modes)}; use one mode for every layer"
        raise HardenError(msg)
    return sidecar_entry(modes.pop(), {layer.name: layer.threshold for layer in layers})


def output_max(bits: int, integer: int) -> float:
    """Largest output of ``quantized_relu(bits, integer)``: its type ``ufixed<bits, integer>`` saturates there."""
    return 2.0**integer - 2.0 ** (integer - bits)


CLIP_RULES = {
    "zero": "T is compared with each ReLU's input; an input above T gives 0",
    "saturate": "T is compared with each ReLU's input; an input above T gives the output of T",
}
"""What a threshold does, per clip mode, in words (for what hwflow prints)."""


def describe_thresholds(model: tf.keras.Model, thresholds: dict[str, float], spec: str = ".4g") -> str:
    """``relu1 T=12.47 (outputs 0..0.9844), ...``: each threshold beside its layer's output range.

    A threshold is in the units of the layer's *input* (the pre-activation), which may lie far
    above anything the quantized output can hold: printed alone, ``12.47`` for a
    ``quantized_relu(6)`` whose outputs stop at 0.984 reads as a bug.
    """
    forms = clip_forms(model)
    parts = []
    for name, t in thresholds.items():
        form = forms.get(name)
        if form is not None and form[0] == "relu":
            parts.append(f"{name} T={t:{spec}} (outputs 0..{output_max(*form[1:3]):{spec}})")
        elif form is not None and form[0] == "quantized_leaky":  # fixed<bits, integer + 1>
            top = 2.0 ** form[2] - 2.0 ** (form[2] + 1 - form[1])
            parts.append(f"{name} T={t:{spec}} (positive outputs up to {top:{spec}})")
        else:
            parts.append(f"{name} T={t:{spec}}")
    return ", ".join(parts)


def sidecar_entry(mode: str, thresholds: dict[str, float]) -> dict:
    """The ``hardening.clipact`` value of a hardened model's sidecar."""
    mode = check_mode(mode, "clip mode", HardenError)
    return {"mode": mode, "thresholds": {str(k): float(v) for k, v in thresholds.items()}}


__all__ = ["CLIP_RULES", "DEFAULT_MODE", "FORMS", "MODES", "ClipActivation", "apply_clipact", "clip_forms",
           "clip_layers", "clip_settings", "custom_objects", "describe_thresholds", "output_max", "profile_thresholds",
           "sidecar_entry"]
