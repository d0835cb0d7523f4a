"""The Vitis HLS / Vivado scripts: what they contain, and what they do when run.

Vivado is not installed here, so the generated scripts are run in a Tcl interpreter (Debian's
``tclsh``, which scripts/install-deps.sh installs; without it these tests fail) against a recording
fake of the Vivado / Vitis HLS commands they use, in the spirit of PYNQ's mock devices: the tests
check the cells created, the nets connected and the addresses assigned, exactly. The real tools
run only in the test marked ``vivado``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import weakref
from pathlib import Path

import pytest

from hwflow.errors import BuildError, ToolMissingError
from hwflow.hardware.boards import REPO_BOARDS, load_board
from hwflow.hardware.vivado import (
    BLOCK_DESIGN,
    BUILD_IP,
    fill,
    overlay_name,
    synthesis_command,
    synthesize,
    vivado_range,
    write_scripts,
)


def sample_manifest(board: str = "pynq-z2", part: str = "xc7z020clg400-1", base: int = 0x4000_0000) -> dict:
    """A small hand-written manifest (contract 8): three memories, one of them 16 KiB."""
    def memory(name, layer, array, offset, size, depth, bits, first):
        return {"name": name, "layer": layer, "array": array, "port": f"{name}_mem", "ctrl": f"axi_bram_ctrl_{name}",
                "base": base + offset, "range": size, "depth": depth, "word_bits": bits, "lanes": 32 // bits,
                "first_word": first, "format": f"fixed<{bits},1>", "scale": {"shift": 0, "constant": None}}

    return {
        "format": 1, "model": "cnn-digits", "board": board, "part": part, "clock_mhz": 100.0,
        "backend": "Vitis", "io_type": "io_stream", "top": "hwflow_top", "ip": "hwflow_top_0",
        "data": {"interface": "axis-dma", "dma": "axi_dma_0", "word_bits": 32, "input_shape": [8, 8, 1],
                 "input_type": "fixed<16,6>", "output_shape": [10], "output_type": "fixed<20,9>",
                 "control": "s_axilite", "batch_register": "n_samples"},
        "weight_memories": [
            memory("w2", "conv1", "weight", 0x0000, 0x1000, 72, 8, 0),
            memory("w6", "conv2", "weight", 0x4000, 0x4000, 12000, 8, 80),
            memory("w9", "out", "weight", 0x1000, 0x1000, 160, 16, 12080),
        ],
        "weight_image": "weight_image.json", "program": "program.json",
    }


def build_folder(root: Path, manifest: dict) -> Path:
    """A build folder as hwflow build leaves it: the manifest and the HLS project's sources."""
    firmware = root / "hls" / "firmware"
    firmware.mkdir(parents=True)
    for name in ("myproject.cpp", "hwflow_top.cpp", "parameters.h"):
        (firmware / name).write_text("// stand-in\n")
    (root / "hls" / "hwflow_csim_bridge.cpp").write_text("// C-sim only\n")
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


ZCU104_BASE = 0xA000_0000


@pytest.fixture(params=[("pynq-z2", "xc7z020clg400-1", 0x4000_0000), ("zcu104", "xczu7ev-ffvc1156-2-e", ZCU104_BASE)],
                ids=["pynq-z2", "zcu104"])
def target(request, tmp_path):
    """(board, manifest, build folder with the scripts written)."""
    name, part, base = request.param
    board = load_board(name)
    manifest = sample_manifest(name, part, base)
    out = build_folder(tmp_path / "build", manifest)
    paths = write_scripts(manifest, board, out)
    assert paths == [out / BUILD_IP, out / BLOCK_DESIGN]
    return board, manifest, out


# --- the text ----------------------------------------------------------------------------------------


