"""Board definitions: every board.yaml loads, the registry finds new folders and refuses duplicates,
and malformed files are reported with the file and the field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from hwflow.errors import BuildError, SpecError
from hwflow.hardware.boards import (
    BOARDS_ENV,
    REPO_BOARDS,
    DataInterface,
    PsType,
    default_boards_dir,
    known_boards,
    load_board,
)

PARTS = {
    "pynq-z2": "xc7z020clg400-1",
    "zcu104": "xczu7ev-ffvc1156-2-e",
    "ultra96-v2": "xczu3eg-sbva484-1-e",
    "kv260": "xck26-sfvc784-2LV-c",
    "zcu102": "xczu9eg-ffvb1156-2-e",
    "alveo-u250": "xcu250-figd2104-2L-e",
}


@pytest.fixture
def boards_dir(tmp_path):
    """A private copy of pynq-z2's folder to edit."""
    root = tmp_path / "boards"
    (root / "pynq-z2").mkdir(parents=True)
    shutil.copy(REPO_BOARDS / "pynq-z2" / "board.yaml", root / "pynq-z2" / "board.yaml")
    return root


def pynq_fields() -> dict:
    return yaml.safe_load((REPO_BOARDS / "pynq-z2" / "board.yaml").read_text())


def write_board(root: Path, folder: str, fields: dict) -> Path:
    path = root / folder / "board.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(fields))
    return path


@pytest.mark.parametrize(("name", "part"), sorted(PARTS.items()))
def test_every_board_loads_with_its_part(name, part):
    board = load_board(name)
    assert board.name == name
    assert board.part == part
    assert board.source == REPO_BOARDS / name / "board.yaml"
    assert min(board.bram36, board.dsp, board.lut, board.ff) > 0


def test_known_boards_are_the_folders():
    assert known_boards() == sorted(PARTS)


def test_pynq_z2_is_the_datasheet_xc7z020():
    board = load_board("pynq-z2")
    assert (board.bram36, board.dsp, board.lut, board.ff, board.uram) == (140, 220, 53200, 106400, 0)
    assert board.ps is PsType.ZYNQ
    assert board.data_interface is DataInterface.AXIS_DMA
    assert board.board_part == "tul.com.tw:pynq-z2:part0:1.0"
    assert board.pynq_image == "3.0.1"
    assert (board.axi_master, board.weight_base, board.dma_port) == ("M_AXI_GP0", 0x4000_0000, "S_AXI_HP0")
    assert board.master_window == (0x4000_0000, 0x4000_0000)
    assert board.clock_mhz == 100.0
    assert board.clock_period_ns == 10.0
    assert board.ps_template == REPO_BOARDS / "templates" / "ps_zynq.tcl.in"
    assert board.ps_template.is_file()


def test_zynqmp_boards_use_hpm0_fpd_and_the_shared_template():
    for name in ("zcu104", "ultra96-v2", "kv260", "zcu102"):
        board = load_board(name)
        assert board.ps is PsType.ZYNQMP
        assert (board.axi_master, board.weight_base) == ("M_AXI_HPM0_FPD", 0xA000_0000)
        assert board.ps_template == REPO_BOARDS / "templates" / "ps_zynqmp.tcl.in"


def test_alveo_has_no_ps():
    board = load_board("alveo-u250")
    assert board.ps is PsType.NONE
    assert board.data_interface is DataInterface.XRT
    assert board.ps_template is None
    assert board.master_window is None


def test_names_are_case_insensitive():
    assert load_board("PYNQ-Z2").name == "pynq-z2"


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(BuildError, match="unknown board 'pynq-z3'") as err:
        load_board("pynq-z3")
    for name in PARTS:
        assert name in str(err.value)


def test_a_new_board_folder_is_picked_up(boards_dir):
    fields = pynq_fields()
    fields.update(name="my-z7", part="xc7z010clg400-1", board_part=None)
    fields["resources"].update(bram36=60, dsp=80, lut=17600, ff=35200)
    write_board(boards_dir, "my-z7", fields)
    assert known_boards(boards_dir) == ["my-z7", "pynq-z2"]
    board = load_board("my-z7", boards_dir)
    assert (board.part, board.bram36, board.board_part) == ("xc7z010clg400-1", 60, None)
    # a boards folder without its own templates uses the repository's
    assert board.ps_template == REPO_BOARDS / "templates" / "ps_zynq.tcl.in"


def test_the_environment_variable_points_at_another_boards_folder(boards_dir, monkeypatch):
    monkeypatch.setenv(BOARDS_ENV, str(boards_dir))
    assert default_boards_dir() == boards_dir
    assert known_boards() == ["pynq-z2"]


def test_default_boards_folder_is_the_repository_one(monkeypatch):
    monkeypatch.delenv(BOARDS_ENV, raising=False)
    assert default_boards_dir() == REPO_BOARDS
    assert (REPO_BOARDS / "pynq-z2" / "board.yaml").is_file()


