"""``CSimBoard``: the generated HLS design, compiled with g++, driven as a Board (contract 3).

This is the synthesizable C++ of ``hwflow build`` — hls4ml's network behind hwflow's
``hwflow_top`` — run as software. Its BRAMs are arrays of 32-bit bus words; the host's port (the
AXI BRAM controllers) is ``write32`` / ``read32`` at the manifest's bus addresses, and
``write_word`` / ``read_word`` address one stored word by its WeightImage word address, the C++
side doing the lane read-modify-write on the bus word as the host driver does over the bus. Faults
are injected exactly as the host will inject them: by writing the faulty words through that port.
``run`` streams input codes in and output codes out through ``hwflow_top`` like the AXI DMA.

``check_board`` compares any Board with the emulator, fault-free and under fault maps; ``check_build``
does it for a build folder.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwflow.emulator import Emulator, Program
from hwflow.errors import BoardError, BuildError, EmulatorError, FormatError, ToolMissingError
from hwflow.faults import BitFlip, FaultMap, StuckAt
from hwflow.fixed import parse_type, quantize_float
from hwflow.hardware.manifest import BUS_BYTES, Manifest, WeightMemory
from hwflow.hardware.project import HLS_SUBDIR, load_build
from hwflow.image import WeightImage

log = logging.getLogger(__name__)

CXX = "g++"
CXXFLAGS = ("-O1", "-std=c++14", "-fPIC", "-fno-gnu-unique", "-w")
"""-O1: compiling hls4ml's templates dominates; -O2 runs the few samples of a check no faster overall."""
LIBRARY_PREFIX = "hwflow_csim-"
CHUNK = 512  # samples per hwflow_top call (the host's DMA buffer plays the same role)

_STATUS = {
    -1: "outside the weight memories",
    -2: "wider than the word",
    -3: "not 32-bit aligned",
    -4: "hwflow_top wrote fewer output words than expected",
    -5: "hwflow_top wrote more output words than expected or left input words unread",
    -6: "TLAST was not set on exactly the last output word",
}
_LOADED: set[str] = set()  # library files open in this process (a second board gets its own copy)