def test_scripts_name_the_part_memories_dma_and_controllers(target):
    board, manifest, out = target
    hls, bd = (out / BUILD_IP).read_text(), (out / BLOCK_DESIGN).read_text()
    assert f"set_part {{{board.part}}}" in hls
    assert "set_top {hwflow_top}" in hls
    assert "export_design -format ip_catalog" in hls
    assert f"-part {{{board.part}}}" in bd
    assert f"set board_part {{{board.board_part}}}" in bd
    for m in manifest["weight_memories"]:
        row = f"{m['name']} {m['ctrl']} {m['port']} 0x{m['base']:08X} {vivado_range(m['range'])} {m['range']}"
        assert f"{{{row}}}" in bd
    assert "hwflow_vlnv axi_dma] {axi_dma_0}" in bd
    assert "hwflow_vlnv axi_bram_ctrl" in bd
    assert "True_Dual_Port_RAM" in bd
    assert "proc_sys_reset" in bd
    assert f"get_bd_intf_pins $ps/{board.axi_master}]" in bd
    assert "@{" not in hls + bd


def test_scripts_are_deterministic_and_relocatable(tmp_path):
    board, manifest = load_board("pynq-z2"), sample_manifest()
    first = write_scripts(manifest, board, build_folder(tmp_path / "a", manifest))
    second = write_scripts(manifest, board, build_folder(tmp_path / "b", manifest))
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
    assert str(tmp_path) not in first[0].read_text() + first[1].read_text()


def test_hls_sources_are_the_firmware_cpp_files_or_the_manifest_list(tmp_path):
    board, manifest = load_board("pynq-z2"), sample_manifest()
    out = build_folder(tmp_path / "build", manifest)
    write_scripts(manifest, board, out)
    assert "foreach source {firmware/hwflow_top.cpp firmware/myproject.cpp}" in (out / BUILD_IP).read_text()
    manifest["hls"] = {"dir": "hls", "sources": ["firmware/myproject.cpp", "firmware/extra.cpp"]}
    write_scripts(manifest, board, out)
    assert "foreach source {firmware/myproject.cpp firmware/extra.cpp}" in (out / BUILD_IP).read_text()


def test_no_sources_is_an_error_that_says_what_to_do(tmp_path):
    with pytest.raises(BuildError, match=r"no C\+\+ sources for Vitis HLS.*hwflow build"):
        write_scripts(sample_manifest(), load_board("pynq-z2"), tmp_path)


def test_overlay_name_defaults_and_is_checked():
    assert overlay_name({}) == "hwflow"
    assert overlay_name({"overlay": "digits_v1"}) == "digits_v1"
    with pytest.raises(BuildError, match="'overlay' must be a file basename"):
        overlay_name({"overlay": "a b/c"})


def test_vivado_ranges():
    assert [vivado_range(n) for n in (4096, 65536, 1 << 20, 1 << 30)] == ["4K", "64K", "1M", "1G"]


# --- the manifest is checked before any Tcl is written ------------------------------------------------


def _mem(manifest: dict, i: int, **changes) -> dict:
    manifest["weight_memories"][i].update(changes)
    return manifest


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: _mem(m, 0, base=0x4000_0800), r"weight_memories\[0\] \(w2\): base 0x40000800 is not aligned"),
        (lambda m: _mem(m, 0, range=3000), r"range 3000 is not a power of two >= 4096"),
        (lambda m: _mem(m, 2, base=0x4000_4000), "w6 .* and w9 .* overlap"),
        (lambda m: _mem(m, 0, base=0x3FFF_F000), "outside M_AXI_GP0's window 0x40000000..0x7FFFFFFF"),
        (lambda m: _mem(m, 1, depth=20000), "20000 words in 4 lane"),
        (lambda m: _mem(m, 1, ctrl="axi_bram_ctrl_w2"), "share the ctrl 'axi_bram_ctrl_w2'"),
        (lambda m: _mem(m, 0, port="w2_mem] ; exec rm -rf ~ ;#"), r"'weight_memories\[0\]\.port' must be a Tcl/C"),
        (lambda m: _mem(m, 0, base="0x40000000"), r"'weight_memories\[0\]\.base' must be a non-negative integer"),
        (lambda m: m.pop("top") and m, "manifest field 'top' is missing"),
        (lambda m: m["data"].pop("dma") and m, "manifest field 'data.dma' is missing"),
        (lambda m: m.update(part="xc7z010clg400-1") or m, "'part' is 'xc7z010clg400-1' but the board pynq-z2"),
        (lambda m: m.update(board="zcu104") or m, "'board' is 'zcu104' but the board pynq-z2"),
        (lambda m: m.update(weight_memories=[]) or m, "'weight_memories' must be a non-empty list"),
        (lambda m: m.update(clock_mhz="fast") or m, "'clock_mhz' must be a clock in MHz"),
    ],
)
def test_a_bad_manifest_is_refused_with_the_field(tmp_path, edit, message):
    manifest = edit(sample_manifest())
    out = build_folder(tmp_path / "build", manifest)
    with pytest.raises(BuildError, match=message):
        write_scripts(manifest, load_board("pynq-z2"), out)
    assert not (out / BLOCK_DESIGN).exists()


