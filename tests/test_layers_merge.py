"""Merges (Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate) and graph-shaped networks.

One small ResNet-style QKeras model holds every merge kind: a residual block whose Add has a 1x1
shortcut convolution, then Subtract, Multiply, Average, Maximum and Minimum of branches, and
concatenations along the channel axis, a spatial axis and of two Dense outputs (1D). Against
hls4ml's real C simulation (logits and every traced layer, ``assert_array_equal``): io_parallel with
narrow result types on the merges (saturating, wrapping, every rounding mode) and io_stream with
FT-ClipAct after the Add and hls4ml's own types. The engine against full emulation on seeded fault
maps over the whole network and in each branch; the generic fallback rule on kinds whose own rule
is taken away; the C-simulation board on a residual block.
"""

from __future__ import annotations

import tempfile

import numpy as np
import pytest

from hwflow.campaign import TrialEvaluator
from hwflow.campaign.delta import RULES, rule_for
from hwflow.campaign.delta.fallback import FALLBACK
from hwflow.campaign.delta.golden import plan
from hwflow.campaign.delta.state import apply, take, trim
from hwflow.emulator import Emulator, Kind
from hwflow.errors import EmulatorError, UnsupportedLayerError
from hwflow.faults import fault_model_from_spec
from tests.conftest import needs_gxx, traced_difference

SAMPLES = 60
MERGE_OPS = {"add", "subtract", "multiply", "average", "maximum", "minimum"}
NARROW = {  # result types of the merges in the io_parallel build: every cast a merge can make
    "add": "fixed<10,4,RND,SAT>", "sub": "fixed<8,3,TRN,WRAP>", "mul": "fixed<12,4,RND_INF,SAT>",
    "avg": "fixed<7,3,RND_ZERO,SAT_SYM>", "max": "fixed<9,4,RND_CONV,SAT_SYM>", "min": "fixed<9,2,TRN_ZERO,WRAP>",
    "cat": "ufixed<6,2,RND,SAT>", "cat1d": "fixed<10,3,RND,SAT>",
}


def _q():
    from qkeras import quantized_bits

    return {"kernel_quantizer": quantized_bits(8, 0, alpha=1), "bias_quantizer": quantized_bits(8, 0, alpha=1)}


def residual_model(seed: int = 0):
    """Every merge kind: Add (conv branch + 1x1 shortcut), Subtract, Multiply, Average, Maximum, Minimum,
    Concatenate on channels, on height, and of two Dense outputs."""
    import tensorflow as tf
    from qkeras import QActivation, QConv2D, QDense, quantized_bits, quantized_relu

    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    relu = quantized_relu(8, 3)
    inp = layers.Input((8, 8, 2), name="x")
    r1 = QActivation(relu, name="relu1")(QConv2D(4, 3, padding="same", name="conv1", **_q())(inp))
    y = QActivation(relu, name="relu2")(QConv2D(4, 3, padding="same", name="conv2", **_q())(r1))
    y = QConv2D(6, 3, padding="same", name="conv3", **_q())(y)
    s = QConv2D(6, 1, name="short", **_q())(r1)  # the 1x1 shortcut
    r3 = QActivation(relu, name="relu3")(layers.Add(name="add")([y, s]))
    a = layers.MaxPooling2D(2, name="pool3")(r3)  # relu3 is read unpooled too (flat3): it may not pool first
    b1 = QConv2D(6, 1, name="b1", **_q())(a)
    b2 = QConv2D(6, 1, name="b2", **_q())(a)
    sub = layers.Subtract(name="sub")([a, b1])
    mul = QActivation(quantized_bits(10, 4), name="qmul")(layers.Multiply(name="mul")([sub, b2]))
    avg = layers.Average(name="avg")([mul, a])
    mn = layers.Minimum(name="min")([layers.Maximum(name="max")([avg, b1]), b2])
    pooled1 = layers.MaxPooling2D(2, name="pool1")(r1)  # 4 channels beside the 6 of relu4: the offset shows
    cat = layers.Concatenate(name="cat")([QActivation(relu, name="relu4")(mn), pooled1])
    cath = layers.Concatenate(axis=1, name="cath")([cat, cat])
    flat = layers.Flatten(name="flat")(layers.MaxPooling2D(2, name="pool")(cath))
    d1 = QActivation(relu, name="relu_d1")(QDense(4, name="d1", **_q())(flat))
    flat3 = layers.Flatten(name="flat3")(r3)
    d2 = QActivation(quantized_relu(8, 2), name="relu_d2")(QDense(4, name="d2", **_q())(flat3))
    out = QDense(5, name="out", **_q())(layers.Concatenate(name="cat1d")([d1, d2]))
    return tf.keras.Model(inp, out, name="merges")


