"""Multiply-accumulate layers (Dense, Conv1D, Conv2D): ``acc' = acc + W'·Δa + ΔW·a``.

hls4ml sums ``(accum_t)(x * w)`` into ``accum_t`` starting from the bias. When the accumulator keeps
every product bit (its fraction is at least the product's) and wraps, the sum is linear modulo
``2**W``, so the faulty accumulator is the fault-free one (kept by the golden pass) plus two exact
integer products:

- ``W'·Δa``: the input codes that changed (a block of samples x input channels) times the faulty
  weights of those input channels only, for every output channel;
- ``ΔW·a``: the fault-free input times the changed weight words (a few rows), for the output
  channels they belong to, for every sample; a changed bias word adds its difference (after the
  bias's own cast to ``accum_t``).

Then one wrap (only where the types allow an overflow) and the cast to the result type, at those
positions only. Where linearity breaks (a saturating accumulator, products truncated into
``accum_t``, float-stored weights), the rule recomputes the affected positions in full: the changed
samples, and the faulty output channels of the others.
"""

from __future__ import annotations

import numpy as np

from hwflow.campaign.delta import compiled
from hwflow.campaign.delta.convsum import ConvSum, PendingConv
from hwflow.campaign.delta.golden import accumulator_key
from hwflow.campaign.delta.registry import Step, register_rule
from hwflow.campaign.delta.state import Block, ChannelMajor, Delta, fill, rest_of, take
from hwflow.emulator import Kind, LayerSpec, ops, products
from hwflow.emulator.run import Weights, resource_order
from hwflow.fixed import FixedType, Overflow, cast, overflow, requantize, value_range

ELEMENTS = 1 << 23  # elements of one im2col chunk (64 MiB in float64)
BLOCK_ELEMENTS = 1 << 18  # elements of one chunk of an input difference's im2col (1 MiB in float32): built and
# multiplied while it is still in cache (resnet8 at 1e-4: ~25 % less time than 64 MiB chunks, measured)
DENSE = 0.9  # a convolution's input block holding at least this share of the samples is widened to all
DIRECT_CHANNELS = 8  # a convolution's input block of at most this many channels, on an output of at least
DIRECT_POSITIONS = 32  # this many positions, has its term summed in the sum's kernel (shifted planes, no
# im2col); a wider block, or a small output (per-sample overhead), goes through a GEMM, where BLAS wins


def geometry(layer: LayerSpec):
    """``(size, stride, pad_before, pad_after)`` of a convolution, ``None`` for Dense."""
    a = layer.attrs
    if layer.kind is Kind.CONV2D:
        return ((a["filt_height"], a["filt_width"]), (a["stride_height"], a["stride_width"]),
                (a["pad_top"], a["pad_left"]), (a["pad_bottom"], a["pad_right"]))
    if layer.kind is Kind.CONV1D:
        return (a["filt_width"],), (a["stride_width"],), (a["pad_left"],), (a["pad_right"],)
    return None


def n_out(layer: LayerSpec) -> int:
    return int(layer.output_shape[-1])


def _columns(x: np.ndarray, geo, dtype) -> tuple[np.ndarray, tuple[int, ...]]:
    """im2col of ``x`` (N, *spatial, C): a view ``(N, *out, *size, C)`` and the output spatial shape."""
    size, stride, before, after = geo
    view = ops.patches(ops.pad(x.astype(dtype, copy=False), before, after), size, stride)
    return view, tuple(view.shape[1 : 1 + len(size)])


def _dtype(bound: int) -> type:
    """The dtype in which a product of integer codes with this bound on every partial sum is exact."""
    return np.float32 if bound < 2**24 else np.float64 if bound < 2**53 else np.int64