def test_alveo_has_no_block_design(tmp_path):
    board = load_board("alveo-u250")
    with pytest.raises(BuildError, match="has no Zynq PS.*choose a Zynq board"):
        write_scripts(sample_manifest("alveo-u250", board.part), board, tmp_path)


def test_template_placeholders_are_checked(tmp_path):
    template = tmp_path / "t.tcl.in"
    template.write_text("set a ${tcl_var}; set b {@{value}}; set c user@@example.org\n")
    assert fill(template, {"value": 1}) == "set a ${tcl_var}; set b {1}; set c user@example.org\n"
    with pytest.raises(BuildError, match="placeholder @{value} hwflow does not fill"):
        fill(template, {})
    template.write_text("puts user@example.org\n")
    with pytest.raises(BuildError, match="malformed placeholder"):
        fill(template, {})


def test_every_template_placeholder_is_filled(target):
    """Each shared template's placeholders are exactly the ones write_scripts fills (none left over)."""
    _, _, out = target
    for path in (REPO_BOARDS / "templates").glob("*.tcl.in"):
        assert "@{" in path.read_text()
    for name in (BUILD_IP, BLOCK_DESIGN):
        assert "@" not in (out / name).read_text().replace("@example", "")


# --- running the scripts against a recording fake of Vivado and Vitis HLS -----------------------------

