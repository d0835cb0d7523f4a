"""The engine's compiled kernels (``hwflow.campaign.delta.compiled``) against their numpy references:
identical codes on random inputs, edge cases included (wrapping accumulators, negative codes, pooling
with negative signs, rounding ties and clamps at their boundary, every code dtype the golden store
uses); the switch that runs the references; and the engine giving the same outcomes either way."""

from __future__ import annotations

import functools
import tempfile

import numpy as np
import pytest

from hwflow.campaign import TrialEvaluator
from hwflow.campaign.delta import compiled
from hwflow.campaign.delta.compiled import ROUNDING_CODES, use_numba
from hwflow.emulator import Emulator
from hwflow.emulator.step import BoundStep
from hwflow.faults import fault_model_from_spec
from tests.conftest import random_bn_statistics, zoo_model

pytestmark = pytest.mark.skipif(not compiled.HAVE_NUMBA, reason="numba is pinned in pyproject.toml")
CODE_DTYPES = [np.int8, np.int16, np.int32, np.float32]


def _both(fn, *args, out):
    """``fn`` compiled and as its numpy reference, each into a fresh copy of ``out``."""
    results = []
    for on in (True, False):
        o = np.full_like(out, 7)
        with use_numba(on):
            fn(*args, out=o)
        results.append(o)
    return results


def _conv_sum_definition(gold, channels, samples, grid, db, wrap, partial, xv, xg, xch, wt, src, wptr, wky, wkx, wci,
                         wval, geometry, win, sgn):
    """``compiled.conv_sum`` written out one position at a time, in Python integers (the contract)."""
    gh, gw = grid
    kh, kw, sh, sw, pt, pl = geometry
    ih, iw = src.shape[1:3]
    bits, lo = wrap
    acc = np.zeros((len(channels), len(samples), gh * gw), dtype=object)
    for ci, c in enumerate(channels):
        for si, n in enumerate(samples):
            for y in range(gh):
                for x in range(gw):
                    v = int(gold[c, n, y, x]) + int(db[ci]) + (int(partial[si, y, x, ci]) if partial.size else 0)
                    for ky in range(kh):
                        for kx in range(kw):
                            iy, ix = y * sh + ky - pt, x * sw + kx - pl
                            if not (0 <= iy < ih and 0 <= ix < iw):
                                continue  # the padding
                            for j, cj in enumerate(xch if xv.size else []):
                                v += int(wt[ky, kx, j, ci]) * (int(xv[si, iy, ix, j]) - int(xg[n, iy, ix, cj]))
                    for w in range(wptr[ci], wptr[ci + 1]):
                        iy, ix = y * sh + wky[w] - pt, x * sw + wkx[w] - pl
                        if 0 <= iy < ih and 0 <= ix < iw:
                            v += int(wval[w]) * int(src[n, iy, ix, wci[w]])
                    if bits:
                        v = ((v - lo) % (1 << bits)) + lo
                    acc[ci, si, y * gw + x] = v
    if win.shape[0] == 0:
        return acc
    return np.array([[[sg * max(sg * acc[ci, si, p] for p in window) for window in win] for si in range(len(samples))]
                     for ci, sg in enumerate(sgn)], dtype=object)


