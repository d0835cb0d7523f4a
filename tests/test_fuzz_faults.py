"""Fuzzing the FaultMap JSON (``FaultMap.from_json`` / ``load``) and ``explicit`` fault lists.

Generated maps, valid and broken, answer with a FaultMap or a FaultSpecError. An accepted map,
applied to an image, changes only the words it names, and only there where it names a bit.
"""

from __future__ import annotations

import json

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from hwflow.errors import FaultSpecError, HwflowError
from hwflow.faults import FaultMap, fault_model_from_spec
from hwflow.image import Scale, StorageFormat, StoredArray, WeightImage
from tests.fuzzing import answers, fuzz_settings, mutated, scalars, trees


def _stored(layer: str, name: str, fmt: str, words) -> StoredArray:
    words = np.asarray(words, dtype=np.uint64)
    return StoredArray(layer, name, f"{name[0]}_{layer}", (words.size,), (0,), StorageFormat.parse(fmt), Scale(),
                       words)


IMAGE = WeightImage((
    _stored("conv1", "weight", "fixed<8,1>", [0x00, 0x7F, 0x80, 0xFF, 0x0F, 0xA5]),
    _stored("conv1", "bias", "fixed<16,6>", [0x0000, 0xFFFF, 0x1234]),
    _stored("dense", "weight", "fixed<6,2>", [1, 2, 3, 63]),
))
KEYS = st.sampled_from(["conv1/weight", "conv1/bias", "dense/weight", "dense", "conv1", "nope/weight", "/", "a/",
                        "dense/bias", "conv1/weight/x"])
INDEX = st.one_of(st.integers(-2, 8), st.integers(-(2**70), 2**70), st.sampled_from([2**15, 2**16 + 1, 2**31, 2**63]),
                  st.floats(), st.text(max_size=3), st.none(), st.booleans())
BIT = st.one_of(st.integers(-2, 18), st.sampled_from([63, 64, 2**15, 2**16 + 3, 2**32 + 1, 2**63]),
                st.integers(-(2**70), 2**70), st.floats(), st.none(), st.booleans())
KIND = st.one_of(st.sampled_from(["flip", "stuck0", "stuck1", "stuck-1", "STUCK_0", "", "flop", 0, 1, 2, 3, -1]),
                 scalars)
RECORD = st.tuples(KEYS, INDEX, BIT, KIND).map(list)


def _json_faults():
    valid = st.tuples(KEYS.map(lambda k: k.rpartition("/")[0] or k), st.sampled_from(["weight", "bias", ""]),
                      INDEX, BIT, KIND).map(list)
    return st.lists(st.one_of(valid, trees(max_leaves=4)), max_size=6)


def _check_applied(fmap: FaultMap) -> None:
    """An accepted map changes only the (word, bit) cells it names."""
    applied = answers(lambda: fmap.apply(IMAGE))
    if isinstance(applied, HwflowError):
        return
    named = {(f"{layer}/{name}", int(i), int(b)) for layer, name, i, b, _ in fmap.records()}
    for before, after in zip(IMAGE, applied, strict=True):
        changed = np.flatnonzero(before.words != after.words)
        for i in changed:
            diff = int(before.words[i] ^ after.words[i])
            bits = {b for b in range(64) if diff >> b & 1}
            assert all((before.key, int(i), b) in named for b in bits), (before.key, i, bits)


@fuzz_settings(300)
@given(st.fixed_dictionaries({"format": st.sampled_from(["hwflow-faultmap", "faultmap", None]),
                              "version": st.sampled_from([1, 2, "1", None, 1.0, True]),
                              "faults": _json_faults()}) | trees())
# Regressions: an index past int64 raised OverflowError; a bit past int16 wrapped silently (65539 -> 3).
@example({"format": "hwflow-faultmap", "version": 1, "faults": [["conv1", "weight", 2**70, 0, "flip"]]})
@example({"format": "hwflow-faultmap", "version": 1, "faults": [["conv1", "weight", 1, 2**16 + 3, "flip"]]})
@example({"format": "hwflow-faultmap", "version": 1, "faults": [["conv1", "weight", 2**63, 0, "flip"]]})
@example({"format": "hwflow-faultmap", "version": 1, "faults": [["dense", "weight", 0, 2**32 + 1, "stuck1"]]})
def test_faultmap_json_is_read_or_refused(data):
    fmap = answers(lambda: FaultMap.from_json(data))
    if isinstance(fmap, FaultMap):
        assert FaultMap.from_json(json.loads(json.dumps(fmap.to_json()))) == fmap  # round trip
        _check_applied(fmap)


@fuzz_settings(100)
@given(st.binary(max_size=80) | st.text(max_size=80).map(str.encode)
       | st.sampled_from([b"[" * 100_000, b'{"a":' * 50_000, b"\xff\xfe", b"null", b"1e999999"]))
@example(b"[" * 100_000)  # nested too deep for json: RecursionError, not a FaultSpecError, before the fix
def test_faultmap_files_are_read_or_refused(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("fm") / "map.json"
    path.write_bytes(raw)
    out = answers(lambda: FaultMap.load(path))
    assert isinstance(out, (FaultMap, FaultSpecError))


@fuzz_settings(300)
@given(st.lists(st.one_of(RECORD, RECORD.map(lambda r: r[:3]),
                          st.fixed_dictionaries({"array": KEYS, "index": INDEX, "bit": BIT},
                                                optional={"kind": KIND, "extra": scalars}),
                          trees(max_leaves=4)), max_size=6)
       | trees(max_leaves=6))
@example([["conv1/weight", 1, 2**16 + 3, "flip"]])
@example([["conv1/weight", 2**64, 1]])
@example([{"array": "dense", "index": 0, "bit": 2**15}])
@example([{"": None, None: None}])  # unknown keys of mixed types: sorting them raised TypeError
def test_explicit_fault_lists_are_taken_or_refused(faults):
    model = answers(lambda: fault_model_from_spec({"model": "explicit", "faults": faults}, None, "faults[0]"))
    if isinstance(model, HwflowError):
        return
    fmap = answers(lambda: model.sample(IMAGE, np.random.default_rng(0)))
    if isinstance(fmap, FaultMap):
        _check_applied(fmap)


VALID_SPEC = {"model": "explicit", "faults": [["conv1/weight", 1, 3, "flip"], {"array": "dense", "index": 2, "bit": 5,
                                                                              "kind": "stuck1"}]}


@fuzz_settings(200)
@given(mutated(VALID_SPEC))
def test_mutated_explicit_specs_are_taken_or_refused(spec):
    model = answers(lambda: fault_model_from_spec(spec, 1e-3, "faults[0]"))
    if not isinstance(model, HwflowError):
        fmap = answers(lambda: model.sample(IMAGE, np.random.default_rng(0)))
        if isinstance(fmap, FaultMap):
            _check_applied(fmap)


def test_a_bit_past_int16_is_refused_not_wrapped():
    wrapped = 2**16 + 3  # bit 3 once cast to int16
    for bit in (wrapped, 2**32 + 3):
        out = answers(lambda b=bit: FaultMap.from_records([("conv1/weight", 0, b, "flip")]))
        assert isinstance(out, FaultSpecError), out
    big = np.array([2**64 - 1], dtype=np.uint64)
    assert isinstance(answers(lambda: FaultMap(("conv1/weight",), [0], big, [0], [0])), FaultSpecError)
