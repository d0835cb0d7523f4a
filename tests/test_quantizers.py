"""QKeras binary, ternary, po2 and alpha quantizers: the stored words, the products, the eleven models
after hls4ml's own QKeras tests and a deep binary network against hls4ml's C simulation (every layer),
and the delta engine against full emulation with faults in XNOR, ternary and exponent words."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from hwflow.errors import FormatError, UnsupportedLayerError
from hwflow.fixed import FixedType
from hwflow.image import Scale, StorageFormat, StoredArray, WeightImage, quantized
from tests.conftest import needs_gxx

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# --- the stored formats ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "width"), [("xnor", 1), ("ternary", 2), ("exponent<5>", 6), ("exponent<18>", 19)])
def test_formats_round_trip(text, width):
    fmt = StorageFormat.parse(text)
    assert fmt.width == width
    assert StorageFormat.parse(str(fmt)) == fmt


def test_words_decode_as_the_products_read_them():
    """weight_binary: 0 is -1; weight_ternary: the word 10 (-2) multiplies like +1; exponents packed."""
    np.testing.assert_array_equal(quantized.xnor_codes(np.array([0, 1])), [-1, 1])
    np.testing.assert_array_equal(quantized.ternary_codes(np.array([0, 1, 2, 3])), [0, 1, 1, -1])
    words = quantized.exponent_words(np.array([1, 0, 1]), np.array([3, -4, -1]), 3)
    np.testing.assert_array_equal(words, [0b0111, 0b1000, 0b1111])
    sign, e = quantized.exponent_fields(words, 3)
    np.testing.assert_array_equal(sign, [1, 0, 1])
    np.testing.assert_array_equal(e, [3, -4, -1])
    np.testing.assert_array_equal(quantized.exponent_values(words, 3), [8.0, -1 / 16, 0.5])


def test_quantized_arrays_refuse_scales_and_survive_a_bundle(tmp_path):
    fmt = StorageFormat.parse("ternary")
    with pytest.raises(FormatError, match="cannot be scaled"):
        StoredArray("d", "weight", "w2", (2,), (0,), fmt, Scale(1), np.array([1, 3]))
    arrays = (StoredArray("d", "weight", "w2", (2, 2), (1, 0), fmt, Scale(), np.array([0, 1, 2, 3])),
              StoredArray("e", "weight", "w3", (3,), (0,), StorageFormat.parse("exponent<4>"), Scale(),
                          np.array([0, 31, 17])),
              StoredArray("f", "weight", "w4", (2,), (0,), StorageFormat.parse("xnor"), Scale(), np.array([0, 1])))
    image = WeightImage(arrays)
    image.save(tmp_path)
    back = WeightImage.load(tmp_path)
    assert back.equal_words(image)
    assert [a.format for a in back] == [a.format for a in image]
    np.testing.assert_array_equal(back.get("d", "weight").codes(), [[0, 1], [1, -1]])  # transposed back
    assert back.get("d", "weight").compute_type() == quantized.MULTIPLIER_TYPE
    assert image.total_bits == 4 * 2 + 3 * 5 + 2


# --- the po2 product, against an independent reference ---------------------------------------------


def _shift_reference(a: int, x_type: FixedType, sign: int, e: int, bits: int) -> int:
    """weight_exponential in plain Python: r_T = ap_fixed<2(E+Wx), E+Wx>, (r_T)a << e, negated if sign == 0."""
    wr, fr = 2 * (bits + x_type.width), bits + x_type.width

    def wrap(v):
        v &= (1 << wr) - 1
        return v - (1 << wr) if v >> (wr - 1) else v

    big = wrap(a << (fr - x_type.frac))
    if e >= wr:
        y = 0 if e == wr or big >= 0 or wr > 64 else -1
    elif e >= 0:
        y = wrap(big << e)
    else:
        y = 0 if -e == wr and wr <= 64 else big >> min(-e, wr + 1)
    return y if sign == 1 else wrap(-y)


def test_exponent_products_equal_the_reference_for_every_shift():
    from hwflow.emulator.products import exponent_products

    x_type = FixedType(8, 3)
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, 400)
    e = rng.integers(-40, 40, 400)
    sign = rng.integers(0, 2, 400)
    ours = exponent_products(a, x_type, sign, e, 6)
    assert [int(v) for v in ours] == [_shift_reference(int(p), x_type, int(s), int(q), 6)
                                      for p, s, q in zip(a, sign, e, strict=True)]


def test_exponent_dense_fast_path_equals_the_shift_path(monkeypatch):
    """Exponents inside r_T's exact range run as +-2**e fixed-point multipliers: the same codes as shifting."""
    from hwflow.emulator import products

    x_type, accum, result = FixedType(10, 4), FixedType(24, 12), FixedType(12, 6)
    rng = np.random.default_rng(1)
    x = rng.integers(-512, 512, (30, 7))
    exps = products.Exponents(rng.integers(0, 2, (7, 5)), rng.integers(-6, 5, (7, 5)), 5)
    bias, b_type = rng.integers(-40, 40, 5), FixedType(8, 4)
    assert products.exact_multipliers(exps, x_type) is not None
    fast = products.linear_exponent(x, x_type, exps, bias, b_type, accum, result)
    monkeypatch.setattr(products, "exact_multipliers", lambda *a: None)
    slow = products.linear_exponent(x, x_type, exps, bias, b_type, accum, result)
    np.testing.assert_array_equal(fast, slow)


