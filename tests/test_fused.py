"""The fused exact path against the plain kernels: each rewrite alone, on random codes and types.

Every comparison is exact (assert_array_equal on codes). The random cases cover rounding and
overflow modes, negative and zero batch-norm scales, wrapping accumulators (which must fall back)
and both pooling directions; a check that the fast path was really taken keeps the comparisons from
passing by falling back everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest

from hwflow.emulator import Emulator, Kind, LayerSpec, Program, gemm, ops
from hwflow.emulator.fused import FusedRunner, groups
from hwflow.emulator.run import Weights
from hwflow.emulator.step import MAX_LEVELS
from hwflow.fixed import FixedType, Overflow, Rounding, quantize_float

ROUNDINGS = list(Rounding)
OVERFLOWS = list(Overflow)


def _emulators(layers: list[LayerSpec], weights: dict, use_compiled: bool = True) -> tuple[Emulator, Emulator]:
    """A fused and a plain emulator on the given layers and arrays (no WeightImage needed).

    ``use_compiled=False``: the fused path's numpy kernels (what runs without numba).
    """
    out = []
    for fused in (True, False):
        emu = object.__new__(Emulator)
        emu.program, emu.chunk, emu.fused, emu.threads, emu.image = Program(tuple(layers)), 64, fused, 1, None
        emu._weights = dict(weights)
        emu._runner = FusedRunner(emu, use_compiled=use_compiled)
        out.append(emu)
    return out[0], out[1]


def _codes(rng, t: FixedType, shape) -> np.ndarray:
    return rng.integers(t.min_code, t.max_code + 1, shape)


def _rand_type(rng, width: tuple[int, int], integer: tuple[int, int], signed=None, modes=True) -> FixedType:
    """A random type; with ``modes``, any rounding and mostly saturating overflow (any one in four)."""
    w = int(rng.integers(*width))
    i = int(rng.integers(*integer))
    s = bool(rng.integers(2)) if signed is None else signed
    if not modes:
        return FixedType(w, i, s)
    overflows = OVERFLOWS if rng.integers(4) == 0 else [Overflow.SAT, Overflow.SAT_SYM]
    return FixedType(w, i, s, ROUNDINGS[rng.integers(len(ROUNDINGS))], overflows[rng.integers(len(overflows))])


def _conv_attrs(k: int, stride: int, pad: int, n_filt: int) -> dict:
    return {"filt_height": k, "filt_width": k, "stride_height": stride, "stride_width": stride, "pad_top": pad,
            "pad_bottom": pad, "pad_left": pad, "pad_right": pad, "n_filt": n_filt}


def _pool_attrs(p: int, stride: int) -> dict:
    return {"pool_height": p, "pool_width": p, "stride_height": stride, "stride_width": stride, "pad_top": 0,
            "pad_bottom": 0, "pad_left": 0, "pad_right": 0, "pool_op": "Max"}


def _case(seed: int, wide_accum: bool = True):
    """A conv -> batch norm -> activation -> max pool network with random types and arrays."""
    rng = np.random.default_rng(seed)
    x_t = _rand_type(rng, (3, 10), (1, 5), modes=False)
    w_t = _rand_type(rng, (2, 8), (0, 3), signed=True, modes=False)
    b_t = _rand_type(rng, (2, 8), (0, 4), signed=True, modes=False)
    c_in, c_out, k = int(rng.integers(1, 4)), int(rng.integers(1, 6)), int(rng.integers(1, 4))
    stride, pad = int(rng.integers(1, 3)), int(rng.integers(0, 2))
    size = 9
    out = (size + 2 * pad - k) // stride + 1
    p_frac = x_t.frac + w_t.frac
    up = int(rng.integers(0, 3))
    acc_width = 30 if wide_accum else int(rng.integers(6, 14))
    accum = FixedType(acc_width, acc_width - p_frac - up, True, Rounding.TRN, Overflow.WRAP)
    conv_r = _rand_type(rng, (8, 24), (4, 14)) if rng.integers(3) == 0 else accum  # hls4ml: result = accum
    s_t = _rand_type(rng, (3, 12), (1, 5), signed=True, modes=False)
    sb_t = _rand_type(rng, (3, 12), (1, 6), signed=True, modes=False)
    bn_r = _rand_type(rng, (8, 30), (4, 16)) if rng.integers(3) == 0 else FixedType(44, 22)
    act = "relu" if rng.integers(4) else "linear"
    act_r = _rand_type(rng, (2, 10), (0, 5))
    pool = int(rng.integers(1, 3))
    pstride = pool if rng.integers(4) else 1
    pooled = (out - pool) // pstride + 1
    pool_r = act_r if rng.integers(2) else _rand_type(rng, (2, 10), (0, 5))
    layers = [
        LayerSpec("x", Kind.INPUT, (), (size, size, c_in), x_t),
        LayerSpec("conv", Kind.CONV2D, ("x",), (out, out, c_out), conv_r, accum, _conv_attrs(k, stride, pad, c_out)),
        LayerSpec("bn", Kind.BATCHNORM, ("conv",), (out, out, c_out), bn_r),
        LayerSpec("act", Kind.ACTIVATION, ("bn",), (out, out, c_out), act_r, None, {"activation": act}),
        LayerSpec("pool", Kind.POOL2D, ("act",), (pooled, pooled, c_out), pool_r, act_r, _pool_attrs(pool, pstride)),
    ]
    scale = _codes(rng, s_t, c_out)
    scale[rng.random(c_out) < 0.2] = 0  # zero scale: a constant channel
    weights = {
        ("conv", "weight"): Weights(_codes(rng, w_t, (k * k * c_in, c_out)), w_t, None),
        ("conv", "bias"): Weights(_codes(rng, b_t, c_out), b_t, None),
        ("bn", "scale"): Weights(scale, s_t, None),  # random sign: non-increasing channels too
        ("bn", "bias"): Weights(_codes(rng, sb_t, c_out), sb_t, None),
    }
    x = _codes(rng, x_t, (37, size, size, c_in))
    return layers, weights, x


@pytest.mark.parametrize("use_compiled", [True, False], ids=["compiled", "numpy"])
@pytest.mark.parametrize("seed", range(120))
def test_conv_bn_activation_pool_group_equals_plain(seed, use_compiled):
    layers, weights, x = _case(seed)
    fast, plain = _emulators(layers, weights, use_compiled)
    for upto in ("conv", "bn", "act", "pool"):  # every group boundary the runner can stop at
        np.testing.assert_array_equal(fast.run_codes(x, "x", upto), plain.run_codes(x, "x", upto))


def test_fast_path_is_taken_in_most_random_cases():
    """The comparisons above must not pass by falling back: most random chains collapse."""
    taken = 0
    for seed in range(120):
        layers, weights, x = _case(seed)
        fast, _ = _emulators(layers, weights)
        fast.run_codes(x[:2], "x", "pool")
        taken += any(v is not None for v in fast._runner.cache.values())
    assert taken > 30  # 44 of 120 when written


@pytest.mark.parametrize("seed", range(30))
def test_wrapping_accumulator_falls_back_exactly(seed):
    layers, weights, x = _case(1000 + seed, wide_accum=False)
    fast, plain = _emulators(layers, weights)
    np.testing.assert_array_equal(fast.run_codes(x, "x", "pool"), plain.run_codes(x, "x", "pool"))


@pytest.mark.parametrize("seed", range(40))
def test_chain_without_multiply_accumulate_equals_plain(seed):
    """A group that starts at a batch norm (run_codes from the middle of a network)."""
    layers, weights, _ = _case(2000 + seed)
    rng = np.random.default_rng(seed)
    conv = layers[1]
    x = _codes(rng, conv.result, (21,) + conv.output_shape)
    fast, plain = _emulators(layers, weights)
    for upto in ("bn", "act", "pool"):
        np.testing.assert_array_equal(fast.run_codes(x, "conv", upto), plain.run_codes(x, "conv", upto))
    other = x.astype(np.float32 if conv.result.width <= 24 else np.int32)  # any dtype that holds the codes
    np.testing.assert_array_equal(fast.run_codes(other, "conv", "pool"), plain.run_codes(x, "conv", "pool"))


@pytest.mark.parametrize("use_compiled", [True, False], ids=["compiled", "numpy"])
@pytest.mark.parametrize("seed", range(40))
def test_dense_bn_relu_and_clip_saturate_equal_plain(seed, use_compiled):
    rng = np.random.default_rng(seed)
    x_t = _rand_type(rng, (3, 9), (1, 4), signed=False, modes=False)
    w_t = _rand_type(rng, (3, 8), (0, 2), signed=True, modes=False)
    p_frac = x_t.frac + w_t.frac
    accum = FixedType(32, 32 - p_frac)
    r1 = _rand_type(rng, (10, 24), (6, 12))
    s_t, sb_t = FixedType(10, 3), FixedType(10, 4)
    a_r = _rand_type(rng, (3, 9), (1, 4), signed=False)
    mode = "saturate" if rng.integers(2) else "zero"
    c_r = _rand_type(rng, (3, 9), (1, 4), signed=False)
    n = 12
    layers = [
        LayerSpec("x", Kind.INPUT, (), (20,), x_t),
        LayerSpec("fc", Kind.DENSE, ("x",), (n,), r1, accum),
        LayerSpec("bn", Kind.BATCHNORM, ("fc",), (n,), FixedType(36, 18)),
        LayerSpec("relu", Kind.ACTIVATION, ("bn",), (n,), a_r, None, {"activation": "relu"}),
        LayerSpec("clip", Kind.CLIPACT, ("relu",), (n,), c_r, None,
                  {"threshold": float(rng.uniform(0, 4)), "mode": mode}),
    ]
    weights = {
        ("fc", "weight"): Weights(_codes(rng, w_t, (20, n)), w_t, None),
        ("fc", "bias"): Weights(_codes(rng, w_t, n), w_t, None),
        ("bn", "scale"): Weights(_codes(rng, s_t, n), s_t, None),
        ("bn", "bias"): Weights(_codes(rng, sb_t, n), sb_t, None),
    }
    x = _codes(rng, x_t, (50, 20))
    fast, plain = _emulators(layers, weights, use_compiled)
    np.testing.assert_array_equal(fast.run_codes(x, "x"), plain.run_codes(x, "x"))


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_input_quantization_in_float32_equals_quantize_float(rounding):
    rng = np.random.default_rng(4)
    t = FixedType(12, 4, True, rounding, Overflow.SAT)
    x = np.concatenate([rng.uniform(-7, 7, 4000), np.arange(-64, 64) / 16.0 + 1 / 32.0,  # ties
                        np.arange(-64, 64) / 16.0, [0.0, -0.0, 1e-30, -1e-30]]).astype(np.float32)
    ours = gemm.quantize_f32(x, t)
    np.testing.assert_array_equal(ours.astype(np.int64), quantize_float(x, t))
    assert ours.dtype == np.float32
    assert gemm.quantize_f32(np.array([100.0], np.float32), t) is None  # overflows: the int64 reference
    assert gemm.quantize_f32(np.array([np.nan], np.float32), t) is None


@pytest.mark.parametrize(("k", "stride", "pool", "c_in"), [(3, 1, 2, 1), (3, 1, 2, 5), (2, 2, 2, 3), (3, 1, 3, 2)])
def test_pool_window_gemm_equals_im2col_then_max(k, stride, pool, c_in):
    rng = np.random.default_rng(k + stride + pool)
    x = rng.integers(-50, 50, (3, 14, 14, c_in)).astype(np.float32)
    w = rng.integers(-9, 9, (k, k, c_in, 4)).astype(np.float32)
    out = (14 - k) // stride + 1
    full = gemm.conv_im2col(x, w.reshape(-1, 4), (k, k), (stride, stride), (out, out))
    pooled = ops.max_pool(full, (pool, pool), (pool, pool))
    big = gemm.pool_window_weights(w, (k, k), (stride, stride), (pool, pool))
    ours = gemm.conv_pooled(x, big, (k, k), (stride, stride), (pool, pool), pooled.shape[1:3])
    np.testing.assert_array_equal(ours, pooled)


def test_groups_of_a_network():
    layers, weights, _ = _case(0)
    names = [[layer.name for layer in g.layers] for g in groups(Program(tuple(layers)), 1, 4)]
    assert names == [["conv", "bn", "act", "pool"]]


# --- whole networks: fused against plain ------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_graphs(tmp_path_factory):
    from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls
    from tests.conftest import zoo_model

    model = zoo_model("cnn-digits", 8, 8)
    out = {}
    for io, strategy in (("parallel", "Latency"), ("stream", "Resource")):
        options = HlsOptions.make(io=io, strategy=strategy)
        hls_model = convert(model, options, tmp_path_factory.mktemp(f"hls-{io}"))
        out[io] = (program_from_hls(hls_model), image_from_hls(hls_model))
    return out


@pytest.mark.parametrize("io", ["parallel", "stream"])
def test_network_fused_equals_plain_and_trace(digits_graphs, digits, io):
    program, image = digits_graphs[io]
    x = digits.x_test[:300]
    fast, plain = Emulator(program, image, chunk=64), Emulator(program, image, fused=False)
    assert fast.fused
    np.testing.assert_array_equal(fast.run(x), plain.run(x))
    traced = plain.trace(x)
    for name in program.names[1:]:
        np.testing.assert_array_equal(fast.run(x, upto=name), traced[name])
        start = traced[name].astype(np.int16 if np.abs(traced[name]).max() < 2**15 else np.int64)
        np.testing.assert_array_equal(fast.run_codes(start, start=name), plain.run_codes(traced[name], start=name))
    assert any(v is not None for v in fast._runner.cache.values())


def test_faulty_arrays_share_unchanged_groups(digits_graphs, digits):
    program, image = digits_graphs["parallel"]
    x = digits.x_test[:100]
    base = Emulator(program, image, threads=2, chunk=32)
    base.run(x)
    arr = image.get("conv2", "weight")
    words = arr.words.copy()
    words[:7] ^= np.uint64(1 << (arr.format.width - 1))  # sign bits: the largest change a flip makes
    faulty = image.replace_array(arr.with_words(words))
    other = base.with_arrays(faulty, {"conv2/weight"})
    np.testing.assert_array_equal(other.run(x), Emulator(program, faulty, fused=False).run(x))
    np.testing.assert_array_equal(base.run(x), Emulator(program, image, fused=False).run(x))


@pytest.mark.parametrize("seed", range(0, 120, 3))
def test_step_function_equals_its_integer_form_and_its_thresholds(seed):
    """float64 evaluation == int64 evaluation == MultiThreshold form (searchsorted), per channel."""
    layers, weights, x = _case(seed)
    fast, _ = _emulators(layers, weights)
    fast.run_codes(x[:2], "x", "pool")
    fns = [v.fn for v in fast._runner.cache.values() if v is not None]
    rng = np.random.default_rng(seed)
    for fn in fns:
        for c in range(len(fn.m)):
            ends = fn.exact(np.array([-fn.bound, fn.bound]), c) >> fn.j
            if abs(int(ends[1] - ends[0])) > MAX_LEVELS:
                continue  # a linear chain: too many thresholds to list
            t, base, sign = fn.thresholds(c)
            s = np.concatenate([rng.integers(-fn.bound, fn.bound + 1, 500), t - 1, t, t + 1, [-fn.bound, fn.bound]])
            s = np.clip(s, -fn.bound, fn.bound)
            columns = np.zeros((len(s), len(fn.m)))
            columns[:, c] = s
            exact = fn.exact(s, c)
            np.testing.assert_array_equal(fn(columns)[:, c].astype(np.int64), exact)
            np.testing.assert_array_equal((base + sign * np.searchsorted(t, s, side="right")) << fn.j, exact)


@pytest.mark.parametrize("seed", range(20))
def test_clip_zero_mode_runs_the_folding_prefix_fused(seed):
    """FT-ClipAct's zero mode is not monotone: conv + batch norm run fused, clip and pool plainly."""
    layers, weights, x = _case(3000 + seed)
    bn = layers[2]
    layers[3] = LayerSpec("act", Kind.CLIPACT, ("bn",), bn.output_shape, layers[3].result, None,
                          {"threshold": 1.5, "mode": "zero"})
    fast, plain = _emulators(layers, weights)
    np.testing.assert_array_equal(fast.run_codes(x, "x", "pool"), plain.run_codes(x, "x", "pool"))