def _conv_sum_case(rng, gold_dtype, src_dtype, values_dtype, wrap_bits, pooled, signed_pool, geometry, grid,
                   with_partial):
    """Random terms of every kind: fault-free codes, an input block (some codes changed), changed words
    (one channel without any), a bias change, a partial input term; ``geometry`` ``(KH, KW, sy, sx, pt, pl)``."""
    m, n, ih, iw, cin = 5, 11, 7, 6, 4
    kh, kw, sh, sw, pt, pl = geometry
    oh, ow = (ih + 2 * pt - kh) // sh + 1, (iw + 2 * pl - kw) // sw + 1
    gh, gw = grid
    hi = 2 ** (wrap_bits - 1) if wrap_bits else 2**20
    info = np.iinfo(gold_dtype) if np.issubdtype(gold_dtype, np.integer) else None
    g_hi = min(hi, int(info.max)) if info else hi
    gold = rng.integers(-g_hi, g_hi, (m, n, oh, ow)).astype(gold_dtype)
    channels = np.array([0, 2, 3], dtype=np.int64)
    samples = np.sort(rng.choice(n, 7, replace=False)).astype(np.int64)
    c_info = np.iinfo(src_dtype)
    src = rng.integers(int(c_info.min), int(c_info.max) + 1, (n, ih, iw, cin)).astype(src_dtype)
    xch = np.array([1, 3], dtype=np.int64)
    xv = src[samples][..., xch].astype(values_dtype)
    changed = rng.random(xv.shape) < 0.5
    xv[changed] = rng.integers(int(c_info.min), int(c_info.max) + 1, int(changed.sum()))
    wt = rng.integers(-60, 60, (kh, kw, len(xch), len(channels))).astype(np.int64)
    wt[0, 0, 0, 1] = 0  # a zero weight is skipped
    p_hi = hi if wrap_bits else 2**12  # near the accumulator's ends: the wrap bites
    partial = (rng.integers(-p_hi, p_hi, (len(samples), gh, gw, len(channels))) if with_partial
               else np.zeros((0, 0, 0, 0))).astype(np.float32 if not wrap_bits else np.int64)
    wptr = np.array([0, 2, 2, 5], dtype=np.int64)  # channel 2 has no changed word
    wky, wkx, wci = (rng.integers(0, kh, 5), rng.integers(0, kw, 5), rng.integers(0, cin, 5))
    wky[0], wkx[0] = kh - 1, kw - 1  # the last tap: in the padding at the grid's end for padded geometries
    wval = rng.integers(-300, 300, 5).astype(np.int64)
    db = rng.integers(-50, 50, len(channels)).astype(np.int64)
    lo = -(2 ** (wrap_bits - 1)) if wrap_bits else 0
    if pooled:
        idx = np.arange(gh * gw).reshape(gh, gw)
        win = np.lib.stride_tricks.sliding_window_view(idx, (2, 2))[::2, ::2].reshape(-1, 4).astype(np.int64)
        win = np.ascontiguousarray(win)
    else:
        win = np.zeros((0, 1), dtype=np.int64)
    sgn = np.array([1, -1, 1] if signed_pool else [1, 1, 1], dtype=np.int64)
    width = win.shape[0] if pooled else gh * gw
    top = max(-int(c_info.min), int(c_info.max))  # the caller's bound on every partial sum picks the dtype
    bound = g_hi + 50 + p_hi + int(np.abs(wt).sum()) * 2 * top + int(np.abs(wval).sum()) * top
    dtype = np.int64 if wrap_bits else np.float32 if bound < 2**24 and values_dtype != np.float64 else np.float64
    out = np.zeros((len(channels), len(samples), width), dtype=np.int64 if wrap_bits else dtype)
    args = (gold, channels, samples, grid, db, (wrap_bits, lo), partial, xv, src, xch, wt, src, wptr, wky, wkx, wci,
            wval, geometry, win, sgn)
    return args, out, dtype


GEOMETRIES = [((3, 3, 1, 1, 0, 0), (5, 4)), ((3, 3, 1, 1, 0, 0), (4, 4)), ((3, 2, 2, 1, 1, 1), (4, 6)),
              ((1, 3, 1, 2, 0, 1), (6, 3)), ((2, 2, 2, 2, 0, 0), (3, 3))]


@pytest.mark.parametrize(("gold_dtype", "src_dtype", "values_dtype"), [
    (np.int8, np.uint8, np.float32), (np.int16, np.int8, np.float64), (np.int32, np.int16, np.int16),
    (np.float32, np.uint8, np.float32)])