def test_a_missing_boards_folder_says_where_it_looked(tmp_path):
    with pytest.raises(BuildError, match="no board definitions at .*nowhere"):
        known_boards(tmp_path / "nowhere")


def test_two_folders_declaring_one_name_are_refused(boards_dir):
    copy = write_board(boards_dir, "pynq-z2-copy", pynq_fields())
    with pytest.raises(BuildError, match="defined twice") as err:
        load_board("pynq-z2", boards_dir)
    assert str(copy) in str(err.value)
    assert str(boards_dir / "pynq-z2" / "board.yaml") in str(err.value)


def test_a_folder_without_board_yaml_is_not_a_board(boards_dir):
    (boards_dir / "notes").mkdir()
    (boards_dir / "notes" / "README.md").write_text("not a board")
    assert known_boards(boards_dir) == ["pynq-z2"]


def test_yaml_syntax_errors_name_the_file(boards_dir):
    path = boards_dir / "pynq-z2" / "board.yaml"
    path.write_text("name: pynq-z2\nresources: [bram36: 1\n")
    with pytest.raises(SpecError, match="not a readable YAML file") as err:
        known_boards(boards_dir)
    assert str(path) in str(err.value)


def test_a_file_that_is_not_a_mapping_is_refused(boards_dir):
    (boards_dir / "pynq-z2" / "board.yaml").write_text("- just\n- a list\n")
    with pytest.raises(SpecError, match="a board definition is a YAML mapping"):
        known_boards(boards_dir)


def _edit(fields: dict, field: str, value) -> dict:
    section, _, key = field.rpartition(".")
    target = fields[section] if section else fields
    if value is _DELETE:
        del target[key]
    else:
        target[key] = value
    return fields


_DELETE = object()


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("part", _DELETE, "is missing"),
        ("part", "zc7020", "expected an AMD/Xilinx part"),
        ("name", "Pynq Z2", "lower-case letters"),
        ("clock_mhz", "fast", "clock frequency in MHz"),
        ("clock_mhz", 0, "clock frequency in MHz"),
        ("resources.bram36", "many", "non-negative integer count"),
        ("resources.dsp", -1, "non-negative integer count"),
        ("resources.lut", _DELETE, "is missing"),
        ("resources.bram18", 280, "is not a resource"),
        ("ps", "zynq7", "choose one of zynq, zynqmp, none"),
        ("data_interface", "pcie", "choose one of axis-dma, xrt"),
        ("pynq_image", 3.0, 'a quoted version such as "3.0.1"'),
        ("board_part", "pynq-z2", "vendor:board:part0:version"),
        ("axi_master", "M_AXI_HPM0_FPD", "a zynq PS offers M_AXI_GP0, M_AXI_GP1"),
        ("dma_port", "S_AXI_ACP", "a zynq PS offers S_AXI_HP0"),
        ("weight_base", 0x1000_0000, "0x10000000; it must be a 4 KiB-aligned address in M_AXI_GP0's window"),
        ("weight_base", 0x4000_0010, "4 KiB-aligned"),
        ("weight_base", "0x40000000x", "non-negative integer"),
        ("ps_template", "mine.tcl.in", "does not exist"),
        ("clock", 100, "is not a board field"),
    ],
)
def test_malformed_fields_name_the_file_and_the_field(boards_dir, field, value, problem):
    path = write_board(boards_dir, "pynq-z2", _edit(pynq_fields(), field, value))
    with pytest.raises(SpecError) as err:
        load_board("pynq-z2", boards_dir)
    message = str(err.value)
    assert message.startswith(f"{path}: field '{field}'")
    assert problem in message


def test_axis_dma_needs_a_ps(boards_dir):
    write_board(boards_dir, "pynq-z2", _edit(pynq_fields(), "ps", "none"))
    with pytest.raises(SpecError, match="field 'data_interface' axis-dma needs a PS"):
        load_board("pynq-z2", boards_dir)


def test_a_board_can_bring_its_own_ps_template(boards_dir):
    (boards_dir / "pynq-z2" / "ps.tcl.in").write_text("# my PS\n")
    write_board(boards_dir, "pynq-z2", _edit(pynq_fields(), "ps_template", "ps.tcl.in"))
    assert load_board("pynq-z2", boards_dir).ps_template == boards_dir / "pynq-z2" / "ps.tcl.in"


def test_hex_addresses_with_underscores_are_read(boards_dir):
    path = boards_dir / "pynq-z2" / "board.yaml"
    path.write_text(path.read_text().replace("weight_base: 0x40000000", "weight_base: 0x4001_0000"))
    assert load_board("pynq-z2", boards_dir).weight_base == 0x4001_0000
