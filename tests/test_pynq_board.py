"""PynqBoard against a recording fake of pynq (tests/fake_pynq.py): the exact MMIO traffic of a fault
map and of the scrub, the address guard, the overlay checks, batching, and resuming after a power loss.
The fake's BRAMs are 32-bit bus words laid out as contract 8 says, in front of the emulator (or the C-sim)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hwflow_host.board import BoardError, HardFaultError, ManifestError
from hwflow_host.campaign import CampaignPlan, HostTrial, run_host_campaign, run_trial, scrub
from hwflow_host.manifest import parse_manifest
from hwflow_host.pynq_board import PynqBoard

from hwflow.campaign import parse_spec
from hwflow.campaign.runner import evaluation_data
from hwflow.deploy.plan import host_plan
from hwflow.emulator import Emulator
from hwflow.faults import FaultMap
from hwflow.fixed import parse_type
from hwflow.hardware.emulator_board import EmulatorBoard
from hwflow.image import Scale, StorageFormat, StoredArray, WeightImage
from hwflow.results import ResultsDB, TrialKey
from tests.conftest import needs_gxx
from tests.fake_pynq import BATCH_OFFSET, BusMemory, FakePynq, PowerLoss, converted, layout_manifest, manifest_for

# --- a tiny design: two memories, 8-bit words (4 lanes) and 16-bit words (2 lanes) ----------------------

A = np.array([0x11, 0x22, 0x33, 0x44, 0x55, 0x66], np.uint64)  # a/weight: bus words 0 (4 lanes) and 1 (2)
B = np.array([0x1234, 0x0F0F, 0xBEEF], np.uint64)  # a/bias: bus words 0 (2 lanes) and 1 (1)


def tiny_image() -> WeightImage:
    f8, f16 = StorageFormat.parse("fixed<8,1>"), StorageFormat.parse("fixed<16,4>")
    return WeightImage((StoredArray("a", "weight", "w2", (6,), (0,), f8, Scale(), A),
                        StoredArray("a", "bias", "b2", (3,), (0,), f16, Scale(), B)))


class StubBoard:
    """Word memory for BusMemory; run returns the sum of each sample's inputs in 3 outputs."""

    def __init__(self, image):
        self.words = np.concatenate([a.words for a in image])

    def read_word(self, addr):
        return int(self.words[addr])

    def write_words(self, addrs, values):
        self.words[addrs] = values

    def run(self, x):
        codes = parse_type("fixed<16,6>")
        s = np.round(np.asarray(x, np.float64).reshape(len(x), -1).sum(axis=1) * 2**codes.frac).astype(np.int64)
        return np.stack([s, -s, s + 1], axis=1)


def bitstream(tmp_path):
    """A stand-in bitstream and .hwh: the fake never reads them, PynqBoard checks both exist."""
    bit = tmp_path / "hwflow_top.bit"
    bit.write_bytes(b"bitstream")
    bit.with_suffix(".hwh").write_text("<hwh/>")
    return bit


def tiny(tmp_path, *, hardware=None, length_width=14):
    image = tiny_image()
    manifest = layout_manifest(image, input_shape=[4], input_type="fixed<16,6>", output_shape=[3],
                               output_type="fixed<16,6>")
    bit = bitstream(tmp_path)
    bus = BusMemory(parse_manifest(hardware or manifest), StubBoard(image))
    fake = FakePynq(hardware or manifest, bus, length_width=length_width)
    return image, manifest, bit, bus, fake