def test_conv_sum_equals_numpy_and_its_definition(gold_dtype, src_dtype, values_dtype):
    """Every code dtype of the golden store, unit and larger strides, padding, a crop of the output, with
    and without a wrap and a partial term, pooled (max, and min where the sign is negative) and not."""
    rng = np.random.default_rng([CODE_DTYPES.index(gold_dtype), np.dtype(src_dtype).num])
    for geometry, grid in GEOMETRIES:
        for wrap_bits in (0, 14):
            for pooled, signed_pool in ((False, False), (True, False), (True, True)):
                with_partial = pooled and not signed_pool
                args, out, dtype = _conv_sum_case(rng, gold_dtype, src_dtype, values_dtype, wrap_bits, pooled,
                                                  signed_pool, geometry, grid, with_partial)
                label = f"{geometry} {grid} wrap {wrap_bits} pool {pooled} signed {signed_pool}"
                fast, ref = _both(functools.partial(compiled.conv_sum, dtype=dtype), *args, out=out)
                np.testing.assert_array_equal(fast, ref, err_msg=label)
                np.testing.assert_array_equal(ref, _conv_sum_definition(*args).astype(np.int64), err_msg=label)
                if wrap_bits and not pooled:  # the sums leave the accumulator's range: the wrap bites
                    plain = np.zeros(out.shape, dtype=np.int64)
                    with use_numba(False):
                        compiled.conv_sum(*args[:5], (0, 0), *args[6:], plain, dtype=np.int64)
                    assert (plain != ref).any()


def test_conv_sum_wraps_and_pools_as_defined():
    """One sample, one channel, one changed word and one faulty input weight, written out by hand."""
    gold = np.array([[[[8100, -8000], [100, 5]]]], dtype=np.int32)  # (m=1, N=1, 2, 2)
    src = np.array([[[[1], [2]], [[3], [4]]]], dtype=np.int8)  # (N=1, 2, 2, Cin=1), a 1x1 kernel
    xv = np.array([[[[4], [2]], [[3], [-1]]]], dtype=np.float32)  # faulty input: +3 at (0, 0), -5 at (1, 1)
    wt = np.array([[[[7]]]], dtype=np.int64)  # (KH, KW, |B|, |C|)
    win = np.array([[0, 1, 2, 3]], dtype=np.int64)
    args = (gold, np.array([0]), np.array([0]), (2, 2), np.array([10]), (14, -8192), np.zeros((0, 0, 0, 0)),
            xv, src, np.array([0]), wt, src, np.array([0, 1]), np.array([0]), np.array([0]), np.array([0]),
            np.array([100]), (1, 1, 1, 1, 0, 0))
    dx = xv[0, :, :, 0].astype(np.int64) - src[0, :, :, 0]
    acc = gold[0, 0] + 10 + 7 * dx + 100 * src[0, :, :, 0].astype(np.int64)
    wrapped = ((acc.astype(np.int64) + 8192) % 16384) - 8192
    for sgn, expect in ((1, wrapped.max()), (-1, wrapped.min())):
        for on in (True, False):
            out = np.zeros((1, 1, 1), dtype=np.int64)
            with use_numba(on):
                compiled.conv_sum(*args, win, np.array([sgn]), out, dtype=np.int64)
            assert out[0, 0, 0] == expect, (sgn, on)
    assert acc.max() == 8100 + 10 + 21 + 100
    assert wrapped[0, 0] == 8231 - 2**14  # the largest sum wrapped to a negative code