# --- the Keras-level check -------------------------------------------------------------------------


def test_keyword_forms_pass_the_keras_check():
    from qkeras import QDense
    from tensorflow.keras.layers import Input
    from tensorflow.keras.models import Model

    from hwflow.zoo.loading import check_supported

    inp = Input((10,))
    out = QDense(4, kernel_quantizer="quantized_bits(4, 0, alpha=1)", bias_quantizer="quantized_bits(4, 0, alpha=1)",
                 activation="quantized_relu(2, 0)")(inp)
    check_supported(Model(inp, out))
    out = QDense(4, kernel_quantizer="binary", bias_quantizer="binary", activation="binary")(inp)
    check_supported(Model(inp, out))


@pytest.mark.parametrize(("kw", "match"), [
    ({"kernel_quantizer": "stochastic_binary()"}, "kernel_quantizer stochastic_binary is not supported"),
    ({"kernel_quantizer": "quantized_bits(4, 0, alpha='auto')"}, "alpha='auto' is not supported"),
    ({"bias_quantizer": "quantized_po2(4)"}, "bias_quantizer quantized_po2 is not supported"),
    ({"kernel_quantizer": "quantized_ulaw(8, 0)"}, "quantized_ulaw is not supported"),
])
def test_quantizers_hls4ml_cannot_follow_are_refused_by_name(kw, match):
    from qkeras import QDense
    from tensorflow.keras.layers import Input
    from tensorflow.keras.models import Model

    from hwflow.zoo.loading import check_supported

    inp = Input((10,))
    model = Model(inp, QDense(4, name="fc", **kw)(inp))
    with pytest.raises(UnsupportedLayerError, match=rf"layer 'fc' \(QDense\).*{match}"):
        check_supported(model)


# --- the eleven models of hls4ml's test_qkeras.py, and a deep binary network ------------------------


def _btnn(kernel, bias, activation, batchnorm):
    """test_btnn's make_btnn: QDense(10) [-> BatchNormalization] -> QActivation."""
    from qkeras import QActivation, QDense
    from tensorflow.keras.layers import BatchNormalization
    from tensorflow.keras.models import Sequential

    model = Sequential([QDense(10, input_shape=(10,), kernel_quantizer=kernel, bias_quantizer=bias, name="dense")])
    if batchnorm:
        model.add(BatchNormalization(name="bn"))
    model.add(QActivation(activation=activation))
    return model


