"""hwflow deploy / pull and the bundle on the board's side: packing, the vendored numpy-only hwflow
(imported with TensorFlow, hls4ml, scipy, matplotlib and PyYAML made unimportable, also under
Python 3.10 when one is available), and the whole flow up to the report: workstation campaign,
deploy, the host run (dry run on the emulator board), pull, board-vs-emulator comparison."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hwflow_host.bundle import load_bundle

from hwflow.campaign import load_spec, run_campaign
from hwflow.campaign.runner import evaluation_data
from hwflow.campaign.variants import Variant
from hwflow.cli import main as hwflow_main
from hwflow.deploy import pack, pull, unpack
from hwflow.deploy.plan import host_plan
from hwflow.deploy.vendor import vendored_modules
from hwflow.errors import DeployError
from hwflow.report import load_report_data
from hwflow.results import ResultsDB
from hwflow.results.db import ResultsError
from tests.conftest import zoo_model
from tests.fake_pynq import converted, manifest_for

SPEC = {"name": "deploy-test", "seed": 5, "dataset": "digits", "samples": 40,
        "models": [{"zoo": "mlp-digits", "name": "mlp"}],
        "faults": [{"model": "bitflip", "rates": [3e-3, 1e-2], "trials": 3},
                   {"model": "stuck-at", "value": "mixed", "arrays": ["weight"], "rates": [1e-2], "trials": 2}]}
VENDORED = vendored_modules()
BLOCKED = ("tensorflow", "keras", "hls4ml", "qkeras", "scipy", "matplotlib", "sklearn", "yaml", "dask", "h5py",
           "tqdm", "pandas", "pynq")


@pytest.fixture(scope="module")
def mlp():
    return converted("mlp-digits")


def make_build(root: Path, program, image, *, bitstream: bool = True, **layout) -> Path:
    """A build folder as `hwflow build` writes it (contract 8), plus a stand-in bitstream."""
    root.mkdir(parents=True, exist_ok=True)
    image.save(root)
    program.save(root / "program.json")
    (root / "manifest.json").write_text(json.dumps(manifest_for(program, image, model="mlp", **layout), indent=1))
    if bitstream:
        (root / "hwflow.bit").write_bytes(b"bitstream")  # what the Vivado step leaves (hwflow.hardware.vivado)
        (root / "hwflow.hwh").write_text("<hwh/>")
    return root


def write_spec(path: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump({**SPEC, **changes}))
    return path


@pytest.fixture(scope="module")
def deployed(mlp, tmp_path_factory):
    """A build, a spec, the bundle packed from them, and the bundle unpacked."""
    program, image = mlp
    tmp = tmp_path_factory.mktemp("deploy")
    build = make_build(tmp / "build", program, image)
    spec = write_spec(tmp / "campaign.yaml")
    result = pack(build, spec, tmp / "out" / "mlp-bundle.tar.gz")
    root = unpack(result.path, tmp / "board")
    return tmp, build, spec, result, root


def test_bundle_layout_and_contents(mlp, deployed):
    program, image = mlp
    tmp, build, spec_path, result, root = deployed
    assert (result.top, result.variant, result.bitstream) == ("mlp-bundle", "mlp/baseline", "hwflow.bit")
    with tarfile.open(result.path) as tar:
        names = tar.getnames()
    assert all(n == "mlp-bundle" or n.startswith("mlp-bundle/") for n in names)
    assert root == tmp / "board" / "mlp-bundle"
    assert os.access(root / "run.sh", os.X_OK)
    assert sorted(str(p.relative_to(root / "hwflow")) for p in (root / "hwflow").rglob("*.py")) == sorted(VENDORED)
    assert {p.name for p in (root / "hwflow_host").glob("*.py")} >= {"board.py", "campaign.py", "pynq_board.py",
                                                                    "bundle.py", "manifest.py", "__main__.py"}
    bundle = load_bundle(root)
    spec = load_spec(spec_path)
    x, y = evaluation_data(spec)
    np.testing.assert_array_equal(bundle.x, x)
    np.testing.assert_array_equal(bundle.y, y)
    assert bundle.image.equal_words(image)
    assert bundle.bitstream == root / "build" / "hwflow.bit"
    assert bundle.bitstream.with_suffix(".hwh").is_file()
    assert bundle.plan == host_plan(spec, "mlp/baseline", image, len(y))
    assert bundle.plan.spec == json.loads(json.dumps(spec.to_json()))
    assert result.trials == len(bundle.plan.trials) == 3 * 2 + 2
    assert all(t.digest for t in bundle.plan.trials)
    np.testing.assert_array_equal(bundle.addresses(), np.arange(image.total_words))


CHECK = r"""
import importlib.abc, json, sys
bundle, vendored, blocked = sys.argv[1], set(json.loads(sys.argv[2])), tuple(json.loads(sys.argv[3]))
sys.path.insert(0, bundle)

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in blocked:
            raise ImportError(f"{name} is not on the board")
        if top == "hwflow" and name != "hwflow" and name.replace(".", "/")[7:] + ".py" not in vendored \
                and name.replace(".", "/")[7:] + "/__init__.py" not in vendored:
            raise ImportError(f"{name} is not vendored")
        return None

