"""Delta rule of FT-ClipAct's sloped form (a clipped LeakyReLU, PReLU, ELU or sloped ``quantized_relu``).

The layer is elementwise: an output position changes only where its input did, so each block runs
through ``hwflow.emulator.clip.sloped_codes`` alone. PReLU's ``param`` array holds one word per
position: a faulty word changes its position's channel for every sample, so those channels are added
to every sample (``spread_channels``) and recomputed from the fault-free input, with the words sliced
to the block's channels (as the PReLU rule does). The plain clipped ReLU (``Kind.CLIPACT``) is
``channelwise``'s.

``monotone`` says None: a zero-mode clip is not monotone, and a saturating one with a negative slope
is claimed by no rule (nothing pools before it), which keeps the engine exact without a proof.
"""

from __future__ import annotations

import numpy as np

from hwflow.campaign.delta.channelwise import Channelwise, changed_channels
from hwflow.campaign.delta.registry import Step, register_rule
from hwflow.campaign.delta.state import Block, Delta, spread_channels
from hwflow.emulator import Kind, LayerSpec
from hwflow.emulator.clip import check_mode, scalar_sloped_codes, sloped_codes
from hwflow.emulator.run import Weights
from hwflow.errors import EmulatorError


def _array(layer: LayerSpec) -> bool:
    return layer.attrs.get("alpha") == "array"


class ClipSloped(Channelwise):
    """The positive side clipped, ``alpha x`` below; faulty PReLU words add their channels."""

    def full(self, step: Step, x: np.ndarray, weights: dict[str, Weights]) -> np.ndarray:
        return self._run(step, x, weights.get("param"), None)

    def delta(self, step: Step) -> Delta:
        if not _array(step.layer):
            return [Block(b.samples, b.channels, self._run(step, b.values, None, b.channels)) for b in step.inputs]
        blocks = spread_channels(step.inputs, changed_channels(step), step.golden[step.input_name])
        return [Block(b.samples, b.channels, self._run(step, b.values, step.weights["param"], b.channels))
                for b in blocks]

    @staticmethod
    def _run(step: Step, x: np.ndarray, w: Weights | None, channels: np.ndarray | None) -> np.ndarray:
        layer = step.layer
        if not _array(layer):  # one slope, or ELU's table: nothing in memory
            return scalar_sloped_codes(layer, x, step.x_type)
        mode = check_mode(layer.attrs.get("mode"), f"clipped activation {layer.name}: mode")
        if w is None or not w.is_fixed:
            msg = f"clipped activation {layer.name} needs its param array in fixed point"
            raise EmulatorError(msg)
        alpha = np.asarray(w.codes).reshape(tuple(layer.output_shape))
        if channels is not None:
            alpha = np.take(alpha, channels, axis=-1)
        return sloped_codes(x, step.x_type, layer.result, layer.attrs["threshold"], mode, alpha, w.type)

    def needs_input(self, layer: LayerSpec) -> bool:
        return _array(layer)

    def monotone(self, step: Step) -> np.ndarray | int | None:
        return None


register_rule(Kind.CLIPACT_SLOPED, ClipSloped())
