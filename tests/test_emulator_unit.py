"""Emulator mechanics without the C simulation: fast paths against their references, formats, images."""

from dataclasses import replace

import numpy as np
import pytest

from hwflow.emulator import Emulator, Program
from hwflow.emulator.ops import _linear_stepwise, linear_fixed
from hwflow.errors import EmulatorError, FormatError
from hwflow.fixed import FixedType, Overflow, Rounding
from hwflow.image import Kind, Scale, StorageFormat, WeightImage
from tests.conftest import zoo_model


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls

    hls_model = convert(zoo_model("cnn-digits", 8, 8), HlsOptions(), tmp_path_factory.mktemp("hls"))
    return program_from_hls(hls_model), image_from_hls(hls_model)


# x fixed<10,4> times w fixed<8,1>: products have 13 fractional bits. linear_fixed takes one BLAS
# product when the accumulator keeps them all and wraps; otherwise the stepwise path.
@pytest.mark.parametrize(
    ("accum", "stepwise"),
    [
        (FixedType(30, 12), False),  # keeps every bit, never overflows: BLAS alone
        (FixedType(18, 4), False),  # keeps every product bit, wraps: BLAS plus one wrap
        (FixedType(14, 4), True),  # drops 3 product bits (TRN), wraps: stepwise
        (FixedType(16, 8, True, Rounding.TRN, Overflow.SAT), True),  # drops bits, saturates: stepwise
        (FixedType(12, 4, True, Rounding.RND_CONV, Overflow.SAT_SYM), True),
        (FixedType(12, 4, True, Rounding.RND_ZERO, Overflow.SAT_ZERO), True),
        (FixedType(12, 5, True, Rounding.RND_MIN_INF, Overflow.WRAP), True),
        (FixedType(20, 7, True, Rounding.RND_INF, Overflow.SAT), True),  # keeps every product bit, saturates
    ],
)
def test_linear_matches_scalar_reference(accum, stepwise, monkeypatch):
    """linear_fixed against a scalar loop over Python ints with explicit ap_fixed casts (tests/scalar_dense.py)."""
    from hwflow.emulator import ops
    from tests.scalar_dense import ApType, dense

    calls = []
    real = ops._linear_stepwise
    monkeypatch.setattr(ops, "_linear_stepwise", lambda *args: calls.append(args) or real(*args))
    rng = np.random.default_rng(3)
    x_t, w_t, b_t = FixedType(10, 4), FixedType(8, 1), FixedType(8, 2)
    r_t = FixedType(10, 3, True, Rounding.RND, Overflow.SAT)
    x = rng.integers(x_t.min_code, x_t.max_code + 1, (24, 40))
    w = rng.integers(w_t.min_code, w_t.max_code + 1, (40, 7))
    b = rng.integers(b_t.min_code, b_t.max_code + 1, 7)
    ours = linear_fixed(x.astype(np.float64), x_t, w, w_t, b, b_t, accum, r_t)

    def ap(t):
        return ApType(t.width, t.integer, t.signed, t.rounding.value, t.overflow.value)

    reference = dense(x.tolist(), x_t.frac, w.tolist(), w_t.frac, b.tolist(), b_t.frac, ap(accum), ap(r_t))
    np.testing.assert_array_equal(np.asarray(ours, dtype=np.int64), np.array(reference))
    assert bool(calls) == stepwise


def test_stepwise_follows_hls4ml_loop_order():
    """A saturating accumulator depends on the order of the sum: hls4ml adds inputs in index order."""
    from tests.scalar_dense import ApType, dense

    t = FixedType(8, 8, True, Rounding.TRN, Overflow.SAT)  # integers in [-128, 127]
    w = np.array([[100], [100], [-100]])
    x = np.array([[1, 1, 1]])
    ours = _linear_stepwise(x, w, 0, np.zeros(1, dtype=np.int64), t)
    assert ours.tolist() == [[27]]  # 100 + 100 saturates at 127, then - 100; in another order: 100
    ap = ApType(8, 8, True, "TRN", "SAT")
    assert dense(x.tolist(), 0, w.tolist(), 0, [0], 0, ap, ap) == [[27]]


