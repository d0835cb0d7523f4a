"""hls4ml's activation layers -> emulator kinds: what each kernel of ``hwflow.emulator.activations``
reads off the layer after hls4ml's optimizers ran.

- ``Activation`` (relu, linear, and the table functions sigmoid, tanh, softplus, softsign): the table
  size and ``table_t``;
- ``ParametrizedActivation`` (LeakyReLU, ThresholdedReLU, ELU; QKeras ``quantized_relu`` with a
  negative slope becomes a LeakyReLU): the function, the parameter as hls4ml writes it into the
  C++ call, ``param_t``, and ELU's table;
- ``HardActivation`` (QKeras ``quantized_sigmoid`` / ``quantized_tanh`` unless ``use_real_*``, Keras
  ``hard_sigmoid``): slope and shift with their types;
- ``PReLU``: nothing beyond its ``param`` array, which ``image_from_hls`` stores like any weight;
- ``Softmax``: the implementation, its slices (``n_outer`` x ``n_slice`` x ``n_inner`` in io_parallel),
  and every table size and type as the generated config has them.
  The config (``config_cpp``) is what the C++ compiles, so sizes that hls4ml derives while writing
  it (the stable form's smaller exp table, its ``inp_norm_t``) are read from there.

The Keras ``Softmax`` *layer* takes the softmax activation's path: hls4ml 1.3.0's Keras handler sets
its ``activation`` attribute to the class name ``'Softmax'``, so the generated C++ declares
``Softmax_config<N>`` and calls ``softmax_config<N>`` and does not compile. :func:`register_softmax_layer`
wraps that handler so that the attribute is ``'softmax'``, as for ``Activation('softmax')``: the same
IR layer, templates, emulation and ``--keep-softmax`` (a final Softmax layer is otherwise removed,
``hwflow.convert.hls.strip_softmax``, like a final softmax activation).
"""

from __future__ import annotations

import re

from hwflow.convert.extract import register_layer
from hwflow.convert.names import names_of
from hwflow.emulator.activations import HARD_FUNCTIONS, LUT_FUNCTIONS, PARAM_FUNCTIONS, SOFTMAX_IMPLEMENTATIONS
from hwflow.emulator.program import Kind
from hwflow.errors import UnsupportedLayerError
from hwflow.fixed import from_hls4ml, parse_type


def _type_text(layer, name: str) -> str:
    return str(from_hls4ml(layer.get_attr(name).precision))


def _user(layer) -> str:
    return names_of(layer.model).to_user(layer.name)


def _activation_attrs(layer) -> dict:
    fn = str(layer.get_attr("activation")).lower()
    if fn not in LUT_FUNCTIONS:
        return {}
    return {"table_size": int(layer.get_attr("table_size")), "table_t": _type_text(layer, "table_t")}


def _param_attrs(layer) -> dict:
    fn = layer._get_act_function_name()
    if fn not in PARAM_FUNCTIONS:
        msg = (f"layer {_user(layer)!r}: hls4ml's {fn} activation is not emulated by hwflow "
               f"(supported: {', '.join(PARAM_FUNCTIONS)})")
        raise UnsupportedLayerError(msg)
    attrs = {"activation": fn, "param": float(layer.get_attr("activ_param", 1.0)),
             "param_t": _type_text(layer, "param_t")}
    if fn == "elu":
        attrs.update(table_size=int(layer.get_attr("table_size")), table_t=_type_text(layer, "table_t"))
    return attrs


def _hard_attrs(layer) -> dict:
    fn = str(layer.get_attr("activation")).lower()
    if fn not in HARD_FUNCTIONS:
        msg = f"layer {_user(layer)!r}: hard activation {fn!r} is not emulated (supported: {', '.join(HARD_FUNCTIONS)})"
        raise UnsupportedLayerError(msg)
    return {"activation": fn, "slope": float(layer.get_attr("slope")), "shift": float(layer.get_attr("shift")),
            "slope_t": _type_text(layer, "slope_t"), "shift_t": _type_text(layer, "shift_t")}


def _config_value(config: str, name: str) -> str | None:
    match = re.search(rf"\b{name}\s*=\s*([^;]+);", config)
    return match.group(1).strip() if match else None


def _config_type(config: str, name: str) -> str | None:
    match = re.search(rf"typedef\s+(.+?)\s+{name}\s*;", config)
    return match.group(1).strip() if match else None


