"""Reshape (flatten): an index map. A block's samples are filled with their fault-free channels,
reshaped, and cast as the emulator casts; the engine's trim then keeps only the output positions
that really changed (the output's last axis is the new channel axis)."""

from __future__ import annotations

import numpy as np

from hwflow.campaign.delta.registry import Step, register_rule
from hwflow.campaign.delta.state import Block, Delta, fill
from hwflow.emulator import Kind, LayerSpec
from hwflow.emulator.run import Weights


class Reshape:
    def full(self, step: Step, x: np.ndarray, weights: dict[str, Weights]) -> np.ndarray:
        return step.emulator._layer(step.layer, x, step.x_type)

    def delta(self, step: Step) -> Delta:
        golden = step.golden[step.input_name]
        channels = np.arange(step.layer.output_shape[-1], dtype=np.int64)
        return [Block(b.samples, channels, self.full(step, fill(b, golden), {})) for b in step.inputs]

    def needs_input(self, layer: LayerSpec) -> bool:
        return True


register_rule(Kind.RESHAPE, Reshape())