def test_program_json_round_trip(graph, digits, tmp_path):
    program, image = graph
    program.save(tmp_path / "p.json")
    again = Program.load(tmp_path / "p.json")
    assert again == program
    x = digits.x_test[:50]
    np.testing.assert_array_equal(Emulator(again, image).run(x), Emulator(program, image).run(x))


def test_image_bundle_round_trip_and_addresses(graph, tmp_path):
    _, image = graph
    image.save(tmp_path / "img")
    again = WeightImage.load(tmp_path / "img")
    assert again.equal_words(image)
    assert again.total_words == sum(a.size for a in image)
    conv2 = image.get("conv2", "weight")
    base = image.base("conv2", "weight")
    assert image.locate(base) == (conv2, 0)
    assert image.locate(base + conv2.size - 1) == (conv2, conv2.size - 1)
    assert image.locate(base + conv2.size)[0].key != conv2.key
    with pytest.raises(FormatError, match="outside the weight memory"):
        image.locate(image.total_words)
    with pytest.raises(FormatError, match="outside"):
        image.locate(-1)


def test_image_refuses_words_wider_than_format(graph):
    _, image = graph
    arr = image.get("conv1", "weight")
    words = arr.words.copy()
    words[0] = 1 << arr.format.width
    with pytest.raises(FormatError, match="wider"):
        arr.with_words(words)


def test_changing_a_word_changes_the_output(graph, digits):
    """The emulator reads weights from the stored words: flipping a high bit must change logits."""
    program, image = graph
    arr = image.get("out", "weight")
    words = arr.words.copy()
    words[:] ^= np.uint64(1 << (arr.format.width - 2))
    x = digits.x_test[:20]
    clean = Emulator(program, image).run(x)
    faulty = Emulator(program, image.replace_array(arr.with_words(words))).run(x)
    assert np.any(clean != faulty)


def test_float_storage_of_dyadic_weights_changes_nothing(graph, digits):
    """float32 holds every 8-bit fixed-point weight exactly; the float path must then agree exactly."""
    program, image = graph
    arrays = []
    for arr in image:
        fmt = StorageFormat(Kind.FLOAT32)
        arrays.append(replace(arr, format=fmt, words=fmt.encode(arr.format.decode_float(arr.words))))
    floated = WeightImage(tuple(arrays))
    x = digits.x_test[:100]
    np.testing.assert_array_equal(Emulator(program, floated).run(x), Emulator(program, image).run(x))


def test_power_of_two_scaling_is_exact_when_no_bits_are_lost(graph, digits):
    program, image = graph
    arr = image.get("conv2", "weight")
    codes = arr.format.fixed.from_unsigned(arr.words)
    shift = 1
    assert np.all(np.abs(codes) < (1 << (arr.format.width - 2)))  # the scaled code still fits
    scaled = replace(arr, scale=Scale(shift=shift), words=arr.format.fixed.to_unsigned(codes << shift))
    assert scaled.compute_type().integer == arr.format.fixed.integer - shift
    np.testing.assert_array_equal(scaled.values(), arr.values())
    x = digits.x_test[:100]
    np.testing.assert_array_equal(Emulator(program, image.replace_array(scaled)).run(x),
                                  Emulator(program, image).run(x))


