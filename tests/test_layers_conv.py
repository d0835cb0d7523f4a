"""Depthwise, separable and batch-norm-folded convolutions against hls4ml's C simulation, and through
the campaign engine, weight scaling and the C-simulation board.

Two small models hold every kind (one 2D, one 1D: hls4ml 1.3.0's ``nnet_sepconv1d_latency.h`` and
``nnet_sepconv2d_latency.h`` share one include guard, so an io_parallel design with both a 1D and a 2D
depthwise layer does not compile): QDepthwiseConv2D / DepthwiseConv2D / DepthwiseConv1D,
QSeparableConv1D/2D and SeparableConv1D/2D (each split by hls4ml into a depthwise and a pointwise
layer), QConv2DBatchnorm, with strides and ``same`` padding. Each is compiled once per design
(io_parallel Latency; io_stream with Latency for the 2D model, Resource for the 1D one; a narrow 2D
model under io_stream Resource and the C-simulation board cover 2D Resource).
"""

from __future__ import annotations

import numpy as np
import pytest

from hwflow.convert import HlsOptions
from hwflow.emulator import Emulator, Kind
from hwflow.errors import UnsupportedLayerError
from tests.conftest import needs_gxx

Q = "quantized_bits(6,0,alpha=1)"
SAMPLES = 80
DESIGNS = [("2d", "parallel", "Latency", 1), ("1d", "parallel", "Latency", 1), ("2d", "stream", "Latency", 1),
           ("1d", "stream", "Resource", 2)]  # 2D under Resource: the narrow model below and the board test
NEW_ARRAYS_2D = ("dw/weight", "dw/bias", "dwk/weight", "sep_depthwise/weight", "sep_depthwise/bias",
                 "sep_pointwise/weight", "sep_pointwise/bias", "cbn/weight", "cbn/bias", "sepk_depthwise/weight",
                 "sepk_pointwise/weight")


def build_2d(seed: int = 0):
    """Depthwise (same, and strided valid with a non-square kernel), separable (strided same), folded batch norm."""
    import tensorflow as tf
    from qkeras import QActivation, QConv2DBatchnorm, QDense, QDepthwiseConv2D, QSeparableConv2D

    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((9, 9, 3), name="x")
    x = QDepthwiseConv2D((3, 3), padding="same", depthwise_quantizer=Q, bias_quantizer=Q, name="dw")(inp)
    x = QActivation("quantized_relu(6)", name="r1")(x)
    x = tf.keras.layers.DepthwiseConv2D((3, 2), strides=(2, 1), padding="valid", name="dwk")(x)
    x = QActivation("quantized_relu(6)", name="r2")(x)
    x = QSeparableConv2D(4, (3, 3), strides=(2, 2), padding="same", depthwise_quantizer=Q, pointwise_quantizer=Q,
                         bias_quantizer=Q, name="sep")(x)
    x = QConv2DBatchnorm(5, (2, 2), padding="same", kernel_quantizer=Q, bias_quantizer=Q, name="cbn")(x)
    x = QActivation("quantized_relu(6)", name="r3")(x)
    x = tf.keras.layers.SeparableConv2D(3, (2, 2), padding="valid", name="sepk")(x)
    x = QActivation("quantized_relu(6)", name="r4")(x)  # narrow logits: they fit the board's 32-bit stream word
    x = tf.keras.layers.Flatten(name="flat")(x)
    x = QDense(3, kernel_quantizer=Q, bias_quantizer=Q, name="out")(x)
    return _fit(tf.keras.Model(inp, x, name="conv2d_kinds"), seed)


