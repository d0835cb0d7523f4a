"""Teach hls4ml the FT-ClipAct layer, through hls4ml's own extension points.

hls4ml knows nothing of ``hwflow.harden.clipact.ClipActivation``. :func:`register` adds, once:

1. a Keras (v2) layer handler (``hls4ml.converters.register_keras_v2_layer_handler``) that turns
   the Keras layer into an hls4ml layer dict, with the output quantizer of the replaced
   ``quantized_relu`` so that ``config_from_keras_model`` gives the output the same
   ``ufixed<bits, integer, RND_CONV, SAT>`` type as a quantized ReLU;
2. the IR layer :class:`ClipActivation` (``hls4ml.model.layers.register_layer``);
3. for the Vivado and Vitis backends, a config template and a function-call template
   (``backend.register_template``), rendered from the real template files
   ``hls/templates/clipact_config.tpl`` and ``clipact_function.tpl`` (``${name}`` placeholders,
   ``string.Template``), and the C++ itself, ``hls/nnet_clipact.h`` (``backend.register_source``),
   which hls4ml copies into the project's ``firmware/nnet_utils``.

hls4ml's registries refuse duplicates, so :func:`register` checks each entry first and may be
called any number of times (``hwflow.convert.hls`` calls it before every conversion).

The threshold is quantized when the config is rendered, after hls4ml has settled every type:
:func:`hwflow.emulator.clip.threshold_code` of the layer's input type, the same function the
emulator uses, so both compare with the same word.

A clipped LeakyReLU, PReLU, ELU or sloped ``quantized_relu`` (``form`` of the Keras layer) becomes the
IR layer ``ClipSlopedActivation`` (``Kind.CLIPACT_SLOPED``), rendered from
``clipact_sloped_config.tpl`` / ``clipact_sloped_function.tpl`` into a call of ``nnet::clipact_sloped``
(one ``alpha``, written into the call as hls4ml writes a LeakyReLU's) or ``nnet::clipact_prelu``
(PReLU's ``alpha`` as the weight array ``a{index}``) or ``nnet::clipact_elu`` (hls4ml's ELU table, its
default ``table_t`` / ``table_size`` unless configured). ``param_t`` is what hls4ml gives the layer it
replaces (``config_from_keras_model`` leaves that ``auto``): the smallest type that holds the slope
(hls4ml's rule for LeakyReLU) or, for PReLU's array, the layer's input type, set by the optimizer pass
``PARAM_TYPE_PASS`` that runs right after hls4ml's ``infer_precision_types`` (the input type is not
settled when the layer is built). So a clipped PReLU stores the same words as the PReLU it replaces:
the same weight memory, the same faults. A ``param`` precision configured for the layer is used as given.
"""

from __future__ import annotations

import logging
import string
from functools import cache
from pathlib import Path

from hwflow.convert.extract import register_layer
from hwflow.emulator.clip import ALPHA_FORMS, MODES, check_mode, check_threshold, threshold_code, threshold_value
from hwflow.emulator.program import Kind
from hwflow.errors import ConversionError
from hwflow.fixed import from_hls4ml

log = logging.getLogger(__name__)

HLS_DIR = Path(__file__).resolve().parents[2] / "hls"
"""Our HLS sources: ``nnet_clipact.h`` and ``templates/``."""
HEADER = HLS_DIR / "nnet_clipact.h"
CONFIG_TEMPLATE = HLS_DIR / "templates" / "clipact_config.tpl"
FUNCTION_TEMPLATE = HLS_DIR / "templates" / "clipact_function.tpl"
SLOPED_CONFIG_TEMPLATE = HLS_DIR / "templates" / "clipact_sloped_config.tpl"
SLOPED_FUNCTION_TEMPLATE = HLS_DIR / "templates" / "clipact_sloped_function.tpl"
KERAS_CLASS = "ClipActivation"
"""Class name of the Keras layer (and of the hls4ml IR layer, which templates match by name)."""
SLOPED_CLASS = "ClipSlopedActivation"
"""The hls4ml IR layer of a clipped activation with a negative side (LeakyReLU, PReLU, sloped quantized_relu)."""
BACKENDS = ("Vivado", "Vitis")


