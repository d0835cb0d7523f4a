"""Lookup-table and parametrized activations and softmax against hls4ml's C simulation, layer by layer.

One Keras model holds every activation hwflow emulates beyond ReLU (sigmoid, tanh, softplus, softsign, selu,
LeakyReLU, PReLU, ELU, ThresholdedReLU, QKeras' hard quantized_tanh / quantized_sigmoid and their
``use_real_*`` forms, quantized_relu with a negative slope, activations inside a Conv2D and a Dense layer,
a PReLU on a convolution's output and a softmax over its channels) and one softmax of each
implementation (latency, legacy and stable in the middle, argmax at the end, kept), so one compile per
io type checks them all: every traced layer equals the emulator, word for word.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import needs_gxx

N_SAMPLES = 200
SOFTMAX_IMPLEMENTATIONS = {"sm_pixels": "latency", "sm_latency": "latency", "sm_legacy": "legacy",
                           "sm_argmax": "argmax", "sm_stable": "stable"}
NARROW = {"c2": "fixed<8,3,RND,SAT>", "d_sm1": "fixed<8,4,RND,SAT>", "d_sm2": "fixed<9,4,RND,SAT>",
          "d_sm3": "fixed<10,4,RND,SAT>"}
"""Result types of the layers feeding the softmax (and of the linear activation hls4ml puts after each,
which would otherwise widen them again to the default type): narrow inputs make
the latency and stable tables index on every code (hls4ml shrinks the tables to the input's width),
and the legacy one shows io_parallel's shrunk tables against io_stream's fixed 1024 entries."""


def _model(seed: int = 0):
    import tensorflow as tf
    from qkeras import QActivation, QDense, quantized_bits

    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers

    def dense(x, n, name, **kw):
        init = tf.keras.initializers.RandomNormal(stddev=1.2, seed=seed + len(name))
        return layers.Dense(n, name=name, kernel_initializer=init, bias_initializer=init, **kw)(x)

    def qdense(x, n, name):
        init = tf.keras.initializers.RandomNormal(stddev=1.0, seed=seed + len(name))
        q = quantized_bits(6, 2, alpha=1)
        return QDense(n, name=name, kernel_quantizer=q, bias_quantizer=q, kernel_initializer=init,
                      bias_initializer=init)(x)

    inp = tf.keras.Input((6, 6, 2), name="x")
    init = tf.keras.initializers.RandomNormal(stddev=0.8, seed=seed)
    x = layers.Conv2D(4, 3, activation="tanh", kernel_initializer=init, bias_initializer=init, name="c1")(inp)
    x = layers.PReLU(name="c_prelu", alpha_initializer=tf.keras.initializers.RandomUniform(-0.5, 1.5, seed=seed))(x)
    x = layers.Activation("softmax", name="sm_pixels")(layers.Conv2D(3, 1, kernel_initializer=init, name="c2")(x))
    x = layers.Flatten(name="flat")(x)
    x = dense(x, 16, "d_sig", activation="sigmoid")  # inside the Dense: hls4ml splits it off
    x = layers.Activation("tanh", name="tanh")(dense(x, 16, "d_tanh"))
    x = layers.Activation("softplus", name="softplus")(dense(x, 16, "d_softplus"))
    x = layers.Activation("softsign", name="softsign")(dense(x, 16, "d_softsign"))
    x = layers.Activation("selu", name="selu")(dense(x, 16, "d_selu"))
    x = layers.LeakyReLU(0.3, name="leaky")(dense(x, 16, "d_leaky"))
    x = layers.PReLU(name="prelu", alpha_initializer=tf.keras.initializers.RandomUniform(-0.5, 1.5, seed=seed))(
        dense(x, 16, "d_prelu"))
    x = layers.ELU(0.7, name="elu")(dense(x, 16, "d_elu"))
    x = layers.ThresholdedReLU(0.4, name="thr")(dense(x, 16, "d_thr"))
    x = QActivation("quantized_tanh(6)", name="qtanh")(qdense(x, 16, "q_tanh"))
    x = QActivation("quantized_sigmoid(6)", name="qsig")(qdense(x, 16, "q_sig"))
    x = QActivation("quantized_relu(6,2,negative_slope=0.25)", name="qleaky")(qdense(x, 16, "q_leaky"))
    x = QActivation("quantized_tanh(8,use_real_tanh=True)", name="qtanh_real")(qdense(x, 16, "q_tanh_real"))
    x = QActivation("quantized_sigmoid(8,use_real_sigmoid=True)", name="qsig_real")(qdense(x, 16, "q_sig_real"))
    x = layers.Activation("hard_sigmoid", name="hard")(dense(x, 16, "d_hard"))
    x = layers.Activation("softmax", name="sm_latency")(dense(x, 10, "d_sm1"))
    x = layers.Activation("softmax", name="sm_legacy")(dense(x, 10, "d_sm2"))
    x = layers.Activation("softmax", name="sm_stable")(dense(x, 10, "d_sm3"))
    x = layers.Activation("softmax", name="sm_argmax")(dense(x, 10, "d_sm4"))  # the output, kept
    return tf.keras.Model(inp, x, name="activations")


def _inputs(n: int = N_SAMPLES, seed: int = 1, shape: tuple[int, ...] = (6, 6, 2)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, *shape)) * 2.0).astype(np.float32)


def _convert(model, io: str, output_dir):
    """hwflow's configuration with each softmax's implementation set, converted by hls4ml itself
    (hwflow's options set one implementation for the whole model)."""
    import hls4ml

    from hwflow.convert import HlsOptions, image_from_hls, program_from_hls
    from hwflow.convert.hls import hls_config, quiet
    from hwflow.verify import CSimModel

    options = HlsOptions.make(io, keep_softmax=True)
    config = hls_config(model, options)
    for name, impl in SOFTMAX_IMPLEMENTATIONS.items():
        config["LayerName"][name]["Implementation"] = impl
    for name, precision in NARROW.items():
        for layer in (name, f"{name}_linear"):
            config["LayerName"][layer]["Precision"]["result"] = precision
    with quiet():
        hls_model = hls4ml.converters.convert_from_keras_model(
            model, hls_config=config, io_type=options.io_type.value, backend=options.backend.value,
            output_dir=str(output_dir))
    return CSimModel(hls_model, program_from_hls(hls_model), image_from_hls(hls_model), output_dir)


@pytest.fixture(scope="module")
def keras_model():
    return _model()


@pytest.fixture(scope="module")
def parallel(keras_model, tmp_path_factory):
    return _convert(keras_model, "parallel", tmp_path_factory.mktemp("act-parallel"))


@pytest.mark.slow
@needs_gxx
@pytest.mark.parametrize("io", ["parallel", "stream"])
def test_every_layer_equals_csim_trace(request, io):
    """Each activation and softmax layer (and the final, kept softmax) equals hls4ml's traced output."""
    from hwflow.emulator import Emulator, Kind
    from hwflow.verify import compare_layers

    csim = request.getfixturevalue(io)
    kinds = {layer.kind for layer in csim.program.layers}
    assert {Kind.ACTIVATION, Kind.PARAM_ACTIVATION, Kind.HARD_ACTIVATION, Kind.PRELU, Kind.SOFTMAX} <= kinds
    assert csim.program.output.name == "sm_argmax"
    impls = {layer.name: layer.attrs["implementation"] for layer in csim.program.layers if layer.kind is Kind.SOFTMAX}
    assert impls == SOFTMAX_IMPLEMENTATIONS
    assert csim.program.layer("sm_legacy").attrs["exp_table_size"] == 512  # 2**9: shrunk to the input's width
    x = _inputs()
    check = compare_layers(csim, x)
    assert check.first is None, check.summary()
    emulator = Emulator(csim.program, csim.image)
    assert emulator.fused  # the fast path runs these kinds plainly (nothing folds a table activation)
    plain = emulator.trace(x)
    for name in check.compared:
        np.testing.assert_array_equal(emulator.run(x, upto=name), plain[name], err_msg=name)
    expected = {"c1_tanh", "c_prelu", "d_sig_sigmoid", "tanh", "softplus", "softsign", "selu", "leaky", "prelu", "elu",
                "thr", "qtanh", "qsig",
                "qleaky", "qtanh_real", "qsig_real", "hard", *SOFTMAX_IMPLEMENTATIONS}
    assert expected <= set(check.compared), check.not_compared
    assert set(check.not_compared) <= {"x", "flat"}  # hls4ml runs no function for a flatten in io_parallel


@pytest.fixture(scope="module")
def stream(keras_model, tmp_path_factory):
    return _convert(keras_model, "stream", tmp_path_factory.mktemp("act-stream"))


@pytest.mark.slow
@pytest.mark.parametrize("io", ["parallel", "stream"])
def test_engine_equals_full_emulation_with_prelu_param_faulted(request, io):
    """The delta engine's outcomes and output codes equal full emulation over seeded fault maps, with
    faults in PReLU's param words too (and maps that fault only those)."""
    from hwflow.campaign import TrialEvaluator
    from hwflow.emulator import Emulator
    from hwflow.faults import fault_model_from_spec

    csim = request.getfixturevalue(io)
    program, image = csim.program, csim.image
    assert image.has("prelu", "param")
    x = _inputs(120, seed=3)
    y = Emulator(program, image).predict_classes(x)
    evaluator = TrialEvaluator(program, image, x, y, chunk=64)
    rng = np.random.default_rng(7)
    specs = [({"model": "bitflip"}, 3e-3), ({"model": "stuck-at", "value": "mixed"}, 1e-3),
             ({"model": "bitflip", "layers": ["prelu"], "arrays": ["param"]}, 0.05),
             ({"model": "bitflip", "layers": ["d_prelu", "prelu", "d_sm2"]}, 0.02)]
    param_hit = changed = 0
    for i in range(24):
        spec, rate = specs[i % len(specs)]
        faultmap = fault_model_from_spec(spec, rate).sample(image, rng)
        param_hit += "prelu/param" in faultmap.array_keys and len(faultmap) > 0
        reference = Emulator(program, faultmap.apply(image)).run(x)
        np.testing.assert_array_equal(evaluator.output_codes(faultmap), reference, err_msg=f"{spec} {i}")
        outcome = evaluator.evaluate(faultmap)
        assert outcome == evaluator.full_evaluate(faultmap, x), (spec, i)
        changed += outcome.mismatches > 0
    assert param_hit >= 6
    assert changed >= 4


def test_keep_softmax_keeps_the_final_softmax(tmp_path):
    """By default the final softmax is removed (logits compared); ``keep_softmax`` keeps it as the output."""
    import tensorflow as tf

    from hwflow.convert import HlsOptions, convert, program_from_hls
    from hwflow.emulator import Emulator, Kind
    from hwflow.errors import ConversionError

    inp = tf.keras.Input((4,))
    model = tf.keras.Model(inp, tf.keras.layers.Dense(3, activation="softmax", name="out")(inp))
    stripped = program_from_hls(convert(model, HlsOptions.make("parallel"), tmp_path / "a"))
    kept_hls = convert(model, HlsOptions.make("parallel", keep_softmax=True), tmp_path / "b")
    kept = program_from_hls(kept_hls, source={})
    assert stripped.output.kind is Kind.DENSE
    assert kept.output.kind is Kind.SOFTMAX
    assert kept.output.attrs["implementation"] == "stable"
    from hwflow.convert import image_from_hls

    probs = Emulator(kept, image_from_hls(kept_hls)).logits(_inputs(50, shape=(4,)))
    assert np.all(probs >= 0)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=0.05)
    options = HlsOptions.make("parallel", keep_softmax=True, softmax_implementation="argmax")
    argmax_hls = convert(model, options, tmp_path / "c")
    argmax = program_from_hls(argmax_hls)
    assert argmax.output.attrs["implementation"] == "argmax"
    onehot = Emulator(argmax, image_from_hls(argmax_hls)).logits(_inputs(50, shape=(4,)))
    np.testing.assert_array_equal(onehot.sum(axis=1), 1.0)
    with pytest.raises(ConversionError, match="unknown softmax implementation 'fast'.*latency, stable"):
        HlsOptions.make("parallel", softmax_implementation="fast")


def test_cli_keep_softmax_flag():
    import argparse

    from hwflow.cli.args import add_hls_options, hls_options

    p = argparse.ArgumentParser()
    add_hls_options(p)
    assert hls_options(p.parse_args(["--keep-softmax"])).keep_softmax
    assert not hls_options(p.parse_args([])).keep_softmax
    assert hls_options(p.parse_args(["--keep-softmax", "--softmax", "legacy"])).softmax_implementation == "legacy"
    assert hls_options(p.parse_args([])).softmax_implementation is None


def test_tables_follow_libm_single_precision():
    """The table words are the C++'s: float arithmetic with libm's expf/tanhf, then the table type."""
    from hwflow.emulator.activations import elu_table, expf, lut_table, tanhf
    from hwflow.fixed import FixedType, quantize_float

    t = FixedType(18, 8)
    sig = lut_table("sigmoid", 1024, t)
    assert sig[512] == quantize_float(np.float64(0.5), t)  # sigmoid(0)
    assert np.all(np.diff(sig) >= 0)
    assert sig[0] == 0
    tanh = lut_table("tanh", 1024, t)
    assert tanh[512] == 0
    assert tanh[768] == quantize_float(np.float64(tanhf(2.0)), t)
    assert elu_table(1024, t)[0] == 0
    assert elu_table(1024, t)[-1] == quantize_float(
        np.float64(np.float32(expf(float(np.float32(-8.0 * 1023 / 1024))) - 1.0)), t)


def test_unsupported_activation_is_refused_by_name():
    import tensorflow as tf

    from hwflow.errors import UnsupportedLayerError
    from hwflow.zoo.loading import check_supported

    inp = tf.keras.Input((4,))
    model = tf.keras.Model(inp, tf.keras.layers.Activation("swish", name="odd")(inp))
    with pytest.raises(UnsupportedLayerError, match="'odd'.*swish"):
        check_supported(model)
    shared = tf.keras.Model(inp, tf.keras.layers.PReLU(shared_axes=[1], name="p")(tf.keras.layers.Reshape((2, 2))(inp)))
    with pytest.raises(UnsupportedLayerError, match="'p' .PReLU. shares its alpha over axes"):
        check_supported(shared)
    check_supported(tf.keras.Model(inp, tf.keras.layers.PReLU(name="p")(inp)))


def test_clipact_refuses_relu_family_layers_with_the_reason():
    """FT-ClipAct clips quantized ReLUs (with or without a negative slope), LeakyReLU, PReLU and ELU
    (tests/test_clipact_family.py); a ThresholdedReLU is refused by name, saying why."""
    import tensorflow as tf
    from qkeras import QActivation, quantized_relu

    from hwflow.errors import HardenError
    from hwflow.harden.clipact import apply_clipact

    inp = tf.keras.Input((4,))
    x = QActivation(quantized_relu(6, 2), name="relu")(inp)
    x = tf.keras.layers.LeakyReLU(0.2, name="leaky")(x)
    x = QActivation(quantized_relu(6, 2, negative_slope=0.25), name="qleaky")(x)
    x = tf.keras.layers.ELU(0.5, name="elu")(tf.keras.layers.PReLU(name="prelu")(x))
    model = tf.keras.Model(inp, tf.keras.layers.ThresholdedReLU(0.3, name="thr")(x))
    with pytest.raises(HardenError, match="does not clip thr .ThresholdedReLU: it already zeroes"):
        apply_clipact(model, {"thr": 1.0})
    clipped = apply_clipact(model, dict.fromkeys(("relu", "leaky", "qleaky", "prelu", "elu"), 1.0))
    assert [layer.name for layer in clipped.layers if "Clip" in type(layer).__name__] \
        == ["relu", "leaky", "qleaky", "prelu", "elu"]


@pytest.mark.slow
def test_weight_scaling_moves_the_prelu_param_and_keeps_the_outputs(parallel):
    """Weight scaling covers PReLU's param like any weight array: the plan shifts it into its headroom,
    and the emulator, reading the scaled words through their compute type, gives the same outputs."""
    from hwflow.emulator import Emulator
    from hwflow.harden.scale import plan_rule, scaled_image

    plan = plan_rule(parallel.image)
    assert plan.shifts().get("prelu/param", 0) > 0
    scaled = scaled_image(parallel.image, plan)
    x = _inputs(60)
    np.testing.assert_array_equal(Emulator(parallel.program, scaled).run(x),
                                  Emulator(parallel.program, parallel.image).run(x))


@pytest.mark.slow
@needs_gxx
def test_prelu_param_runs_on_the_csim_board(tmp_path):
    """The build puts PReLU's param (a{index}) in BRAM behind the host port beside the Dense arrays, and
    the C-simulation board (io_stream, final softmax kept) equals the emulator fault-free and under
    fault maps."""
    import tensorflow as tf
    from qkeras import QDense, quantized_bits

    from hwflow.convert import HlsOptions
    from hwflow.emulator import Emulator
    from hwflow.faults import fault_model_from_spec
    from hwflow.hardware.boards import load_board
    from hwflow.hardware.csim_board import CSimBoard, check_board
    from hwflow.hardware.project import BuildOptions, generate

    tf.keras.utils.set_random_seed(4)
    inp = tf.keras.Input((8,), name="x")
    q = quantized_bits(6, 2, alpha=1)  # PReLU's param takes its input's type: it must fit a 32-bit bus word
    x = QDense(12, kernel_quantizer=q, bias_quantizer=q, name="d1")(inp)
    x = tf.keras.layers.PReLU(name="prelu", alpha_initializer=tf.keras.initializers.RandomUniform(-0.5, 1.0))(x)
    x = tf.keras.layers.Dense(6, activation="tanh", name="d2")(x)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(4, activation="softmax", name="out")(x))
    build = generate(model, load_board("pynq-z2"), tmp_path,
                     BuildOptions(HlsOptions.make("stream", keep_softmax=True), min_words=1))
    assert "prelu/param" in build.manifest.keys
    assert build.program.output.name == "out_softmax"
    xb = _inputs(24, seed=5, shape=(8,))
    rng = np.random.default_rng(2)
    maps = [fault_model_from_spec({"model": "bitflip", "layers": ["prelu"]}, 0.05).sample(build.image, rng),
            *(fault_model_from_spec({"model": "bitflip"}, 1e-2).sample(build.image, rng) for _ in range(4))]
    check = check_board(CSimBoard(tmp_path), build.program, build.image, xb, maps)
    assert check.ok, check
    assert Emulator(build.program, build.image).run(xb).shape == (24, 4)


