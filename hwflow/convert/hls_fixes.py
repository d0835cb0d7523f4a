"""Fixes of hls4ml 1.3.0 that hwflow applies before every conversion (each idempotent).

- **Batch norm after a depthwise convolution.** hls4ml's ``FuseBatchNormalization`` folds a batch norm
  into the Dense or convolution before it when their types allow it: every plain Keras
  ``DepthwiseConv1D`` / ``DepthwiseConv2D`` followed by ``BatchNormalization`` (MobileNet's pattern), and
  a ``QDepthwiseConv2D`` whose batch norm has a zero bias (an untrained one). Its fold multiplies the
  per-channel scale into the kernel as ``scale * weight``, which for a depthwise kernel of shape
  ``(k, k, C, 1)`` broadcasts to ``(k, k, C, C)``: the C++ then reads the first ``k·k·C`` of those
  products, which are not the folded kernel, and the design computes something else than the model
  (hwflow's emulator refused it as a depth multiplier it does not emulate). hwflow keeps such a batch
  norm a layer of its own, as hls4ml already does for every other depthwise batch norm, so the design
  computes what the model does; its scale and bias are stored and faultable like any batch norm's.
  (hls4ml then infers the batch norm's types from the convolution's: after an unquantized depthwise
  layer they can be wider than the emulator's 62 bits, and ``program_from_hls`` says which layer and
  how to narrow it.)
"""

from __future__ import annotations


def register() -> None:
    """Apply the fixes (once per process)."""
    from hls4ml.model.optimizer.passes.bn_fuse import FuseBatchNormalization

    if getattr(FuseBatchNormalization, "hwflow_fixed", False):
        return
    original = FuseBatchNormalization.match

    def match(self, node):
        from hls4ml.model.layers import DepthwiseConv1D, DepthwiseConv2D

        if isinstance(node.get_input_node(), (DepthwiseConv1D, DepthwiseConv2D)):
            return False  # the fold would broadcast the scale over the kernel (see the module docstring)
        return original(self, node)

    match.hwflow_original = original  # hls4ml's own (a test shows its fold is still wrong)
    FuseBatchNormalization.match = match
    FuseBatchNormalization.hwflow_fixed = True