FAKE_TOOLS = r"""
namespace eval fake {
    variable log {}
    variable nets {}
    variable intf_nets {}
    variable cells
    variable prop
    variable assigned {}
}
proc ::fake::note {args} { lappend ::fake::log $args }
# the scripts must not end the test process nor move its working directory
catch {rename exit {}}
proc exit {args} { ::fake::note exit }
proc cd {dir} { ::fake::note cd $dir }
foreach command {update_ip_catalog validate_bd_design save_bd_design generate_target update_compile_order
                 wait_on_run open_run report_utilization report_timing_summary open_project set_top
                 open_solution set_part create_clock set_clock_uncertainty config_compile config_schedule
                 config_array_partition csynth_design export_design create_bd_design apply_bd_automation
                 create_project add_files} {
    proc $command {args} "::fake::note $command {*}\$args"
}
proc current_project {} { return project }
proc current_fileset {} { return sources_1 }
proc get_files {name} { return $name }
proc get_runs {name} { return $name }
proc make_wrapper {args} { return /fake/hwflow_bd_wrapper.v }
proc get_board_parts {args} { if {$::fake::board_installed} { return [lindex $args end] }; return {} }
proc set_property {args} {
    if {[lindex $args 0] eq "-dict"} {
        foreach {k v} [lindex $args 1] { set ::fake::prop([lindex $args 2],$k) $v }
    } else {
        lassign $args k v obj
        set ::fake::prop($obj,$k) $v
    }
}
proc get_property {name obj} {
    if {[info exists ::fake::prop($obj,$name)]} { return $::fake::prop($obj,$name) }
    switch -- $name {
        VLNV { return $obj }
        NAME { return [lindex [split $obj /] end] }
        PROGRESS { return 100% }
        DIRECTORY { return $::fake::run_dir }
        STATS.WNS { return 0.25 }
    }
    error "fake: no property $name on $obj"
}
proc get_ipdefs {args} {
    regexp {xilinx.com:ip:([a-z0-9_]+):} [lindex $args end] -> name
    return xilinx.com:ip:$name:9.9
}
proc create_bd_cell {args} {
    set name [lindex $args end]
    set ::fake::cells($name) [lindex $args [expr {[lsearch $args -vlnv] + 1}]]
    return /$name
}
proc ::fake::ip_pins {cell} {
    if {$cell ne "/$::fake::ip"} { return {} }
    set pins [dict create $cell/in_r {axis_rtl Slave} $cell/out_r {axis_rtl Master} \
        $cell/s_axi_control {aximm_rtl Slave}]
    foreach port $::fake::bram_ports { dict set pins $cell/${port}_PORTA {bram_rtl Master} }
    return $pins
}
proc get_bd_intf_pins {args} {
    set i [lsearch $args -of_objects]
    if {$i >= 0} {
        set pins [::fake::ip_pins [lindex $args [expr {$i + 1}]]]
        set f [lsearch $args -filter]
        if {$f < 0} { return [dict keys $pins] }
        regexp {\*:(\w+):\* && MODE == (\w+)} [lindex $args [expr {$f + 1}]] -> bus mode
        set found {}
        dict for {pin spec} $pins { if {$spec eq [list $bus $mode]} { lappend found $pin } }
        return $found
    }
    set path [lindex $args end]
    if {[string match /$::fake::ip/* $path] && ![dict exists [::fake::ip_pins /$::fake::ip] $path]} {
        if {[lsearch $args -quiet] >= 0} { return {} }
        error "fake: no interface pin $path"
    }
    return $path
}
proc get_bd_pins {args} {
    set i [lsearch $args -of_objects]
    if {$i >= 0} {
        set cell [lindex $args [expr {$i + 1}]]
        if {[string match *clk* [lindex $args end]]} { return [list $cell/ACLK $cell/S00_ACLK $cell/M00_ACLK] }
        return [list $cell/ARESETN $cell/S00_ARESETN $cell/M00_ARESETN]
    }
    return [lindex $args end]
}
proc connect_bd_intf_net {a b} { lappend ::fake::intf_nets [list $a $b] }
proc connect_bd_net {args} { lappend ::fake::nets $args }
proc get_bd_addr_spaces {path} { return $path }
proc get_bd_addr_segs {args} {
    if {[lsearch $args -of_objects] >= 0} {
        regexp {\*(\w+)\*} [lindex $args end] -> ctrl
        if {[info exists ::fake::prop(SEG_${ctrl}_Mem0,OFFSET)]} { return SEG_${ctrl}_Mem0 }
        return {}
    }
    return [lindex $args end]
}
proc assign_bd_address {args} {
    if {[llength $args] == 0} { ::fake::note assign_bd_address_auto; return }
    set option {}
    foreach name {-target_address_space -offset -range} {
        dict set option $name [lindex $args [expr {[lsearch $args $name] + 1}]]
    }
    set segment [lindex $args end]
    set range [dict get $option -range]
    set bytes [expr {[string range $range 0 end-1] << [dict get {K 10 M 20 G 30} [string index $range end]]}]
    set ctrl [lindex [split $segment /] 0]
    set ::fake::prop(SEG_${ctrl}_Mem0,OFFSET) [dict get $option -offset]
    set ::fake::prop(SEG_${ctrl}_Mem0,RANGE) $bytes
    lappend ::fake::assigned [list [dict get $option -target_address_space] $segment [dict get $option -offset] $bytes]
}
proc launch_runs {args} {
    ::fake::note launch_runs {*}$args
    file mkdir $::fake::run_dir
    close [open [file join $::fake::run_dir hwflow_bd_wrapper.bit] w]
    set handoff [file join $::proj_dir hwflow.gen sources_1 bd hwflow_bd hw_handoff]
    file mkdir $handoff
    close [open [file join $handoff hwflow_bd.hwh] w]
}
"""


# The interpreter: Debian's tclsh (package tcl, installed by scripts/install-deps.sh), driven over
# pipes. Each request is a byte count and a UTF-8 script; each reply a marker line with the return
# code and the result's byte count, then the result (the generated scripts' own puts output is skipped).
TCL_DRIVER = r"""
fconfigure stdin -translation binary
fconfigure stdout -translation binary
proc ::drv_esc {e} { string map [list \\ \\\\ \n \\n \x1e \\r \x1f \\u] $e }
proc ::drv_list {value} { join [lmap e $value {::drv_esc $e}] \x1f }
proc ::drv_rows {value} { join [lmap item $value {::drv_list $item}] \x1e }
while {[gets stdin n] >= 0} {
    set code [catch {uplevel #0 [encoding convertfrom utf-8 [read stdin $n]]} result]
    set result [encoding convertto utf-8 $result]
    puts -nonewline "\x01 $code [string length $result]\n$result"
    flush stdout
}
"""


