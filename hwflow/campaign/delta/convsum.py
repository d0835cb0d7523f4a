"""A convolution's faulty accumulator block, summed where it is read.

The MAC rule's result for a convolution is ``gold + W'·Δa + ΔW·a + Δb``, wrapped: four terms over
the widest tensor of the network. A :class:`PendingConv` keeps the terms apart until a consumer reads
it. Read as ``values`` it is summed once (``compiled.conv_sum``) into the same channel-first array,
in the same dtype, that the plain numpy sum gave; read by a max pool moved before the batch norm
(``hoist.pool_blocks``), the sum and the pooling happen in one pass and the full-size accumulator
is never written (at 1e-3 on cnn-fmnist: 19 M codes per trial summed, 4.8 M written).

Neither product term needs an im2col: ``ΔW·a`` reads shifted slices of the fault-free input the
golden pass keeps anyway, and ``W'·Δa`` is either scattered from the input block's nonzero
differences inside the same kernel (a block of few input channels) or a GEMM computed before
(``partial``: a block of many, where BLAS wins).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwflow.campaign.delta import compiled
from hwflow.campaign.delta.state import Block
from hwflow.fixed import FixedType, cast

_NO_GRID = np.zeros((0, 0, 0, 0), dtype=np.uint8)


@dataclass
class ConvSum:
    """The terms of ``acc[c, s, *grid]`` for ``channels`` x ``samples`` (see ``compiled.conv_sum``).

    A Conv1D's arrays have one spatial axis; the kernel sees them as rows of height one."""

    gold: np.ndarray  # (m, N, *out): the fault-free accumulator, channel first
    channels: np.ndarray  # output channels computed (indices into m)
    samples: np.ndarray  # samples computed (indices into N)
    grid: tuple[int, ...]  # the spatial positions computed: the leading ``grid`` of ``out`` (a crop)
    dtype: np.dtype  # the dtype of the plain sum (exact for its bound; int64 once wrapped)
    source: np.ndarray  # (N, *in, Cin): the fault-free input (any strides)
    geometry: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # (size, stride, pad_before)
    partial: np.ndarray | None = None  # (S, *grid, |channels|): W'·Δa << up from a GEMM, or None
    block: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (faulty input values (S, IH, IW, |B|),
    # their input channels B, the faulty weights (KH, KW, |B|, |channels|) << up): W'·Δa in the kernel
    words: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # CSR per channel: ptr, im2col row, dw << up
    db: np.ndarray | None = None  # (|channels|,) bias change in accumulator codes
    wrap: tuple[int, int] = (0, 0)  # (accumulator width, its min code); width 0: cannot overflow
    cast: tuple[FixedType, FixedType] | None = None  # accumulator -> result, where they differ

    def _args(self, win: np.ndarray, sgn: np.ndarray, out: np.ndarray) -> tuple:
        """The arguments of ``compiled.conv_sum``, every spatial shape 2-D (a Conv1D's of height one)."""
        n_c = len(self.channels)
        one = len(self.grid) == 1
        size, stride, before = self.geometry
        if one:
            size, stride, before = (1,) + tuple(size), (1,) + tuple(stride), (0,) + tuple(before)
        grid = (1,) + tuple(self.grid) if one else tuple(self.grid)
        kw = size[1]
        gold = self.gold[:, :, None] if one else self.gold
        source = self.source[:, None] if one else self.source
        cin = source.shape[-1]
        partial = _NO_GRID.astype(self.dtype) if self.partial is None else self.partial.reshape(
            (len(self.samples),) + grid + (n_c,))
        if self.block is None:
            xv, xch, wt = _NO_GRID, np.zeros(0, dtype=np.int64), np.zeros((0, 0, 0, 0), dtype=np.float64)
        else:
            xv, xch, wt = self.block
            if one:
                xv, wt = xv[:, None], wt[None]
        ptr, row, val = self.words or (np.zeros(n_c + 1, dtype=np.int64), np.zeros(0, np.int64),
                                       np.zeros(0, np.int64))
        ky, rest = np.divmod(row, kw * cin)
        kx, ci = np.divmod(rest, cin)
        db = self.db if self.db is not None else np.zeros(n_c, dtype=np.int64)
        return (gold, self.channels, self.samples, grid, db.astype(np.int64), self.wrap, partial, xv, source, xch,
                wt, source, ptr, ky, kx, ci, val, tuple(size) + tuple(stride) + tuple(before), win, sgn, out,
                self.dtype)

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
