"""Fuzzing the host's address guard: whatever the manifest and the fault maps, no write leaves the weights.

For generated designs (arrays of 1..32-bit words, some left as constants), a host manifest that is the
build's own or a mutation of it, and generated operations (single writes, bulk writes, fault maps
applied as the host campaign applies them, scrubs) with addresses and values of every kind, on the
recording fake of pynq (tests/fake_pynq.py):

- every MMIO write the host makes is to a weight memory of the overlay, at a bus word that holds
  weights (never past the last weight, never a control register), and leaves unused lanes as they were;
- every refused case (a manifest refused, an address or value refused) is refused before its first write.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hwflow_host.board import read_words, write_words
from hwflow_host.campaign import scrub
from hwflow_host.manifest import parse_manifest
from hwflow_host.pynq_board import PynqBoard
from hypothesis import event, given
from hypothesis import strategies as st

from hwflow.errors import HwflowError
from hwflow.faults import FaultMap
from hwflow.image import Scale, StorageFormat, StoredArray, WeightImage
from tests.fake_pynq import BusMemory, FakePynq, layout_manifest
from tests.fuzzing import answers, fuzz_settings

INPUT = {"input_shape": [4], "input_type": "fixed<16,6>", "output_shape": [3], "output_type": "fixed<16,6>"}


class WordStub:
    """The word memory behind the fake's BRAMs (``run`` is not used here)."""

    def __init__(self, image: WeightImage):
        self.words = np.concatenate([a.words for a in image])

    def read_word(self, addr):
        return int(self.words[addr])

    def write_words(self, addrs, values):
        self.words[addrs] = values

    def run(self, x):
        return np.zeros((len(x), 3), np.int64)


@st.composite
def designs(draw):
    """(image, keys left as constants) of 1..4 arrays with words of 1..32 bits."""
    arrays = []
    for i in range(draw(st.integers(1, 4))):
        width = draw(st.integers(1, 32))
        fmt = StorageFormat.parse(f"ufixed<{width},0>" if width == 1 or draw(st.booleans()) else f"fixed<{width},1>")
        size = draw(st.integers(1, 40))
        words = draw(st.lists(st.integers(0, 2**width - 1), min_size=size, max_size=size))
        name = draw(st.sampled_from(["weight", "bias", "scale"]))
        arrays.append(StoredArray(f"l{i}", name, f"{name[0]}{i}", (size,), (0,), fmt, Scale(),
                                  np.array(words, np.uint64)))
    image = WeightImage(tuple(arrays))
    skip = tuple(a.key for a in arrays if draw(st.integers(0, 3)) == 0)
    return image, skip


MEMORY_FIELDS = ["base", "range", "depth", "word_bits", "lanes", "first_word"]


@st.composite
def host_manifests(draw, hardware: dict) -> dict:
    """The build's manifest, or one with a memory's field moved, a memory dropped or duplicated."""
    manifest = copy.deepcopy(hardware)
    mems = manifest["weight_memories"]
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # the build's own manifest half the time
        if not mems:
            break
        i = draw(st.integers(0, len(mems) - 1))
        action = draw(st.sampled_from(["field", "field", "drop", "duplicate"]))
        if action == "field":
            key = draw(st.sampled_from(MEMORY_FIELDS))
            mems[i][key] = draw(st.sampled_from([mems[i][key] + d for d in (-4096, -4, -1, 1, 4, 4096)]
                                                + [0, 2**32, 2**63]))
        elif action == "drop":
            del mems[i]
        else:
            mems.append({**mems[i], "name": mems[i]["name"] + "x"})
    return manifest


ADDRESS = st.one_of(st.integers(-3, 200), st.sampled_from([2**31, 2**63 - 1, 2**64]), st.booleans(), st.floats(),
                    st.text(max_size=2), st.none())
VALUE = st.one_of(st.integers(-3, 2**33), st.sampled_from([2**63, 2**64 + 1, -(2**63)]), st.booleans(), st.floats(),
                  st.none())


@st.composite
def operations(draw, image: WeightImage):
    total = image.total_words
    kind = draw(st.sampled_from(["word", "words", "fault", "scrub", "read"]))
    if kind == "word":  # mostly a word of the image with a value that fits 8 bits, sometimes anything
        if draw(st.booleans()):
            return kind, draw(st.integers(0, total - 1)), draw(st.integers(0, 255))
        return kind, draw(ADDRESS), draw(VALUE)
    if kind == "words":
        n = draw(st.integers(0, 6))
        wild = draw(st.booleans())
        addr = st.integers(-2, total + 2) if wild else st.integers(0, total - 1)
        addrs = draw(st.lists(addr, min_size=n, max_size=n))
        values = draw(st.lists(st.integers(-2, 2**33) if wild else st.integers(0, 1), min_size=n, max_size=n))
        dtype = draw(st.sampled_from([np.int64, np.uint64, np.float64]))
        return kind, np.array(addrs, np.int64), np.array([abs(v) for v in values] if dtype is np.uint64 else values,
                                                       dtype)
    if kind == "fault":
        wild = draw(st.integers(0, 3)) == 0
        records = draw(st.lists(
            st.sampled_from(list(image)).flatmap(lambda a: st.tuples(
                st.just(a.key), st.integers(0, 45 if wild else a.size - 1),
                st.integers(0, 33 if wild else a.format.width - 1), st.sampled_from(["flip", "stuck0", "stuck1"]))),
            max_size=8))
        return kind, records, None
    if kind == "scrub":
        return kind, np.array(draw(st.lists(st.integers(-1, total), max_size=8)), np.int64), None
    return kind, np.array(draw(st.lists(st.integers(-1, total), max_size=6)), np.int64), None


