"""QDepthwiseConv2DBatchnorm through hls4ml (``hwflow.convert.dwbn_hls``), against its real C simulation.

One small model holds three folded depthwise layers (3x3 stride 1 ``same``; 3x3 stride 2 ``valid`` without
a bias; 2x2 stride 2 ``same``), with random batch-norm statistics so that each fold does something. It is
compiled once per design: io_parallel Latency and io_stream Resource (the stored kernel transposed); weight
scaling and the C-simulation board (io_stream Resource, reuse factor 3, arrays in BRAM) build their own.
"""

from __future__ import annotations

import numpy as np
import pytest

from hwflow.convert import HlsOptions
from hwflow.emulator import Emulator, Kind
from tests.conftest import needs_gxx
from tests.test_layers_conv import check_engine

Q = "quantized_bits(6,0,alpha=1)"
SAMPLES = 60
DESIGNS = [("parallel", "Latency"), ("stream", "Resource")]
FOLDED = ("dwbn1", "dwbn2", "dwbn3")


def build(seed: int = 0):
    import tensorflow as tf
    from qkeras import QActivation, QDense, QDepthwiseConv2DBatchnorm

    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((9, 9, 3), name="x")
    x = QDepthwiseConv2DBatchnorm((3, 3), padding="same", depthwise_quantizer=Q, bias_quantizer=Q, name="dwbn1")(inp)
    x = QActivation("quantized_relu(6)", name="r1")(x)
    x = QDepthwiseConv2DBatchnorm((3, 3), strides=(2, 2), padding="valid", use_bias=False, depthwise_quantizer=Q,
                                  bias_quantizer=Q, folding_mode="batch_stats_folding", ema_freeze_delay=10,
                                  name="dwbn2")(x)
    x = QActivation("quantized_relu(6)", name="r2")(x)
    x = QDepthwiseConv2DBatchnorm((2, 2), strides=(2, 2), padding="same", depthwise_quantizer=Q, bias_quantizer=Q,
                                  name="dwbn3")(x)
    x = QActivation("quantized_relu(6)", name="r3")(x)
    x = tf.keras.layers.Flatten(name="flat")(x)
    x = QDense(3, kernel_quantizer=Q, bias_quantizer=Q, name="out")(x)
    model = tf.keras.Model(inp, x, name="dwbn_kinds")
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # random weights and batch-norm statistics, as training leaves them
        values = []
        for w in layer.weights:
            name, shape = w.name.split("/")[-1].split(":")[0], tuple(w.shape)
            if w.dtype.is_integer:  # QKeras's folding iteration counter
                values.append(w.numpy())
            elif name == "moving_variance":
                values.append(rng.uniform(0.2, 1.5, shape))
            elif name == "gamma":
                values.append(rng.uniform(0.5, 1.5, shape))
            elif name == "moving_mean":
                values.append(rng.normal(0, 0.3, shape))
            elif name == "depthwise_kernel" and layer.name == "dwbn3":  # small folded words: weight scaling shifts them
                values.append(rng.uniform(-0.08, 0.08, shape))
            else:
                values.append(rng.uniform(-0.9, 0.9, shape))
        if values:
            layer.set_weights(values)
    return model


def inputs(model, n: int = SAMPLES, seed: int = 1) -> np.ndarray:
    """On a 2**-5 grid: exact in hls4ml's input type, and its products with the 5-fraction-bit kernel fit the first
    accumulator (hls4ml gives it the input's fixed<16,6>), so hls4ml's sums are exact like QKeras's."""
    x = np.random.default_rng(seed).uniform(-0.5, 1.5, (n,) + model.input_shape[1:])
    return np.round(x * 32) / 32


@pytest.fixture(scope="module")
def model():
    return build()  # no registration here: convert() itself registers the handler with hls4ml


@pytest.fixture(scope="module")
def designs(model, tmp_path_factory):
    from hwflow.verify import build_csim

    built = {}

    def get(io, strategy):
        if (io, strategy) not in built:
            options = HlsOptions.make(io, strategy=strategy)
            built[io, strategy] = build_csim(model, options, tmp_path_factory.mktemp(f"dwbn-{io}"))
        return built[io, strategy]

    return get


@pytest.fixture(params=DESIGNS, ids=lambda d: "-".join(d))
def design(request, designs):
    return designs(*request.param)


def test_keras_check_accepts_it(model):
    from hwflow.zoo.loading import check_supported

    check_supported(model)


@needs_gxx
@pytest.mark.slow
def test_logits_and_every_layer_equal_csim(model, design):
    from hwflow.verify import compare_layers

    x = inputs(model)
    np.testing.assert_array_equal(Emulator(design.program, design.image).logits(x).reshape(len(x), -1),
                                  design.csim_logits(x))
    check = compare_layers(design, x)
    assert check.first is None, check.summary()
    assert set(check.not_compared) <= {"x", "flat"}
    assert set(FOLDED) <= set(check.compared)
    assert all(design.program.layer(name).kind is Kind.DEPTHWISE2D for name in FOLDED)


