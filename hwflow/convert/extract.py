"""Read what the emulator needs out of an hls4ml ModelGraph: the Program and the WeightImage.

This is the only module that knows hls4ml's layer classes and attribute names. It reads the graph
*after* hls4ml's optimizers ran, so inferred types, inserted padding layers and the Resource
strategy's weight transposition are all seen as they will be synthesized.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from hwflow.convert.names import names_of
from hwflow.emulator.program import WEIGHTED, Kind, LayerSpec, Program
from hwflow.errors import ConversionError, FormatError, UnsupportedLayerError
from hwflow.fixed import from_hls4ml, quantize_float
from hwflow.image import Kind as FormatKind
from hwflow.image import Scale, StorageFormat, StoragePlan, StoredArray, WeightImage

_KINDS = {
    "Input": Kind.INPUT,
    "Dense": Kind.DENSE,
    "Conv1D": Kind.CONV1D,
    "Conv2D": Kind.CONV2D,
    "BatchNormalization": Kind.BATCHNORM,
    "Activation": Kind.ACTIVATION,
    "ClipActivation": Kind.CLIPACT,  # hwflow.convert.clipact_hls
    "Pooling1D": Kind.POOL1D,
    "Pooling2D": Kind.POOL2D,
    "GlobalPooling1D": Kind.GLOBALPOOL1D,
    "GlobalPooling2D": Kind.GLOBALPOOL2D,
    "ZeroPadding1D": Kind.ZEROPAD1D,
    "ZeroPadding2D": Kind.ZEROPAD2D,
    "Reshape": Kind.RESHAPE,
}

COPIES = frozenset({"Clone"})
"""Layers that copy a stream for its second reader (io_stream, hls4ml's ``clone_output`` pass): the
same words, same type, so the Program leaves them out and their readers read the copied layer."""

_GEOMETRY = (
    "n_in", "n_out", "n_chan", "n_filt", "in_height", "in_width", "out_height", "out_width",
    "filt_height", "filt_width", "stride_height", "stride_width", "pad_top", "pad_bottom", "pad_left",
    "pad_right", "pool_height", "pool_width", "count_pad",
)


# hls4ml's Resource strategy stores kernels transposed (resource_strategy.py): firmware = logical.T(axes),
# per (kind, array); ``register_layer(..., resource_axes=)`` adds a family's own.
_ARRAY_AXES: dict[tuple[Kind, str], tuple[int, ...]] = {
    (Kind.DENSE, "weight"): (1, 0), (Kind.CONV1D, "weight"): (2, 0, 1), (Kind.CONV2D, "weight"): (3, 0, 1, 2)}


_ATTRS: dict[str, Callable] = {}
"""Per hls4ml class added by ``register_layer``: what it reads off the layer into ``LayerSpec.attrs``
(keyed by class, not kind: several classes share a kind, each with its own attributes)."""


def register_layer(class_name: str, kind: Kind, attrs: Callable | None = None,
                   resource_axes: dict[str, tuple[int, ...]] | None = None) -> None:
    """Accept hls4ml's layer class ``class_name`` as emulator kind ``kind`` (from the kind's own module).

    ``attrs(layer) -> dict``: what the emulator needs beyond the common geometry (read after hls4ml's
    optimizers ran); ``resource_axes``: per array, how the Resource strategy stores it transposed
    (firmware = logical.transpose(axes)). Registering the same class twice is refused.
    """
    if class_name in _KINDS and _KINDS[class_name] is not kind:
        msg = f"hls4ml's {class_name} is already read as {_KINDS[class_name].value}"
        raise ConversionError(msg)
    _KINDS[class_name] = kind
    if attrs is not None:
        _ATTRS[class_name] = attrs
    for array, axes in (resource_axes or {}).items():
        _ARRAY_AXES[(kind, array)] = tuple(axes)


def _kind(layer) -> Kind:
    kind = _KINDS.get(layer.class_name)
    if kind is None:
        name = names_of(layer.model).to_user(layer.name)
        msg = (f"layer {name!r} ({layer.class_name}) is not supported by the hwflow emulator; supported: "
               f"{', '.join(sorted(_KINDS))}")
        raise UnsupportedLayerError(msg)
    return kind


def _layer_type(precision, var: str, name: str):
    """A layer's hls4ml type as the emulator's, or a ConversionError that names the layer and what to do (hls4ml
    infers types wider than the emulator's 62 bits for unquantized layers after wide ones)."""
    try:
        return from_hls4ml(precision)
    except FormatError as err:
        msg = (f"layer {name}: its {var} type {precision}: {err}. hls4ml inferred it from the layer's inputs: give "
               f"it a narrower type in your hls4ml configuration (--hls-config, LayerName.{name}.Precision.{var}), "
               "or quantize the layers before it (QKeras)")
        raise ConversionError(msg) from None


def program_from_hls(hls_model, source: dict | None = None) -> Program:
    """The emulator's Program for a converted ModelGraph, with the user's layer names."""
    from hwflow.convert.layers_quant import mac_attrs  # here: layers_quant registers itself with this module

    names = names_of(hls_model)
    specs = []
    for layer in hls_model.get_layers():
        if layer.class_name in COPIES:
            continue
        kind = _kind(layer)
        attrs = {k: _plain(layer.get_attr(k)) for k in _GEOMETRY if layer.get_attr(k) is not None}
        if kind is Kind.ACTIVATION:
            attrs["activation"] = str(layer.get_attr("activation")).lower()
        if kind is Kind.CLIPACT:  # the threshold as requested; hwflow.emulator.clip quantizes it
            attrs["threshold"] = float(layer.get_attr("threshold"))
            attrs["mode"] = str(layer.get_attr("mode"))
        if kind in (Kind.POOL1D, Kind.POOL2D, Kind.GLOBALPOOL1D, Kind.GLOBALPOOL2D):
            attrs["pool_op"] = str(layer.get_attr("pool_op"))
        if kind in (Kind.DENSE, Kind.CONV1D, Kind.CONV2D):  # per layer: a user's configuration sets them so
            attrs["reuse_factor"] = int(layer.get_attr("reuse_factor", 1))
            attrs["strategy"] = str(layer.get_attr("strategy", "latency")).lower()
            attrs.update(mac_attrs(layer))  # binary/ternary/po2 products (not plain ones)
        if layer.class_name in _ATTRS:
            attrs.update(_ATTRS[layer.class_name](layer))
        accum = layer.get_attr("accum_t")
        specs.append(
            LayerSpec(
                name=names.to_user(layer.name),
                kind=kind,
                inputs=tuple(names.to_user(_producer(hls_model, name)) for name in layer.inputs)
                if kind is not Kind.INPUT else (),
                output_shape=tuple(int(d) for d in layer.get_output_variable().shape),
                result=_layer_type(layer.get_output_variable().type.precision, "result", names.to_user(layer.name)),
                accum=_layer_type(accum.precision, "accum", names.to_user(layer.name)) if accum is not None else None,
                attrs=attrs,
            )
        )
    _check_one_input_one_output(hls_model, specs)
    io_type = hls_model.config.get_config_value("IOType")
    source = dict(source or {})
    report = getattr(hls_model, "hwflow_config", None)  # the user's hls4ml configuration: its digest names the design
    if report is not None:
        source.update(hls_config=report.digest, hls_config_name=report.name.rsplit("/", 1)[-1])
    return Program(tuple(specs), io_type, source)


def _check_one_input_one_output(hls_model, specs: list[LayerSpec]) -> None:
    """A Program has one input (its first layer) and one output (its last): a graph may branch and merge
    in between, but a second input or output would be silently dropped."""
    inputs = [spec.name for spec in specs if spec.kind is Kind.INPUT]
    outputs = list(getattr(hls_model, "outputs", None) or [])
    if len(inputs) != 1 or len(outputs) > 1:
        names = names_of(hls_model)
        msg = (f"the model has {len(inputs)} inputs ({', '.join(inputs)}) and {len(outputs)} outputs "
               f"({', '.join(names.to_user(o) for o in outputs)}); hwflow emulates networks with one input and one "
               "output: merge the inputs (or outputs) inside the model")
        raise UnsupportedLayerError(msg)
    if specs[-1].name != names_of(hls_model).to_user(_producer(hls_model, outputs[0]) if outputs else specs[-1].name):
        msg = f"the model's output is not its last layer ({specs[-1].name}); hwflow reads the last layer as the output"
        raise UnsupportedLayerError(msg)


def _producer(hls_model, tensor: str) -> str:
    """Name of the layer whose output is ``tensor`` (hls4ml names tensors after layers, mostly); through
    a copy (``COPIES``), the layer whose output was copied."""
    for layer in hls_model.get_layers():
        if tensor in layer.outputs:
            return _producer(hls_model, layer.inputs[0]) if layer.class_name in COPIES else layer.name
    return tensor


def _plain(value):
    return bool(value) if isinstance(value, (bool, np.bool_)) else int(value)


def image_from_hls(hls_model, storage: StoragePlan | None = None) -> WeightImage:
    """The stored words of every weight array, exactly as the C simulation loads them.

    hls4ml writes each value as decimal text with as many decimals as the type has fractional
    bits, and the C++ reads it back into the ``ap_fixed`` type (rounding with the type's mode). We
    follow the same text, so a weight that is not exactly representable (batch-norm scales, biases
    without a quantizer) gets the very code the C simulation gets.

    ``storage`` (default: the plan ``convert`` was given): an array with a power-of-two scale in fixed
    storage has hls4ml type ``fixed<W,I-s>``; its words are those bits, recorded as stored type
    ``fixed<W,I>`` with the shift (contract 7). Constant scales and float storage are encoded from
    the trained words (``StoragePlan.encode_array``); hls4ml keeps its types for them.
    """
    recorded = getattr(hls_model, "hwflow_storage", None)
    plan = storage if storage is not None else recorded
    if plan is not None and plan.shifts() != (recorded.shifts() if recorded is not None else {}):
        msg = ("the storage plan moves the binary point of hls4ml types that this graph was not converted with: "
               "pass the same plan to hwflow.convert.convert(..., storage=plan)")
        raise ConversionError(msg)
    from hwflow.convert.layers_quant import stored_words  # here: layers_quant registers itself with this module

    arrays = []
    names = names_of(hls_model)
    for layer in hls_model.get_layers():
        if layer.class_name in COPIES:
            continue
        kind = _kind(layer)
        for name in WEIGHTED.get(kind, ()):
            var = layer.weights.get(name)
            if var is None:
                continue
            data = np.asarray(var.data, dtype=np.float64)
            quantized = stored_words(layer, kind, name, var)  # XNOR, ternary and exponent words
            if quantized is None:
                ftype = from_hls4ml(var.type.precision)
                text_values = np.array([float(var.precision_fmt.format(v)) for v in data.reshape(-1)])
                fmt = StorageFormat(FormatKind.FIXED, ftype)
                words = ftype.to_unsigned(quantize_float(text_values, ftype))
            else:
                fmt, words = quantized
            axes = tuple(range(data.ndim))
            resource = str(layer.get_attr("strategy", "")).lower().startswith("resource")
            if (kind, name) in _ARRAY_AXES and (resource or layer.get_attr("_weights_transposed", False) is True):
                axes = _ARRAY_AXES[(kind, name)]
            logical = tuple(data.shape[i] for i in np.argsort(axes))
            array = StoredArray(
                layer=names.to_user(layer.name),
                name=name,
                var=var.name,
                shape=logical,
                axes=axes,
                format=fmt,
                scale=Scale(),
                words=words,
            )
            arrays.append(_stored(array, plan) if plan is not None and fmt.kind is FormatKind.FIXED else array)
    image = WeightImage(tuple(arrays))
    if plan is not None:
        plan.check(image)
    return image


def _stored(array: StoredArray, plan: StoragePlan) -> StoredArray:
    shift = plan.shifts().get(array.key, 0)
    if shift:  # hls4ml holds the words in the compute type fixed<W,I-s>: the same bits, stored as fixed<W,I>
        t = array.format.fixed
        return replace(array, format=StorageFormat(FormatKind.FIXED, replace(t, integer=t.integer + shift)),
                       scale=Scale(shift))
    return plan.encode_array(array)
