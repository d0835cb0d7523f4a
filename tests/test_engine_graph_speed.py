"""The engine's fast path on residual networks: per-channel runs folded without a pool, and merges in
integer arithmetic (``delta.chain``, ``delta.int_kernels``, ``delta.merge.integer_delta``).

The kernels against their numpy references and against the emulator's merge (random codes, every type
shape a merge can meet: rounding and overflow modes, signedness, widths up to the emulator's 62 bits),
then the rules against the traced difference of two full emulations, then the engine against full
emulation on seeded fault maps (rates 1e-5..1e-2, bit flips and stuck-at, batch-norm words included)
on a small residual model holding every elementwise merge, in io_parallel and io_stream, and on the
resnet8 zoo topology with a few images.
"""

from __future__ import annotations

import tempfile
from types import SimpleNamespace

import numpy as np
import pytest

from hwflow.campaign import TrialEvaluator
from hwflow.campaign.delta import Block, compiled, int_kernels, rule_for
from hwflow.campaign.delta.chain import FoldedChain, PendingStep, longest_fold, runs
from hwflow.campaign.delta.pooling import Pool
from hwflow.campaign.delta.state import apply, trim
from hwflow.emulator import Emulator, Kind
from hwflow.emulator.merge import elementwise
from hwflow.emulator.pooling import _exact
from hwflow.emulator.run import Weights
from hwflow.emulator.step import StepFunction
from hwflow.errors import EmulatorError
from hwflow.faults import fault_model_from_spec
from hwflow.fixed import FixedType, Overflow, Rounding
from tests.conftest import random_bn_statistics, traced_difference, zoo_model

needs_numba = pytest.mark.skipif(not compiled.HAVE_NUMBA, reason="the compiled kernels need numba")

SAMPLES = 40
OPS = ("add", "subtract", "average", "multiply", "maximum", "minimum")


# --- the kernels ------------------------------------------------------------------------------------


def _random_type(rng, max_width: int = 24) -> FixedType:
    width = int(rng.integers(2, max_width + 1))
    return FixedType(width, int(rng.integers(-2, width + 3)), bool(rng.integers(0, 2)),
                     list(Rounding)[rng.integers(0, len(Rounding))], list(Overflow)[rng.integers(0, len(Overflow))])


def _codes(rng, t: FixedType, shape) -> np.ndarray:
    return rng.integers(t.min_code, t.max_code + 1, shape, dtype=np.int64)


@needs_numba
def test_merge_kernel_equals_the_emulators_merge_on_random_types():
    """Every op, random input and result types (every rounding and overflow mode, up to 62-bit
    intermediates), blocks covering part of the samples and channels: the kernel, its numpy reference
    and ``hwflow.emulator.merge.elementwise`` give the same codes."""
    rng = np.random.default_rng(0)
    n, p, c = 9, 5, 6
    checked = set()
    for trial in range(240):
        op = OPS[trial % len(OPS)]
        ta, tb = _random_type(rng, 30 if trial % 3 else 12), _random_type(rng, 30 if trial % 3 else 12)
        result = _random_type(rng, 40)
        try:
            plan = int_kernels.MergePlan(op, ta, tb, result)
        except EmulatorError:  # an intermediate over 62 bits: refused as the emulator refuses it
            with pytest.raises(EmulatorError):
                elementwise(op, np.zeros(1), ta, np.zeros(1), tb, result)
            continue
        ga, gb = _codes(rng, ta, (n, p, c)), _codes(rng, tb, (n, p, c))
        samples = np.sort(rng.choice(n, 5, replace=False))
        channels = np.sort(rng.choice(c, 4, replace=False))
        # block A holds samples 0, 2, 4 of the group on its first three channels, block B every sample, one channel
        va = _codes(rng, ta, (3, p, 3)).astype(np.float64)  # float64 codes, as numpy rules carry them
        ra = np.array([0, -1, 1, -1, 2])
        pa = np.array([0, 1, 2, -1])
        vb = np.moveaxis(_codes(rng, tb, (1, 5, p)), 0, -1).astype(np.int32)  # channel-first memory
        rb = np.arange(5)
        pb = np.array([-1, -1, 0, -1])
        a = ga[samples][..., channels].copy()
        a[np.ix_([0, 2, 4], range(p), [0, 1, 2])] = va
        b = gb[samples][..., channels].copy()
        b[..., 2] = vb[..., 0]
        expected = elementwise(op, a, ta, b, tb, result)
        for numba_on in (True, False):
            out = np.empty((5, p, 4), dtype=np.int64)
            with compiled.use_numba(numba_on):
                int_kernels.merge_codes(plan, ga, va, ra, pa, gb, vb, rb, pb, samples, channels, out)
            np.testing.assert_array_equal(out, expected, err_msg=f"{op} {ta} {tb} {result} numba={numba_on}")
        checked.add((op, result.overflow, result.rounding))
    assert {op for op, _, _ in checked} == set(OPS)
    assert len({(o, r) for _, o, r in checked}) >= 20