def _eleven(name: str):
    """The model, built as hls4ml's test builds it (comments: where hwflow's configuration differs)."""
    import tensorflow as tf
    from qkeras import QActivation, QDense
    from qkeras.quantizers import binary, quantized_bits, quantized_po2, quantized_relu, ternary
    from tensorflow.keras.layers import Input
    from tensorflow.keras.models import Model, Sequential

    tf.keras.utils.set_random_seed(sum(map(ord, name)))
    if name.startswith("dense-"):  # test_single_dense_activation_exact, bits 4
        alpha = 1 if name == "dense-alpha1" else "auto_po2"
        return Sequential([
            QActivation(activation=quantized_bits(4, 0, alpha=1), input_shape=(16,), name="inp_quant"),
            QDense(16, name="fc1", kernel_quantizer=quantized_bits(4, 0, alpha=alpha),
                   bias_quantizer=quantized_bits(4, 0, alpha=1), kernel_initializer="lecun_uniform"),
            QActivation(activation=quantized_relu(4, 0), name="relu1")])
    cases = {
        "btnn1": (ternary(alpha=1), "binary_tanh", False), "btnn2": (binary(), "binary_tanh", False),
        "btnn3": (ternary(alpha="auto"), binary(), True), "btnn4": (ternary(alpha="auto"), "ternary", True),
        "btnn5": (ternary(alpha="auto"), ternary(threshold=0.2), True),
        "btnn6": (ternary(alpha="auto"), ternary(threshold=0.8), True), "btnn7": (binary(), binary(), False),
    }
    if name in cases:
        kernel, act, bn = cases[name]
        model = _btnn(kernel, quantized_bits(5, 2), act, bn)
        _random_batch_norm(model, np.random.default_rng(len(name)))
        return model
    if name == "po2":  # test_quantised_po2_bit_width: 18-bit exponents; weights scaled to hwflow's fixed<16,6>
        model = Sequential([QDense(6, input_shape=(26,), name="dense",
                                   kernel_quantizer=quantized_po2(18, max_value=2**20))])
        w = model.layers[0].get_weights()
        w[0] = 8 * (np.random.default_rng(0).random(w[0].shape) - 0.5)
        model.layers[0].set_weights(w)
        return model
    inp = Input(shape=(10,))  # test_qactivation_kwarg ('ternary', 'ternary'): keyword forms
    out = QDense(10, activation="ternary", name="qdense", kernel_quantizer="ternary", bias_quantizer="ternary",
                 kernel_initializer="lecun_uniform")(inp)
    return Model(inp, out)


ELEVEN = ["dense-alpha1", "dense-auto-po2", "btnn1", "btnn2", "btnn3", "btnn4", "btnn5", "btnn6", "btnn7", "po2",
          "kwarg-ternary"]

# What each model must exercise (a layer kind, a weight format or a product), so a conversion that
# silently fell back to plain fixed point fails here.
EXPECT = {"dense-auto-po2": "apply_alpha", "btnn1": "ternary", "btnn2": "xnor", "btnn3": "bn_quantized_tanh",
          "btnn4": "bn_quantized_tanh", "btnn5": "bn_quantized_tanh", "btnn6": "bn_quantized_tanh",
          "btnn7": "xnor", "po2": "exponent<18>", "kwarg-ternary": "ternary", "dense-alpha1": "fixed<4,1,TRN,WRAP>"}


def _random_biases(model, rng):
    """Fractional biases (multiples of 1/4 in [-0.75, 0.75]): the casts toward zero and down differ on them."""
    for layer in model.layers:
        if getattr(layer, "use_bias", False) and getattr(layer, "bias", None) is not None:
            w = layer.get_weights()
            w[-1] = rng.choice([-0.75, -0.5, -0.25, 0.25, 0.5, 0.75], w[-1].shape)
            layer.set_weights(w)


