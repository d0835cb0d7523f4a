"""Fault layer: FaultMap semantics on hand-computed words, fault-model statistics, targets, specs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hwflow.errors import FaultSpecError
from hwflow.faults import (
    FAULT_MODELS,
    BitFlip,
    Burst,
    Explicit,
    FaultKind,
    FaultMap,
    StuckAt,
    Target,
    fault_model_from_spec,
    register_fault_model,
)
from hwflow.image import Scale, StorageFormat, StoredArray, WeightImage


def stored(layer: str, name: str, fmt: str, words, shape=None, scale: Scale | None = None) -> StoredArray:
    words = np.asarray(words, dtype=np.uint64)
    shape = shape or (words.size,)
    return StoredArray(layer, name, f"{name[0]}_{layer}", shape, tuple(range(len(shape))),
                       StorageFormat.parse(fmt), scale or Scale(), words)


@pytest.fixture
def image() -> WeightImage:
    f16 = StorageFormat.parse("float16")
    return WeightImage((
        stored("conv1", "weight", "fixed<8,1>", [0x00, 0x7F, 0x80, 0xFF, 0x0F, 0xA5], shape=(2, 3)),
        stored("conv1", "bias", "fixed<16,6>", [0x0000, 0xFFFF, 0x1234]),
        stored("dense", "weight", "float16", f16.encode(np.array([0.5, -1.0, 2.0, 0.0]))),
        stored("dense", "bias", "fixed<16,6>", [0x0001, 0x8000]),
        stored("bn", "scale", "ufixed<8,2>", [0x40, 0x41, 0x3F]),
    ))


@pytest.fixture
def big_image() -> WeightImage:
    rng = np.random.default_rng(7)
    return WeightImage((
        stored("conv1", "weight", "fixed<8,1>", rng.integers(0, 1 << 8, 3000, dtype=np.uint64)),
        stored("conv1", "bias", "fixed<16,6>", rng.integers(0, 1 << 16, 40, dtype=np.uint64)),
        stored("dense", "weight", "float16", rng.integers(0, 1 << 16, 2000, dtype=np.uint64)),
        stored("dense", "bias", "fixed<16,6>", rng.integers(0, 1 << 16, 10, dtype=np.uint64)),
        stored("bn", "scale", "ufixed<8,2>", rng.integers(0, 1 << 8, 16, dtype=np.uint64)),
    ))


def words(img: WeightImage, key: str) -> list[int]:
    return img.get(*key.split("/")).words.tolist()


def fault_set(fmap: FaultMap) -> set[tuple]:
    return {(layer, name, i, b) for layer, name, i, b, _ in fmap.records()}


# --- FaultMap semantics on known words ----------------------------------------------------------------


def test_flip_known_words(image):
    fmap = FaultMap.from_records([("conv1/weight", 0, 0, "flip"), ("conv1/weight", 0, 7, "flip"),
                                  ("conv1/weight", 1, 7, FaultKind.FLIP), (("conv1", "bias"), 2, 15, "flip")])
    out = fmap.apply(image)
    assert words(out, "conv1/weight") == [0x81, 0xFF, 0x80, 0xFF, 0x0F, 0xA5]
    assert words(out, "conv1/bias") == [0x0000, 0xFFFF, 0x9234]
    assert fmap.effective(image) == 4


def test_stuck_known_words(image):
    fmap = FaultMap.from_records([("conv1/weight", 3, 7, "stuck0"), ("conv1/weight", 0, 0, "stuck1"),
                                  ("dense/bias", 1, 15, "stuck0")])
    out = fmap.apply(image)
    assert words(out, "conv1/weight") == [0x01, 0x7F, 0x80, 0x7F, 0x0F, 0xA5]
    assert words(out, "dense/bias") == [0x0001, 0x0000]


def test_float16_exponent_flip_multiplies_by_2_to_16(image):
    out = FaultMap.from_records([("dense/weight", 0, 14, "flip")]).apply(image)
    assert out.get("dense", "weight").values().tolist() == [0.5 * 2.0**16, -1.0, 2.0, 0.0]


def test_flip_in_scaled_weight_is_divided_by_the_scale():
    img = WeightImage((stored("l", "weight", "fixed<8,1>", [0x10], scale=Scale(shift=2)),))
    before = img.get("l", "weight").values()[0]
    after = FaultMap.from_records([("l/weight", 0, 5, "flip")]).apply(img).get("l", "weight").values()[0]
    assert after - before == 2.0**5 * 2.0**-7 / 4


def test_double_flip_cancels(image):
    fmap = FaultMap.from_records([("conv1/weight", 4, 3, "flip"), ("conv1/weight", 4, 3, "flip")])
    assert fmap.apply(image).equal_words(image)
    assert len(fmap) == 2
    assert fmap.effective(image) == 0


def test_stuck_bit_already_at_value_changes_nothing(image):
    fmap = FaultMap.from_records([("conv1/weight", 3, 2, "stuck1"), ("conv1/weight", 0, 6, "stuck0")])
    assert fmap.apply(image).equal_words(image)
    assert len(fmap) == 2
    assert fmap.effective(image) == 0


def test_stuck_at_acts_after_flips_whatever_the_order(image):
    # word 0 is 0x00: flip then stuck0, or stuck0 then flip, both read 0
    for records in ([("conv1/weight", 0, 3, "flip"), ("conv1/weight", 0, 3, "stuck0")],
                    [("conv1/weight", 0, 3, "stuck0"), ("conv1/weight", 0, 3, "flip")]):
        assert words(FaultMap.from_records(records).apply(image), "conv1/weight")[0] == 0x00


def test_conflicting_stuck_later_wins(image):
    first = FaultMap.from_records([("conv1/weight", 0, 1, "stuck0"), ("conv1/weight", 0, 1, "stuck1")])
    second = FaultMap.from_records([("conv1/weight", 0, 1, "stuck1"), ("conv1/weight", 0, 1, "stuck0")])
    assert words(first.apply(image), "conv1/weight")[0] == 0x02
    assert words(second.apply(image), "conv1/weight")[0] == 0x00


def reference_apply(image: WeightImage, fmap: FaultMap) -> dict[str, list[int]]:
    """The documented semantics, one fault at a time: all flips, then stuck-at faults in map order."""
    out = {a.key: a.words.tolist() for a in image}
    records = list(fmap.records())
    for layer, name, i, b, kind in records:
        if kind is FaultKind.FLIP:
            out[f"{layer}/{name}"][i] ^= 1 << b
    for layer, name, i, b, kind in records:
        if kind is FaultKind.STUCK0:
            out[f"{layer}/{name}"][i] &= ~(1 << b)
        elif kind is FaultKind.STUCK1:
            out[f"{layer}/{name}"][i] |= 1 << b
    return out


def test_apply_matches_one_fault_at_a_time_reference(image):
    rng = np.random.default_rng(0)
    kinds = list(FaultKind)
    for _ in range(20):
        records = []
        for _ in range(40):  # dense enough that many faults share a word and a bit
            arr = image.arrays[rng.integers(len(image.arrays))]
            records.append((arr.key, int(rng.integers(arr.size)), int(rng.integers(min(arr.format.width, 3))),
                            kinds[rng.integers(3)]))
        fmap = FaultMap.from_records(records)
        out = fmap.apply(image)
        ref = reference_apply(image, fmap)
        assert {a.key: a.words.tolist() for a in out} == ref
        changed = sum(bin(x ^ y).count("1") for a in image for x, y in zip(a.words.tolist(), ref[a.key], strict=True))
        assert fmap.effective(image) == changed


def test_apply_does_not_mutate_and_shares_untouched_arrays(image):
    before = {a.key: a.words.copy() for a in image}
    fmap = FaultMap.from_records([("conv1/weight", i, b, "flip") for i in range(6) for b in range(8)])
    out = fmap.apply(image)
    for a in image:
        np.testing.assert_array_equal(a.words, before[a.key])
    assert out.get("conv1", "weight") is not image.get("conv1", "weight")
    assert not np.shares_memory(out.get("conv1", "weight").words, image.get("conv1", "weight").words)
    for key in ("conv1/bias", "dense/weight", "dense/bias", "bn/scale"):
        assert out.get(*key.split("/")) is image.get(*key.split("/"))
    assert words(out, "conv1/weight") == [0xFF, 0x80, 0x7F, 0x00, 0xF0, 0x5A]
    assert FaultMap.empty().apply(image) is image


def test_masks_and_touched_words_equal_apply(big_image):
    fmap = FaultMap.concat([BitFlip(0.02).sample(big_image, np.random.default_rng(1)),
                            StuckAt(0.02).sample(big_image, np.random.default_rng(2)),
                            Burst(0.05, 3).sample(big_image, np.random.default_rng(3)),
                            BitFlip(0.02).sample(big_image, np.random.default_rng(1))])  # cancels the first
    out = fmap.apply(big_image)
    masks = fmap.masks(big_image)
    assert set(masks) == fmap.keys_touched()
    for arr in big_image:
        if arr.key in masks:
            xor, and_, or_ = masks[arr.key]
            np.testing.assert_array_equal(((arr.words ^ xor) & and_) | or_, out.get(arr.layer, arr.name).words)
    address, xor, and_, or_ = fmap.touched_words(big_image)
    assert np.all(np.diff(address) > 0)
    flat_old = np.concatenate([a.words for a in big_image])
    flat_new = flat_old.copy()
    flat_new[address] = ((flat_old[address] ^ xor) & and_) | or_
    np.testing.assert_array_equal(flat_new, np.concatenate([a.words for a in out]))
    changed = sum(bin(int(v)).count("1") for v in flat_old ^ flat_new)
    assert fmap.effective(big_image) == changed


def test_keys_and_layers_touched():
    fmap = FaultMap.from_records([("conv1/bias", 0, 1, "flip"), ("dense", 2, 3, "stuck1")])
    assert fmap.keys_touched() == {"conv1/bias", "dense/weight"}
    assert fmap.layers_touched() == {"conv1", "dense"}
    assert FaultMap.empty().keys_touched() == set()


def test_json_round_trip(tmp_path, image):
    fmap = FaultMap.from_records([("conv1/weight", 5, 7, "flip"), ("dense/weight", 1, 15, "stuck0"),
                                  ("conv1/weight", 0, 0, "stuck1"), ("dense/weight", 1, 15, "stuck1")])
    data = json.loads(json.dumps(fmap.to_json()))
    assert data["faults"][1] == ["dense", "weight", 1, 15, "stuck0"]
    again = FaultMap.from_json(data)
    assert again == fmap
    assert again.digest() == fmap.digest()
    assert list(again.records()) == list(fmap.records())
    loaded = FaultMap.load(fmap.save(tmp_path / "maps" / "trial0.json"))
    assert loaded == fmap
    assert loaded.apply(image).equal_words(fmap.apply(image))
    assert FaultMap.from_json(FaultMap.empty().to_json()) == FaultMap.empty()


def test_malformed_json_refused(tmp_path):
    with pytest.raises(FaultSpecError, match="format"):
        FaultMap.from_json({"faults": []})
    with pytest.raises(FaultSpecError, match=r"\[layer, name, index, bit, kind\]"):
        FaultMap.from_json({"format": "hwflow-faultmap", "version": 1, "faults": [["conv1", 0, 1, "flip"]]})
    with pytest.raises(FaultSpecError, match="unknown fault kind 'toggle'"):
        FaultMap.from_json({"format": "hwflow-faultmap", "version": 1, "faults": [["c", "weight", 0, 1, "toggle"]]})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(FaultSpecError, match="bad.json"):
        FaultMap.load(bad)


def test_concat_keeps_order_and_remaps_keys():
    a = FaultMap.from_records([("x/weight", 0, 0, "stuck0"), ("y/bias", 1, 1, "flip")])
    b = FaultMap.from_records([("y/bias", 2, 2, "flip"), ("x/weight", 0, 0, "stuck1")])
    both = FaultMap.concat([a, FaultMap.empty(), b])
    assert [r[:4] for r in both.records()] == [("x", "weight", 0, 0), ("y", "bias", 1, 1), ("y", "bias", 2, 2),
                                               ("x", "weight", 0, 0)]
    assert both.array_keys == ("x/weight", "y/bias")
    assert len(FaultMap.concat([])) == 0


def test_faultmap_columns_are_frozen_copies():
    index = np.array([3], dtype=np.int64)
    fmap = FaultMap(("a/weight",), np.array([0]), index, np.array([1]), np.array([0]))
    assert index.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        fmap.index[0] = 4


@pytest.mark.parametrize(("columns", "message"), [
    ((("a/weight",), [0, 0], [1], [1], [0]), "same length"),
    ((("a/weight",), [1], [1], [1], [0]), "index array_keys"),
    ((("a/weight",), [0], [-1], [1], [0]), ">= 0"),
    ((("a/weight",), [0], [1], [1], [3]), "kinds"),
    ((("a",), [0], [1], [1], [0]), "'layer/name'"),
    ((("a/weight", "a/weight"), [0], [1], [1], [0]), "once"),
])
def test_faultmap_structure_checked(columns, message):
    with pytest.raises(FaultSpecError, match=message):
        FaultMap(*columns)


def test_check_names_array_index_and_limit(image):
    with pytest.raises(FaultSpecError, match=r"fault on conv2/weight: .*has: conv1/weight, conv1/bias"):
        FaultMap.from_records([("conv2/weight", 0, 0, "flip")]).apply(image)
    with pytest.raises(FaultSpecError, match=r"conv1/weight: word index 6 is outside the array \(0\.\.5\)"):
        FaultMap.from_records([("conv1/weight", 6, 0, "flip")]).apply(image)
    bit_msg = r"conv1/weight: bit 8 is outside the 8-bit fixed<8,1\S*> word \(bits 0\.\.7\)"
    with pytest.raises(FaultSpecError, match=bit_msg):
        FaultMap.from_records([("conv1/weight", 0, 8, "flip")]).check(image)
    with pytest.raises(FaultSpecError, match="bit 16 is outside the 16-bit float16"):
        FaultMap.from_records([("dense/weight", 0, 16, "stuck1")]).effective(image)


def test_fault_kind_parse():
    assert FaultKind.parse("Stuck-0") is FaultKind.STUCK0
    assert FaultKind.parse(2) is FaultKind.STUCK1
    assert [k.code for k in FaultKind] == [0, 1, 2]
    with pytest.raises(FaultSpecError, match="expected flip, stuck0 or stuck1"):
        FaultKind.parse("stuck2")


# --- fault models: seeds, statistics --------------------------------------------------------------------


MODELS = [BitFlip(0.01), BitFlip(0.01, "exact"), StuckAt(0.01), StuckAt(0.01, 1, mode="exact"), Burst(0.05, 3)]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.describe())
def test_same_seed_same_map_different_seed_different_map(big_image, model):
    a = model.sample(big_image, np.random.default_rng(123))
    b = model.sample(big_image, np.random.default_rng(123))
    c = model.sample(big_image, np.random.default_rng(124))
    assert a == b
    assert a.digest() == b.digest()
    assert a != c
    assert len(a) > 0
    assert len(fault_set(a)) == len(a)  # distinct bits


def test_sampling_does_not_depend_on_word_values(big_image):
    zeros = WeightImage(tuple(a.with_words(np.zeros(a.size, np.uint64)) for a in big_image))
    model = StuckAt(0.02, "mixed", Target(bits=("msb", 0)))
    assert model.sample(big_image, np.random.default_rng(5)) == model.sample(zeros, np.random.default_rng(5))


# Reference maps sampled with numpy 1.26.4 (seed 2024).
PINNED = [
    [("a", "weight", 7, 2, "flip"), ("a", "weight", 17, 0, "flip"), ("a", "weight", 24, 5, "flip"),
     ("a", "weight", 25, 2, "flip"), ("a", "weight", 63, 6, "flip"), ("b", "bias", 4, 3, "flip"),
     ("b", "bias", 4, 9, "flip")],
    [("a", "weight", 6, 2, "stuck0"), ("a", "weight", 7, 2, "stuck0"), ("a", "weight", 11, 2, "stuck0"),
     ("a", "weight", 16, 7, "stuck1"), ("a", "weight", 18, 7, "stuck0"), ("a", "weight", 24, 3, "stuck0"),
     ("a", "weight", 25, 0, "stuck0"), ("a", "weight", 53, 1, "stuck0"), ("a", "weight", 63, 3, "stuck1"),
     ("b", "bias", 2, 11, "stuck1"), ("b", "bias", 4, 0, "stuck1"), ("b", "bias", 4, 6, "stuck1"),
     ("b", "bias", 7, 10, "stuck0")],
    [("a", "weight", 6, 6, "flip"), ("a", "weight", 6, 7, "flip"), ("a", "weight", 15, 5, "flip"),
     ("a", "weight", 15, 6, "flip"), ("a", "weight", 22, 6, "flip"), ("a", "weight", 22, 7, "flip"),
     ("b", "bias", 7, 14, "flip"), ("b", "bias", 7, 15, "flip")],
]


def test_pinned_stream():
    """Fails if numpy changes the Generator streams the models use: a workstation and a board running
    those two numpy versions would then sample different maps from the same seed."""
    img = WeightImage((stored("a", "weight", "fixed<8,1>", np.zeros(64)), stored("b", "bias", "float16", np.zeros(8))))
    flips = BitFlip(0.01).sample(img, np.random.default_rng(2024))
    stuck = StuckAt(0.02, mode="exact").sample(img, np.random.default_rng(2024))
    burst = Burst(0.05, 2).sample(img, np.random.default_rng(2024))
    got = [[r[:4] + (r[4].value,) for r in m.records()] for m in (flips, stuck, burst)]
    assert got == PINNED


def test_bernoulli_count_matches_binomial_mean(big_image):
    model = BitFlip(0.003)
    n = model.target.population(big_image).n_bits
    trials = 300
    counts = np.array([len(model.sample(big_image, np.random.default_rng(s))) for s in range(trials)])
    mean, sigma = 0.003 * n, math.sqrt(n * 0.003 * 0.997)
    assert abs(counts.mean() - mean) < 5 * sigma / math.sqrt(trials)
    assert 0.5 * sigma < counts.std() < 1.5 * sigma


def test_bernoulli_spreads_over_arrays_by_bit_count(big_image):
    pop = Target().population(big_image)
    per_array = {a.key: a.size * b.size for a, b in zip(pop.arrays, pop.bits, strict=True)}
    fmap = FaultMap.concat(BitFlip(0.01).sample(big_image, np.random.default_rng(s)) for s in range(100))
    keys = np.asarray(fmap.array_keys)[fmap.array]
    p = 0.01 * 100
    for key, bits in per_array.items():
        hits = int((keys == key).sum())
        assert abs(hits - p * bits) < 5 * math.sqrt(p * bits) + 1, key
    bits_hit = np.bincount(fmap.bit[keys == "conv1/weight"], minlength=8)
    assert bits_hit.min() > 0.7 * bits_hit.mean()


def test_exact_mode_gives_round_rate_n_distinct_bits(big_image):
    for rate, target in ((0.01, Target()), (0.1, Target(layers=("dense",))), (0.5, Target(bits=(0,)))):
        n = target.population(big_image).n_bits
        for seed in range(3):
            fmap = BitFlip(rate, "exact", target).sample(big_image, np.random.default_rng(seed))
            assert len(fmap) == round(rate * n)
            assert len(fault_set(fmap)) == len(fmap)
            assert fmap.effective(big_image) == len(fmap)


def test_rate_zero_and_one(image):
    assert len(BitFlip(0.0).sample(image, np.random.default_rng(0))) == 0
    assert len(Burst(0.0).sample(image, np.random.default_rng(0))) == 0
    out = BitFlip(1.0, target=Target(arrays=("weight",))).sample(image, np.random.default_rng(0)).apply(image)
    assert words(out, "conv1/weight") == [0xFF ^ w for w in words(image, "conv1/weight")]
    assert words(out, "dense/weight") == [0xFFFF ^ w for w in words(image, "dense/weight")]
    assert words(out, "conv1/bias") == words(image, "conv1/bias")


def test_stuck_at_values(big_image):
    for value, kinds in ((0, {FaultKind.STUCK0}), (1, {FaultKind.STUCK1})):
        fmap = StuckAt(0.05, value).sample(big_image, np.random.default_rng(0))
        assert {r[4] for r in fmap.records()} == kinds
    mixed = StuckAt(0.05).sample(big_image, np.random.default_rng(0))
    ones = int((mixed.kind == FaultKind.STUCK1.code).sum())
    assert abs(ones - len(mixed) / 2) < 5 * math.sqrt(len(mixed)) / 2
    assert set(mixed.kind.tolist()) == {1, 2}


# --- targets ------------------------------------------------------------------------------------------


def test_target_layer_only(big_image):
    for layers in (("dense",), (2 - 1,), (-1 - 1,)):  # name, index 1, index -2: all "dense"
        fmap = BitFlip(0.05, target=Target(layers=layers)).sample(big_image, np.random.default_rng(0))
        assert fmap.layers_touched() == {"dense"}
        assert fmap.keys_touched() == {"dense/weight", "dense/bias"}


def test_target_msb_only(big_image):
    fmap = BitFlip(0.2, target=Target(bits=("msb",))).sample(big_image, np.random.default_rng(0))
    widths = {a.key: a.format.width for a in big_image}
    keys = np.asarray(fmap.array_keys)[fmap.array]
    assert all(b == widths[k] - 1 for k, b in zip(keys, fmap.bit.tolist(), strict=True))
    assert fmap.keys_touched() == set(widths)


def test_target_sign_skips_unsigned_and_wide_bits_are_skipped(big_image):
    sign = Target(bits=("sign",)).population(big_image)
    assert "bn/scale" not in sign.keys
    high = Target(bits=(12, 3)).population(big_image)
    assert high.allowed("conv1/weight").tolist() == [3]
    assert high.allowed("dense/weight").tolist() == [3, 12]
    only_wide = BitFlip(0.1, target=Target(bits=(12,))).sample(big_image, np.random.default_rng(0))
    assert fault_set(only_wide)
    assert {k.split("/")[0] for k in only_wide.keys_touched()} <= {"conv1", "dense"}
    assert "conv1/weight" not in only_wide.keys_touched()


def test_target_weights_only(big_image):
    fmap = StuckAt(0.05, target=Target(arrays=("weight",))).sample(big_image, np.random.default_rng(0))
    assert fmap.keys_touched() == {"conv1/weight", "dense/weight"}
    assert Target(arrays=["scale"]).population(big_image).keys == ("bn/scale",)


def test_target_errors(big_image):
    with pytest.raises(FaultSpecError, match="unknown layer 'conv9'; the image has: conv1, dense, bn"):
        Target(layers=("conv9",)).population(big_image)
    with pytest.raises(FaultSpecError, match=r"index 3 is out of range; the image has 3 layers \(0\.\.2\)"):
        Target(layers=(3,)).population(big_image)
    with pytest.raises(FaultSpecError, match="bits=20 fit no selected array"):
        BitFlip(0.1, target=Target(bits=(20,))).sample(big_image, np.random.default_rng(0))
    with pytest.raises(FaultSpecError, match="selects no stored array"):
        Target(layers=("bn",), arrays=("weight",)).population(big_image)
    with pytest.raises(FaultSpecError, match="target.arrays: unknown array role 'kernel'"):
        Target(arrays=("kernel",))
    with pytest.raises(FaultSpecError, match="target.bits: 'lsb' is not a bit position"):
        Target(bits=("lsb",))
    with pytest.raises(FaultSpecError, match="target.layers: an empty list"):
        Target(layers=())


# --- bursts and explicit lists ------------------------------------------------------------------------


def test_burst_bits_adjacent_in_one_word(big_image):
    model = Burst(0.1, 4, Target(bits=(0, 1, 2, 3, 4, 9, 10, 11, 12, 14, 15)))
    fmap = model.sample(big_image, np.random.default_rng(3))
    assert len(fmap) % 4 == 0
    assert len(fmap) > 0
    widths = {a.key: a.format.width for a in big_image}
    keys = np.asarray(fmap.array_keys)[fmap.array]
    runs = list(zip(keys.reshape(-1, 4), fmap.index.reshape(-1, 4), fmap.bit.reshape(-1, 4), strict=True))
    words_hit = set()
    for k, idx, bits in runs:
        assert len(set(k)) == 1
        assert len(set(idx.tolist())) == 1
        assert np.all(np.diff(bits) == 1)
        assert bits[-1] < widths[k[0]]
        assert set(bits.tolist()) <= {0, 1, 2, 3, 4, 9, 10, 11, 12}
        words_hit.add((k[0], int(idx[0])))
    assert len(words_hit) == len(runs)  # at most one burst per word
    assert "dense/weight" in fmap.keys_touched()  # starts 9 fit only the 16-bit words


def test_burst_count_is_binomial_over_words(big_image):
    n_words = sum(a.size for a in big_image)
    counts = np.array([len(Burst(0.01, 2).sample(big_image, np.random.default_rng(s))) // 2 for s in range(200)])
    sigma = math.sqrt(n_words * 0.01 * 0.99)
    assert abs(counts.mean() - 0.01 * n_words) < 5 * sigma / math.sqrt(200)


def test_burst_that_fits_nowhere(big_image):
    with pytest.raises(FaultSpecError, match="no selected word has 3 adjacent allowed bits"):
        Burst(0.1, 3, Target(bits=(0, 1, 3, 4))).sample(big_image, np.random.default_rng(0))
    with pytest.raises(FaultSpecError, match="burst.length: a burst length is an integer 1..64"):
        Burst(0.1, 0)


def test_explicit_same_map_whatever_the_rng(image):
    model = Explicit([("conv1", 2, 7), ("dense/bias", 1, 0, "stuck1"), ("conv1/weight", 0, 0, FaultKind.STUCK0)])
    a = model.sample(image, np.random.default_rng(0))
    assert a == model.sample(image, np.random.default_rng(99))
    assert list(a.records())[0] == ("conv1", "weight", 2, 7, FaultKind.FLIP)
    assert words(a.apply(image), "dense/bias") == [0x0001, 0x8001]
    assert model.describe() == "explicit(3 faults)"


def test_explicit_validation(image):
    with pytest.raises(FaultSpecError, match=r"conv1/weight: word index 6 is outside the array \(0\.\.5\)"):
        Explicit([("conv1", 6, 0)]).sample(image, np.random.default_rng(0))
    with pytest.raises(FaultSpecError, match="bit 9 is outside the 8-bit"):
        Explicit([("bn/scale", 0, 9)]).sample(image, np.random.default_rng(0))
    with pytest.raises(FaultSpecError, match="no such array"):
        Explicit([("fc/weight", 0, 0)]).sample(image, np.random.default_rng(0))
    with pytest.raises(FaultSpecError, match=r"explicit.faults\[1\]: .*unknown fault kind 'x'"):
        Explicit([("conv1", 0, 0), ("conv1", 0, 0, "x")])
    with pytest.raises(FaultSpecError, match=r"explicit.faults\[0\]: a fault's bit must be an integer"):
        Explicit([("conv1", 0, "7")])
    with pytest.raises(FaultSpecError, match="explicit.faults: a non-empty list"):
        Explicit([])


# --- specs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [
    BitFlip(1e-4),
    BitFlip(1e-3, "exact", Target(layers=("conv1", 2), bits=("msb", 3), arrays=("weight",))),
    StuckAt(0.5, 0, Target(bits=(7,)), "exact"),
    StuckAt(0.0),
    Burst(1e-2, 3, Target(layers=("dense",))),
    Explicit([("conv1", 0, 1, "stuck1"), ("dense/bias", 3, 2)]),
], ids=lambda m: m.describe())
def test_spec_round_trip(model):
    spec = json.loads(json.dumps(model.to_spec()))
    rate = getattr(model, "rate", None)
    assert fault_model_from_spec(spec, rate) == model
    assert "rate" not in spec


def test_describe_labels():
    label = BitFlip(1e-3, target=Target(layers=("conv1",), bits=(7,))).describe()
    assert label == "bitflip(bernoulli) layers=conv1 bits=7"
    assert StuckAt(0.1, 1, Target(arrays=("weight",))).describe() == "stuck-at(1,bernoulli) arrays=weight"
    assert Burst(0.1, 4).describe() == "burst(length=4)"


def test_from_spec_builds_each_model():
    spec = {"model": "bitflip", "mode": "exact", "layers": ["conv1"], "bits": ["msb"], "arrays": ["weight"]}
    assert fault_model_from_spec(spec, 1e-3) == BitFlip(1e-3, "exact", Target(("conv1",), ("msb",), ("weight",)))
    assert fault_model_from_spec({"model": "stuck-at", "value": "1", "bits": "msb"}, 0.1) == \
        StuckAt(0.1, 1, Target(bits=("msb",)))
    assert fault_model_from_spec({"model": "burst"}, 0.1) == Burst(0.1, 2)
    assert fault_model_from_spec({"model": "explicit", "faults": [{"array": "conv1", "index": 0, "bit": 1}]},
                                 None) == Explicit([("conv1/weight", 0, 1, "flip")])
    assert set(FAULT_MODELS) == {"bitflip", "stuck-at", "burst", "explicit"}


W = "campaign.yaml: faults[1]"


@pytest.mark.parametrize(("spec", "rate", "message"), [
    ({"model": "bitflip", "mode": "foo"}, 0.1, f"{W}.mode: unknown mode 'foo' (expected bernoulli or exact)"),
    ({"model": "bitflop"}, 0.1,
     f"{W}.model: unknown fault model 'bitflop' (known: bitflip, stuck-at, burst, explicit)"),
    ({"mode": "exact"}, 0.1, f"{W}.model: missing; known fault models: bitflip"),
    ({"model": ["bitflip"]}, 0.1, f"{W}.model: unknown fault model ['bitflip']"),
    ({"model": "bitflip", "lenght": 2}, 0.1, f"{W}.lenght: unknown key for bitflip (allowed: model, mode, layers"),
    ({"model": "burst", "mode": "exact"}, 0.1, f"{W}.mode: unknown key for burst"),
    ({"model": "bitflip", "rate": 0.1}, 0.1, f"{W}.rate: the rate is set by the campaign's rate sweep"),
    ({"model": "bitflip"}, 1.5, f"{W}.rate: a rate must be in [0, 1], got 1.5"),
    ({"model": "stuck-at"}, -0.1, f"{W}.rate: a rate must be in [0, 1], got -0.1"),
    ({"model": "burst"}, float("nan"), f"{W}.rate: a rate must be in [0, 1]"),
    ({"model": "bitflip"}, "1e-3", f"{W}.rate: a rate is a number in [0, 1], got '1e-3'"),
    ({"model": "bitflip"}, None, f"{W}.rate: bitflip needs a rate"),
    ({"model": "stuck-at", "value": 2}, 0.1, f"{W}.value: unknown stuck-at value 2 (expected 0, 1 or mixed)"),
    ({"model": "burst", "length": 2.5}, 0.1, f"{W}.length: a burst length is an integer 1..64, got 2.5"),
    ({"model": "bitflip", "layers": [1.5]}, 0.1, f"{W}.layers: 1.5 is neither a layer name nor a layer index"),
    ({"model": "bitflip", "layers": []}, 0.1, f"{W}.layers: an empty list selects nothing"),
    ({"model": "bitflip", "bits": [64]}, 0.1, f"{W}.bits: 64 is not a bit position"),
    ({"model": "bitflip", "bits": [True]}, 0.1, f"{W}.bits: True is not a bit position"),
    ({"model": "bitflip", "arrays": ["kernel"]}, 0.1, f"{W}.arrays: unknown array role 'kernel'"),
    ({"model": "explicit"}, None, f"{W}.faults: a non-empty list"),
    ({"model": "explicit", "faults": [["conv1", 0]]}, None, f"{W}.faults[0]: expected [array, index, bit]"),
    ({"model": "explicit", "faults": [{"array": "c", "idx": 0}]}, None, f"{W}.faults[0]: unknown keys ['idx']"),
    ({"model": "explicit", "faults": [[3, 0, 1]]}, None, f"{W}.faults[0]: the array is 'layer/name'"),
    (["bitflip"], 0.1, f"{W}: expected a mapping with a 'model' key"),
])
def test_from_spec_errors_name_the_field(spec, rate, message):
    with pytest.raises(FaultSpecError) as err:
        fault_model_from_spec(spec, rate, W)
    assert str(err.value).startswith(message)


def test_from_spec_without_where():
    with pytest.raises(FaultSpecError, match=r"^mode: unknown mode"):
        fault_model_from_spec({"model": "bitflip", "mode": "x"}, 0.1)


@pytest.mark.parametrize("rate", [-0.01, 1.01, float("inf"), float("nan"), True, None])
@pytest.mark.parametrize("cls", [BitFlip, StuckAt, Burst])
def test_rate_outside_unit_interval_refused(cls, rate):
    with pytest.raises(FaultSpecError, match=f"{cls.name}.rate: a rate"):
        cls(rate)


def test_constructor_field_errors():
    with pytest.raises(FaultSpecError, match=r"bitflip.mode: unknown mode 'Exact'"):
        BitFlip(0.1, "Exact")
    with pytest.raises(FaultSpecError, match="stuck-at.value: unknown stuck-at value 'x'"):
        StuckAt(0.1, "x")
    with pytest.raises(FaultSpecError, match="bitflip.target: expected a Target"):
        BitFlip(0.1, target={"layers": ["conv1"]})


def test_registry_refuses_duplicates():
    class Other:
        name = "bitflip"

    with pytest.raises(FaultSpecError, match="'bitflip' is already registered"):
        register_fault_model(Other)
    assert FAULT_MODELS["bitflip"] is BitFlip


def test_models_and_maps_pickle(big_image):
    """Campaign workers (dask, multiprocessing) receive models and maps by pickling."""
    import pickle

    for model in (*MODELS, Explicit([("conv1", 0, 1)])):
        again = pickle.loads(pickle.dumps(model))
        assert again == model
        assert again.sample(big_image, np.random.default_rng(3)) == model.sample(big_image, np.random.default_rng(3))
