"""The on-board campaign loop (hwflow_host.campaign) on the emulator and C-sim boards, against the
workstation campaign engine: same seeds -> same FaultMaps -> same outcomes, trial for trial."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from hwflow_host.board import BoardError as HostBoardError
from hwflow_host.board import CampaignError, HardFaultError, read_words, write_words
from hwflow_host.campaign import CampaignPlan, StuckBits, run_host_campaign

from hwflow.campaign import parse_spec, run_campaign
from hwflow.campaign.runner import evaluation_data
from hwflow.campaign.variants import Variant
from hwflow.deploy.plan import host_plan
from hwflow.errors import BoardError
from hwflow.hardware.emulator_board import EmulatorBoard
from hwflow.report.stats import compare_boards
from hwflow.results import ResultsDB
from tests.conftest import needs_gxx
from tests.fake_pynq import converted

VARIANT = "mlp/baseline"
SPEC = {
    "name": "host-test", "seed": 11, "dataset": "digits", "samples": 60,
    "models": [{"zoo": "mlp-digits", "name": "mlp"}],
    "faults": [{"model": "bitflip", "rates": [1e-3, 1e-2], "trials": 3},
               {"model": "stuck-at", "value": "mixed", "rates": [1e-2], "trials": 3},
               {"model": "burst", "length": 3, "rates": [2e-2], "trials": 2},
               {"model": "bitflip", "mode": "exact", "bits": ["msb"], "layers": ["out"], "rates": [0.05], "trials": 2}],
    "sensitivity": {"rate": 1e-2, "trials": 1, "studies": ["layer"]},
}
IGNORED = ("board", "seconds")


def _outcome(row):
    return {k: v for k, v in row.__dict__.items() if k not in IGNORED}


@pytest.fixture(scope="module")
def setup():
    program, image = converted("mlp-digits")
    spec = parse_spec(SPEC)
    x, y = evaluation_data(spec)
    return spec, program, image, x, y


@pytest.fixture(scope="module")
def workstation(setup, tmp_path_factory):
    """The workstation engine's rows for the campaign (run_campaign on the emulator)."""
    spec, program, image, _, _ = setup
    db = tmp_path_factory.mktemp("ws") / "ws.sqlite"
    run_campaign(spec, db, workers=1, progress=False, variants=[Variant(VARIANT, program, image)])
    with ResultsDB(db) as d:
        return d.trials(spec.name), d.baselines(spec.name)


@pytest.fixture(scope="module")
def plan(setup) -> CampaignPlan:
    spec, _, image, _, y = setup
    return host_plan(spec, VARIANT, image, len(y))


def test_plan_matches_the_workstation_plan(setup, plan, workstation):
    rows, _ = workstation
    assert {(t.key, t.seed) for t in plan.trials} == {(r.key, r.seed) for r in rows}
    assert len(plan.trials) == len(rows) == 3 * 2 + 3 + 2 + 2 + 3  # sweeps + one sensitivity trial per layer
    again = CampaignPlan.from_json(plan.to_json())
    assert again == plan


def test_host_loop_on_emulator_board_matches_run_campaign(setup, plan, workstation, tmp_path):
    spec, program, image, x, y = setup
    board = EmulatorBoard(program, image)
    result = run_host_campaign(board, image, plan, x, y, tmp_path / "host.sqlite")
    assert (result.planned, result.skipped, result.ran) == (len(plan.trials), 0, len(plan.trials))
    with ResultsDB(tmp_path / "host.sqlite") as db:
        host_rows, host_base = db.trials(spec.name), db.baselines(spec.name)
        assert db.campaign_spec(spec.name) == json.loads(json.dumps(spec.to_json()))
    ws_rows, ws_base = workstation
    assert [_outcome(r) for r in host_rows] == [_outcome(r) for r in ws_rows]
    assert {r.board for r in host_rows} == {"emulator-board"}
    assert all(r.seconds > 0 for r in host_rows)
    assert [(b.samples, b.correct) for b in host_base] == [(b.samples, b.correct) for b in ws_base]
    assert sum(r.effective for r in host_rows) > 0
    assert any(r.mismatches for r in host_rows)
    assert compare_boards(host_rows + ws_rows) == []
    # the scrub left the golden words in the memory
    assert board.image().equal_words(image)


def test_same_spec_registered_as_on_the_workstation(setup, plan, tmp_path):
    """hwflow pull merges into the workstation's database only when the registered specs are equal."""
    from hwflow.results.db import ResultsError

    spec, program, image, x, y = setup
    registered = json.loads(json.dumps(spec.to_json()))
    assert json.dumps(plan.spec, sort_keys=True) == json.dumps(registered, sort_keys=True)
    with ResultsDB(tmp_path / "ws.sqlite") as db:
        db.register_campaign(spec.name, spec.to_json())
    small = replace(plan, trials=plan.trials[:1])
    result = run_host_campaign(EmulatorBoard(program, image), image, small, x, y, tmp_path / "ws.sqlite")
    assert result.ran == 1
    with ResultsDB(tmp_path / "ws.sqlite") as db:
        assert db.campaign_spec(spec.name) == registered  # the host's trial sits under the workstation's spec
        assert len(db.trials(spec.name)) == 1
    other = replace(small, spec={**plan.spec, "seed": plan.spec["seed"] + 1})
    with pytest.raises(ResultsError, match="different spec"):  # a host spec that differs is refused
        run_host_campaign(EmulatorBoard(program, image), image, other, x, y, tmp_path / "ws.sqlite")