def test_fault_map_and_scrub_traffic(tmp_path):
    image, manifest, bit, bus, fake = tiny(tmp_path)
    board = PynqBoard(parse_manifest(manifest), image, bit, pynq=fake)
    assert fake.log[0] == ("overlay", str(bit), None, None)
    assert [e for e in fake.log if e[0] == "write"] == []  # loading writes nothing
    fake.log.clear()
    # flip bit 3 of a/weight[5] (address 5: bus word 1, lane 1); bit 15 of a/bias[1] stuck at 1 (address 7)
    fmap = FaultMap.from_records([("a/weight", 5, 3, "flip"), ("a/bias", 1, 15, "stuck1")])
    trial = HostTrial(TrialKey("v", "sweep", "explicit", "", -1, 0.0, 0), 0,
                      {"model": "explicit", "faults": [["a/weight", 5, 3, "flip"], ["a/bias", 1, 15, "stuck1"]]})
    assert trial.sample(image) == fmap
    x = np.arange(8, dtype=np.float32).reshape(2, 4) / 4
    golden_out = board.run(x)
    fake.log.clear()
    widths = np.array([8] * 6 + [16] * 3)
    row = run_trial(board, image, trial, x, np.array([0, 0]), golden_out, widths, np.arange(9), "c", "pynq-z2")
    wa, wb = "axi_bram_ctrl_w2", "axi_bram_ctrl_b2"
    a1 = 0x66 << 8 | 0x55  # a/weight bus word 1: lanes 4, 5
    b0 = 0x0F0F << 16 | 0x1234  # a/bias bus word 0: lanes 0, 1
    a1_faulty = (0x66 ^ 0x08) << 8 | 0x55
    b0_faulty = (0x0F0F | 0x8000) << 16 | 0x1234
    expected = [
        ("read", wa, 4, a1), ("read", wb, 0, b0),  # read the touched words
        ("read", wa, 4, a1), ("write", wa, 4, a1_faulty),  # one lane of two: read-modify-write
        ("read", wb, 0, b0), ("write", wb, 0, b0_faulty),
        ("read", wa, 4, a1_faulty), ("read", wb, 0, b0_faulty),  # the faulty words read back
        ("write", "ctrl", BATCH_OFFSET, 2), ("write", "ctrl", 0, 1), ("read", "ctrl", 0, 6),  # run: n, ap_start, idle
        # scrub: every bus word written whole (all its lanes are golden words), then all read back
        ("write", wa, 0, 0x44332211), ("write", wa, 4, a1), ("write", wb, 0, b0), ("write", wb, 4, 0xBEEF),
        ("read", wa, 0, 0x44332211), ("read", wa, 4, a1), ("read", wb, 0, b0), ("read", wb, 4, 0xBEEF),
    ]
    assert [e for e in fake.log if e[0] in ("read", "write")] == expected
    assert [e[1:3] for e in fake.log if e[0] == "dma"] == [("recv", "transfer"), ("send", "transfer"),
                                                          ("send", "wait"), ("recv", "wait")]
    assert (row.faults, row.effective, row.samples) == (2, 2, 2)
    # the stub's outputs do not depend on the weights: no mismatch, and the memory is golden again
    assert row.mismatches == 0
    np.testing.assert_array_equal(bus.bram["w2"][:2], [0x44332211, a1])


def test_single_words_and_bulk_reads(tmp_path):
    image, manifest, bit, bus, fake = tiny(tmp_path)
    board = PynqBoard(parse_manifest(manifest), image, bit, pynq=fake)
    fake.log.clear()
    board.write_word(2, 0xA5)
    assert fake.log == [("read", "axi_bram_ctrl_w2", 0, 0x44332211), ("write", "axi_bram_ctrl_w2", 0, 0x44A52211)]
    assert board.read_word(2) == 0xA5
    assert board.read_word(8) == 0xBEEF
    np.testing.assert_array_equal(board.read_words(np.array([8, 0, 2, 7])), [0xBEEF, 0x11, 0xA5, 0x0F0F])
    n = len(fake.log)
    board.write_words(np.array([7, 6]), np.array([2, 1], np.uint64))  # a whole bus word: no read
    assert fake.log[n:] == [("write", "axi_bram_ctrl_b2", 0, 0x00020001)]
    board.write_words(np.array([2, 2, 3]), np.array([1, 5, 7], np.int64))  # a word given twice: its last value
    assert fake.log[-1] == ("write", "axi_bram_ctrl_w2", 0, 0x07052211)


@pytest.mark.parametrize(("call", "args", "match"), [
    ("write_word", (-1, 0), "outside the weight memories"),
    ("write_word", (9, 0), "outside the weight memories"),
    ("write_word", (2**40, 0), "outside the weight memories"),
    ("write_word", (1.0, 0), "integer word address"),
    ("write_word", ("1", 0), "integer word address"),
    ("write_word", (0, 256), "does not fit the 8-bit word"),
    ("write_word", (6, 0x10000), "does not fit the 16-bit word"),
    ("write_word", (0, -1), "does not fit"),
    ("write_word", (0, 1.5), "must be an integer"),
    ("read_word", (9,), "outside the weight memories"),
    ("write_words", (np.array([0, 1, 9]), np.array([1, 2, 3], np.uint64)), "outside the weight memories"),
    ("write_words", (np.array([0, 1]), np.array([1, 300], np.uint64)), "does not fit"),
])
def test_address_guard_refuses_before_any_write(tmp_path, call, args, match):
    image, manifest, bit, bus, fake = tiny(tmp_path)
    board = PynqBoard(parse_manifest(manifest), image, bit, pynq=fake)
    before = [w.copy() for w in bus.bram.values()]
    fake.log.clear()
    with pytest.raises(BoardError, match=match):
        getattr(board, call)(*args)
    assert fake.writes() == []
    for now, then in zip(bus.bram.values(), before, strict=True):
        np.testing.assert_array_equal(now, then)


