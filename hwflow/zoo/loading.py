"""Users' QKeras models enter the flow here, and are refused here if the flow cannot follow them.

Everything after this point (hls4ml conversion, the bit-exact emulator, fault campaigns) assumes
a model built from a small set of layers. Checking once, at the door, with the offending layer
named, is kinder than a KeyError deep in the emulator or a half-converted hls4ml project.
Keras's own load errors are long TensorFlow tracebacks; they are turned into one
:class:`ModelError` that names the file and says what to do.

Each trained model ``model.h5`` has a JSON sidecar ``model.json`` with how it was made (zoo
name, data set, bit widths, seed, accuracies); it lets the demo reuse a trained model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwflow.errors import ModelError, UnsupportedLayerError

if TYPE_CHECKING:
    import tensorflow as tf

log = logging.getLogger(__name__)

MERGES = frozenset({"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"})
"""Keras's merge layers hls4ml converts (two inputs; hwflow.convert.layers_merge); not Dot."""

# Exact class names: QDense subclasses Dense, so isinstance() would let look-alikes through.
SUPPORTED_LAYERS = frozenset({
    "InputLayer",
    "Dense", "QDense",
    "Conv1D", "QConv1D",
    "Conv2D", "QConv2D",
    "BatchNormalization",
    "Activation", "QActivation", "ReLU",
    "ClipActivation",  # FT-ClipAct (hwflow.harden.clipact)
    "MaxPooling1D", "MaxPooling2D",
    "AveragePooling1D", "AveragePooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D",  # hwflow.emulator.pooling
    "ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D", "UpSampling1D", "UpSampling2D", "Reshape",
    "Flatten",
    "Dropout",  # the identity at inference
    *MERGES,
    "DepthwiseConv1D", "DepthwiseConv2D", "QDepthwiseConv2D",  # depth multiplier 1 (hwflow.convert.layers_conv)
    "SeparableConv1D", "SeparableConv2D", "QSeparableConv1D", "QSeparableConv2D",
    "QConv2DBatchnorm",  # hls4ml folds the batch norm into the kernel and bias
    "QDepthwiseConv2DBatchnorm",  # folded the same way by hwflow.convert.dwbn_hls
    "LeakyReLU", "PReLU", "ELU", "ThresholdedReLU",  # hwflow.emulator.activations
    "Softmax",  # the softmax activation's path (hwflow.convert.layers_activation.register_softmax_layer)
})  # fmt: skip
ACTIVATIONS = frozenset({"linear", "relu", "softmax",
                         "sigmoid", "tanh", "softplus", "softsign", "selu", "hard_sigmoid", "elu"})  # activations.py
"""Activations allowed in an ``Activation`` layer or inside a Dense/Conv layer."""
QUANTIZED_ACTIVATIONS = frozenset({"quantized_relu", "quantized_bits",
                                   "quantized_tanh", "quantized_sigmoid"})  # hwflow.emulator.activations
"""Quantizers allowed in a ``QActivation`` layer (and inside a QDense/QConv layer)."""
QUANTIZED_ACTIVATIONS = QUANTIZED_ACTIVATIONS | frozenset({"binary", "ternary", "binary_tanh", "ternary_tanh"})
WEIGHT_QUANTIZERS = {"quantized_bits": (None, 1, "auto_po2"), "binary": (None, 1, "auto", "auto_po2"),
                     "ternary": (None, 1, "auto", "auto_po2"), "quantized_po2": (None,)}
"""Kernel and bias quantizers hls4ml converts and hwflow emulates (hwflow.convert.layers_quant), with
the ``alpha`` values each is checked with; ``quantized_po2`` for kernels only."""

_HINTS: dict[str, str] = {}
"""Why a Keras class that looks supported is not, where there is more to say than that."""

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def sidecar_path(model_path: str | Path) -> Path:
    """The JSON sidecar of a model file: ``model.h5`` -> ``model.json``."""
    return Path(model_path).with_suffix(".json")


def read_sidecar(path: str | Path) -> dict | None:
    """The sidecar of the model at ``path`` (or the sidecar file itself), or None if there is none.

    An unreadable sidecar is logged and treated as absent: it only describes the model.
    """
    path = Path(path)
    side = path if path.suffix == ".json" else sidecar_path(path)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("ignoring unreadable model sidecar %s: %s", side, err)
        return None
    if not isinstance(data, dict):
        log.warning("ignoring model sidecar %s: not a JSON object", side)
        return None
    return data


