"""Depthwise convolutions: hls4ml's DepthwiseConv1D/2D, one multiply-accumulate per channel.

hls4ml 1.3.0 also runs every separable convolution as one of these: its backend-independent
``separable_to_depthwise_and_conv`` pass splits a SeparableConv1D/2D into a DepthwiseConv (no bias of
its own: a zero ``uint<1>`` bias array) and a Conv that becomes a PointwiseConv (read as an ordinary
1x1 convolution, ``hwflow.convert.layers_conv``). So a separable layer reaches the emulator as two
layers, each with its own types and arrays.

What the C++ does (``nnet_sepconv{1,2}d_latency.h`` in io_parallel, ``nnet_depthwise_product.h`` through
``nnet_sepconv_stream.h`` in io_stream): for output channel ``c`` at each position, ``acc = (accum_t)
bias[c]``, then ``acc += (accum_t)(x[k, c] * w[k, c])`` over the kernel positions ``k`` in order, then
``res = (res_t) acc``. hls4ml supports a depth multiplier of 1 only (its kernels assert it), and the
Resource strategy in io_stream only (``DepthwiseDenseResource_*``), whose reuse loops add a channel's
products in another order (:func:`resource_order`); the order matters only to an accumulator that
saturates or truncates products, and is then followed step by step.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from hwflow.emulator import ops
from hwflow.emulator.kernels import register_op
from hwflow.emulator.program import Kind, LayerSpec, register_arrays
from hwflow.errors import EmulatorError, UnsupportedLayerError
from hwflow.fixed import FixedType, Overflow, cast, overflow, quantize_float, requantize, value_range

if TYPE_CHECKING:
    from hwflow.emulator.run import Emulator, Weights

DEPTHWISE = (Kind.DEPTHWISE1D, Kind.DEPTHWISE2D)

for _kind in DEPTHWISE:
    register_arrays(_kind, ("weight", "bias"))


def geometry(layer: LayerSpec) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """``(size, stride, pad_before, pad_after)`` over the spatial axes."""
    a = layer.attrs
    if layer.kind is Kind.DEPTHWISE2D:
        return ((a["filt_height"], a["filt_width"]), (a["stride_height"], a["stride_width"]),
                (a["pad_top"], a["pad_left"]), (a["pad_bottom"], a["pad_right"]))
    return (a["filt_width"],), (a["stride_width"],), (a["pad_left"],), (a["pad_right"],)


@functools.lru_cache(maxsize=64)
def resource_order(n_in: int, n_out: int, reuse: int) -> np.ndarray | None:
    """Per channel, the kernel positions in the order ``DepthwiseDenseResource_*`` adds their products
    (``(n_out, n_in // n_out)``), or None for position order (Latency, reuse factor 1).

    Follows the three kernels of ``nnet_depthwise_product.h`` (hls4ml 1.3.0), chosen as its config
    template chooses them (``reuse <= n_out``; a multiple of ``n_out``; otherwise), index arithmetic
    only. A reuse factor for which those loops do not add each product of a channel exactly once into
    that channel is refused: hls4ml's kernel would not compute a depthwise convolution.
    """
    if reuse <= 1:
        return None
    seen: list[list[int]] = [[] for _ in range(n_out)]
    rufactor = reuse if reuse <= n_out else min(reuse, n_in)
    block = -(-n_in // rufactor)
    remainder = reuse % n_out
    for ir in range(rufactor):
        in_index, out_index = ir, ir % n_out
        for _ in range(block):
            if in_index >= n_in:
                out_index = -1  # reads past the weights: not a depthwise convolution
            if out_index < 0 or in_index % n_out != out_index:
                msg = (f"reuse factor {reuse} of a depthwise layer with {n_out} channels and {n_in // n_out} kernel "
                       "positions: hls4ml's Resource kernel does not add each product into its own channel there; "
                       "choose a reuse factor that divides the channel count")
                raise UnsupportedLayerError(msg)
            seen[out_index].append(in_index // n_out)
            in_index += rufactor
            if reuse <= n_out:
                out_index = (out_index + reuse) % n_out
            elif reuse % n_out:
                out_index = (out_index + remainder) % n_out
    order = np.array(seen, dtype=np.int64)
    if order.shape != (n_out, n_in // n_out) or not all(np.array_equal(np.sort(r), np.arange(order.shape[1]))
                                                        for r in order):
        msg = f"reuse factor {reuse}: hls4ml's depthwise Resource kernel misses products of some channel"
        raise UnsupportedLayerError(msg)
    return None if np.all(order == np.arange(order.shape[1])) else order


def layer_order(layer: LayerSpec, n_chan: int, kernel: int) -> np.ndarray | None:
    """The product order of ``layer`` (see :func:`resource_order`), over all of its channels."""
    reuse = int(layer.attrs.get("reuse_factor", 1))
    if not str(layer.attrs.get("strategy", "latency")).startswith("resource") or reuse <= 1:
        return None
    return resource_order(kernel * n_chan, n_chan, reuse)


def _taps(x: np.ndarray, size, stride, out) -> list[np.ndarray]:
    """Per kernel position (in Keras order), the input codes it multiplies: views ``(N, *out, C)``."""
    taps = []
    for pos in np.ndindex(*size):
        spans = zip(pos, stride, out, strict=True)
        index = (slice(None),) + tuple(slice(p, p + s * (n - 1) + 1, s) for p, s, n in spans)
        taps.append(x[index])
    return taps


def depthwise(layer: LayerSpec, x: np.ndarray, x_type: FixedType, weight: Weights, bias: Weights | None,
              channels: np.ndarray | None = None) -> np.ndarray:
    """The layer's output codes for input codes ``x`` (``(N, *spatial, C)``), exactly as hls4ml computes.

    ``channels``: ``x`` holds only these input channels (a delta rule's block), and the output is
    theirs; the weights and the product order are taken for them.
    """
    size, stride, before, after = geometry(layer)
    out = tuple(int(d) for d in layer.output_shape[:-1])
    n_all = int(layer.output_shape[-1])
    kernel = int(np.prod(size))
    wsel = weight.codes if weight.is_fixed else weight.values
    if wsel.size != kernel * n_all:
        msg = (f"layer {layer.name}: {wsel.size} depthwise weights for {kernel} kernel positions x {n_all} channels "
               "(only a depth multiplier of 1 is emulated)")
        raise EmulatorError(msg)
    w = wsel.reshape(kernel, n_all)
    b = None if bias is None else (bias.codes if bias.is_fixed else bias.values).reshape(n_all)
    order = layer_order(layer, n_all, kernel)
    if channels is not None:
        w = w[:, channels]
        b = None if b is None else b[channels]
        order = None if order is None else order[channels]
    if weight.is_fixed and (bias is None or bias.is_fixed):
        taps = _taps(ops.pad(x, before, after), size, stride, out)
        return _fixed(taps, x_type, w, weight.type, b, None if bias is None else bias.type, layer, order)
    taps = _taps(ops.pad(x_type.to_float(x), before, after), size, stride, out)
    wr = weight.real().reshape(kernel, n_all)
    br = None if bias is None else bias.real().reshape(n_all)
    if channels is not None:
        wr, br = wr[:, channels], None if br is None else br[channels]
    with np.errstate(over="ignore", invalid="ignore"):
        total = sum(t * wr[k] for k, t in enumerate(taps))
        if br is not None:
            total = total + br
    return quantize_float(total, layer.result)


def _fixed(taps: list[np.ndarray], x_type: FixedType, w: np.ndarray, w_type: FixedType, b: np.ndarray | None,
           b_type: FixedType | None, layer: LayerSpec, order: np.ndarray | None) -> np.ndarray:
    accum, result = layer.accum, layer.result
    if accum is None:
        msg = f"depthwise layer {layer.name} has no accumulator type"
        raise EmulatorError(msg)
    if x_type.width + w_type.width > 62:
        msg = f"a product of {x_type} and {w_type} exceeds the emulator's 62-bit integers"
        raise EmulatorError(msg)
    p_frac = x_type.frac + w_type.frac
    n = w.shape[1]
    if b is not None:
        bias = requantize(b, b_type.frac, accum)
        b_lo, b_hi = value_range(b_type, accum)
    else:
        bias, b_lo, b_hi = np.zeros(n, dtype=np.int64), 0, 0
    if accum.overflow is Overflow.WRAP and accum.frac >= p_frac:  # a wrapping sum: exact, in any order
        up = accum.frac - p_frac
        bound = ops.matmul_bound(x_type, w_type, len(taps)) << up
        fits = accum.min_code <= b_lo - bound and b_hi + bound <= accum.max_code
        if bound + max(abs(b_lo), abs(b_hi)) < 2**53:
            wf = np.ldexp(w.astype(np.float64), up)
            acc = np.zeros(taps[0].shape, dtype=np.float64) + bias.astype(np.float64)
            for k, t in enumerate(taps):
                acc += t * wf[k]
            if not fits:
                acc = overflow(acc.astype(np.int64), accum)
            return cast(acc, accum, result)
        acc = np.zeros(taps[0].shape, dtype=np.int64) + bias
        for k, t in enumerate(taps):
            acc += np.left_shift(t.astype(np.int64) * w[k].astype(np.int64), up)
        return requantize(overflow(acc, accum), accum.frac, result)
    # Products cast to accum_t one by one and every partial sum overflowed: hls4ml's order matters.
    acc = np.zeros(taps[0].shape, dtype=np.int64) + bias
    wi = w.astype(np.int64)
    stacked = np.stack(taps, axis=-2).astype(np.int64) if order is not None else None  # (N, *out, K, C)
    channels = np.arange(n)
    for step in range(len(taps)):
        if order is None:
            x_k, w_k = taps[step].astype(np.int64), wi[step]
        else:
            ks = order[:, step]
            x_k, w_k = stacked[..., ks, channels], wi[ks, channels]
        acc = overflow(acc + requantize(x_k * w_k, p_frac, accum), accum)
    return requantize(acc, accum.frac, result)


def _op(emulator: Emulator, layer: LayerSpec, inputs: list[np.ndarray], types: list[FixedType]) -> np.ndarray:
    return depthwise(layer, inputs[0], types[0], emulator.weights(layer, "weight"), emulator.weights(layer, "bias"))


for _kind in DEPTHWISE:
    register_op(_kind, _op)
