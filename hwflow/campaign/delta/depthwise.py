"""Depthwise convolutions (DepthwiseConv1D/2D; the depthwise half of a separable convolution): per channel.

With a depth multiplier of 1 (the only one hls4ml computes), output channel ``c`` reads input
channel ``c`` only, through its own kernel column and bias word. So a trial's difference maps block to
block, as for batch normalization: a block of changed samples x channels gives the same samples x
channels, and a faulty kernel or bias word of channel ``c`` adds channel ``c`` for every sample.
Each such block is recomputed with the layer's own kernel (``hwflow.emulator.depthwise.depthwise``) on
its channels alone, from the faulty input codes and the faulty weights: exact whatever the
accumulator does (wrap, saturation, truncated products, hls4ml's Resource order), at the cost of
one per-channel MAC per changed value, which is what a linear delta would cost too (a depthwise
kernel has only ``kh * kw`` taps per output).

The pointwise half of a separable convolution is an ordinary 1x1 convolution (``Kind.CONV1D/2D``) and
takes the multiply-accumulate rule of ``mac``.
"""

from __future__ import annotations

import numpy as np

from hwflow.campaign.delta.channelwise import changed_channels
from hwflow.campaign.delta.registry import Step, register_rule
from hwflow.campaign.delta.state import Block, Delta, spread_channels
from hwflow.emulator import LayerSpec
from hwflow.emulator.depthwise import DEPTHWISE, depthwise
from hwflow.emulator.run import Weights


class Depthwise:
    def full(self, step: Step, x: np.ndarray, weights: dict[str, Weights]) -> np.ndarray:
        return depthwise(step.layer, x, step.x_type, weights["weight"], weights.get("bias"))

    def delta(self, step: Step) -> Delta:
        # changed word -> its channel: the kernel is (*size, C, 1) and the bias (C,), so index mod C
        blocks = spread_channels(step.inputs, changed_channels(step), step.golden[step.input_name])
        weight, bias = step.weights["weight"], step.weights.get("bias")
        return [Block(b.samples, b.channels, depthwise(step.layer, b.values, step.x_type, weight, bias, b.channels))
                for b in blocks]

    def needs_input(self, layer: LayerSpec) -> bool:
        return True  # a faulty word's channel is recomputed from the fault-free input


_RULE = Depthwise()
for _kind in DEPTHWISE:
    register_rule(_kind, _RULE)