def _apply(board: PynqBoard, image: WeightImage, op) -> None:
    """One operation, the way the host does it."""
    kind, a, b = op
    if kind == "word":
        board.write_word(a, b)
    elif kind == "words":
        write_words(board, a, b)
    elif kind == "fault":  # as run_trial applies a trial's map
        addrs, xor, and_, or_ = FaultMap.from_records(a).touched_words(image)
        old = read_words(board, addrs)
        write_words(board, addrs, ((old ^ xor) & and_) | or_)
    elif kind == "scrub":
        scrub(board, image, a)
    else:
        read_words(board, a)


def _bram_writes(fake: FakePynq) -> list[tuple]:
    return [e for e in fake.log if e[0] == "write"]


def _check_traffic(fake: FakePynq, hardware: dict, bus: BusMemory) -> None:
    memories = {m["ctrl"]: m for m in hardware["weight_memories"]}
    for _, region, offset, value in _bram_writes(fake):
        assert region in memories, f"a write to {region}, not a weight memory"
        m = memories[region]
        bus_words = -(-m["depth"] // m["lanes"])
        assert offset % 4 == 0
        assert 0 <= offset < 4 * bus_words, f"{region}: write at {offset:#x}, past its {bus_words} weight bus words"
        assert 0 <= value <= 0xFFFFFFFF
    for m in parse_manifest(hardware).memories:  # unused lanes and bus words stay zero
        words = bus.bram[m.name]
        used = m.depth - (m.bus_words - 1) * m.lanes
        tail = int(words[m.bus_words - 1]) >> (used * m.word_bits)
        assert tail == 0, f"{m.name}: unused lanes of the last bus word were written"
        assert not np.any(words[m.bus_words:]), f"{m.name}: bus words past the weights were written"


@st.composite
def cases(draw):
    image, skip = draw(designs())
    hardware = layout_manifest(image, skip=skip, **INPUT)
    host = draw(host_manifests(hardware))
    ops = draw(st.lists(operations(image), min_size=1, max_size=6))
    return image, hardware, host, ops


@fuzz_settings(300)
@given(cases())
def test_no_write_outside_the_weights_and_refusals_before_any_write(tmp_path_factory, case):
    image, hardware, host, ops = case
    bit = tmp_path_factory.mktemp("bit") / "hwflow_top.bit"
    bit.write_bytes(b"bitstream")
    bit.with_suffix(".hwh").write_text("<hwh/>")
    bus = BusMemory(parse_manifest(hardware), WordStub(image))
    fake = FakePynq(hardware, bus)
    manifest = answers(lambda: parse_manifest(host))
    if isinstance(manifest, HwflowError):
        assert _bram_writes(fake) == []
        return
    board = answers(lambda: PynqBoard(manifest, image, bit, pynq=fake))
    if isinstance(board, HwflowError):
        assert _bram_writes(fake) == [], "a refused manifest wrote"
        return
    event(f"board up, {len(ops)} operations")
    for op in ops:
        before = len(_bram_writes(fake))
        if isinstance(answers(lambda o=op: _apply(board, image, o)), HwflowError):
            assert len(_bram_writes(fake)) == before, f"{op[0]} refused after writing"
    event("the host wrote" if _bram_writes(fake) else "the host wrote nothing")
    _check_traffic(fake, hardware, bus)


def test_the_guard_test_sees_a_write_past_the_weights():
    """The traffic check itself: a write to the bus word after the last weight is caught."""
    image = WeightImage((StoredArray("l0", "weight", "w0", (3,), (0,), StorageFormat.parse("fixed<8,1>"), Scale(),
                                     np.array([1, 2, 3], np.uint64)),))
    hardware = layout_manifest(image, **INPUT)
    bus = BusMemory(parse_manifest(hardware), WordStub(image))
    fake = FakePynq(hardware, bus)
    fake.MMIO(hardware["weight_memories"][0]["base"], 4096).write(4, 7)
    with pytest.raises(AssertionError, match="past its 1 weight bus words"):
        _check_traffic(fake, hardware, bus)


def test_a_constant_in_a_fault_map_is_refused_before_any_write(tmp_path):
    """A map touching a memory word and then a constant: nothing is written (the check comes first)."""
    f8 = StorageFormat.parse("fixed<8,1>")
    image = WeightImage((StoredArray("l0", "weight", "w0", (4,), (0,), f8, Scale(), np.arange(4, dtype=np.uint64)),
                         StoredArray("l1", "bias", "b1", (2,), (0,), f8, Scale(), np.arange(2, dtype=np.uint64))))
    hardware = layout_manifest(image, skip=("l1/bias",), **INPUT)
    bit = tmp_path / "hwflow_top.bit"
    bit.write_bytes(b"bitstream")
    bit.with_suffix(".hwh").write_text("<hwh/>")
    fake = FakePynq(hardware, BusMemory(parse_manifest(hardware), WordStub(image)))
    board = PynqBoard(parse_manifest(hardware), image, bit, pynq=fake)
    faults = [("l0/weight", 1, 0, "flip"), ("l1/bias", 0, 0, "flip")]
    out = answers(lambda: _apply(board, image, ("fault", faults, None)))
    assert isinstance(out, HwflowError)
    assert _bram_writes(fake) == []
