"""The exact fallback rule: a layer kind without a rule of its own is recomputed where it can differ.

A kind that brings an emulator kernel (``Emulator._layer``, ``hwflow.emulator.kernels``) but no delta
rule is still exact in a campaign: the samples that some input's blocks hold (the union over every
input, for a merge) are recomputed in full with the layer's kernel, on the faulty inputs (the
fault-free codes with the blocks written in) and with the faulty weights; a layer whose own words
a fault changed recomputes every sample. The result is trimmed against the fault-free output (the
golden pass keeps it: ``needs_output``), so only the samples and channels that really changed
travel on. It is slower than a rule that knows the layer (a per-channel or per-position rule
computes only what a block touches) and exactly as correct; ``registry.rule_for`` hands it out for
every kind that has no rule.

The interface other modules may rely on: ``Recompute`` (a :class:`~hwflow.campaign.delta.registry.Rule`
with ``needs_output``), ``faulty_input`` and ``recompute``.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np

from hwflow.campaign.delta.state import Block, Delta, take, trim
from hwflow.emulator import Emulator, LayerSpec
from hwflow.emulator.run import Weights

if TYPE_CHECKING:
    from hwflow.campaign.delta.registry import Step

F64_EXACT = 52  # codes of types up to this width travel as float64 (the plain path's dtype), wider as int64


def faulty_input(golden: np.ndarray, delta: Delta, samples: np.ndarray, width: int = 0,
                 dtype: type | None = None) -> np.ndarray:
    """The faulty codes of one input for ``samples`` (sorted, distinct): its fault-free codes with the
    blocks of ``delta`` written in where they hold one of ``samples``. ``dtype``: the codes' dtype (any
    that holds them exactly); None: float64 up to ``F64_EXACT`` bits of ``width``, int64 above (the plain
    kernels' dtypes)."""
    if dtype is None:
        dtype = np.float64 if width <= F64_EXACT else np.int64
    x = np.array(take(golden, samples, None), dtype=dtype)
    for b in delta:
        pos = np.searchsorted(samples, b.samples)
        hit = pos < len(samples)
        hit[hit] = samples[pos[hit]] == b.samples[hit]
        if not hit.any():
            continue
        rows = pos[hit]
        part = x[rows]
        part[..., b.channels] = b.values[hit] if not hit.all() else b.values
        x[rows] = part
    return x


def with_weights(emulator: Emulator, layer: LayerSpec, weights: dict[str, Weights]) -> Emulator:
    """``emulator`` with ``layer``'s arrays replaced by ``weights`` (a shallow view: the other arrays
    and the kernels are shared); ``emulator`` itself when nothing differs."""
    if all(emulator.weights(layer, name) is w for name, w in weights.items()):
        return emulator
    view = copy.copy(emulator)
    view._weights = {**emulator._weights, **{(layer.name, name): w for name, w in weights.items()}}
    return view


def recompute(step: Step, samples: np.ndarray, weights: dict[str, Weights]) -> np.ndarray:
    """The layer's output codes for ``samples`` on the faulty inputs, with ``weights``."""
    layer = step.layer
    program = step.emulator.program
    deltas = (step.inputs, *step.more_inputs)
    types = [program.layer(name).result for name in layer.inputs]
    xs = [faulty_input(step.golden[name], d, samples, t.width)
          for name, d, t in zip(layer.inputs, deltas, types, strict=True)]
    emulator = with_weights(step.emulator, layer, weights)
    return emulator._layer(layer, xs[0], types[0], xs[1:], types[1:])


def affected(step: Step) -> np.ndarray:
    """The samples whose output can differ: all of them when the layer's own words changed, else those
    some input's blocks hold."""
    if any(len(np.asarray(idx)) for idx in step.changed.values()):
        return np.arange(step.samples, dtype=np.int64)
    parts = [b.samples for d in (step.inputs, *step.more_inputs) for b in d]
    return np.unique(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


class Recompute:
    """The generic exact rule (see the module docstring)."""

    def full(self, step: Step, x: np.ndarray, weights: dict[str, Weights]) -> np.ndarray:
        """Output codes for input codes ``x`` of a one-input layer (a merge's inputs: ``recompute``)."""
        emulator = with_weights(step.emulator, step.layer, weights)
        return emulator._layer(step.layer, x, step.x_type)

    def delta(self, step: Step) -> Delta:
        samples = affected(step)
        golden = step.golden[step.layer.name] if step.golden.has(step.layer.name) else None
        channels = np.arange(int(step.layer.output_shape[-1]), dtype=np.int64)
        out: Delta = []
        for lo in range(0, len(samples), step.chunk):
            part = samples[lo : lo + step.chunk]
            block = Block(part, channels, recompute(step, part, step.weights))
            out.extend(trim([block], golden) if golden is not None else [block])
        return out

    def needs_input(self, layer: LayerSpec) -> bool:
        return True  # every input: a block's samples are filled with the fault-free codes

    def needs_output(self, layer: LayerSpec) -> bool:
        return True  # to trim the recomputed samples to what changed


FALLBACK = Recompute()
