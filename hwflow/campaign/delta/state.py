"""What a trial carries from layer to layer: the codes that differ from the fault-free run.

A trial's difference at one layer is a list of :class:`Block`\\ s with disjoint sample sets. A block
holds, for some samples and some channels (the last axis of the layer's output), the faulty codes at
every other position of those samples and channels; everything outside the blocks equals the
fault-free run (:class:`~hwflow.campaign.delta.golden.Golden`). The blocks are sparse where faults
are (a faulty word changes one output channel; an input delta reaches the samples that carry it)
and dense inside, so every kernel still runs on contiguous arrays. ``trim`` drops the samples and
channels whose codes came out equal to the fault-free ones: a sample whose deltas all vanish leaves
the trial there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwflow.campaign.delta import compiled


@dataclass
class Block:
    """Faulty codes of ``samples`` x ``channels``: ``values`` has shape
    ``(len(samples), *spatial, len(channels))`` and holds exact integer codes (any numeric dtype)."""

    samples: np.ndarray  # int64, sorted, distinct
    channels: np.ndarray  # int64, sorted, distinct (indices into the layer's last axis)
    values: np.ndarray

    @property
    def size(self) -> int:
        return int(self.values.size)


Delta = list[Block]  # disjoint sample sets; an empty list: the trial equals the fault-free run here


class ChannelMajor:
    """Fault-free codes stored channel first, ``array[c, n, *spatial]``, seen as ``(n, *spatial, c)``.

    Accumulators of convolutions are read a few channels at a time (a faulty weight word changes one
    output channel): channel first, that read is one contiguous slab instead of every cache line of
    the whole tensor."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __len__(self) -> int:
        return self.array.shape[1]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape[1:] + self.array.shape[:1]

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def nbytes(self) -> int:
        return self.array.nbytes

    def write(self, rows: slice, values: np.ndarray) -> None:
        self.array[:, rows] = np.moveaxis(values, -1, 0)

    def take(self, samples: np.ndarray | None, channels: np.ndarray | None) -> np.ndarray:
        sub = self.array if channels is None or len(channels) == len(self.array) else np.take(
            self.array, channels, axis=0)
        if samples is not None and len(samples) != sub.shape[1]:
            sub = np.take(sub, samples, axis=1)
        return np.ascontiguousarray(np.moveaxis(sub, 0, -1))


def take(codes: np.ndarray, samples: np.ndarray | None, channels: np.ndarray | None) -> np.ndarray:
    """``codes[samples][..., channels]`` (``None``: all), gathering along the more selective axis first
    so the intermediate copy stays small."""
    if isinstance(codes, ChannelMajor):
        return codes.take(samples, channels)
    some_s = samples is not None and len(samples) != len(codes)
    some_c = channels is not None and len(channels) != codes.shape[-1]
    if some_s and some_c and len(channels) * len(codes) < len(samples) * codes.shape[-1]:
        return np.take(np.take(codes, channels, axis=-1), samples, axis=0)
    out = np.take(codes, samples, axis=0) if some_s else codes
    return np.take(out, channels, axis=-1) if some_c else out


def covered(delta: Delta) -> np.ndarray:
    """The samples some block holds."""
    if not delta:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate([b.samples for b in delta]))


def rest_of(delta: Delta, n: int) -> np.ndarray:
    """The samples no block holds (those still on the fault-free path)."""
    mask = np.ones(n, dtype=bool)
    for b in delta:
        mask[b.samples] = False
    return np.flatnonzero(mask)


def with_channels(block: Block, channels: np.ndarray, golden: np.ndarray) -> Block:
    """``block`` widened to hold ``channels`` too; the added channels take the fault-free codes
    ``golden`` (the layer's fault-free output for every sample)."""
    union = np.union1d(block.channels, channels)
    if len(union) == len(block.channels):
        return block
    values = take(golden, block.samples, union).astype(np.result_type(block.values.dtype, golden.dtype))
    pos = np.searchsorted(union, block.channels)
    values[..., pos] = block.values
    return Block(block.samples, union, values)


def spread_channels(delta: Delta, channels: np.ndarray, golden: np.ndarray) -> Delta:
    """Make every sample hold ``channels``: blocks are widened, the other samples get a new block of
    fault-free codes (to be recomputed by the caller, e.g. a layer whose weights on ``channels``
    are faulty)."""
    if not len(channels):
        return delta
    out = [with_channels(b, channels, golden) for b in delta]
    rest = rest_of(delta, len(golden))
    if len(rest):
        out.append(Block(rest, np.asarray(channels, dtype=np.int64), take(golden, rest, channels)))
    return out


def fill(block: Block, golden: np.ndarray) -> np.ndarray:
    """All channels of ``block``'s samples: the fault-free codes with the block's written in."""
    full = take(golden, block.samples, None).astype(np.result_type(block.values.dtype, golden.dtype))
    full[..., block.channels] = block.values
    return full


def trim(delta: Delta, golden: np.ndarray) -> Delta:
    """Drop the samples and channels of each block whose codes equal the fault-free ones."""
    codes = np.moveaxis(golden.array, 0, -1) if isinstance(golden, ChannelMajor) else np.asarray(golden)
    codes = codes.reshape(len(codes), -1, codes.shape[-1])
    out = []
    for b in delta:
        values = np.asarray(b.values)
        per_cell = np.empty((len(b.samples), len(b.channels)), dtype=bool)  # (samples, channels)
        compiled.differs(values.reshape(len(b.samples), -1, values.shape[-1]), codes, b.samples, b.channels, per_cell)
        keep_s = per_cell.any(axis=1)
        if not keep_s.any():
            continue
        keep_c = per_cell.any(axis=0)
        values = b.values
        if not keep_s.all():
            values = values[keep_s]
        if not keep_c.all():
            values = values[..., keep_c]
        out.append(Block(b.samples[keep_s], b.channels[keep_c], values))
    return out


def apply(delta: Delta, golden: np.ndarray) -> np.ndarray:
    """The layer's faulty output for every sample: ``golden`` (int64 copy) with the blocks written in."""
    out = np.array(golden, dtype=np.int64)
    for b in delta:
        part = out[b.samples]
        part[..., b.channels] = b.values
        out[b.samples] = part
    return out
