"""Teach hls4ml QKeras's ``QDepthwiseConv2DBatchnorm``, the way it converts ``QConv2DBatchnorm``.

hls4ml 1.3.0 converts ``QConv2DBatchnorm`` into ``Conv2DBatchnorm`` (a Conv2D whose stored kernel and
bias are the batch-norm-folded ones) but has no converter for the depthwise form. :func:`register` adds,
once, through hls4ml's own extension points (as ``hwflow.convert.clipact_hls`` does for FT-ClipAct):

1. a Keras (v2) handler: hls4ml's ``QDepthwiseConv2D`` dict (the raw ``depthwise_kernel``, ``bias``,
   the ``depthwise_quantizer`` / ``bias_quantizer``) plus the batch norm's ``gamma``, ``beta``,
   ``moving_mean``, ``moving_variance`` and ``epsilon``;
2. the IR layer ``DepthwiseConv2DBatchnorm``, a subclass of hls4ml's ``DepthwiseConv2D`` whose
   ``initialize`` folds first, then builds the depthwise layer from the folded arrays. The fold is
   QKeras's inference fold (``QDepthwiseConv2DBatchnorm.call`` with ``training=False``, the same for
   both ``folding_mode`` values and whatever ``ema_freeze_delay`` is: they only change training),
   computed with TensorFlow in float32 in QKeras's order, so that the words are QKeras's own::

       inv    = rsqrt(moving_variance + epsilon) * gamma
       kernel = depthwise_quantizer(inv * depthwise_kernel)
       bias   = bias_quantizer(inv * (bias - moving_mean) + beta)      (bias 0 without use_bias)

   The folded bias is stored even without ``use_bias`` (QKeras adds it), in the layer's bias type;
3. for the Vivado and Vitis backends, the DepthwiseConv2D templates for the new class (hls4ml matches
   templates by class name; its other passes, im2col, streaming instructions, Resource transposition,
   ``init_depconv2d``, test ``isinstance`` and so take the subclass as a DepthwiseConv2D);
4. the optimizer pass :data:`PRECISION_PASS`, right before hls4ml's ``infer_precision_types`` (in the
   ``convert`` and ``vivado:optimize`` flows), which
   gives the layer's ``auto`` types (accumulator, result) hls4ml's DepthwiseConv2D rule (the generic
   pass routes by class name and would give them the default precision).

hls4ml's registries refuse duplicates, so :func:`register` checks each entry first and may be called
any number of times. ``hwflow.convert.layers_conv`` reads the layer as ``Kind.DEPTHWISE2D``.
"""

from __future__ import annotations

import logging

import numpy as np

from hwflow.errors import ConversionError

log = logging.getLogger(__name__)

KERAS_CLASS = "QDepthwiseConv2DBatchnorm"
IR_CLASS = "DepthwiseConv2DBatchnorm"
PRECISION_PASS = "hwflow_dwbn_infer_precision"
BACKENDS = ("Vivado", "Vitis")


