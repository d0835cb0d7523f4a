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
  in io_stream it is a FIFO one pixel's channels wide and as deep as the layer has pixels
  (hls4ml's default) or the build's ``fifo_depth``: BRAM when large, else one shift-register LUT
  (SRL32) per bit of width and 32 words; a convolution keeps ``filter_height - 1`` lines in shift
  registers.
- **Every layer kind has a rule** (``RULES``; a kind without one is refused, naming it: nothing is
  silently free). "Values computed at once" are one pixel's channels in io_stream, every element in
  io_parallel. Depthwise convolutions have one multiplier per channel and tap over the reuse factor;
  batch normalization and ApplyAlpha one scale product per value at once. Binary and ternary
  products (``product`` attribute: XNOR, conditional negate) and po2 ones (a shift by the exponent)
  use LUTs, no DSP. Merges: an adder or comparator per value at once (no multiplier) except
  Multiply, a product per value. Pooling: ``window - 1`` adders or comparators in the accumulator's
  width per output in io_parallel, one such reduction pipelined over the channels in io_stream, and
  an average's divide by a constant (a shift for a power-of-two window).
  Table activations (sigmoid, tanh, softplus, softsign, ELU) and softmax: each table is a ROM of
  ``table_size`` x ``table_t`` bits (from the layer's attributes; LUTRAM when small), one copy per two
  reads at once; softmax multiplies each exp by the inverse. PReLU: its ``param`` array in registers
  and a product per value. BatchNormalizationQuantizedTanh: comparators against its thresholds.
  Padding, cropping, reshape, resize and concatenation move words (muxes).
- **Branches in io_stream**: a layer read by ``k`` layers is copied by hls4ml's Clone into ``k`` more
  FIFOs as deep as the layer has pixels (a residual shortcut's copy).
- **Fixed costs**: the AXI DMA, the interconnects, the BRAM controllers, the reset block and the
  accelerator's control interface, at rounded-up figures from AMD's product guides and typical
  Vivado reports for 32-bit data paths.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from hwflow.emulator.program import Kind, LayerSpec, Program
from hwflow.errors import BuildError
from hwflow.fixed import parse_type
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


def estimate(program: Program, image, options, memories: list[dict] | None = None,
             fifo_depth: int | None = None) -> ResourceEstimate:
    """Estimate the resources of the design built from ``program`` and ``image`` with ``options``.

    ``image`` is the WeightImage, ``options`` the HlsOptions (io type, strategy, reuse factor),
    ``memories`` the manifest's ``weight_memories`` (contract 8; their ``range`` sizes the BRAMs).
    Without ``memories``, each image array is one memory sized by :func:`memory_range`. ``fifo_depth``
    (io_stream): the depth the build gives the layers' output FIFOs (``BuildOptions.fifo_depth``; None:
    hls4ml's, as deep as the layer has pixels); a branch's copies keep hls4ml's depth.
    """
    reuse = int(options.reuse_factor)
    stream = options.io_type.value == "io_stream"
    entries = _memory_entries(image, memories)
    items = [_memory(m) for m in entries]
    for layer in program.layers[1:]:
        # A user's hls4ml configuration sets reuse factor and strategy per layer (the Program records them).
        layer_reuse = int(layer.attrs.get("reuse_factor", reuse))
        layer_resource = str(layer.attrs.get("strategy", options.strategy.value)).lower().startswith("resource")
        items.extend(_layer(program, image, layer, layer_reuse, stream, layer_resource and layer_reuse > 1,
                            fifo_depth))
    items.extend(_copies(program, stream))
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
        return 0.0, width * math.ceil(depth / 32)  # one SRL32 / 32 x 1 LUTRAM per bit of width and 32 words
    per_half = {512: 36, 1024: 18, 2048: 9, 4096: 4, 8192: 2, 16384: 1}
    for max_depth, bits in per_half.items():
        if depth <= max_depth:
            return math.ceil(width / bits) / 2, 0
    return math.ceil(depth / 16384) * width / 2, 0


@dataclass(frozen=True)
class _Design:
    """What every layer rule needs besides its layer: the program, the image, the io type and strategy."""

    program: Program
    image: object
    stream: bool
    fifo_depth: int | None = None

    def input_bits(self, layer: LayerSpec, k: int = 0) -> int:
        source = self.program.layer(layer.inputs[k]) if layer.inputs else self.program.input
        return source.result.width

    def lanes(self, layer: LayerSpec) -> int:
        """Values computed at once: one pixel's channels in io_stream, every element in io_parallel."""
        elements = math.prod(layer.output_shape)
        return max(1, layer.output_shape[-1] if self.stream and layer.output_shape else elements)


Rule = Callable[[_Design, LayerSpec, int, bool], list[Usage]]
"""A kind's rule: (design, layer, reuse factor, Resource strategy with reuse > 1) -> the layer's parts."""


def _layer(program: Program, image, layer: LayerSpec, reuse: int, stream: bool, resource: bool,
           fifo_depth: int | None = None) -> list[Usage]:
    """A layer's parts by its kind's rule (``RULES``); a kind without a rule is refused, never costed as zero."""
    return rule_for(layer)(_Design(program, image, stream, fifo_depth), layer, reuse, resource)


def rule_for(layer: LayerSpec) -> Rule:
    """The rule of ``layer``'s kind, or a BuildError naming the layer and the kind."""
    rule = RULES.get(layer.kind)
    if rule is None:
        msg = (f"layer {layer.name!r}: the resource estimate has no rule for {layer.kind.value} layers, and a layer "
               "must not be costed as free; add one to hwflow.hardware.resources.RULES")
        raise BuildError(msg)
    return rule


def _arrays(design: _Design, layer: LayerSpec) -> list:
    return [design.image.get(layer.name, name) for name in layer.arrays if design.image.has(layer.name, name)]


def _body(design: _Design, layer: LayerSpec, lut: int = 0, ff: int = 0, bram: float = 0.0) -> Usage:
    """The layer's own logic (``lut``/``ff`` beyond its control) and its output storage: a FIFO as deep as
    the layer has pixels in io_stream (hls4ml's default depth), a register array in io_parallel."""
    lut, ff = lut + LAYER_CONTROL[0], ff + LAYER_CONTROL[1]
    elements = math.prod(layer.output_shape)
    if design.stream:
        channels = layer.output_shape[-1] if layer.output_shape else 1
        depth = max(1, elements // max(1, channels))
        if design.fifo_depth is not None:
            depth = min(depth, design.fifo_depth)
        fifo_bram, fifo_lut = _ram(depth, channels * layer.result.width)
        bram, lut = bram + fifo_bram, lut + fifo_lut
    else:
        ff += elements * layer.result.width
    return Usage(f"{layer.name} ({layer.kind.value})", bram36=bram, lut=lut, ff=ff)


def _weight_arrays(layer: LayerSpec, arrays: list, reuse: int, resource: bool) -> Usage:
    """hls4ml's copies of the arrays: a kernel RAM ``reuse`` deep under Resource, registers otherwise."""
    bram, lut, ff = 0.0, 0, 0
    for array in arrays:
        if resource and array.name == "weight":
            bram, lut = _ram(reuse, -(-array.size // reuse) * array.format.width)
        else:
            ff += array.size * array.format.width
    return Usage(f"{layer.name} weight arrays", bram36=bram, lut=lut, ff=ff)


def _mac(design: _Design, layer: LayerSpec, reuse: int, resource: bool) -> list[Usage]:
    """Dense, convolutions (pointwise and batch-norm-folded ones too) and depthwise convolutions: one product
    per kernel weight over the reuse factor (a depthwise kernel has one filter per channel, so that is a
    multiplier per channel and tap); a convolution in io_stream keeps ``filter_height - 1`` lines."""
    arrays = _arrays(design, layer)
    x_bits = design.input_bits(layer)
    out = []
    if arrays:
        kernel = arrays[0]
        count = -(-kernel.size // reuse)
        out += [_products(layer, count, kernel.format.width, x_bits, str(layer.attrs.get("product", "mult"))),
                _weight_arrays(layer, arrays, reuse, resource)]
    lut = 0
    if design.stream and layer.kind is not Kind.DENSE:
        attrs = layer.attrs
        values = max(0, int(attrs.get("filt_height", 1)) - 1) * int(attrs.get("in_width", 1))
        values += max(0, int(attrs.get("filt_width", 1)) - 1)
        lut = math.ceil(values * int(attrs.get("n_chan", 1)) * x_bits / 32)
    return [*out, _body(design, layer, lut=lut)]


def _scale(design: _Design, layer: LayerSpec, reuse: int, resource: bool) -> list[Usage]:
    """Batch normalization and ApplyAlpha: a scale product and a bias add per value computed at once
    (per element in io_parallel, per channel in io_stream); a po2 ``scale`` (ApplyAlpha) is a shift."""
    arrays = _arrays(design, layer)
    out = []
    if arrays:
        count = -(-design.lanes(layer) // reuse)
        product = str(layer.attrs.get("product", "mult"))
        out += [_products(layer, count, arrays[0].format.width, design.input_bits(layer), product),
                _weight_arrays(layer, arrays, reuse, False)]
    return [*out, _body(design, layer)]


def _thresholds(design: _Design, layer: LayerSpec, reuse: int, resource: bool) -> list[Usage]:
    """BatchNormalizationQuantizedTanh: one or two comparisons of the input with a threshold per value, no
    multiplier; the thresholds are registers."""
    arrays = _arrays(design, layer)
    compares = design.lanes(layer) * max(1, len(arrays))
    lut = compares * design.input_bits(layer)
    return [_weight_arrays(layer, arrays, reuse, False), _body(design, layer, lut=lut)]


def _elementwise(design: _Design, layer: LayerSpec, reuse: int, resource: bool) -> list[Usage]:
    """ReLU, linear, clipped activations: a compare-and-select per value computed at once."""
    return [_body(design, layer, lut=design.lanes(layer) * max(1, layer.result.width // 2))]


def _table(name: str, size: int, width: int, copies: int) -> Usage:
    """A lookup table (``size`` x ``width`` bits ROM), ``copies`` times: a block RAM serves two reads."""
    bram, lut = _ram(size, width)
    return Usage(f"{name} ({copies} x {size} x {width} bits)", bram36=bram * copies, lut=lut * copies)


def _activation(design: _Design, layer: LayerSpec, reuse: int, resource: bool) -> list[Usage]:
    """``Activation``: a compare-and-select, or for sigmoid/tanh/softplus/softsign a table of ``table_size``
    words of ``table_t`` read once per value computed at once (one ROM per two reads) and the index logic."""
    if "table_size" not in layer.attrs:
        return _elementwise(design, layer, reuse, resource)
    return _lut_function(design, layer)


def _lut_function(design: _Design, layer: LayerSpec) -> list[Usage]:
    lanes = design.lanes(layer)
    width = parse_type(str(layer.attrs["table_t"])).width
    table = _table(f"{layer.name} table", int(layer.attrs["table_size"]), width, -(-lanes // 2))
    return [table, _body(design, layer, lut=lanes * design.input_bits(layer))]


def _param_activation(design: _Design, layer: LayerSpec, reuse: int, resource: bool) -> list[Usage]:
    """LeakyReLU, ThresholdedReLU, ELU: a product (or compare) with the parameter per value; ELU's table."""
    lanes = design.lanes(layer)
    p_bits = parse_type(str(layer.attrs.get("param_t", "fixed<18,8>"))).width
    out = [_products(layer, lanes, p_bits, design.input_bits(layer), "mult")]
    if "table_size" in layer.attrs:
        return [*out, *_lut_function(design, layer)]
    return [*out, _body(design, layer, lut=lanes * layer.result.width)]


def _hard_activation(design: _Design, layer: LayerSpec, reuse: int, resource: bool) -> list[Usage]:
    """Hard sigmoid/tanh: slope product, shift add and clip per value."""
    lanes = design.lanes(layer)
    slope = parse_type(str(layer.attrs.get("slope_t", "fixed<16,6>"))).width
    return [_products(layer, lanes, slope, design.input_bits(layer), "mult"),
            _body(design, layer, lut=lanes * layer.result.width)]


def _prelu(design: _Design, layer: LayerSpec, reuse: int, resource: bool) -> list[Usage]:
    """PReLU: its ``param`` array (one alpha per position, registers) and a product per value computed at once."""
    arrays = _arrays(design, layer)
    p_bits = arrays[0].format.width if arrays else 16
    return [_products(layer, design.lanes(layer), p_bits, design.input_bits(layer), "mult"),
            _weight_arrays(layer, arrays, reuse, False), _body(design, layer, lut=design.lanes(layer))]


def _clip_sloped(design: _Design, layer: LayerSpec, reuse: int, resource: bool) -> list[Usage]:
    """FT-ClipAct on a LeakyReLU / PReLU: the activation's product (and PReLU's array); the clip is a compare."""
    base = _prelu if layer.attrs.get("alpha") == "array" else _param_activation
    return base(design, layer, reuse, resource)


def _softmax(design: _Design, layer: LayerSpec, reuse: int, resource: bool) -> list[Usage]:
    """Softmax: argmax compares; the table forms read the exp table once per value and the inverse table
    once per slice, then multiply each exp by the inverse (``exp_table_t`` x ``inv_table_t``)."""
    lanes = design.lanes(layer)
    x_bits = design.input_bits(layer)
    attrs = layer.attrs
    if attrs.get("implementation") == "argmax":
        return [_body(design, layer, lut=lanes * x_bits)]
    exp_bits = parse_type(str(attrs["exp_table_t"])).width
    inv_bits = parse_type(str(attrs["inv_table_t"])).width
    slices = max(1, lanes // max(1, layer.output_shape[-1]))
    return [
        _table(f"{layer.name} exp table", int(attrs["exp_table_size"]), exp_bits, -(-lanes // 2)),
        _table(f"{layer.name} inverse table", int(attrs["inv_table_size"]), inv_bits, -(-slices // 2)),
        _products(layer, lanes, inv_bits, exp_bits, "mult"),
        _body(design, layer, lut=lanes * (x_bits + exp_bits)),  # max/subtract and the sum of the exps
    ]


def _merge(design: _Design, layer: LayerSpec, reuse: int, resource: bool) -> list[Usage]:
    """Add, Subtract, Average, Maximum, Minimum: an adder or comparator per value computed at once, no
    multiplier (Average's halving is a shift); Multiply: a product of the two inputs per value."""
    lanes = design.lanes(layer)
    if layer.attrs.get("op") == "multiply":
        first, second = design.input_bits(layer, 0), design.input_bits(layer, 1)
        return [_products(layer, lanes, min(first, second), max(first, second), "mult"), _body(design, layer)]
    return [_body(design, layer, lut=lanes * layer.result.width)]


def _wiring(design: _Design, layer: LayerSpec, reuse: int, resource: bool) -> list[Usage]:
    """Concatenate, padding, cropping, reshape, nearest resize: moves words (muxes and counters)."""
    return [_body(design, layer, lut=design.lanes(layer) * max(1, layer.result.width // 2))]


def _pooling(design: _Design, layer: LayerSpec, reuse: int, resource: bool) -> list[Usage]:
    """Max and average pooling, global ones too: a reduction of ``window`` values (``window - 1`` adders or
    comparators in the accumulator's width), then for an average a divide by the window (a constant
    multiply; a shift when the window is a power of two). io_parallel reduces every output at once;
    io_stream's line-buffer kernel pipelines one channel at a time through one reduction (``FiltLoop``),
    with the window's values in registers and ``pool_height - 1`` lines in shift registers, and a global
    pooling keeps one accumulator per channel."""
    attrs = layer.attrs
    glob = layer.kind in (Kind.GLOBALPOOL1D, Kind.GLOBALPOOL2D)
    if glob:
        window = int(attrs.get("in_height", 1)) * int(attrs.get("in_width", 1))
    else:
        window = int(attrs.get("pool_height", 1)) * int(attrs.get("pool_width", 1))
    channels = layer.output_shape[-1] if layer.output_shape else 1
    acc = (layer.accum or layer.result).width
    x_bits = design.input_bits(layer)
    lut, ff = 0, 0
    if not design.stream:
        reductions, adders = math.prod(layer.output_shape), max(1, window - 1)
    elif glob:
        reductions, adders, ff = channels, 1, channels * acc
    else:
        reductions, adders = 1, max(1, window - 1)
        ff = window * channels * x_bits
        lines = max(0, int(attrs.get("pool_height", 1)) - 1) * int(attrs.get("in_width", 1))
        lut = math.ceil(lines * channels * x_bits / 32)
    lut += reductions * adders * acc
    if str(attrs.get("pool_op", "")).lower().startswith("av") and window & (window - 1):
        lut += reductions * math.ceil(LUT_PER_PRODUCT_BIT * acc * acc)  # the divider by a constant
    return [_body(design, layer, lut=lut, ff=ff)]


def _input(design: _Design, layer: LayerSpec, reuse: int, resource: bool) -> list[Usage]:
    """The input layer: its buffer is the accelerator's (``_io``), no logic of its own."""
    return []


RULES: dict[Kind, Rule] = {
    Kind.INPUT: _input,
    Kind.DENSE: _mac,
    Kind.CONV1D: _mac,
    Kind.CONV2D: _mac,
    Kind.DEPTHWISE1D: _mac,
    Kind.DEPTHWISE2D: _mac,
    Kind.BATCHNORM: _scale,
    Kind.APPLY_ALPHA: _scale,
    Kind.BN_QUANTIZED_TANH: _thresholds,
    Kind.ACTIVATION: _activation,
    Kind.CLIPACT: _elementwise,
    Kind.CLIPACT_SLOPED: _clip_sloped,
    Kind.PARAM_ACTIVATION: _param_activation,
    Kind.HARD_ACTIVATION: _hard_activation,
    Kind.PRELU: _prelu,
    Kind.SOFTMAX: _softmax,
    Kind.MERGE: _merge,
    Kind.CONCATENATE: _wiring,
    Kind.POOL1D: _pooling,
    Kind.POOL2D: _pooling,
    Kind.GLOBALPOOL1D: _pooling,
    Kind.GLOBALPOOL2D: _pooling,
    Kind.ZEROPAD1D: _wiring,
    Kind.ZEROPAD2D: _wiring,
    Kind.CROP1D: _wiring,
    Kind.CROP2D: _wiring,
    Kind.RESHAPE: _wiring,
    Kind.RESIZE: _wiring,
}
"""The rule of every layer kind; ``tests/test_resources.py`` checks that every ``Kind`` has one."""

XNOR_PRODUCTS = ("both_binary",)
SIGN_PRODUCTS = ("weight_binary", "data_binary", "weight_ternary")
SHIFT_PRODUCTS = ("weight_exponential",)


def _products(layer: LayerSpec, count: int, w_bits: int, x_bits: int, product: str) -> Usage:
    """``count`` products of hls4ml's ``product`` function: ``mult`` by :func:`_multipliers`; binary and
    ternary ones are an XNOR bit or a conditional negate (no DSP), po2 ones a shift by the exponent."""
    if product == "mult":
        return _multipliers(layer, count, w_bits, x_bits)
    acc_bits = (layer.accum or layer.result).width
    if product in XNOR_PRODUCTS:
        lut = count
    elif product in SIGN_PRODUCTS:
        lut = count * x_bits
    elif product in SHIFT_PRODUCTS:
        lut = count * x_bits * max(1, w_bits - 1)  # a barrel shifter: one mux level per exponent bit
    else:
        msg = f"layer {layer.name!r}: the resource estimate has no rule for hls4ml's product {product!r}"
        raise BuildError(msg)
    return Usage(f"{layer.name} products ({count} {product} of {w_bits}x{x_bits} bits)",
                 lut=lut + count * acc_bits, ff=count * acc_bits)


def _multipliers(layer: LayerSpec, count: int, w_bits: int, x_bits: int) -> Usage:
    acc_bits = (layer.accum or layer.result).width
    dsp, lut = (count, 0) if w_bits > DSP_WEIGHT_BITS else (0, count * math.ceil(LUT_PER_PRODUCT_BIT * w_bits * x_bits))
    return Usage(f"{layer.name} multipliers ({count} of {w_bits}x{x_bits} bits)", dsp=dsp,
                 lut=lut + count * acc_bits, ff=count * acc_bits)


def _copies(program: Program, stream: bool) -> list[Usage]:
    """io_stream: a layer read by ``k > 1`` layers (a branch: a residual shortcut) is copied by hls4ml's
    Clone into ``k`` streams, each a FIFO as deep as the layer has pixels. io_parallel reads arrays twice."""
    if not stream:
        return []
    readers: dict[str, int] = {}
    for layer in program.layers:
        for name in layer.inputs:
            readers[name] = readers.get(name, 0) + 1
    out = []
    for layer in program.layers:
        k = readers.get(layer.name, 0)
        if k > 1:
            channels = layer.output_shape[-1] if layer.output_shape else 1
            bram, lut = _ram(max(1, math.prod(layer.output_shape) // max(1, channels)), channels * layer.result.width)
            out.append(Usage(f"{layer.name} copies for {k} readers (io_stream clone)", bram36=bram * k,
                             lut=lut * k + LAYER_CONTROL[0], ff=LAYER_CONTROL[1]))
    return out


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