def _random_fold(rng, c: int) -> tuple[FoldedChain, StepFunction]:
    """A random exact step function (``hwflow.emulator.step``) and its folded form."""
    k = int(rng.integers(0, 6))
    rounding = list(Rounding)[rng.integers(0, len(Rounding))] if k else None
    m = tuple(int(v) for v in rng.integers(-40, 41, c))
    q = tuple(int(v) for v in rng.integers(-3000, 3000, c))
    lo = tuple(int(v) for v in rng.integers(-300, 0, c))
    hi = tuple(int(v) for v in rng.integers(1, 300, c))
    fn = StepFunction(m, q, k, rounding, lo, hi, int(rng.integers(0, 3)), 2**12, lo, hi)
    bound = fn.bind(None, False)
    from hwflow.campaign.delta.compiled import ROUNDING_CODES

    folded = FoldedChain(0, 1, bound.alpha, bound.beta, ROUNDING_CODES[bound.rounding], np.asarray(lo, float),
                         np.asarray(hi, float), float(bound.scale or 0.0), FixedType(16, 16))
    return folded, fn


@needs_numba
def test_step_codes_kernel_equals_the_exact_step_function():
    """The folded chain's kernel (both memory layouts, few and many positions per sample, every rounding mode,
    clamps, a scale) writes the codes ``StepFunction.exact`` computes in int64, on blocks of some channels."""
    rng = np.random.default_rng(1)
    for trial in range(40):
        c = 5
        folded, fn = _random_fold(rng, c)
        # few positions per sample (stepped as rows over the samples), many (plane by plane), a Dense block
        shape = ((7, 3, 4, c), (7, 6, 6, c), (7, c))[trial % 3]
        s = rng.integers(-2**12, 2**12 + 1, shape)
        expected = np.stack([fn.exact(s[..., ch], ch) for ch in range(c)], axis=-1)
        channel_first = np.moveaxis(np.ascontiguousarray(np.moveaxis(s, -1, 0)).astype(np.float32), 0, -1)
        for values in (s, channel_first):
            for numba_on in (True, False):
                with compiled.use_numba(numba_on):
                    got = folded.apply([Block(np.arange(7), np.arange(c), values)])[0].values
                np.testing.assert_array_equal(got, expected, err_msg=f"{trial} numba={numba_on}")
                assert got.dtype == np.int16
        some = np.array([1, 3])
        got = folded.apply([Block(np.arange(7), some, np.ascontiguousarray(s[..., some]))])[0].values
        np.testing.assert_array_equal(got, expected[..., some])


