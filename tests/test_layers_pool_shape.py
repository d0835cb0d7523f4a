"""Pooling and shape layers (issue 13): average, global average and global max pooling, zero padding,
cropping, nearest upsampling, reshape / flatten and dropout, against hls4ml's C simulation (logits and
every traced layer, io_parallel and io_stream), through the delta engine (equal to full emulation over
seeded fault maps), and refused where hls4ml's C simulation would abort."""

from __future__ import annotations

import numpy as np
import pytest

from hwflow.emulator import Emulator, Kind, LayerSpec, Program
from hwflow.fixed import parse_type
from tests.conftest import needs_gxx

POOL_SHAPE_KINDS = {Kind.POOL1D, Kind.POOL2D, Kind.GLOBALPOOL1D, Kind.GLOBALPOOL2D, Kind.ZEROPAD1D,
                    Kind.ZEROPAD2D, Kind.CROP1D, Kind.CROP2D, Kind.RESIZE, Kind.RESHAPE}
SAMPLES = 40


def pool_shape_model(io: str, seed: int = 0):
    """One QKeras CNN holding every kind of the family, 2D then 1D (a Reshape between), with odd sizes,
    strides and ``same`` padding where the io type allows it (io_stream pooling has no padding, and
    its 2D windows equal their strides)."""
    import tensorflow as tf
    from qkeras import QActivation, QConv1D, QConv2D, QDense, quantized_bits, quantized_relu

    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(seed)

    def q():
        return quantized_bits(8, 2, alpha=1)

    stream = io == "stream"
    x = inp = layers.Input((11, 13, 2), name="image")
    x = QConv2D(12, 3, padding="same", kernel_quantizer=q(), bias_quantizer=q(), name="conv1")(x)
    x = QActivation(quantized_relu(8, 3), name="relu1")(x)
    if stream:
        x = layers.AveragePooling2D((3, 2), name="avg1")(x)
    else:
        x = layers.AveragePooling2D(3, strides=2, padding="same", name="avg1")(x)
    x = layers.ZeroPadding2D(((1, 2), (2, 1)), name="pad1")(x)
    x = layers.Cropping2D(((1, 0), (0, 2)), name="crop1")(x)
    x = layers.UpSampling2D((2, 3), name="up1")(x)
    x = layers.AveragePooling2D(2, name="avg2")(x)
    x = layers.Dropout(0.3, name="drop")(x)
    x = layers.Reshape((x.shape[1] * x.shape[2], 12), name="to1d")(x)
    if stream:
        x = layers.AveragePooling1D(3, strides=2, name="avg3")(x)
    else:
        x = layers.AveragePooling1D(3, strides=2, padding="same", name="avg3")(x)
    x = layers.ZeroPadding1D((1, 2), name="pad2")(x)
    x = layers.Cropping1D((2, 1), name="crop2")(x)
    x = layers.UpSampling1D(2, name="up2")(x)
    length = x.shape[1]
    x = layers.Flatten(name="flat")(x)
    x = layers.Reshape((length, 12), name="unflat")(x)
    x = QConv1D(12, 3, kernel_quantizer=q(), bias_quantizer=q(), name="conv2")(x)
    x = layers.GlobalAveragePooling1D(name="gap1")(x)  # onto fixed<16,6>: fewer fractional bits than conv2's
    x = layers.Reshape((3, 4), name="r1")(x)
    x = layers.GlobalMaxPooling1D(name="gmp1")(x)
    x = layers.Reshape((1, 2, 2), name="r2")(x)
    x = layers.GlobalAveragePooling2D(name="gap2")(x)
    x = layers.Reshape((1, 1, 2), name="r3")(x)
    x = layers.GlobalMaxPooling2D(name="gmp2")(x)
    x = QDense(3, kernel_quantizer=q(), bias_quantizer=q(), name="out")(x)
    return tf.keras.Model(inp, x)


def _inputs(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 2.0, (n, 11, 13, 2)).astype(np.float32)


