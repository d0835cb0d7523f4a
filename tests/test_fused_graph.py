"""The fused path on graphs (residual networks) against the plain kernels, and the integer merges.

Every comparison is exact (assert_array_equal on codes) against ``Emulator(..., fused=False)``, the
reference that ``tests/test_layers_merge.py`` and the zoo tests hold to hls4ml's C simulation. The
random graphs put a branch (two readers), a shortcut convolution between a convolution and its
batch norm (as hls4ml orders resnet8), a zero padding before a convolution (io_stream's form),
every merge operation with random types, a concatenation, a chain with max pooling after a plain
layer, global pooling and a dense head in one network, in both io types.
"""

from __future__ import annotations

import numpy as np
import pytest

from hwflow.emulator import Emulator, Kind, LayerSpec, Program, compiled
from hwflow.emulator import merge as merge_kernels
from hwflow.emulator.compiled import merge_step
from hwflow.emulator.fused import FusedRunner, groups
from hwflow.emulator.run import Weights
from hwflow.errors import EmulatorError
from hwflow.fixed import FixedType, Overflow, Rounding

ROUNDINGS = list(Rounding)


def _type(rng, width: tuple[int, int], integer: tuple[int, int], signed=None, modes: bool = True) -> FixedType:
    w, i = int(rng.integers(*width)), int(rng.integers(*integer))
    s = bool(rng.integers(2)) if signed is None else signed
    if not modes:
        return FixedType(w, i, s)
    overflow = [Overflow.SAT, Overflow.WRAP, Overflow.SAT_SYM, Overflow.SAT_ZERO][int(rng.integers(4))]
    return FixedType(w, i, s, ROUNDINGS[int(rng.integers(len(ROUNDINGS)))], overflow)


def _codes(rng, t: FixedType, shape) -> np.ndarray:
    return rng.integers(t.min_code, t.max_code + 1, shape)


def _conv(k: int, pad: int, n_filt: int, stride: int = 1) -> dict:
    return {"filt_height": k, "filt_width": k, "stride_height": stride, "stride_width": stride, "pad_top": pad,
            "pad_bottom": pad, "pad_left": pad, "pad_right": pad, "n_filt": n_filt}


def _accum(x_t: FixedType, w_t: FixedType, width: int = 32) -> FixedType:
    """A wrapping accumulator that keeps every fractional bit (what the fused GEMM needs)."""
    frac = x_t.frac + w_t.frac
    return FixedType(width, width - frac, True, Rounding.TRN, Overflow.WRAP)


