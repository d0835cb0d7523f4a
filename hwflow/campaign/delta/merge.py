"""Merges: only what a changed input position can change.

Every output position of an elementwise merge (Add, Subtract, Multiply, Average, Maximum, Minimum)
reads the same position of its two inputs, so the output differs only at the samples and channels
some input block holds. The samples are grouped by the pair of blocks (one per input, or none) that
hold them; each group runs the merge kernel (``hwflow.emulator.merge``) on its channels only, the
other input's codes taken from the fault-free run. A concatenation along the channel axis moves the
second input's channels by the first input's channel count and casts each block to the result: no
fault-free codes are read. One along a spatial axis keeps the channels, so each group joins the
faulty codes of both inputs, on its channels, with the kernel.
"""

from __future__ import annotations

import numpy as np

from hwflow.campaign.delta import compiled, int_kernels
from hwflow.campaign.delta.chain import FoldedChain, PendingStep
from hwflow.campaign.delta.fallback import F64_EXACT
from hwflow.campaign.delta.golden import compact_dtype
from hwflow.campaign.delta.registry import Step, register_rule
from hwflow.campaign.delta.state import Block, ChannelMajor, Delta, take
from hwflow.emulator import Kind, LayerSpec
from hwflow.emulator.merge import concat_axis
from hwflow.emulator.run import Weights
from hwflow.fixed import FixedType, cast


def groups(first: Delta, second: Delta, n: int) -> list[tuple[np.ndarray, Block | None, Block | None]]:
    """The samples some block of ``first`` or ``second`` holds, grouped by the pair of blocks holding
    them: ``(samples, block of first or None, block of second or None)``, samples sorted."""
    label = np.full((2, n), -1, dtype=np.int64)
    for row, delta in enumerate((first, second)):
        for k, b in enumerate(delta):
            label[row, b.samples] = k
    held = np.flatnonzero((label >= 0).any(axis=0))
    if not len(held):
        return []
    keys = (label[0, held] + 1) * (len(second) + 1) + label[1, held] + 1
    out = []
    for key in np.unique(keys):
        samples = held[keys == key]
        ka, kb = divmod(int(key), len(second) + 1)
        out.append((samples, first[ka - 1] if ka else None, second[kb - 1] if kb else None))
    return out


def _rows(block: Block, samples: np.ndarray) -> np.ndarray:
    """Positions of ``samples`` (all held by ``block``) in the block."""
    return np.searchsorted(block.samples, samples)


def faulty_channels(golden: np.ndarray, block: Block | None, samples: np.ndarray, channels: np.ndarray,
                    t: FixedType) -> np.ndarray:
    """The faulty codes of one input at ``samples`` x ``channels``: the block's where it holds them, the
    fault-free codes elsewhere."""
    if block is not None and np.array_equal(block.channels, channels):
        return np.asarray(block.values)[_rows(block, samples)]
    dtype = np.float64 if t.width <= F64_EXACT else np.int64
    x = np.array(take(golden, samples, channels), dtype=dtype)
    if block is not None:
        x[..., np.searchsorted(channels, block.channels)] = np.asarray(block.values)[_rows(block, samples)]
    return x


def _channels(*blocks: Block | None) -> np.ndarray:
    parts = [b.channels for b in blocks if b is not None]
    return parts[0] if len(parts) == 1 else np.union1d(*parts)


def _side(golden, block: Block | None, samples: np.ndarray, channels: np.ndarray) -> tuple:
    """One input of ``int_kernels.merge_codes``: its fault-free codes as ``(N, P, C)``, its block's values
    as ``(rows, P, channels)``, where each of ``samples`` and ``channels`` sits in the block (-1: not), and
    the folded chain the block's values still go through (a ``chain.PendingStep``; None: none)."""
    codes = np.moveaxis(golden.array, 0, -1) if isinstance(golden, ChannelMajor) else golden
    g = codes.reshape(len(codes), -1, codes.shape[-1])
    if block is None:  # no block: its values are never read (the fault-free codes stand in: one compiled variant)
        return (g, g, np.full(len(samples), -1, np.int64), np.full(len(channels), -1, np.int64)), None
    pre = block.chain if isinstance(block, PendingStep) else None
    values = np.asarray(block.raw.values if pre is not None else block.values)
    rows = _rows(block, samples).astype(np.int64)
    pos = np.searchsorted(block.channels, channels)
    pos = np.where((pos < len(block.channels)) & (block.channels[np.minimum(pos, len(block.channels) - 1)] ==
                                                  channels), pos, -1).astype(np.int64)
    return (g, values.reshape(len(values), -1, values.shape[-1]), rows, pos), pre