def build_1d(seed: int = 0):
    """Separable (strided same), depthwise (same), quantized separable (valid)."""
    import tensorflow as tf
    from qkeras import QActivation, QDense, QSeparableConv1D

    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((12, 4), name="x")
    x = tf.keras.layers.SeparableConv1D(4, 3, strides=2, padding="same", name="sepk1")(inp)
    x = QActivation("quantized_relu(6)", name="r1")(x)
    x = tf.keras.layers.DepthwiseConv1D(3, padding="same", name="dw1")(x)
    x = QActivation("quantized_relu(6)", name="r2")(x)
    x = QSeparableConv1D(3, 2, padding="valid", depthwise_quantizer=Q, pointwise_quantizer=Q, bias_quantizer=Q,
                         name="sep1")(x)
    x = tf.keras.layers.Flatten(name="flat")(x)
    x = QDense(3, kernel_quantizer=Q, bias_quantizer=Q, name="out")(x)
    return _fit(tf.keras.Model(inp, x, name="conv1d_kinds"), seed)


def _fit(model, seed: int):
    """Seeded weights (no training: the same model on every run), batch-norm statistics away from 0 and 1."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for w in layer.weights:
            name = w.name.split("/")[-1].split(":")[0]
            shape = tuple(w.shape)
            if name == "moving_variance":
                values.append(rng.uniform(0.3, 2.0, shape))
            elif name == "gamma":
                values.append(rng.uniform(0.5, 1.5, shape))
            elif w.dtype.is_integer:  # QKeras's folding iteration counter
                values.append(w.numpy())
            else:
                values.append(rng.uniform(-0.9, 0.9, shape))
        if values:
            layer.set_weights(values)
    return model


def inputs(model, n: int = SAMPLES, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 1.5, (n,) + model.input_shape[1:])


@pytest.fixture(scope="module")
def models():
    return {"2d": build_2d(), "1d": build_1d()}


@pytest.fixture(scope="module")
def designs(models, tmp_path_factory):
    """``designs(which, io, strategy, reuse)``: the model and its compiled C simulation, built once."""
    from hwflow.verify import build_csim

    built = {}

    def get(which, io, strategy, reuse):
        key = (which, io, strategy, reuse)
        if key not in built:
            options = HlsOptions.make(io, strategy=strategy, reuse_factor=reuse)
            built[key] = models[which], build_csim(models[which], options,
                                                   tmp_path_factory.mktemp(f"conv-{which}-{io}"))
        return built[key]

    return get


@pytest.fixture(params=DESIGNS, ids=lambda d: "-".join(map(str, d)))
def csim(request, designs):
    return designs(*request.param)


# --- the Keras-level check and the converter's refusals (no compile) ----------------------------------


def test_keras_check_accepts_the_kinds_and_refuses_what_hls4ml_cannot(models):
    """QDepthwiseConv2DBatchnorm is accepted (hwflow.convert.dwbn_hls converts it: tests/test_layers_dwbn.py)."""
    import tensorflow as tf
    from qkeras import QDepthwiseConv2DBatchnorm

    from hwflow.zoo.loading import check_supported

    check_supported(models["2d"])
    check_supported(models["1d"])
    multiplier = tf.keras.Sequential([tf.keras.Input((6, 6, 2)), tf.keras.layers.DepthwiseConv2D(3, depth_multiplier=2,
                                                                                                name="dm2")])
    with pytest.raises(UnsupportedLayerError, match="'dm2' .*depth_multiplier 2"):
        check_supported(multiplier)
    folded = tf.keras.Sequential([tf.keras.Input((6, 6, 2)), QDepthwiseConv2DBatchnorm(3, name="dwbn")])
    check_supported(folded)


@pytest.mark.slow
def test_io_parallel_resource_depthwise_is_refused(models, tmp_path):
    """hls4ml's io_parallel depthwise kernel asserts at run time under Resource: refused before any run."""
    from hwflow.convert import convert, program_from_hls

    hls = convert(models["1d"], HlsOptions.make("parallel", strategy="Resource", reuse_factor=2), tmp_path)
    with pytest.raises(UnsupportedLayerError, match="'sepk1_depthwise'.*no Resource kernel.*io_parallel"):
        program_from_hls(hls)