@pytest.mark.parametrize("stored", ["weight", "bn"])
def test_float_stored_arrays_run_plain_and_equal(stored):
    """A float-stored array (the weight-scaling study) has no codes: its layer runs on the plain kernels."""
    layers, weights, x = _case(7)
    if stored == "weight":
        w = weights[("conv", "weight")]
        weights[("conv", "weight")] = Weights(None, None, w.type.to_float(w.codes) * 0.75)
    else:
        s = weights[("bn", "scale")]
        weights[("bn", "scale")] = Weights(None, None, s.type.to_float(s.codes) / 3.0)
        weights[("bn", "bias")] = Weights(None, None, np.full(s.codes.shape, 0.1))
    fast, plain = _emulators(layers, weights)
    np.testing.assert_array_equal(fast.run_codes(x, "x", "pool"), plain.run_codes(x, "x", "pool"))
    assert (stored == "bn") == any(v is not None for v in fast._runner.cache.values())  # conv alone still fuses


@pytest.mark.parametrize("use_compiled", [True, False], ids=["compiled", "numpy"])
@pytest.mark.parametrize("seed", range(30))
def test_conv1d_and_padded_pooling_equal_plain(seed, use_compiled):
    """Conv1D groups (pool-window GEMM or im2col), and a padded max pooling (kept on the plain kernel)."""
    layers, weights, x = _case(4000 + seed)
    rng = np.random.default_rng(seed)
    conv2d, pool2d = layers[1], layers[4]
    k, stride, pad = conv2d.attrs["filt_width"], conv2d.attrs["stride_width"], conv2d.attrs["pad_left"]
    c_in, c_out = x.shape[-1], conv2d.output_shape[-1]
    length = 13
    out = (length + 2 * pad - k) // stride + 1
    p, ps = pool2d.attrs["pool_width"], pool2d.attrs["stride_width"]
    ppad = int(seed % 3 == 0)
    pooled = (out + 2 * ppad - p) // ps + 1
    conv_attrs = {"filt_width": k, "stride_width": stride, "pad_left": pad, "pad_right": pad, "n_filt": c_out}
    pool_attrs = {"pool_width": p, "stride_width": ps, "pad_left": ppad, "pad_right": ppad, "pool_op": "Max"}
    layers = [
        LayerSpec("x", Kind.INPUT, (), (length, c_in), layers[0].result),
        LayerSpec("conv", Kind.CONV1D, ("x",), (out, c_out), conv2d.result, conv2d.accum, conv_attrs),
        LayerSpec("bn", Kind.BATCHNORM, ("conv",), (out, c_out), layers[2].result),
        LayerSpec("act", Kind.ACTIVATION, ("bn",), (out, c_out), layers[3].result, None, layers[3].attrs),
        LayerSpec("pool", Kind.POOL1D, ("act",), (pooled, c_out), pool2d.result, pool2d.accum, pool_attrs),
    ]
    w = weights[("conv", "weight")]
    weights[("conv", "weight")] = Weights(_codes(rng, w.type, (k * c_in, c_out)), w.type, None)
    x = _codes(rng, layers[0].result, (29, length, c_in))
    fast, plain = _emulators(layers, weights, use_compiled)
    for upto in ("conv", "act", "pool"):
        np.testing.assert_array_equal(fast.run_codes(x, "x", upto), plain.run_codes(x, "x", upto))
