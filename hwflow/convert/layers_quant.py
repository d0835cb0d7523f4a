"""QKeras's non-fixed-point quantizers as hls4ml converts them: what the converter reads.

- ``binary`` / ``ternary`` / ``quantized_po2`` kernels: hls4ml picks a product function per layer from
  the input and weight types (``FPGABackend.product_type``: ``weight_binary``, ``weight_ternary``,
  ``both_binary``, ``data_binary``, ``weight_exponential``). The Program records the product of each
  multiply-accumulate layer (attribute ``product``, absent for the plain ``mult``), and the
  WeightImage stores each weight word in the format that product reads it in
  (``hwflow.image.quantized``): XNOR bits, ternary codes, packed sign + exponent words.
- ``quantized_bits(alpha='auto_po2')``: hls4ml inserts an ``ApplyAlpha`` layer (a BatchNormalization
  subclass) whose ``scale`` is a po2 exponent array and whose ``bias`` is the layer's moved bias.
- ``binary`` / ``ternary`` activations: after a batch norm (or an ApplyAlpha) hls4ml merges both into
  ``BatchNormalizationQuantizedTanh``, comparisons against per-channel thresholds (arrays
  ``threshold``, or ``threshold_hi`` and ``threshold_lo``); alone, ``binary_tanh`` stays an activation
  and a ``TernaryTanh`` is refused (hls4ml 1.3.0 writes no C++ call for it).
"""

from __future__ import annotations

import numpy as np

from hwflow.convert.extract import register_layer
from hwflow.convert.names import names_of
from hwflow.emulator.program import Kind, register_arrays
from hwflow.errors import UnsupportedLayerError
from hwflow.fixed import from_hls4ml
from hwflow.image import Kind as FormatKind
from hwflow.image import StorageFormat, quantized

PLAIN = "mult"
DATA_BINARY = ("data_binary", "both_binary")
"""Products whose input is XNOR data (0 meaning -1): the fused path and the linear delta rule leave them
to ``hwflow.emulator.products``."""

MAC_CLASSES = ("Dense", "Conv1D", "Conv2D")


def product_of(layer, array: str = "weight") -> str:
    """The product function hls4ml's templates use for ``layer``'s input times its ``array``."""
    var = layer.weights.get(array)
    if var is None:
        return PLAIN
    data_t = layer.get_input_variable().type.precision
    return str(layer.model.config.backend.product_type(data_t, var.type.precision))


def mac_attrs(layer) -> dict:
    """The ``product`` of a Dense/Conv layer when it is not the plain multiply (so plain programs are unchanged)."""
    product = product_of(layer)
    return {} if product == PLAIN else {"product": product}


def _threshold_attrs(layer) -> dict:
    if layer.class_name == "TernaryTanh":
        msg = (f"layer {names_of(layer.model).to_user(layer.name)!r} (TernaryTanh): hls4ml 1.3.0 writes no C++ call "
               "for a ternary activation it cannot merge into a batch norm (its output is never computed). Put a "
               "BatchNormalization before it, or give ternary() a threshold other than 0.5 (hls4ml then merges it)")
        raise UnsupportedLayerError(msg)
    quantize = int(layer.get_attr("quantize"))
    name = names_of(layer.model).to_user(layer.name)
    if quantize not in (2, 3):
        msg = f"layer {name}: BatchNormalizationQuantizedTanh with quantize={quantize} (hls4ml has 2 and 3)"
        raise UnsupportedLayerError(msg)
    n_filt = int(layer.get_attr("n_filt", -1))
    shape = layer.get_input_variable().shape
    stream = layer.model.config.get_config_value("IOType") == "io_stream"
    if stream and n_filt == -1 and len(shape) > 1:
        msg = (f"layer {name!r} (BatchNormalizationQuantizedTanh): hls4ml 1.3.0's io_stream kernel cannot compile "
               "thresholds per position (n_filt -1, from a ternary threshold other than 0.5 after a convolution): "
               "use io_parallel, or a binary activation there")
        raise UnsupportedLayerError(msg)
    return {"quantize": quantize, "n_filt": n_filt}


def _alpha_attrs(layer) -> dict:
    return {"n_filt": int(layer.get_attr("n_filt", -1)), "product": product_of(layer, "scale")}


def stored_words(layer, kind: Kind, name: str, var) -> tuple[StorageFormat, np.ndarray] | None:
    """The format and firmware-order words of an array that a product reads as non-fixed-point words,
    or None for an ordinary fixed-point array (``image_from_hls`` reads it itself).

    Refuses a non-fixed-point type in an array no product of this module reads (hwflow would misread it).
    """
    precision = var.type.precision
    bases = {cls.__name__ for cls in type(precision).__mro__}
    product = PLAIN
    if kind in (Kind.DENSE, Kind.CONV1D, Kind.CONV2D) and name == "weight":
        product = product_of(layer)
    elif kind is Kind.APPLY_ALPHA and name == "scale":
        product = product_of(layer, "scale")
    if product == "weight_exponential":
        bits = int(precision.width)
        entries = [quantized.parse_exponent_entry(text) for text in var]
        sign = np.array([s for s, _ in entries], dtype=np.int64)
        exponent = np.array([e & ((1 << bits) - 1) for _, e in entries], dtype=np.int64)  # ap_int<E> keeps the low bits
        return StorageFormat(FormatKind.EXPONENT, exponent_bits=bits), quantized.exponent_words(sign, exponent, bits)
    if product in ("weight_binary", "both_binary"):
        data = np.asarray(var.data).reshape(-1)
        return StorageFormat(FormatKind.XNOR), (data.astype(np.float64) != 0).astype(np.uint64)
    if product == "weight_ternary":
        codes = np.rint(np.asarray(var.data, dtype=np.float64).reshape(-1)).astype(np.int64)
        return StorageFormat(FormatKind.TERNARY), (codes & 3).astype(np.uint64)
    if bases & {"ExponentPrecisionType", "XnorPrecisionType"}:
        msg = (f"layer {layer.name}: array {name} has hls4ml type {precision} ({type(precision).__name__}), which "
               f"hwflow reads only as the weight of Dense/Conv1D/Conv2D or the scale of ApplyAlpha")
        raise UnsupportedLayerError(msg)
    from_hls4ml(precision)  # a readable fixed-point type, or a clear error
    return None


register_arrays(Kind.APPLY_ALPHA, ("scale", "bias"))
register_arrays(Kind.BN_QUANTIZED_TANH, ("threshold", "threshold_hi", "threshold_lo"))
register_layer("ApplyAlpha", Kind.APPLY_ALPHA, attrs=_alpha_attrs)
register_layer("BatchNormalizationQuantizedTanh", Kind.BN_QUANTIZED_TANH, attrs=_threshold_attrs)
register_layer("TernaryTanh", Kind.BN_QUANTIZED_TANH, attrs=_threshold_attrs)  # read to be refused by name
