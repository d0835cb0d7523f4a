"""Delta rules of the pooling and shape family that keep channels apart: cropping and nearest resizing.

Average and global pooling (max and average) use the existing kinds ``POOL*`` / ``GLOBALPOOL*``:
each output channel reads its own input channel only and a block holds every spatial position of its
channels, so the windows (or the whole plane a global pool reduces) of a changed input lie inside the
block and the emulator's kernel runs on the block alone (``channelwise.Channelwise``); a global pool's
block comes out with no spatial axes. ``Pool`` sums tiling average windows with an exact accumulator
in one int64 reduction instead (resnet8's 8x8 average pool). The hoisted max-pool chains
(``delta.hoist.chains``) take only ``pool_op == "Max"``: an average does not commute with the
monotone layers before it.

Cropping and UpSampling move positions within a channel (a crop drops rows and columns, an upsampling
repeats them), never across channels or samples: the same block-wise rule is exact for them, with
the block's positions laid out anew by the kernel. Zero padding keeps its ``Channelwise`` rule and
reshape (which moves values across the channel axis) its ``reshape.Reshape``.
"""

from __future__ import annotations

import numpy as np

from hwflow.campaign.delta.channelwise import Channelwise
from hwflow.campaign.delta.registry import Step, register_rule
from hwflow.campaign.delta.state import Block, Delta
from hwflow.emulator import Kind
from hwflow.emulator.pooling import _exact, divide, geometry
from hwflow.fixed import cast, overflow


class Pool(Channelwise):
    """Average pooling with tiling windows (stride = window, no padding) and an accumulator that wraps and
    keeps every fractional bit: every order of adding in ``accum_t`` (io_parallel's, io_stream's tree) is
    one exact sum and one wrap (``hwflow.emulator.pooling``), so a block's windows are summed in one
    int64 reduction on its own dtype. Every other pooling runs the emulator's kernel (``Channelwise``)."""

    def delta(self, step: Step) -> Delta:
        layer = step.layer
        size, stride, before, after = geometry(layer)
        accum = layer.accum or step.x_type
        if (layer.attrs.get("pool_op") != "Average" or tuple(size) != tuple(stride) or any(before) or any(after)
                or not _exact(accum, step.x_type.frac)):
            return super().delta(step)
        out_shape = tuple(int(n) for n in layer.output_shape[:-1])
        count = np.int64(int(np.prod(size)))
        out = []
        for b in step.inputs:
            values = np.asarray(b.values)
            # the tiled windows: (S, o1, k1, o2, k2, C), the cells outside the last window dropped as hls4ml does
            cut = values[(slice(None),) + tuple(slice(0, o * k) for o, k in zip(out_shape, size, strict=True))]
            shape = (len(values),) + tuple(v for o, k in zip(out_shape, size, strict=True) for v in (o, k)) + (
                values.shape[-1],)
            sums = cut.reshape(shape).sum(axis=tuple(range(2, 2 * len(size) + 1, 2)), dtype=np.int64)
            acc = overflow(np.left_shift(sums, accum.frac - step.x_type.frac), accum)
            out.append(Block(b.samples, b.channels, cast(divide(acc, count), accum, layer.result)))
        return out


for _kind in (Kind.POOL1D, Kind.POOL2D):
    register_rule(_kind, Pool())
for _kind in (Kind.CROP1D, Kind.CROP2D, Kind.RESIZE):
    register_rule(_kind, Channelwise())