# --- against hls4ml's C simulation --------------------------------------------------------------------


@needs_gxx
@pytest.mark.slow
def test_logits_and_every_layer_equal_csim(csim):
    from hwflow.verify import compare_layers

    model, design = csim
    x = inputs(model)
    np.testing.assert_array_equal(Emulator(design.program, design.image).logits(x).reshape(len(x), -1),
                                  design.csim_logits(x))
    check = compare_layers(design, x)
    assert set(check.not_compared) == {"x", "flat"}  # no C++ function of their own in hls4ml
    assert len(check.compared) == len(design.program.layers) - 2
    assert check.first is None, check.summary()
    kinds = {layer.kind for layer in design.program.layers}
    depthwise = Kind.DEPTHWISE2D if model.name == "conv2d_kinds" else Kind.DEPTHWISE1D
    assert depthwise in kinds


@needs_gxx
@pytest.mark.slow
def test_separable_layers_are_split_and_every_array_is_stored(csim):
    """hls4ml 1.3.0 splits each separable layer (every backend, every io type): its depthwise kernel, a
    zero one-bit bias, the pointwise kernel and the bias are four stored arrays, in firmware order."""
    model, design = csim
    image = design.image
    name = "sep" if model.name == "conv2d_kinds" else "sep1"
    keras = model.get_layer(name)
    depthwise_kernel, pointwise_kernel, bias = keras.get_weights()
    assert image.get(f"{name}_depthwise", "weight").shape == depthwise_kernel.shape
    zero = image.get(f"{name}_depthwise", "bias")
    assert (zero.format.fixed.width, zero.format.fixed.signed) == (1, False)
    assert not zero.words.any()
    assert image.get(f"{name}_pointwise", "weight").shape == pointwise_kernel.shape
    assert image.get(f"{name}_pointwise", "bias").shape == bias.shape
    assert not any(a.var[0] in "dpz" for a in image)  # SeparableConv's d/p/z variables never reach the firmware
    resource = design.program.source.get("strategy") == "Resource"
    for array in image:
        if array.name == "weight" and array.layer != "out":
            transposed = (len(array.shape) - 1,) + tuple(range(len(array.shape) - 1))
            assert array.axes == (transposed if resource else tuple(range(len(array.shape)))), array.key


@needs_gxx
@pytest.mark.slow
def test_folded_batch_norm_arrays_are_hls4mls(designs):
    """QConv2DBatchnorm: the stored kernel is the kernel quantizer of hls4ml's fold ``W * gamma /
    sqrt(var + eps)``, the bias ``gamma * (b - mean) / sqrt(var + eps) + beta`` through the bias quantizer."""
    import qkeras

    model, design = designs("2d", "parallel", "Latency", 1)
    layer = model.get_layer("cbn")
    weights = {w.name.split("/")[-1].split(":")[0]: w.numpy() for w in layer.weights}
    inv = weights["gamma"] / np.sqrt(weights["moving_variance"] + layer.batchnorm.epsilon)
    kernel = qkeras.quantized_bits(6, 0, alpha=1)(inv * weights["kernel"]).numpy()
    bias = qkeras.quantized_bits(6, 0, alpha=1)(inv * (weights["bias"] - weights["moving_mean"])
                                                + weights["beta"]).numpy()
    np.testing.assert_array_equal(design.image.get("cbn", "weight").values(), kernel)
    np.testing.assert_array_equal(design.image.get("cbn", "bias").values(), bias)


# --- fault campaigns through the engine ---------------------------------------------------------------

ENGINE_SPECS = [{"model": "bitflip"}, {"model": "stuck-at", "value": "mixed"}, {"model": "bitflip", "bits": ["msb"]}]


def _new_layers(program) -> list[str]:
    """The layers of this module's kinds that hold arrays (depthwise, pointwise, folded)."""
    return [layer.name for layer in program.layers
            if layer.kind in (Kind.DEPTHWISE1D, Kind.DEPTHWISE2D) or "pointwise" in layer.name or layer.name == "cbn"]