def test_arrays_outside_bram_are_refused(tmp_path):
    image = tiny_image()
    manifest = layout_manifest(image, input_shape=[4], input_type="fixed<16,6>", output_shape=[3],
                               output_type="fixed<16,6>", skip=("a/bias",))
    bit = bitstream(tmp_path)
    fake = FakePynq(manifest, BusMemory(parse_manifest(manifest), StubBoard(image)))
    board = PynqBoard(parse_manifest(manifest), image, bit, pynq=fake)
    with pytest.raises(BoardError, match="in no weight memory"):
        board.write_word(7, 1)  # a/bias is an hls4ml constant in this design
    assert fake.writes() == []


def _changed(manifest: dict, memory: int = 0, **fields) -> dict:
    out = {**manifest, "weight_memories": [dict(m) for m in manifest["weight_memories"]]}
    out["weight_memories"][memory].update(fields)
    return out


@pytest.mark.parametrize(("host_edit", "match"), [
    (lambda m: _changed(m, 1, range=8192), "range 0x1000 in the overlay, the manifest says .* range 0x2000"),
    (lambda m: _changed(m, base=0x4000_8000), "at 0x40000000 .* the manifest says 0x40008000"),
    (lambda m: _changed(m, ctrl="axi_bram_ctrl_9"), "axi_bram_ctrl_9 .* is not in the overlay"),
    (lambda m: {**m, "data": {**m["data"], "dma": "axi_dma_7"}}, "AXI DMA axi_dma_7 is not in the overlay"),
    (lambda m: {**m, "ip": "other_top_0"}, "accelerator other_top_0 is not in the overlay"),
    (lambda m: {**m, "data": {**m["data"], "batch_register": "batch"}}, "no register 'batch'"),
])
def test_manifest_that_disagrees_with_the_overlay_is_refused(tmp_path, host_edit, match):
    image, manifest, bit, bus, fake = tiny(tmp_path)
    with pytest.raises(ManifestError, match=match):
        PynqBoard(parse_manifest(host_edit(manifest)), image, bit, pynq=fake)
    assert [e for e in fake.log if e[0] in ("read", "write")] == []


@pytest.mark.parametrize(("edit", "match"), [
    (lambda m: _changed(m, 1, depth=4), "depth is 4 but the WeightImage has 3"),
    (lambda m: _changed(m, 1, first_word=7), "first_word is 7 but the WeightImage has 6"),
    (lambda m: _changed(m, depth=7), "image word ranges of w2 and b2 overlap"),
    (lambda m: _changed(m, word_bits=6, lanes=5), "word_bits is 6 but the WeightImage has 8"),
    (lambda m: _changed(m, lanes=2), "contract 8 packs 4"),
    (lambda m: _changed(m, layer="zz"), "has no such array"),
    (lambda m: _changed(m, range=4), "cannot hold 6 words"),
    (lambda m: _changed(m, base=0x4000_1000), "bus ranges .* overlap"),
    (lambda m: {**m, "format": 2}, "reads manifest format 1"),
    (lambda m: {k: v for k, v in m.items() if k != "ip"}, "ip: missing"),
    (lambda m: {**m, "data": {**m["data"], "input_type": "fixed<40,6>"}}, "wider than a 32-bit stream word"),
])
def test_manifest_that_disagrees_with_the_image_is_refused_before_loading(tmp_path, edit, match):
    image, manifest, bit, bus, fake = tiny(tmp_path)
    with pytest.raises(ManifestError, match=match):
        PynqBoard(parse_manifest(edit(manifest)), image, bit, pynq=fake)
    assert fake.log == []  # not even the overlay was loaded


def test_missing_bitstream_is_refused(tmp_path):
    image, manifest, bit, bus, fake = tiny(tmp_path)
    bit.with_suffix(".hwh").unlink()
    with pytest.raises(BoardError, match="bitstream and its .hwh"):
        PynqBoard(parse_manifest(manifest), image, bit, pynq=fake)


# --- the real network, through the fake's DMA -------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp():
    return converted("mlp-digits")


def emulator_fake(program, image, **kwargs):
    manifest = manifest_for(program, image)
    bus = BusMemory(parse_manifest(manifest), EmulatorBoard(program, image))
    return manifest, bus, FakePynq(manifest, bus, **kwargs)


