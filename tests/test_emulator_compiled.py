"""The compiled (numba) kernels of the fused path against their numpy references, bit for bit.

The references are anchored to ``step.StepFunction.exact`` (the integer form of the step function,
itself tested against the plain layer kernels in ``test_fused``); the compiled kernels are checked
against the references on random codes and step functions: every rounding mode, remainders that
hit every tie, saturation at both ends, negative and zero slopes, shifted outputs, both GEMM output
layouts, the shape-specialized kernels and the generic one, and every output dtype. End to end, a
network on the compiled path equals the numpy fused path and the plain path.
"""

from __future__ import annotations

import numpy as np
import pytest

from hwflow.emulator import Emulator, Kind, LayerSpec, Program, compiled, gemm, ops
from hwflow.emulator.fused import FusedRunner
from hwflow.emulator.run import Weights
from hwflow.emulator.step import StepFunction
from hwflow.fixed import FixedType, Overflow, Rounding


def _step_function(rng, channels: int, rounding: Rounding | None, bound: int, unsigned8: bool = False) -> StepFunction:
    """A random step function: slopes of both signs (and zero), clamps that bite, a shift ``j``.

    ``unsigned8``: outputs in ``[0, 255]`` (a ReLU into an 8-bit unsigned type).
    """
    m = rng.integers(-3000, 3000, channels)
    m[rng.random(channels) < 0.2] = 0
    m[: max(1, channels // 4)] = rng.choice([-1, 1], max(1, channels // 4))  # unit slope: every remainder
    k = int(rng.integers(1, 14)) if rounding is not None else 0
    q = rng.integers(-(1 << (k + 8)), 1 << (k + 8), channels)
    lo = rng.integers(0, 50, channels) if unsigned8 else rng.integers(-300, 0, channels)
    hi = lo + rng.integers(0, 200 if unsigned8 else 600, channels)
    j = 0 if unsigned8 else int(rng.integers(0, 3))
    return StepFunction(tuple(int(v) for v in m), tuple(int(v) for v in q), k, rounding,
                        tuple(int(v) for v in lo), tuple(int(v) for v in hi), j, bound)


def _fits(dtype, fn: StepFunction) -> bool:
    lo, hi = fn.out_range()
    if np.dtype(dtype).kind == "f":
        return True
    info = np.iinfo(dtype)
    return info.min <= lo and hi <= info.max


@pytest.mark.parametrize("rounding", [*Rounding, None])
def test_step_reference_equals_step_function_exact(rounding):
    rng = np.random.default_rng(len(str(rounding)))
    for trial in range(20):
        fn = _step_function(rng, 5, rounding, 4000)
        sign = rng.choice([-1, 1], 5) if trial % 2 else None
        s = np.arange(-4000, 4001, dtype=np.int64)[:, None].repeat(5, axis=1)
        ours = compiled.step_ref(s, compiled.step_params(fn, sign))
        for c in range(5):
            at = s[:, c] * (1 if sign is None else int(sign[c]))
            np.testing.assert_array_equal(ours[:, c], fn.exact(at, c))


# (pool, GEMM output dtype, column blocks, output dtype): a fixed set, so that the kernels compile once
TRIALS = [(1, np.float32, False, np.int16), (4, np.float32, True, np.uint8), (4, np.float64, False, np.int32),
          (9, np.int32, True, np.int64), (2, np.float32, False, np.float64), (4, np.float32, False, np.uint8)]


@pytest.mark.parametrize("channels", [3, 16])  # the generic kernel and a shape-specialized one
@pytest.mark.parametrize("rounding", [*Rounding, None])
def test_max_step_compiled_equals_reference(rounding, channels):
    rng = np.random.default_rng(channels * 7 + len(str(rounding)))
    for trial, (pool, dtype, cols, out_dtype) in enumerate(TRIALS):
        fn = _step_function(rng, channels, rounding, 1 << 16, unsigned8=out_dtype is np.uint8)
        assert _fits(out_dtype, fn)
        params = compiled.step_params(fn, rng.choice([-1, 1], channels) if trial % 2 else None)
        rows = int(rng.integers(1, 300))
        shape = (rows, pool * channels) if cols else (pool * rows, channels)
        y = rng.integers(-(1 << 16), 1 << 16, shape).astype(dtype)
        row_step, col_step = (0, channels) if cols else (rows, 0)
        want = compiled.max_step_ref(y, pool, row_step, col_step, params, np.empty((rows, channels), out_dtype))
        got = compiled.max_step(y, pool, row_step, col_step, params, np.empty((rows, channels), out_dtype))
        assert compiled.enabled()
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(want.astype(np.int64),
                                      compiled.step_ref(_window_max(y, pool, rows, channels, cols), params))


def _window_max(y, pool, rows, channels, cols):
    blocks = y.reshape(rows, pool, channels) if cols else y.reshape(pool, rows, channels).transpose(1, 0, 2)
    return blocks.max(axis=1)


@pytest.mark.parametrize(("c_in", "kernel", "stride", "pool", "windows_first"),
                         [(1, 3, 1, 2, True), (1, 3, 1, 2, False), (3, 2, 2, 2, False), (8, 3, 1, 3, False),
                          (2, 1, 1, 1, False), (16, 3, 2, 2, False)])
def test_gather_compiled_equals_reference_and_im2col(c_in, kernel, stride, pool, windows_first):
    rng = np.random.default_rng(c_in * 31 + kernel)
    n, size = 3, 13
    x = rng.integers(-100, 100, (n, size, size, c_in)).astype([np.float32, np.int16, np.uint8][c_in % 3]
                                                               if c_in != 16 else np.int8)
    x3 = x.reshape(n, size, -1)
    out = (size - kernel) // stride + 1
    grid = ((out - pool) // pool + 1,) * 2
    if windows_first:  # one window per pooled output: the pool-window patch
        patch = (pool - 1) * stride + kernel
        wsize, step, offsets = (patch, patch), (pool * stride,) * 2, np.zeros((1, 2), np.int64)
    else:
        wsize, step = (kernel, kernel), (pool * stride,) * 2
        offsets = np.array([(dy * stride, dx * stride) for dy in range(pool) for dx in range(pool)], np.int64)
    k = wsize[0] * wsize[1] * c_in
    total = n * grid[0] * grid[1]
    for start, count in ((0, total), (5, total - 9)):
        want = compiled.gather_ref(x3, np.empty((len(offsets), count, k), np.float32), start, grid, wsize, step,
                                   offsets)
        got = compiled.gather(x3, np.empty((len(offsets), count, k), np.float32), start, grid, wsize, step, offsets)
        np.testing.assert_array_equal(got, want)
        for t, (oy, ox) in enumerate(offsets):  # window t of each position is the numpy path's im2col row
            full = gemm._windows(x[:, oy:, ox:], wsize, step, grid, np.float32).reshape(total, k)
            np.testing.assert_array_equal(want[t], full[start : start + count])


def test_conv_group_equals_im2col_max_pool_and_step():
    rng = np.random.default_rng(5)
    c_in, c_out, kernel, pool = 2, 16, 3, 2
    x = rng.integers(-60, 60, (7, 12, 12, c_in)).astype(np.float32)
    w = rng.integers(-20, 20, (kernel * kernel * c_in, c_out)).astype(np.float32)
    fn = _step_function(rng, c_out, Rounding.RND_CONV, 60 * 20 * kernel * kernel * c_in)
    params = compiled.step_params(fn)
    full = gemm.conv_im2col(x, w, (kernel, kernel), (1, 1), (10, 10))
    want = compiled.step_ref(ops.max_pool(full, (pool, pool), (pool, pool)), params)
    offsets = np.array([(0, 0), (0, 1), (1, 0), (1, 1)], np.int64)
    rows = compiled.ConvPlan(w, (5, 5), (3, 3), (2, 2), offsets, 4, "rows", params)
    big = gemm.pool_window_weights(w.reshape(kernel, kernel, c_in, c_out), (3, 3), (1, 1), (2, 2))
    cols = compiled.ConvPlan(big, (5, 5), (4, 4), (2, 2), np.zeros((1, 2), np.int64), 4, "cols", params)
    for plan in (rows, cols):
        np.testing.assert_array_equal(compiled.conv_group(x, plan, np.int32), want)


def test_switched_off_by_the_environment_and_without_numba(monkeypatch):
    assert compiled.enabled()
    monkeypatch.setenv("HWFLOW_NO_NUMBA", "1")
    assert not compiled.enabled()
    monkeypatch.delenv("HWFLOW_NO_NUMBA")
    monkeypatch.setattr(compiled, "numba", None)  # as when numba cannot import
    assert not compiled.enabled()

    def refuse(*_):
        msg = "a compiled kernel ran while numba is off"
        raise AssertionError(msg)

    monkeypatch.setattr(compiled, "_max_step_kernel", refuse)
    monkeypatch.setattr(compiled, "_gather_kernel", refuse)
    fast, plain = _network(np.random.default_rng(2))
    x = np.random.default_rng(3).integers(0, 64, (40, 10, 10, 1))
    np.testing.assert_array_equal(fast.run_codes(x, "x"), plain.run_codes(x, "x"))


def _network(rng) -> tuple[Emulator, Emulator]:
    """conv(16) -> relu -> pool -> conv(8) -> relu -> dense: every compiled plan, fused and plain."""
    x_t, w_t = FixedType(8, 6, False), FixedType(6, 1)
    acc = FixedType(32, 20)  # frac 12 >= the products (7 and 10): nothing rounds or wraps in the accumulator
    relu_t = FixedType(8, 3, False, Rounding.RND_CONV, Overflow.SAT)
    conv = {"filt_height": 3, "filt_width": 3, "stride_height": 1, "stride_width": 1, "pad_top": 1,
            "pad_bottom": 1, "pad_left": 1, "pad_right": 1}
    pool = {"pool_height": 2, "pool_width": 2, "stride_height": 2, "stride_width": 2, "pad_top": 0,
            "pad_bottom": 0, "pad_left": 0, "pad_right": 0, "pool_op": "Max"}
    layers = [
        LayerSpec("x", Kind.INPUT, (), (10, 10, 1), x_t),
        LayerSpec("c1", Kind.CONV2D, ("x",), (10, 10, 16), acc, acc, {**conv, "n_filt": 16}),
        LayerSpec("r1", Kind.ACTIVATION, ("c1",), (10, 10, 16), relu_t, None, {"activation": "relu"}),
        LayerSpec("p1", Kind.POOL2D, ("r1",), (5, 5, 16), relu_t, relu_t, pool),
        LayerSpec("c2", Kind.CONV2D, ("p1",), (5, 5, 8), acc, acc, {**conv, "n_filt": 8}),
        LayerSpec("r2", Kind.ACTIVATION, ("c2",), (5, 5, 8), relu_t, None, {"activation": "relu"}),
        LayerSpec("f", Kind.RESHAPE, ("r2",), (200,), relu_t),
        LayerSpec("d", Kind.DENSE, ("f",), (16,), acc, acc),
    ]
    weights = {
        ("c1", "weight"): Weights(rng.integers(-32, 32, (9, 16)), w_t, None),
        ("c1", "bias"): Weights(rng.integers(-32, 32, 16), w_t, None),
        ("c2", "weight"): Weights(rng.integers(-32, 32, (144, 8)), w_t, None),
        ("d", "weight"): Weights(rng.integers(-32, 32, (200, 16)), w_t, None),
    }
    out = []
    for fused in (True, False):
        emu = object.__new__(Emulator)
        emu.program, emu.chunk, emu.fused, emu.threads, emu.image = Program(tuple(layers)), 16, fused, 1, None
        emu._weights = dict(weights)
        emu._runner = FusedRunner(emu)
        out.append(emu)
    return out[0], out[1]


def test_network_on_compiled_kernels_equals_numpy_fused_and_plain(monkeypatch):
    fast, plain = _network(np.random.default_rng(0))
    x = np.random.default_rng(1).integers(0, 256, (70, 10, 10, 1))
    calls = []
    conv_group = compiled.conv_group
    monkeypatch.setattr(compiled, "conv_group", lambda *a: calls.append(a[1]) or conv_group(*a))
    ours = fast.run_codes(x, "x")
    assert {p.layout for p in calls} == {"cols", "rows"}  # the pool-window plan and the plain conv plan
    numpy_path = FusedRunner(fast, use_compiled=False).run(x, fast.program.input.result, 1, 7).astype(np.int64)
    np.testing.assert_array_equal(ours, plain.run_codes(x, "x"))
    np.testing.assert_array_equal(ours, numpy_path)