@cache
def _template(path: Path) -> string.Template:
    try:
        return string.Template(path.read_text(encoding="utf-8"))
    except OSError as err:
        msg = f"hwflow's HLS template {path} is missing ({err}); reinstall hwflow from its source tree"
        raise ConversionError(msg) from err


def _layer_class():
    """The IR layer class (defined on first use: hls4ml is imported only when converting)."""
    from hls4ml.model.attributes import Attribute, ChoiceAttribute
    from hls4ml.model.layers import Layer

    class ClipActivation(Layer):
        """hls4ml IR node of FT-ClipAct: elementwise, output shape = input shape."""

        _expected_attributes = [
            Attribute("n_in"),
            Attribute("threshold", value_type=float),
            ChoiceAttribute("mode", list(MODES), configurable=False),
        ]

        def initialize(self):
            inp = self.get_input_variable()
            self.add_output_variable(inp.shape)
            self.set_attr("n_in", inp.size())

    return ClipActivation


def _sloped_layer_class():
    """The IR layer of the sloped forms: ``alpha`` a scalar (``activ_param``) or PReLU's array (``param``)."""
    from hls4ml.model.attributes import Attribute, ChoiceAttribute
    from hls4ml.model.layers import Layer
    from hls4ml.model.optimizer.passes.infer_precision import _get_precision_from_constant
    from hls4ml.model.types import NamedType, UnspecifiedPrecisionType

    class ClipSlopedActivation(Layer):
        """hls4ml IR node of FT-ClipAct on a LeakyReLU / PReLU / sloped quantized_relu: elementwise."""

        _expected_attributes = [
            Attribute("n_in"),
            Attribute("threshold", value_type=float),
            ChoiceAttribute("mode", list(MODES), configurable=False),
            ChoiceAttribute("alpha", list(ALPHA_FORMS), configurable=False),
        ]

        def initialize(self):
            inp = self.get_input_variable()
            self.add_output_variable(inp.shape)
            self.set_attr("n_in", inp.size())
            precision, type_name = self.model.config.get_precision(self, "param")
            config = self.model.config
            configured = config.layer_name_precision.get(f"{self.name.lower()}_param") is not None
            auto = isinstance(precision, UnspecifiedPrecisionType) or not configured
            if self.get_attr("alpha") == "array":
                if auto:  # a placeholder: PARAM_TYPE_PASS gives it the input's type once that is settled
                    precision = config.backend.convert_precision_string(config.model_precision["default"])
                self.set_attr("param_from_input", auto)
                self.add_weights_variable(name="param", var_name="a{index}", precision=precision)
                self.set_attr("param_t", self.weights["param"].type)
            else:
                if auto:
                    precision = _get_precision_from_constant(float(self.get_attr("activ_param")))
                self.set_attr("param_t", NamedType(f"{self.name}_param_t" if auto else type_name, precision))
            if self.get_attr("alpha") == "elu":  # hls4ml's ELU table: its defaults unless configured
                table = config.layer_name_precision.get(f"{self.name.lower()}_table")
                table = config.backend.convert_precision_string(table or ELU_TABLE_T)
                self.set_attr("table_t", NamedType(f"{self.name}_table_t", table))
                self.set_attr("table_size", int(config.get_layer_config_value(self, "TableSize", ELU_TABLE_SIZE)))

    return ClipSlopedActivation


ELU_TABLE_T = "fixed<18,8>"
ELU_TABLE_SIZE = 1024
"""hls4ml's defaults for an activation's table (``table_t``, ``table_size``), those a Keras ELU gets."""
PARAM_TYPE_PASS = "hwflow_clipact_param_type"
"""The optimizer pass that types a clipped PReLU's alpha array as hls4ml types a PReLU's (its input type)."""


def _param_type_pass(layer_class):
    from hls4ml.model.optimizer import OptimizerPass
    from hls4ml.model.types import UnspecifiedPrecisionType

    class ClipParamType(OptimizerPass):
        """After ``infer_precision_types``: the alpha array in the input's type, unless configured, so that
        a clipped PReLU holds the very words (and weight memory) of the PReLU it replaces."""

        def match(self, node):
            if not isinstance(node, layer_class) or not node.get_attr("param_from_input", False):
                return False
            return not isinstance(node.get_input_variable().type.precision, UnspecifiedPrecisionType)

        def transform(self, model, node):
            node.weights["param"].update_precision(node.get_input_variable().type.precision)
            node.set_attr("param_from_input", False)
            return False

    return ClipParamType


