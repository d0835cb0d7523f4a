"""Runs of per-channel layers folded into one step function wherever they stand, no pool needed.

Between the convolutions and merges of a residual network sit batch norms and ReLUs (conv -> bn ->
relu, conv -> bn -> add, add -> relu). Each is per channel, so a run of them maps a block of codes to
a block of the same samples and channels, and ``hwflow.emulator.step`` folds the run into one exact
step function per channel (the form ``hoist`` uses before a max pool, without the pool). The engine
applies it to a trial's blocks in one compiled pass (``int_kernels.step_codes``) that writes compact
integer codes, instead of one float64 kernel per layer.

A run is layers ``start..stop-1`` of ``FOLD_KINDS``, each read by the next alone (its last layer may be
read by several: a branch), each fed by the one before. Where a run's layer is faulty the run stops
before it (the faulty layer runs its own rule); where the step form cannot fold it exactly (a
wrapping cast, a second rounding, float weights: ``hwflow.emulator.step``) the longest prefix that
folds is used, and none at all leaves today's rules in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwflow.campaign.delta import int_kernels
from hwflow.campaign.delta.compiled import ROUNDING_CODES
from hwflow.campaign.delta.golden import compact_dtype
from hwflow.campaign.delta.hoist import CHAIN_KINDS, chain_state
from hwflow.campaign.delta.state import Block, Delta
from hwflow.emulator import Program
from hwflow.emulator import step as steps
from hwflow.emulator.run import Weights
from hwflow.fixed import FixedType

FOLD_KINDS = CHAIN_KINDS  # batch norm, ReLU / linear activation, FT-ClipAct (saturate); others are refused by the fold


def runs(program: Program) -> dict[int, int]:
    """``start -> stop``: for every layer ``start`` of ``FOLD_KINDS`` with one input, the end (exclusive) of
    the longest run from it in which every later layer is fed by the one before, which no other layer
    reads."""
    layers = program.layers
    readers = program.reader_count
    out = {}
    for i in range(1, len(layers)):
        j = i
        while (j < len(layers) and layers[j].kind in FOLD_KINDS and len(layers[j].inputs) == 1
               and (j == i or (layers[j].inputs[0] == layers[j - 1].name and readers.get(layers[j - 1].name) == 1))):
            j += 1
        if j > i:
            out[i] = j
    return out


@dataclass(frozen=True)
class FoldedChain:
    """Layers ``start..stop-1`` as one bound step function on the codes layer ``start`` reads."""

    start: int
    stop: int
    alpha: np.ndarray  # float64 per channel
    beta: np.ndarray
    rounding: int  # compiled.ROUNDING_CODES
    lo: np.ndarray  # empty: no lower clamp
    hi: np.ndarray
    scale: float  # 0: none
    result: FixedType  # the type of the last layer's output

    def apply(self, delta: Delta, lazy: bool = False) -> Delta:
        """Each block's codes through the step function, on its channels, as compact integer codes
        (channels last, contiguous); ``lazy``: as :class:`PendingStep` blocks, stepped where they are read
        (a merge kernel steps them on the fly: ``int_kernels.merge_codes``'s ``pre_a`` / ``pre_b``)."""
        if lazy:
            return [PendingStep(b, self) for b in delta]
        dtype = compact_dtype(self.result)
        out = []
        for b in delta:
            values = np.asarray(b.values)
            shape = values.shape
            flat = values.reshape(shape[0], -1, shape[-1])
            ch = b.channels
            every = len(ch) == len(self.alpha)
            alpha, beta = (self.alpha, self.beta) if every else (self.alpha[ch], self.beta[ch])
            lo = self.lo if every or not self.lo.size else self.lo[ch]
            hi = self.hi if every or not self.hi.size else self.hi[ch]
            codes = np.empty(flat.shape, dtype=dtype)
            int_kernels.step_codes(flat, alpha, beta, self.rounding, lo, hi, self.scale, codes)
            out.append(Block(b.samples, b.channels, codes.reshape(shape)))
        return out


def fold(program: Program, start: int, stop: int, weights: dict[tuple[str, str], Weights]) -> FoldedChain | None:
    """Layers ``start..stop-1`` folded with ``weights``; ``None`` where the step form refuses them."""
    try:
        state, t = chain_state(program, start, stop, weights)
        if state is None:
            return None
        fn = steps.finish(state)
    except steps.NotCollapsible:
        return None
    if fn is None:
        return None
    bound = fn.bind(None, False)  # float64: exact for every code of the input type (``steps.finish`` checked)
    lo, hi = bound.clamp_bounds(np.float64)
    return FoldedChain(start, stop, np.asarray(bound.alpha, dtype=np.float64), np.asarray(bound.beta, np.float64),
                       ROUNDING_CODES[bound.rounding], lo, hi, float(bound.scale or 0.0), t)


def longest_fold(program: Program, start: int, stop: int,
                 weights: dict[tuple[str, str], Weights]) -> FoldedChain | None:
    """The longest prefix ``start..k-1`` (``k <= stop``) of a run that folds; ``None`` when none does."""
    for k in range(stop, start, -1):
        folded = fold(program, start, k, weights)
        if folded is not None:
            return folded
    return None


class PendingStep(Block):
    """A :class:`Block` of a folded chain's output kept as its input block and the chain: stepped on first
    read of ``values``, or on the fly by a consumer that takes both (the merge rule)."""

    def __init__(self, raw: Block, chain: FoldedChain):
        self.samples = raw.samples
        self.channels = raw.channels
        self.raw = raw
        self.chain = chain
        self._values: np.ndarray | None = None

    @property
    def values(self) -> np.ndarray:  # type: ignore[override]
        if self._values is None:
            self._values = self.chain.apply([self.raw])[0].values
        return self._values