def residual_block(seed: int = 0):
    """A residual block small enough for a PYNQ-Z2 estimate: conv, conv + 1x1 shortcut, Add, ReLU."""
    import tensorflow as tf
    from qkeras import QActivation, QConv2D, QDense, quantized_relu

    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    inp = layers.Input((6, 6, 1), name="x")
    r1 = QActivation(quantized_relu(8, 3), name="relu1")(QConv2D(4, 3, padding="same", name="conv1", **_q())(inp))
    add = layers.Add(name="add")([QConv2D(4, 3, padding="same", name="conv2", **_q())(r1),
                                  QConv2D(4, 1, name="short", **_q())(r1)])
    pooled = layers.MaxPooling2D(3, name="pool")(QActivation(quantized_relu(8, 3), name="relu2")(add))
    return tf.keras.Model(inp, QDense(5, name="out", **_q())(layers.Flatten(name="flat")(pooled)), name="block")


@pytest.fixture(scope="module")
def model():
    return residual_model()


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).uniform(-1, 2, (SAMPLES, 8, 8, 2)).astype(np.float32)


@pytest.fixture(scope="module")
def clipped(model, x):
    """FT-ClipAct (zero mode) on the ReLU after the Add, and on the first ReLU."""
    from hwflow.harden.clipact import apply_clipact, profile_thresholds

    peaks = profile_thresholds(model, x, ["relu1", "relu3"])
    return apply_clipact(model, {"relu1": 0.7 * peaks["relu1"], "relu3": 0.5 * peaks["relu3"]}, "zero")


def _convert(model, io: str):
    from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls

    with tempfile.TemporaryDirectory() as tmp:
        hls = convert(model, HlsOptions.make(io), tmp)
        return program_from_hls(hls), image_from_hls(hls)


@pytest.fixture(scope="module")
def nets(model, clipped):
    """name -> (program, image): io_parallel as trained; io_stream with FT-ClipAct after the Add."""
    return {"parallel": _convert(model, "parallel"), "stream-clipped": _convert(clipped, "stream")}


# --- against hls4ml's C simulation ------------------------------------------------------------------


def _narrow_options():
    from hwflow.convert import parse_hls_config, resolve_options

    layers = {name: {"Precision": {"result": t}} for name, t in NARROW.items()}
    return resolve_options(parse_hls_config({"LayerName": layers}), io="parallel")


@pytest.mark.slow
@needs_gxx
@pytest.mark.parametrize("io", ["parallel", "stream"])
def test_logits_and_every_layer_equal_csim(model, clipped, x, io, tmp_path):
    from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls
    from hwflow.fixed import parse_type
    from hwflow.verify import CSimModel, compare_layers

    # One g++ build: the trace compiles the C simulation (with tracing), and predict then runs that library.
    hls = convert(model, _narrow_options(), tmp_path) if io == "parallel" else convert(
        clipped, HlsOptions.make("stream"), tmp_path)
    csim = CSimModel(hls, program_from_hls(hls), image_from_hls(hls), tmp_path)
    program = csim.program
    if io == "parallel":
        assert {n: program.layer(n).result for n in NARROW} == {n: parse_type(t) for n, t in NARROW.items()}
    else:
        assert program.layer("relu3").kind is Kind.CLIPACT
        assert program.layer("relu3").inputs == ("add",)
    assert {layer.attrs["op"] for layer in program.layers if layer.kind is Kind.MERGE} == MERGE_OPS
    assert sorted(layer.attrs["concat_axis"] for layer in program.layers if layer.kind is Kind.CONCATENATE) == [0, 0, 2]
    check = compare_layers(csim, x)
    assert check.first is None, check.summary()
    np.testing.assert_array_equal(Emulator(program, csim.image).logits(x).reshape(len(x), -1), csim.csim_logits(x))
    uncomparable = {layer.name for layer in program.layers if layer.kind in (Kind.INPUT, Kind.RESHAPE)}
    assert set(check.not_compared) == uncomparable, check.not_compared
    assert set(check.compared) == {layer.name for layer in program.layers} - uncomparable