@needs_gxx
@pytest.mark.slow
def test_csim_equals_qkeras_predict(model, design):
    """Bit-exact against QKeras itself: the stored words are QKeras's inference fold through its quantizers,
    each ``quantized_relu`` rounds half to even on the grid of hls4ml's ``ufixed<6,0,RND_CONV,SAT>``, the
    inputs are on a grid where every accumulator of hls4ml is exact, and QKeras's float32 sums of these
    few-bit products are exact too. (Off such a grid, hls4ml's first accumulator, its input's
    ``fixed<16,6>``, truncates products and the logits differ by a few LSBs, as for any hls4ml conv.)"""
    x = inputs(model)
    keras = model.predict(x, verbose=0)
    np.testing.assert_array_equal(design.csim_logits(x), keras)
    assert np.ptp(keras) > 0.5  # the logits do vary


@needs_gxx
@pytest.mark.slow
def test_stored_words_are_qkeras_folded_ones(model, design):
    """QKeras's own ``get_folded_weights`` through the layer's quantizers: the very values stored (and faulted);
    Resource stores the kernel transposed like a Conv's."""
    resource = design.program.source.get("strategy") == "Resource"
    for name in FOLDED:
        layer = model.get_layer(name)
        kernel, bias = layer.get_folded_weights()
        kernel = layer.depthwise_quantizer_internal(kernel).numpy()
        bias = layer.bias_quantizer_internal(bias).numpy()
        stored = design.image.get(name, "weight")
        np.testing.assert_array_equal(stored.values(), kernel, err_msg=name)
        np.testing.assert_array_equal(design.image.get(name, "bias").values(), bias, err_msg=name)
        assert stored.axes == ((3, 0, 1, 2) if resource else (0, 1, 2, 3)), name
        raw = layer.depthwise_quantizer_internal(layer.depthwise_kernel).numpy()
        assert not np.array_equal(kernel, raw), name  # the fold did change the words
    assert np.any(design.image.get("dwbn2", "bias").values() != 0)  # no use_bias: the folded bias is still stored


@needs_gxx
@pytest.mark.slow
def test_engine_equals_full_emulation(model, design):
    hurt, touched = check_engine(design.program, design.image, inputs(model, 50), seed=5)
    assert hurt > 3
    folded = {a.key for a in design.image if a.layer in FOLDED}
    assert len(folded) == 2 * len(FOLDED)
    assert folded <= touched, folded - touched  # faults landed in every folded array


@needs_gxx
@pytest.mark.slow
def test_weight_scaling_of_the_folded_arrays_equals_csim(model, tmp_path):
    """The rule's power-of-two shifts on the folded words, compiled into the C simulation (the logits; every
    layer is compared unscaled above); then faults through the engine."""
    from hwflow.convert import convert, image_from_hls
    from hwflow.harden.scale import plan_rule
    from hwflow.verify import build_csim

    options = HlsOptions.make("parallel")
    plan = plan_rule(image_from_hls(convert(model, options, tmp_path / "plain")))
    scaled = [key for key, shift in plan.shifts().items() if shift > 0 and key.split("/")[0] in FOLDED]
    assert scaled, plan.shifts()
    design = build_csim(model, options, tmp_path / "scaled", storage=plan)
    assert all(not design.image.get(*key.split("/")).scale.is_identity for key in scaled)
    x = inputs(model)
    np.testing.assert_array_equal(Emulator(design.program, design.image).logits(x).reshape(len(x), -1),
                                  design.csim_logits(x))
    hurt, _ = check_engine(design.program, design.image, inputs(model, 40), seed=6)
    assert hurt > 3


@needs_gxx
@pytest.mark.slow
def test_csim_board_with_the_folded_arrays_in_bram(model, tmp_path):
    """The built design (io_stream, Resource, every array in BRAM behind the host port): fault-free and under
    fault maps written through the port, it equals the emulator word for word."""
    from hwflow.hardware.boards import load_board
    from hwflow.hardware.csim_board import CSimBoard, board_image, check_board, sample_fault_maps
    from hwflow.hardware.project import BuildOptions, generate

    options = HlsOptions.make("stream", strategy="Resource", reuse_factor=3)
    build = generate(model, load_board("pynq-z2"), tmp_path / "build", BuildOptions(options, min_words=1))
    assert {a.key for a in build.image if a.layer in FOLDED} <= set(build.manifest.keys)
    board = CSimBoard(tmp_path / "build")
    maps = sample_fault_maps(board_image(build.image, build.manifest), 12, seed=5)
    result = check_board(board, build.program, build.image, inputs(model, 16), maps)
    assert result.ok, result.summary()