def write_sidecar(model_path: str | Path, metadata: dict) -> Path:
    """Write ``metadata`` as the JSON sidecar of ``model_path``; returns the sidecar's path."""
    side = sidecar_path(model_path)
    side.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return side


def _is_hdf5(path: Path) -> bool:
    # HDF5 files may start with a user block of 512 * 2**k bytes; the signature follows it.
    with path.open("rb") as handle:
        offset = 0
        while True:
            handle.seek(offset)
            head = handle.read(len(_HDF5_SIGNATURE))
            if head == _HDF5_SIGNATURE:
                return True
            if len(head) < len(_HDF5_SIGNATURE):
                return False
            offset = 512 if offset == 0 else offset * 2


def load_model(path: str | Path) -> tf.keras.Model:
    """Load a (Q)Keras model saved as ``.h5`` with ``model.save(path)``, without compiling it."""
    path = Path(path)
    how = "save the full model from Keras 2 / QKeras with model.save('model.h5')"
    if not path.exists():
        msg = f"{path}: model file not found"
        raise ModelError(msg)
    if path.is_dir():
        msg = f"{path}: is a directory (a SavedModel?); hwflow reads .h5 files: {how}"
        raise ModelError(msg)
    try:
        is_hdf5 = _is_hdf5(path)
    except OSError as err:
        msg = f"{path}: cannot read the model file ({err})"
        raise ModelError(msg) from err
    if not is_hdf5:
        msg = f"{path}: not an HDF5 (.h5) Keras model file; {how}"
        raise ModelError(msg)

    import h5py

    try:
        with h5py.File(path, "r") as handle:
            has_config = "model_config" in handle.attrs
    except OSError as err:
        msg = f"{path}: corrupt or truncated HDF5 file ({err}); {how}"
        raise ModelError(msg) from err
    if not has_config:
        msg = f"{path}: holds weights only, no model architecture (saved with save_weights?); {how}"
        raise ModelError(msg)

    import tensorflow as tf

    from hwflow.harden.clipact import custom_objects

    try:
        model = tf.keras.models.load_model(path, custom_objects=custom_objects(), compile=False)
    except Exception as err:  # Keras raises anything from ValueError to TypeError here
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        msg = (
            f"{path}: Keras could not load the model ({type(err).__name__}: {first_line}). "
            "Layers other than Keras 2 built-ins and QKeras layers are not supported; "
            f"{how}"
        )
        raise ModelError(msg) from err
    log.debug("loaded %s: %d layers", path, len(model.layers))
    return model


def _activation_name(activation: Any) -> str:
    if isinstance(activation, str):
        return activation.split("(")[0]
    name = getattr(activation, "__name__", None)
    return name if isinstance(name, str) else type(activation).__name__


def _check_layer(layer: Any) -> None:
    kind = type(layer).__name__
    where = f"layer {layer.name!r} ({kind})"
    if kind not in SUPPORTED_LAYERS:
        hint = "; flatten nested models into one" if hasattr(layer, "layers") else _HINTS.get(kind, "")
        msg = (
            f"{where} is not supported{hint}. Supported layers: {', '.join(sorted(SUPPORTED_LAYERS))}"
        )
        raise UnsupportedLayerError(msg)
    if kind.startswith("Q"):
        _check_quantizers(layer, where)
    if kind in MERGES and len(layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]) != 2:
        msg = f"{where} merges {len(layer.input)} inputs; hls4ml 1.3.0 merges two: chain two-input merges instead"
        raise UnsupportedLayerError(msg)
    if "Depthwise" in kind or "Separable" in kind:
        multiplier = layer.get_config().get("depth_multiplier", 1)
        if multiplier != 1:
            msg = (f"{where} has depth_multiplier {multiplier}: hls4ml 1.3.0's depthwise kernels compute a depth "
                   "multiplier of 1 only; use depth_multiplier=1")
            raise UnsupportedLayerError(msg)
    if kind == "QActivation":
        name = _activation_name(layer.activation)
        if name not in QUANTIZED_ACTIVATIONS:
            msg = f"{where} uses {name}; supported QActivation quantizers: {', '.join(sorted(QUANTIZED_ACTIVATIONS))}"
            raise UnsupportedLayerError(msg)
    elif kind == "ReLU":
        config = layer.get_config()
        if config.get("max_value") is not None or config.get("negative_slope") or config.get("threshold"):
            msg = f"{where}: only the plain ReLU is supported (no max_value, negative_slope or threshold)"
            raise UnsupportedLayerError(msg)
    elif kind == "PReLU" and layer.get_config().get("shared_axes") is not None:
        msg = (f"{where} shares its alpha over axes {layer.get_config()['shared_axes']}: hls4ml 1.3.0 converts a "
               "PReLU with one alpha per input position only (shared_axes=None)")
        raise UnsupportedLayerError(msg)
    elif hasattr(layer, "activation") and layer.activation is not None:
        name = _activation_name(layer.activation)
        allowed = ACTIVATIONS | (QUANTIZED_ACTIVATIONS if kind.startswith("Q") else frozenset())
        if name not in allowed:
            msg = f"{where} uses activation {name!r}; supported: {', '.join(sorted(allowed))}"
            raise UnsupportedLayerError(msg)