NARROW = {  # accumulators set in hls4ml's configuration: fewer fractional bits than the input, saturating, wrapping
    "avg2": "fixed<12,4,RND,SAT>",
    "avg3": "fixed<10,3,TRN,SAT>",
    "gmp1": "fixed<8,3,TRN,WRAP>",
    "gap2": "fixed<4,0,RND_CONV,SAT_SYM>",
}
"""The other pooling layers keep hls4ml's inferred accumulators (``avg1``; ``gap1``'s default fixed<16,6>)."""


def _converted(io: str, out):
    """Converted by hls4ml itself with hwflow's per-layer configuration plus the ``NARROW`` accumulators."""
    import hls4ml

    from hwflow.convert import HlsOptions, image_from_hls, program_from_hls
    from hwflow.convert.hls import hls_config, quiet
    from hwflow.verify import CSimModel

    model = pool_shape_model(io)
    config = hls_config(model, HlsOptions.make(io))
    for name, accum in NARROW.items():
        config["LayerName"][name]["Precision"].update(accum=accum, result="fixed<16,6>")
    with quiet():
        hls = hls4ml.converters.convert_from_keras_model(model, hls_config=config, io_type=f"io_{io}",
                                                         backend="Vitis", output_dir=str(out))
    return CSimModel(hls, program_from_hls(hls), image_from_hls(hls), out)


@pytest.fixture(scope="module", params=["parallel", "stream"])
def compared(request, tmp_path_factory):
    """The model converted, compiled once with tracing (hls4ml's trace compiles), every layer compared."""
    from hwflow.verify import compare_layers

    csim = _converted(request.param, tmp_path_factory.mktemp(f"poolshape-{request.param}"))
    x = _inputs(SAMPLES)
    check = compare_layers(csim, x)  # compiles the C simulation with every layer traced
    return csim, x, check


@needs_gxx
@pytest.mark.slow
def test_every_layer_and_the_logits_equal_csim(compared):
    csim, x, check = compared
    kinds = {layer.kind for layer in csim.program.layers}
    assert POOL_SHAPE_KINDS <= kinds, POOL_SHAPE_KINDS - kinds
    assert check.first is None, check.summary()
    reshapes = {layer.name for layer in csim.program.layers if layer.kind in (Kind.INPUT, Kind.RESHAPE)}
    assert set(check.not_compared) <= reshapes, check.not_compared  # hls4ml traces every other layer
    for name in ("avg1", "pad1", "crop1", "up1", "avg2", "avg3", "pad2", "crop2", "up2", "gap1", "gmp1", "gap2",
                 "gmp2", "out"):
        assert name in check.compared, name
    for name, accum in NARROW.items():
        assert str(csim.program.layer(name).accum) == str(parse_type(accum)), name
    logits = Emulator(csim.program, csim.image).logits(x).reshape(len(x), -1)
    np.testing.assert_array_equal(logits, csim.csim_logits(x))
    gap1 = Emulator(csim.program, csim.image).trace(x)["gap1"]
    assert len(np.unique(gap1, axis=0)) == SAMPLES  # the samples do not collapse onto one output
    assert len(np.unique(logits, axis=0)) > 1


