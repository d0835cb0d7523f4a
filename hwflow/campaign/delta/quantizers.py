"""ApplyAlpha and BatchNormalizationQuantizedTanh: per channel, like batch normalization.

Both layers compute output channel ``c`` from input channel ``c`` and their own words of channel
``c`` (a scale and a bias, or one or two thresholds), so a block of changed samples x channels maps to
the same samples x channels, and a faulty word of channel ``c`` adds channel ``c`` for every sample.
Each block is recomputed with the emulator's own kernel (``hwflow.emulator.products``) on its
channels: exact, po2 shifts included. When hls4ml indexes the arrays per element rather than per
channel (``n_filt = -1`` on a multi-dimensional output), the generic fallback recomputes the samples.
"""

from __future__ import annotations

import numpy as np

from hwflow.campaign.delta.channelwise import changed_channels
from hwflow.campaign.delta.fallback import FALLBACK
from hwflow.campaign.delta.registry import Step, register_rule
from hwflow.campaign.delta.state import Block, Delta, spread_channels
from hwflow.emulator import Kind, LayerSpec
from hwflow.emulator.products import Exponents, alpha_on, thresholds_on
from hwflow.emulator.run import Weights


def channels_of(w: Weights | None, channels: np.ndarray) -> Weights | None:
    """One array's words of ``channels`` (its last logical axis), po2 exponents included."""
    if w is None:
        return None
    e = w.exponent
    exps = None if e is None else Exponents(np.take(e.sign, channels, axis=-1), np.take(e.exponent, channels, axis=-1),
                                            e.bits)
    codes = None if w.codes is None else np.take(w.codes, channels, axis=-1)
    values = None if w.values is None else np.take(w.values, channels, axis=-1)
    return Weights(codes, w.type, values, exps)


class PerChannel:
    def __init__(self, kernel):
        self.kernel = kernel  # kernel(layer, x, x_type, weights) -> codes

    def full(self, step: Step, x: np.ndarray, weights: dict[str, Weights]) -> np.ndarray:
        return self.kernel(step.layer, x, step.x_type, weights)

    @staticmethod
    def _per_channel(step: Step) -> bool:
        n = int(step.layer.output_shape[-1])
        sizes = [w.codes.size if w.codes is not None else w.exponent.sign.size if w.exponent is not None
                 else w.values.size for w in step.weights.values() if w is not None]
        return all(size == n for size in sizes)

    def delta(self, step: Step) -> Delta:
        if not self._per_channel(step):
            return FALLBACK.delta(step)
        blocks = spread_channels(step.inputs, changed_channels(step), step.golden[step.input_name])
        out = []
        for b in blocks:
            weights = {name: channels_of(w, b.channels) for name, w in step.weights.items()}
            out.append(Block(b.samples, b.channels, self.kernel(step.layer, b.values, step.x_type, weights)))
        return out

    def needs_input(self, layer: LayerSpec) -> bool:
        return True

    def needs_output(self, layer: LayerSpec) -> bool:
        return FALLBACK.needs_output(layer)  # kept for the per-element case's fallback


register_rule(Kind.APPLY_ALPHA, PerChannel(alpha_on))
register_rule(Kind.BN_QUANTIZED_TANH, PerChannel(thresholds_on))