def test_run_through_the_dma_equals_the_emulator(mlp, digits, tmp_path):
    program, image = mlp
    manifest, bus, fake = emulator_fake(program, image, length_width=12)  # 4095-byte transfers: 15 samples
    bit = bitstream(tmp_path)
    board = PynqBoard(parse_manifest(manifest), image, bit, pynq=fake)
    x = digits.x_test[:40]
    np.testing.assert_array_equal(board.run(x), Emulator(program, image).run(x))
    sends = [e[3] for e in fake.log if e[:3] == ("dma", "send", "transfer")]
    assert sends == [15 * 64 * 4, 15 * 64 * 4, 10 * 64 * 4]
    assert [e for e in fake.log if e[0] == "allocate"] == [("allocate", (15 * 64,), "int32", None),
                                                           ("allocate", (15 * 10,), "int32", None)]
    board.close()


SPEC = {"name": "pynq-test", "seed": 3, "dataset": "digits", "samples": 40,
        "models": [{"zoo": "mlp-digits", "name": "mlp"}],
        "faults": [{"model": "bitflip", "rates": [3e-3, 1e-2], "trials": 3},
                   {"model": "stuck-at", "value": "mixed", "rates": [1e-2], "trials": 3}]}


def test_campaign_on_pynq_equals_the_emulator_board_and_resumes_after_power_loss(mlp, tmp_path):
    program, image = mlp
    spec = parse_spec(SPEC)
    x, y = evaluation_data(spec)
    plan: CampaignPlan = host_plan(spec, "mlp/baseline", image, len(y))
    ref = tmp_path / "emulator.sqlite"
    run_host_campaign(EmulatorBoard(program, image), image, plan, x, y, ref)

    manifest, bus, fake = emulator_fake(program, image)
    bit = bitstream(tmp_path)
    fake.device.power_loss_after = 5  # the fault-free run, 3 trials, then the 4th trial's run
    db = tmp_path / "board.sqlite"
    board = PynqBoard(parse_manifest(manifest), image, bit, pynq=fake)
    with pytest.raises(PowerLoss):
        run_host_campaign(board, image, plan, x, y, db)
    with ResultsDB(db) as d:
        assert len(d.trials()) == 3
    golden = BusMemory(parse_manifest(manifest), EmulatorBoard(program, image)).bram
    assert any(not np.array_equal(golden[k], bus.bram[k]) for k in golden)  # the 4th trial's faults are still there
    # reboot: a new process, a new overlay, the same (faulty) BRAM contents
    fake2 = FakePynq(manifest, bus)
    board2 = PynqBoard(parse_manifest(manifest), image, bit, pynq=fake2)
    result = run_host_campaign(board2, image, plan, x, y, db)
    assert (result.skipped, result.ran) == (3, len(plan.trials) - 3)
    first_writes = [e for e in fake2.log if e[0] == "write"][:3]
    assert all(e[1].startswith("axi_bram_ctrl_") for e in first_writes)  # the scrub came before any run
    with ResultsDB(db) as d, ResultsDB(ref) as r:
        board_rows, emu_rows = d.trials(), r.trials()
    assert {r.board for r in board_rows} == {"pynq-z2"}
    strip = [{k: v for k, v in row.__dict__.items() if k not in ("board", "seconds")} for row in board_rows]
    assert strip == [{k: v for k, v in row.__dict__.items() if k not in ("board", "seconds")} for row in emu_rows]
    assert any(row.mismatches for row in board_rows)


def test_hard_fault_on_the_bus_stops_the_campaign(mlp, tmp_path):
    program, image = mlp
    manifest, bus, fake = emulator_fake(program, image)
    bit = bitstream(tmp_path)
    board = PynqBoard(parse_manifest(manifest), image, bit, pynq=fake)
    m = parse_manifest(manifest).memories[0]
    golden = int(bus.bram[m.name][2])
    bus.break_bit(m.base + 8, 5, 1 - (golden >> 5 & 1))  # bus word 2: weight word 8 + 5 // 8 = 8, bit 5
    with pytest.raises(HardFaultError, match=r"address 8 \(fc1/weight\[8\]\)"):
        scrub(board, image, np.arange(image.total_words))
    spec = parse_spec(SPEC)
    x, y = evaluation_data(spec)
    plan = replace(host_plan(spec, "mlp/baseline", image, len(y)))
    with pytest.raises(HardFaultError):
        run_host_campaign(board, image, plan, x, y, tmp_path / "r.sqlite")
    with ResultsDB(tmp_path / "r.sqlite") as d:
        assert d.trials() == []