@needs_gxx
@pytest.mark.slow
def test_a_rounding_division_would_not_match(compared, monkeypatch):
    """The C simulation discriminates: dividing by flooring instead of truncating toward zero (what
    ``ap_fixed / unsigned`` does) changes averages the C simulation computed, so the equality above is
    not a coincidence of the data."""
    from hwflow.emulator import pooling

    csim, x, _ = compared
    exact = Emulator(csim.program, csim.image).trace(x)
    monkeypatch.setattr(pooling, "divide", lambda acc, count: np.asarray(acc, dtype=np.int64) // count)
    floored = Emulator(csim.program, csim.image).trace(x)
    assert any((exact[name] != floored[name]).any() for name in ("gap1", "gap2", "avg3"))


@needs_gxx
@pytest.mark.slow
def test_each_narrow_accumulator_changes_its_layer(compared):
    """With a wide wrapping accumulator instead, each ``NARROW`` layer computes another output on these
    samples: the C-simulation equality above sees the rounding, saturation and wrap of each."""
    from dataclasses import replace

    csim, x, _ = compared
    trace = Emulator(csim.program, csim.image).trace(x)
    for name in NARROW:
        i = csim.program.index(name)
        layer = csim.program.layers[i]
        wide = replace(layer, accum=parse_type("fixed<40,20>"))
        program = Program(csim.program.layers[:i] + (wide,) + csim.program.layers[i + 1 :], csim.program.io_type)
        out = Emulator(program, csim.image, fused=False).run_codes(trace[layer.inputs[0]], start=layer.inputs[0],
                                                                   upto=name)
        assert np.any(out != trace[name]), name


@needs_gxx
@pytest.mark.slow
def test_engine_equals_full_emulation_through_the_family(compared):
    from hwflow.campaign import TrialEvaluator
    from hwflow.faults import fault_model_from_spec

    csim = compared[0]
    program, image = csim.program, csim.image
    x = _inputs(60, seed=2)
    y = np.argmax(Emulator(program, image).run(x), axis=-1)
    evaluator = TrialEvaluator(program, image, x, y, chunk=32)
    rng = np.random.default_rng(7)
    specs = [{"model": "bitflip"}, {"model": "stuck-at", "value": 1}, {"model": "bitflip", "bits": ["msb"]}]
    hurt = 0
    for i in range(18):
        faultmap = fault_model_from_spec(specs[i % 3], [1e-3, 3e-3, 1e-2][i // 6]).sample(image, rng)
        reference = Emulator(program, faultmap.apply(image)).run(x)
        np.testing.assert_array_equal(evaluator.output_codes(faultmap), reference, err_msg=str(i))
        outcome = evaluator.evaluate(faultmap)
        assert outcome == evaluator.full_evaluate(faultmap, x), i
        hurt += outcome.mismatches > 0
    assert hurt > 3


def _diff_block(clean: np.ndarray, faulty: np.ndarray) -> list:
    """The traced difference of one layer as the engine carries it (one block, or none)."""
    from hwflow.campaign.delta import Block

    differs = clean != faulty
    lead = differs.reshape(len(clean), -1, differs.shape[-1])
    samples = np.flatnonzero(lead.any(axis=(1, 2)))
    if not len(samples):
        return []
    channels = np.flatnonzero(lead[samples].any(axis=(0, 1)))
    return [Block(samples, channels, np.take(faulty[samples], channels, axis=-1).astype(np.float64))]


@needs_gxx
@pytest.mark.slow
def test_each_rule_of_the_family_gives_the_traced_difference(compared):
    """Per layer: the family's per-channel rules (not the generic recompute), given the traced input
    difference, return exactly the traced output difference of two full runs."""
    from hwflow.campaign import TrialEvaluator
    from hwflow.campaign.delta import rule_for
    from hwflow.campaign.delta.channelwise import Channelwise
    from hwflow.campaign.delta.state import apply
    from hwflow.faults import fault_model_from_spec

    csim = compared[0]
    program, image = csim.program, csim.image
    x = _inputs(40, seed=3)
    evaluator = TrialEvaluator(program, image, x, np.zeros(len(x), dtype=np.int64))
    clean = Emulator(program, image).trace(x)
    rng = np.random.default_rng(11)
    checked = set()
    for i in range(6):
        faultmap = fault_model_from_spec({"model": "bitflip"}, [3e-3, 1e-2][i % 2]).sample(image, rng)
        faulty = Emulator(program, faultmap.apply(image)).trace(x)
        for layer in program.layers[1:]:
            if layer.kind not in POOL_SHAPE_KINDS - {Kind.RESHAPE}:
                continue
            assert isinstance(rule_for(layer), Channelwise), layer.name
            inputs = _diff_block(clean[layer.inputs[0]], faulty[layer.inputs[0]])
            if not inputs:
                continue
            out = rule_for(layer).delta(evaluator.layer_step(layer.name, inputs, faultmap))
            np.testing.assert_array_equal(apply(out, clean[layer.name]), faulty[layer.name], err_msg=layer.name)
            checked.add(layer.kind)
    assert POOL_SHAPE_KINDS - {Kind.RESHAPE} == checked


# --- kernels on codes: hls4ml's arithmetic, spelled out -------------------------------------------------


def _program(layer: LayerSpec, x_type: str, in_shape, io: str = "io_parallel") -> Program:
    inp = LayerSpec("x", Kind.INPUT, (), tuple(in_shape), parse_type(x_type))
    return Program((inp, layer), io)


def test_average_divides_by_the_real_pixels_and_truncates_toward_zero():
    """A 2x2 window over a padded corner averages its one real pixel; -3/2 gives -1 (not -2)."""
    t = parse_type("fixed<8,8>")
    layer = LayerSpec("p", Kind.POOL1D, ("x",), (2, 1), t, t,
                      {"pool_op": "Average", "pool_width": 2, "stride_width": 2, "pad_left": 1, "pad_right": 0})
    emu = Emulator(_program(layer, "fixed<8,8>", (3, 1)), _empty_image(), fused=False)
    out = emu.run_codes(np.array([[[-5.0], [-2.0], [-1.0]]]), start="x")
    np.testing.assert_array_equal(out[0, :, 0], [-5, -1])  # -5 / 1 ; (-2 + -1) / 2 = -1.5 -> -1
    counted = LayerSpec(layer.name, layer.kind, layer.inputs, layer.output_shape, t, t,
                        {**layer.attrs, "count_pad": True})
    emu = Emulator(_program(counted, "fixed<8,8>", (3, 1)), _empty_image(), fused=False)
    np.testing.assert_array_equal(emu.run_codes(np.array([[[-5.0], [-2.0], [-1.0]]]), start="x")[0, :, 0], [-2, -1])


def test_stream_and_parallel_add_differently_into_a_narrow_saturating_accumulator():
    """io_parallel adds the window in order onto accum_t; io_stream casts each value to accum_t first and
    adds in hls4ml's balanced tree: with a saturating accumulator the two differ, as in the C++."""
    from hwflow.emulator.pooling import _sum_in_order, _sum_tree

    acc = parse_type("fixed<4,4,TRN,SAT>")
    x_type = parse_type("fixed<4,4>")
    values = np.array([[[7], [7], [-8]]])  # in order: 7, sat(14)=7, -1 ; tree: sat(7+7)=7, 7-8=-1
    assert _sum_in_order(values, x_type, acc)[0, 0] == -1
    values = np.array([[[-8], [7], [7]]])  # in order: -8, -1, 6 ; tree: (-8+7)=-1, -1+7=6
    assert _sum_tree(values, acc)[0, 0] == 6
    values = np.array([[[7], [7], [7], [-8], [-8]]])  # tree of 5: (7+7 sat 7)+(7-8=-1)=6, then 6-8=-2
    assert _sum_tree(values, acc)[0, 0] == -2
    assert _sum_in_order(values, x_type, acc)[0, 0] == -8  # 7, 7, 7, -1, then -9 saturates


def test_nearest_resize_follows_hls4ml_index_arithmetic():
    from hwflow.emulator.shape import source_index

    np.testing.assert_array_equal(source_index(3, 6, "io_parallel"), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(source_index(3, 9, "io_stream"), [0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert source_index(3, 7, "io_parallel").tolist() == [((i * ((3 << 16) // 7 + 1)) >> 16) for i in range(7)]


def test_average_pooling_is_never_hoisted_as_max():
    """The fused path and the engine move only max pooling before the layers in front of it."""
    from hwflow.campaign.delta.hoist import chains
    from hwflow.emulator.fused import groups

    t = parse_type("ufixed<8,3>")
    relu = LayerSpec("r", Kind.ACTIVATION, ("x",), (4, 2), t, attrs={"activation": "relu"})
    pool = LayerSpec("p", Kind.POOL1D, ("r",), (2, 2), t, parse_type("ufixed<10,4>"),
                     {"pool_op": "Average", "pool_width": 2, "stride_width": 2, "pad_left": 0, "pad_right": 0})
    program = Program((LayerSpec("x", Kind.INPUT, (), (4, 2), parse_type("fixed<8,3>")), relu, pool))
    assert chains(program) == {}
    assert all(g.pool is None for g in groups(program, 1, 2))
    x = np.array([[[-3, 5], [9, 1], [4, 4], [2, 7]]], dtype=np.float64)
    fused = Emulator(program, _empty_image()).run_codes(x, start="x")
    plain = Emulator(program, _empty_image(), fused=False).run_codes(x, start="x")
    np.testing.assert_array_equal(fused, plain)
    # relu: (0, 5) (9, 1) (4, 4) (2, 7); window sums 9, 6 / 6, 11 halved in accum_t (one more fractional
    # bit: 9, 6 / 6, 11 there), then truncated to res_t: 4.5 -> 4, 3, 3, 5.5 -> 5
    np.testing.assert_array_equal(fused[0], [[4, 3], [3, 5]])


def test_stream_max_pooling_compares_after_a_wrapping_accumulator_cast():
    """io_stream's reduce_pool compares values already cast to accum_t; where that cast wraps, the
    maximum is taken after it, and no path pools the ReLU first."""
    from hwflow.campaign.delta.hoist import chains

    relu_t, acc = parse_type("ufixed<8,3>"), parse_type("fixed<4,1,TRN,WRAP>")  # 0..8 wraps into -1..0.875
    relu = LayerSpec("r", Kind.ACTIVATION, ("x",), (4, 1), relu_t, attrs={"activation": "relu"})
    pool = LayerSpec("p", Kind.POOL1D, ("r",), (2, 1), parse_type("fixed<8,3>"), acc,
                     {"pool_op": "Max", "pool_width": 2, "stride_width": 2, "pad_left": 0, "pad_right": 0})
    x = np.array([[[32.0], [4.0], [8.0], [40.0]]])  # ufixed<8,3> codes: 1.0, 0.125, 0.25, 1.25
    # in accum_t 1.0 wraps to -1.0 and 1.25 to -0.75; results in fixed<8,3> codes (1/32)
    expected = {"io_parallel": [-32, -24],  # the maxima 1.0 and 1.25, then cast (wrapped)
                "io_stream": [4, 8]}  # the casts -1.0, 0.125 and 0.25, -0.75, then their maxima
    for io, want in expected.items():
        program = Program((LayerSpec("x", Kind.INPUT, (), (4, 1), relu_t), relu, pool), io)
        for fused in (True, False):
            out = Emulator(program, _empty_image(), fused=fused).run_codes(x, start="x")
            np.testing.assert_array_equal(out[0, :, 0], want, err_msg=f"{io} fused={fused}")
        assert (chains(program) == {}) == (io == "io_stream")


def _empty_image():
    from hwflow.image import WeightImage

    return WeightImage(())


# --- refusals --------------------------------------------------------------------------------------------


def test_keras_check_accepts_the_family_and_refuses_what_it_cannot_follow():
    import tensorflow as tf

    from hwflow.errors import UnsupportedLayerError
    from hwflow.zoo import check_supported

    check_supported(pool_shape_model("parallel"))
    layers = tf.keras.layers
    for bad, words in [(layers.UpSampling2D(2, interpolation="bilinear", name="u"), "bilinear"),
                       (layers.GlobalAveragePooling2D(keepdims=True, name="g"), "keepdims"),
                       (layers.AveragePooling2D(2, data_format="channels_first", name="a"), "channels_first"),
                       (layers.Reshape((-1, 2), name="r"), "-1")]:
        inp = layers.Input((4, 4, 2))
        with pytest.raises(UnsupportedLayerError, match=words) as err:
            check_supported(tf.keras.Model(inp, bad(inp)))
        assert f"'{bad.name}'" in str(err.value)


@pytest.mark.slow
def test_padded_stream_pooling_is_refused_before_the_csim_aborts(tmp_path):
    import tensorflow as tf

    from hwflow.convert import HlsOptions, convert, program_from_hls
    from hwflow.errors import UnsupportedLayerError

    layers = tf.keras.layers
    for pool, words in [(layers.AveragePooling2D(2, padding="same", name="p"), "padding"),
                        (layers.MaxPooling2D(3, strides=2, name="p"), "strides")]:
        inp = layers.Input((5, 5, 2), name="image")
        model = tf.keras.Model(inp, layers.Flatten(name="f")(pool(inp)))
        hls = convert(model, HlsOptions.make("stream"), tmp_path / words)
        with pytest.raises(UnsupportedLayerError, match=f"layer 'p'.*{words}"):
            program_from_hls(hls)
