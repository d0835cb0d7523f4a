"""Weight scaling: storage plans, the rule, re-encoding, the exact divide-back, conversion, C-sim, search."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from hwflow.emulator import Emulator
from hwflow.emulator.run import Weights
from hwflow.errors import ConversionError, FormatError, HardenError
from hwflow.fixed import parse_type, quantize_float
from hwflow.harden.scale import (
    format_gain_table,
    max_fit_shift,
    plan_constant,
    plan_rule,
    precision_gain,
    scaled_image,
)
from hwflow.harden.scale_search import ScaleSearchConfig, candidates, search_scales
from hwflow.image import Scale, StorageFormat, StoragePlan, StoredArray, WeightImage, divide
from tests.conftest import needs_gxx, zoo_model


def stored(layer: str, name: str, fmt: str, codes, scale: Scale | None = None) -> StoredArray:
    f = StorageFormat.parse(fmt)
    codes = np.asarray(codes, dtype=np.int64)
    return StoredArray(layer, name, f"{name[0]}_{layer}", codes.shape, tuple(range(codes.ndim)), f,
                       scale or Scale(), f.fixed.to_unsigned(codes.reshape(-1)))


@pytest.fixture(scope="module")
def hand_image() -> WeightImage:
    return WeightImage((
        stored("a", "weight", "fixed<8,3>", [[20, -3], [0, 7]]),  # 20 << 2 = 80 fits, << 3 = 160 does not
        stored("a", "bias", "fixed<8,3>", [-64, 1]),  # -64 << 1 = -128 fits (two's complement), << 2 not
        stored("b", "weight", "fixed<8,3>", [63, -64, 5]),  # both ends fit << 1 exactly
        stored("b", "bias", "fixed<8,3>", [0, 0]),  # all zero: any shift fits; the rule stops at W - 1
        stored("bn", "scale", "fixed<16,6>", [1024, 2047, 600]),  # values 1 .. 2: 2047 << 4 = 32752 fits
        stored("bn", "bias", "fixed<16,6>", [-3000, 512]),
    ))  # fmt: skip


@pytest.fixture(scope="module")
def zoo():
    """cnn-digits (untrained, batch norms randomized) converted once: (keras model, options, program, image)."""
    import tempfile

    from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls

    model = zoo_model("cnn-digits", 8, 8)
    options = HlsOptions.make()
    with tempfile.TemporaryDirectory() as tmp:
        hls = convert(model, options, tmp)
        return model, options, program_from_hls(hls), image_from_hls(hls)


# --- the rule ---------------------------------------------------------------------------------------


def test_rule_picks_the_largest_shift_that_fits(hand_image):
    plan = plan_rule(hand_image)
    assert {k: s.shift for k, s in plan.scales.items()} == {
        "a/weight": 2, "a/bias": 1, "b/weight": 1, "b/bias": 7, "bn/scale": 4, "bn/bias": 3}  # fmt: skip
    assert plan.mode == "rule"
    assert plan.storage == "fixed"
    assert max_fit_shift(hand_image.get("b", "bias"), max_shift=3) == 3
    only_a = plan_rule(hand_image, layers=["a"])
    assert set(only_a.scales) == {"a/weight", "a/bias"}
    no_bn = plan_rule(hand_image, batchnorm=False)
    assert "bn/scale" not in no_bn.scales
    assert "bn/bias" not in no_bn.scales
    with pytest.raises(HardenError, match="unknown layer"):
        plan_rule(hand_image, layers=["nope"])
    with pytest.raises(HardenError, match="unknown storage"):
        plan_rule(hand_image, storage="bfloat16")


def test_scaled_words_are_the_codes_of_c_times_w(hand_image):
    plan = plan_rule(hand_image)
    out = scaled_image(hand_image, plan)
    for old in hand_image:
        new = out.get(old.layer, old.name)
        s = plan.scale_of(old.key).shift
        t = old.format.fixed
        assert new.format == old.format
        assert new.scale == Scale(s)
        np.testing.assert_array_equal(new.words, t.to_unsigned(quantize_float(old.values().reshape(-1) * 2.0**s, t)))
        assert new.compute_type() == parse_type(f"fixed<{t.width},{t.integer - s}>")
        np.testing.assert_array_equal(new.values(), old.values())  # the divide-back gives the weights back
        assert Weights.of(new).is_fixed
    with pytest.raises(HardenError, match="already stored"):
        scaled_image(out, plan)


def test_a_flip_hurts_c_times_less_after_scaling(hand_image):
    """Two's complement: flipping bit k changes a word by +-2**k LSB; read back divided by c."""
    plan = plan_rule(hand_image)
    out = scaled_image(hand_image, plan)
    for old in hand_image:
        new = out.get(old.layer, old.name)
        c = new.scale.factor
        for k in range(old.format.width):
            flip = np.uint64(1 << k)
            err_old = old.with_words(old.words ^ flip).values() - old.values()
            err_new = new.with_words(new.words ^ flip).values() - new.values()
            np.testing.assert_array_equal(np.abs(err_new), np.abs(err_old) / c)