@pytest.mark.parametrize(("full", "grid"), [((9,), (8,)), ((7, 6), (6, 6)), ((7, 6), (6, 4))])
def test_pending_conv_pools_as_its_values_do(full, grid):
    """A convolution's pending sum, pooled in the kernel, equals its values pooled by the emulator's
    max pool (Conv1D, whole output rows, a crop of rows and columns)."""
    from hwflow.campaign.delta.convsum import ConvSum
    from hwflow.emulator import ops

    rng = np.random.default_rng(len(full) + grid[-1])
    m, n, cin = 3, 6, 2
    size = (3,) * len(full)
    spatial_in = tuple(f + 2 for f in full)  # valid 3-wide kernels
    samples = np.array([0, 2, 3, 5], dtype=np.int64)
    source = rng.integers(0, 200, (n,) + spatial_in + (cin,)).astype(np.uint8)
    values = source[samples][..., [1]].astype(np.float32) + rng.integers(-2, 3, (len(samples),) + spatial_in + (1,))
    acc = ConvSum(gold=rng.integers(-500, 500, (m, n) + full).astype(np.float32), channels=np.arange(m),
                  samples=samples, grid=grid, dtype=np.dtype(np.float32), source=source,
                  geometry=(size, (1,) * len(full), (0,) * len(full)),
                  block=(values, np.array([1]), rng.integers(-9, 9, size + (1, m))),
                  words=(np.array([0, 1, 1, 3]), np.array([2, 0, 3]), np.array([3, -2, 5])),
                  db=np.array([1, 0, -4]))
    pool = (2,) * len(grid)
    sgn = np.array([1, -1, 1])
    for on in (True, False):
        with use_numba(on):
            got = acc.values()
            expect = ops.max_pool(got * sgn, pool, pool) * sgn
            np.testing.assert_array_equal(np.moveaxis(acc.pooled(pool, pool, sgn), 0, -1), expect, err_msg=str(on))
    # channel 0 by its definition: row 2 of the im2col is tap 1 of input channel 0
    crop = tuple(slice(0, g) for g in grid)
    direct = np.moveaxis(acc.gold[:, samples][(slice(None), slice(None)) + crop], 0, -1) + acc.db
    dx = values[..., 0] - source[samples][..., 1]
    _, _, wt = acc.block
    taps = np.ndindex(*size)
    for tap in taps:
        shifted = tuple(slice(t, t + g) for t, g in zip(tap, grid, strict=True))
        direct[..., 0] += wt[tap + (0, 0)] * dx[(slice(None),) + shifted]
    one = (1,) + (0,) * (len(full) - 1) if len(full) == 2 else (1,)  # tap 1 in row-major order
    if len(full) == 2:
        one = (0, 1)
    shifted = tuple(slice(t, t + g) for t, g in zip(one, grid, strict=True))
    direct[..., 0] += 3 * source[samples][(slice(None),) + shifted + (0,)].astype(np.int64)
    np.testing.assert_array_equal(got[..., 0], direct[..., 0])


@pytest.mark.parametrize("golden_dtype", [np.uint8, np.int8, np.int16, np.int32])
def test_dx_columns_equals_numpy(golden_dtype):
    rng = np.random.default_rng(np.dtype(golden_dtype).num)
    n, h, w, c = 9, 8, 7, 6
    info = np.iinfo(golden_dtype)
    lo, hi = max(int(info.min), -(2**15)), min(int(info.max), 2**15)
    golden = rng.integers(lo, hi, (n, h, w, c)).astype(golden_dtype)
    channels = np.array([1, 4, 5], dtype=np.int64)
    samples = np.array([0, 3, 4, 8], dtype=np.int64)
    values_dtype = {np.uint8: np.float32, np.int8: np.float64, np.int16: np.int16, np.int32: np.float64}[golden_dtype]
    values = golden[samples][..., channels].astype(values_dtype)
    values[rng.random(values.shape) < 0.4] = rng.integers(lo, hi)  # some codes changed
    for size, stride, pad, grid in (((3, 3), (1, 1), (0, 0), (6, 5)), ((3, 2), (2, 1), (1, 1), (4, 7)),
                                    ((3, 3), (1, 1), (0, 0), (4, 4)), ((1, 3), (1, 2), (0, 1), (8, 4))):
        out = np.zeros((len(samples),) + grid + (size[0] * size[1] * len(channels),), dtype=np.float32)
        channel_first = np.moveaxis(np.ascontiguousarray(np.moveaxis(values, -1, 0)), 0, -1)  # as a pooled block
        fast, ref = _both(compiled.dx_columns, values, golden, samples, channels, size, stride, pad, out=out)
        first, _ = _both(compiled.dx_columns, channel_first, golden, samples, channels, size, stride, pad, out=out)
        np.testing.assert_array_equal(fast, ref, err_msg=f"{values_dtype} {size} {stride} {pad}")
        np.testing.assert_array_equal(first, ref, err_msg=f"channel first {values_dtype} {size} {stride} {pad}")
        # the definition, at the last output position (in the padding for some geometries)
        ky, kx, cc = size[0] - 1, size[1] - 1, 2
        k = (ky * size[1] + kx) * len(channels) + cc
        iy, ix = (grid[0] - 1) * stride[0] + ky - pad[0], (grid[1] - 1) * stride[1] + kx - pad[1]
        inside = 0 <= iy < h and 0 <= ix < w
        expect = float(values[1, iy, ix, cc]) - float(golden[samples[1], iy, ix, channels[cc]]) if inside else 0.0
        assert ref[1, grid[0] - 1, grid[1] - 1, k] == expect