def check_engine(program, image, x, seed: int) -> tuple[int, set[str]]:
    """Seeded maps, each confined to one array of the new layers (a few faulty bits each), then over the whole image:
    the engine's output codes and outcome equal full emulation of the faulty image."""
    from hwflow.campaign import TrialEvaluator
    from hwflow.faults import fault_model_from_spec

    y = Emulator(program, image).predict_classes(x)
    evaluator = TrialEvaluator(program, image, x, y, chunk=32)
    rng = np.random.default_rng(seed)
    hurt, touched = 0, set()
    new = [a for a in image if a.layer in _new_layers(program)]
    targets = [({"layers": [a.layer], "arrays": [a.name]}, min(0.5, 4 / (a.words.size * a.format.width)))
               for a in new] + [({}, 3e-3)]
    for i, ((target, rate), spec) in enumerate((t, s) for t in targets for s in ENGINE_SPECS):
        faultmap = fault_model_from_spec({**spec, **target}, rate).sample(image, rng)
        faulty = faultmap.apply(image)
        touched |= {a.key for a, f in zip(image, faulty, strict=True) if np.any(a.words != f.words)}
        reference = Emulator(program, faulty).run(x)
        np.testing.assert_array_equal(evaluator.output_codes(faultmap), reference, err_msg=f"{target} {spec} {i}")
        assert evaluator.evaluate(faultmap) == evaluator.full_evaluate(faultmap, x), (target, spec, i)
        hurt += int(np.any(reference != Emulator(program, image).run(x)))
    return hurt, touched


@needs_gxx
@pytest.mark.slow
def test_engine_equals_full_emulation(csim):
    model, design = csim
    hurt, touched = check_engine(design.program, design.image, inputs(model, 60), seed=3)
    assert hurt > 5
    new = {a.key for a in design.image if a.layer in _new_layers(design.program)}
    assert new <= touched, new - touched  # faults landed in every array of the new kinds


def _saturating(program):
    """``program`` with narrow saturating accumulators in the depthwise layers: linearity breaks."""
    from dataclasses import replace

    from hwflow.emulator import Program
    from hwflow.fixed import Overflow

    layers = []
    for layer in program.layers:
        if layer.kind in (Kind.DEPTHWISE1D, Kind.DEPTHWISE2D):
            cut = min(14, layer.accum.width - 6)  # the top bits: the sums saturate
            acc = replace(layer.accum, width=layer.accum.width - cut, integer=layer.accum.integer - cut,
                          overflow=Overflow.SAT)
            layer = replace(layer, accum=acc, result=acc)
        layers.append(layer)
    return Program(tuple(layers), program.io_type, program.source)


@needs_gxx
@pytest.mark.slow
def test_engine_equals_full_emulation_with_saturating_depthwise_accumulators(designs):
    """Saturating accumulators in hls4ml's Resource order (io_stream, reuse factor 2): the per-channel
    recompute is exact there too."""
    model, design = designs("1d", "stream", "Resource", 2)
    program = _saturating(design.program)
    x = inputs(model, 60)
    saturated = Emulator(program, design.image).trace(x)["dw1"]
    assert np.any(np.abs(saturated) == program.layer("dw1").accum.max_code)  # the accumulators do saturate
    hurt, _ = check_engine(program, design.image, x, seed=4)
    assert hurt > 0  # saturation hides many faults; some still reach the outputs