@pytest.mark.slow
@needs_gxx
def test_a_residual_block_runs_on_the_csim_board(tmp_path):
    """Merges hold no weights: the build puts the convolutions' arrays in BRAM, and the board (io_stream, where
    hls4ml copies the shortcut's stream) equals the emulator fault-free and under fault maps."""
    from hwflow.convert import HlsOptions
    from hwflow.hardware.boards import load_board
    from hwflow.hardware.csim_board import CSimBoard, check_board
    from hwflow.hardware.project import BuildOptions, generate

    build = generate(residual_block(), load_board("pynq-z2"), tmp_path, BuildOptions(HlsOptions.make("stream"),
                                                                                      min_words=1))
    arrays = {f"{n}/{a}" for n in ("conv1", "conv2", "short", "out") for a in ("weight", "bias")}
    assert set(build.manifest.keys) == arrays
    assert build.program.layer("add").inputs == ("conv2", "short")
    xb = np.random.default_rng(1).uniform(-1, 2, (24, 6, 6, 1)).astype(np.float32)
    rng = np.random.default_rng(2)
    maps = [fault_model_from_spec({"model": "bitflip"}, 1e-2).sample(build.image, rng) for _ in range(6)]
    check = check_board(CSimBoard(tmp_path), build.program, build.image, xb, maps)
    assert check.ok, check
    assert Emulator(build.program, build.image).run(xb).shape == (24, 5)


# --- the emulator on a graph ------------------------------------------------------------------------


def test_graph_runs_on_the_plain_path_and_run_codes_continues_only_where_it_can(nets, x):
    program, image = nets["parallel"]
    emulator = Emulator(program, image, chunk=7)
    assert emulator.fused  # a graph runs fused too (hwflow.emulator.fused groups it)
    out = emulator.run(x)
    np.testing.assert_array_equal(out, Emulator(program, image, fused=False).run(x))
    traced = emulator.trace(x)
    np.testing.assert_array_equal(traced[program.output.name], out)
    np.testing.assert_array_equal(emulator.run(x, upto="add"), traced["add"])
    # cat1d's output is all that the later layers depend on: continuing from it is exact
    np.testing.assert_array_equal(emulator.run_codes(traced["cat1d"], start="cat1d"), out)
    np.testing.assert_array_equal(emulator.run_codes(traced["x"], start="x", upto="cat"), traced["cat"])
    with pytest.raises(EmulatorError, match="cannot continue from layer conv3: layer short also reads relu1"):
        emulator.run_codes(traced["conv3"], start="conv3")


def test_golden_pass_keeps_every_input_a_merge_reads(nets, x):
    program, image = nets["parallel"]
    _, kept, _ = plan(program)
    for layer in program.layers:
        if layer.kind is Kind.MERGE or (layer.kind is Kind.CONCATENATE and layer.attrs["concat_axis"] !=
                                        len(layer.output_shape) - 1):
            assert set(layer.inputs) <= kept, layer.name
    evaluator = TrialEvaluator(program, image, x, np.zeros(len(x), dtype=int))
    traced = Emulator(program, image).trace(x)
    for name in kept:
        np.testing.assert_array_equal(take(evaluator.store[name], None, None), traced[name], err_msg=name)


# --- the engine on a graph --------------------------------------------------------------------------

SPECS = [{"model": "bitflip"}, {"model": "stuck-at", "value": "mixed"}, {"model": "bitflip", "bits": ["msb"]},
         {"model": "stuck-at", "value": 1}]
RATES = [1e-4, 1e-3, 3e-3, 1e-2]
BRANCHES = [["conv1"], ["conv2", "conv3"], ["short"], ["b1"], ["b2"], ["d1"], ["d2"], ["out"]]
"""Before both branches of the Add, inside each, in the branches of the later merges, and after them."""


