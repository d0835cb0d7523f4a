"""``build/manifest.json``: everything the board host needs to know about a built design (contract 8).

The host (``host/``, numpy and pynq only) reads this file and nothing else from the build: where
each weight memory sits on the bus, how its stored words are packed into 32-bit bus words, and
how the data path is driven. So the JSON layout is fixed by the contract and written exactly; this
module is the workstation's typed view of it (dataclasses, validation, address arithmetic).

A weight memory holds one WeightImage array (one hls4ml weight variable) in a BRAM behind an AXI
BRAM controller: weight word ``i`` sits at bus byte address ``base + 4 * (i // lanes)``, in bits
``[word_bits * (i % lanes), word_bits * (i % lanes + 1))`` of that 32-bit word, with
``lanes = 32 // word_bits``; its WeightImage word address is ``first_word + i``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from hwflow.errors import BuildError
from hwflow.image import Scale

FORMAT = 1
BUS_BITS = 32
BUS_BYTES = BUS_BITS // 8
MIN_RANGE = 4096
"""Smallest address range of an AXI BRAM controller (Vivado's address editor: 4 KiB)."""
MANIFEST = "manifest.json"

def lanes_for(word_bits: int) -> int:
    """Stored words per 32-bit bus word (the AXI BRAM controller is 32 bits wide)."""
    if not 1 <= word_bits <= BUS_BITS:
        msg = f"a weight word of {word_bits} bits does not fit a {BUS_BITS}-bit bus word; use <= {BUS_BITS} bits"
        raise BuildError(msg)
    return BUS_BITS // word_bits


def address_range(bus_words: int) -> int:
    """The controller's address range: a power of two, at least 4 KiB, holding ``bus_words`` words."""
    need = max(MIN_RANGE, bus_words * BUS_BYTES)
    return 1 << (need - 1).bit_length()


def assign_bases(ranges: list[int], first: int, window: tuple[int, int]) -> list[int]:
    """Base addresses in order, each aligned to its range, as Vivado's address editor places segments.

    Deterministic: the k-th memory starts at the first multiple of its range at or after the end of
    the (k-1)-th, the first at or after ``first`` (the board's ``weight_base``). ``window`` is the PS
    master's (start, size): every memory must fall inside it. The Vivado Tcl reads the same values
    from the manifest, so the two cannot disagree.
    """
    start, size = window
    bases, cursor = [], first
    for r in ranges:
        base = -(-cursor // r) * r
        bases.append(base)
        cursor = base + r
    if not start <= first or cursor > start + size:
        msg = (f"the weight memories need {cursor - first} bytes of address space from {first:#x}, beyond "
               f"the PS master window {start:#x}..{start + size - 1:#x}; put fewer arrays in BRAM (--min-words)")
        raise BuildError(msg)
    return bases


@dataclass(frozen=True)
class WeightMemory:
    """One weight memory: a WeightImage array in a BRAM behind an AXI BRAM controller."""

    name: str
    """hls4ml's variable name (``w2``, ``b7``...): names the memory in the HLS code."""
    layer: str
    """hls4ml layer name (the WeightImage array's layer)."""
    array: str
    """Role of the array in the layer: ``weight``, ``bias`` or ``scale``."""
    port: str
    """The BRAM port of ``hwflow_top`` (``<name>_mem``)."""
    ctrl: str
    """Instance name of the AXI BRAM controller in the block design (``axi_bram_ctrl_<name>``)."""
    base: int
    """Bus byte address of the first bus word."""
    range: int
    """Bytes of address space of the controller (power of two, >= 4096)."""
    depth: int
    """Stored words in the memory (= the array's size)."""
    word_bits: int
    """Bits per stored word."""
    lanes: int
    """Stored words per 32-bit bus word (``32 // word_bits``)."""
    first_word: int
    """WeightImage word address of stored word 0."""
    format: str
    """Storage format of the words (``fixed<8,1,TRN,WRAP>``)."""
    scale: Scale = field(default_factory=Scale)
    """The weight-scaling constant the divide-back undoes."""

    @property
    def key(self) -> str:
        return f"{self.layer}/{self.array}"

    @property
    def bus_words(self) -> int:
        """32-bit words the memory occupies (the last may have unused lanes)."""
        return -(-self.depth // self.lanes)

    def holds_word(self, address: int) -> bool:
        return self.first_word <= address < self.first_word + self.depth

    def holds_bus(self, address: int) -> bool:
        return self.base <= address < self.base + self.range

    def bus_location(self, index: int) -> tuple[int, int]:
        """(bus byte address, lowest bit) of stored word ``index``."""
        return self.base + BUS_BYTES * (index // self.lanes), self.word_bits * (index % self.lanes)

    def to_json(self) -> dict:
        return {"name": self.name, "layer": self.layer, "array": self.array, "port": self.port,
                "ctrl": self.ctrl, "base": self.base, "range": self.range, "depth": self.depth,
                "word_bits": self.word_bits, "lanes": self.lanes, "first_word": self.first_word,
                "format": self.format, "scale": self.scale.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> WeightMemory:
        return cls(str(d["name"]), str(d["layer"]), str(d["array"]), str(d["port"]), str(d["ctrl"]),
                   _int(d["base"]), _int(d["range"]), _int(d["depth"]), _int(d["word_bits"]),
                   _int(d["lanes"]), _int(d["first_word"]), str(d["format"]), Scale.from_json(d["scale"]))


@dataclass(frozen=True)
class DataPath:
    """How samples go in and logits come out: AXI-Stream through an AXI DMA, one value per 32-bit word."""

    input_shape: tuple[int, ...]
    """Shape of one input sample (without batch); elements are sent in C order."""
    input_type: str
    """Fixed-point type of the input elements: each stream word is one input code, sign-extended."""
    output_shape: tuple[int, ...]
    """Shape of one output (the logits)."""
    output_type: str
    """Fixed-point type of the logits: each stream word is one output code, sign-extended."""
    interface: str = "axis-dma"
    dma: str = "axi_dma_0"
    word_bits: int = BUS_BITS
    control: str = "s_axilite"
    batch_register: str = "n_samples"

    def to_json(self) -> dict:
        return {"interface": self.interface, "dma": self.dma, "word_bits": self.word_bits,
                "input_shape": list(self.input_shape), "input_type": self.input_type,
                "output_shape": list(self.output_shape), "output_type": self.output_type,
                "control": self.control, "batch_register": self.batch_register}

    @classmethod
    def from_json(cls, d: dict) -> DataPath:
        return cls(tuple(_int(v) for v in d["input_shape"]), str(d["input_type"]),
                   tuple(_int(v) for v in d["output_shape"]), str(d["output_type"]), str(d["interface"]),
                   str(d["dma"]), _int(d["word_bits"]), str(d["control"]), str(d["batch_register"]))


@dataclass(frozen=True)
class Manifest:
    """The contents of ``manifest.json`` (contract 8)."""

    model: str
    board: str
    part: str
    clock_mhz: float
    backend: str
    io_type: str
    data: DataPath
    weight_memories: tuple[WeightMemory, ...]
    top: str = "hwflow_top"
    ip: str = "hwflow_top_0"
    weight_image: str = "weight_image.json"
    program: str = "program.json"
    format: int = FORMAT

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse a manifest whose memories overlap, are misaligned or do not pack as declared."""
        words, bus = [], []
        names = [m.name for m in self.weight_memories]
        if len(set(names)) != len(names):
            _fail(f"weight memory names repeat: {names}")
        for m in self.weight_memories:
            if m.depth < 1 or m.word_bits < 1 or m.lanes != lanes_for(m.word_bits):
                _fail(f"memory {m.name}: depth {m.depth}, word_bits {m.word_bits}, lanes {m.lanes} "
                           f"(lanes must be 32 // word_bits)")
            if m.range != address_range(m.range // BUS_BYTES) or m.range < m.bus_words * BUS_BYTES:
                _fail(f"memory {m.name}: range {m.range} is not a power of two >= 4096 holding "
                           f"{m.bus_words} bus words")
            if m.base % m.range or m.first_word < 0:
                _fail(f"memory {m.name}: base {m.base:#x} is not aligned to its range {m.range:#x}")
            words.append((m.first_word, m.first_word + m.depth, m.name))
            bus.append((m.base, m.base + m.range, m.name))
        for spans, what in ((words, "word addresses"), (bus, "bus addresses")):
            spans = sorted(spans)
            for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
                if start < end:
                    _fail(f"memories {a} and {b} overlap in {what}")

    # --- lookups ------------------------------------------------------------------------------------

    def memory(self, name: str) -> WeightMemory:
        for m in self.weight_memories:
            if m.name == name or m.key == name:
                return m
        msg = f"no weight memory {name!r}; the build has: {', '.join(m.name for m in self.weight_memories)}"
        raise BuildError(msg)

    def memory_at_word(self, address: int) -> tuple[WeightMemory, int] | None:
        """The memory and word index holding WeightImage word ``address`` (None: a constant or nothing)."""
        for m in self.weight_memories:
            if m.holds_word(address):
                return m, address - m.first_word
        return None

    def memory_at_bus(self, address: int) -> WeightMemory | None:
        for m in self.weight_memories:
            if m.holds_bus(address):
                return m
        return None

    @property
    def keys(self) -> tuple[str, ...]:
        """``layer/array`` of every memory, in memory order (= image order)."""
        return tuple(m.key for m in self.weight_memories)

    # --- JSON ---------------------------------------------------------------------------------------

    def to_json(self) -> dict:
        return {"format": self.format, "model": self.model, "board": self.board, "part": self.part,
                "clock_mhz": float(self.clock_mhz), "backend": self.backend, "io_type": self.io_type,
                "top": self.top, "ip": self.ip, "data": self.data.to_json(),
                "weight_memories": [m.to_json() for m in self.weight_memories],
                "weight_image": self.weight_image, "program": self.program}

    @classmethod
    def from_json(cls, d: dict) -> Manifest:
        if not isinstance(d, dict):
            _fail(f"expected a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            _fail(f"format {d.get('format')!r}, expected {FORMAT}")
        return cls(str(d["model"]), str(d["board"]), str(d["part"]), float(d["clock_mhz"]), str(d["backend"]),
                   str(d["io_type"]), DataPath.from_json(d["data"]),
                   tuple(WeightMemory.from_json(m) for m in d["weight_memories"]), str(d["top"]), str(d["ip"]),
                   str(d["weight_image"]), str(d["program"]), int(d["format"]))

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Read ``manifest.json`` (or the build directory holding it), with an error naming what is wrong."""
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST
        if not path.is_file():
            msg = f"{path} does not exist: run 'hwflow build MODEL --board BOARD --out DIR' first"
            raise BuildError(msg)
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as err:
            msg = f"{path}: malformed build manifest ({type(err).__name__}: {err}); rebuild with 'hwflow build'"
            raise BuildError(msg) from None


def _int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"expected an integer, got {value!r}"
        raise TypeError(msg)
    return value


def _fail(text: str) -> NoReturn:
    msg = f"build manifest: {text}"
    raise BuildError(msg)