@needs_gxx
@pytest.mark.slow
def test_depthwise_rule_gives_the_traced_difference(designs):
    """Per depthwise layer: given the traced input difference and the faulty words, the rule returns
    exactly the traced output difference of two full runs."""
    from hwflow.campaign import TrialEvaluator
    from hwflow.campaign.delta import Block, rule_for
    from hwflow.campaign.delta.state import apply
    from hwflow.faults import fault_model_from_spec

    model, design = designs("2d", "parallel", "Latency", 1)
    program, image = design.program, design.image
    x = inputs(model, 40)
    evaluator = TrialEvaluator(program, image, x, Emulator(program, image).predict_classes(x))
    clean = Emulator(program, image).trace(x)
    rng = np.random.default_rng(9)
    checked = 0
    for i in range(8):
        faultmap = fault_model_from_spec({"model": "bitflip"}, [1e-2, 3e-2][i % 2]).sample(image, rng)
        faulty = Emulator(program, faultmap.apply(image)).trace(x)
        for layer in program.layers:
            if layer.kind is not Kind.DEPTHWISE2D:
                continue
            src_clean, src_faulty = clean[layer.inputs[0]], faulty[layer.inputs[0]]
            differs = (src_clean != src_faulty).reshape(len(x), -1, src_clean.shape[-1])
            samples = np.flatnonzero(differs.any(axis=(1, 2)))
            blocks = []
            if len(samples):
                channels = np.flatnonzero(differs[samples].any(axis=(0, 1)))
                blocks = [Block(samples, channels, np.take(src_faulty[samples], channels, axis=-1).astype(float))]
            step = evaluator.layer_step(layer.name, blocks, faultmap)
            if not blocks and not step.changed:
                continue
            out = rule_for(layer).delta(step)
            np.testing.assert_array_equal(apply(out, clean[layer.name]), faulty[layer.name], err_msg=layer.name)
            checked += 1
    assert checked >= 8


# --- weight scaling and the C-simulation board -----------------------------------------------------------

SCALED = ("dwk/weight", "sepk_depthwise/weight", "sepk_pointwise/weight")  # fixed<16,6> words with headroom


@needs_gxx
@pytest.mark.slow
def test_weight_scaling_of_depthwise_and_pointwise_arrays_equals_csim(models, tmp_path):
    """The rule's power-of-two shifts on depthwise and pointwise arrays, compiled into the C simulation
    (the separable layers are split before the binary points move); then faults through the engine."""
    from hwflow.convert import convert, image_from_hls
    from hwflow.harden.scale import plan_rule
    from hwflow.verify import build_csim, compare_layers

    model = models["2d"]
    options = HlsOptions.make("parallel")
    plan = plan_rule(image_from_hls(convert(model, options, tmp_path / "plain")))
    assert all(plan.shifts().get(key, 0) > 0 for key in SCALED), plan.shifts()
    design = build_csim(model, options, tmp_path / "scaled", storage=plan)
    assert all(not design.image.get(*key.split("/")).scale.is_identity for key in SCALED)
    x = inputs(model)
    np.testing.assert_array_equal(Emulator(design.program, design.image).logits(x).reshape(len(x), -1),
                                  design.csim_logits(x))
    check = compare_layers(design, x)
    assert check.first is None, check.summary()
    assert len(check.compared) == len(design.program.layers) - 2
    hurt, _ = check_engine(design.program, design.image, inputs(model, 60), seed=6)
    assert hurt > 5


@needs_gxx
@pytest.mark.slow
def test_csim_board_with_depthwise_pointwise_and_folded_arrays_in_bram(models, tmp_path):
    """The built design (io_stream, Resource, every array in BRAM behind the host port, scaled): fault-free
    and under fault maps written through the port, it equals the emulator word for word."""
    from hwflow.convert import convert, image_from_hls
    from hwflow.harden.scale import plan_rule
    from hwflow.hardware.boards import load_board
    from hwflow.hardware.csim_board import CSimBoard, board_image, check_board, sample_fault_maps
    from hwflow.hardware.project import BuildOptions, generate

    model = models["2d"]
    options = HlsOptions.make("stream", strategy="Resource", reuse_factor=3)
    plan = plan_rule(image_from_hls(convert(model, options, tmp_path / "plain")))
    build = generate(model, load_board("pynq-z2"), tmp_path / "build", BuildOptions(options, min_words=1),
                     storage=plan)
    keys = set(build.manifest.keys)
    assert {a.key for a in build.image if a.layer in _new_layers(build.program)} <= keys
    assert {m.name for m in build.manifest.weight_memories} >= {"w2", "b2"}  # hls4ml's variable names
    board = CSimBoard(tmp_path / "build")
    x = inputs(model, 24)
    maps = sample_fault_maps(board_image(build.image, build.manifest), 20, seed=5)
    result = check_board(board, build.program, build.image, x, maps)
    assert result.ok, result.summary()