def _chunks(n: int, per_sample: int, elements: int = ELEMENTS):
    step = max(1, elements // max(1, per_sample))
    for lo in range(0, n, step):
        yield slice(lo, min(lo + step, n))


def _gemm_into(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """``c += a @ b``, exact for integer codes whose partial sums ``c``'s dtype holds."""
    c += np.matmul(a.astype(c.dtype, copy=False), b.astype(c.dtype, copy=False))


def _every_sample(block: Block, golden) -> Block:
    """``block`` widened to every sample (the others with their fault-free codes): where it holds nearly
    all of them, that is cheaper than gathering the fault-free codes of a ragged subset."""
    values = take(golden, None, block.channels).astype(block.values.dtype)
    values[block.samples] = block.values
    return Block(np.arange(len(golden), dtype=np.int64), block.channels, values)


def _max_code(t: FixedType, extra: int = 0) -> int:
    return 1 << (t.width - 1 + extra) if t.signed else 1 << (t.width + extra)


class Mac:
    """Dense, Conv1D and Conv2D."""

    # --- the full kernel (the emulator's _linear / _conv, on given weights) ------------------------

    def full(self, step: Step, x: np.ndarray, weights: dict[str, Weights]) -> np.ndarray:
        return self._mac(step.layer, x, step.x_type, weights, step.layer.result)

    def accumulate(self, layer: LayerSpec, x: np.ndarray, x_type: FixedType, weights: dict[str, Weights]):
        """The accumulator codes (before the cast to the result type), for the golden pass."""
        if not weights["weight"].is_fixed:
            return np.zeros((len(x),) + tuple(layer.output_shape), dtype=np.int64)
        return self._mac(layer, x, x_type, weights, layer.accum)

    def needs_accumulator(self, layer: LayerSpec) -> bool:
        return layer.accum is not None and layer.accum != layer.result

    def needs_input(self, layer: LayerSpec) -> bool:
        return True

    def _mac(self, layer, x, x_type, weights, result) -> np.ndarray:
        geo = geometry(layer)
        m = n_out(layer)
        if geo is None:
            lead = x.shape[:-1]
            y = self._linear(layer, x.reshape(-1, x.shape[-1]), x_type, weights, result)
            return y.reshape(lead + (m,))
        w = weights["weight"]
        k = int(w.codes.size if w.is_fixed else w.values.size) // m
        dtype = ops.matmul_dtype(x_type, w.type, k) if w.is_fixed else np.float64
        outs = []
        for sl in _chunks(len(x), k * int(np.prod(layer.output_shape[:-1]))):
            view, out = _columns(x[sl], geo, dtype)
            flat = np.ascontiguousarray(view).reshape(-1, k)
            y = self._linear(layer, flat, x_type, weights, result, shape=(k, m))
            outs.append(y.reshape((view.shape[0],) + out + (m,)))
        return np.concatenate(outs) if outs else np.zeros((0,) + tuple(layer.output_shape))

    @staticmethod
    def _linear(layer, x, x_type, weights, result, shape=None) -> np.ndarray:
        w, b = weights["weight"], weights.get("bias")
        wmat = w.codes if w.is_fixed else w.values
        if shape is not None:
            wmat = wmat.reshape(shape)
        if products.special(layer, w):  # XNOR data, po2 weights: the emulator's products
            return products.linear(layer, x, x_type, w, b, layer.accum, result, resource_order(layer, wmat.shape),
                                   wmat.shape)
        if w.is_fixed and (b is None or b.is_fixed):
            return ops.linear_fixed(x, x_type, wmat, w.type, b.codes if b else None, b.type if b else None,
                                    layer.accum, result, resource_order(layer, wmat.shape))
        return ops.linear_float(x, x_type, w.real().reshape(wmat.shape), b.real() if b else None, layer.result)

    # --- the delta rule ----------------------------------------------------------------------------

    def delta(self, step: Step) -> Delta:
        if self._linear_exact(step):
            return self._linear_delta(step)
        return self._recompute(step)

    @staticmethod
    def _linear_exact(step: Step) -> bool:
        layer = step.layer
        w, b = step.weights["weight"], step.weights.get("bias")
        acc = layer.accum
        if not w.is_fixed or (b is not None and not b.is_fixed) or acc is None or products.special(layer, w):
            return False
        if step.x_type.width + w.type.width > 60:
            return False
        key = layer.name if acc == layer.result else accumulator_key(layer.name)
        return acc.overflow is Overflow.WRAP and acc.frac >= step.x_type.frac + w.type.frac and step.golden.has(key)

    def _changed_weights(self, step: Step):
        """Changed weight rows (flat im2col index), their per-channel differences, and the bias difference
        in accumulator codes; ``channels``: every output channel a changed word belongs to."""
        layer = step.layer
        m = n_out(layer)
        w, wc = step.weights["weight"], step.clean["weight"]
        rows = np.zeros(0, dtype=np.int64)
        dw = np.zeros((0, m), dtype=np.int64)
        channels = []
        if "weight" in step.changed:
            idx = step.changed["weight"]
            diff = w.codes.reshape(-1)[idx].astype(np.int64) - wc.codes.reshape(-1)[idx].astype(np.int64)
            rows, inv = np.unique(idx // m, return_inverse=True)
            dw = np.zeros((len(rows), m), dtype=np.int64)
            np.add.at(dw, (inv.reshape(-1), idx % m), diff)
            channels.append(idx % m)
        db = np.zeros(m, dtype=np.int64)
        if "bias" in step.changed:
            b, bc = step.weights["bias"], step.clean["bias"]
            db = requantize(b.codes, b.type.frac, layer.accum) - requantize(bc.codes, bc.type.frac, layer.accum)
            channels.append(np.asarray(step.changed["bias"]) % m)
        ch = np.unique(np.concatenate(channels)) if channels else np.zeros(0, dtype=np.int64)
        return rows, dw, db, ch

    def _linear_delta(self, step: Step) -> Delta:
        layer, x_type = step.layer, step.x_type
        acc_t = layer.accum
        w = step.weights["weight"]
        m = n_out(layer)
        k = w.codes.size // m
        cin = step.golden[step.input_name].shape[-1]
        up = acc_t.frac - (x_type.frac + w.type.frac)
        acc_g = step.golden[layer.name if acc_t == layer.result else accumulator_key(layer.name)]
        g_in = step.golden[step.input_name]
        # Bounds from the types (a faulty word is still a word of its type), the input's from the data
        # when it is the network input (inputs never fault).
        xb = step.golden.code_bound(step.input_name)
        dxb = x_type.max_code - x_type.min_code
        wb = max(-w.type.min_code, w.type.max_code)
        dwb = w.type.max_code - w.type.min_code
        b = step.weights.get("bias")
        b_lo, b_hi = value_range(b.type, acc_t) if b is not None else (0, 0)
        type_bound = (_max_code(x_type) * wb * k) << up
        no_wrap = acc_t.min_code <= b_lo - type_bound and b_hi + type_bound <= acc_t.max_code
        acc_bound = min((xb * wb * k) << up, 1 << acc_t.width) + max(abs(b_lo), abs(b_hi))
        rows, dw, db, cw = self._changed_weights(step)
        db_bound = 2 * max(abs(b_lo), abs(b_hi))
        conv = isinstance(acc_g, ChannelMajor)  # convolutions accumulate channel first (see ChannelMajor)
        inputs = step.inputs
        if conv and len(inputs) == 1 and DENSE * len(acc_g) <= len(inputs[0].samples) < len(acc_g):
            inputs = [_every_sample(inputs[0], g_in)]
        out = []
        for blk in inputs:
            k_sub = k // cin * len(blk.channels)
            bound = acc_bound + ((dxb * wb * k_sub + xb * dwb * len(rows)) << up) + db_bound
            if conv:
                everything = np.arange(m, dtype=np.int64)
                out.append(PendingConv(blk.samples, everything, self._conv_sum(
                    step, acc_g, everything, blk.samples, blk, rows, dw, up, db, no_wrap, _dtype(bound))))
                continue
            dx = blk.values - take(g_in, blk.samples, blk.channels).astype(np.float64)
            total = take(acc_g, blk.samples, None).astype(_dtype(bound))
            self._add_input_term(step, total, dx, blk.channels, up)
            if len(rows):
                self._add_weight_term(step, total, blk.samples, rows, dw, up)
            values = self._finish(step, total, db, no_wrap)
            out.append(Block(blk.samples, np.arange(m, dtype=np.int64), values))
        rest = rest_of(inputs, step.samples)
        if len(cw) and len(rest):
            bound = acc_bound + ((xb * dwb * len(rows)) << up) + db_bound
            if conv:
                out.append(PendingConv(rest, cw, self._conv_sum(step, acc_g, cw, rest, None, rows, dw, up, db, no_wrap,
                                                                _dtype(bound))))
                return out
            total = take(acc_g, rest, cw).astype(_dtype(bound))
            if len(rows):
                self._add_weight_term(step, total, rest, rows, dw[:, cw], up)
            out.append(Block(rest, cw, self._finish(step, total, db[cw], no_wrap)))
        return out

    def _conv_input_term(self, step: Step, blk: Block, g_in, up: int, dtype) -> np.ndarray:
        """``(W'·Δa) << up``, ``(S, *out, m)``, for the input block ``blk``.

        The im2col of the input difference is built from the block and the fault-free input
        (``compiled.dx_columns``, one row per output position), then ``cols (R, k) @ W' (k, m)``, a few
        samples at a time into one reused buffer of ``BLOCK_ELEMENTS``: the GEMM reads the columns
        while they are still in cache. With a short ``k`` BLAS runs this orientation about twice as
        fast as ``W'ᵀ @ colsᵀ``."""
        layer = step.layer
        m = n_out(layer)
        size, stride, before, _ = geometry(layer)
        channels = blk.channels
        wsub = np.take(step.weights["weight"].codes, channels, axis=-2)  # (*size, |C|, m)
        k = wsub.size // m
        w = (wsub.reshape(k, m) * (2**up)).astype(dtype)
        out = tuple(step.crop or layer.output_shape[:-1])
        n = len(blk.samples)
        total = np.empty((n,) + out + (m,), dtype=dtype)
        values = np.asarray(blk.values)
        golden = np.moveaxis(g_in.array, 0, -1) if isinstance(g_in, ChannelMajor) else g_in
        grid = out
        if len(size) == 1:  # Conv1D as a conv of height one
            values, golden, grid = values[:, None], golden[:, None], (1,) + out
            size, stride, before = (1,) + tuple(size), (1,) + tuple(stride), (0,) + tuple(before)
        buf = np.empty(max(1, BLOCK_ELEMENTS // (k * int(np.prod(out)))) * int(np.prod(grid)) * k, dtype=dtype)
        for sl in _chunks(n, k * int(np.prod(out)), BLOCK_ELEMENTS):
            cols = buf[: (sl.stop - sl.start) * int(np.prod(grid)) * k].reshape((sl.stop - sl.start,) + grid + (k,))
            compiled.dx_columns(values[sl], golden, blk.samples[sl], channels, size, stride, before, cols)
            np.matmul(cols.reshape(-1, k), w, out=total[sl].reshape(-1, m))
        return total

    def _conv_sum(self, step: Step, acc_g: ChannelMajor, channels: np.ndarray, samples: np.ndarray,
                  blk: Block | None, rows: np.ndarray, dw: np.ndarray, up: int, db: np.ndarray,
                  no_wrap: bool, dtype) -> ConvSum:
        """The terms of a convolution's faulty accumulator on ``channels`` x ``samples`` (summed when read):
        the fault-free accumulator, the input term of the input block ``blk`` (in the sum's kernel when
        it holds few channels, a GEMM before it otherwise), each changed word's ``ΔW·a`` on
        shifted slices of the stored fault-free input, the bias change, one wrap where the types allow
        an overflow, the cast."""
        layer = step.layer
        acc_t = layer.accum
        g_in = step.golden[step.input_name]
        source = np.moveaxis(g_in.array, 0, -1) if isinstance(g_in, ChannelMajor) else g_in
        partial = block = None
        grid = tuple(step.crop or layer.output_shape[:-1])
        if blk is not None and (len(blk.channels) > DIRECT_CHANNELS or np.prod(grid) < DIRECT_POSITIONS):
            partial = self._conv_input_term(step, blk, g_in, up, dtype)
        elif blk is not None:
            wsub = np.take(step.weights["weight"].codes, blk.channels, axis=-2)  # (*size, |B|, m)
            weights = np.ascontiguousarray(wsub.astype(np.int64) << up)
            block = (np.asarray(blk.values), np.asarray(blk.channels, dtype=np.int64), weights)
        ptr = np.zeros(len(channels) + 1, dtype=np.int64)
        row_parts, val_parts = [], []
        for ci, c in enumerate(channels):
            nz = np.flatnonzero(dw[:, c]) if len(rows) else np.zeros(0, dtype=np.int64)
            row_parts.append(rows[nz])
            val_parts.append(dw[nz, c].astype(np.int64) << up)
            ptr[ci + 1] = ptr[ci] + len(nz)
        words = (ptr, np.concatenate(row_parts).astype(np.int64), np.concatenate(val_parts)) if ptr[-1] else None
        size, stride, before, _ = geometry(layer)
        return ConvSum(acc_g.array, np.asarray(channels, dtype=np.int64), np.asarray(samples, dtype=np.int64), grid,
                       np.dtype(dtype), source, (tuple(size), tuple(stride), tuple(before)), partial, block, words,
                       db[channels], (0, 0) if no_wrap else (acc_t.width, acc_t.min_code),
                       None if acc_t == layer.result else (acc_t, layer.result))

    def _add_input_term(self, step: Step, total: np.ndarray, dx: np.ndarray, channels: np.ndarray, up: int) -> None:
        """``total += (W'·Δa) << up`` for input differences ``dx`` (S, len(channels)) of a Dense layer."""
        layer = step.layer
        m = n_out(layer)
        wsub = np.take(step.weights["weight"].codes, channels, axis=-2)  # (..., cin, m) -> (..., |C|, m)
        k = wsub.size // m
        wmat = wsub.reshape(k, m).astype(total.dtype) * (2**up)
        _gemm_into(total.reshape(-1, m), dx.reshape(-1, k), wmat)

    def _add_weight_term(self, step: Step, total: np.ndarray, samples: np.ndarray, rows: np.ndarray,
                         dw: np.ndarray, up: int) -> None:
        """``total += (ΔW·a) << up`` on the fault-free input of ``samples``, for the columns of ``dw``
        (Dense; a convolution's words are summed in ``compiled.conv_sum``)."""
        dwm = dw.astype(total.dtype) * (2**up)
        x = take(step.golden[step.input_name], samples, None)
        _gemm_into(total.reshape(-1, dw.shape[1]), x.reshape(-1, x.shape[-1])[:, rows], dwm)

    def _finish(self, step: Step, total: np.ndarray, db: np.ndarray, no_wrap: bool) -> np.ndarray:
        """The bias change, one wrap where the types allow an overflow, and the cast to the result; a
        channel-first accumulator comes back as a channels-last view."""
        layer = step.layer
        acc_t = layer.accum
        if db.any():
            total += db.astype(total.dtype)
        if not no_wrap:
            total = overflow(total.astype(np.int64), acc_t)
        return total if acc_t == layer.result else cast(total, acc_t, layer.result)

    def _recompute(self, step: Step) -> Delta:
        """Where linearity does not hold: the changed samples and the faulty channels, in full."""
        g_in = step.golden[step.input_name]
        m = n_out(step.layer)
        out = [Block(blk.samples, np.arange(m, dtype=np.int64), self.full(step, fill(blk, g_in), step.weights))
               for blk in step.inputs]
        cw = np.unique(np.concatenate([np.asarray(i) % m for i in step.changed.values()])) if step.changed else []
        rest = rest_of(step.inputs, step.samples)
        if len(cw) and len(rest):
            y = self.full(step, take(g_in, rest, None), step.weights)
            out.append(Block(rest, np.asarray(cw, dtype=np.int64), np.take(y, cw, axis=-1)))
        return out


_MAC = Mac()
for _kind in (Kind.DENSE, Kind.CONV1D, Kind.CONV2D):
    register_rule(_kind, _MAC)
