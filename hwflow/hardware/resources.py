"""Will the design fit the board? An estimate of BRAM, DSP, LUT and FF before hours of synthesis.

This is an estimate, made to refuse clearly hopeless builds early and to say what dominates; what
Vitis HLS and Vivado report is the truth (``block_design.tcl`` writes ``utilization.rpt``). The
rules, each a deliberate simplification:

- **Weight memories** (contract 8): one BRAM per WeightImage array behind an AXI BRAM controller.
  Vivado sizes the block memory from the controller's address range, so a memory costs
  ``range / 4`` 32-bit words, i.e. ``range / 4096`` BRAM36 (one RAMB36 is 1024 x 32 bits), at
  least one per memory (the smallest range is 4 KiB). A memory stored with a constant
  (non-power-of-two) scale adds one DSP per lane for its divide-back multiply (contract 7).
- **Multipliers**: a layer with an ``n``-weight kernel has ``ceil(n / reuse_factor)`` multipliers
  (hls4ml's ``multiplier_limit``; a convolution reuses one kernel's multipliers for every pixel, a
  batch normalization has one per element in io_parallel, one per channel in io_stream). A product
  goes to a DSP when the weight is wider than ``DSP_WEIGHT_BITS`` = 10 bits; narrower products are
  built from LUTs (Vitis HLS does so, and hls4ml's quantized models rely on it), costing about
  ``LUT_PER_PRODUCT_BIT * weight_bits * input_bits`` LUTs. Every product also costs an adder and
  a pipeline register of the accumulator's width (the adder tree).
- **hls4ml's own arrays**: the accelerator reads the weights from the memories into hls4ml's
  weight arrays. With the Latency strategy (or reuse factor 1) those are registers (one FF per
  bit); with the Resource strategy a kernel becomes a RAM ``reuse_factor`` deep and
  ``ceil(n / reuse_factor) * bits`` wide. In io_parallel every layer output is a register array;
  in io_stream it is a FIFO as deep as the layer has pixels (a BRAM when large, shift-register
  LUTs when small), and a convolution keeps ``filter_height - 1`` lines in shift registers.
- **Fixed costs**: the AXI DMA, the interconnects, the BRAM controllers, the reset block and the
  accelerator's control interface, at rounded-up figures from AMD's product guides and typical
  Vivado reports for 32-bit data paths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwflow.emulator.program import Kind, LayerSpec, Program
from hwflow.errors import BuildError
from hwflow.hardware.boards import BoardSpec

DSP_WEIGHT_BITS = 10
"""Products with weights wider than this use a DSP slice; narrower ones use LUTs."""
LUT_PER_PRODUCT_BIT = 0.55
"""LUTs per bit-by-bit partial product of a LUT multiplier (an 8 x 8 product is about 35 LUTs)."""
LAYER_CONTROL = (150, 200)
"""(LUT, FF) of each layer's control: loop counters, pipeline control, handshakes."""
MEMORY_PORT = (60, 80)
"""(LUT, FF) of the accelerator's read logic per weight-memory port (address, unpacking of lanes)."""
BRAM_CTRL = (250, 300)
"""(LUT, FF) of one AXI BRAM controller in AXI4-Lite mode."""
DMA = (1800, 2600, 2.0)
"""(LUT, FF, BRAM36) of an AXI DMA in simple mode with 32-bit streams (incl. its data FIFOs)."""
CONTROL_INTERCONNECT = (500, 700, 120, 150)
"""(LUT, FF, LUT per slave, FF per slave) of the PS master's AXI interconnect with protocol conversion."""
DDR_INTERCONNECT = (1000, 1400)
"""(LUT, FF) of the interconnect joining the DMA's two masters to the PS's DDR port (with upsizing)."""
ACCELERATOR_CONTROL = (300, 400)
"""(LUT, FF) of the accelerator's s_axilite registers, block-level control and stream ports."""
RESET = (20, 40)
"""(LUT, FF) of the proc_sys_reset block."""
SMALL_RAM_BITS = 1024
"""Arrays and FIFOs up to this many bits, or at most 32 deep, go to LUTs (LUTRAM / shift registers)."""
BRAM_WORDS = 4096 // 4
"""32-bit words in one BRAM36 behind a BRAM controller."""


@dataclass(frozen=True)
class Usage:
    """What one part of the design is estimated to use."""

    what: str
    """The part: a weight memory, a layer's multipliers, the DMA..."""
    bram36: float = 0.0
    """36 Kb block RAMs (a RAMB18 is 0.5)."""
    dsp: int = 0
    """DSP slices."""
    lut: int = 0
    """LUTs (logic, LUTRAM and shift registers)."""
    ff: int = 0
    """Flip-flops."""


RESOURCES = ("bram36", "dsp", "lut", "ff")
_LABELS = {"bram36": "BRAM36", "dsp": "DSP", "lut": "LUT", "ff": "FF"}