class TclError(Exception):
    """A Tcl script ended with an error (the message is Tcl's)."""


def _unescape(text: str) -> str:
    return text.replace("\\\\", "\0").replace("\\n", "\n").replace("\\r", "\x1e").replace(
        "\\u", "\x1f").replace("\0", "\\")


def _split(text: str) -> list[str]:
    return [] if text == "" else [_unescape(e) for e in text.split("\x1f")]


class FakeTools:
    """A tclsh with the fake commands; ``run`` sources a generated script."""

    def __init__(self, tmp_path: Path, bram_ports: list[str], board_installed: bool = True):
        tclsh = shutil.which("tclsh")
        if tclsh is None:
            pytest.fail("tclsh not found: install Debian's tcl package (make deps does: scripts/install-deps.sh)")
        self.proc = subprocess.Popen([tclsh], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tmp_path)
        weakref.finalize(self, self.proc.kill)
        self.proc.stdin.write(TCL_DRIVER.encode())
        self.proc.stdin.flush()
        self.eval(FAKE_TOOLS)
        self.eval(f"set ::fake::ip hwflow_top_0; set ::fake::bram_ports {{{' '.join(bram_ports)}}}; "
                  f"set ::fake::run_dir {{{tmp_path / 'impl_1'}}}; "
                  f"set ::fake::board_installed {int(board_installed)}")

    def eval(self, script: str) -> str:
        """Evaluate ``script`` at global level; its result, or TclError with Tcl's message."""
        data = script.encode()
        self.proc.stdin.write(b"%d\n%s" % (len(data), data))
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                msg = f"tclsh exited (code {self.proc.wait()}) while evaluating: {script[:200]}"
                raise TclError(msg)
            if line.startswith(b"\x01 "):
                break
        _, code, size = line.split()
        result = self.proc.stdout.read(int(size)).decode()
        if code != b"0":
            raise TclError(result)
        return result

    def run(self, script: Path) -> None:
        self.eval(f"source {{{script}}}")

    def get(self, variable: str) -> list:
        rows = self.eval(f"::drv_rows [set {variable}]")
        return [] if rows == "" else [_split(row) for row in rows.split("\x1e")]

    def commands(self, name: str) -> list[list[str]]:
        return [entry[1:] for entry in self.get("::fake::log") if entry[0] == name]

    def prop(self, obj: str, name: str) -> str:
        return self.eval(f"set ::fake::prop({obj},{name})")

    def cells(self) -> dict[str, str]:
        flat = _split(self.eval("::drv_list [array get ::fake::cells]"))
        return dict(zip(flat[::2], flat[1::2], strict=True))


def test_fake_tools_round_trip_awkward_values(tmp_path):
    """The pipe protocol keeps values exactly: spaces, braces, newlines, backslashes, empty items."""
    fake = FakeTools(tmp_path, [])
    fake.eval("puts {noise a script prints}; set v [list [list a {b c} {}] {} [list \"x\\ny\" {p\\q} \\u00e9\\r]]")
    assert fake.get("v") == [["a", "b c", ""], [], ["x\ny", "p\\q", "\u00e9\r"]]
    with pytest.raises(TclError, match="no such variable"):
        fake.eval("set nothing_here")
    assert fake.eval("expr {6 * 7}") == "42"


def ports(manifest: dict) -> list[str]:
    return [m["port"] for m in manifest["weight_memories"]]