def test_resume_after_interruption_gives_the_same_rows(setup, plan, tmp_path):
    spec, program, image, x, y = setup
    ref = tmp_path / "ref.sqlite"
    run_host_campaign(EmulatorBoard(program, image), image, plan, x, y, ref)
    db = tmp_path / "resumed.sqlite"

    class PowerCut(Exception):
        pass

    class DyingBoard(EmulatorBoard):
        """Dies during the run of the 6th trial, with that trial's faults in the memory."""

        runs = 0

        def run(self, x):
            self.runs += 1
            if self.runs == 7:  # the fault-free run, then 5 trials
                raise PowerCut
            return super().run(x)

    dying = DyingBoard(program, image)
    with pytest.raises(PowerCut):
        run_host_campaign(dying, image, plan, x, y, db)
    assert not dying.image().equal_words(image)  # the interrupted trial's faults are still there
    with ResultsDB(db) as d:
        assert len(d.trials(spec.name)) == 5
    # restart on the same (faulty) memory: scrub first, then the remaining trials
    result = run_host_campaign(dying, image, plan, x, y, db, "emulator-board")
    assert (result.skipped, result.ran) == (5, len(plan.trials) - 5)
    with ResultsDB(db) as d, ResultsDB(ref) as r:
        assert [_outcome(a) for a in d.trials(spec.name)] == [_outcome(b) for b in r.trials(spec.name)]
    # max_trials stops early; the next call finishes
    part = tmp_path / "part.sqlite"
    assert run_host_campaign(EmulatorBoard(program, image), image, plan, x, y, part, max_trials=4).ran == 4
    again = run_host_campaign(EmulatorBoard(program, image), image, plan, x, y, part)
    assert (again.skipped, again.ran) == (4, len(plan.trials) - 4)


def test_digest_mismatch_stops_the_campaign(setup, plan, tmp_path):
    spec, program, image, x, y = setup
    bad = replace(plan, trials=(replace(plan.trials[0], digest="0" * 64), *plan.trials[1:]))
    with pytest.raises(CampaignError, match="differs from the workstation's"):
        run_host_campaign(EmulatorBoard(program, image), image, bad, x, y, tmp_path / "r.sqlite")
    with ResultsDB(tmp_path / "r.sqlite") as db:
        assert db.trials() == []


def test_changed_fault_free_run_is_refused(setup, plan, tmp_path):
    spec, program, image, x, y = setup
    small = replace(plan, trials=plan.trials[:2])
    first = run_host_campaign(EmulatorBoard(program, image), image, small, x, y, tmp_path / "r.sqlite")

    class OtherDevice(EmulatorBoard):
        def run(self, x):
            return np.zeros((len(x), 10), np.int64)  # every sample classified 0

    assert int(np.sum(y == 0)) != first.baseline_correct
    with pytest.raises(CampaignError, match="fault-free run"):
        run_host_campaign(OtherDevice(program, image), image, small, x, y, tmp_path / "r.sqlite", "emulator-board")


class StuckCellBoard(EmulatorBoard):
    """A device with a real hard fault: one bit of one word always reads ``value``."""

    def __init__(self, program, image, addr, bit, value):
        super().__init__(program, image)
        self.cell = (addr, bit, value)

    def read_words(self, addrs):
        out = super().read_words(addrs)
        a, b, v = self.cell
        hit = np.asarray(addrs) == a
        out[hit] = (out[hit] & ~np.uint64(1 << b)) | np.uint64(v << b)
        return out


def test_hard_fault_found_by_the_first_scrub(setup, plan, tmp_path):
    spec, program, image, x, y = setup
    golden = int(image.arrays[0].words[3])
    board = StuckCellBoard(program, image, 3, 0, 1 - (golden & 1))
    with pytest.raises(HardFaultError, match=r"address 3 \(fc1/weight\[3\]\)"):
        run_host_campaign(board, image, plan, x, y, tmp_path / "r.sqlite")
    with ResultsDB(tmp_path / "r.sqlite") as db:
        assert db.trials() == []