# --- narrow accumulators: products cast one by one, sums saturating, in hls4ml's order ------------------

NARROW = {"dwa": "fixed<10,3,RND,SAT>", "dwb": "fixed<10,3,TRN,SAT_SYM>"}


def narrow_depthwise_model():
    """Two depthwise layers of four channels, weights uniform in [-1, 1): 3x3 sums overflow ``fixed<10,3>``."""
    import tensorflow as tf
    from qkeras import QActivation, QDense, QDepthwiseConv2D

    q = "quantized_bits(8,0,alpha=1)"
    inp = tf.keras.Input((7, 7, 4), name="x")
    x = QDepthwiseConv2D((3, 3), depthwise_quantizer=q, bias_quantizer=q, name="dwa")(inp)
    x = QActivation("quantized_relu(8,3)", name="ra")(x)
    x = QDepthwiseConv2D((3, 3), strides=(2, 2), depthwise_quantizer=q, bias_quantizer=q, name="dwb")(x)
    x = tf.keras.layers.Flatten(name="flat")(x)
    x = QDense(3, kernel_quantizer=q, bias_quantizer=q, name="out")(x)
    model = tf.keras.Model(inp, x, name="narrow_depthwise")
    rng = np.random.default_rng(12)
    for layer in model.layers:
        if layer.get_weights():
            layer.set_weights([rng.uniform(-1, 1, w.shape) for w in layer.get_weights()])
    return model


def build_narrow(model, io: str, strategy: str, reuse: int, out):
    """hls4ml's own configuration with the narrow accumulators, converted and compiled by hls4ml."""
    import hls4ml

    from hwflow.convert import compile_csim, image_from_hls, program_from_hls
    from hwflow.convert.hls import quiet
    from hwflow.verify import CSimModel

    with quiet():
        config = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis")
    config["Model"]["Strategy"] = strategy
    for name, layer_cfg in config["LayerName"].items():
        if name in NARROW:
            layer_cfg["Precision"]["accum"] = NARROW[name]
            layer_cfg["Precision"]["result"] = "fixed<16,6>"
            layer_cfg["Strategy"] = strategy
            layer_cfg["ReuseFactor"] = reuse
    with quiet():
        hls_model = hls4ml.converters.convert_from_keras_model(
            model, hls_config=config, io_type=io, backend="Vitis", output_dir=str(out))
    compile_csim(hls_model)
    return CSimModel(hls_model, program_from_hls(hls_model), image_from_hls(hls_model), out)


@needs_gxx
@pytest.mark.slow
@pytest.mark.parametrize(("io", "strategy", "reuse"), [("io_parallel", "Latency", 1), ("io_stream", "Resource", 3),
                                                     ("io_stream", "Resource", 6), ("io_stream", "Resource", 12)])