def parse_clipact_layer(keras_layer, input_names, input_shapes, data_reader):
    """hls4ml's Keras handler: the layer dict, with the output quantizer of ``quantized_relu``."""
    from hls4ml.converters.keras_v2_to_hls import get_weights_data, parse_default_keras_layer

    cfg = keras_layer["config"]
    where = f"layer {cfg.get('name')!r} (ClipActivation)"
    layer = parse_default_keras_layer(keras_layer, input_names)
    layer["threshold"] = check_threshold(cfg.get("threshold"), f"{where}: threshold", ConversionError)
    layer["mode"] = check_mode(cfg.get("mode"), f"{where}: mode", ConversionError)
    form = cfg.get("form", "relu")
    slope = float(cfg.get("negative_slope", 0.0))
    if form in ("relu", "quantized_leaky"):
        # hls4ml's config_from_keras_model turns an 'activation_quantizer' into the result type.
        layer["activation_quantizer"] = {
            "class_name": "quantized_relu",
            "config": {"bits": int(cfg["bits"]), "integer": int(cfg["integer"]),
                       "negative_slope": slope if form == "quantized_leaky" else 0.0},
        }
    if form == "relu":
        return layer, list(input_shapes[0])
    layer["class_name"] = SLOPED_CLASS
    if form == "prelu":
        layer["alpha"] = "array"
        layer["param_data"] = get_weights_data(data_reader, layer["name"], "alpha")
        if layer["param_data"] is None:
            msg = f"{where}: its PReLU alpha weights are missing; build the layer before converting it"
            raise ConversionError(msg)
    elif form in ("leaky", "quantized_leaky", "elu"):
        layer["alpha"] = "elu" if form == "elu" else "scalar"
        layer["activ_param"] = slope
    else:
        msg = f"{where}: unknown form {form!r}; hwflow writes relu, quantized_leaky, leaky or prelu"
        raise ConversionError(msg)
    return layer, list(input_shapes[0])


def _sloped_attrs(layer) -> dict:
    """What ``hwflow.emulator.clip.sloped_layer`` reads: threshold, mode, alpha form (and the scalar slope)."""
    attrs = {"threshold": float(layer.get_attr("threshold")), "mode": str(layer.get_attr("mode")),
             "alpha": str(layer.get_attr("alpha"))}
    if attrs["alpha"] != "array":
        attrs["param"] = float(layer.get_attr("activ_param"))
        attrs["param_t"] = str(from_hls4ml(layer.get_attr("param_t").precision))
    if attrs["alpha"] == "elu":
        attrs["table_size"] = int(layer.get_attr("table_size"))
        attrs["table_t"] = str(from_hls4ml(layer.get_attr("table_t").precision))
    return attrs


register_layer(SLOPED_CLASS, Kind.CLIPACT_SLOPED, attrs=_sloped_attrs)


def _template_classes(layer_class):
    from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate

    class ClipActConfigTemplate(LayerConfigTemplate):
        def __init__(self):
            super().__init__(layer_class)

        def format(self, node):
            params = self._default_config_params(node)
            x_type = from_hls4ml(node.get_input_variable().type.precision)
            requested = float(node.get_attr("threshold"))
            return _template(CONFIG_TEMPLATE).substitute(
                index=node.index,
                n_in=node.get_attr("n_in"),
                iotype=params["iotype"],
                mode=node.get_attr("mode"),
                saturate="true" if node.get_attr("mode") == "saturate" else "false",
                requested=repr(requested),
                input_type=x_type.cpp(),
                code=threshold_code(requested, x_type),
                # repr() round-trips the double exactly, and threshold_value is exact in a double.
                threshold=repr(threshold_value(requested, x_type)),
            )

    class ClipActFunctionTemplate(FunctionCallTemplate):
        def __init__(self):
            super().__init__(layer_class, include_header=[f"nnet_utils/{HEADER.name}"])

        def format(self, node):
            params = self._default_function_params(node)
            return _template(FUNCTION_TEMPLATE).substitute(
                index=node.index, input_t=params["input_t"], output_t=params["output_t"],
                input=params["input"], output=params["output"],
            ).strip()

    return ClipActConfigTemplate, ClipActFunctionTemplate