sys.meta_path.insert(0, Block())
import numpy as np
import hwflow, hwflow_host
from hwflow_host import board, campaign, manifest, pynq_board, bundle as bundle_mod
from hwflow_host.__main__ import main
assert hwflow.__file__.startswith(bundle), hwflow.__file__
assert hwflow_host.__file__.startswith(bundle), hwflow_host.__file__
b = bundle_mod.load_bundle(bundle)

class Memory:
    # a numpy-only word memory; run() depends on the weights so faults change outputs
    def __init__(self, image):
        self.words = np.concatenate([a.words for a in image])
    def read_word(self, addr):
        return int(self.words[addr])
    def write_word(self, addr, value):
        self.words[addr] = value
    def run(self, x):
        s = int(self.words.astype(np.int64).sum())
        return np.stack([np.arange(len(x)) * 0 + s % 7 + k for k in range(10)], axis=1)[:, ::-1] if s % 2 else \
            np.stack([np.arange(len(x)) * 0 + k for k in range(10)], axis=1)

for t in b.plan.trials:  # the workstation's FaultMaps, sampled here
    assert t.sample(b.image).digest() == t.digest, t.key
r = campaign.run_host_campaign(Memory(b.image), b.image, b.plan, b.x, b.y, sys.argv[4], "memory", max_trials=3)
assert r.ran == 3
assert main([bundle, "--db", sys.argv[4]]) == 2  # --board pynq without pynq: a clear error, no traceback
mods = sorted(m for m in sys.modules if m == "hwflow" or m.startswith("hwflow."))
print(json.dumps({"python": sys.version.split()[0], "numpy": np.__version__, "hwflow": mods}))
"""


NO_PY310 = ("HWFLOW_PY310 is not set, so the board's Python (3.10, numpy 1.x) is not tested: make test sets it "
            "to .venv-py310, made from the python3.10 scripts/find-python310.sh finds (it found none, or pytest "
            "ran outside make)")


@pytest.mark.parametrize("where", ["workstation", "board"])
def test_vendored_hwflow_runs_the_host_without_heavy_packages(deployed, where, tmp_path):
    """The bundle's host runs with numpy alone: here, and under the board's Python (3.10, numpy 1.x)."""
    _, _, _, _, root = deployed
    python = sys.executable
    if where == "board":
        python = os.environ.get("HWFLOW_PY310", "")  # make test sets it when the machine has a Python 3.10
        if not python:
            pytest.skip(NO_PY310)
    args = [python, "-I", "-c", CHECK, str(root), json.dumps(VENDORED), json.dumps(BLOCKED),
            str(tmp_path / "r.sqlite")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    if where == "board":
        assert info["python"].startswith("3.10."), info
        assert info["numpy"].startswith("1."), info
    assert "pynq is not importable" in done.stderr
    assert set(info["hwflow"]) <= {"hwflow"} | {"hwflow." + v[:-3].replace("/", ".").removesuffix(".__init__")
                                               for v in VENDORED}
    with ResultsDB(tmp_path / "r.sqlite") as db:
        assert len(db.trials(board="memory")) == 3


def test_run_sh_starts_the_host_from_anywhere(deployed, tmp_path):
    """run.sh puts the bundle's own packages first on the path (the marker printed by the bundle's copy of
    hwflow proves it) and resolves --db from the caller's folder; without pynq it stops with pynq's message."""
    import shutil

    _, _, _, _, root = deployed
    copy = shutil.copytree(root, tmp_path / "bundle", symlinks=True)
    with (copy / "hwflow" / "__init__.py").open("a") as f:
        f.write("\nprint('vendored hwflow', flush=True)\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run([str(copy / "run.sh"), "--db", "r.sqlite"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "vendored hwflow" in done.stdout
    assert "pynq is not importable" in done.stderr


def test_dry_run_pull_and_report_compare_board_with_emulator(mlp, deployed, tmp_path, capsys):
    """The flow after `hwflow build`: campaign, deploy, run on the board (here the emulator board), pull, report."""
    program, image = mlp
    tmp, build, spec_path, _, _ = deployed
    spec = load_spec(spec_path)
    campaign_db = tmp_path / "campaign.sqlite"
    run_campaign(spec, campaign_db, workers=1, progress=False, variants=[Variant("mlp/baseline", program, image)])
    out = tmp_path / "bundle.tar.gz"
    assert hwflow_main(["deploy", str(build), "--campaign", str(spec_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tar -xzf bundle.tar.gz && sudo ./bundle/run.sh --db bundle/results.sqlite" in printed
    assert "hwflow pull board.sqlite --into reference.sqlite" in printed
    assert "this build is what hwflow campaign emulates" in printed
    root = unpack(out, tmp_path / "board")
    from hwflow_host.__main__ import main as host_main

    board_db = root / "results.sqlite"
    assert host_main([str(root), "--board", "emulator", "--max-trials", "3"]) == 0  # interrupted...
    assert host_main([str(root), "--board", "emulator"]) == 0  # ...and resumed
    printed = capsys.readouterr().out
    assert "3 already done, 5 run" in printed
    assert hwflow_main(["pull", str(board_db), "--into", str(campaign_db)]) == 0
    assert "pulled 8 trials (0 already there) and 1 fault-free runs" in capsys.readouterr().out
    data = load_report_data(campaign_db)
    assert data.paired == {("emulator", "emulator-board"): 8}
    assert data.discrepancies == []
    assert data.baseline_mismatches() == []
    assert hwflow_main(["report", "--db", str(campaign_db), "--out", str(tmp_path / "report")]) == 0
    assert "boards: 8 shared trials, 0 discrepancies, 0 seed mismatches" in capsys.readouterr().out
    # pulling again adds nothing
    assert pull(board_db, campaign_db).added == 0
    # a board trial that disagrees with the emulator is listed by the report
    with ResultsDB(board_db) as db:
        db.conn.execute("UPDATE trials SET board='other-board'")
        db.conn.execute("UPDATE baselines SET board='other-board'")
        db.conn.execute("UPDATE trials SET correct=correct+1 WHERE trial=0 AND rate=0.01 AND fault_model='bitflip'")
        db.conn.commit()
    pull(board_db, campaign_db)
    bad = [d for d in load_report_data(campaign_db).discrepancies if d.board == "other-board"]
    assert [(d.kind, d.fault_model, d.rate, d.trial, d.differs) for d in bad] == [
        ("result", "bitflip", 0.01, 0, ("correct",))]


def test_under_a_precision_target_the_board_runs_the_trials_the_emulator_grew_to(mlp, tmp_path, capsys):
    """With the emulator campaign's database the bundle plans every trial its points grew to, so board and
    emulator pair up on all of them; a campaign not finished, another spec's or absent is refused."""
    from hwflow.deploy.bundle import grown_on_the_emulator

    program, image = mlp
    build = make_build(tmp_path / "build", program, image)
    spec_path = write_spec(tmp_path / "campaign.yaml", precision={"half_width": 0.02, "max_trials": 12})
    spec = load_spec(spec_path)
    db = tmp_path / "campaign.sqlite"
    with pytest.raises(DeployError, match="no results database there"):
        pack(build, spec_path, tmp_path / "b.tar.gz", db=db)
    run_campaign(spec, db, workers=1, progress=False, variants=[Variant("mlp/baseline", program, image)])
    with ResultsDB(db) as d:
        emulator = {r.key for r in d.trials(spec.name, board="emulator")}
    fixed = len(host_plan(spec, "mlp/baseline", image, 40).trials)
    assert len(emulator) > fixed  # the target grew some points
    result = pack(build, spec_path, tmp_path / "b.tar.gz", db=db)
    bundle = load_bundle(unpack(result.path, tmp_path / "board"))
    assert {t.key for t in bundle.plan.trials} == emulator
    assert result.trials == len(emulator)
    # Without the database: each point's trials, and the CLI says what --db would add.
    out = tmp_path / "nodb.tar.gz"
    assert hwflow_main(["deploy", str(build), "--campaign", str(spec_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{fixed} trials of campaign" in printed
    assert "precision target" in printed
    assert "--db" in printed
    with ResultsDB(db) as d:  # killed before its last round finished
        d.conn.execute("DELETE FROM trials WHERE trial = (SELECT MAX(trial) FROM trials)")
        d.conn.commit()
    with pytest.raises(DeployError, match="has not finished its precision target"):
        grown_on_the_emulator(spec, "mlp/baseline", db)
    other = write_spec(tmp_path / "other.yaml", seed=6, precision={"half_width": 0.02, "max_trials": 12})
    with pytest.raises(DeployError, match="another spec"):
        pack(build, other, tmp_path / "c.tar.gz", db=db)
    renamed = write_spec(tmp_path / "renamed.yaml", name="elsewhere")
    with pytest.raises(DeployError, match="holds no campaign 'elsewhere'"):
        pack(build, renamed, tmp_path / "d.tar.gz", db=db)


def test_pull_refuses_conflicts(mlp, deployed, tmp_path):
    program, image = mlp
    _, _, spec_path, _, root = deployed
    from hwflow_host.campaign import run_host_campaign

    from hwflow.hardware.emulator_board import EmulatorBoard

    bundle = load_bundle(root)
    board_db = tmp_path / "board.sqlite"
    run_host_campaign(EmulatorBoard(program, image), image, bundle.plan, bundle.x, bundle.y, board_db, max_trials=2)
    target = tmp_path / "ws.sqlite"
    assert pull(board_db, target).added == 2
    with ResultsDB(board_db) as db:
        # another plausible result (pull refuses impossible ones, e.g. more mismatches than samples, as altered)
        db.conn.execute("UPDATE trials SET mismatches=CASE WHEN mismatches > 0 THEN mismatches - 1 ELSE 1 END "
                        "WHERE trial=0")
        db.conn.commit()
    with pytest.raises(ResultsError, match="already in .* with other results"):
        pull(board_db, target)
    other = tmp_path / "other.sqlite"  # holds trials of a campaign of the same name with another spec
    shutil.copy(target, other)
    with ResultsDB(other) as db:
        db.conn.execute("UPDATE campaigns SET spec=? WHERE name=?", ('{"a": 1}', "deploy-test"))
        db.conn.commit()
        assert db.trials("deploy-test")
    with pytest.raises(ResultsError, match="different spec"):
        pull(board_db, other)
    with pytest.raises(ResultsError, match="no such results database"):
        pull(tmp_path / "missing.sqlite", target)
    with pytest.raises(ResultsError, match="into itself"):
        pull(board_db, board_db)


def test_deploy_refuses_what_the_board_could_not_run(mlp, tmp_path, capsys):
    program, image = mlp
    spec = write_spec(tmp_path / "campaign.yaml")
    with pytest.raises(DeployError, match="no manifest.json"):
        pack(tmp_path, spec, tmp_path / "b.tar.gz")
    nobit = make_build(tmp_path / "nobit", program, image, bitstream=False)
    with pytest.raises(DeployError, match="has no bitstream"):
        pack(nobit, spec, tmp_path / "b.tar.gz")
    assert hwflow_main(["deploy", str(nobit), "--campaign", str(spec), "--out", str(tmp_path / "b.tar.gz")]) == 2
    assert "has no bitstream" in capsys.readouterr().err
    dry = pack(nobit, spec, tmp_path / "dry.tar.gz", require_bitstream=False)
    assert dry.bitstream is None
    from hwflow_host.__main__ import main as host_main

    assert host_main([str(unpack(dry.path, tmp_path / "dry"))]) == 2
    assert "packed without a bitstream" in capsys.readouterr().err
    with pytest.raises(DeployError, match="variant 'mlp/clipact' is not in campaign"):
        pack(nobit, spec, tmp_path / "b.tar.gz", variant="mlp/clipact", require_bitstream=False)
    two = write_spec(tmp_path / "two.yaml", models=[{"zoo": "mlp-digits", "name": "a"},
                                                     {"zoo": "mlp-digits", "name": "b"}])
    with pytest.raises(DeployError, match="say which one this build is with --variant"):
        pack(nobit, two, tmp_path / "b.tar.gz", require_bitstream=False)
    assert pack(nobit, two, tmp_path / "b.tar.gz", variant="b/baseline", require_bitstream=False).variant == \
        "b/baseline"
    partial = make_build(tmp_path / "partial", program, image, skip=("fc1/bias", "out/bias"))
    with pytest.raises(DeployError, match="does not hold in host-writable weight memory"):
        pack(partial, spec, tmp_path / "b.tar.gz")
    weights_only = write_spec(tmp_path / "w.yaml", faults=[{"model": "bitflip", "arrays": ["weight", "scale"],
                                                            "rates": [1e-2], "trials": 2}])
    bundle = load_bundle(unpack(pack(partial, weights_only, tmp_path / "w.tar.gz").path, tmp_path / "w"))
    assert len(bundle.addresses()) == image.total_words - 32 - 10


@pytest.mark.slow
def test_deploy_from_hwflow_build_output(tmp_path_factory, tmp_path, capsys):
    """`hwflow build`'s folder (manifest, image, program; the bitstream comes from the Vivado step)."""
    from hwflow.hardware.csim_board import CSimBoard  # noqa: F401 - the build needs g++ for its C-sim only
    from tests.fake_pynq import mlp_build

    build, _ = mlp_build(tmp_path_factory)
    spec = write_spec(tmp_path / "campaign.yaml")
    with pytest.raises(DeployError, match="has no bitstream"):
        pack(build.out_dir, spec, tmp_path / "b.tar.gz")
    assert hwflow_main(["deploy", str(build.out_dir), "--campaign", str(spec), "--out", str(tmp_path / "b.tar.gz"),
                        "--no-bitstream"]) == 0
    printed = capsys.readouterr().out
    assert "bitstream none (dry run only)" in printed
    assert ("note: this build is io_parallel/Vitis/Resource, the campaign spec emulates io_parallel/Vitis/Latency"
            in printed)
    bundle = load_bundle(unpack(tmp_path / "b.tar.gz", tmp_path / "board"))
    assert bundle.image.equal_words(build.image)
    assert len(bundle.plan.trials) == 8
    from hwflow_host.__main__ import main as host_main

    assert host_main([str(bundle.root), "--board", "emulator", "--db", str(tmp_path / "r.sqlite")]) == 0

    # A spec naming the build's strategy emulates exactly this design: hwflow campaign's trials pair with the
    # board's (here the bundle's emulator run) one for one, and deploy has nothing to note.
    zoo_model("mlp-digits", 8, 8).save(tmp_path / "mlp.h5", save_format="h5")
    resource = write_spec(tmp_path / "resource.yaml", strategy="Resource", reuse_factor=64,
                          models=[{"path": "mlp.h5", "name": "mlp"}])
    assert pack(build.out_dir, resource, tmp_path / "r.tar.gz", require_bitstream=False).layout_note is None
    run_campaign(load_spec(resource), tmp_path / "campaign.sqlite", workers=1, progress=False)

    def rows(path):
        with ResultsDB(path) as db:
            return sorted((t.variant, t.fault_model, t.rate, t.trial, t.seed, t.effective, t.correct, t.mismatches)
                          for t in db.trials())

    assert rows(tmp_path / "campaign.sqlite") == rows(tmp_path / "r.sqlite")
    assert len(rows(tmp_path / "r.sqlite")) == 8