def test_block_design_wires_and_places_every_weight_memory(target, tmp_path):
    board, manifest, out = target
    fake = FakeTools(tmp_path, ports(manifest))
    fake.run(out / BLOCK_DESIGN)
    ps = "processing_system7_0" if board.ps.value == "zynq" else "zynq_ultra_ps_e_0"
    # the project, the board part, the IP repository of the HLS export
    assert fake.commands("create_project")[0][-2:] == ["-part", board.part]
    assert fake.prop("project", "board_part") == board.board_part
    assert fake.prop("project", "ip_repo_paths") == str(out / "vitis_hls_prj" / "solution1" / "impl" / "ip")
    cells = fake.cells()
    assert cells["hwflow_top_0"] == "hwflow.org:hls:hwflow_top:1.0"
    assert cells["axi_dma_0"] == "xilinx.com:ip:axi_dma:9.9"
    assert cells[ps].startswith("xilinx.com:ip:")
    assert fake.prop("/axi_dma_0", "CONFIG.c_include_sg") == "0"
    # every memory: a controller, a block memory, port A to the controller, port B to the accelerator,
    # and its address segment exactly at the manifest's base and range
    intf_nets = {tuple(n) for n in fake.get("::fake::intf_nets")}
    assigned = {a[1]: a for a in fake.get("::fake::assigned")}
    for m in manifest["weight_memories"]:
        assert cells[m["ctrl"]] == "xilinx.com:ip:axi_bram_ctrl:9.9"
        assert cells[f"blk_mem_{m['name']}"] == "xilinx.com:ip:blk_mem_gen:9.9"
        assert fake.prop(f"/blk_mem_{m['name']}", "CONFIG.Memory_Type") == "True_Dual_Port_RAM"
        assert (f"/{m['ctrl']}/BRAM_PORTA", f"/blk_mem_{m['name']}/BRAM_PORTA") in intf_nets
        assert (f"/hwflow_top_0/{m['port']}_PORTA", f"/blk_mem_{m['name']}/BRAM_PORTB") in intf_nets
        space, _, offset, size = assigned[f"{m['ctrl']}/S_AXI/Mem0"]
        assert space == f"/{ps}/Data"
        assert (int(offset, 16), int(size)) == (m["base"], m["range"])
    assert len(assigned) == len(manifest["weight_memories"])
    assert fake.commands("assign_bd_address_auto") == [[]]
    # the data path: DMA streams to and from the accelerator, DDR through the board's slave port
    assert ("/axi_dma_0/M_AXIS_MM2S", "/hwflow_top_0/in_r") in intf_nets
    assert ("/hwflow_top_0/out_r", "/axi_dma_0/S_AXIS_S2MM") in intf_nets
    assert ("/dma_interconnect/M00_AXI", f"/{ps}/{board.dma_port}") in intf_nets
    assert (f"/{ps}/{board.axi_master}", "/ps_interconnect/S00_AXI") in intf_nets
    assert ("/ps_interconnect/M00_AXI", "/hwflow_top_0/s_axi_control") in intf_nets
    assert fake.prop("/ps_interconnect", "CONFIG.NUM_MI") == str(2 + len(manifest["weight_memories"]))
    # one clock for everything, the accelerator reset from proc_sys_reset
    clock = "FCLK_CLK0" if board.ps.value == "zynq" else "pl_clk0"
    clocked = {pin for net in fake.get("::fake::nets") if net[0] == f"/{ps}/{clock}" for pin in net[1:]}
    assert {"/hwflow_top_0/ap_clk", "/axi_dma_0/m_axi_mm2s_aclk", "/rst_pl_clk0/slowest_sync_clk"} <= clocked
    assert ["/rst_pl_clk0/peripheral_aresetn", "/hwflow_top_0/ap_rst_n"] in fake.get("::fake::nets")
    # the flow to the overlay: validate, bitstream, .bit + .hwh beside the script
    assert fake.commands("validate_bd_design") == [[]]
    assert fake.commands("launch_runs")[0][:3] == ["impl_1", "-to_step", "write_bitstream"]
    assert (out / "hwflow.bit").is_file()
    assert (out / "hwflow.hwh").is_file()


def test_ps_enables_only_the_board_ports_at_its_clock(target, tmp_path):
    board, manifest, out = target
    fake = FakeTools(tmp_path, ports(manifest))
    fake.run(out / BLOCK_DESIGN)
    if board.ps.value == "zynq":
        ps, clock = "/processing_system7_0", "CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ"
        enabled = {"CONFIG.PCW_USE_M_AXI_GP0": "1", "CONFIG.PCW_USE_S_AXI_HP0": "1", "CONFIG.PCW_USE_M_AXI_GP1": "0"}
    else:
        ps, clock = "/zynq_ultra_ps_e_0", "CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ"
        enabled = {"CONFIG.PSU__USE__M_AXI_GP0": "1", "CONFIG.PSU__USE__S_AXI_GP2": "1",
                   "CONFIG.PSU__USE__M_AXI_GP1": "0"}
    assert fake.prop(ps, clock) == "100"
    for key, value in enabled.items():
        assert fake.prop(ps, key) == value