@pytest.mark.parametrize("rounding", list(ROUNDING_CODES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_step_equals_numpy_and_the_bound_step(rounding, dtype):
    """Codes at every tie (x.5), at and across both clamps, negative codes, and a scale."""
    rng = np.random.default_rng(ROUNDING_CODES[rounding])
    c, r = 4, 301
    s = rng.integers(-600, 600, (c, r)).astype(np.float32 if dtype == np.float32 else np.int64)
    alpha = np.array([0.25, -0.5, 0.125, 1.0], dtype=dtype)
    beta = np.array([0.5, -0.25, 0.0, 0.5], dtype=dtype)
    lo = np.array([-20.0, 0.0, -7.0, -100.0], dtype=dtype)
    hi = np.array([30.0, 15.0, 7.0, 100.0], dtype=dtype)
    for clamps, scale in ((((np.maximum, lo), (np.minimum, hi)), 4.0), (((np.maximum, lo),), None), ((), None)):
        bound = BoundStep(dtype, alpha, beta, rounding, clamps, scale)
        expect = bound.channels_first(s)
        lo_arr = next((b for f, b in clamps if f is np.maximum), np.zeros(0, dtype))
        hi_arr = next((b for f, b in clamps if f is np.minimum), np.zeros(0, dtype))
        out = np.zeros((c, r), dtype=dtype)
        fast, ref = _both(compiled.step_channels_first, s, alpha, beta, ROUNDING_CODES[rounding], lo_arr, hi_arr,
                          float(scale or 0), out=out)
        np.testing.assert_array_equal(fast, expect)
        np.testing.assert_array_equal(ref, expect)
        assert (np.modf(s * alpha[:, None] + beta[:, None])[0] == 0.5).any() or rounding is None  # ties tested


@pytest.mark.parametrize("positions", [9, 1])  # a convolution's block, a Dense layer's (one position)
@pytest.mark.parametrize("dtype", CODE_DTYPES)
def test_differs_equals_numpy(dtype, positions):
    rng = np.random.default_rng(np.dtype(dtype).num)
    golden = rng.integers(-100, 100, (20, positions, 6)).astype(dtype)
    samples = np.array([1, 2, 7, 19], dtype=np.int64)
    channels = np.array([0, 3, 5], dtype=np.int64)
    values = golden[samples][..., channels].astype(np.float64)
    values[1, positions - 1, 2] += 1  # one change at the last position
    values[3, 0, 0] -= 1
    out = np.zeros((len(samples), len(channels)), dtype=bool)
    fast, ref = _both(compiled.differs, values, golden, samples, channels, out=out)
    np.testing.assert_array_equal(fast, ref)
    assert ref.sum() == 2
    assert ref[1, 2]
    assert ref[3, 0]


def test_the_switch(monkeypatch):
    monkeypatch.delenv("HWFLOW_NO_NUMBA", raising=False)
    assert compiled.enabled()
    monkeypatch.setenv("HWFLOW_NO_NUMBA", "0")
    assert compiled.enabled()
    monkeypatch.setenv("HWFLOW_NO_NUMBA", "1")
    assert not compiled.enabled()
    with use_numba(True):
        assert compiled.enabled()
    monkeypatch.delenv("HWFLOW_NO_NUMBA")
    with use_numba(False):
        assert not compiled.enabled()
    monkeypatch.setattr(compiled, "HAVE_NUMBA", False)  # numba not importable: the references run
    assert not compiled.enabled()
    with use_numba(True):
        assert not compiled.enabled()


@pytest.fixture(scope="module")
def cnn():
    from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls

    with tempfile.TemporaryDirectory() as tmp:
        hls = convert(zoo_model("cnn-digits", 8, 8, seed=4), HlsOptions.make("parallel"), tmp)
        return program_from_hls(hls), image_from_hls(hls)


def _conv1d_model():
    """Conv1D, batch norm, ReLU and max pooling twice (the 1-D paths of the kernels), then a Dense."""
    import tensorflow as tf
    from qkeras import QActivation, QConv1D, QDense, quantized_bits, quantized_relu

    q = quantized_bits(8, 0, alpha=1)
    inp = tf.keras.Input((24, 2), name="series")
    x = QConv1D(6, 3, kernel_quantizer=q, bias_quantizer=q, name="c1")(inp)
    x = tf.keras.layers.BatchNormalization(name="b1")(x)
    x = QActivation(quantized_relu(8, 3), name="r1")(x)
    x = tf.keras.layers.MaxPooling1D(2, name="p1")(x)
    x = QConv1D(5, 3, padding="same", kernel_quantizer=q, bias_quantizer=q, name="c2")(x)
    x = tf.keras.layers.BatchNormalization(name="b2")(x)
    x = QActivation(quantized_relu(8, 3), name="r2")(x)
    x = tf.keras.layers.MaxPooling1D(2, name="p2")(x)
    x = tf.keras.layers.Flatten(name="flat")(x)
    model = tf.keras.Model(inp, QDense(4, kernel_quantizer=q, bias_quantizer=q, name="out")(x))
    return random_bn_statistics(model, 2)


@pytest.fixture(scope="module")
def conv1d():
    from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls

    with tempfile.TemporaryDirectory() as tmp:
        hls = convert(_conv1d_model(), HlsOptions.make("parallel"), tmp)
        return program_from_hls(hls), image_from_hls(hls)


def test_engine_on_conv1d_with_and_without_numba(conv1d):
    program, image = conv1d
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (150, 24, 2))
    y = rng.integers(0, 4, 150)
    _check_both(program, image, x, y, rng, rates=(1e-3, 1e-2, 3e-2, 1e-1))


def test_engine_equals_full_emulation_with_and_without_numba(cnn, digits):
    """Both kernel sets give the full emulation's outcomes and output codes on the same seeded maps."""
    program, image = cnn
    x, y = digits.x_test[:200], digits.y_test[:200]
    _check_both(program, image, x, y, np.random.default_rng(11), rates=(1e-4, 1e-3, 3e-3, 1e-2, 3e-2))


def _check_both(program, image, x, y, rng, rates):
    """Outcomes and output codes, compiled and numpy kernels, each equal to full emulation; enough maps hurt."""
    maps = [fault_model_from_spec({"model": "bitflip"}, rate).sample(image, rng) for rate in rates for _ in range(3)]
    results = {}
    for on in (True, False):
        with use_numba(on):
            evaluator = TrialEvaluator(program, image, x, y)
            results[on] = (evaluator.evaluate_many(maps, threads=2), [evaluator.output_codes(m) for m in maps])
    hurt = 0
    for i, m in enumerate(maps):
        reference = Emulator(program, m.apply(image)).run(x)
        for on in (True, False):
            np.testing.assert_array_equal(results[on][1][i], reference, err_msg=f"numba {on}, map {i}")
        assert results[True][0][i] == results[False][0][i] == evaluator.full_evaluate(m, x)
        hurt += results[True][0][i].mismatches > 0
    assert hurt >= 5
