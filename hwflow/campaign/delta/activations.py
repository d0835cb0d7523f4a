"""Delta rules of the activation layers of ``hwflow.emulator.activations``.

- LeakyReLU / ThresholdedReLU / ELU and the hard sigmoid / tanh are elementwise and weightless: an
  output position changes only where its input did, so each block goes through the emulator's
  kernel alone (``Channelwise``). The table activations (sigmoid, tanh, ...) are ``Activation``
  layers, which ``channelwise`` already covers the same way.
- PReLU is elementwise with one ``param`` word per position: a faulty word changes its position's
  channel for every sample, so those channels are added to every sample (``spread_channels``) and
  recomputed from the fault-free input, with the words sliced to the block's channels.
- Softmax mixes the channels of a sample: a changed input changes its whole sample. That is what
  the engine's exact fallback does (``fallback.Recompute``: the samples a block holds, recomputed in
  full and trimmed), so softmax has no rule of its own.
"""

from __future__ import annotations

import numpy as np

from hwflow.campaign.delta.channelwise import Channelwise, changed_channels
from hwflow.campaign.delta.registry import Step, register_rule
from hwflow.campaign.delta.state import Block, Delta, spread_channels
from hwflow.emulator import Kind, LayerSpec
from hwflow.emulator.activations import prelu_codes
from hwflow.emulator.run import Weights
from hwflow.errors import EmulatorError


class PReLU(Channelwise):
    """``x > 0 ? x : alpha[i] x``; faulty ``param`` words add their channels for every sample."""

    def full(self, step: Step, x: np.ndarray, weights: dict[str, Weights]) -> np.ndarray:
        return self._run(step, x, weights["param"], None)

    def delta(self, step: Step) -> Delta:
        blocks = spread_channels(step.inputs, changed_channels(step), step.golden[step.input_name])
        return [Block(b.samples, b.channels, self._run(step, b.values, step.weights["param"], b.channels))
                for b in blocks]

    @staticmethod
    def _run(step: Step, x: np.ndarray, w: Weights, channels: np.ndarray | None) -> np.ndarray:
        if not w.is_fixed:
            msg = f"PReLU layer {step.layer.name} needs its param array in fixed point"
            raise EmulatorError(msg)
        alpha = np.asarray(w.codes).reshape(tuple(step.layer.output_shape))
        if channels is not None:
            alpha = np.take(alpha, channels, axis=-1)
        return prelu_codes(x, step.x_type, alpha, w.type, step.layer.result)

    def needs_input(self, layer: LayerSpec) -> bool:
        return True

    def monotone(self, step: Step) -> np.ndarray | int | None:
        return None  # a negative alpha makes it decrease below zero


register_rule(Kind.PRELU, PReLU())
for _kind in (Kind.PARAM_ACTIVATION, Kind.HARD_ACTIVATION):
    register_rule(_kind, Channelwise())