def test_without_board_files_the_part_alone_is_used(tmp_path):
    board, manifest = load_board("pynq-z2"), sample_manifest()
    out = build_folder(tmp_path / "build", manifest)
    write_scripts(manifest, board, out)
    fake = FakeTools(tmp_path, ports(manifest), board_installed=False)
    fake.run(out / BLOCK_DESIGN)
    assert fake.eval("info exists ::fake::prop(project,board_part)") == "0"
    automation = fake.commands("apply_bd_automation")[0]
    assert "apply_board_preset 0" in " ".join(automation)


def test_a_missing_bram_port_on_the_ip_stops_the_script_with_its_name(tmp_path):
    board, manifest = load_board("pynq-z2"), sample_manifest()
    out = build_folder(tmp_path / "build", manifest)
    write_scripts(manifest, board, out)
    fake = FakeTools(tmp_path, ["w2_mem", "w9_mem"])  # the IP lacks w6_mem
    with pytest.raises(TclError, match="the accelerator has no BRAM port w6_mem"):
        fake.run(out / BLOCK_DESIGN)


def test_build_ip_synthesizes_the_firmware_for_the_part(target, tmp_path):
    board, manifest, out = target
    fake = FakeTools(tmp_path, ports(manifest))
    fake.run(out / BUILD_IP)
    assert fake.commands("open_project") == [["-reset", "vitis_hls_prj"]]
    assert fake.commands("set_top") == [["hwflow_top"]]
    assert fake.commands("set_part") == [[board.part]]
    assert fake.commands("create_clock") == [["-period", "10", "-name", "default"]]
    files = [entry[0] for entry in fake.commands("add_files")]
    assert files == [str(out / "hls" / "firmware" / "hwflow_top.cpp"), str(out / "hls" / "firmware" / "myproject.cpp")]
    assert fake.commands("add_files")[0][1:] == ["-cflags", f"-std=c++0x -I{out / 'hls' / 'firmware'}"]
    export = fake.commands("export_design")[0]
    assert export[:2] == ["-format", "ip_catalog"]
    assert export[export.index("-vendor") + 1: export.index("-vendor") + 2] == ["hwflow.org"]
    assert fake.commands("csynth_design") == [[]]
    assert fake.commands("exit") == [[]]


# --- synthesize() ------------------------------------------------------------------------------------


def test_synthesize_without_tools_names_them_and_the_commands(tmp_path, monkeypatch):
    board, manifest = load_board("pynq-z2"), sample_manifest()
    out = build_folder(tmp_path / "build", manifest)
    write_scripts(manifest, board, out)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ToolMissingError) as err:
        synthesize(out, board)
    message = str(err.value)
    assert "needs vitis_hls and vivado on the PATH" in message
    assert synthesis_command(out) in message
    assert f"cd {out} && vitis_hls -f build_ip.tcl && vivado -mode batch -source block_design.tcl" in message