@pytest.mark.slow
@needs_gxx
def test_pynq_board_on_the_csim_bus_equals_the_emulator_board(tmp_path_factory, tmp_path):
    """The fake's BRAMs are the C simulation's own (CSimBoard.read32 / write32), its DMA the C-sim's
    hwflow_top: PynqBoard drives the generated design through contract 8 and gets the emulator's rows."""
    import json

    from tests.fake_pynq import mlp_build

    build, csim = mlp_build(tmp_path_factory)
    manifest = json.loads((build.out_dir / "manifest.json").read_text())
    fake = FakePynq(manifest, csim)
    board = PynqBoard(parse_manifest(manifest), build.image, bitstream(tmp_path), pynq=fake)
    spec = parse_spec(SPEC)
    x, y = evaluation_data(spec)
    plan = host_plan(spec, "mlp/baseline", build.image, len(y))
    run_host_campaign(board, build.image, plan, x, y, tmp_path / "board.sqlite")
    run_host_campaign(EmulatorBoard(build.program, build.image), build.image, plan, x, y, tmp_path / "emu.sqlite")
    with ResultsDB(tmp_path / "board.sqlite") as a, ResultsDB(tmp_path / "emu.sqlite") as b:
        rows, ref = a.trials(), b.trials()
    strip = ("board", "seconds")
    assert [{k: v for k, v in r.__dict__.items() if k not in strip} for r in rows] == \
        [{k: v for k, v in r.__dict__.items() if k not in strip} for r in ref]
    assert any(r.effective for r in rows)
    m = parse_manifest(manifest).memories[0]
    assert csim.read32(m.base) == fake.log[[e[:3] for e in fake.log].index(("read", m.ctrl, 0))][3]


@pytest.mark.parametrize("key", ["{}/S_AXI", "hier_0/{}", "{}_Mem0"])
def test_bram_controllers_found_under_pynq_key_spellings(tmp_path, key):
    image, manifest, bit, bus, fake = tiny(tmp_path)
    fake.mem_dict = {key.format(k): v for k, v in fake.mem_dict.items()}
    board = PynqBoard(parse_manifest(manifest), image, bit, pynq=fake)
    assert board.read_word(8) == 0xBEEF
    fake.mem_dict = {k.replace("w2", "w9"): v for k, v in fake.mem_dict.items()}
    with pytest.raises(ManifestError, match="axi_bram_ctrl_w2 .* is not in the overlay"):
        PynqBoard(parse_manifest(manifest), image, bit, pynq=fake)


def test_transfer_limit_from_the_hwh_parameters(tmp_path):
    image, manifest, bit, bus, fake = tiny(tmp_path, length_width=6)  # 63-byte transfers: 3 samples of 16 bytes
    del fake.device.dma.buffer_max_size  # an older pynq driver: read c_sg_length_width from the ip_dict
    board = PynqBoard(parse_manifest(manifest), image, bit, pynq=fake)
    x = np.ones((7, 4), np.float32)
    np.testing.assert_array_equal(board.run(x)[:, 0], np.full(7, 4 * 1024))
    assert [e[3] for e in fake.log if e[:3] == ("dma", "send", "transfer")] == [48, 48, 16]
    fake.device.dma.buffer_max_size = 15
    with pytest.raises(ManifestError, match="16-byte DMA transfers but axi_dma_0 moves at most 15"):
        PynqBoard(parse_manifest(manifest), image, bit, pynq=fake)


@pytest.mark.parametrize(("fault", "match"), [
    ("hang", r"DMA send \(MM2S\) channel of axi_dma_0 did not finish within 0.05 s"),
    ("dma_error", r"DMA send \(MM2S\) channel of axi_dma_0 reported an error \(DMA Internal Error"),
    ("stays_busy", r"did not return to idle 0.05 s after its batch"),
])
def test_accelerator_that_hangs_or_fails_is_a_board_error_not_a_spin(tmp_path, fault, match):
    # pynq's own wait() would spin forever on a hang: the board gives up after timeout_s and says what to do.
    image, manifest, bit, bus, fake = tiny(tmp_path)
    board = PynqBoard(parse_manifest(manifest), image, bit, pynq=fake, timeout_s=0.05)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(board.run(x)[:, 0], np.full(2, 4 * 1024))
    setattr(fake.device, fault, "DMA Internal Error: transfer length mismatch" if fault == "dma_error" else True)
    with pytest.raises(BoardError, match=match) as err:
        board.run(x)
    assert "reset the board" in str(err.value)