def _random_batch_norm(model, rng):
    import tensorflow as tf

    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 2.0, n) * rng.choice([-1, 1], n), rng.normal(0, 0.5, n),
                               rng.normal(0, 1, n), rng.uniform(0.5, 2.0, n)])


def _deep_binary():
    """A binary network as hls4ml converts one: XNOR data between layers (both_binary, data_binary),
    ternary thresholds, po2 weights on unsigned data, binary_tanh and an auto_po2 layer."""
    import tensorflow as tf
    from qkeras import QActivation, QDense
    from qkeras.quantizers import binary, quantized_bits, quantized_po2, quantized_relu, ternary
    from tensorflow.keras.layers import BatchNormalization, Input
    from tensorflow.keras.models import Model

    tf.keras.utils.set_random_seed(0)
    inp = Input((10,), name="x")
    h = QDense(16, kernel_quantizer=binary(), bias_quantizer=quantized_bits(5, 2), name="d1")(inp)
    h = QActivation("binary", name="a1")(BatchNormalization(name="bn1")(h))
    h = QDense(12, kernel_quantizer=binary(), bias_quantizer=quantized_bits(5, 2), name="d2")(h)
    h = QActivation("binary", name="a2")(BatchNormalization(name="bn2")(h))
    h = QDense(10, kernel_quantizer=quantized_bits(4, 0, alpha=1), bias_quantizer=quantized_bits(4, 0, alpha=1),
               name="d3")(h)
    h = QActivation("ternary", name="a3")(BatchNormalization(name="bn3")(h))
    h = QDense(10, kernel_quantizer=ternary(alpha=1), bias_quantizer=quantized_bits(5, 2), name="d4")(h)
    h = QActivation(quantized_relu(3, 0), name="a4")(h)
    h = QDense(8, kernel_quantizer=quantized_po2(5), bias_quantizer=quantized_bits(6, 2), name="d5")(h)
    h = QActivation("binary_tanh", name="a5")(h)
    h = QDense(6, kernel_quantizer=quantized_bits(6, 0, alpha="auto_po2"), bias_quantizer=quantized_bits(6, 0, alpha=1),
               name="d6")(h)
    model = Model(inp, h)
    _random_batch_norm(model, np.random.default_rng(0))
    _random_biases(model, np.random.default_rng(10))
    return model


def _conv_net():
    """Binary, XNOR-data, po2 convolutions (valid and same padding) and an auto_po2 dense."""
    import tensorflow as tf
    from qkeras import QActivation, QConv2D, QDense
    from qkeras.quantizers import binary, quantized_bits, quantized_po2, quantized_relu, ternary
    from tensorflow.keras.layers import BatchNormalization, Flatten, Input
    from tensorflow.keras.models import Model

    tf.keras.utils.set_random_seed(2)
    inp = Input((8, 8, 2), name="x")
    h = QConv2D(4, 3, kernel_quantizer=binary(alpha=1), bias_quantizer=quantized_bits(5, 2), name="c1")(inp)
    h = QActivation("binary", name="a1")(BatchNormalization(name="bn1")(h))
    h = QConv2D(4, 3, padding="same", kernel_quantizer=binary(alpha=1), bias_quantizer=quantized_bits(5, 2),
                name="c2")(h)
    h = QActivation("binary", name="a2")(BatchNormalization(name="bn2")(h))
    h = QConv2D(3, 3, kernel_quantizer=ternary(alpha=1), bias_quantizer=quantized_bits(5, 2), name="c3")(h)
    h = QActivation(quantized_relu(4, 0), name="a3")(h)
    h = QConv2D(3, 2, kernel_quantizer=quantized_po2(4), bias_quantizer=quantized_bits(6, 2), name="c4")(h)
    h = QDense(4, kernel_quantizer=quantized_bits(6, 0, alpha="auto_po2"), bias_quantizer=quantized_bits(6, 0, alpha=1),
               name="d")(Flatten(name="f")(h))
    model = Model(inp, h)
    _random_batch_norm(model, np.random.default_rng(2))
    _random_biases(model, np.random.default_rng(12))
    return model


