"""``hwflow build``: an HLS project whose weight arrays live in host-writable BRAM, and its manifest.

The project is hls4ml's, written by hls4ml, plus hwflow's top-level wrapper ``hwflow_top``
(``hls/templates``). The arrays chosen for BRAM become ports of hls4ml's ``myproject`` (hls4ml's
own mechanism: a weight variable with ``storage = 'bram'``, what its ``BramFactor`` option sets),
and ``hwflow_top`` feeds them from BRAMs holding the *stored words* of the WeightImage — the bits
the emulator faults — decoded as the hardware must (a power-of-two scale is a reinterpretation, a
constant scale a multiply). Arrays below the size threshold stay hls4ml's compile-time constants:
they are not in the manifest and faults cannot be injected into them on the board.

Output folder::

    manifest.json          contract 8: what the host reads
    weight_image.json      the golden WeightImage bundle (+ one .npy per array)
    program.json           the emulator's Program
    hls/                   the hls4ml project + firmware/hwflow_top.{h,cpp}, hwflow_csim_bridge.cpp

Generation is deterministic: the same model and options give the same files.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from hwflow.convert import HlsOptions, image_from_hls, program_from_hls
from hwflow.convert.hls import quiet
from hwflow.convert.names import names_of
from hwflow.emulator import Program
from hwflow.errors import BuildError, FormatError
from hwflow.fixed import FixedType, from_hls4ml
from hwflow.hardware.codegen import Divide, MemoryCode, TopCode, write_sources
from hwflow.hardware.manifest import DataPath, Manifest, WeightMemory, address_range, assign_bases, lanes_for
from hwflow.image import Kind, StoredArray, WeightImage

log = logging.getLogger(__name__)

DEFAULT_MIN_WORDS = 64
"""Arrays of at least this many words go to BRAM by default. Every weight memory costs a BRAM18, an
AXI BRAM controller and an interconnect port whatever its size, so the small arrays (biases and
batch-norm parameters of narrow layers) stay constants unless asked for (``min_words=1``)."""
HLS_SUBDIR = "hls"
BUS_BITS = 32


@dataclass(frozen=True)
class BuildOptions:
    """How a model is turned into a design for a board."""

    hls: HlsOptions = field(default_factory=HlsOptions)
    """io type, backend, strategy and reuse factor; the part and clock are taken from the board."""
    min_words: int = DEFAULT_MIN_WORDS
    """Arrays with at least this many stored words are put in BRAM (host-writable, fault-injectable);
    smaller ones stay hls4ml constants. Arrays stored scaled always go to BRAM. Ignored when
    ``memories`` is given."""
    memories: tuple[str, ...] | None = None
    """Explicit ``layer/name`` keys of the arrays to put in BRAM (instead of the ``min_words`` rule)."""
    name: str | None = None
    """Model name recorded in the manifest (default: the Keras model's name)."""
    fifo_depth: int | None = None
    """io_stream: the depth of every layer's output FIFO, at most (None: hls4ml's, as deep as the layer has
    pixels, which is what makes a 32x32 network's FIFOs outgrow a small part). The copies of a branch (hls4ml's
    Clone outputs: a residual shortcut) keep hls4ml's depth, so the shortcut can hold what the long path
    delays. C simulation cannot tell a FIFO too shallow (its streams are unbounded): co-simulation (or hls4ml's
    FIFO depth optimization) confirms the depths before a board run."""

    def __post_init__(self) -> None:
        depth = self.fifo_depth
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
            msg = f"fifo_depth must be a positive integer (FIFO words), got {depth!r}"
            raise BuildError(msg)
        if isinstance(self.min_words, bool) or not isinstance(self.min_words, int) or self.min_words < 1:
            msg = f"min_words must be a positive integer, got {self.min_words!r}"
            raise BuildError(msg)
        if self.memories is not None:
            object.__setattr__(self, "memories", tuple(self.memories))

    def memory_keys(self, image: WeightImage) -> tuple[str, ...]:
        """The ``layer/name`` keys of the arrays that go to BRAM, in image order."""
        scaled = [a.key for a in image if not a.scale.is_identity]
        if self.memories is None:
            return tuple(a.key for a in image if a.size >= self.min_words or a.key in scaled)
        known = {a.key for a in image}
        unknown = [k for k in self.memories if k not in known]
        if unknown:
            msg = f"no weight array {', '.join(unknown)} in the model; its arrays are: {', '.join(sorted(known))}"
            raise BuildError(msg)
        left_out = [k for k in scaled if k not in self.memories]
        if left_out:
            msg = (f"{', '.join(left_out)} are stored scaled: a scaled array must be in a weight memory (its "
                   "divide-back is done when the words are read); add them to the memories")
            raise BuildError(msg)
        return tuple(a.key for a in image if a.key in set(self.memories))


@dataclass
class Build:
    """A generated build: where it is, and the objects its files hold."""

    out_dir: Path
    manifest: Manifest
    program: Program
    image: WeightImage
    hls_model: object = None

    @property
    def hls_dir(self) -> Path:
        return self.out_dir / HLS_SUBDIR


def generate(model, board, out_dir: str | Path, options: BuildOptions | None = None, storage=None,
             hls_model=None) -> Build:
    """Convert ``model`` for ``board`` (a ``BoardSpec``) and write the project, manifest and bundle.

    ``storage`` is the hardened model's ``StoragePlan`` (weight scaling), or None. The resource check
    (``hwflow.hardware.resources.check_fits``) runs before anything is written: a model that does not
    fit is refused with the numbers. ``options.hls.user_config`` is the user's own hls4ml configuration;
    ``hls_model`` an hls4ml ModelGraph the user configured and converted, taken instead of ``model``
    and ``options.hls`` (``hwflow.convert.from_hls_model``).
    """
    from hls4ml.backends.fpga.fpga_types import BramWeightVariableConverter

    from hwflow.convert import convert
    from hwflow.hardware.vivado import write_scripts

    options = options or BuildOptions()
    if hls_model is not None:
        from hwflow.convert import from_hls_model

        design = from_hls_model(hls_model)
        model, options = design.model, replace(options, hls=design.options)
    _check_board(board)
    _check_part(options.hls, board)
    out = Path(out_dir)
    hls = replace(options.hls, part=board.part, clock_period=board.clock_period_ns, trace=False)
    kwargs = {} if storage is None else {"storage": storage}
    hls_model = convert(model, hls, out / HLS_SUBDIR, **kwargs)
    program = program_from_hls(hls_model, source={"backend": hls.backend.value, "strategy": hls.strategy.value})
    image = image_from_hls(hls_model, **kwargs)
    _check_image(image)
    keys = options.memory_keys(image)
    if not keys:
        largest = max((a.size for a in image), default=0)
        msg = (f"no weight array has {options.min_words} or more words (the largest has {largest}): nothing "
               "would be host-writable; lower --min-words")
        raise BuildError(msg)
    variables = _bram_variables(hls_model, image, keys)
    name = options.name or str(getattr(model, "name", "model"))
    manifest = make_manifest(name, board, hls, program, image, keys)
    check_reuse_factors(hls_model)
    if options.fifo_depth is not None:
        _limit_fifos(hls_model, hls, options.fifo_depth)
    check_resources(program, image, board, hls, manifest, options.fifo_depth)

    for var in variables.values():
        BramWeightVariableConverter.convert(var)  # hls4ml's own switch: the array becomes a port of myproject
    hls_model.config.writer_config["WriteWeightsTxt"] = False  # constants compiled in: no file loading
    with quiet():
        hls_model.write()
    write_sources(_top_code(hls_model, manifest, image, variables), out / HLS_SUBDIR)
    image.save(out)
    program.save(out / manifest.program)
    manifest.save(out)
    write_scripts(manifest.to_json(), board, out)
    log.debug("build: %d weight memories in %s", len(keys), out)
    return Build(out, manifest, program, image, hls_model)


def load_build(out_dir: str | Path) -> Build:
    """Read a generated build (manifest, Program, golden WeightImage) back from its folder."""
    out = Path(out_dir)
    manifest = Manifest.load(out)
    try:
        program = Program.load(out / manifest.program)
        image = WeightImage.load(out)
    except FormatError as err:
        msg = f"{out}: incomplete build ({err}); rebuild with 'hwflow build'"
        raise BuildError(msg) from None
    return Build(out, manifest, program, image)


# --- manifest -----------------------------------------------------------------------------------------


def make_manifest(name: str, board, hls: HlsOptions, program: Program, image: WeightImage,
                  keys: tuple[str, ...]) -> Manifest:
    """The manifest: memories in image order, laid out on the bus from the board's ``weight_base``."""
    arrays = [image.get(*key.split("/")) for key in keys]
    lanes = [lanes_for(a.format.width) for a in arrays]
    ranges = [address_range(-(-a.size // n)) for a, n in zip(arrays, lanes, strict=True)]
    bases = assign_bases(ranges, board.weight_base, board.master_window)
    memories = []
    for a, n, r, base in zip(arrays, lanes, ranges, bases, strict=True):
        var = a.var  # hls4ml's variable name (w2, b7...)
        memories.append(WeightMemory(
            name=var, layer=a.layer, array=a.name, port=f"{var}_mem", ctrl=f"axi_bram_ctrl_{var}", base=base,
            range=r, depth=a.size, word_bits=a.format.width, lanes=n, first_word=image.base(a.layer, a.name),
            format=str(a.format), scale=a.scale,
        ))
    data = DataPath(
        input_shape=tuple(program.input.output_shape), input_type=str(_stream_type(program.input.result, "input")),
        output_shape=tuple(program.output.output_shape),
        output_type=str(_stream_type(program.output.result, "output")),
    )
    return Manifest(model=name, board=board.name, part=board.part, clock_mhz=float(board.clock_mhz),
                    backend=hls.backend.value, io_type=hls.io_type.value, data=data, weight_memories=tuple(memories))


def _stream_type(t: FixedType, what: str) -> FixedType:
    if t.width > BUS_BITS:
        msg = (f"the {what} type {t} is wider than the {BUS_BITS}-bit stream word; give the {what} layer a "
               f"narrower type (at most {BUS_BITS} bits)")
        raise BuildError(msg)
    return t


# --- checks -------------------------------------------------------------------------------------------


def _check_board(board) -> None:
    interface = getattr(getattr(board, "data_interface", None), "value", None)
    if interface != "axis-dma" or board.weight_base is None or board.master_window is None:
        msg = (f"board {board.name} has data interface {interface!r}: hwflow build generates the AXI-Stream/AXI "
               "DMA design of Zynq and Zynq UltraScale+ boards only (data_interface: axis-dma)")
        raise BuildError(msg)


def _check_part(hls: HlsOptions, board) -> None:
    """The board decides the part and the clock; a user's hls4ml project file that names others is refused."""
    user = hls.user_config
    if user is None:
        return
    part, clock = user.project.get("Part"), user.project.get("ClockPeriod")
    if part is not None and str(part) != board.part:
        msg = (f"Part {part} in {user.name} conflicts with board {board.name}'s part {board.part}: build for the "
               "board the file names, or remove Part from the file")
        raise BuildError(msg)
    if clock is not None and float(clock) != float(board.clock_period_ns):
        msg = (f"ClockPeriod {clock} ns in {user.name} conflicts with board {board.name}'s clock period "
               f"{board.clock_period_ns:g} ns: remove ClockPeriod from the file, or set it to the board's")
        raise BuildError(msg)


def _check_image(image: WeightImage) -> None:
    floats = [f"{a.key} ({a.format})" for a in image if a.format.kind in (Kind.FLOAT16, Kind.FLOAT32)]
    if floats:
        msg = (f"float weight storage cannot be built: {', '.join(floats)}. Float storage is an emulator study "
               "(contract 7); build with fixed-point storage (a storage plan with storage 'fixed')")
        raise BuildError(msg)


def check_resources(program: Program, image: WeightImage, board, hls: HlsOptions, manifest: Manifest,
                    fifo_depth: int | None = None):
    """The resource estimate of the design (``hwflow.hardware.resources``); refuses one that cannot fit."""
    from hwflow.hardware.resources import check_fits, estimate

    usage = estimate(program, image, hls, memories=[m.to_json() for m in manifest.weight_memories],
                     fifo_depth=fifo_depth)
    log.info("%s on %s", usage.summary(), board.name)
    check_fits(usage, board)
    return usage


def reuse_problem(n_in: int, n_out: int, reuse: int) -> str | None:
    """Why hls4ml 1.3.0's Resource dense kernel (a convolution's too, per pixel) cannot take ``reuse`` for an
    ``n_in`` x ``n_out`` product, or None: hls4ml's own rule (``FPGABackend._validate_reuse_factor``).

    hls4ml applies it when it creates a Dense or Conv layer, but its pointwise pass (``optimize_pointwise_conv``)
    makes the 1x1 convolution anew with the configured reuse factor, unchecked. Above ``n_in`` only a multiple
    of ``n_in`` has a kernel (there is no ``DenseResource_rf_gt_nin`` class: the C++ does not compile); at or
    below, ``dense_resource_rf_leq_nin`` asserts that the multipliers divide by ``n_out``; a reuse factor
    that does not divide ``n_in * n_out`` leaves the kernel's blocks uneven.
    """
    if reuse > n_in and reuse % n_in:
        return f"a reuse factor above n_in ({n_in}) must be a multiple of it"
    if reuse <= n_in and -(-n_in * n_out // reuse) % n_out:
        return f"ceil(n_in * n_out / reuse factor) = {-(-n_in * n_out // reuse)} is not a multiple of n_out ({n_out})"
    if (n_in * n_out) % reuse:
        return f"it does not divide n_in * n_out ({n_in * n_out})"
    return None


def valid_reuse_factor(n_in: int, n_out: int, reuse: int) -> int:
    """The reuse factor closest to ``reuse`` (the smaller on a tie) that :func:`reuse_problem` accepts."""
    total = n_in * n_out
    candidates = [r for r in range(1, total + 1) if total % r == 0 and reuse_problem(n_in, n_out, r) is None]
    return min(candidates, key=lambda r: (abs(r - reuse), r))


def check_reuse_factors(hls_model) -> None:
    """Refuse, before anything is written or compiled, a Resource layer whose reuse factor hls4ml 1.3.0 has
    no working kernel for (:func:`reuse_problem`), naming the layer and a reuse factor that works."""
    names = names_of(hls_model)
    for layer in hls_model.get_layers():
        if str(layer.get_attr("strategy", "")).lower() != "resource" or "weight" not in layer.weights:
            continue
        if "Depthwise" in layer.class_name:
            continue  # nnet_depthwise_product's kernels take any reuse factor hls4ml validates
        if "Dense" in layer.class_name:
            n_in, n_out = int(layer.get_attr("n_in")), int(layer.get_attr("n_out"))
        elif "Conv" in layer.class_name:
            taps = int(layer.get_attr("filt_height", 1) or 1) * int(layer.get_attr("filt_width"))
            n_in = int(layer.get_attr("n_chan")) * taps
            n_out = int(layer.get_attr("n_filt"))
        else:
            continue
        reuse = int(layer.get_attr("reuse_factor", 1))
        problem = reuse_problem(n_in, n_out, reuse)
        if problem is not None:
            where = f"layer {names.to_user(layer.name)!r} ({layer.class_name}, n_in {n_in}, n_out {n_out})"
            valid = valid_reuse_factor(n_in, n_out, reuse)
            msg = (f"{where}: hls4ml 1.3.0's Resource kernel cannot run reuse factor {reuse}: {problem} (it fails "
                   "to compile, its C simulation asserts, or hls4ml never validated it); use reuse factor "
                   f"{valid} for this layer (an hls4ml configuration's LayerName entry, --hls-config), or a "
                   "--reuse-factor that every layer takes")
            raise BuildError(msg)


def _limit_fifos(hls_model, hls: HlsOptions, depth: int) -> None:
    """Give every layer's output stream at most ``depth`` words (``BuildOptions.fifo_depth``); the outputs of
    hls4ml's Clone layers (a branch's copies) keep their depth. io_parallel has no FIFOs: refused."""
    if hls.io_type.value != "io_stream":
        msg = "a FIFO depth (--fifo-depth) applies to io_stream designs only; this build is io_parallel (--io stream)"
        raise BuildError(msg)
    for layer in hls_model.get_layers():
        if layer.class_name == "Clone":
            continue
        for name in layer.outputs:
            var = hls_model.output_vars.get(name)
            pragma = getattr(var, "pragma", None)
            if isinstance(pragma, tuple) and len(pragma) == 2 and pragma[0] == "stream":
                var.pragma = ("stream", min(int(pragma[1]), depth))


def _bram_variables(hls_model, image: WeightImage, keys: tuple[str, ...]) -> dict[str, object]:
    """hls4ml's weight variables of the arrays that go to BRAM, checking their types.

    The stored bits are reinterpreted as hls4ml's weight type (no scale, or a power-of-two scale),
    or multiplied into it (constant scale): either way hls4ml's type must be the array's compute type.
    """
    found = {}
    names = names_of(hls_model)  # the image keys carry the user's layer names
    for layer in hls_model.get_layers():
        for role, var in layer.weights.items():
            key = f"{names.to_user(layer.name)}/{role}"
            if key in keys:
                found[key] = var
    for key in keys:
        var = found.get(key)
        if var is None:
            msg = f"hls4ml has no weight variable for {key} (a bug in hwflow's build)"
            raise BuildError(msg)
        array = image.get(*key.split("/"))
        if array.format.kind is Kind.EXPONENT:  # hls4ml's {sign, weight} struct: the exponent's width must agree
            if int(var.type.precision.width) != array.format.exponent_bits:
                msg = (f"hls4ml holds {key} ({var.name}) with {var.type.precision.width} exponent bits, but its "
                       f"stored words ({array.format}) have {array.format.exponent_bits}")
                raise BuildError(msg)
            continue
        theirs, ours = from_hls4ml(var.type.precision), array.compute_type()
        if array.format.kind in (Kind.XNOR, Kind.TERNARY):  # the word's bits are hls4ml's ap_uint<1> / ap_int<2>
            ours = FixedType(array.format.width, array.format.width, array.format.kind is Kind.TERNARY)
        if (theirs.width, theirs.integer, theirs.signed) != (ours.width, ours.integer, ours.signed):
            msg = (f"hls4ml computes {key} ({var.name}) in {theirs}, but its stored words ({array.format}, scale "
                   f"{array.scale.factor:g}) decode to {ours}: convert with the model's storage plan")
            raise BuildError(msg)
    return {key: found[key] for key in keys}


# --- generated code -----------------------------------------------------------------------------------


def _divide(array: StoredArray) -> Divide | None:
    if array.scale.is_power_of_two:
        return None
    from hwflow.image.divide import DivideBack

    d = DivideBack.of(array.format.fixed, array.scale.constant)
    return Divide(d.stored, d.q, d.q_code, d.compute)


def _pack(variable, io_type: str) -> int:
    if io_type != "io_stream":
        return 1
    t = variable.type
    if getattr(t, "unpack", False) or getattr(t, "n_pack", 1) != 1:
        msg = f"hls4ml packs {variable.name} as {t.n_elem}x{t.n_pack} per transaction; hwflow_top expects 1 pack"
        raise BuildError(msg)
    return int(t.n_elem)


def _top_code(hls_model, manifest: Manifest, image: WeightImage, variables: dict[str, object]) -> TopCode:
    inputs, outputs = hls_model.get_input_variables(), hls_model.get_output_variables()
    if len(inputs) != 1 or len(outputs) != 1:
        msg = f"hwflow_top streams one input and one output; the model has {len(inputs)} and {len(outputs)}"
        raise BuildError(msg)
    memories = tuple(
        MemoryCode(m, variables[m.key].type.name, _divide(image.get(m.layer, m.array)))
        for m in manifest.weight_memories
    )
    order = tuple(v.name for v in hls_model.get_weight_variables() if v.storage.lower() == "bram")
    n_in, n_out = math.prod(manifest.data.input_shape), math.prod(manifest.data.output_shape)
    return TopCode(
        model=manifest.model, board=manifest.board, io_type=manifest.io_type, backend=manifest.backend,
        project=hls_model.config.get_project_name(), input_t=inputs[0].type.name, result_t=outputs[0].type.name,
        n_in=n_in, n_out=n_out, input_pack=_pack(inputs[0], manifest.io_type),
        output_pack=_pack(outputs[0], manifest.io_type), memories=memories, call_order=order,
    )