def random_graph(seed: int, io_type: str):
    """A residual network with random types and arrays: layers, arrays, input codes."""
    rng = np.random.default_rng(seed)
    c, size = int(rng.integers(1, 4)), 8
    x_t = _type(rng, (3, 9), (1, 4), modes=False)
    w_t = _type(rng, (2, 7), (0, 2), signed=True, modes=False)
    act_t = _type(rng, (3, 9), (1, 4), signed=False)
    bn_t = _type(rng, (12, 28), (6, 14))
    s_t, sb_t = FixedType(10, 3), FixedType(10, 4)
    op = merge_kernels.ELEMENTWISE[seed % len(merge_kernels.ELEMENTWISE)]
    shortcut_conv = bool(rng.integers(2))
    zero_pad = bool(rng.integers(2))
    sp = (size, size, c)
    layers = [LayerSpec("x", Kind.INPUT, (), sp, x_t)]
    if zero_pad:  # io_stream's padding: a layer of its own before the convolution
        pads = {"pad_top": 1, "pad_bottom": 1, "pad_left": 1, "pad_right": 1}
        layers.append(LayerSpec("zp", Kind.ZEROPAD2D, ("x",), (size + 2, size + 2, c), x_t, None, pads))
    acc1 = _accum(x_t, w_t)
    layers += [
        LayerSpec("conv1", Kind.CONV2D, (layers[-1].name,), sp, acc1, acc1, _conv(3, 0 if zero_pad else 1, c)),
        LayerSpec("bn1", Kind.BATCHNORM, ("conv1",), sp, bn_t),
        LayerSpec("relu1", Kind.ACTIVATION, ("bn1",), sp, act_t, None, {"activation": "relu"}),
    ]
    acc2 = _accum(act_t, w_t)
    bn2_t = _type(rng, (12, 28), (6, 14))
    layers.append(LayerSpec("conv2", Kind.CONV2D, ("relu1",), sp, acc2, acc2, _conv(3, 1, c)))
    short = "relu1"
    if shortcut_conv:  # between the convolution and its batch norm, as hls4ml orders resnet8
        layers.append(LayerSpec("short", Kind.CONV2D, ("relu1",), sp, acc2, acc2, _conv(1, 0, c)))
        short = "short"
    w = int(rng.integers(8, 34))  # at most 12 fractional bits: a cast to more overflows int64 (fixed.requantize)
    merge_t = FixedType(w, w - int(rng.integers(0, 12)), bool(rng.integers(2)), ROUNDINGS[int(rng.integers(7))],
                        [Overflow.SAT, Overflow.WRAP, Overflow.SAT_SYM, Overflow.SAT_ZERO][int(rng.integers(4))])
    if seed % 4 < 2 and op in ("add", "subtract"):  # hls4ml's own type: the exact sum (one compiled pass)
        merge_t = merge_kernels.sum_type(acc2 if shortcut_conv else act_t, bn2_t, op == "subtract")
    act2_t = _type(rng, (3, 9), (1, 4), signed=False)
    if seed % 4 < 2:  # a saturating ReLU (a wrapping one does not fold)
        act2_t = FixedType(act2_t.width, act2_t.integer, False, act2_t.rounding, Overflow.SAT)
    cat_t = _type(rng, (4, 12), (1, 6))
    layers += [
        LayerSpec("bn2", Kind.BATCHNORM, ("conv2",), sp, bn2_t),
        LayerSpec("merge", Kind.MERGE, (short, "bn2"), sp, merge_t, None, {"op": op}),
        LayerSpec("act", Kind.ACTIVATION, ("merge",), sp, act2_t, None, {"activation": "relu"}),
        LayerSpec("cat", Kind.CONCATENATE, ("act", "relu1"), (size, size, 2 * c), cat_t, None, {"concat_axis": 2}),
        LayerSpec("act3", Kind.ACTIVATION, ("cat",), (size, size, 2 * c), act_t, None, {"activation": "relu"}),
        LayerSpec("pool", Kind.POOL2D, ("act3",), (4, 4, 2 * c), act_t, act_t,
                  {"pool_height": 2, "pool_width": 2, "stride_height": 2, "stride_width": 2, "pad_top": 0,
                   "pad_bottom": 0, "pad_left": 0, "pad_right": 0, "pool_op": "Max"}),
        LayerSpec("gap", Kind.GLOBALPOOL2D, ("pool",), (2 * c,), act_t, FixedType(16, 8, False),
                  {"pool_op": "Max" if rng.integers(2) else "Average"}),
    ]
    acc3 = _accum(act_t, w_t)
    layers.append(LayerSpec("out", Kind.DENSE, ("gap",), (5,), acc3, acc3))
    weights = {}
    for layer in layers:
        if layer.kind is Kind.CONV2D:
            k = layer.attrs["filt_height"]
            weights[(layer.name, "weight")] = Weights(_codes(rng, w_t, (k * k * c, c)), w_t, None)
            weights[(layer.name, "bias")] = Weights(_codes(rng, w_t, c), w_t, None)
        elif layer.kind is Kind.BATCHNORM:
            scale = _codes(rng, s_t, c)
            scale[rng.random(c) < 0.2] = 0
            weights[(layer.name, "scale")] = Weights(scale, s_t, None)
            weights[(layer.name, "bias")] = Weights(_codes(rng, sb_t, c), sb_t, None)
    weights[("out", "weight")] = Weights(_codes(rng, w_t, (2 * c, 5)), w_t, None)
    weights[("out", "bias")] = Weights(_codes(rng, w_t, 5), w_t, None)
    return Program(tuple(layers), io_type), weights, _codes(rng, x_t, (23,) + sp)


def _emulator(program: Program, weights: dict, fused: bool, use_compiled: bool = True) -> Emulator:
    emu = object.__new__(Emulator)
    emu.program, emu.chunk, emu.fused, emu.threads, emu.image = program, 8, fused, 1, None
    emu._weights = dict(weights)
    emu._runner = FusedRunner(emu, use_compiled=use_compiled)
    return emu