def _binary_net():
    """The deep network's binary and ternary layers only (no po2 word, which the build cannot hold yet)."""
    import tensorflow as tf
    from qkeras import QActivation, QDense
    from qkeras.quantizers import binary, quantized_bits, ternary
    from tensorflow.keras.layers import BatchNormalization, Input
    from tensorflow.keras.models import Model

    tf.keras.utils.set_random_seed(1)
    inp = Input((10,), name="x")
    h = QDense(16, kernel_quantizer=binary(), bias_quantizer=quantized_bits(5, 2), name="d1")(inp)
    h = QActivation("binary", name="a1")(BatchNormalization(name="bn1")(h))
    h = QDense(12, kernel_quantizer=binary(), bias_quantizer=quantized_bits(5, 2), name="d2")(h)
    h = QActivation("ternary", name="a2")(BatchNormalization(name="bn2")(h))
    h = QDense(6, kernel_quantizer=ternary(alpha=1), bias_quantizer=quantized_bits(5, 2), name="d3")(h)
    model = Model(inp, h)
    _random_batch_norm(model, np.random.default_rng(1))  # biases stay 0: hls4ml folds them into the thresholds
    return model  # after the storage plan's types are set (a plan from the folded image would not fit)


def _inputs(n: int, shape: int | tuple[int, ...], seed: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).random((n, *np.atleast_1d(shape))) * 4 - 2
    return np.round(x * 2**10) * 2**-10  # exact in fixed<16,6>


class _Builds:
    """Each model compiled once per module (g++ is the slow part)."""

    def __init__(self, root: Path):
        self.root, self.built = root, {}

    def get(self, name: str, io: str = "parallel", reuse: int = 1):
        """Converted, not compiled: hls4ml's ``trace`` compiles (once) when a test compares the layers.
        ``reuse`` > 1: the Resource strategy (weights stored transposed, products added in its order)."""
        from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls
        from hwflow.verify import CSimModel
        from hwflow.zoo.loading import check_supported

        if (name, io, reuse) not in self.built:
            model = {"deep": _deep_binary, "conv": _conv_net}.get(name, lambda: _eleven(name))()
            check_supported(model)
            out = self.root / f"{name}-{io}-{reuse}"
            strategy = "Resource" if reuse > 1 else "Latency"
            hls_model = convert(model, HlsOptions.make(io, strategy=strategy, reuse_factor=reuse, trace=True), out)
            self.built[(name, io, reuse)] = CSimModel(hls_model, program_from_hls(hls_model), image_from_hls(hls_model),
                                                      out)
        return self.built[(name, io, reuse)]


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    return _Builds(tmp_path_factory.mktemp("quantizers"))


def _assert_every_layer_equal(csim, x):
    from hwflow.emulator import Emulator, Kind
    from hwflow.verify import compare_layers

    check = compare_layers(csim, x)
    assert check.first is None, check.summary()
    assert set(check.not_compared) == {layer.name for layer in csim.program.layers
                                       if layer.kind in (Kind.INPUT, Kind.RESHAPE)}
    np.testing.assert_array_equal(Emulator(csim.program, csim.image).logits(x).reshape(len(x), -1),
                                  csim.csim_logits(x))


def _firmware_words(csim, array) -> np.ndarray:
    """The words hls4ml wrote for the C simulation (firmware/weights/<var>.txt), as hwflow packs them."""
    text = (csim.output_dir / "firmware" / "weights" / f"{array.var}.txt").read_text()
    if array.format.kind.value == "exponent":
        pairs = [quantized.parse_exponent_entry(m) for m in re.findall(r"\{[^}]*\}", text)]
        bits = array.format.exponent_bits
        return quantized.exponent_words(np.array([s for s, _ in pairs]), np.array([e & ((1 << bits) - 1)
                                                                                   for _, e in pairs]), bits)
    values = np.array([float(v) for v in text.replace("\n", "").split(",") if v.strip()])
    return (np.rint(values).astype(np.int64) & ((1 << array.format.width) - 1)).astype(np.uint64)