@needs_numba
def test_merge_kernel_runs_the_chains_before_and_after_it():
    """``pre_b`` / ``post`` in the kernel equal the chain applied apart, the merge, then the chain after it."""
    rng = np.random.default_rng(2)
    n, p, c = 6, 4, 5
    ta, tb, result = FixedType(10, 4), FixedType(16, 16), FixedType(20, 12, True, Rounding.RND, Overflow.SAT)
    pre, _ = _random_fold(rng, c)
    post, _ = _random_fold(rng, c)
    ga, gb = _codes(rng, ta, (n, p, c)), _codes(rng, tb, (n, p, c))
    raw = rng.integers(-2**12, 2**12 + 1, (n, p, c))
    stepped = pre.apply([Block(np.arange(n), np.arange(c), raw)])[0].values
    merged = elementwise("add", ga, ta, stepped, tb, result).astype(np.int64)
    expected = post.apply([Block(np.arange(n), np.arange(c), merged)])[0].values
    plan = int_kernels.MergePlan("add", ta, tb, result)
    out = np.empty((n, p, c), dtype=np.int16)
    every = np.arange(n)
    int_kernels.merge_codes(plan, ga, np.zeros((1, 1, 1)), np.full(n, -1), np.full(c, -1), gb, raw, every,
                            np.arange(c), every, np.arange(c), out, None, pre, post)
    np.testing.assert_array_equal(out, expected)
    with compiled.use_numba(False), pytest.raises(EmulatorError, match="compiled kernel only"):
        int_kernels.merge_codes(plan, ga, ga, every, np.arange(c), gb, gb, every, np.arange(c), every,
                                np.arange(c), out, None, pre, None)