def _softmax_attrs(layer) -> dict:
    impl = str(layer.get_attr("implementation", "stable")).lower()
    if impl not in SOFTMAX_IMPLEMENTATIONS:
        msg = (f"softmax layer {_user(layer)!r}: implementation {impl!r} is not emulated "
               f"(supported: {', '.join(SOFTMAX_IMPLEMENTATIONS)})")
        raise UnsupportedLayerError(msg)
    n_inner, n_outer = int(layer.get_attr("n_inner", 1)), int(layer.get_attr("n_outer", 1))
    axis = int(layer.get_attr("axis", -1))
    rank = len(layer.get_input_variable().shape)
    stream = layer.model.config.get_config_value("IOType") == "io_stream"
    if stream and axis not in (-1, rank - 1):  # nnet_activation_stream.h asserts axis == -1
        msg = (f"softmax layer {_user(layer)!r} over axis {axis} in io_stream: hls4ml's stream softmax normalizes "
               "the last axis only (its C simulation asserts it); use io_parallel or axis=-1")
        raise UnsupportedLayerError(msg)
    table_size = int(layer.get_attr("table_size", 1024))
    attrs = {
        "implementation": impl,
        "n_outer": n_outer,
        "n_inner": n_inner,
        "exp_table_size": int(layer.get_attr("exp_table_size", table_size)),
        "inv_table_size": int(layer.get_attr("inv_table_size", table_size)),
        "exp_scale": float(layer.get_attr("exp_scale", 1.0)),
        "exp_table_t": _type_text(layer, "exp_table_t"),
        "inv_table_t": _type_text(layer, "inv_table_t"),
        "inv_inp_t": _type_text(layer, "inv_inp_t"),
    }
    x_type = from_hls4ml(layer.get_input_variable().type.precision)
    if impl == "stable":  # as SoftmaxConfigTemplate derives them when no inp_norm_t is given
        if layer.get_attr("inp_norm_t") is not None:
            attrs["inp_norm_t"] = _type_text(layer, "inp_norm_t")
        else:
            width, integer = x_type.width - x_type.signed, x_type.integer - x_type.signed
            attrs["inp_norm_t"] = f"ufixed<{width},{integer}>"
            if x_type.signed:
                attrs["exp_table_size"] = min(attrs["inv_table_size"], 2**width)
    config = layer.get_attr("config_cpp")
    if isinstance(config, str):  # the config the C++ compiles has the last word
        for key in ("exp_table_size", "inv_table_size"):
            value = _config_value(config, key)
            if value is not None:
                attrs[key] = int(value)
        scale = _config_value(config, "exp_scale")
        if scale is not None:
            attrs["exp_scale"] = float(scale.rstrip("fF"))
        norm = _config_type(config, "inp_norm_t")
        if impl == "stable" and norm is not None:
            attrs["inp_norm_t"] = str(parse_type(norm))
    return attrs


def register_softmax_layer() -> None:
    """Make hls4ml's handler of the Keras ``Softmax`` layer write the softmax activation's C++; idempotent."""
    from hls4ml.converters.keras_v2_to_hls import layer_handlers

    handler = layer_handlers.get("Softmax")
    if handler is None:
        msg = "hls4ml has no Keras handler for the Softmax layer (hwflow expects hls4ml 1.3.0's)"
        raise UnsupportedLayerError(msg)
    if getattr(handler, "_hwflow_softmax", False):
        return

    def parse_softmax_layer(keras_layer, input_names, input_shapes, data_reader):
        layer, shape = handler(keras_layer, input_names, input_shapes, data_reader)
        layer["activation"] = "softmax"  # hls4ml's own: 'Softmax', the class name, which its templates misname
        return layer, shape

    parse_softmax_layer._hwflow_softmax = True
    layer_handlers["Softmax"] = parse_softmax_layer


register_layer("Activation", Kind.ACTIVATION, attrs=_activation_attrs)
register_layer("ParametrizedActivation", Kind.PARAM_ACTIVATION, attrs=_param_attrs)
register_layer("HardActivation", Kind.HARD_ACTIVATION, attrs=_hard_attrs)
register_layer("PReLU", Kind.PRELU)
register_layer("Softmax", Kind.SOFTMAX, attrs=_softmax_attrs)
