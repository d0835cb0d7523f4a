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
"""

from __future__ import annotations

import logging
import string
from functools import cache
from pathlib import Path

from hwflow.emulator.clip import MODES, check_mode, check_threshold, threshold_code, threshold_value
from hwflow.errors import ConversionError
from hwflow.fixed import from_hls4ml

log = logging.getLogger(__name__)

HLS_DIR = Path(__file__).resolve().parents[2] / "hls"
"""Our HLS sources: ``nnet_clipact.h`` and ``templates/``."""
HEADER = HLS_DIR / "nnet_clipact.h"
CONFIG_TEMPLATE = HLS_DIR / "templates" / "clipact_config.tpl"
FUNCTION_TEMPLATE = HLS_DIR / "templates" / "clipact_function.tpl"
KERAS_CLASS = "ClipActivation"
"""Class name of the Keras layer (and of the hls4ml IR layer, which templates match by name)."""
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


def parse_clipact_layer(keras_layer, input_names, input_shapes, data_reader):
    """hls4ml's Keras handler: the layer dict, with the output quantizer of ``quantized_relu``."""
    from hls4ml.converters.keras_v2_to_hls import parse_default_keras_layer

    cfg = keras_layer["config"]
    where = f"layer {cfg.get('name')!r} (ClipActivation)"
    layer = parse_default_keras_layer(keras_layer, input_names)
    layer["threshold"] = check_threshold(cfg.get("threshold"), f"{where}: threshold", ConversionError)
    layer["mode"] = check_mode(cfg.get("mode"), f"{where}: mode", ConversionError)
    # hls4ml's config_from_keras_model turns an 'activation_quantizer' into the result type.
    layer["activation_quantizer"] = {
        "class_name": "quantized_relu",
        "config": {"bits": int(cfg["bits"]), "integer": int(cfg["integer"]), "negative_slope": 0.0},
    }
    return layer, list(input_shapes[0])


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
    templates = _template_classes(layer_map[KERAS_CLASS])
    for name in BACKENDS:
        backend = hls4ml.backends.get_backend(name)
        for template in templates:
            if f"{name.lower()}:{template().get_name()}" not in optimizer_map:
                backend.register_template(template)
        backend.register_source(HEADER)  # a dict entry: registering again changes nothing
    log.debug("FT-ClipAct registered with hls4ml (%s)", ", ".join(BACKENDS))
