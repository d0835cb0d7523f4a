"""The build manifest (contract 8): where each weight array sits on the bus, and the data path.

The host trusts nothing it has not checked: the manifest is validated field by field, then against
the golden WeightImage (every memory is exactly one array: same depth, word width and first word
address), and ``PynqBoard`` checks it against the loaded overlay, all before any write. The
address arithmetic of contract 8 lives here, once:

    weight word i of a memory is at bus byte address ``base + 4 * (i // lanes)``, bits
    ``[word_bits * (i % lanes), word_bits * (i % lanes + 1))`` of that 32-bit bus word,
    with ``lanes = 32 // word_bits``; its image word address is ``first_word + i``.
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass
from pathlib import Path

from hwflow.errors import FormatError
from hwflow.fixed import FixedType, parse_type
from hwflow.image import WeightImage
from hwflow_host.board import ManifestError

FORMAT = 1
BUS_BITS = 32


@dataclass(frozen=True)
class WeightMemory:
    """One weight array in a BRAM behind an AXI BRAM controller."""

    name: str  # firmware variable (hls4ml's w2, b2...)
    layer: str
    array: str  # role in the layer: weight, bias, scale
    port: str  # the top-level port of the HLS design
    ctrl: str  # AXI BRAM controller instance in the block design
    base: int  # bus byte address of the controller
    range: int  # bytes mapped at base
    depth: int  # weight words held
    word_bits: int
    lanes: int  # weight words per 32-bit bus word (32 // word_bits)
    first_word: int  # image word address of word 0
    format: str
    scale: dict

    @property
    def key(self) -> str:
        return f"{self.layer}/{self.array}"

    @property
    def bus_words(self) -> int:
        """32-bit bus words the memory's weights occupy."""
        return -(-self.depth // self.lanes)

    @property
    def mask(self) -> int:
        return (1 << self.word_bits) - 1

    def locate(self, index: int) -> tuple[int, int]:
        """(byte offset from ``base``, bit shift in the bus word) of weight word ``index``."""
        return 4 * (index // self.lanes), self.word_bits * (index % self.lanes)


@dataclass(frozen=True)
class DataPath:
    """The AXI-Stream data path through an AXI DMA, and the accelerator's control registers."""

    interface: str
    dma: str  # AXI DMA instance
    word_bits: int  # bits per stream word (32)
    input_shape: tuple[int, ...]
    input_type: FixedType
    output_shape: tuple[int, ...]
    output_type: FixedType
    control: str  # "s_axilite"
    batch_register: str  # register set to the number of samples before starting

    @property
    def input_elements(self) -> int:
        return math.prod(self.input_shape)

    @property
    def output_elements(self) -> int:
        return math.prod(self.output_shape)


@dataclass(frozen=True)
class Manifest:
    model: str
    board: str
    part: str
    clock_mhz: float
    backend: str
    io_type: str
    top: str
    ip: str  # the accelerator's instance in the block design
    data: DataPath
    memories: tuple[WeightMemory, ...]  # sorted by first_word
    weight_image: str  # path of the WeightImage manifest, relative to the manifest's folder
    program: str
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts", [m.first_word for m in self.memories])

    @property
    def total_words(self) -> int:
        """One past the highest image word address held in a weight memory."""
        return max((m.first_word + m.depth for m in self.memories), default=0)

    def locate(self, addr: int) -> tuple[WeightMemory, int] | None:
        """The memory and word index holding image word ``addr``; None when no memory holds it."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i < 0:
            return None
        mem = self.memories[i]
        index = addr - mem.first_word
        return (mem, index) if index < mem.depth else None

    def memory(self, key: str) -> WeightMemory | None:
        return next((m for m in self.memories if m.key == key), None)

    def check_image(self, image: WeightImage) -> None:
        """Refuse a manifest whose memories are not exactly the image's arrays at the image's addresses."""
        for m in self.memories:
            where = f"{self.source}: weight memory {m.name} ({m.key})"
            if not image.has(m.layer, m.array):
                msg = f"{where}: the WeightImage has no such array (it has: {', '.join(a.key for a in image)})"
                raise ManifestError(msg)
            arr = image.get(m.layer, m.array)
            base = image.base(m.layer, m.array)
            for what, mine, theirs in (("depth", m.depth, arr.size), ("word_bits", m.word_bits, arr.format.width),
                                       ("first_word", m.first_word, base)):
                if mine != theirs:
                    msg = (f"{where}: {what} is {mine} but the WeightImage has {theirs}: the manifest and the "
                           "weight image come from different builds; rebuild, or deploy the matching pair")
                    raise ManifestError(msg)


def load_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        msg = f"{path}: cannot read the build manifest ({err}); it is written by `hwflow build`"
        raise ManifestError(msg) from None
    except (ValueError, RecursionError) as err:  # RecursionError: nested too deep to be a manifest
        msg = f"{path}: not valid JSON ({err})"
        raise ManifestError(msg) from None
    return parse_manifest(data, str(path))


def parse_manifest(data: object, where: str = "manifest.json") -> Manifest:
    r = _Fields(data, where, "")
    if r.integer("format") != FORMAT:
        r.fail("format", f"this host reads manifest format {FORMAT}; rebuild with a matching hwflow")
    d = _Fields(r.get("data", dict), where, "data.")
    interface = d.string("interface")
    if interface != "axis-dma":
        d.fail("interface", f"{interface!r} is not supported: the host drives an AXI-Stream data path through an "
               "AXI DMA ('axis-dma')")
    bus = d.integer("word_bits")
    if bus != BUS_BITS:
        d.fail("word_bits", f"stream words must be {BUS_BITS} bits, got {bus}")
    data_path = DataPath(interface, d.string("dma"), bus, d.shape("input_shape"), d.fixed("input_type"),
                         d.shape("output_shape"), d.fixed("output_type"), d.string("control"),
                         d.string("batch_register"))
    memories = [_memory(m, where, i) for i, m in enumerate(r.get("weight_memories", list))]
    _check_disjoint(memories, where)
    memories.sort(key=lambda m: m.first_word)
    return Manifest(r.string("model"), r.string("board"), r.string("part"), float(r.number("clock_mhz")),
                    r.string("backend"), r.string("io_type"), r.string("top"), r.string("ip"), data_path,
                    tuple(memories), r.string("weight_image"), r.string("program"), where)


def _memory(data: object, where: str, i: int) -> WeightMemory:
    f = _Fields(data, where, f"weight_memories[{i}].")
    word_bits = f.integer("word_bits", minimum=1)
    if word_bits > BUS_BITS:
        f.fail("word_bits", f"{word_bits}-bit words do not fit a {BUS_BITS}-bit bus word")
    lanes = f.integer("lanes", minimum=1)
    if lanes != BUS_BITS // word_bits:
        f.fail("lanes", f"{lanes} lanes of {word_bits}-bit words; contract 8 packs {BUS_BITS // word_bits} "
               f"({BUS_BITS} // word_bits)")
    base = f.integer("base", minimum=0)
    if base % 4:
        f.fail("base", f"{base:#x} is not 32-bit aligned")
    mem = WeightMemory(f.string("name"), f.string("layer"), f.string("array"), f.string("port"), f.string("ctrl"),
                       base, f.integer("range", minimum=4), f.integer("depth", minimum=1), word_bits, lanes,
                       f.integer("first_word", minimum=0), f.string("format"), f.get("scale", dict))
    if 4 * mem.bus_words > mem.range:
        f.fail("range", f"{mem.range} bytes cannot hold {mem.depth} words of {word_bits} bits "
               f"({4 * mem.bus_words} bytes needed)")
    return mem


def _check_disjoint(memories: list[WeightMemory], where: str) -> None:
    names = [m.name for m in memories]
    if len(set(names)) != len(names):
        msg = f"{where}: weight_memories: two memories are named alike ({', '.join(names)})"
        raise ManifestError(msg)
    keys = [m.key for m in memories]
    if len(set(keys)) != len(keys):
        msg = f"{where}: weight_memories: an array is listed twice ({', '.join(keys)})"
        raise ManifestError(msg)
    for label, span in (("bus ranges", lambda m: (m.base, m.base + m.range)),
                        ("image word ranges", lambda m: (m.first_word, m.first_word + m.depth))):
        spans = sorted((span(m), m.name) for m in memories)
        for ((_, end), a), ((start, _), b) in zip(spans, spans[1:], strict=False):
            if start < end:
                msg = f"{where}: weight_memories: the {label} of {a} and {b} overlap"
                raise ManifestError(msg)


class _Fields:
    """Reads one JSON object's fields, naming the file and the field in every error."""

    def __init__(self, data: object, where: str, prefix: str):
        if not isinstance(data, dict):
            msg = f"{where}: {prefix.rstrip('.') or 'the manifest'} must be a JSON object"
            raise ManifestError(msg)
        self.data, self.where, self.prefix = data, where, prefix

    def fail(self, key: str, problem: str):
        msg = f"{self.where}: {self.prefix}{key}: {problem}"
        raise ManifestError(msg)

    def get(self, key: str, kind: type):
        if key not in self.data:
            self.fail(key, "missing (required by manifest format 1)")
        value = self.data[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            self.fail(key, f"must be a {kind.__name__}, got {value!r}")
        return value

    def string(self, key: str) -> str:
        return self.get(key, str)

    def integer(self, key: str, minimum: int | None = None) -> int:
        value = self.get(key, int)
        if minimum is not None and value < minimum:
            self.fail(key, f"must be >= {minimum}, got {value}")
        return value

    def number(self, key: str) -> float:
        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, f"must be a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number) or number <= 0:
            self.fail(key, f"must be a positive finite number, got {value!r}")
        return number

    def shape(self, key: str) -> tuple[int, ...]:
        value = self.get(key, list)
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            self.fail(key, f"must be a list of positive integers, got {value!r}")
        return tuple(value)

    def fixed(self, key: str) -> FixedType:
        text = self.string(key)
        try:
            t = parse_type(text)
        except FormatError as err:
            self.fail(key, str(err))
        if t.width > BUS_BITS:
            self.fail(key, f"{t} is wider than a {BUS_BITS}-bit stream word")
        return t