def test_overflowing_or_foreign_plans_are_refused(hand_image):
    with pytest.raises(HardenError, match="do not fit"):
        StoragePlan("fixed", {"a/weight": Scale(3)}).apply(hand_image)
    with pytest.raises(HardenError, match="does not have"):
        StoragePlan("fixed", {"conv9/weight": Scale(1)}).apply(hand_image)
    with pytest.raises(HardenError, match="beyond"):
        StoragePlan("fixed", {"a/weight": Scale(70)})


# --- the plan as data -------------------------------------------------------------------------------


def test_plan_json_round_trip_and_errors(hand_image):
    plan = plan_rule(hand_image)
    text = json.dumps(plan.to_json())
    assert StoragePlan.from_json(json.loads(text)) == plan
    const = plan_constant(hand_image, {"a/weight": 1.5, "b/weight": 2})
    assert const.scales["b/weight"] == Scale(1)  # an exact power of two becomes the free shift
    assert StoragePlan.from_json(json.loads(json.dumps(const.to_json()))) == const
    for bad, message in [
        ({"storage": "float8"}, "unknown storage"),
        ({"mode": "magic"}, "unknown mode"),
        ({"scales": {"conv1": {"shift": 1}}}, "layer/name"),
        ({"scales": {"a/weight": {"shift": 1.5}}}, "shift must be an integer"),
        ({"scales": {"a/weight": {"constant": -2}}}, "positive number"),
        ({"scales": {"a/weight": {"shift": 1, "constant": 3.0}}}, "not both"),
        ({"extra": 1}, "unknown field"),
        ([1, 2], "JSON object"),
    ]:
        with pytest.raises(HardenError, match=message):
            StoragePlan.from_json(bad)
    with pytest.raises(HardenError, match="saturates"):
        plan_constant(hand_image, {"a/weight": 6.5})
    with pytest.raises(HardenError, match="no array"):
        plan_constant(hand_image, {"zz/weight": 3.0})


def test_bundle_round_trips_the_scale(hand_image, tmp_path):
    for plan in (plan_rule(hand_image), plan_constant(hand_image, {"a/weight": 1.5}), plan_rule(hand_image, "float16")):
        image = plan.apply(hand_image)
        image.save(tmp_path / plan.storage / plan.mode)
        back = WeightImage.load(tmp_path / plan.storage / plan.mode)
        assert back.equal_words(image)
        assert [a.scale for a in back] == [a.scale for a in image]
        assert [a.format for a in back] == [a.format for a in image]


# --- the constant divide-back (contract 7) ----------------------------------------------------------


@pytest.mark.parametrize(("c", "e"), [(3.0, 1), (1.5, 1), (1.0 + 2**-20, 1), (0.5, 2), (0.3, 3), (0.25, 3),
                                      (0.2, 4)])