@pytest.mark.parametrize("use_compiled", [True, False], ids=["compiled", "numpy"])
@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
@pytest.mark.parametrize("seed", range(24))
def test_random_graph_fused_equals_plain(seed, io_type, use_compiled):
    program, weights, x = random_graph(seed, io_type)
    fast, plain = _emulator(program, weights, True, use_compiled), _emulator(program, weights, False)
    traced = plain._run_chunk(x, None, True)
    np.testing.assert_array_equal(fast.run_codes(x, "x"), traced["out"])
    for name in program.names[1:]:  # every layer as a range's end: groups cut at each
        np.testing.assert_array_equal(fast.run_codes(x, "x", upto=name), traced[name], err_msg=name)
    for layer in program.layers[1:]:  # one layer from its inputs' codes, as the campaign's golden pass runs it
        given = {n: traced[n].astype(np.int64) for n in layer.inputs}
        ours = fast.run_values(given, layer.name, layer.name)
        np.testing.assert_array_equal(ours, traced[layer.name], err_msg=layer.name)
        np.testing.assert_array_equal(plain.run_values(given, layer.name, layer.name), traced[layer.name])
    given = {"relu1": traced["relu1"].astype(np.uint8 if traced["relu1"].max() < 256 else np.int64)}
    np.testing.assert_array_equal(fast.run_values(given, "conv2"), traced["out"])  # the rest of the network
    fast.threads = 2  # chunks of 8 samples on two threads, each writing its rows of the result
    np.testing.assert_array_equal(fast.run_values(given, "conv2"), traced["out"])
    np.testing.assert_array_equal(fast.run_values({n: traced[n] for n in ("short", "bn2") if n in traced} |
                                                  {"relu1": traced["relu1"]}, "merge", "merge"), traced["merge"])


def test_random_graphs_take_the_fast_path(monkeypatch):
    """The comparisons above must not pass by falling back: the convolution groups fuse, and the
    merges whose type is the exact sum run with the chain after them in one compiled pass."""
    calls = []
    monkeypatch.setattr(compiled, "merge_step", lambda *a: calls.append(1) or merge_step(*a))
    fused = 0
    for seed in range(24):
        program, weights, x = random_graph(seed, "io_stream")
        fast = _emulator(program, weights, True)
        fast.run_codes(x[:4], "x")
        fused += sum(v is not None for v in fast._runner.cache.values())
    assert fused > 24 * 3  # 3.8 groups per graph when written
    assert len(calls) >= 4  # 8 seeds of 24 have an exact Add or Subtract


def test_graph_groups_follow_the_one_reader():
    program, _, _ = random_graph(0, "io_stream")  # seed 0: a shortcut convolution and a zero padding
    names = [[layer.name for layer in g.layers] for g in groups(program, 1, len(program.layers) - 1)]
    assert names == [["conv1", "bn1", "relu1"], ["conv2", "bn2"], ["short"], ["merge", "act"], ["cat"],
                     ["act3", "pool"], ["gap"], ["out"]]  # the Add's type is its exact sum: it heads a chain
    head = groups(program, 1, len(program.layers) - 1)[0].head
    assert head.inputs == ("x",)  # the zero padding folded into conv1
    assert head.attrs["pad_top"] == 1
    assert [layer.name for g in groups(program, 1, 1) for layer in g.layers] == ["zp"]  # alone: plain


def test_run_values_names_a_missing_input():
    program, weights, x = random_graph(0, "io_parallel")
    fast = _emulator(program, weights, True)
    with pytest.raises(EmulatorError, match="the codes of bn2, relu1 .* are missing"):
        fast.run_values({"short": x}, "merge")


