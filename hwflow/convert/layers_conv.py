"""hls4ml's depthwise, pointwise and batch-norm-folded convolutions, read into the emulator's kinds.

What hls4ml 1.3.0 makes of the Keras/QKeras layers (read after its optimizers ran):

- ``DepthwiseConv1D/2D`` and ``QDepthwiseConv2D`` -> hls4ml ``DepthwiseConv1D/2D`` (arrays ``weight``,
  Keras's ``depthwise_kernel`` ``(*size, C, 1)``, and ``bias``) -> ``Kind.DEPTHWISE1D/2D``
  (``hwflow.emulator.depthwise``). The Resource strategy stores the kernel transposed like a Conv's.
- ``SeparableConv1D/2D`` and ``QSeparableConv1D/2D``: hls4ml's ``separable_to_depthwise_and_conv``
  pass (in its backend-independent ``convert`` flow, so for every backend and io type) replaces the
  layer by ``<name>_depthwise`` (a DepthwiseConv with the depthwise kernel and a zero ``uint<1>``
  bias, its own ``depthwise_*`` types) and ``<name>_pointwise`` (a Conv with the pointwise kernel and
  the bias, which ``optimize_pointwise_conv`` turns into a PointwiseConv1D/2D). Its ``d/p/z``
  arrays never reach the firmware; the four arrays of the two layers do, and are what is faulted.
- ``PointwiseConv1D/2D`` compute exactly a 1x1 ``Conv1D/2D`` (same kernels, same Resource
  transposition): read as ``Kind.CONV1D/2D``.
- ``QConv2DBatchnorm`` -> hls4ml ``Conv2DBatchnorm``: a Conv2D whose stored kernel and bias are the
  folded ``W * gamma / sqrt(var + eps)`` (through the kernel quantizer) and
  ``gamma * (b - mean) / sqrt(var + eps) + beta`` (through the bias quantizer, if any), which hls4ml
  computes in ``Conv2DBatchnorm.initialize``: read as ``Kind.CONV2D`` with those arrays as stored.
- ``QDepthwiseConv2DBatchnorm``: hls4ml 1.3.0 has no converter for it; ``hwflow.convert.dwbn_hls``
  registers one, ``DepthwiseConv2DBatchnorm``, a DepthwiseConv2D whose stored kernel and bias are QKeras's
  inference fold through the layer's quantizers: read as ``Kind.DEPTHWISE2D`` with those arrays as stored.
"""

from __future__ import annotations

from hwflow.convert.extract import register_layer
from hwflow.convert.names import names_of
from hwflow.emulator.program import Kind
from hwflow.errors import UnsupportedLayerError


def _depthwise_attrs(layer) -> dict:
    """Strategy and reuse factor; refuses what hls4ml's depthwise kernels do not compute."""
    name = names_of(layer.model).to_user(layer.name)
    where = f"layer {name!r} ({layer.class_name})"
    multiplier = int(layer.get_attr("depth_multiplier", 1) or 1)
    if multiplier != 1 or int(layer.get_attr("n_filt")) != int(layer.get_attr("n_chan")):
        msg = (f"{where} has depth_multiplier {multiplier}: hls4ml 1.3.0's depthwise kernels compute a depth "
               "multiplier of 1 only (nnet_sepconv*.h asserts it); build the layer with depth_multiplier=1")
        raise UnsupportedLayerError(msg)
    strategy = str(layer.get_attr("strategy", "latency")).lower()
    if strategy not in ("latency", "resource"):
        msg = f"{where}: strategy {strategy!r} is not emulated for depthwise convolutions (Latency and Resource are)"
        raise UnsupportedLayerError(msg)
    if strategy == "resource" and layer.model.config.get_config_value("IOType") == "io_parallel":
        msg = (f"{where}: hls4ml 1.3.0 has no Resource kernel for depthwise convolutions in io_parallel (its C++ "
               "asserts 'Resource strategy for DepthwiseConv is not supported'); use the Latency strategy for "
               "this layer, or io_stream")
        raise UnsupportedLayerError(msg)
    return {"reuse_factor": int(layer.get_attr("reuse_factor", 1)), "strategy": strategy}


register_layer("DepthwiseConv1D", Kind.DEPTHWISE1D, attrs=_depthwise_attrs, resource_axes={"weight": (2, 0, 1)})
register_layer("DepthwiseConv2D", Kind.DEPTHWISE2D, attrs=_depthwise_attrs, resource_axes={"weight": (3, 0, 1, 2)})
register_layer("DepthwiseConv2DBatchnorm", Kind.DEPTHWISE2D, attrs=_depthwise_attrs,
               resource_axes={"weight": (3, 0, 1, 2)})
register_layer("PointwiseConv1D", Kind.CONV1D)
register_layer("PointwiseConv2D", Kind.CONV2D)
register_layer("Conv2DBatchnorm", Kind.CONV2D)


def split_separable(hls_model) -> None:
    """Split every separable layer now, as hls4ml's ``convert`` flow will (a no-op without one).

    Weight scaling moves the binary points of the stored arrays before hls4ml's flows run
    (``hwflow.convert.hls.move_binary_points``); a plan names the arrays of the split layers
    (``<name>_depthwise/weight``...), which must exist by then. Splitting first gives those layers
    the same arrays and types the flow would give them (the flow's own pass then finds nothing).
    """
    from hls4ml.model.optimizer import optimize_model

    optimize_model(hls_model, ["separable_to_depthwise_and_conv"])