def _fake_tool(folder: Path, name: str, body: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_synthesize_names_the_one_missing_tool(tmp_path, monkeypatch):
    board, manifest = load_board("pynq-z2"), sample_manifest()
    out = build_folder(tmp_path / "build", manifest)
    write_scripts(manifest, board, out)
    _fake_tool(tmp_path / "bin", "vivado", "exit 0")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(ToolMissingError, match="needs vitis_hls on the PATH"):
        synthesize(out, board)


def test_synthesize_needs_the_scripts(tmp_path):
    with pytest.raises(BuildError, match="has no build_ip.tcl or block_design.tcl: write the scripts first"):
        synthesize(tmp_path, load_board("pynq-z2"))


def test_synthesize_refuses_a_build_for_another_board(tmp_path):
    manifest = sample_manifest()
    out = build_folder(tmp_path / "build", manifest)
    write_scripts(manifest, load_board("pynq-z2"), out)
    with pytest.raises(BuildError, match="is a build for board 'pynq-z2', not 'zcu104'"):
        synthesize(out, load_board("zcu104"))


@pytest.mark.skipif(os.name != "posix", reason="fake tools are shell scripts")
def test_synthesize_runs_both_tools_and_checks_the_overlay(tmp_path, monkeypatch):
    board, manifest = load_board("pynq-z2"), sample_manifest()
    out = build_folder(tmp_path / "build", manifest)
    write_scripts(manifest, board, out)
    bin_dir = tmp_path / "bin"
    _fake_tool(bin_dir, "vitis_hls", 'echo "vitis_hls $*"')
    _fake_tool(bin_dir, "vivado", 'echo "vivado $*"; touch hwflow.bit hwflow.hwh')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    synthesize(out, board)
    assert (out / "logs" / "vitis_hls.log").read_text() == "vitis_hls -f build_ip.tcl\n"
    assert (out / "logs" / "vivado.log").read_text() == (
        "vivado -mode batch -nojournal -nolog -source block_design.tcl\n")


@pytest.mark.skipif(os.name != "posix", reason="fake tools are shell scripts")
def test_a_failing_tool_reports_its_log(tmp_path, monkeypatch):
    board, manifest = load_board("pynq-z2"), sample_manifest()
    out = build_folder(tmp_path / "build", manifest)
    write_scripts(manifest, board, out)
    bin_dir = tmp_path / "bin"
    _fake_tool(bin_dir, "vitis_hls", 'echo "ERROR: [HLS 200-70] Compilation errors found"; exit 1')
    _fake_tool(bin_dir, "vivado", "exit 0")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    with pytest.raises(BuildError, match=r"(?s)Vitis HLS failed \(exit 1\).*Compilation errors found"):
        synthesize(out, board)


@pytest.mark.skipif(os.name != "posix", reason="fake tools are shell scripts")
def test_vivado_without_an_overlay_is_an_error(tmp_path, monkeypatch):
    board, manifest = load_board("pynq-z2"), sample_manifest()
    out = build_folder(tmp_path / "build", manifest)
    write_scripts(manifest, board, out)
    bin_dir = tmp_path / "bin"
    _fake_tool(bin_dir, "vitis_hls", "exit 0")
    _fake_tool(bin_dir, "vivado", "exit 0")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    with pytest.raises(BuildError, match="left no hwflow.bit"):
        synthesize(out, board)


# --- the real tools ----------------------------------------------------------------------------------

TINY_TOP = """\
// A minimal accelerator with the interface of contract 8: streams, n_samples, one weight memory.
#include <ap_axi_sdata.h>
#include <ap_int.h>
#include <hls_stream.h>

typedef ap_axis<32, 0, 0, 0> word_t;

void hwflow_top(hls::stream<word_t> &in, hls::stream<word_t> &out, unsigned int n_samples,
                ap_uint<32> w2_mem[1024]) {
#pragma HLS INTERFACE axis port = in
#pragma HLS INTERFACE axis port = out
#pragma HLS INTERFACE s_axilite port = n_samples
#pragma HLS INTERFACE s_axilite port = return
#pragma HLS INTERFACE mode = bram port = w2_mem storage_type = ram_1p
    for (unsigned int s = 0; s < n_samples; s++) {
        word_t x = in.read();
        word_t y;
        y.data = x.data + w2_mem[s % 1024];
        y.keep = -1;
        y.strb = -1;
        y.last = s + 1 == n_samples;
        out.write(y);
    }
}
"""


@pytest.mark.vivado
@pytest.mark.skipif(not ((shutil.which("vitis_hls") or shutil.which("vitis-run")) and shutil.which("vivado")),
                    reason="Vitis HLS and Vivado are not on the PATH")
def test_real_synthesis_of_a_tiny_accelerator(tmp_path):
    board = load_board("pynq-z2")
    manifest = sample_manifest()
    manifest["weight_memories"] = manifest["weight_memories"][:1]
    out = tmp_path / "build"
    (out / "hls" / "firmware").mkdir(parents=True)
    (out / "hls" / "firmware" / "hwflow_top.cpp").write_text(TINY_TOP)
    (out / "manifest.json").write_text(json.dumps(manifest))
    write_scripts(manifest, board, out)
    synthesize(out, board)
    assert (out / "hwflow.bit").stat().st_size > 0
    assert "axi_bram_ctrl_w2" in (out / "hwflow.hwh").read_text()
