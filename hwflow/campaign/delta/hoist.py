"""Max pooling moved before the monotone per-channel layers that precede it (exact).

``maxpool(f(x)) = f(maxpool(x))`` for every non-decreasing ``f`` and ``f(minpool(x))`` for every
non-increasing one: batch normalization (the sign of its scale, per channel, when its cast cannot
wrap), ReLU and saturating casts. So a block leaving a convolution is pooled first and the batch
norm and activation run on a quarter of its values; the pooling layer then only applies its two
casts (``accum_t`` then ``res_t``, as ``nnet_pooling.h`` does). Rules say whether they are monotone
(``Rule.monotone``); a chain with a faulty layer, a non-monotone one or a padded pool is run layer
by layer instead.
"""

from __future__ import annotations

import numpy as np

from hwflow.campaign.delta import compiled
from hwflow.campaign.delta.convsum import PendingConv
from hwflow.campaign.delta.state import Block, Delta
from hwflow.emulator import Kind, LayerSpec, Program, ops
from hwflow.emulator import step as steps
from hwflow.emulator.clip import check_mode
from hwflow.emulator.run import Weights
from hwflow.fixed import FixedType, cast, monotone_cast

CHAIN_KINDS = (Kind.BATCHNORM, Kind.ACTIVATION, Kind.CLIPACT)


def pool_geometry(layer: LayerSpec):
    a = layer.attrs
    if layer.kind is Kind.POOL2D:
        return ((a["pool_height"], a["pool_width"]), (a["stride_height"], a["stride_width"]),
                (a["pad_top"], a["pad_left"], a["pad_bottom"], a["pad_right"]))
    return (a["pool_width"],), (a["stride_width"],), (a["pad_left"], a["pad_right"])


def chains(program: Program) -> dict[int, int]:
    """``start -> pool``: layers ``start..pool-1`` are per-channel candidates for hoisting, each fed by
    the one before, and layer ``pool`` is an unpadded max pooling fed by ``pool-1``."""
    layers = program.layers
    out = {}
    for i in range(1, len(layers)):
        j = i
        while j < len(layers) and layers[j].kind in CHAIN_KINDS and layers[j].inputs == (layers[j - 1].name,):
            j += 1
        if j == i or j >= len(layers):
            continue
        pool = layers[j]
        if pool.kind not in (Kind.POOL1D, Kind.POOL2D) or pool.inputs != (layers[j - 1].name,):
            continue
        if pool.attrs.get("pool_op") != "Max" or any(pool_geometry(pool)[2]):
            continue
        before = layers[j - 1].result
        if program.io_type == "io_stream" and not monotone_cast(before, pool.accum or before):
            continue  # io_stream casts each value to accum_t before the maximum (reduce_pool): a wrap reorders
        out[i] = j
    return out


def step_function(program: Program, start: int, end: int, weights: dict[tuple[str, str], Weights]):
    """Layers ``start..end`` (the chain and the pool's two casts) as one exact per-channel step function
    of the chain's input codes (``hwflow.emulator.step``, the emulator's fused form), bound to its
    constants; ``None`` where the chain does not fold exactly (then the rules run one by one)."""
    layers = program.layers
    try:
        state, t = chain_state(program, start, end, weights)
        if state is None:
            return None
        pool = layers[end]
        acc = pool.accum or t
        steps.cast(state, acc)
        steps.cast(state, pool.result)
        fn = steps.finish(state)
    except steps.NotCollapsible:
        return None
    return None if fn is None else (fn.direction, fn.bind(None, True), fn.bind(None, False))


def chain_state(program: Program, start: int, stop: int, weights: dict[tuple[str, str], Weights]):
    """The step-function state of layers ``start..stop-1`` applied to the codes layer ``start`` reads,
    and the type of what they output; ``(None, None)`` where a layer is not one the step form knows
    (raises ``steps.NotCollapsible`` where one does not fold exactly)."""
    layers = program.layers
    x_type = program.layer(layers[start].inputs[0]).result
    state = steps.start_codes(x_type, int(layers[start].output_shape[-1]))
    t = x_type
    for layer in layers[start:stop]:
        if layer.kind is Kind.BATCHNORM:
            s, b = weights[(layer.name, "scale")], weights[(layer.name, "bias")]
            if not (s.is_fixed and b.is_fixed):
                return None, None
            steps.batchnorm(state, s.codes, s.type, b.codes, b.type, layer.result)
        elif layer.kind is Kind.ACTIVATION and layer.attrs.get("activation") == "relu":
            steps.relu(state, layer.result)
        elif layer.kind is Kind.ACTIVATION and layer.attrs.get("activation") == "linear":
            steps.cast(state, layer.result)
        elif layer.kind is Kind.CLIPACT and check_mode(layer.attrs.get("mode")) == "saturate":
            steps.clip_saturate(state, t, layer.attrs["threshold"], layer.result)
        else:
            return None, None
        t = layer.result
    return state, t