def test_float16_words_decode_with_divide_back():
    """Float words hold ``c * w``; ``values()`` divides ``c`` back: a power of two exactly, a constant in float64."""
    from hwflow.image import StoredArray

    fmt = StorageFormat.parse("float16")
    w = np.array([0.5, -3.0, 1e-3, 0.0])
    plain = fmt.encode(w)
    assert plain.dtype == np.uint64
    assert int(plain.max()) < 1 << 16
    np.testing.assert_allclose(fmt.decode_float(plain), w, rtol=1e-3)

    def stored(scale: Scale, values: np.ndarray) -> StoredArray:
        return StoredArray("d", "weight", "w0", (4,), (0,), fmt, scale, fmt.encode(values))

    shifted = stored(Scale(shift=5), 32 * w)
    np.testing.assert_array_equal(fmt.decode_float(shifted.words), 32 * fmt.decode_float(plain))  # words of 32 w
    np.testing.assert_array_equal(shifted.values(), fmt.decode_float(plain))  # divided back exactly
    constant = stored(Scale(constant=1.7), 1.7 * w)
    assert not np.array_equal(constant.words, plain)
    np.testing.assert_allclose(constant.values(), w, rtol=2.0**-11)  # float16 rounding of 1.7 w, divided back
    assert str(StorageFormat.parse("fixed<8,1>")) == "fixed<8,1,TRN,WRAP>"


def test_wrong_input_shape_is_refused(graph):
    program, image = graph
    with pytest.raises(EmulatorError, match="expects"):
        Emulator(program, image).run(np.zeros((2, 7, 7, 1), dtype=np.float32))


def test_missing_array_is_refused(graph):
    program, image = graph
    partial = WeightImage(tuple(a for a in image if a.key != "conv1/weight"))
    with pytest.raises(EmulatorError, match="conv1/weight"):
        Emulator(program, partial)


def test_trailing_softmax_is_removed_and_reserved_names_renamed_inside(tmp_path):
    import tensorflow as tf

    from hwflow.convert import HlsOptions, convert, program_from_hls
    from hwflow.emulator import Kind as LayerKind

    base = zoo_model("mlp-digits", 8, 8)
    with_softmax = tf.keras.Model(base.inputs, tf.keras.layers.Activation("softmax", name="probs")(base.output))
    program = program_from_hls(convert(with_softmax, HlsOptions(), tmp_path / "a"))
    assert program.output.kind is LayerKind.DENSE
    assert program.output.name == "out"

    inp = tf.keras.Input((4,), name="input")  # hls4ml reserves 'input': renamed inside, the user's name outside
    reserved = tf.keras.Model(inp, tf.keras.layers.Dense(2, name="d")(inp))
    assert [s.name for s in program_from_hls(convert(reserved, HlsOptions(), tmp_path / "b")).layers] == ["input", "d"]


def test_resource_accumulation_order_follows_hls4mls_loops():
    """dense_resource_rf_leq_nin / conv_*_resource_cl: reuse loop outer, so inputs come as (i mod R, i)."""
    from hwflow.emulator.ops import accumulation_order

    np.testing.assert_array_equal(accumulation_order(8, 3, 4), [[0, 4, 1, 5, 2, 6, 3, 7]] * 3)
    assert accumulation_order(8, 3, 1) is None  # Latency-like: input order
    assert accumulation_order(4, 3, 8) is None  # rf_gt_nin_rem0: each output's inputs in order
    # Saturation makes the order visible: +3, +3, -3 in an accumulator capped at 4 gives 1; +3, -3, +3 gives 3.
    from hwflow.emulator.ops import linear_fixed
    from hwflow.fixed import FixedType, Overflow

    t = FixedType(8, 8)
    acc = FixedType(4, 4, True, overflow=Overflow.SAT)  # -8..7
    x = np.array([[1, 1, 1, 1]])
    w = np.array([[5], [5], [-5], [-5]])
    natural = linear_fixed(x, t, w, t, None, None, acc, FixedType(8, 8))  # 5, 7 (sat), 2, -3
    reordered = linear_fixed(x, t, w, t, None, None, acc, FixedType(8, 8), order=np.array([[0, 2, 1, 3]]))
    assert (int(natural[0, 0]), int(reordered[0, 0])) == (-3, 0)  # 5, 0, 5, 0