def integer_delta(step: Step, second: Delta, types: list[FixedType], post: FoldedChain | None = None) -> Delta:
    """The elementwise merge rule in integer arithmetic: per group of samples, one compiled pass over
    its samples x positions x channels (``int_kernels.merge_codes``) reading each input's block where it
    holds a code (through the folded chain before it, for a ``PendingStep`` block) and the compact
    fault-free codes elsewhere, writing compact codes of the result, or of the folded chain ``post``
    after the merge."""
    layer = step.layer
    plan = int_kernels.MergePlan(layer.attrs["op"], types[0], types[1], layer.result)
    names = layer.inputs
    spatial = tuple(layer.output_shape[:-1])
    dtype = compact_dtype(layer.result if post is None else post.result)
    out = []
    for samples, a, b in groups(step.inputs, second, step.samples):
        channels = _channels(a, b).astype(np.int64)
        codes = np.empty((len(samples), int(np.prod(spatial, dtype=np.int64)), len(channels)), dtype=dtype)
        side_a, pre_a = _side(step.golden[names[0]], a, samples, channels)
        side_b, pre_b = _side(step.golden[names[1]], b, samples, channels)
        int_kernels.merge_codes(plan, *side_a, *side_b, samples.astype(np.int64), channels, codes, pre_a, pre_b, post)
        out.append(Block(samples, channels, codes.reshape((len(samples),) + spatial + (len(channels),))))
    return out


class Merge:
    """Elementwise merges, and concatenation along a spatial axis: the kernel on each group's channels."""

    def full(self, step: Step, x: np.ndarray, weights: dict[str, Weights]) -> np.ndarray:
        """Output codes for the first input's codes ``x``, the second input fault-free (its samples must be
        all of them)."""
        other = step.layer.inputs[1]
        return step.emulator._layer(step.layer, x, step.x_type, [step.golden[other]], [self._type(step, other)])

    @staticmethod
    def _type(step: Step, name: str) -> FixedType:
        return step.emulator.program.layer(name).result

    def delta(self, step: Step) -> Delta:
        layer = step.layer
        second = step.more_inputs[0] if step.more_inputs else []
        names, types = layer.inputs, [self._type(step, name) for name in layer.inputs]
        if layer.kind is Kind.MERGE and compiled.enabled():
            return integer_delta(step, second, types)
        out = []
        for samples, a, b in groups(step.inputs, second, step.samples):
            channels = _channels(a, b)
            xa = faulty_channels(step.golden[names[0]], a, samples, channels, types[0])
            xb = faulty_channels(step.golden[names[1]], b, samples, channels, types[1])
            out.append(Block(samples, channels, step.emulator._layer(layer, xa, types[0], [xb], types[1:])))
        return out

    def delta_then(self, step: Step, post: FoldedChain) -> Delta | None:
        """``post.apply(self.delta(step))`` in one pass where the compiled merge kernel runs (the folded
        chain after an elementwise merge: ReLU after a residual Add); ``None``: not offered here."""
        if step.layer.kind is not Kind.MERGE or not compiled.enabled():
            return None
        second = step.more_inputs[0] if step.more_inputs else []
        return integer_delta(step, second, [self._type(step, name) for name in step.layer.inputs], post)

    takes_pending = True  # reads ``chain.PendingStep`` blocks through their chain (the compiled kernel)

    def needs_input(self, layer: LayerSpec) -> bool:
        return True  # the other input's fault-free codes at a block's positions


class Concatenate(Merge):
    """Concatenation: along the channel axis by channel offsets; along a spatial axis as ``Merge``."""

    @staticmethod
    def on_channels(layer: LayerSpec) -> bool:
        return concat_axis(layer) == len(layer.output_shape) - 1

    def delta(self, step: Step) -> Delta:
        layer = step.layer
        if not self.on_channels(layer):
            return super().delta(step)
        second = step.more_inputs[0] if step.more_inputs else []
        names = layer.inputs
        offset = int(step.emulator.program.layer(names[0]).output_shape[-1])
        types = [self._type(step, name) for name in names]
        out = []
        for samples, a, b in groups(step.inputs, second, step.samples):
            channels, values = [], []
            for block, t, shift in ((a, types[0], 0), (b, types[1], offset)):
                if block is not None:
                    channels.append(block.channels + shift)
                    values.append(cast(np.asarray(block.values)[_rows(block, samples)], t, layer.result))
            out.append(Block(samples, np.concatenate(channels), np.concatenate(values, axis=-1)))
        return out

    def needs_input(self, layer: LayerSpec) -> bool:
        return not self.on_channels(layer)  # offsets need no fault-free codes


register_rule(Kind.MERGE, Merge())
register_rule(Kind.CONCATENATE, Concatenate())