def compile_library(build_dir: str | Path) -> Path:
    """The C simulation of a build as a shared library; compiled once per content of its sources."""
    hls = Path(build_dir) / HLS_SUBDIR
    sources = sorted((hls / "firmware").glob("*.cpp")) + [hls / "hwflow_csim_bridge.cpp"]
    if not all(s.is_file() for s in sources) or len(sources) < 3:
        msg = f"{hls} is not a generated hwflow project (sources missing); run 'hwflow build' first"
        raise BuildError(msg)
    digest = hashlib.sha256(" ".join(CXXFLAGS).encode())
    for path in sources + sorted((hls / "firmware").glob("*.h")) + sorted((hls / "firmware" / "weights").glob("*.h")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    library = hls / f"{LIBRARY_PREFIX}{digest.hexdigest()[:16]}.so"
    if library.is_file():
        return library
    if shutil.which(CXX) is None:
        msg = "g++ is not installed: run 'make deps' (or 'sudo apt-get install g++') to build the C simulation"
        raise ToolMissingError(msg)
    firmware = hls / "firmware"
    flags = [*CXXFLAGS, f"-I{hls / 'csim'}", f"-I{firmware}", f"-I{firmware / 'ap_types'}"]
    log.info("compiling the C simulation of %s (g++)", build_dir)
    with tempfile.TemporaryDirectory(prefix="hwflow-csim-") as tmp:
        objects = [Path(tmp) / f"{k}.o" for k in range(len(sources))]
        jobs = [subprocess.Popen([CXX, *flags, "-c", str(src), "-o", str(obj)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)  # one process per file: they run in parallel
                for src, obj in zip(sources, objects, strict=True)]
        errors = [job.communicate()[1] for job in jobs]
        failed = [(src, err) for src, err, job in zip(sources, errors, jobs, strict=True) if job.returncode]
        if not failed:
            link = subprocess.run([CXX, "-shared", *map(str, objects), "-o", str(library.with_suffix(".tmp"))],
                                  capture_output=True, text=True, check=False)
            failed = [(library, link.stderr)] if link.returncode else []
    if failed:
        src, err = failed[0]
        tail = "\n".join(err.strip().splitlines()[-25:])
        msg = f"g++ could not compile {src.name} of the C simulation in {hls}:\n{tail}"
        raise BuildError(msg)
    library.with_suffix(".tmp").replace(library)
    return library


def _open(path: Path) -> ctypes.CDLL:
    real = str(Path(path).resolve())
    if real in _LOADED:  # dlopen would hand back the same library, and so the same BRAM contents
        copy = Path(tempfile.mkdtemp(prefix="hwflow-csim-")) / Path(real).name
        shutil.copyfile(real, copy)
        real = str(copy)
    lib = ctypes.CDLL(real)
    _LOADED.add(real)
    u64, p64 = ctypes.c_uint64, ctypes.POINTER(ctypes.c_uint64)
    for fn, args in (("hwflow_write32", [u64, u64]), ("hwflow_read32", [u64, p64]),
                     ("hwflow_write_word", [u64, u64]), ("hwflow_read_word", [u64, p64]),
                     ("hwflow_run", [ctypes.c_void_p, u64, ctypes.c_void_p]),
                     ("hwflow_n_in", []), ("hwflow_n_out", []), ("hwflow_n_memories", [])):
        getattr(lib, fn).argtypes = args
        getattr(lib, fn).restype = ctypes.c_int
    return lib


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 0:
        msg = f"a {what} is a non-negative integer, got {value!r}"
        raise BoardError(msg)
    return int(value)


class CSimBoard:
    """A build's C simulation as a Board. Starts with the golden WeightImage written to its BRAMs."""

    name = "csim-board"

    def __init__(self, build_dir: str | Path, library: str | Path | None = None):
        build = load_build(build_dir)
        self.build_dir = Path(build_dir)
        self.manifest: Manifest = build.manifest
        self.program: Program = build.program
        self.image: WeightImage = build.image
        self._lib = _open(Path(library) if library else compile_library(build_dir))
        n_in, n_out = self._lib.hwflow_n_in(), self._lib.hwflow_n_out()
        data = self.manifest.data
        if (n_in, n_out, self._lib.hwflow_n_memories()) != (
                int(np.prod(data.input_shape)), int(np.prod(data.output_shape)), len(self.manifest.weight_memories)):
            msg = f"the C simulation library does not match {self.build_dir}/manifest.json: rebuild"
            raise BuildError(msg)
        self._in_type, self._out_type = parse_type(data.input_type), parse_type(data.output_type)
        self.load_image(self.image)

    @property
    def total_words(self) -> int:
        """Size of the WeightImage address space (words of hls4ml constants are in it but refused)."""
        return self.image.total_words

    # --- contract 3 ---------------------------------------------------------------------------------

    def write_word(self, addr: int, value: int) -> None:
        addr, value = _int(addr, "weight address"), _int(value, "word value")
        self._check(self._lib.hwflow_write_word(addr, value), addr, value)

    def read_word(self, addr: int) -> int:
        addr = _int(addr, "weight address")
        out = ctypes.c_uint64()
        self._check(self._lib.hwflow_read_word(addr, ctypes.byref(out)), addr)
        return int(out.value)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Output codes (int64, (N, *output_shape)) for float inputs, through hwflow_top."""
        data = self.manifest.data
        x = np.asarray(x)
        shape = tuple(data.input_shape)
        if x.ndim < 1 or (x.shape[1:] != shape and int(np.prod(x.shape[1:])) != int(np.prod(shape))):
            msg = f"inputs of shape {x.shape[1:]} per sample; the design takes {shape}"
            raise BoardError(msg)
        n = len(x)
        codes = quantize_float(np.asarray(x, dtype=np.float32).reshape(n, -1), self._in_type).astype(np.int32)
        n_out = int(np.prod(data.output_shape))
        out = np.zeros((n, n_out), dtype=np.int32)
        for start in range(0, n, CHUNK):
            chunk_in = np.ascontiguousarray(codes[start : start + CHUNK])
            chunk_out = np.zeros((len(chunk_in), n_out), dtype=np.int32)
            status = self._lib.hwflow_run(chunk_in.ctypes.data, len(chunk_in), chunk_out.ctypes.data)
            if status:
                msg = f"the C simulation of hwflow_top failed: {_STATUS.get(status, f'status {status}')}"
                raise BoardError(msg)
            out[start : start + len(chunk_in)] = chunk_out
        result = out.astype(np.int64) if self._out_type.signed else out.view(np.uint32).astype(np.int64)
        return result.reshape((n,) + tuple(data.output_shape))

    # --- the bus ------------------------------------------------------------------------------------

    def write32(self, address: int, value: int) -> None:
        """Write one 32-bit bus word at a bus byte address, as the host's AXI BRAM controller does."""
        address, value = _int(address, "bus address"), _int(value, "bus word")
        status = self._lib.hwflow_write32(address, value)
        if status:
            raise BoardError(self._bus_message(address, status, value))

    def read32(self, address: int) -> int:
        address = _int(address, "bus address")
        out = ctypes.c_uint64()
        status = self._lib.hwflow_read32(address, ctypes.byref(out))
        if status:
            raise BoardError(self._bus_message(address, status))
        return int(out.value)

    def load_image(self, image: WeightImage) -> None:
        """Write every weight memory from ``image`` (golden or not), 32-bit bus word by bus word."""
        for m in self.manifest.weight_memories:
            for offset, word in enumerate(bus_words(m, image)):
                self.write32(m.base + BUS_BYTES * offset, int(word))

    # --- messages -----------------------------------------------------------------------------------

    def _check(self, status: int, addr: int, value: int | None = None) -> None:
        if status == 0:
            return
        if status == -2:
            m, i = self.manifest.memory_at_word(addr)
            msg = (f"value {value:#x} does not fit the {m.word_bits}-bit word at address {addr} ({m.key}[{i}]): "
                   "a stored word is the unsigned bit pattern")
            raise BoardError(msg)
        held = ", ".join(f"{m.key} {m.first_word}..{m.first_word + m.depth - 1}" for m in self.manifest.weight_memories)
        try:
            array, index = self.image.locate(addr)
        except FormatError:
            msg = (f"address {addr} is outside the weight memories: the image has word addresses "
                   f"0..{self.total_words - 1}, and the memories hold {held}")
            raise BoardError(msg) from None
        msg = (f"address {addr} ({array.key}[{index}]) is outside the weight memories: {array.key} is an hls4ml "
               f"constant in this build (rebuild with a lower --min-words to make it writable); the memories "
               f"hold {held}")
        raise BoardError(msg)

    def _bus_message(self, address: int, status: int, value: int | None = None) -> str:
        if status == -2:
            return f"bus word {value:#x} at {address:#x} is wider than 32 bits"
        spans = ", ".join(f"{m.name} {m.base:#x}..{m.base + BUS_BYTES * m.bus_words - 1:#x}"
                          for m in self.manifest.weight_memories)
        return f"bus address {address:#x} is {_STATUS.get(status, f'refused ({status})')} ({spans})"


def bus_words(memory: WeightMemory, image: WeightImage) -> np.ndarray:
    """The 32-bit bus words of one memory holding ``image``'s array, packed as contract 8 says."""
    words = image.get(memory.layer, memory.array).words
    if words.size != memory.depth:
        msg = f"{memory.key} has {words.size} words in the image but {memory.depth} in the manifest"
        raise BoardError(msg)
    padded = np.zeros(memory.bus_words * memory.lanes, dtype=np.uint64)
    padded[: words.size] = words
    shifts = (np.arange(memory.lanes, dtype=np.uint64) * np.uint64(memory.word_bits))
    return np.bitwise_or.reduce(padded.reshape(-1, memory.lanes) << shifts, axis=1)


# --- comparing a board with the emulator ---------------------------------------------------------------


def board_image(image: WeightImage, manifest: Manifest) -> WeightImage:
    """The arrays a build holds in its weight memories: sample fault maps from this to inject them all.

    (Its keys are the full image's, so a map sampled from it applies to the full image.)
    """
    return WeightImage(tuple(image.get(m.layer, m.array) for m in manifest.weight_memories))


def changed_words(golden: WeightImage, faulty: WeightImage) -> tuple[np.ndarray, np.ndarray]:
    """Word addresses (int64) and new values (uint64) of the words ``faulty`` changes in ``golden``."""
    addrs, values = [], []
    for a, b in zip(golden, faulty, strict=True):
        if a.key != b.key:
            msg = f"images differ in layout ({a.key} vs {b.key})"
            raise BoardError(msg)
        idx = np.flatnonzero(a.words != b.words)
        addrs.append(golden.base(a.layer, a.name) + idx)
        values.append(b.words[idx])
    if not addrs:
        return np.zeros(0, np.int64), np.zeros(0, np.uint64)
    return np.concatenate(addrs).astype(np.int64), np.concatenate(values).astype(np.uint64)


def sample_fault_maps(image: WeightImage, count: int, seed: int = 0, faults: int = 8) -> list[FaultMap]:
    """``count`` maps of ``faults`` faults each, alternating bit flips and stuck-at (mixed 0/1).

    Seeded per map (``SeedSequence(seed).spawn``), so the same arguments give the same maps.
    """
    rate = min(1.0, faults / max(1, image.total_bits))
    models = (BitFlip(rate, mode="exact"), StuckAt(rate, value="mixed", mode="exact"))
    seeds = np.random.SeedSequence(seed).spawn(count)
    return [models[k % 2].sample(image, np.random.default_rng(s)) for k, s in enumerate(seeds)]


@dataclass(frozen=True)
class BoardCheck:
    """A board against the emulator: fault-free, then under each fault map."""

    samples: int
    maps: int
    """Fault maps run (after the fault-free run)."""
    words_written: int
    """Faulty words written through the board's port (scrubbing not counted)."""
    mismatches: tuple[tuple[int, int], ...]
    """(fault map index, or -1 for the fault-free run; output words that differ) per failing run."""

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def summary(self) -> str:
        line = (f"board check: {self.samples} samples, fault-free + {self.maps} fault maps "
                f"({self.words_written} faulty words written), ")
        if self.ok:
            return line + "all outputs equal the emulator's"
        runs = ", ".join(("fault-free" if k < 0 else f"map {k}") + f" ({n} words)" for k, n in self.mismatches[:5])
        return line + f"{len(self.mismatches)} runs differ from the emulator: {runs}"


def check_board(board, program: Program, image: WeightImage, x: np.ndarray, fault_maps: list[FaultMap]) -> BoardCheck:
    """Run ``board`` and the emulator on ``x``, fault-free and under each map; count differing outputs.

    Faults go in the way the host injects them: the changed words are written through
    ``board.write_word`` (and read back), the board runs, and the golden words are written back
    before the next map. ``board`` must hold ``image`` when called; it holds it again on return.
    """
    emulator = Emulator(program, image)
    mismatches, written = [], 0

    def compare(k: int, expected: np.ndarray) -> None:
        got = np.asarray(board.run(x), dtype=np.int64).reshape(expected.shape)
        differ = int(np.count_nonzero(got != expected))
        if differ:
            mismatches.append((k, differ))

    try:
        compare(-1, emulator.run(x))
    except EmulatorError as err:
        msg = f"the emulator cannot run these inputs: {err}"
        raise BoardError(msg) from None
    for k, fmap in enumerate(fault_maps):
        faulty = fmap.apply(image)
        addrs, values = changed_words(image, faulty)
        golden = np.concatenate([a.words for a in image])[addrs].tolist() if addrs.size else []
        done = 0
        try:
            for a, v in zip(addrs.tolist(), values.tolist(), strict=True):
                board.write_word(a, v)
                done += 1
                if board.read_word(a) != v:
                    msg = f"word {a} reads back {board.read_word(a):#x} after writing {v:#x}"
                    raise BoardError(msg)
            written += done
            compare(k, emulator.with_arrays(faulty, fmap.keys_touched()).run(x))
        finally:  # scrub: the golden words back, whatever happened
            for a, v in zip(addrs.tolist()[:done], golden[:done], strict=True):
                board.write_word(a, v)
    return BoardCheck(len(x), len(fault_maps), written, tuple(mismatches))


def check_build(build_dir: str | Path, x: np.ndarray, fault_maps: int = 50, seed: int = 0) -> BoardCheck:
    """A build's C simulation against the emulator: fault-free, then ``fault_maps`` seeded maps (bit
    flips and stuck-at) over the arrays held in its weight memories. Compiles on first use."""
    board = CSimBoard(build_dir)
    maps = sample_fault_maps(board_image(board.image, board.manifest), fault_maps, seed=seed)
    return check_board(board, board.program, board.image, x, maps)
