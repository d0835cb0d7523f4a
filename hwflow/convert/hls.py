"""QKeras model -> hls4ml ModelGraph, configured the way hwflow deploys it.

Everything hls4ml needs is set here, in one typed place (``HlsOptions``), and every failure inside
hls4ml is turned into a ``ConversionError`` that says what to change. Types are per layer
(``granularity='name'``) so the emulator reads exactly what will be synthesized.

A trailing softmax is removed before conversion: hwflow compares and classifies on the logits
(argmax is unchanged), and hls4ml's table softmax is not what the weight-fault study is about.
``HlsOptions(keep_softmax=True)`` keeps it (``hwflow.emulator.activations`` emulates each of hls4ml's
softmax implementations), so the output compared is the softmax's.
"""

from __future__ import annotations

import contextlib
import enum
import io
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from hwflow.convert.names import NameMap
from hwflow.errors import ConversionError, HardenError, ToolMissingError

if TYPE_CHECKING:
    from hwflow.convert.hls_config import UserHlsConfig
    from hwflow.fixed import FixedType
    from hwflow.image import StoragePlan

log = logging.getLogger(__name__)


SOFTMAX_IMPLEMENTATIONS = ("latency", "stable", "legacy", "argmax")
"""hls4ml 1.3.0's softmax implementations (``nnet::softmax_implementation``)."""


class IOType(enum.Enum):
    PARALLEL = "io_parallel"
    STREAM = "io_stream"


class Backend(enum.Enum):
    VITIS = "Vitis"
    VIVADO = "Vivado"


class Strategy(enum.Enum):
    LATENCY = "Latency"
    RESOURCE = "Resource"


@dataclass(frozen=True)
class HlsOptions:
    """How the network is turned into HLS."""

    io_type: IOType = IOType.PARALLEL
    """``io_parallel`` (arrays, fully unrolled) or ``io_stream`` (FIFOs, line buffers for conv)."""
    backend: Backend = Backend.VITIS
    """hls4ml backend: Vitis (default) or Vivado HLS; both give the same C simulation numerics."""
    strategy: Strategy = Strategy.LATENCY
    """Latency keeps weights in registers; Resource with reuse_factor > 1 maps them to BRAM."""
    reuse_factor: int = 1
    """How many times each multiplier is reused; > 1 with Resource puts weights in memories."""
    default_precision: str = "fixed<16,6>"
    """Type of the input and of every type QKeras does not fix (hls4ml's default)."""
    part: str = "xc7z020clg400-1"
    """FPGA part (PYNQ-Z2); only matters for synthesis."""
    clock_period: float = 10.0
    """Clock period in ns; only matters for synthesis."""
    trace: bool = False
    """Compile every layer's output into the C simulation's trace (for locating mismatches)."""
    keep_softmax: bool = False
    """Keep a final softmax: the network's output is then the softmax's (hls4ml's table softmax,
    emulated bit-exactly and compared after it). By default it is removed and the logits compared."""
    softmax_implementation: str | None = None
    """hls4ml's implementation of every softmax the model keeps: latency, stable, legacy or argmax
    (None: hls4ml's default, stable). A user's hls4ml configuration sets it per layer instead."""
    user_config: UserHlsConfig | None = None
    """The user's own hls4ml configuration (``hwflow.convert.hls_config``): given to hls4ml as written,
    with only what hwflow must set merged in (``hls_merge``). Make the options with ``resolve_options``
    so that io, backend, strategy and reuse factor agree with it."""

    def __post_init__(self) -> None:
        impl = self.softmax_implementation
        if impl is not None and impl not in SOFTMAX_IMPLEMENTATIONS:
            msg = f"unknown softmax implementation {impl!r}: use one of {', '.join(SOFTMAX_IMPLEMENTATIONS)}"
            raise ConversionError(msg)

    @classmethod
    def make(cls, io: str = "parallel", backend: str = "Vitis", strategy: str = "Latency",
             reuse_factor: int = 1, **kw) -> HlsOptions:
        """Build from user-level strings, with an error naming the bad value."""
        try:
            io_type = IOType(io if io.startswith("io_") else f"io_{io}")
        except ValueError:
            msg = f"unknown io type {io!r}: use 'parallel' or 'stream'"
            raise ConversionError(msg) from None
        try:
            be = Backend(backend.capitalize())
        except ValueError:
            msg = f"unknown backend {backend!r}: use 'Vitis' or 'Vivado'"
            raise ConversionError(msg) from None
        try:
            st = Strategy(strategy.capitalize())
        except ValueError:
            msg = f"unknown strategy {strategy!r}: use 'Latency' or 'Resource'"
            raise ConversionError(msg) from None
        if reuse_factor < 1:
            msg = f"reuse factor must be >= 1, got {reuse_factor}"
            raise ConversionError(msg)
        return cls(io_type, be, st, reuse_factor, **kw)