def _check_quantizers(layer: Any, where: str) -> None:
    """Refuse a weight quantizer hls4ml would silently replace by ``fixed<16,6>`` or mis-convert."""
    for key, value in layer.get_config().items():
        if not key.endswith("_quantizer") or value is None:
            continue
        name = value.get("class_name") if isinstance(value, dict) else _activation_name(value)
        config = value.get("config", {}) if isinstance(value, dict) else {}
        if name not in WEIGHT_QUANTIZERS:
            msg = (f"{where}: {key} {name} is not supported; supported: {', '.join(sorted(WEIGHT_QUANTIZERS))}")
            raise UnsupportedLayerError(msg)
        if name == "quantized_po2" and key != "kernel_quantizer" and key not in ("depthwise_quantizer",
                                                                                 "pointwise_quantizer"):
            msg = f"{where}: {key} quantized_po2 is not supported (hls4ml 1.3.0 takes po2 kernels only)"
            raise UnsupportedLayerError(msg)
        alpha = config.get("alpha")
        alpha = 1 if isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and alpha == 1 else alpha
        if alpha not in WEIGHT_QUANTIZERS[name] and name != "quantized_po2":
            allowed = ", ".join(repr(a) for a in WEIGHT_QUANTIZERS[name])
            msg = f"{where}: {key} {name} with alpha={alpha!r} is not supported; use alpha in ({allowed})"
            raise UnsupportedLayerError(msg)


_POOL_SHAPE = frozenset({
    "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "ZeroPadding1D", "ZeroPadding2D",
    "Cropping1D", "Cropping2D", "UpSampling1D", "UpSampling2D",
})  # fmt: skip


def _check_pool_shape(layer: Any, kind: str, where: str) -> None:
    """What hls4ml converts but hwflow does not follow in the pooling and shape layers."""
    if kind == "Reshape" and -1 in tuple(layer.get_config().get("target_shape", ())):
        msg = (f"{where} has -1 in its target shape, which hls4ml 1.3.0 passes on to the next layer's sizes "
               f"as -1; write the shape out: {tuple(layer.output_shape[1:])}")
        raise UnsupportedLayerError(msg)
    if kind not in _POOL_SHAPE:
        return
    config = layer.get_config()
    if config.get("data_format") == "channels_first":
        msg = f"{where} uses data_format='channels_first'; hwflow follows channels_last models only"
        raise UnsupportedLayerError(msg)
    if kind == "UpSampling2D" and config.get("interpolation", "nearest") != "nearest":
        msg = (f"{where} uses interpolation={config['interpolation']!r}; hls4ml 1.3.0 resizes with 'nearest' "
               "only on Vivado/Vitis")
        raise UnsupportedLayerError(msg)
    if kind.startswith("Global") and config.get("keepdims"):
        msg = f"{where} uses keepdims=True; use keepdims=False (and a Reshape after it if the shape matters)"
        raise UnsupportedLayerError(msg)


def check_supported(model: tf.keras.Model) -> None:
    """Raise :class:`UnsupportedLayerError` naming the first layer the flow cannot handle."""
    for layer in model.layers:
        _check_layer(layer)
        _check_pool_shape(layer, type(layer).__name__, f"layer {layer.name!r} ({type(layer).__name__})")
