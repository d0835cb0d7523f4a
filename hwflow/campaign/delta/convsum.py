"""A convolution's faulty accumulator block, summed where it is read.

The MAC rule's result for a convolution is ``gold + partial + ΔW·a + Δb``, wrapped: four terms over
the widest tensor of the network. A :class:`PendingConv` keeps the terms apart until a consumer reads
it. Read as ``values`` it is summed once (``compiled.conv_sum``) into the same channel-first array,
in the same dtype, that the plain numpy sum gave; read by a max pool moved before the batch norm
(``hoist.pool_blocks``), the sum and the pooling happen in one pass and the full-size accumulator
is never written (at 1e-3 on cnn-fmnist: 19 M codes per trial summed, 4.8 M written).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwflow.campaign.delta import compiled
from hwflow.campaign.delta.state import Block
from hwflow.fixed import FixedType, cast


@dataclass
class ConvSum:
    """The terms of ``acc[c, s, *grid]`` for ``channels`` x ``samples`` (see ``compiled.conv_sum``)."""

    gold: np.ndarray  # (m, N, *out): the fault-free accumulator, channel first
    channels: np.ndarray  # output channels computed (indices into m)
    samples: np.ndarray  # samples computed (indices into N)
    grid: tuple[int, ...]  # the spatial positions computed: the leading ``grid`` of ``out`` (a crop)
    dtype: np.dtype  # the dtype of the plain sum (exact for its bound; int64 once wrapped)
    partial: np.ndarray | None = None  # (S, *grid, |channels|): W'·Δa << up, or None
    cols: np.ndarray | None = None  # (k, N, *out): the fault-free transposed im2col, for the faulty words
    words: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # CSR per channel: ptr, row, dw << up
    db: np.ndarray | None = None  # (|channels|,) bias change in accumulator codes
    wrap: tuple[int, int] = (0, 0)  # (accumulator width, its min code); width 0: cannot overflow
    cast: tuple[FixedType, FixedType] | None = None  # accumulator -> result, where they differ

    def _args(self, win: np.ndarray, sgn: np.ndarray, out: np.ndarray) -> tuple:
        """The arguments of ``compiled.conv_sum``, every spatial shape as 2-D: a Conv1D's of height one,
        and a grid holding whole rows of the output as one row (the kernel's loops run the length of
        all of them; the flat position ``y * GW + x`` is the same)."""
        whole_rows = self.grid[1:] == tuple(self.gold.shape[3:])
        if whole_rows:
            rows = (1, int(np.prod(self.grid)))

            def flat(a):  # (k, N, H, W) -> (k, N, 1, GH * W): the grid's leading rows, one row
                return a.reshape(a.shape[:2] + (1, -1))[..., : rows[1]]
        else:
            rows = self.grid

            def flat(a):
                return a
        partial = np.zeros((0, 0, 0, 0), dtype=self.dtype) if self.partial is None else (
            self.partial.reshape((len(self.samples),) + rows + (len(self.channels),)))
        cols_dtype = self.cols.dtype if self.cols is not None else np.uint8  # one compiled variant per store dtype
        cols = flat(self.cols) if self.cols is not None and self.words else np.zeros((0, 0, 0, 0), dtype=cols_dtype)
        ptr, row, val = self.words or (np.zeros(len(self.channels) + 1, dtype=np.int64), np.zeros(0, np.int64),
                                       np.zeros(0, np.int64))
        db = self.db if self.db is not None else np.zeros(len(self.channels), dtype=np.int64)
        return (partial, flat(self.gold), self.channels, self.samples, cols, ptr, row, val, db.astype(np.int64),
                self.wrap, rows, win, sgn, out, self.dtype != np.int64)

    def values(self) -> np.ndarray:
        """The result codes, channels last ``(S, *grid, |channels|)`` (a view of a channel-first array)."""
        dtype = np.dtype(np.int64) if self.wrap[0] else self.dtype
        out = np.empty((len(self.channels), len(self.samples)) + tuple(self.grid), dtype=dtype)
        flat = out.reshape(len(self.channels), len(self.samples), -1)
        compiled.conv_sum(*self._args(np.zeros((0, 1), dtype=np.int64), np.ones(len(self.channels), np.int64), flat))
        values = np.moveaxis(out, 0, -1)
        return values if self.cast is None else cast(values, *self.cast)

    def pooled(self, size: tuple[int, ...], stride: tuple[int, ...], sgn: np.ndarray | None) -> np.ndarray | None:
        """Channel first ``(|channels|, S, *pooled)``: ``sgn * max(sgn * acc)`` over each window;
        ``None`` when a cast to the result type sits between (pool the values instead)."""
        if self.cast is not None or len(size) != len(self.grid):
            return None
        counts = tuple((g - k) // st + 1 for g, k, st in zip(self.grid, size, stride, strict=True))
        if min(counts, default=1) < 1:
            return None
        idx = np.arange(int(np.prod(self.grid))).reshape(self.grid)
        view = np.lib.stride_tricks.sliding_window_view(idx, size)[tuple(slice(None, None, st) for st in stride)]
        # a writable copy, as values() passes: one compiled variant
        win = np.array(view.reshape(int(np.prod(counts)), int(np.prod(size))), dtype=np.int64)
        dtype = np.dtype(np.int64) if self.wrap[0] else self.dtype
        out = np.empty((len(self.channels), len(self.samples)) + counts, dtype=dtype)
        signs = np.ones(len(self.channels), np.int64) if sgn is None else np.asarray(sgn, dtype=np.int64)
        compiled.conv_sum(*self._args(win, signs, out.reshape(len(self.channels), len(self.samples), -1)))
        return out


class PendingConv(Block):
    """A :class:`Block` whose ``values`` are a :class:`ConvSum`, summed on first read."""

    def __init__(self, samples: np.ndarray, channels: np.ndarray, acc: ConvSum):
        self.samples = samples
        self.channels = channels
        self.acc = acc
        self._values: np.ndarray | None = None

    @property
    def values(self) -> np.ndarray:  # type: ignore[override]
        if self._values is None:
            self._values = self.acc.values()
        return self._values