def _diff_block(clean: np.ndarray, faulty: np.ndarray):
    """The traced difference of one layer as the engine carries it (one block, or none)."""
    from hwflow.campaign.delta import Block

    differs = clean != faulty
    lead = differs.reshape(len(clean), -1, differs.shape[-1])
    samples = np.flatnonzero(lead.any(axis=(1, 2)))
    if not len(samples):
        return []
    channels = np.flatnonzero(lead[samples].any(axis=(0, 1)))
    return [Block(samples, channels, np.take(faulty[samples], channels, axis=-1).astype(np.float64))]


@pytest.mark.slow
def test_each_activation_rule_gives_the_traced_difference(parallel):
    """Per layer: the activations' rules (PReLU's own, the channelwise ones, softmax's fallback), given
    the traced input difference and the fault map, return exactly the traced output difference of two
    full runs, with PReLU's param words faulted too."""
    from hwflow.campaign import TrialEvaluator
    from hwflow.campaign.delta import rule_for
    from hwflow.campaign.delta.activations import PReLU
    from hwflow.campaign.delta.channelwise import Channelwise
    from hwflow.campaign.delta.fallback import Recompute
    from hwflow.campaign.delta.state import apply
    from hwflow.emulator import Emulator, Kind
    from hwflow.faults import fault_model_from_spec

    program, image = parallel.program, parallel.image
    kinds = {Kind.ACTIVATION, Kind.PARAM_ACTIVATION, Kind.HARD_ACTIVATION, Kind.PRELU, Kind.SOFTMAX}
    x = _inputs(40, seed=3)
    evaluator = TrialEvaluator(program, image, x, np.zeros(len(x), dtype=np.int64))
    clean = Emulator(program, image).trace(x)
    rng = np.random.default_rng(11)
    checked, param_changed = set(), False
    for i in range(6):
        spec = {"model": "bitflip"} if i % 2 else {"model": "bitflip", "layers": ["prelu", "c_prelu"]}
        faultmap = fault_model_from_spec(spec, [1e-3, 0.05][i % 2 == 0]).sample(image, rng)
        faulty = Emulator(program, faultmap.apply(image)).trace(x)
        for layer in program.layers[1:]:
            if layer.kind not in kinds:
                continue
            rule = rule_for(layer)
            expected = {Kind.PRELU: PReLU, Kind.SOFTMAX: Recompute}.get(layer.kind, Channelwise)
            assert isinstance(rule, expected), layer.name
            inputs = _diff_block(clean[layer.inputs[0]], faulty[layer.inputs[0]])
            step = evaluator.layer_step(layer.name, inputs, faultmap)
            if not inputs and not any(len(v) for v in step.changed.values()):
                continue
            param_changed |= layer.kind is Kind.PRELU and any(len(v) for v in step.changed.values())
            out = rule.delta(step)
            np.testing.assert_array_equal(apply(out, clean[layer.name]), faulty[layer.name], err_msg=layer.name)
            checked.add(layer.kind)
    assert checked == kinds
    assert param_changed


