"""The built design's C simulation (CSimBoard) against the emulator, word for word, under faults.

Four builds, each compiled once for the module: cnn-digits io_parallel as trained (the small arrays
left as hls4ml constants); io_stream hardened with FT-ClipAct and weight scaling (power-of-two
shifts on most arrays, non-power-of-two constants on two), every array in BRAM; and io_parallel
with weight scaling alone and with FT-ClipAct (saturate) alone.
Faults are injected as the host injects them: the changed words are written through the board's
weight port, the board runs, and the golden words are written back.
"""

from __future__ import annotations

import numpy as np
import pytest

from hwflow.cli import main
from hwflow.convert import HlsOptions, convert, image_from_hls
from hwflow.emulator import Emulator
from hwflow.errors import BoardError
from hwflow.hardware.boards import load_board
from hwflow.hardware.csim_board import (
    CSimBoard,
    board_image,
    bus_words,
    changed_words,
    check_board,
    sample_fault_maps,
)
from hwflow.hardware.manifest import BUS_BYTES
from hwflow.hardware.project import BuildOptions, generate
from hwflow.image import Scale, StoragePlan
from tests.conftest import needs_gxx, zoo_model

pytestmark = [pytest.mark.slow, needs_gxx]

N_MAPS = 50
# The zoo models with Latency / reuse factor 1 do not fit a PYNQ-Z2 (hwflow.hardware.resources refuses them).
HLS = {"strategy": "Resource", "reuse_factor": 8}


@pytest.fixture(scope="module")
def x(digits):
    return digits.x_test[:32]


def _hardened_model_and_plan(x, io: str, work):
    from hwflow.harden.clipact import apply_clipact, profile_thresholds
    from hwflow.harden.scale import max_fit_constant, plan_rule

    model = zoo_model("cnn-digits", 8, 8, seed=1)
    peaks = profile_thresholds(model, x)
    model = apply_clipact(model, {name: 0.5 * peak for name, peak in peaks.items()}, "zero")
    image = image_from_hls(convert(model, HlsOptions.make(io, **HLS), work))
    scales = dict(plan_rule(image).scales)
    for key in ("conv2/weight", "bn2/scale"):  # divide-back by a multiply (contract 7)
        scales[key] = Scale(0, 0.93 * max_fit_constant(image.get(*key.split("/"))))
    return model, StoragePlan("fixed", scales, "constant")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "cnn-digits.h5"
    zoo_model("cnn-digits", 8, 8).save(path)
    return path


@pytest.fixture(scope="module")
def plain(tmp_path_factory, model_file):
    """Default options: the small arrays stay hls4ml constants. Built as ``hwflow build`` builds the file."""
    from hwflow.zoo.loading import load_model

    out = tmp_path_factory.mktemp("plain")
    build = generate(load_model(model_file), load_board("pynq-z2"), out,
                     BuildOptions(HlsOptions.make("parallel", **HLS), name="cnn-digits"))
    return build, CSimBoard(out)


@pytest.fixture(scope="module")
def hardened(tmp_path_factory, x):
    out = tmp_path_factory.mktemp("hardened")
    model, plan = _hardened_model_and_plan(x, "stream", tmp_path_factory.mktemp("plan"))
    build = generate(model, load_board("pynq-z2"), out, BuildOptions(HlsOptions.make("stream", **HLS), min_words=1),
                     storage=plan)
    return build, CSimBoard(out)


@pytest.fixture(scope="module")
def scaled(tmp_path_factory, x):
    """Weight scaling alone (the rule's power-of-two shifts), io_parallel, every array in BRAM."""
    from hwflow.harden.scale import plan_rule

    model = zoo_model("cnn-digits", 8, 8, seed=2)
    plan = plan_rule(image_from_hls(convert(model, HlsOptions.make("parallel", **HLS),
                                            tmp_path_factory.mktemp("scaled-plan"))))
    out = tmp_path_factory.mktemp("scaled")
    build = generate(model, load_board("pynq-z2"), out, BuildOptions(HlsOptions.make("parallel", **HLS), min_words=1),
                     storage=plan)
    return build, CSimBoard(out)


@pytest.fixture(scope="module")
def clipped(tmp_path_factory, x):
    """FT-ClipAct alone (saturate mode), io_parallel, the default memories."""
    from hwflow.harden.clipact import apply_clipact, profile_thresholds

    model = zoo_model("cnn-digits", 8, 8, seed=3)
    peaks = profile_thresholds(model, x)
    model = apply_clipact(model, {name: 0.6 * peak for name, peak in peaks.items()}, "saturate")
    out = tmp_path_factory.mktemp("clipped")
    build = generate(model, load_board("pynq-z2"), out, BuildOptions(HlsOptions.make("parallel", **HLS)))
    return build, CSimBoard(out)