def fold(kernel, bias, gamma, beta, mean, variance, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """QKeras's inference fold of a depthwise kernel ``(kh, kw, C, 1)`` and its bias, float32, in QKeras's order.

    ``bias`` None (no ``use_bias``) counts as 0, ``gamma`` None (``scale=False``) as 1, ``beta`` None as 0.
    """
    import tensorflow as tf

    kernel = tf.constant(np.asarray(kernel, dtype=np.float32))
    variance = tf.constant(np.asarray(variance, dtype=np.float32))
    mean = tf.constant(np.asarray(mean, dtype=np.float32))
    inv = tf.math.rsqrt(variance + epsilon)
    if gamma is not None:
        inv *= tf.constant(np.asarray(gamma, dtype=np.float32))
    shifted = (tf.constant(np.asarray(bias, dtype=np.float32)) if bias is not None else 0) - mean
    folded_bias = inv * shifted
    if beta is not None:
        folded_bias += tf.constant(np.asarray(beta, dtype=np.float32))
    shape = kernel.shape.as_list()
    folded_kernel = tf.reshape(inv, shape[2:]) * kernel
    return folded_kernel.numpy(), folded_bias.numpy()


def parse_dwbn_layer(keras_layer, input_names, input_shapes, data_reader):
    """hls4ml's Keras handler: the QDepthwiseConv2D dict plus the batch norm's arrays and epsilon."""
    from hls4ml.converters.keras.qkeras import parse_qdepthwiseqconv_layer
    from hls4ml.converters.keras_v2_to_hls import get_weights_data

    layer, output_shape = parse_qdepthwiseqconv_layer(keras_layer, input_names, input_shapes, data_reader)
    cfg = keras_layer["config"]
    where = f"layer {cfg.get('name')!r} ({KERAS_CLASS})"
    if cfg.get("data_format", "channels_last") != "channels_last":
        msg = f"{where}: data_format {cfg['data_format']!r}; hwflow converts channels_last only"
        raise ConversionError(msg)
    if cfg.get("axis", -1) not in (-1, 3, [-1], [3]):
        msg = f"{where}: batch-norm axis {cfg['axis']!r}; the fold is per channel (axis -1)"
        raise ConversionError(msg)
    layer["class_name"] = IR_CLASS
    layer["epsilon"] = float(cfg["epsilon"])
    layer["gamma_data"] = get_weights_data(data_reader, layer["name"], "gamma") if cfg.get("scale", True) else None
    layer["beta_data"] = get_weights_data(data_reader, layer["name"], "beta") if cfg.get("center", True) else None
    layer["mean_data"], layer["variance_data"] = get_weights_data(
        data_reader, layer["name"], ["moving_mean", "moving_variance"])
    if layer["depthwise_data"] is None or layer["mean_data"] is None or layer["variance_data"] is None:
        msg = f"{where}: its kernel or batch-norm statistics are missing; build the layer first"
        raise ConversionError(msg)
    return layer, output_shape


def _layer_class():
    from hls4ml.model.layers import DepthwiseConv2D

    class DepthwiseConv2DBatchnorm(DepthwiseConv2D):
        """A DepthwiseConv2D whose kernel and bias are QKeras's folded ones, through the layer's quantizers."""

        def initialize(self):
            if self.get_attr("_folded", False) is not True:  # initialize runs once; the raw arrays are replaced
                kernel, bias = fold(self.get_attr("depthwise_data"), self.get_attr("bias_data"),
                                    self.get_attr("gamma_data"), self.get_attr("beta_data"),
                                    self.get_attr("mean_data"), self.get_attr("variance_data"),
                                    float(self.get_attr("epsilon")))
                self.set_attr("depthwise_data", kernel)
                self.set_attr("bias_data", bias)
                self.set_attr("_folded", True)
            super().initialize()

    return DepthwiseConv2DBatchnorm


def _precision_pass(layer_class):
    from hls4ml.model.optimizer.passes.infer_precision import InferPrecisionTypes

    class DepthwiseBatchnormPrecision(InferPrecisionTypes):
        """hls4ml's DepthwiseConv2D precision rule for the folded layer (the generic pass routes by class name)."""

        def match(self, node):
            return isinstance(node, layer_class) and super().match(node)

        def _infer_precision(self, node, types_to_infer):
            return self._infer_depthconv_precision(node, types_to_infer)

    return DepthwiseBatchnormPrecision


def _template_classes(layer_class):
    from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate
    from hls4ml.backends.vivado.passes.convolution_templates import (
        Conv2DConfigTemplate,
        DepthwiseConv2DFunctionTemplate,
        sepconv2d_include_list,
    )

    class DepthwiseBatchnormConfigTemplate(Conv2DConfigTemplate):
        def __init__(self):
            LayerConfigTemplate.__init__(self, layer_class)
            probe = Conv2DConfigTemplate()
            self.template, self.mult_template = probe.template, probe.mult_template

    class DepthwiseBatchnormFunctionTemplate(DepthwiseConv2DFunctionTemplate):
        def __init__(self):
            probe = DepthwiseConv2DFunctionTemplate()
            FunctionCallTemplate.__init__(self, layer_class, include_header=sepconv2d_include_list)
            self.template = probe.template

    return DepthwiseBatchnormConfigTemplate, DepthwiseBatchnormFunctionTemplate


def register() -> None:
    """Register the handler, the layer, its precision pass and its templates with hls4ml; a no-op when done."""
    import hls4ml
    from hls4ml.converters.keras_v2_to_hls import layer_handlers
    from hls4ml.model.flow import get_flow
    from hls4ml.model.layers import layer_map
    from hls4ml.model.optimizer import register_pass
    from hls4ml.model.optimizer.optimizer import optimizer_map

    if KERAS_CLASS not in layer_handlers:
        hls4ml.converters.register_keras_v2_layer_handler(KERAS_CLASS, parse_dwbn_layer)
    if IR_CLASS not in layer_map:
        hls4ml.model.layers.register_layer(IR_CLASS, _layer_class())
    layer_class = layer_map[IR_CLASS]
    if PRECISION_PASS not in optimizer_map:
        register_pass(PRECISION_PASS, _precision_pass(layer_class))
    for flow in ("convert", "vivado:optimize"):  # both run infer_precision_types (Vitis runs Vivado's optimize)
        passes = get_flow(flow)._optimizers
        if PRECISION_PASS not in passes:
            passes.insert(passes.index("infer_precision_types"), PRECISION_PASS)
    templates = _template_classes(layer_class)
    for name in BACKENDS:
        backend = hls4ml.backends.get_backend(name)
        for template in templates:
            if f"{name.lower()}:{template().get_name()}" not in optimizer_map:
                backend.register_template(template)
    log.debug("%s registered with hls4ml (%s)", KERAS_CLASS, ", ".join(BACKENDS))