def strip_softmax(model):
    """The model up to its logits: drops a final softmax layer or a final layer's softmax activation."""
    import tensorflow as tf

    last = model.layers[-1]
    cfg = last.get_config()
    act = cfg.get("activation")
    act_name = str(act.get("class_name", "") if isinstance(act, dict) else act or "")
    if type(last).__name__ == "Softmax" or (type(last).__name__ in ("Activation", "QActivation")
                                             and "softmax" in act_name):
        log.info("removing the final softmax (%s): hwflow compares logits", last.name)
        return tf.keras.Model(model.inputs, last.input, name=model.name)
    if "softmax" in act_name:
        config = model.get_config()
        for layer_cfg in config["layers"]:
            if layer_cfg["config"]["name"] == last.name:
                layer_cfg["config"]["activation"] = "linear"
        clone = _rebuild(model, config)
        log.info("setting the activation of %s to linear (was softmax): hwflow compares logits", last.name)
        return clone
    return model


def _rebuild(model, config):
    from hwflow.harden.clipact import custom_objects  # QKeras layers and a hardened model's ClipActivation

    clone = model.__class__.from_config(config, custom_objects=custom_objects())
    clone.set_weights(model.get_weights())
    return clone


def hls_config(model, options: HlsOptions) -> dict:
    """hls4ml's per-layer configuration dictionary for ``model`` under ``options``."""
    import hls4ml

    from hwflow.convert import clipact_hls, dwbn_hls, hls_fixes
    from hwflow.convert.layers_activation import register_softmax_layer

    # hwflow's own layers and handlers, before hls4ml parses the model (each idempotent)
    clipact_hls.register()
    dwbn_hls.register()  # QDepthwiseConv2DBatchnorm, which hls4ml 1.3.0 has no converter for
    register_softmax_layer()  # the Keras Softmax layer, whose hls4ml handler emits C++ that does not compile
    hls_fixes.register()  # hls4ml's batch-norm fold into a depthwise kernel, which broadcasts it wrongly
    with quiet():
        config = hls4ml.utils.config_from_keras_model(
            model, granularity="name", backend=options.backend.value,
            default_precision=options.default_precision, default_reuse_factor=options.reuse_factor,
        )
    config["Model"]["Strategy"] = options.strategy.value
    config["Model"]["ReuseFactor"] = options.reuse_factor
    for layer_cfg in config["LayerName"].values():
        layer_cfg["Trace"] = options.trace
        if options.strategy is Strategy.RESOURCE:
            layer_cfg["Strategy"] = "Resource"
        if "ReuseFactor" in layer_cfg:
            layer_cfg["ReuseFactor"] = options.reuse_factor
        if options.softmax_implementation is not None and "Implementation" in layer_cfg:  # a softmax's
            layer_cfg["Implementation"] = options.softmax_implementation
    return config


def convert(model, options: HlsOptions, output_dir: str | Path, storage: StoragePlan | None = None):
    """Convert a Keras/QKeras model to an hls4ml ModelGraph written under ``output_dir``.

    ``storage`` (weight scaling): an array stored in fixed point with a power-of-two scale ``2**s``
    gets the hls4ml type ``fixed<W,I-s>`` (contract 7), so the C simulation computes with the scaled
    words and hls4ml infers its accumulators from that type; other plans leave hls4ml's types alone
    (``image_from_hls`` encodes their words). The plan is recorded on the returned graph.

    ``options.user_config`` (the user's own hls4ml configuration): hls4ml gets it as written, with what
    hwflow must set merged in (``hls_merge.merge``); the graph is then checked against it and the
    ``ConfigReport`` recorded on the graph as ``hwflow_config`` (None without a user configuration).
    """
    import hls4ml

    original = model
    if not options.keep_softmax:
        model = strip_softmax(model)
    names = NameMap.for_model(model)  # layer names hls4ml cannot carry, renamed inside (hwflow.convert.names)
    if names:
        log.debug("renamed for hls4ml: %s", ", ".join(f"{k} -> {v}" for k, v in names.internal.items()))
    model = names.apply(model)
    notes, reference = [], None
    if options.user_config is not None:  # the user's design, as written, plus what hwflow must set
        from hwflow.convert.hls_merge import merge

        config, notes, reference = merge(model, original, options, names)
    else:
        config = hls_config(model, options)
    shifts = {names.to_internal(k.split("/")[0]) + "/" + k.split("/")[1]: v
              for k, v in (storage.shifts() if storage is not None else {}).items()}
    if shifts and config.get("Flows"):
        msg = (f"HLSConfig.Flows {config['Flows']} in {options.user_config.name} conflicts with the storage plan, "
               "which runs hls4ml's default flow after moving the binary points: leave Flows out of the file")
        raise ConversionError(msg)
    if shifts:
        config["Flows"] = []  # build the layers only: their weight types move before hls4ml infers the rest
    try:
        with quiet():
            hls_model = hls4ml.converters.convert_from_keras_model(
                model, hls_config=config, io_type=options.io_type.value, backend=options.backend.value,
                output_dir=str(output_dir), part=options.part, clock_period=options.clock_period,
            )
            if shifts:
                from hwflow.convert.layers_conv import split_separable

                split_separable(hls_model)  # a plan names the arrays of the split layers
                expected = move_binary_points(hls_model, shifts, options.default_precision)
                flow = hls_model.config.backend.get_default_flow()
                hls_model.config.flows = [flow]
                hls_model.config.config["HLSConfig"]["Flows"] = [flow]  # as hls4ml would have recorded it
                hls_model.apply_flow(flow)
    except HardenError as err:
        raise HardenError(names.user_text(str(err))) from err
    except Exception as err:  # hls4ml raises bare Exceptions and KeyErrors for unsupported input
        msg = (f"hls4ml could not convert the model ({type(err).__name__}: {names.user_text(str(err))}); check "
               "that every layer is supported (hwflow lists them in README) and that quantizers use alpha=1")
        raise ConversionError(msg) from err
    if shifts:
        try:
            check_scaled(hls_model, expected)
        except ConversionError as err:
            raise ConversionError(names.user_text(str(err))) from err
    hls_model.hwflow_storage = storage
    hls_model.hwflow_names = names
    hls_model.hwflow_config = None
    if options.user_config is not None:
        from hwflow.convert.hls_merge import check_graph

        hls_model.hwflow_config = check_graph(hls_model, options, notes, shifts, names, reference)
    return hls_model


