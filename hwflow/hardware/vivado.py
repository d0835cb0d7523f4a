"""Vitis HLS and Vivado scripts for a build, and running them when the tools are installed.

The scripts are filled from template files in ``boards/templates`` (``build_ip.tcl.in``,
``block_design.tcl.in`` and the PS template of the board); Python only supplies values, it
does not assemble Tcl. The placeholders are ``@{name}``, because Tcl uses ``$`` and ``${...}``.

Everything the scripts need comes from the build manifest (contract 8): the top function and IP
instance, the DMA's name, and each weight memory's BRAM port, controller, base address and range.
The block design puts every weight memory exactly at the manifest's address, because the host
reads only the manifest. Two optional manifest keys, with defaults:

- ``"hls": {"dir": "hls", "sources": ["firmware/myproject.cpp", ...]}``: the HLS project folder
  (relative to the build folder) and the C++ files Vitis HLS synthesizes (relative to that folder);
  without ``sources``, every ``firmware/*.cpp`` found there.
- ``"overlay": "hwflow"``: the basename of the ``.bit`` / ``.hwh`` pair PYNQ loads.

The scripts use paths relative to themselves, so a build folder can be copied to a machine with
Vivado and run there (``synthesis_command`` prints how).
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import NoReturn

from hwflow.errors import BuildError, ToolMissingError
from hwflow.hardware.boards import BoardSpec, DataInterface, templates_dir

log = logging.getLogger(__name__)

BUILD_IP = "build_ip.tcl"
BLOCK_DESIGN = "block_design.tcl"
HLS_PROJECT = "vitis_hls_prj"
VIVADO_PROJECT = "vivado_prj"
IP_VENDOR, IP_LIBRARY, IP_VERSION = "hwflow.org", "hls", "1.0"
DEFAULT_OVERLAY = "hwflow"
MIN_RANGE = 4096  # the smallest address range Vivado gives an AXI BRAM controller
MAX_MEMORIES = 62  # an AXI interconnect has at most 64 master ports; two go to control and DMA
LOG_DIR = "logs"

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OVERLAY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_SOURCE = re.compile(r"^[A-Za-z0-9_./-]+$")  # Tcl-safe: no spaces, braces, brackets or '$'


class TclTemplate(Template):
    """``@{name}`` placeholders (Tcl keeps ``$``); a stray ``@`` is an error, not text."""

    delimiter = "@"
    pattern = r"@(?:(?P<escaped>@)|\{(?P<braced>[a-z_][a-z0-9_]*)\}|(?P<named>(?!))|(?P<invalid>))"


def fill(path: Path, values: dict) -> str:
    """The template file at ``path`` with every placeholder filled; a missing value is a BuildError."""
    try:
        return TclTemplate(path.read_text()).substitute(values)
    except OSError as err:
        msg = f"cannot read the Tcl template {path}: {err}"
        raise BuildError(msg) from None
    except KeyError as err:
        msg = f"the Tcl template {path} has a placeholder @{{{err.args[0]}}} hwflow does not fill"
        raise BuildError(msg) from None
    except ValueError as err:
        msg = f"the Tcl template {path} has a malformed placeholder ({err}); write @@ for a literal @"
        raise BuildError(msg) from None


@dataclass(frozen=True)
class Memory:
    """One weight memory of the manifest, as the block design wires it."""

    name: str
    ctrl: str
    port: str
    base: int
    range: int

    def tcl(self) -> str:
        """One line of the Tcl list ``memories`` in block_design.tcl."""
        return f"    {{{self.name} {self.ctrl} {self.port} 0x{self.base:08X} {vivado_range(self.range)} {self.range}}}"


def vivado_range(size: int) -> str:
    """An address range as Vivado writes it: 4K, 64K, 1M, 1G."""
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    msg = f"address range {size} is not a whole number of KiB"
    raise BuildError(msg)


def write_scripts(manifest: dict, board: BoardSpec, out_dir: Path) -> list[Path]:
    """Write ``build_ip.tcl`` (Vitis HLS) and ``block_design.tcl`` (Vivado) into the build folder.

    ``out_dir`` is the build folder: the one holding ``manifest.json`` and the HLS project. The
    scripts are deterministic (same manifest and board, same bytes). Returns their paths.
    """
    out_dir = Path(out_dir)
    if board.data_interface is not DataInterface.AXIS_DMA or board.ps_template is None:
        msg = (f"board {board.name} ({board.ps.value}, {board.data_interface.value}) has no Zynq PS: hwflow "
               "generates the Zynq / Zynq UltraScale+ block design only (an Alveo build is a Vitis kernel "
               "linked with v++ against the card's platform, not generated yet); choose a Zynq board")
        raise BuildError(msg)
    m = _Manifest(manifest)
    _check_target(m, board)
    memories = _memories(m, board)
    hls_dir, sources = _hls_sources(m, out_dir)
    clock_mhz = m.number("clock_mhz", board.clock_mhz)
    top, ip_name = m.ident("top"), m.ident("ip")
    common = {
        "board": board.name, "part": board.part, "clock_mhz": f"{clock_mhz:g}", "top": top,
        "ip_vlnv": f"{IP_VENDOR}:{IP_LIBRARY}:{top}:{IP_VERSION}",
    }
    templates = templates_dir(board.source.parent.parent)
    ps_setup = fill(board.ps_template, {"axi_master": board.axi_master, "dma_port": board.dma_port,
                                        "clock_mhz": f"{clock_mhz:g}"})
    texts = {
        BUILD_IP: fill(templates / f"{BUILD_IP}.in", {
            **common, "hls_dir": hls_dir, "hls_project": HLS_PROJECT, "sources": " ".join(sources),
            "clock_period_ns": f"{1000.0 / clock_mhz:g}", "ip_vendor": IP_VENDOR, "ip_library": IP_LIBRARY,
            "ip_version": IP_VERSION,
        }),
        BLOCK_DESIGN: fill(templates / f"{BLOCK_DESIGN}.in", {
            **common, "board_part": board.board_part or "", "ps_template": _shown(board.ps_template),
            "ps_setup": ps_setup.rstrip("\n"), "axi_master": board.axi_master, "dma_port": board.dma_port,
            "ip_name": ip_name, "dma": m.ident("data", "dma"), "overlay": overlay_name(manifest),
            "memories": "\n".join(mem.tcl() for mem in memories), "vivado_project": VIVADO_PROJECT,
            "ip_repo": f"{HLS_PROJECT}/solution1/impl/ip",
        }),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in texts.items():
        path = out_dir / name
        path.write_text(text)
        paths.append(path)
    log.info("wrote %s for %s in %s", ", ".join(texts), board.name, out_dir)
    return paths


def overlay_name(manifest: dict) -> str:
    """Basename of the bitstream and hardware handoff files (``<name>.bit``, ``<name>.hwh``)."""
    name = manifest.get("overlay") or DEFAULT_OVERLAY
    if not isinstance(name, str) or not _OVERLAY.match(name):
        msg = f"manifest field 'overlay' must be a file basename (letters, digits, '_', '-', '.'), got {name!r}"
        raise BuildError(msg)
    return name


def synthesis_command(out_dir: Path) -> str:
    """The one line that builds the overlay from a build folder on a machine with the tools."""
    folder = shlex.quote(str(Path(out_dir)))
    return f"cd {folder} && vitis_hls -f {BUILD_IP} && vivado -mode batch -source {BLOCK_DESIGN}"


def synthesize(out_dir: Path, board: BoardSpec) -> None:
    """Run Vitis HLS, then Vivado, on the scripts in ``out_dir``; logs go to ``out_dir/logs``.

    Raises ToolMissingError naming the missing tool(s) and the commands to run elsewhere, and
    BuildError when a tool fails (with the log's last lines) or leaves no overlay behind.
    """
    out_dir = Path(out_dir)
    missing_scripts = [name for name in (BUILD_IP, BLOCK_DESIGN) if not (out_dir / name).is_file()]
    if missing_scripts:
        msg = f"{out_dir} has no {' or '.join(missing_scripts)}: write the scripts first (hwflow build)"
        raise BuildError(msg)
    overlay = _overlay_of(out_dir, board)
    hls = _hls_command()
    vivado = shutil.which("vivado")
    missing = [tool for tool, found in (("vitis_hls", hls), ("vivado", vivado)) if not found]
    if missing:
        msg = (f"synthesis for {board.name} ({board.part}) needs {' and '.join(missing)} on the PATH "
               f"(AMD Vitis HLS and Vivado, with the device family of {board.part} installed): source the "
               "tools' settings64.sh, or copy this build folder to a machine that has them and run there: "
               f"{synthesis_command(out_dir)}")
        raise ToolMissingError(msg)
    logs = out_dir / LOG_DIR
    logs.mkdir(exist_ok=True)
    _run([*hls, BUILD_IP], out_dir, logs / "vitis_hls.log", "Vitis HLS")
    _run([vivado, "-mode", "batch", "-nojournal", "-nolog", "-source", BLOCK_DESIGN], out_dir,
         logs / "vivado.log", "Vivado")
    for suffix in (".bit", ".hwh"):
        if not (out_dir / f"{overlay}{suffix}").is_file():
            msg = f"Vivado finished but left no {overlay}{suffix} in {out_dir}: see {logs / 'vivado.log'}"
            raise BuildError(msg)
    log.info("overlay %s.bit / %s.hwh built in %s", overlay, overlay, out_dir)


def _hls_command() -> list[str] | None:
    """``vitis_hls -f``, or Vitis 2023.2+'s ``vitis-run --mode hls --tcl`` when only that is installed."""
    if shutil.which("vitis_hls"):
        return [shutil.which("vitis_hls"), "-f"]
    if shutil.which("vitis-run"):
        return [shutil.which("vitis-run"), "--mode", "hls", "--tcl"]
    return None


def _overlay_of(out_dir: Path, board: BoardSpec) -> str:
    path = out_dir / "manifest.json"
    if not path.is_file():
        return DEFAULT_OVERLAY
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        msg = f"{path}: not a readable build manifest ({err}); rerun hwflow build"
        raise BuildError(msg) from None
    if manifest.get("board") not in (None, board.name):
        msg = f"{path} is a build for board {manifest.get('board')!r}, not {board.name!r}: rebuild for {board.name}"
        raise BuildError(msg)
    return overlay_name(manifest)


def _run(command: list[str], cwd: Path, log_path: Path, label: str) -> None:
    log.info("running %s in %s (log: %s)", " ".join(command), cwd, log_path)
    with log_path.open("w") as out:
        code = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        msg = f"{label} failed (exit {code}); the end of {log_path}:\n{tail}"
        raise BuildError(msg)


def _shown(path: Path) -> str:
    """A template path for the generated comment: relative to the repository when inside it."""
    parts = path.parts
    return "/".join(parts[parts.index("boards"):]) if "boards" in parts else path.name


class _Manifest:
    """Typed reads of the manifest; every failure names the field."""

    def __init__(self, data: dict) -> None:
        if not isinstance(data, dict):
            msg = f"a build manifest is a JSON object, got {type(data).__name__}"
            raise BuildError(msg)
        self.data = data

    def get(self, *keys: str):
        value = self.data
        for i, key in enumerate(keys):
            if not isinstance(value, dict) or key not in value:
                msg = f"manifest field '{'.'.join(keys[:i + 1])}' is missing (contract 8): rerun hwflow build"
                raise BuildError(msg)
            value = value[key]
        return value

    def ident(self, *keys: str) -> str:
        value = self.get(*keys)
        if not isinstance(value, str) or not _IDENT.match(value):
            msg = f"manifest field '{'.'.join(keys)}' must be a Tcl/C identifier, got {value!r}"
            raise BuildError(msg)
        return value

    def number(self, key: str, default: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1000:
            msg = f"manifest field '{key}' must be a clock in MHz in (0, 1000], got {value!r}"
            raise BuildError(msg)
        return float(value)


def _check_target(m: _Manifest, board: BoardSpec) -> None:
    for key, expected in (("board", board.name), ("part", board.part)):
        value = m.data.get(key, expected)
        if value != expected:
            msg = (f"manifest field '{key}' is {value!r} but the board {board.name} has {expected!r}: "
                   f"rebuild for {board.name} (the HLS project is synthesized for one part)")
            raise BuildError(msg)
    interface = m.data.get("data", {}).get("interface", DataInterface.AXIS_DMA.value)
    if interface != DataInterface.AXIS_DMA.value:
        msg = f"manifest field 'data.interface' is {interface!r}; the block design is for 'axis-dma'"
        raise BuildError(msg)


def _memories(m: _Manifest, board: BoardSpec) -> list[Memory]:
    entries = m.get("weight_memories")
    if not isinstance(entries, list) or not entries:
        msg = "manifest field 'weight_memories' must be a non-empty list (contract 8)"
        raise BuildError(msg)
    if len(entries) > MAX_MEMORIES:
        msg = (f"{len(entries)} weight memories: the block design puts at most {MAX_MEMORIES} behind one AXI "
               "interconnect; merge arrays into fewer memories")
        raise BuildError(msg)
    first, size = board.master_window
    memories = []
    for i, entry in enumerate(entries):
        field = f"weight_memories[{i}]"
        e = _Manifest(entry if isinstance(entry, dict) else {})
        name, ctrl, port = (_entry_ident(e, field, key) for key in ("name", "ctrl", "port"))
        base, span, depth, lanes = (_entry_int(e, field, key) for key in ("base", "range", "depth", "lanes"))
        if span < MIN_RANGE or span & (span - 1):
            _bad(field, name, f"range {span} is not a power of two >= {MIN_RANGE} (Vivado's address ranges)")
        if base % span:
            _bad(field, name, f"base 0x{base:08X} is not aligned to its range 0x{span:X}")
        if not (first <= base and base + span <= first + size):
            _bad(field, name, f"0x{base:08X}..0x{base + span - 1:08X} is outside {board.axi_master}'s window "
                              f"0x{first:08X}..0x{first + size - 1:08X} on {board.name}")
        if lanes < 1 or 4 * -(-depth // lanes) > span:
            _bad(field, name, f"{depth} words in {lanes} lane(s) per 32-bit word do not fit its range {span}")
        memories.append(Memory(name, ctrl, port, base, span))
    _check_distinct(memories)
    return memories


def _check_distinct(memories: list[Memory]) -> None:
    for attr in ("name", "ctrl", "port"):
        values = [getattr(mem, attr) for mem in memories]
        doubled = sorted({v for v in values if values.count(v) > 1})
        if doubled:
            msg = f"manifest weight memories share the {attr} {doubled[0]!r}: each memory needs its own"
            raise BuildError(msg)
    ordered = sorted(memories, key=lambda mem: mem.base)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a.base + a.range > b.base:
            msg = (f"manifest weight memories {a.name} (0x{a.base:08X}, range 0x{a.range:X}) and {b.name} "
                   f"(0x{b.base:08X}) overlap")
            raise BuildError(msg)


def _entry_ident(e: _Manifest, field: str, key: str) -> str:
    value = e.data.get(key)
    if not isinstance(value, str) or not _IDENT.match(value):
        msg = f"manifest field '{field}.{key}' must be a Tcl/C identifier, got {value!r}"
        raise BuildError(msg)
    return value


def _entry_int(e: _Manifest, field: str, key: str) -> int:
    value = e.data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        msg = f"manifest field '{field}.{key}' must be a non-negative integer, got {value!r}"
        raise BuildError(msg)
    return value


def _bad(field: str, name: str, problem: str) -> NoReturn:
    msg = f"manifest {field} ({name}): {problem}"
    raise BuildError(msg)


def _hls_sources(m: _Manifest, out_dir: Path) -> tuple[str, list[str]]:
    hls = m.data.get("hls") or {}
    if not isinstance(hls, dict):
        msg = "manifest field 'hls' must be an object with 'dir' and 'sources'"
        raise BuildError(msg)
    hls_dir = hls.get("dir", "hls")
    if not isinstance(hls_dir, str) or not _SOURCE.match(hls_dir):
        msg = f"manifest field 'hls.dir' must be a relative folder without spaces, got {hls_dir!r}"
        raise BuildError(msg)
    sources = hls.get("sources")
    if sources is None:
        sources = sorted(p.relative_to(out_dir / hls_dir).as_posix()
                         for p in (out_dir / hls_dir / "firmware").glob("*.cpp"))
        if not sources:
            msg = (f"no C++ sources for Vitis HLS: the manifest has no 'hls.sources' and "
                   f"{out_dir / hls_dir / 'firmware'} has no .cpp files; write the HLS project first (hwflow build)")
            raise BuildError(msg)
    if not isinstance(sources, list) or not all(isinstance(s, str) and _SOURCE.match(s) for s in sources):
        msg = f"manifest field 'hls.sources' must be a list of relative paths without spaces, got {sources!r}"
        raise BuildError(msg)
    return hls_dir, sources