def test_q_type_integer_bits(c, e):
    assert divide.q_type(c) == parse_type(f"ufixed<18,{e},RND,SAT>")
    exact = Fraction(1) / Fraction(c) * 2 ** divide.q_type(c).frac
    assert divide.q_code(c) == int(np.floor(exact + Fraction(1, 2)))  # round to nearest, ties up


@pytest.mark.parametrize("c", [1.5, 3.0, 2.7182818, 0.75, 100.0])
def test_constant_divide_back_matches_integer_arithmetic(c):
    s_type = parse_type("fixed<8,3>")
    codes = np.arange(-128, 128)
    stored_codes = divide.encode_codes(codes, c, divide.stored_type(s_type))
    cf = Fraction(c)
    for k, got in zip(codes, stored_codes, strict=True):  # round half up, then saturate
        assert got == min(127, max(-128, int(np.floor(cf * int(k) + Fraction(1, 2)))))
    out = divide.divide_codes(stored_codes, c, s_type)
    q = Fraction(divide.q_code(c), 2 ** divide.q_type(c).frac)
    for k, got in zip(stored_codes, out, strict=True):
        assert got == min(127, max(-128, int(np.floor(int(k) * q + Fraction(1, 2)))))
    if c > 1:  # no information is lost where c * w did not saturate
        fits = np.abs(codes * c) <= 127
        np.testing.assert_array_equal(out[fits], codes[fits])
    back = divide.DivideBack.of(s_type, c)
    assert back.compute == parse_type("fixed<8,3,RND,SAT>")
    assert back.q_value == float(q)


def test_constant_scale_runs_on_the_exact_fixed_path(zoo, digits):
    _, _, program, image = zoo
    plan = plan_constant(image, {"conv2/weight": 1.7, "out/weight": 1.3, "bn1/scale": 1.9})
    scaled = scaled_image(image, plan)
    arr = scaled.get("conv2", "weight")
    assert not arr.scale.is_power_of_two
    assert Weights.of(arr).is_fixed
    assert arr.compute_type() == divide.compute_type(image.get("conv2", "weight").format.fixed)
    x = digits.x_val
    np.testing.assert_array_equal(Emulator(program, scaled).run(x), Emulator(program, image).run(x))


# --- emulator and conversion ------------------------------------------------------------------------


def test_fault_free_scaled_model_is_identical(zoo, digits, tmp_path):
    """Exact power-of-two scaling changes nothing without faults: re-encoded image, and re-converted model."""
    from hwflow.convert import convert, image_from_hls, program_from_hls

    model, options, program, image = zoo
    x = digits.x_test
    reference = Emulator(program, image).logits(x)
    plan = plan_rule(image)
    assert any(s.shift > 0 for s in plan.scales.values())
    np.testing.assert_array_equal(Emulator(program, scaled_image(image, plan)).logits(x), reference)

    no_bn = plan_rule(image, batchnorm=False)
    hls = convert(model, options, tmp_path, storage=no_bn)
    converted = image_from_hls(hls)
    assert converted.equal_words(scaled_image(image, no_bn))  # hls4ml's words are the codes of c * w
    conv = converted.get("conv1", "weight")
    assert conv.compute_type().integer == image.get("conv1", "weight").format.fixed.integer - no_bn.scales[
        "conv1/weight"].shift
    np.testing.assert_array_equal(Emulator(program_from_hls(hls), converted).logits(x), reference)

    with pytest.raises(ConversionError, match="same plan"):
        image_from_hls(hls, plan)  # the batch-norm shifts were not compiled into this graph