def move_binary_points(hls_model, shifts: dict[str, int], default_precision: str) -> dict[str, FixedType]:
    """Give each scaled array the type ``fixed<W,I-s>`` (its stored type read with the scale undone).

    Runs on the graph before hls4ml's optimizers: a QKeras quantizer fixes a weight's type when the
    layer is built (the configuration cannot), and the accumulator types are inferred afterwards.
    """
    import numpy as np
    from hls4ml.model.types import UnspecifiedPrecisionType

    from hwflow.fixed import Overflow, from_hls4ml, parse_type, quantize_float

    layers = {layer.name: layer for layer in hls_model.get_layers()}
    moved = {}
    for key, shift in shifts.items():
        layer, name = key.split("/")
        var = layers[layer].weights.get(name) if layer in layers else None
        if var is None:
            msg = (f"storage plan scales {key}, but the model has no such array (layers: "
                   f"{', '.join(layers)}); make the plan for this model")
            raise HardenError(msg)
        precision = var.type.precision
        stored = (parse_type(default_precision) if isinstance(precision, UnspecifiedPrecisionType)
                  else from_hls4ml(precision))
        t = replace(stored, integer=stored.integer - shift)
        data = np.asarray(var.data, dtype=np.float64)
        if np.any(quantize_float(data, t) != quantize_float(data, replace(t, overflow=Overflow.SAT))):
            msg = (f"{key}: the weights scaled by 2^{shift} overflow their stored type {stored}; the plan does "
                   "not fit this model: make it again (plan_rule) for this model")
            raise HardenError(msg)
        base = "fixed" if t.signed else "ufixed"
        text = f"{base}<{t.width},{t.integer},{t.rounding.value},{t.overflow.value},0>"
        var.update_precision(hls_model.config.backend.convert_precision_string(text))
        moved[key] = t
    return moved


def check_scaled(hls_model, expected: dict[str, FixedType]) -> None:
    """Check that hls4ml kept the moved binary points (its later passes must not retype the weights)."""
    from hwflow.fixed import from_hls4ml

    layers = {layer.name: layer for layer in hls_model.get_layers()}
    for key, want in expected.items():
        layer, name = key.split("/")
        var = layers[layer].weights[name] if layer in layers else None
        got = from_hls4ml(var.type.precision) if var is not None else None
        if got != want:
            msg = (f"{key}: hls4ml's optimizers changed the scaled weight type to {got} (expected {want}); "
                   "weight scaling of this layer is not supported")
            raise ConversionError(msg)


def compile_csim(hls_model) -> None:
    """Write the project and build the C simulation library with g++ (hls4ml's ``compile``)."""
    import shutil

    if shutil.which("g++") is None:
        msg = "g++ is not installed: run 'make deps' (or 'sudo apt-get install g++') to build the C simulation"
        raise ToolMissingError(msg)
    try:
        with quiet():
            hls_model.compile()
    except Exception as err:  # hls4ml raises plain exceptions when g++ fails
        from hwflow.convert.names import names_of

        msg = (f"building the C simulation failed in {hls_model.config.get_output_dir()}: "
               f"{names_of(hls_model).user_text(str(err))}")
        raise ConversionError(msg) from err


@contextlib.contextmanager
def quiet():
    """hls4ml prints its progress to stdout; keep it in the debug log instead."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            if line.strip():
                log.debug("hls4ml: %s", line)