def _sloped_template_classes(layer_class):
    from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate

    class ClipSlopedConfigTemplate(LayerConfigTemplate):
        def __init__(self):
            super().__init__(layer_class)

        def format(self, node):
            params = self._default_config_params(node)
            x_type = from_hls4ml(node.get_input_variable().type.precision)
            requested = float(node.get_attr("threshold"))
            alpha = node.get_attr("alpha")
            table = ""
            if alpha == "elu":
                table = (f"\n    static const unsigned table_size = {node.get_attr('table_size')};"
                         f"\n    typedef {node.get_attr('table_t').name} table_t;")
            return _template(SLOPED_CONFIG_TEMPLATE).substitute(
                index=node.index, n_in=node.get_attr("n_in"), iotype=params["iotype"], mode=node.get_attr("mode"),
                table=table,
                alpha={"array": "alpha[i] x", "elu": f"ELU {node.get_attr('activ_param')!r} (e^x - 1)"}.get(
                    alpha, f"alpha {node.get_attr('activ_param')!r} x"),
                saturate="true" if node.get_attr("mode") == "saturate" else "false",
                requested=repr(requested), input_type=x_type.cpp(), code=threshold_code(requested, x_type),
                threshold=repr(threshold_value(requested, x_type)), param_t=node.get_attr("param_t").name,
            )

    class ClipSlopedFunctionTemplate(FunctionCallTemplate):
        def __init__(self):
            super().__init__(layer_class, include_header=[f"nnet_utils/{HEADER.name}"])

        def format(self, node):
            params = self._default_function_params(node)
            array = node.get_attr("alpha") == "array"
            # The scalar slope as hls4ml writes a LeakyReLU's: the Python float's text, a C++ double.
            param = node.get_weights("param").name if array else repr(float(node.get_attr("activ_param")))
            function = {"array": "clipact_prelu", "elu": "clipact_elu"}.get(node.get_attr("alpha"), "clipact_sloped")
            return _template(SLOPED_FUNCTION_TEMPLATE).substitute(
                function=function, index=node.index,
                input_t=params["input_t"], param_t=node.get_attr("param_t").name, output_t=params["output_t"],
                input=params["input"], param=param, output=params["output"],
            ).strip()

    return ClipSlopedConfigTemplate, ClipSlopedFunctionTemplate


def register() -> None:
    """Register the layer, its templates and its C++ with hls4ml; a no-op when already done."""
    import hls4ml
    from hls4ml.converters.keras_v2_to_hls import layer_handlers
    from hls4ml.model.layers import layer_map
    from hls4ml.model.optimizer.optimizer import optimizer_map

    if not HEADER.is_file():
        msg = f"hwflow's HLS source {HEADER} is missing; reinstall hwflow from its source tree"
        raise ConversionError(msg)
    if KERAS_CLASS not in layer_handlers:
        hls4ml.converters.register_keras_v2_layer_handler(KERAS_CLASS, parse_clipact_layer)
    if KERAS_CLASS not in layer_map:
        hls4ml.model.layers.register_layer(KERAS_CLASS, _layer_class())
    if SLOPED_CLASS not in layer_map:
        hls4ml.model.layers.register_layer(SLOPED_CLASS, _sloped_layer_class())
    templates = (*_template_classes(layer_map[KERAS_CLASS]), *_sloped_template_classes(layer_map[SLOPED_CLASS]))
    if PARAM_TYPE_PASS not in optimizer_map:
        from hls4ml.model.optimizer import register_pass

        register_pass(PARAM_TYPE_PASS, _param_type_pass(layer_map[SLOPED_CLASS]))
    from hls4ml.model.flow import get_flow

    passes = get_flow("vivado:optimize")._optimizers  # Vitis runs Vivado's optimize flow
    if PARAM_TYPE_PASS not in passes:
        passes.insert(passes.index("infer_precision_types") + 1, PARAM_TYPE_PASS)
    for name in BACKENDS:
        backend = hls4ml.backends.get_backend(name)
        for template in templates:
            if f"{name.lower()}:{template().get_name()}" not in optimizer_map:
                backend.register_template(template)
        backend.register_source(HEADER)  # a dict entry: registering again changes nothing
    log.debug("FT-ClipAct registered with hls4ml (%s)", ", ".join(BACKENDS))