def test_precision_gain_table(zoo, tmp_path):
    from hwflow.convert import convert, image_from_hls

    model, options, _, image = zoo
    plan = plan_rule(image)
    rows = {r.key: r for r in precision_gain(image, plan)}
    assert all(r.used_bits == 0 for r in rows.values())  # weights on the trained grid use none
    assert rows["conv2/weight"].gained_bits == plan.scales["conv2/weight"].shift
    hls = convert(model, options, tmp_path, storage=plan)
    converted = {r.key: r for r in precision_gain(image_from_hls(hls))}
    assert converted["conv2/weight"].used_bits == 0
    assert converted["bn1/scale"].used_bits > 0  # hls4ml re-quantizes the float batch-norm scale finer
    table = format_gain_table(converted.values())
    assert "bn1/scale" in table
    assert "gained" in table


def test_convert_refuses_a_plan_that_does_not_fit(zoo, tmp_path):
    from hwflow.convert import convert

    model, options, _, image = zoo
    too_far = StoragePlan("fixed", {"conv1/weight": Scale(max_fit_shift(image.get("conv1", "weight")) + 1)})
    with pytest.raises(HardenError, match="overflow"):
        convert(model, options, tmp_path / "a", storage=too_far)
    with pytest.raises(HardenError, match="no such array"):
        convert(model, options, tmp_path / "b", storage=StoragePlan("fixed", {"conv7/weight": Scale(1)}))


@needs_gxx
@pytest.mark.slow
def test_csim_of_scaled_model_equals_emulator(zoo, digits, tmp_path):
    """hls4ml's C simulation compiled with the moved binary points computes what the emulator computes."""
    from hwflow.verify import build_csim, compare

    model, options, _, image = zoo
    plan = plan_rule(image)  # batch norms included: their re-quantized scales must agree too
    csim = build_csim(model, options, tmp_path, storage=plan)
    assert csim.image.get("conv2", "weight").scale == plan.scales["conv2/weight"]
    x = digits.x_test
    np.testing.assert_array_equal(Emulator(csim.program, csim.image).logits(x).reshape(len(x), -1),
                                  csim.csim_logits(x))
    assert compare(csim, x[:50]).ok


# --- float storage ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("storage", "bits", "top_exponent"), [("float16", 16, 14), ("float32", 32, 126)])
def test_float_rule_sets_the_exponent_top_bit(zoo, storage, bits, top_exponent, digits):
    _, _, program, image = zoo
    plan = plan_rule(image, storage)
    scaled = plan.apply(image)
    exp_top = np.uint64(1 << (bits - 2))  # the exponent's most significant bit
    for arr in scaled:
        assert arr.format == StorageFormat.parse(storage)
        magnitude = np.abs(arr.format.decode_float(arr.words))
        nonzero = arr.words[magnitude > 0]
        assert np.all(nonzero & exp_top), arr.key
        assert magnitude.max() < 2.0**top_exponent
        rounded = image.get(arr.layer, arr.name).values().astype(storage).astype(np.float64)
        np.testing.assert_array_equal(arr.values(), rounded)  # scaling by 2**s adds no float rounding
    assert "top_bit_zero" not in plan.details
    unscaled = StoragePlan(storage).apply(image)
    np.testing.assert_array_equal(Emulator(program, scaled).logits(digits.x_val),
                                  Emulator(program, unscaled).logits(digits.x_val))
    wide = WeightImage((stored("w", "weight", "fixed<16,1>", [1, 32767]),))  # range 2**15 > 2**(14 - 1)
    assert plan_rule(wide, "float16").details["top_bit_zero"] == {"w/weight": 1}


# --- fault tolerance and search ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def loose(tmp_path_factory, digits):
    """cnn-digits trained with 3 integer weight bits (a loose format), converted unscaled and rule-scaled."""
    from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls
    from hwflow.zoo.train import TrainConfig, load_or_train

    root = tmp_path_factory.mktemp("loose")
    model = load_or_train(TrainConfig("cnn-digits", weight_integer=3, out=root / "m.h5"), progress=False).model
    options = HlsOptions.make()
    base = convert(model, options, root / "base")
    program, image = program_from_hls(base), image_from_hls(base)
    plan = plan_rule(image)
    scaled = convert(model, options, root / "scaled", storage=plan)
    return (program, image), (program_from_hls(scaled), image_from_hls(scaled)), plan