def test_hard_fault_during_a_trial_keeps_earlier_trials(setup, plan, tmp_path):
    """A cell stuck at its golden value passes the scrub, until a fault has to change it."""
    spec, program, image, x, y = setup
    faulted = [(k, t) for k, t in enumerate(plan.trials) if len(t.sample(image))]
    k, trial = faulted[1]
    addrs, xor, and_, or_ = trial.sample(image).touched_words(image)
    golden = np.concatenate([a.words for a in image])
    new = ((golden[addrs] ^ xor) & and_) | or_
    i = int(np.flatnonzero(new != golden[addrs])[0])
    bit = int(np.flatnonzero([(int(new[i]) ^ int(golden[addrs[i]])) >> b & 1 for b in range(64)])[0])
    board = StuckCellBoard(program, image, int(addrs[i]), bit, int(golden[addrs[i]]) >> bit & 1)
    others = [t for t in plan.trials[:k] if t.sample(image).touched_words(image)[0].tolist().count(int(addrs[i])) == 0]
    small = replace(plan, trials=(*others, trial))
    with pytest.raises(HardFaultError, match="fault injection"):
        run_host_campaign(board, image, small, x, y, tmp_path / "r.sqlite")
    with ResultsDB(tmp_path / "r.sqlite") as db:
        assert len(db.trials()) == len(others)


def test_stuck_bits_are_forced_on_every_write():
    full8 = np.uint64(0xFF)
    # word 4: bit 7 stuck at 0; word 9: bit 0 stuck at 1; word 5: a flip only (not stuck)
    stuck = StuckBits(np.array([4, 9, 5]), np.array([full8 & ~np.uint64(0x80), full8, full8]),
                      np.array([0, 0x01, 0], np.uint64), np.array([8, 8, 8]))
    assert stuck.masks == {4: (0x7F, 0), 9: (0xFF, 0x01)}
    np.testing.assert_array_equal(stuck.force(np.array([4, 9, 5]), np.array([0xFF, 0x00, 0xAA], np.uint64)),
                                  np.array([0x7F, 0x01, 0xAA], np.uint64))


def test_emulator_board_contract(setup):
    _, program, image, x, _ = setup
    board = EmulatorBoard(program, image)
    total = image.total_words
    assert board.read_word(total - 1) == int(image.arrays[-1].words[-1])
    for bad in (-1, total, 2.0, "3", True):
        with pytest.raises(BoardError):
            board.read_word(bad)
        with pytest.raises(BoardError):
            board.write_word(bad, 0)
    with pytest.raises(BoardError, match="does not fit the 8-bit word"):
        board.write_word(0, 256)
    with pytest.raises(BoardError, match="negative"):
        board.write_word(0, -1)
    with pytest.raises(BoardError):
        board.write_words(np.array([0, total]), np.array([1, 1], np.uint64))
    assert board.image().equal_words(image)  # nothing was written by the refused calls
    from hwflow.emulator import Emulator

    np.testing.assert_array_equal(board.run(x[:20]), Emulator(program, image).run(x[:20]))
    write_words(board, np.array([0, 1]), np.array([0x7F, 0x80], np.uint64))
    np.testing.assert_array_equal(read_words(board, np.array([0, 1])), [0x7F, 0x80])
    faulty = image.replace_array(image.arrays[0].with_words(
        np.concatenate([[0x7F, 0x80], image.arrays[0].words[2:]]).astype(np.uint64)))
    np.testing.assert_array_equal(board.run(x[:20]), Emulator(program, faulty).run(x[:20]))
    assert issubclass(HostBoardError, BoardError)


@pytest.mark.slow
@needs_gxx
def test_host_loop_on_csim_board_matches_run_campaign(tmp_path_factory, tmp_path):
    """The generated HLS design (hwflow build), compiled with g++, runs the host loop unchanged."""
    from tests.fake_pynq import mlp_build

    build, csim = mlp_build(tmp_path_factory)
    # its own campaign name: the runner caches each process's evaluators by (campaign, variant) name
    spec = parse_spec({**SPEC, "name": "host-test-csim"})
    x, y = evaluation_data(spec)
    keys = {m.key for m in build.manifest.weight_memories}
    plan = host_plan(spec, VARIANT, build.image, len(y), in_memory=keys)
    ws = tmp_path / "ws.sqlite"
    run_campaign(spec, ws, workers=1, progress=False, variants=[Variant(VARIANT, build.program, build.image)])
    result = run_host_campaign(csim, build.image, plan, x, y, tmp_path / "csim.sqlite")
    assert result.ran == len(plan.trials)
    with ResultsDB(ws) as a, ResultsDB(tmp_path / "csim.sqlite") as b:
        ws_rows, csim_rows = a.trials(), b.trials()
        assert [(x.samples, x.correct) for x in a.baselines()] == [(x.samples, x.correct) for x in b.baselines()]
    assert {r.board for r in csim_rows} == {"csim-board"}
    assert [_outcome(r) for r in csim_rows] == [_outcome(r) for r in ws_rows]
    assert any(r.mismatches for r in csim_rows)
    np.testing.assert_array_equal(read_words(csim, np.arange(build.image.total_words)),
                                  np.concatenate([a.words for a in build.image]))