@needs_gxx
@pytest.mark.slow
@pytest.mark.parametrize(("name", "io"), [(name, ("parallel", "stream")[i % 2]) for i, name in enumerate(ELEVEN)])
def test_the_eleven_models_equal_the_c_simulation(builds, name, io):
    """hls4ml's own QKeras models (test_qkeras.py), in io_parallel and io_stream by turns (one compile each;
    hls4ml's tests run both): every traced layer equals hls4ml's C simulation."""
    csim = builds.get(name, io)
    seen = {str(a.format) for a in csim.image} | {layer.kind.value for layer in csim.program.layers}
    assert EXPECT[name] in seen, seen
    _assert_every_layer_equal(csim, _inputs(100, csim.program.input.output_shape[-1]))
    for array in csim.image:
        if array.format.kind.value in ("xnor", "ternary", "exponent"):
            np.testing.assert_array_equal(array.words, _firmware_words(csim, array), err_msg=array.key)


@needs_gxx
@pytest.mark.slow
@pytest.mark.parametrize(("io", "reuse"), [("parallel", 1), ("stream", 1), ("parallel", 2)])
def test_a_deep_binary_network_equals_the_c_simulation(builds, io, reuse):
    csim = builds.get("deep", io, reuse)
    if reuse > 1:
        assert {a.axes for a in csim.image if a.name == "weight"} == {(1, 0)}  # hls4ml transposed every kernel
    products = {layer.attrs.get("product") for layer in csim.program.layers}
    assert {"weight_binary", "both_binary", "data_binary", "weight_ternary", "weight_exponential"} <= products
    _assert_every_layer_equal(csim, _inputs(200, 10))


@needs_gxx
@pytest.mark.slow
@pytest.mark.parametrize("io", ["parallel", "stream"])
def test_binary_and_po2_convolutions_equal_the_c_simulation(builds, io):
    """In io_stream hls4ml pads 'same' XNOR data into an int<2> word (0 stays 0, not -1): c2 then multiplies
    plainly (weight_binary) where io_parallel compares bits (both_binary); the emulator follows both."""
    csim = builds.get("conv", io)
    products = {layer.name: layer.attrs.get("product") for layer in csim.program.layers}
    assert products["c2"] == ("both_binary" if io == "parallel" else "weight_binary")
    assert (products["c1"], products["c3"], products["c4"]) == ("weight_binary", "data_binary", "weight_exponential")
    _assert_every_layer_equal(csim, _inputs(50, (8, 8, 2), seed=4))


@needs_gxx
@pytest.mark.slow
def test_an_ap_int_result_truncates_toward_zero(tmp_path):
    """hls4ml's int<W> types are ap_int: C++ converts an ap_fixed into one truncating toward zero (both_binary's
    cast, a configured int result), not down as an ap_fixed<W,W> would."""
    import hls4ml
    import tensorflow as tf
    from qkeras import QDense
    from qkeras.quantizers import quantized_bits

    from hwflow.convert import image_from_hls, program_from_hls
    from hwflow.convert.hls import quiet
    from hwflow.fixed import Rounding
    from hwflow.verify import CSimModel

    model = tf.keras.Sequential([QDense(6, input_shape=(5,), kernel_quantizer=quantized_bits(4, 0, alpha=1),
                                        bias_quantizer=quantized_bits(4, 0, alpha=1), name="fc")])
    config = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis")
    config["LayerName"]["fc"]["Precision"]["result"] = "ap_int<6>"
    for layer in config["LayerName"].values():
        layer["Trace"] = True
    with quiet():
        hls_model = hls4ml.converters.convert_from_keras_model(model, hls_config=config, output_dir=str(tmp_path),
                                                               backend="Vitis")
    csim = CSimModel(hls_model, program_from_hls(hls_model), image_from_hls(hls_model), tmp_path)
    assert csim.program.layer("fc").result.rounding is Rounding.TRN_ZERO
    x = np.round((np.random.default_rng(0).random((200, 5)) * 40 - 20) * 2**10) * 2**-10
    _assert_every_layer_equal(csim, x)


