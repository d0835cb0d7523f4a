"""Delta rules of the pooling and shape family that keep channels apart: cropping and nearest resizing.

Average and global pooling (max and average) use the existing kinds ``POOL*`` / ``GLOBALPOOL*``,
whose rule is ``channelwise.Channelwise``: each output channel reads its own input channel only and a
block holds every spatial position of its channels, so the windows (or the whole plane a global pool
reduces) of a changed input lie inside the block and the emulator's kernel runs on the block alone;
a global pool's block comes out with no spatial axes. The hoisted max-pool chains
(``delta.hoist.chains``) take only ``pool_op == "Max"``: an average does not commute with the
monotone layers before it.

Cropping and UpSampling move positions within a channel (a crop drops rows and columns, an upsampling
repeats them), never across channels or samples: the same block-wise rule is exact for them, with
the block's positions laid out anew by the kernel. Zero padding keeps its ``Channelwise`` rule and
reshape (which moves values across the channel axis) its ``reshape.Reshape``.
"""

from __future__ import annotations

from hwflow.campaign.delta.channelwise import Channelwise
from hwflow.campaign.delta.registry import register_rule
from hwflow.emulator import Kind

for _kind in (Kind.CROP1D, Kind.CROP2D, Kind.RESIZE):
    register_rule(_kind, Channelwise())