def apply_step(delta: Delta, bound) -> Delta:
    """A bound step function (``step_function``) on each pooled block, on its channels only."""
    _, f32, f64 = bound
    out = []
    for b in delta:
        values = np.asarray(b.values)
        fn = f32 if values.dtype == np.float32 else f64
        if len(b.channels) != len(fn.alpha):
            fn = steps.BoundStep(fn.dtype, fn.alpha[b.channels], fn.beta[b.channels], fn.rounding,
                                 tuple((f, c[b.channels]) for f, c in fn.clamps), fn.scale)
        first = np.moveaxis(values, -1, 0)
        if values.ndim > 1 and first.flags.c_contiguous:
            y = step_channels_first(fn, first.reshape(len(first), -1)).reshape(first.shape)
            out.append(Block(b.samples, b.channels, np.moveaxis(y, 0, -1)))
        else:
            out.append(Block(b.samples, b.channels, fn(values)))
    return out


def step_channels_first(fn: steps.BoundStep, s: np.ndarray) -> np.ndarray:
    """``fn.channels_first(s)`` for ``s (C, R)``, in one compiled pass (``compiled.step_channels_first``)."""
    lo, hi = fn.clamp_bounds(fn.dtype)
    out = np.empty(s.shape, dtype=fn.dtype)
    compiled.step_channels_first(s, fn.alpha, fn.beta, compiled.ROUNDING_CODES[fn.rounding], lo, hi,
                                 float(fn.scale or 0.0), out)
    return out


def pool_blocks(delta: Delta, pool: LayerSpec, signs) -> Delta:
    """Each block pooled per channel: the maximum where ``signs`` is +1, the minimum where -1.

    A block laid out channel first in memory (a convolution's accumulator, see ``ChannelMajor``) is
    pooled in that layout, each channel's planes contiguous, and comes back as a channels-last view."""
    size, stride, _ = pool_geometry(pool)
    out = []
    for b in delta:
        sgn = None
        if np.ndim(signs):
            sgn = np.broadcast_to(np.asarray(signs), (int(pool.output_shape[-1]),))[b.channels]
            if (sgn > 0).all():
                sgn = None
        if isinstance(b, PendingConv):  # summed and pooled in one pass, never written in full
            pooled = b.acc.pooled(size, stride, sgn)
            if pooled is not None:
                out.append(Block(b.samples, b.channels, np.moveaxis(pooled, 0, -1)))
                continue
        values = np.asarray(b.values)
        first = np.moveaxis(values, -1, 0)
        if values.ndim > 2 and first.flags.c_contiguous:
            planes = first if sgn is None else first * sgn.reshape((-1,) + (1,) * (first.ndim - 1))
            flat = planes.reshape((-1,) + planes.shape[2:] + (1,))
            pooled = ops.max_pool(flat, size, stride)
            pooled = pooled.reshape(planes.shape[:2] + pooled.shape[1:-1])
            if sgn is not None:
                pooled = pooled * sgn.reshape((-1,) + (1,) * (pooled.ndim - 1))
            out.append(Block(b.samples, b.channels, np.moveaxis(pooled, 0, -1)))
            continue
        if sgn is None:
            pooled = ops.max_pool(values, size, stride)
        else:
            pooled = ops.max_pool(np.asarray(values, dtype=np.float64) * sgn, size, stride) * sgn
        out.append(Block(b.samples, b.channels, pooled))
    return out


def pool_casts(delta: Delta, pool: LayerSpec, x_type: FixedType) -> Delta:
    """What the pooling layer does to maxima already taken: ``accum_t`` then ``res_t``."""
    acc = pool.accum or x_type
    return [Block(b.samples, b.channels, cast(cast(b.values, x_type, acc), acc, pool.result)) for b in delta]