# --- the engine ------------------------------------------------------------------------------------


@needs_gxx
@pytest.mark.slow
@pytest.mark.parametrize("name", ["deep", "conv", "po2", "dense-auto-po2", "btnn5"])
def test_engine_equals_full_emulation_with_faults_in_the_new_words(builds, name):
    from hwflow.campaign import TrialEvaluator
    from hwflow.emulator import Emulator
    from hwflow.faults import fault_model_from_spec

    csim = builds.get(name)
    program, image = csim.program, csim.image
    x = _inputs(120, program.input.output_shape, seed=3)
    y = np.zeros(len(x), dtype=np.int64)
    evaluator = TrialEvaluator(program, image, x, y, chunk=64)
    rng = np.random.default_rng(len(name))
    quantized_keys = {a.key for a in image if a.format.kind.value in ("xnor", "ternary", "exponent")}
    specs = [{"model": "bitflip"}, {"model": "stuck-at", "value": "mixed"}, {"model": "bitflip", "bits": ["msb"]}]
    hit, hurt = 0, 0
    for i in range(24):
        faultmap = fault_model_from_spec(specs[i % 3], [3e-3, 1e-2, 3e-2][i % 3]).sample(image, rng)
        reference = Emulator(program, faultmap.apply(image)).run(x)
        np.testing.assert_array_equal(evaluator.output_codes(faultmap), reference, err_msg=f"trial {i}")
        outcome = evaluator.evaluate(faultmap)
        assert outcome == evaluator.full_evaluate(faultmap, x), i
        hit += bool(set(faultmap.keys_touched()) & quantized_keys)
        hurt += outcome.mismatches > 0
    assert hit > 5  # maps really hit the new words
    assert hurt > 3  # and changed outputs


def test_a_ternary_activation_hls4ml_writes_no_call_for_is_refused(tmp_path):
    """hls4ml 1.3.0 keeps ternary(threshold=0.5) without a batch norm as a TernaryTanh and calls nothing for it."""
    import tensorflow as tf
    from qkeras import QActivation, QDense
    from qkeras.quantizers import quantized_bits, ternary

    from hwflow.convert import HlsOptions, convert, program_from_hls

    model = tf.keras.Sequential([QDense(4, input_shape=(6,), kernel_quantizer=quantized_bits(4, 0, alpha=1),
                                        bias_quantizer=quantized_bits(4, 0, alpha=1), name="fc"),
                                 QActivation(ternary(threshold=0.5), name="tern")])
    hls_model = convert(model, HlsOptions.make("parallel"), tmp_path)
    with pytest.raises(UnsupportedLayerError, match=r"layer 'tern' \(TernaryTanh\): hls4ml 1.3.0 writes no C\+\+"):
        program_from_hls(hls_model)


# --- hardening and the build -----------------------------------------------------------------------


def test_weight_scaling_leaves_binary_ternary_po2_words_and_thresholds_alone(builds):
    from hwflow.harden.scale import plan_rule

    image = builds.get("deep").image
    plan = plan_rule(image)
    untouched = {a.key for a in image if a.format.kind.value in ("xnor", "ternary", "exponent")
                 or a.name.startswith("threshold")}
    assert untouched
    assert not untouched & set(plan.scales)
    assert any(s.shift > 0 for s in plan.scales.values())