def test_engine_pools_before_a_table_activation_exactly(tmp_path):
    """A max pool after a sigmoid / tanh is moved before it by the engine (the table is checked to be
    non-decreasing): outcomes and output codes still equal full emulation, and the move happened."""
    import tensorflow as tf

    from hwflow.campaign import TrialEvaluator
    from hwflow.campaign.delta import channelwise
    from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls
    from hwflow.emulator import Emulator
    from hwflow.faults import fault_model_from_spec

    tf.keras.utils.set_random_seed(6)
    inp = tf.keras.Input((12, 12, 1))
    x = tf.keras.layers.Conv2D(4, 3, activation="tanh", name="c1")(inp)
    x = tf.keras.layers.MaxPooling2D(2, name="p1")(x)
    x = tf.keras.layers.Conv2D(4, 3, name="c2")(x)
    x = tf.keras.layers.Activation("sigmoid", name="sig")(x)
    x = tf.keras.layers.MaxPooling2D(2, name="p2")(x)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(3, name="out")(tf.keras.layers.Flatten()(x)))
    hls = convert(model, HlsOptions.make("parallel"), tmp_path)
    program, image = program_from_hls(hls), image_from_hls(hls)
    x = _inputs(80, seed=9, shape=(12, 12, 1))
    evaluator = TrialEvaluator(program, image, x, Emulator(program, image).predict_classes(x))
    directions = []
    original = channelwise.Channelwise.monotone

    def spy(self, step):
        sign = original(self, step)
        if step.layer.name in ("c1_tanh", "sig"):
            directions.append(sign)
        return sign

    rng = np.random.default_rng(3)
    channelwise.Channelwise.monotone = spy
    try:
        for i in range(12):
            faultmap = fault_model_from_spec({"model": "bitflip"}, [1e-3, 1e-2][i % 2]).sample(image, rng)
            np.testing.assert_array_equal(evaluator.output_codes(faultmap),
                                          Emulator(program, faultmap.apply(image)).run(x), err_msg=str(i))
            assert evaluator.evaluate(faultmap) == evaluator.full_evaluate(faultmap, x), i
    finally:
        channelwise.Channelwise.monotone = original
    assert directions
    assert set(directions) == {1}