@pytest.fixture(scope="module", params=["plain", "hardened", "scaled", "clipped"])
def case(request):
    return request.getfixturevalue(request.param)


def golden_words(board: CSimBoard) -> dict[int, int]:
    return {m.first_word + i: board.read_word(m.first_word + i)
            for m in board.manifest.weight_memories for i in range(m.depth)}


def test_the_builds_are_what_they_claim(plain, hardened):
    build, _ = plain
    assert build.manifest.keys == ("conv1/weight", "conv2/weight", "out/weight")  # the rest stay constants
    build, _ = hardened
    assert build.manifest.io_type == "io_stream"
    assert "clipact" in {spec.kind.value for spec in build.program.layers}
    scales = {m.key: m.scale for m in build.manifest.weight_memories}
    assert len(scales) == len(build.image)
    assert scales["conv2/weight"].constant is not None
    assert scales["bn2/scale"].constant is not None
    assert any(s.shift > 0 for s in scales.values())
    text = (build.hls_dir / "firmware" / "hwflow_top.cpp").read_text()
    assert text.count("hwflow::unpack_divided<") == 2


def test_fault_free_run_equals_emulator(case, x):
    build, board = case
    np.testing.assert_array_equal(board.run(x), Emulator(build.program, build.image).run(x))


def test_fault_maps_equal_emulator(case, x):
    """50 maps (bit flips and stuck-at), written through the weight port, scrubbed after each."""
    build, board = case
    emulator = Emulator(build.program, build.image)
    clean = emulator.run(x)
    maps = sample_fault_maps(board_image(build.image, build.manifest), N_MAPS, seed=7)
    golden = np.concatenate([a.words for a in build.image])
    changed_outputs = 0
    for k, fmap in enumerate(maps):
        faulty = fmap.apply(build.image)
        addrs, values = changed_words(build.image, faulty)
        for a, v in zip(addrs.tolist(), values.tolist(), strict=True):
            board.write_word(a, v)
        expected = emulator.with_arrays(faulty, fmap.keys_touched()).run(x)
        np.testing.assert_array_equal(board.run(x), expected, err_msg=f"fault map {k}: {fmap.digest()}")
        changed_outputs += int(not np.array_equal(expected, clean))
        for a in addrs.tolist():
            board.write_word(a, int(golden[a]))
    assert changed_outputs >= 5  # the maps do reach the outputs: the comparison is not vacuous
    np.testing.assert_array_equal(board.run(x), clean)


def test_check_board_counts_and_catches_a_difference(plain, x):
    build, board = plain
    maps = sample_fault_maps(board_image(build.image, build.manifest), 4, seed=3)

    class Recording:  # the board, with every word written through its port recorded
        def __init__(self, inner):
            self.inner, self.writes = inner, []

        def write_word(self, addr, value):
            self.writes.append((addr, value))
            self.inner.write_word(addr, value)

        def read_word(self, addr):
            return self.inner.read_word(addr)

        def run(self, inputs):
            return self.inner.run(inputs)

    recording = Recording(board)
    result = check_board(recording, build.program, build.image, x, maps)
    assert result.ok, result.summary()
    assert result.maps == 4
    # counted from the maps array by array, and from the port's traffic: each faulty word once, then scrubbed
    expected = sum(int(np.count_nonzero(g.words != f.words)) for m in maps
                   for g, f in zip(build.image, m.apply(build.image), strict=True))
    golden = np.concatenate([a.words for a in build.image])
    faulty_writes = [(a, v) for a, v in recording.writes if v != int(golden[a])]
    assert expected > 0
    assert result.words_written == len(faulty_writes) == expected
    assert len(recording.writes) == 2 * expected

    class OffByOne:  # a board whose last logit is wrong once a weight has been written
        def __init__(self, inner):
            self.inner, self.dirty = inner, False

        def write_word(self, addr, value):
            self.dirty = True
            self.inner.write_word(addr, value)

        def read_word(self, addr):
            return self.inner.read_word(addr)

        def run(self, xs):
            y = self.inner.run(xs)
            y[:, -1] += int(self.dirty)
            return y

    bad = check_board(OffByOne(board), build.program, build.image, x, maps[:2])
    assert not bad.ok
    assert [k for k, _ in bad.mismatches] == [0, 1]
    assert golden_words(board) == {a: int(w) for a, w in enumerate(np.concatenate([a.words for a in build.image]))
                                   if build.manifest.memory_at_word(a) is not None}  # scrubbed