def test_saturating_depthwise_accumulators_equal_csim(io, strategy, reuse, tmp_path, monkeypatch):
    """Every product rounded into a saturating accumulator, each step saturated: the emulator follows
    hls4ml's order (kernel positions in io_parallel; the Resource reuse loops' order, which differs here:
    reuse 3, 6 and 12 select hls4ml's three kernels rf_leq_nout, rf_gt_nout and rf_gt_nout_rem0),
    layer by layer; the position order would give other outputs under Resource."""
    from hwflow.emulator import depthwise
    from hwflow.verify import compare_layers

    model = narrow_depthwise_model()
    design = build_narrow(model, io, strategy, reuse, tmp_path)
    for name, text in NARROW.items():
        assert str(design.program.layer(name).accum) == text
    x = np.random.default_rng(3).uniform(-4, 4, (SAMPLES, 7, 7, 4))
    check = compare_layers(design, x)
    assert check.first is None, check.summary()
    assert set(check.compared) >= set(NARROW)
    trace = Emulator(design.program, design.image).trace(x)
    for name in NARROW:  # the accumulators do saturate: their largest value reaches the output
        layer = design.program.layer(name)
        assert np.any(trace[name] == layer.accum.max_code << (layer.result.frac - layer.accum.frac)), name
    if strategy == "Resource":
        assert design.program.layer("dwa").attrs["reuse_factor"] == reuse
        assert design.image.get("dwa", "weight").axes == (3, 0, 1, 2)  # stored transposed, compared above
        assert depthwise.layer_order(design.program.layer("dwa"), 4, 9) is not None
        monkeypatch.setattr(depthwise, "layer_order", lambda *_: None)
        positions = Emulator(design.program, design.image).trace(x)
        assert np.any(positions["dwa"] != trace["dwa"])  # the order shows: the comparison above sees it


@needs_gxx
@pytest.mark.slow
@pytest.mark.parametrize("storage", ["float16", "float32"])
def test_engine_equals_full_emulation_with_float_stored_arrays(designs, storage):
    """Depthwise, pointwise and folded arrays stored as floats (weight scaling's float storage): the
    depthwise kernel's real-valued path, through the engine."""
    from hwflow.harden.scale import plan_rule

    model, design = designs("2d", "parallel", "Latency", 1)
    image = plan_rule(design.image, storage).apply(design.image)
    assert image.get("dw", "weight").format.kind.value == storage
    hurt, _ = check_engine(design.program, image, inputs(model, 60), seed=8)
    assert hurt > 5


def test_resource_order_refuses_reuse_factors_hls4ml_does_not_cover():
    from hwflow.emulator.depthwise import resource_order

    order = resource_order(36, 4, 3)  # rf <= channels: the reuse loop is outer, (i mod 3, i) per channel
    assert order.shape == (4, 9)
    assert all(sorted(row) == list(range(9)) for row in order)
    assert not np.array_equal(order[0], np.arange(9))
    # a multiple of the channels (rf_gt_nout_rem0): still ordered by (i mod 12, i) over i = 4 * k + c
    np.testing.assert_array_equal(resource_order(36, 4, 12), [[0, 3, 6, 1, 4, 7, 2, 5, 8]] * 4)
    with pytest.raises(UnsupportedLayerError, match="reuse factor 5"):
        resource_order(36, 4, 5)  # the loops would read past the 36 weights


@pytest.mark.slow
def test_a_users_hls4ml_configuration_of_separable_layers_is_accepted(models, tmp_path):
    """hls4ml's own per-layer configuration of the 2D model, given as the user's: the entries hls4ml derives
    for the split layers (the depthwise half's bias is a zero uint<1> whatever it says) pass the check."""
    import hls4ml

    from hwflow.convert import convert, parse_hls_config, program_from_hls, resolve_options
    from hwflow.convert.hls import quiet

    with quiet():
        config = hls4ml.utils.config_from_keras_model(models["2d"], granularity="name", backend="Vitis")
    assert config["LayerName"]["sep"]["Precision"]["bias"] != "auto"
    hls = convert(models["2d"], resolve_options(parse_hls_config(config, "user.yaml"), io="parallel"), tmp_path)
    assert hls.hwflow_config.checked > 0
    names = [layer.name for layer in program_from_hls(hls).layers]
    assert {"sep_depthwise", "sep_pointwise", "sepk_depthwise", "sepk_pointwise"} <= set(names)