@dataclass(frozen=True)
class ResourceEstimate:
    """The estimate of a whole design: its parts and their totals (an estimate, not a synthesis report)."""

    items: tuple[Usage, ...]
    """Every part, in design order (memories, layers, infrastructure)."""

    @property
    def bram36(self) -> float:
        return sum(u.bram36 for u in self.items)

    @property
    def dsp(self) -> int:
        return sum(u.dsp for u in self.items)

    @property
    def lut(self) -> int:
        return sum(u.lut for u in self.items)

    @property
    def ff(self) -> int:
        return sum(u.ff for u in self.items)

    def total(self, resource: str) -> float:
        return getattr(self, resource)

    def largest(self, resource: str, n: int = 3) -> list[Usage]:
        """The ``n`` parts using most of ``resource``."""
        ranked = sorted((u for u in self.items if getattr(u, resource) > 0), key=lambda u: -getattr(u, resource))
        return ranked[:n]

    def summary(self) -> str:
        return (f"estimated {_fmt(self.bram36)} BRAM36, {self.dsp} DSP, {self.lut} LUT, {self.ff} FF "
                "(an estimate: synthesis reports the truth)")

    def to_json(self) -> dict:
        return {"bram36": self.bram36, "dsp": self.dsp, "lut": self.lut, "ff": self.ff,
                "items": [{"what": u.what, "bram36": u.bram36, "dsp": u.dsp, "lut": u.lut, "ff": u.ff}
                          for u in self.items]}