def test_average_pool_rule_equals_the_emulators_pooling():
    """Tiling windows (one dividing the plane, one leaving cells out), both io types, an exact and a saturating
    accumulator (the emulator's kernel then): the rule's blocks equal ``pooling.average_pool`` on them."""
    from hwflow.emulator import LayerSpec, Program
    from hwflow.emulator.pooling import average_pool

    rng = np.random.default_rng(3)
    x_type = FixedType(8, 3, False, Rounding.RND_CONV, Overflow.SAT)
    result = FixedType(8, 3, False, Rounding.RND_CONV, Overflow.SAT)
    for (h, w), (kh, kw) in (((8, 8), (8, 8)), ((9, 7), (2, 3))):
        for accum in (FixedType(20, 9, False), FixedType(9, 5, False, Rounding.TRN, Overflow.SAT)):
            for io in ("io_parallel", "io_stream"):
                attrs = {"pool_op": "Average", "pool_height": kh, "pool_width": kw, "stride_height": kh,
                         "stride_width": kw, "pad_top": 0, "pad_left": 0, "pad_bottom": 0, "pad_right": 0}
                pool = LayerSpec("pool", Kind.POOL2D, ("x",), (h // kh, w // kw, 3), result, accum, attrs)
                program = Program((LayerSpec("x", Kind.INPUT, (), (h, w, 3), x_type), pool), io)
                codes = rng.integers(0, 256, (5, h, w, 3)).astype(np.uint8)
                step = SimpleNamespace(layer=pool, x_type=x_type, inputs=[Block(np.arange(5), np.arange(3), codes)],
                                       emulator=Emulator(program, _empty_image()))
                got = Pool().delta(step)[0].values
                np.testing.assert_array_equal(got, average_pool(pool, codes, x_type, io), err_msg=f"{accum} {io}")


def _empty_image():
    from hwflow.image import WeightImage

    return WeightImage([])


# --- a small residual network holding every elementwise merge ---------------------------------------


def _q():
    from qkeras import quantized_bits

    return {"kernel_quantizer": quantized_bits(8, 0, alpha=1), "bias_quantizer": quantized_bits(8, 0, alpha=1)}


def residual_net(seed: int = 0):
    """conv-bn-relu, a residual block with an identity shortcut, one with a strided 1x1 shortcut, then
    Subtract, Multiply, Average, Maximum and Minimum of branches (each merge followed by a ReLU or a batch
    norm, or read twice), a global average pool and a dense layer."""
    import tensorflow as tf
    from qkeras import QActivation, QConv2D, QDense, quantized_bits, quantized_relu

    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    relu = quantized_relu(8, 3)
    inp = layers.Input((8, 8, 3), name="x")

    def conv(name, filters, kernel=3, strides=1):
        return QConv2D(filters, kernel, strides=strides, padding="same", name=name, **_q())

    r1 = QActivation(relu, name="relu1")(layers.BatchNormalization(name="bn1")(conv("conv1", 6)(inp)))
    y = QActivation(relu, name="s1_relu1")(layers.BatchNormalization(name="s1_bn1")(conv("s1_conv1", 6)(r1)))
    y = layers.BatchNormalization(name="s1_bn2")(conv("s1_conv2", 6)(y))
    a1 = QActivation(relu, name="s1_relu")(layers.Add(name="s1_add")([r1, y]))
    y = QActivation(relu, name="s2_relu1")(layers.BatchNormalization(name="s2_bn1")(conv("s2_conv1", 8, 3, 2)(a1)))
    y = layers.BatchNormalization(name="s2_bn2")(conv("s2_conv2", 8)(y))
    a2 = QActivation(relu, name="s2_relu")(layers.Add(name="s2_add")([conv("s2_short", 8, 1, 2)(a1), y]))
    b1 = layers.BatchNormalization(name="b1_bn")(conv("b1", 8, 1)(a2))
    sub = layers.Subtract(name="sub")([a2, b1])  # read by the Multiply's branch and the Maximum: a branch
    narrow = QActivation(quantized_bits(8, 2), name="narrow")(sub)
    mul = QActivation(quantized_bits(10, 4), name="qmul")(layers.Multiply(name="mul")([narrow, a2]))
    avg = layers.BatchNormalization(name="avg_bn")(layers.Average(name="avg")([mul, a2]))
    mx = QActivation(relu, name="max_relu")(layers.Maximum(name="max")([avg, sub]))
    mn = layers.Minimum(name="min")([mx, a2])
    pooled = layers.AveragePooling2D(4, name="pool")(mn)
    out = QDense(5, name="out", **_q())(layers.Flatten(name="flat")(pooled))
    return random_bn_statistics(tf.keras.Model(inp, out, name="residual"), seed)


def _convert(model, io: str):
    from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls

    with tempfile.TemporaryDirectory() as tmp:
        hls = convert(model, HlsOptions.make(io), tmp)
        return program_from_hls(hls), image_from_hls(hls)


@pytest.fixture(scope="module")
def nets():
    model = residual_net()
    return {io: _convert(model, io) for io in ("parallel", "stream")}


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).uniform(-1, 2, (SAMPLES, 8, 8, 3)).astype(np.float32)


SPECS = [{"model": "bitflip"}, {"model": "stuck-at", "value": "mixed"}, {"model": "stuck-at", "value": 1},
         {"model": "bitflip", "bits": ["msb"]}]
RATES = [1e-5, 1e-4, 1e-3, 3e-3, 1e-2]


class Spy:
    """Counts the folded chains applied and the merges run with a chain before or after them."""

    def __init__(self, monkeypatch):
        self.folds = self.pre = self.post = 0
        apply_fold, merge_codes = FoldedChain.apply, int_kernels.merge_codes

        def fold(chain, delta, lazy=False):
            self.folds += 1
            return apply_fold(chain, delta, lazy)

        def merge(*args):
            self.pre += any(a is not None for a in args[12:14])
            self.post += len(args) > 14 and args[14] is not None
            return merge_codes(*args)

        monkeypatch.setattr(FoldedChain, "apply", fold)
        monkeypatch.setattr(int_kernels, "merge_codes", merge)


def _check(program, image, x, maps, dense=None) -> int:
    """Every trial's output codes and outcome equal full emulation. ``dense=None`` (the default here): the delta
    rules run to the output, as these tests spy on them; a share: dense trials rerun fused (``_rerun``)."""
    y = np.random.default_rng(3).integers(0, 5, len(x))
    evaluator = TrialEvaluator(program, image, x, y, chunk=16, golden_cache=None, dense=dense)
    hurt = 0
    for i, faultmap in enumerate(maps):
        reference = Emulator(program, faultmap.apply(image)).run(x)
        np.testing.assert_array_equal(evaluator.output_codes(faultmap), reference, err_msg=str(i))
        outcome = evaluator.evaluate(faultmap)
        assert outcome == evaluator.full_evaluate(faultmap, x), i
        hurt += outcome.mismatches > 0
    return hurt


def test_the_runs_of_the_residual_net_fold(nets):
    """Every batch norm / ReLU run folds (the Add's branch input and the batch norm before a merge included)."""
    program, image = nets["stream"]
    clean = {(a.layer, a.name): Weights.of(a) for a in image}
    names = program.names
    found = {names[start]: names[stop - 1] for start, stop in runs(program).items()}
    assert found["bn1"] == "relu1"
    assert found["s1_bn1"] == "s1_relu1"
    assert found["s2_bn2"] == "s2_bn2"
    assert found["s1_relu"] == "s1_relu"
    assert found["max_relu"] == "max_relu"
    for start, stop in runs(program).items():
        assert longest_fold(program, start, stop, clean) is not None, names[start]


@needs_numba
@pytest.mark.parametrize("io", ["parallel", "stream"])
def test_engine_equals_full_emulation_on_the_residual_net(nets, x, io, monkeypatch):
    program, image = nets[io]
    rng = np.random.default_rng(len(io))
    maps = [fault_model_from_spec(SPECS[i % len(SPECS)], RATES[(i // len(SPECS)) % len(RATES)]).sample(image, rng)
            for i in range(20)]
    convs = tuple(a.layer for a in image if a.name == "weight")
    maps += [fault_model_from_spec({"model": "bitflip", "layers": [layer]}, 3e-2).sample(image, rng)
             for layer in convs + ("s1_bn2", "avg_bn")]
    spy = Spy(monkeypatch)
    assert _check(program, image, x, maps) > 10
    assert spy.folds > 20
    assert spy.pre > 5
    assert spy.post > 5


@needs_numba
@pytest.mark.parametrize("dense", [0.0, "auto"])
@pytest.mark.parametrize("io", ["parallel", "stream"])
def test_dense_trials_rerun_fused_exactly(nets, x, io, dense, monkeypatch):
    """A trial whose blocks turn dense reruns the rest of the network on the fused path, with the faulty weights,
    from the faulty codes of every value the rest reads (a shortcut's too): still equal to full emulation, at
    every cut (``dense=0``: the first layer after the first faulty one that has a cut) and at the default share."""
    program, image = nets[io]
    reruns = []
    original = TrialEvaluator._rerun
    monkeypatch.setattr(TrialEvaluator, "_rerun",
                        lambda self, i, cut, *a: reruns.append(cut) or original(self, i, cut, *a))
    rng = np.random.default_rng(21)
    maps = [fault_model_from_spec(SPECS[i % len(SPECS)], RATES[(i // len(SPECS)) % len(RATES)]).sample(image, rng)
            for i in range(15)]
    convs = tuple(a.layer for a in image if a.name == "weight")
    maps += [fault_model_from_spec({"model": "bitflip", "layers": [layer]}, 3e-2).sample(image, rng)
             for layer in convs + ("s1_bn2", "avg_bn")]
    assert _check(program, image, x, maps, dense=dense) > 10
    assert len(reruns) > 10
    assert any(len(cut) > 1 for cut in reruns)  # some rerun started inside a residual block: two values live


@needs_numba
def test_the_rules_give_the_traced_difference(nets, x):
    """Each folded run (eager and pending) and each merge (integer kernel, and with its run after it) given
    the traced difference of its inputs returns the traced difference of its output."""
    program, image = nets["stream"]
    evaluator = TrialEvaluator(program, image, x, np.zeros(len(x), dtype=int), golden_cache=None)
    clean = Emulator(program, image).trace(x)
    weights = {(a.layer, a.name): Weights.of(a) for a in image}
    convs = tuple(a.layer for a in image if a.name == "weight")
    rng = np.random.default_rng(9)
    checked = set()
    for _i in range(6):
        faultmap = fault_model_from_spec({"model": "bitflip", "layers": list(convs)}, 1e-2).sample(image, rng)
        faulty = Emulator(program, faultmap.apply(image)).trace(x)
        for start, stop in runs(program).items():
            fold = longest_fold(program, start, stop, weights)
            src, end = program.layers[start].inputs[0], program.names[fold.stop - 1]
            for lazy in (False, True):
                out = fold.apply(traced_difference(clean[src], faulty[src]), lazy=lazy)
                assert all(isinstance(b, PendingStep) for b in out) == lazy or not out
                np.testing.assert_array_equal(apply(out, clean[end]), faulty[end], err_msg=end)
            checked.add(end)
        for layer in program.layers:
            if layer.kind in (Kind.POOL2D, Kind.ZEROPAD2D):  # the integer pooling and padding rules
                first = traced_difference(clean[layer.inputs[0]], faulty[layer.inputs[0]])
                step = evaluator.layer_step(layer.name, first, faultmap)
                out = rule_for(layer).delta(step)
                np.testing.assert_array_equal(apply(out, clean[layer.name]), faulty[layer.name], err_msg=layer.name)
                checked.add(layer.name)
            if layer.kind is not Kind.MERGE:
                continue
            first = traced_difference(clean[layer.inputs[0]], faulty[layer.inputs[0]])
            step = evaluator.layer_step(layer.name, first, faultmap)
            step.more_inputs = (traced_difference(clean[layer.inputs[1]], faulty[layer.inputs[1]]),)
            rule = rule_for(layer)
            out = rule.delta(step)
            np.testing.assert_array_equal(apply(out, clean[layer.name]), faulty[layer.name], err_msg=layer.name)
            k = program.names.index(layer.name) + 1
            if k in runs(program) and program.layers[k].inputs == (layer.name,):
                fold = longest_fold(program, k, runs(program)[k], weights)
                end = program.names[fold.stop - 1]
                then = trim(rule.delta_then(step, fold), clean[end])
                np.testing.assert_array_equal(apply(then, clean[end]), faulty[end], err_msg=end)
            checked.add(layer.name)
    assert {"relu1", "s1_bn2", "s2_relu", "max_relu", "s1_add", "sub", "mul", "avg", "max", "min", "pool"} <= checked
    assert any(program.layer(name).kind is Kind.ZEROPAD2D for name in checked)  # io_stream pads before each conv
    pool = program.layer("pool")
    assert isinstance(rule_for(pool), Pool)
    assert _exact(pool.accum, program.layer(pool.inputs[0]).result.frac)  # the int64 sum ran, not the kernel



def test_without_numba_the_engine_runs_the_plain_rules_exactly(nets, x):
    """``use_numba(False)``: the folds run their numpy reference and merges their float64 rule, still exact."""
    program, image = nets["parallel"]
    rng = np.random.default_rng(11)
    maps = [fault_model_from_spec({"model": "bitflip"}, rate).sample(image, rng) for rate in (1e-3, 1e-2, 1e-2)]
    with compiled.use_numba(False):
        assert _check(program, image, x, maps) >= 2


# --- the resnet8 zoo topology ------------------------------------------------------------------------


@pytest.mark.slow
@needs_numba
def test_engine_equals_full_emulation_on_resnet8(monkeypatch):
    """The published ResNet-8 (io_stream, random batch-norm statistics), a few images: every trial's outcome and
    output codes equal full emulation, and the folded runs and fused merges ran."""
    program, image = _convert(zoo_model("resnet8", 8, 8), "stream")
    x = np.random.default_rng(4).uniform(0, 1, (6, 32, 32, 3)).astype(np.float32)
    rng = np.random.default_rng(5)
    maps = [fault_model_from_spec(SPECS[i % 2], rate).sample(image, rng) for i, rate in
            enumerate((1e-5, 1e-4, 1e-4, 1e-3, 1e-3, 1e-2))]
    spy = Spy(monkeypatch)
    assert _check(program, image, x, maps) >= 2
    assert spy.folds >= 10
    assert spy.pre >= 3
    assert spy.post >= 3
    assert _check(program, image, x, maps, dense="auto") >= 2  # dense trials rerun fused (a campaign's default)