def _check(program, image, x, y, maps) -> int:
    """Outcomes and output codes equal full emulation: with the delta rules to the output, and with dense trials
    rerun fused (the default on a graph)."""
    for dense in (None, "auto"):
        evaluator = TrialEvaluator(program, image, x, y, chunk=32, dense=dense)
        hurt = 0
        for i, faultmap in enumerate(maps):
            reference = Emulator(program, faultmap.apply(image)).run(x)
            np.testing.assert_array_equal(evaluator.output_codes(faultmap), reference, err_msg=f"{dense} {i}")
            outcome = evaluator.evaluate(faultmap)
            assert outcome == evaluator.full_evaluate(faultmap, x), (dense, i)
            hurt += outcome.mismatches > 0
        assert evaluator.evaluate_many(maps) == [evaluator.full_evaluate(m, x) for m in maps]
    return hurt


@pytest.mark.parametrize("name", ["parallel", "stream-clipped"])
def test_engine_equals_full_emulation(nets, x, name):
    program, image = nets[name]
    y = np.random.default_rng(3).integers(0, 5, len(x))
    rng = np.random.default_rng(len(name))
    maps = [fault_model_from_spec(SPECS[i % len(SPECS)], RATES[(i // len(SPECS)) % len(RATES)]).sample(image, rng)
            for i in range(24)]
    maps += [fault_model_from_spec({"model": "bitflip", "layers": layers}, rate).sample(image, rng)
             for layers in BRANCHES for rate in (3e-3, 3e-2)]
    assert _check(program, image, x, y, maps) > 10  # the maps really changed outputs



def _rules_give_the_traced_difference(program, image, x, kinds, rule=None) -> set:
    """Per layer of ``kinds``: the rule (``rule`` or the layer's own), given the traced differences of every
    input, returns exactly the traced output difference of two full runs. Returns the layers checked."""
    evaluator = TrialEvaluator(program, image, x, np.zeros(len(x), dtype=int))
    clean = Emulator(program, image).trace(x)
    rng = np.random.default_rng(9)
    checked = set()
    for i in range(8):
        spec = {"model": "bitflip", "layers": BRANCHES[i % len(BRANCHES)] + ["conv1"]}
        faultmap = fault_model_from_spec(spec, 3e-2).sample(image, rng)
        faulty = Emulator(program, faultmap.apply(image)).trace(x)
        for layer in program.layers[1:]:
            if layer.kind not in kinds:
                continue
            first = traced_difference(clean[layer.inputs[0]], faulty[layer.inputs[0]])
            step = evaluator.layer_step(layer.name, first, faultmap)
            step.more_inputs = tuple(traced_difference(clean[n], faulty[n]) for n in layer.inputs[1:])
            if not step.inputs and not any(step.more_inputs) and not step.changed:
                continue
            out = (rule or rule_for(layer)).delta(step)
            np.testing.assert_array_equal(apply(out, clean[layer.name]), faulty[layer.name], err_msg=layer.name)
            exact = trim(out, clean[layer.name])
            expected = traced_difference(clean[layer.name], faulty[layer.name])
            got = np.sort(np.concatenate([b.samples for b in exact])) if exact else np.zeros(0, int)
            np.testing.assert_array_equal(got, expected[0].samples if expected else np.zeros(0, int))
            checked.add(layer.name)
    return checked


@pytest.mark.parametrize("name", ["parallel", "stream-clipped"])
def test_merge_rules_give_the_traced_difference(nets, x, name):
    program, image = nets[name]
    merges = {layer.name for layer in program.layers if layer.kind in (Kind.MERGE, Kind.CONCATENATE)}
    assert _rules_give_the_traced_difference(program, image, x, (Kind.MERGE, Kind.CONCATENATE)) == merges


def test_the_fallback_rule_gives_the_traced_difference_for_every_kind(nets, x, monkeypatch):
    """With no rule registered, every kind gets the fallback: weighted (faulty words recompute every sample)
    and weightless, one input and two; the golden pass then keeps every layer's inputs and output."""
    import hwflow.campaign.delta.registry as registry

    monkeypatch.setattr(registry, "RULES", {})
    program, image = nets["stream-clipped"]
    assert all(rule_for(layer) is FALLBACK for layer in program.layers[1:])
    kinds = {layer.kind for layer in program.layers[1:]}
    checked = _rules_give_the_traced_difference(program, image, x, kinds)
    assert {program.layer(n).kind for n in checked} >= {Kind.CONV2D, Kind.DENSE, Kind.MERGE, Kind.CONCATENATE,
                                                       Kind.CLIPACT, Kind.ACTIVATION}


def test_kinds_without_a_rule_get_the_exact_fallback(nets, x, monkeypatch):
    """With the merge, concatenation, activation and reshape rules taken away, ``rule_for`` hands out the
    fallback and the engine still equals full emulation."""
    program, image = nets["parallel"]
    for kind in (Kind.MERGE, Kind.CONCATENATE, Kind.ACTIVATION, Kind.RESHAPE):
        monkeypatch.delitem(RULES, kind)
    for layer in program.layers[1:]:
        if layer.kind in (Kind.MERGE, Kind.CONCATENATE, Kind.ACTIVATION, Kind.RESHAPE):
            assert rule_for(layer) is FALLBACK
    assert rule_for(program.layer("conv1")) is not FALLBACK
    rng = np.random.default_rng(4)
    maps = [fault_model_from_spec({"model": "bitflip", "layers": layers}, 1e-2).sample(image, rng)
            for layers in BRANCHES]
    y = np.random.default_rng(5).integers(0, 5, len(x))
    assert _check(program, image, x, y, maps) > 3


def test_a_clipact_search_runs_on_a_graph(model, x):
    """FT-ClipAct's threshold search scores a clipped ReLU after the Add through the engine."""
    from hwflow.data.datasets import Dataset
    from hwflow.harden.thresholds import ClipSearchConfig, search_thresholds

    y = np.random.default_rng(6).integers(0, 5, len(x))
    data = Dataset("random", x, y, x[:30], y[:30], x[:0], y[:0])
    config = ClipSearchConfig(rates=(1e-2,), trials=2, candidates=3, rounds=1, layers=("relu3",), profile_samples=30)
    result = search_thresholds(model, data, config)
    assert set(result.thresholds) == {"relu3"}
    assert 0 <= result.thresholds["relu3"] <= result.profile["relu3"]
    assert result.score >= result.initial_score


# --- what is refused, with the layer's name ---------------------------------------------------------


def test_unsupported_merges_are_refused_by_name():
    import tensorflow as tf

    from hwflow.zoo.loading import check_supported

    layers = tf.keras.layers
    inp = layers.Input((4,), name="x")
    a, b, c = (layers.Dense(3, name=f"d{i}")(inp) for i in range(3))
    with pytest.raises(UnsupportedLayerError, match="'sum3' \\(Add\\) merges 3 inputs"):
        check_supported(tf.keras.Model(inp, layers.Add(name="sum3")([a, b, c])))
    with pytest.raises(UnsupportedLayerError, match="'dot' \\(Dot\\) is not supported"):
        check_supported(tf.keras.Model(inp, layers.Dot(axes=1, name="dot")([a, b])))

    image_in = layers.Input((4, 4, 2), name="x")
    wide = layers.Conv2D(3, 1, name="wide")(image_in)
    narrow = layers.Conv2D(1, 1, name="narrow")(image_in)
    broadcast = tf.keras.Model(image_in, layers.Add(name="bcast")([wide, narrow]))
    check_supported(broadcast)  # Keras broadcasts; hls4ml's kernels would not as Keras does
    with pytest.raises(UnsupportedLayerError, match="'bcast' \\(Merge\\) merges inputs of shapes .* equal shapes"):
        _convert(broadcast, "parallel")


def test_a_second_input_or_output_is_refused():
    """A graph may branch and merge inside; a Program has one input (its first layer) and one output (its last)."""
    import tensorflow as tf

    layers = tf.keras.layers
    a, b = layers.Input((4,), name="a"), layers.Input((4,), name="b")
    with pytest.raises(UnsupportedLayerError, match=r"2 inputs \(a, b\).*one input and one output"):
        _convert(tf.keras.Model([a, b], layers.Dense(2, name="d")(layers.Add(name="s")([a, b]))), "parallel")
    hidden = layers.Dense(3, name="h")(a)
    with pytest.raises(UnsupportedLayerError, match=r"2 outputs \(h, o\)"):
        _convert(tf.keras.Model(a, [hidden, layers.Dense(2, name="o")(hidden)]), "parallel")