def test_every_word_reads_back_and_packs_as_the_manifest_says(plain):
    build, board = plain
    rng = np.random.default_rng(0)
    image = build.image
    for m in build.manifest.weight_memories:
        words = rng.integers(0, 1 << m.word_bits, m.depth, dtype=np.uint64)
        for i, w in enumerate(words.tolist()):
            board.write_word(m.first_word + i, w)
        image = image.replace_array(image.get(m.layer, m.array).with_words(words))
    for m in build.manifest.weight_memories:
        got = [board.read_word(m.first_word + i) for i in range(m.depth)]
        np.testing.assert_array_equal(got, image.get(m.layer, m.array).words)
        bus = [board.read32(m.base + BUS_BYTES * k) for k in range(m.bus_words)]
        np.testing.assert_array_equal(bus, bus_words(m, image))
    board.load_image(build.image)
    np.testing.assert_array_equal([board.read_word(a) for a in sorted(golden_words(board))],
                                  [int(np.concatenate([a.words for a in build.image])[a])
                                   for a in sorted(golden_words(board))])


def test_a_word_write_changes_only_its_lane(plain):
    build, board = plain
    m = build.manifest.memory("conv2/weight")
    assert (m.word_bits, m.lanes) == (8, 4)
    i = 6  # lane 2 of bus word 1
    before = board.read32(m.base + 4)
    old = board.read_word(m.first_word + i)
    board.write_word(m.first_word + i, old ^ 0xA5)
    assert board.read32(m.base + 4) == before ^ (0xA5 << 16)
    assert [board.read_word(m.first_word + j) for j in (4, 5, 7)] == [(before >> (8 * k)) & 0xFF for k in (0, 1, 3)]
    board.write_word(m.first_word + i, old)
    assert board.read32(m.base + 4) == before


def test_bus_writes_land_in_the_lanes(hardened):
    build, board = hardened
    m = build.manifest.memory("bn2/scale")  # 16-bit words, two per bus word
    assert m.lanes == 2
    before = board.read32(m.base)
    board.write32(m.base, 0x1234ABCD)
    assert (board.read_word(m.first_word), board.read_word(m.first_word + 1)) == (0xABCD, 0x1234)
    board.write32(m.base, before)


def test_addresses_outside_the_memories_are_refused(plain):
    build, board = plain
    constant = build.image.base("conv1", "bias")  # an hls4ml constant in this build
    with pytest.raises(BoardError, match="conv1/bias.*constant"):
        board.write_word(constant, 1)
    with pytest.raises(BoardError, match="constant"):
        board.read_word(constant)
    with pytest.raises(BoardError, match="outside the weight memories"):
        board.write_word(build.image.total_words, 0)
    with pytest.raises(BoardError, match="non-negative"):
        board.write_word(-1, 0)
    w = build.manifest.memory("conv2/weight")
    with pytest.raises(BoardError, match="does not fit the 8-bit word"):
        board.write_word(w.first_word, 256)
    first = build.manifest.weight_memories[0]
    for address in (0, first.base - 4, first.base + BUS_BYTES * first.bus_words):
        with pytest.raises(BoardError, match="outside the weight memories"):
            board.write32(address, 0)
    with pytest.raises(BoardError, match="aligned"):
        board.read32(first.base + 2)
    with pytest.raises(BoardError, match="wider than 32 bits"):
        board.write32(first.base, 1 << 32)
    assert board.read_word(w.first_word) == int(build.image.get("conv2", "weight").words[0])  # nothing changed


def test_a_second_board_has_its_own_memories(plain, x):
    build, board = plain
    other = CSimBoard(build.out_dir)
    m = build.manifest.memory("out/weight")
    old = board.read_word(m.first_word)
    other.write_word(m.first_word, old ^ 0x80)
    assert board.read_word(m.first_word) == old
    assert other.read_word(m.first_word) == old ^ 0x80


def test_inputs_of_the_wrong_shape_are_refused(plain):
    _, board = plain
    with pytest.raises(BoardError, match="the design takes"):
        board.run(np.zeros((2, 7, 7, 1)))
    assert board.run(np.zeros((3, 64))).shape == (3, 10)


def test_cli_verify_on_the_built_design(plain, model_file, capsys):
    build, _ = plain  # same model, options and folder: the compiled library is reused
    code = main(["verify", str(model_file), "--dataset", "digits", "--samples", "16", "--target", "csim-board",
                 "--strategy", "Resource", "--reuse-factor", "8", "--fault-maps", "3", "--workdir", str(build.out_dir)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "board check: 16 samples, fault-free + 3 fault maps" in out
    assert "all outputs equal the emulator's" in out