@pytest.mark.parametrize("seed", range(60))
def test_integer_merges_equal_the_float_kernels(seed):
    rng = np.random.default_rng(seed)
    ta, tb = _type(rng, (2, 30), (-2, 16)), _type(rng, (2, 30), (-2, 16))
    result = _type(rng, (2, 40), (-2, 20))
    frac = min(result.frac, max(ta.frac, tb.frac) + 4)  # no cast that shifts a code past int64 (fixed.requantize)
    result = FixedType(result.width, result.width - frac, result.signed, result.rounding, result.overflow)
    a, b = _codes(rng, ta, 500), _codes(rng, tb, 500)
    for op in merge_kernels.ELEMENTWISE:
        ours = merge_kernels.elementwise_int(op, a, ta, b, tb, result)
        assert ours.dtype == np.int64
        np.testing.assert_array_equal(ours, merge_kernels.elementwise(op, a, ta, b, tb, result), err_msg=op)
    layer = LayerSpec("c", Kind.CONCATENATE, ("a", "b"), (1000,), result, None, {"concat_axis": 0})
    np.testing.assert_array_equal(merge_kernels.concatenate_int(layer, [a[None], b[None]], [ta, tb]),
                                  merge_kernels.concatenate_op(None, layer, [a[None], b[None]], [ta, tb]))


# --- the zoo's graphs: fused against plain ----------------------------------------------------------


ZOO = [("resnet8", "parallel"), ("resnet8", "stream"), ("rn07", "parallel"), ("ds-cnn", "stream")]


@pytest.fixture(scope="module")
def zoo_graphs(tmp_path_factory):
    from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls
    from tests.conftest import zoo_model

    out = {}
    for name, io in ZOO:
        hls_model = convert(zoo_model(name, 8, 8), HlsOptions.make(io), tmp_path_factory.mktemp(f"{name}-{io}"))
        out[(name, io)] = (program_from_hls(hls_model), image_from_hls(hls_model))
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("name", "io"), ZOO)
def test_zoo_graph_fused_equals_plain(zoo_graphs, name, io):
    program, image = zoo_graphs[(name, io)]
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 2, (40,) + tuple(program.input.output_shape)).astype(np.float32)
    fast, plain = Emulator(program, image, chunk=16), Emulator(program, image, fused=False)
    traced = plain.trace(x)
    np.testing.assert_array_equal(fast.run(x), traced[program.output.name])
    for layer in program.layers[1:]:
        given = {n: traced[n] for n in layer.inputs}
        np.testing.assert_array_equal(fast.run_values(given, layer.name, layer.name), traced[layer.name],
                                      err_msg=layer.name)
    assert any(v is not None for v in fast._runner.cache.values())


@pytest.mark.slow
def test_golden_pass_on_resnet8_equals_the_plain_trace(zoo_graphs):
    """The campaign's fault-free pass (``Golden``, graph branch through ``run_values``) keeps exact codes."""
    from hwflow.campaign import TrialEvaluator
    from hwflow.campaign.delta.state import take

    program, image = zoo_graphs[("resnet8", "stream")]
    x = np.random.default_rng(1).uniform(-1, 2, (30,) + tuple(program.input.output_shape)).astype(np.float32)
    evaluator = TrialEvaluator(program, image, x, np.zeros(len(x), dtype=int))
    traced = Emulator(program, image, fused=False).trace(x)
    kept = [name for name in program.names if evaluator.store.has(name)]
    assert {"relu1", "s1_relu", "s2_shortcut", "s2_relu", "out"} <= set(kept)  # a merge reads each
    for name in kept:
        np.testing.assert_array_equal(take(evaluator.store[name], None, None), traced[name], err_msg=name)


@pytest.mark.parametrize("channels", [3, 16])
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_merge_step_kernel_equals_its_reference(rounding, channels):
    """``compiled.merge_step`` (numba) against ``merge_step_ref`` (int64 numpy), every rounding and its ties."""
    from hwflow.emulator import step as steps

    rng = np.random.default_rng(channels)
    a = rng.integers(0, 256, (300, channels)).astype(np.uint8)
    b = rng.integers(-2**30, 2**30, (300, channels))
    state = steps.start_codes(FixedType(44, 22), channels)
    steps.relu(state, FixedType(8, 3, False, rounding, Overflow.SAT))
    p = compiled.step_params(steps.finish(state))
    for minus in (False, True):
        ours = compiled.merge_step(a, b, 17, 0, minus, p, np.empty(a.shape, np.uint8))
        ref = compiled.merge_step_ref(a, b, 17, 0, minus, p, np.empty(a.shape, np.int64))
        np.testing.assert_array_equal(ours, ref)
        total = (a.astype(np.int64) << 17) + (-1 if minus else 1) * b
        np.testing.assert_array_equal(ref, compiled.step_ref(total, p))
    assert len(np.unique(ref)) > 10