@needs_gxx
@pytest.mark.slow
def test_po2_and_xnor_data_convolutions_in_bram_through_the_csim_board(tmp_path):
    """po2 words (sign + exponent, unpacked into hls4ml's struct), XNOR weights, thresholds and an ApplyAlpha
    scale in BRAM: the built design's C simulation equals the emulator, fault-free and under faults."""
    from hwflow.convert import HlsOptions
    from hwflow.hardware.boards import load_board
    from hwflow.hardware.csim_board import CSimBoard, board_image, check_board, sample_fault_maps
    from hwflow.hardware.project import BuildOptions, generate

    options = BuildOptions(HlsOptions.make("parallel"), min_words=1)
    build = generate(_conv_net(), load_board("pynq-z2"), tmp_path, options)
    formats = {m.key: str(m.format) for m in build.manifest.weight_memories}
    assert formats["c4/weight"] == "exponent<4>"
    assert formats["d_alpha/scale"].startswith("exponent<")
    assert formats["c1/weight"] == "xnor"
    assert "hwflow::unpack_exponents<" in (build.hls_dir / "firmware" / "hwflow_top.cpp").read_text()
    board = CSimBoard(tmp_path)
    maps = sample_fault_maps(board_image(board.image, board.manifest), 30, seed=0)
    check = check_board(board, board.program, board.image, _inputs(48, (8, 8, 2)), maps)
    assert check.ok, check.summary()
    assert check.words_written > 30


@needs_gxx
@pytest.mark.slow
def test_18_bit_po2_words_under_faults_through_the_csim_board(tmp_path):
    """hls4ml's po2 test model: flipped exponent bits shift by up to 2^17 in a 68-bit r_T (the C++ leaves shifts
    past its width undefined); the C simulation and the emulator agree on every map."""
    from hwflow.convert import HlsOptions
    from hwflow.hardware.boards import load_board
    from hwflow.hardware.csim_board import CSimBoard, board_image, check_board, sample_fault_maps
    from hwflow.hardware.project import BuildOptions, generate

    options = BuildOptions(HlsOptions.make("parallel", strategy="Resource", reuse_factor=13), min_words=1)
    generate(_eleven("po2"), load_board("pynq-z2"), tmp_path, options)
    board = CSimBoard(tmp_path)
    maps = sample_fault_maps(board_image(board.image, board.manifest), 30, seed=1)
    shifts = [quantized.exponent_fields(m.apply(board.image).get("dense", "weight").words, 18)[1] for m in maps]
    assert sum(bool(np.any(np.abs(e) >= 68)) for e in shifts) > 20  # past r_T's width
    check = check_board(board, board.program, board.image, _inputs(48, 26), maps)
    assert check.ok, check.summary()


@needs_gxx
@pytest.mark.slow
def test_binary_words_in_bram_through_the_csim_board(tmp_path):
    """XNOR and ternary words and the thresholds in BRAM behind the host port, the fixed arrays scaled
    (power-of-two rule): the built design's C simulation equals the emulator, fault-free and under faults."""
    from hwflow.convert import HlsOptions, convert, image_from_hls
    from hwflow.harden.scale import plan_rule
    from hwflow.hardware.boards import load_board
    from hwflow.hardware.csim_board import CSimBoard, board_image, check_board, sample_fault_maps
    from hwflow.hardware.project import BuildOptions, generate

    model = _binary_net()
    options = HlsOptions.make("parallel")
    plan = plan_rule(image_from_hls(convert(model, options, tmp_path / "plan")))
    build = generate(model, load_board("pynq-z2"), tmp_path / "build", BuildOptions(options, min_words=1),
                     storage=plan)
    formats = {str(m.format) for m in build.manifest.weight_memories}
    assert {"xnor", "ternary"} <= formats
    board = CSimBoard(tmp_path / "build")
    maps = sample_fault_maps(board_image(board.image, board.manifest), 20, seed=0)
    check = check_board(board, board.program, board.image, _inputs(64, 10), maps)
    assert check.ok, check.summary()
    assert check.words_written > 20