def _accuracy_under_flips(program, image, x, y, rate, trials):
    from hwflow.campaign.engine import TrialEvaluator
    from hwflow.faults import BitFlip

    ev = TrialEvaluator(program, image, x, y)
    return float(np.mean([ev.evaluate(BitFlip(rate).sample(image, np.random.default_rng([5, t]))).correct
                          for t in range(trials)])) / len(y)


@pytest.mark.slow
def test_rule_scaling_survives_bit_flips_on_a_loose_format(loose, digits):
    """Measured (README): cnn-digits, 8-bit weights with 3 integer bits, BER 1e-3, 200 trials on the
    test split: 0.574 unscaled, 0.954 rule-scaled. Here: the validation split, 40 paired trials."""
    (p0, img0), (p1, img1), plan = loose
    assert plan.scales["conv2/weight"].shift >= 3  # trained weights use little of fixed<8,4>
    x, y = digits.x_val, digits.y_val
    # Fault-free the scaled model differs only by the finer batch-norm words hls4ml re-quantized.
    assert np.mean(Emulator(p1, img1).predict_classes(x) == Emulator(p0, img0).predict_classes(x)) >= 0.99
    without = _accuracy_under_flips(p0, img0, x, y, 1e-3, 40)
    with_scaling = _accuracy_under_flips(p1, img1, x, y, 1e-3, 40)
    assert with_scaling > without + 0.2, (without, with_scaling)


class ValidationOnly:
    """A data set whose test split must not be read."""

    def __init__(self, data):
        self.x_val, self.y_val = data.x_val, data.y_val

    def __getattr__(self, name):
        if name.endswith("_test") or name.endswith("_train"):
            msg = f"the search read {name}"
            raise AssertionError(msg)
        raise AttributeError(name)


def test_search_picks_a_plan_on_the_validation_split(zoo, digits):
    _, _, program, image = zoo
    config = ScaleSearchConfig(rates=(3e-2,), trials=4, seed=3, layers=("conv2", "out"), constants=1)
    plan, scores = search_scales(program, image, ValidationOnly(digits), config)
    assert plan.mode == "search"
    assert plan.details["split"] == "validation"
    assert set(plan.scales) == {"conv2/weight", "conv2/bias", "out/weight", "out/bias"}
    rule = plan_rule(image, layers=("conv2", "out"))
    for key, results in scores.items():
        assert [r.scale for r in results] == candidates(image.get(*key.split("/")), 1)
        assert results[0].scale == rule.scales[key]  # the rule's shift is tried first
        assert plan.scales[key] == max(results, key=lambda r: r.accuracy).scale
    again, _ = search_scales(program, image, digits.x_val, digits.y_val, config)
    assert again == plan  # seeded
    float_plan, float_scores = search_scales(
        program, image, (digits.x_val, digits.y_val),
        config=ScaleSearchConfig(storage="float16", rates=(1e-2,), trials=2, layers=("out",), float_steps=3))
    assert float_plan.storage == "float16"
    assert [r.scale for r in float_scores["out/weight"]][0] == plan_rule(image, "float16").scales["out/weight"]
    assert len(float_scores["out/weight"]) == 3
    with pytest.raises(HardenError, match="rates"):
        ScaleSearchConfig(rates=(0.0,))
    with pytest.raises(HardenError, match="Dataset"):
        search_scales(program, image, digits.x_val, config)


def test_scale_validation_errors():
    with pytest.raises(FormatError, match="not both"):
        Scale(2, 3.0)
    assert Scale.of(0.25) == Scale(-2)
    assert Scale.of(3.0) == Scale(0, 3.0)
    with pytest.raises(FormatError, match="too large"):
        divide.q_code(2.0**20)