def memory_range(depth: int, word_bits: int) -> int:
    """The address range (bytes) of a weight memory of ``depth`` words packed into 32-bit words:
    the smallest power of two >= 4 KiB holding ``ceil(depth / lanes)`` words (contract 8)."""
    lanes = max(1, 32 // word_bits)
    size = 4 * -(-depth // lanes)
    return max(4096, 1 << max(0, size - 1).bit_length())


def estimate(program: Program, image, options, memories: list[dict] | None = None) -> ResourceEstimate:
    """Estimate the resources of the design built from ``program`` and ``image`` with ``options``.

    ``image`` is the WeightImage, ``options`` the HlsOptions (io type, strategy, reuse factor),
    ``memories`` the manifest's ``weight_memories`` (contract 8; their ``range`` sizes the BRAMs).
    Without ``memories``, each image array is one memory sized by :func:`memory_range`.
    """
    reuse = int(options.reuse_factor)
    stream = options.io_type.value == "io_stream"
    entries = _memory_entries(image, memories)
    items = [_memory(m) for m in entries]
    for layer in program.layers[1:]:
        # A user's hls4ml configuration sets reuse factor and strategy per layer (the Program records them).
        layer_reuse = int(layer.attrs.get("reuse_factor", reuse))
        layer_resource = str(layer.attrs.get("strategy", options.strategy.value)).lower().startswith("resource")
        items.extend(_layer(program, image, layer, layer_reuse, stream, layer_resource and layer_reuse > 1))
    items.extend(_io(program, stream))
    items.extend(_infrastructure(len(entries)))
    return ResourceEstimate(tuple(items))


def check_fits(estimate: ResourceEstimate, board: BoardSpec, margin: float = 0.1) -> None:
    """Raise BuildError, with the numbers, if the estimate exceeds the board's resources.

    ``margin`` is the fraction of every resource kept free (routing needs room; the estimate is
    rough): with 0.1 a design may use 90 % of the part.
    """
    if not 0 <= margin < 1:
        msg = f"margin must be in [0, 1), got {margin}"
        raise BuildError(msg)
    over = []
    for resource in RESOURCES:
        capacity = getattr(board, resource)
        usable = math.floor(capacity * (1 - margin))
        need = estimate.total(resource)
        if need > usable:
            biggest = ", ".join(f"{u.what} {_fmt(getattr(u, resource))}" for u in estimate.largest(resource))
            over.append(f"needs {_fmt(need)} {_LABELS[resource]} of {capacity} on {board.name} ({usable} usable "
                        f"with a {margin:.0%} margin; largest: {biggest})")
    if over:
        msg = (f"the design does not fit {board.name} ({board.part}): {'; '.join(over)}. This is an estimate "
               "(synthesis reports the truth), but too far over to try. What to do: raise the reuse factor "
               "(--strategy Resource --reuse-factor N: fewer multipliers and weight registers), store fewer or "
               "narrower weight words (smaller layers, fewer weight bits), or use a bigger board (--board).")
        raise BuildError(msg)


def _fmt(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _memory_entries(image, memories: list[dict] | None) -> list[dict]:
    if memories is not None:
        return memories
    return [{"name": a.var, "layer": a.layer, "array": a.name, "depth": a.size, "word_bits": a.format.width,
             "range": memory_range(a.size, a.format.width), "scale": a.scale.to_json()} for a in image]


def _memory(entry: dict) -> Usage:
    size = entry.get("range")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        msg = f"weight memory {entry.get('name')!r}: 'range' must be a positive byte count, got {size!r}"
        raise BuildError(msg)
    words = size // 4
    label = f"weight memory {entry.get('layer', '?')}/{entry.get('array', entry.get('name', '?'))}"
    # A constant (non-power-of-two) scale is undone by one multiplier per lane while decoding (contract 7).
    divided = (entry.get("scale") or {}).get("constant") is not None
    lanes = max(1, 32 // int(entry.get("word_bits", 32))) if divided else 0
    return Usage(label, bram36=float(max(1, -(-words // BRAM_WORDS))), dsp=lanes,
                 lut=MEMORY_PORT[0] + BRAM_CTRL[0], ff=MEMORY_PORT[1] + BRAM_CTRL[1])


def _ram(depth: int, width: int) -> tuple[float, int]:
    """(BRAM36, LUT) of an array ``depth`` x ``width`` bits: LUTRAM when small, else RAMB18 halves."""
    if depth * width <= SMALL_RAM_BITS or depth <= 32:
        return 0.0, math.ceil(depth * width / 32)  # SRL32 / 32 x 1 LUTRAM per LUT
    per_half = {512: 36, 1024: 18, 2048: 9, 4096: 4, 8192: 2, 16384: 1}
    for max_depth, bits in per_half.items():
        if depth <= max_depth:
            return math.ceil(width / bits) / 2, 0
    return math.ceil(depth / 16384) * width / 2, 0


def _layer(program: Program, image, layer: LayerSpec, reuse: int, stream: bool, resource: bool) -> list[Usage]:
    """A layer's multipliers and weight arrays (if it has weights), and its logic and output storage."""
    x_bits = (program.layer(layer.inputs[0]) if layer.inputs else program.input).result.width
    elements = math.prod(layer.output_shape)
    channels = layer.output_shape[-1] if layer.output_shape else 1
    arrays = [image.get(layer.name, name) for name in layer.arrays if image.has(layer.name, name)]
    out = []
    if arrays:
        kernel = arrays[0]  # weight (dense, conv) or scale (batch normalization)
        products = kernel.size if layer.kind is not Kind.BATCHNORM else (channels if stream else elements)
        out.append(_multipliers(layer, -(-products // reuse), kernel.format.width, x_bits))
        bram, lut, ff = 0.0, 0, 0
        for array in arrays:
            if resource and array.name == "weight":
                bram, lut = _ram(reuse, -(-array.size // reuse) * array.format.width)
            else:
                ff += array.size * array.format.width
        out.append(Usage(f"{layer.name} weight arrays", bram36=bram, lut=lut, ff=ff))
    lut, ff = LAYER_CONTROL
    bram = 0.0
    if not arrays:  # activation, pooling, padding: a few LUTs per value handled in parallel
        lut += (channels if stream else elements) * max(1, layer.result.width // 2)
    if stream:  # the output FIFO, as deep as the layer has pixels; a convolution's line buffer
        fifo_bram, fifo_lut = _ram(max(1, elements // max(1, channels)), channels * layer.result.width)
        bram, lut = bram + fifo_bram, lut + fifo_lut
        if layer.kind in (Kind.CONV1D, Kind.CONV2D, Kind.DEPTHWISE1D, Kind.DEPTHWISE2D):  # depthwise: a line buffer too
            attrs = layer.attrs
            values = max(0, int(attrs.get("filt_height", 1)) - 1) * int(attrs.get("in_width", 1))
            values += max(0, int(attrs.get("filt_width", 1)) - 1)
            lut += math.ceil(values * int(attrs.get("n_chan", 1)) * x_bits / 32)
    else:  # the output array, in registers
        ff += elements * layer.result.width
    out.append(Usage(f"{layer.name} ({layer.kind.value})", bram36=bram, lut=lut, ff=ff))
    return out


def _multipliers(layer: LayerSpec, count: int, w_bits: int, x_bits: int) -> Usage:
    acc_bits = (layer.accum or layer.result).width
    dsp, lut = (count, 0) if w_bits > DSP_WEIGHT_BITS else (0, count * math.ceil(LUT_PER_PRODUCT_BIT * w_bits * x_bits))
    return Usage(f"{layer.name} multipliers ({count} of {w_bits}x{x_bits} bits)", dsp=dsp,
                 lut=lut + count * acc_bits, ff=count * acc_bits)


def _io(program: Program, stream: bool) -> list[Usage]:
    if stream:
        return []
    bits = math.prod(program.input.output_shape) * program.input.result.width
    bits += math.prod(program.output.output_shape) * program.output.result.width
    return [Usage("accelerator input/output buffers", ff=bits)]


def _infrastructure(n_memories: int) -> list[Usage]:
    base_lut, base_ff, slave_lut, slave_ff = CONTROL_INTERCONNECT
    slaves = 2 + n_memories
    return [
        Usage("AXI DMA", bram36=DMA[2], lut=DMA[0], ff=DMA[1]),
        Usage("PS AXI interconnect", lut=base_lut + slaves * slave_lut, ff=base_ff + slaves * slave_ff),
        Usage("DMA-to-DDR interconnect", lut=DDR_INTERCONNECT[0], ff=DDR_INTERCONNECT[1]),
        Usage("accelerator control and streams", lut=ACCELERATOR_CONTROL[0], ff=ACCELERATOR_CONTROL[1]),
        Usage("reset", lut=RESET[0], ff=RESET[1]),
    ]
