"""Run a Program on a WeightImage: the bit-exact software stand-in for the synthesized network.

The emulator reads every weight from the WeightImage's stored words on each run, so a faulty image
is emulated exactly as the hardware would compute with it (a scaled or float-stored array is
divided back as the hardware does). Inputs are converted to the input type as hls4ml's C simulation
converts them (``ap_fixed`` from the float value).

``run``, ``run_codes`` and ``run_values`` take the fused exact path (``hwflow.emulator.fused``:
float32 GEMMs, pooling moved first, batch norm and activation as one step function, compact codes
between layers), on chains and graphs (residual networks) alike; ``Emulator(..., fused=False)`` and
``trace`` run the plain kernels of ``ops`` layer by layer, the reference the fused path is tested
against. ``run_values`` continues a graph from the codes of every value it reads (the campaign's
fault-free pass runs each layer of a residual network so).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from hwflow.emulator import compiled, gemm, kernels, ops, pooling
from hwflow.emulator.clip import clip_layer
from hwflow.emulator.fused import FusedRunner, pool_geometry
from hwflow.emulator.products import THRESHOLD_ACTIVATIONS, Exponents, special, threshold_activation
from hwflow.emulator.products import linear as product_linear
from hwflow.emulator.program import Kind, LayerSpec, Program
from hwflow.errors import EmulatorError, UnsupportedLayerError
from hwflow.fixed import FixedType, cast, monotone_cast, quantize_float
from hwflow.image import Kind as FormatKind
from hwflow.image import StoredArray, WeightImage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Weights:
    """One array as a layer uses it: integer codes in a fixed type, or real values (float path)."""

    codes: np.ndarray | None
    type: FixedType | None
    values: np.ndarray | None
    exponent: Exponents | None = None  # po2 words (sign, exponent), for weight_exponential

    @classmethod
    def of(cls, array: StoredArray) -> Weights:
        if array.format.coded:  # fixed point (a constant scale is divided back exactly), XNOR, ternary
            return cls(array.codes(), array.compute_type(), None)
        if array.format.kind is FormatKind.EXPONENT:
            return cls(None, None, array.values(), Exponents.of(array))
        return cls(None, None, array.values())

    @property
    def is_fixed(self) -> bool:
        return self.codes is not None

    def real(self) -> np.ndarray:
        return self.values if self.values is not None else self.type.to_float(self.codes)


class Emulator:
    """Executes ``program`` with the weights of ``image``; ``run`` returns output codes."""

    def __init__(self, program: Program, image: WeightImage, chunk: int = 256, fused: bool = True,
                 threads: int | None = None):
        self.program = program
        self.chunk = chunk
        self.threads = threads  # chunks run on this many threads; None: as many as BLAS may use (<= 2)
        self.fused = fused  # the fused path: layer groups, compact codes (chains and graphs alike)
        self._weights = {}
        self._runner = FusedRunner(self)
        self.set_image(image)

    def set_image(self, image: WeightImage) -> None:
        """Use another image (e.g. a faulty one) for the following runs."""
        weights = {}
        for layer in self.program.layers:
            for name in layer.arrays:
                if image.has(layer.name, name):
                    weights[(layer.name, name)] = Weights.of(image.get(layer.name, name))
                elif name == "weight" or layer.kind is Kind.BATCHNORM:
                    msg = f"the WeightImage has no {layer.name}/{name}, which layer {layer.name} needs"
                    raise EmulatorError(msg)
        self.image = image
        self._weights = weights
        self._runner.cache.clear()

    def with_arrays(self, image: WeightImage, keys: set[str]) -> Emulator:
        """A new emulator on ``image`` that re-reads only the arrays in ``keys`` ("layer/name").

        For fault campaigns: a fault map touches a few arrays, the rest are shared, not decoded again.
        """
        other = object.__new__(Emulator)
        other.program, other.chunk, other.image, other.fused = self.program, self.chunk, image, self.fused
        other.threads = self.threads
        other._weights = dict(self._weights)
        other._runner = FusedRunner(other, self._runner.cache)  # groups with unchanged arrays are shared
        for key in keys:
            layer, name = key.split("/", 1)
            if (layer, name) in other._weights:
                other._weights[(layer, name)] = Weights.of(image.get(layer, name))
        return other

    # --- public entry points -----------------------------------------------------------------------

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        spec = self.program.input
        x = np.asarray(x)
        expected = tuple(spec.output_shape)
        if x.shape[1:] != expected:
            if int(np.prod(x.shape[1:])) != int(np.prod(expected)):
                msg = f"input of shape {x.shape[1:]} per sample; the network expects {expected}"
                raise EmulatorError(msg)
            x = x.reshape((x.shape[0],) + expected)
        # C simulation receives float32 samples; convert through float32 so both see the same values.
        return quantize_float(np.asarray(x, dtype=np.float32), spec.result).astype(np.float64)

    def run(self, x: np.ndarray, upto: str | None = None) -> np.ndarray:
        """Output codes of the last layer (or of layer ``upto``) for float inputs ``x``."""
        if self.fused:
            first, last = 1, self._last(upto)
            x_type = self.program.input.result
            outs = self._map(lambda i: self._runner.run(self._input_codes(x[i : i + self.chunk]), x_type, first, last),
                             len(x))
        else:
            outs = [self._run_chunk(self.quantize_input(x[i : i + self.chunk]), upto, False)
                    for i in range(0, len(x), self.chunk)]
        return _as_codes(outs, self._shape(upto))

    def run_codes(self, codes: np.ndarray, start: str | None = None, upto: str | None = None) -> np.ndarray:
        """Continue from the (already quantized) output codes of layer ``start``.

        Lets a campaign compute the layers before the first faulty one once and reuse them. ``codes``
        may have any integer or float dtype holding exact codes; the result is int64.
        """
        self._check_cut(start, upto)
        if self.fused:
            first = 1 if start is None else self.program.index(start) + 1
            x_type = self.program.layers[first - 1].result
            last = self._last(upto)
            outs = self._map(lambda i: self._runner.run(codes[i : i + self.chunk], x_type, first, last), len(codes))
        else:
            outs = [self._run_chunk(codes[i : i + self.chunk], upto, False, start)
                    for i in range(0, len(codes), self.chunk)]
        return _as_codes(outs, self._shape(upto))

    def run_values(self, values: dict[str, np.ndarray], first: str, upto: str | None = None) -> np.ndarray:
        """Codes of layer ``upto`` (default: the last) from the codes of the values it depends on.

        ``values``: by layer name, the (already quantized) output codes of every layer before
        ``first`` that layers ``first..upto`` read, each with the sample axis first (any integer or
        float dtype holding exact codes). In a graph this continues where ``run_codes`` cannot: a
        campaign's fault-free pass runs one layer (or group) of a residual network from its inputs'
        codes. Fused path: ``FusedRunner.run_values``; plain path: the layer kernels.

        Returns compact codes: the narrowest integer dtype of the layer's result type (int8, uint8,
        int16, ...; int64 above 32 bits), not int64 as ``run_codes``: a pass that keeps every layer's
        codes then writes them as they come (converting resnet8's activations to int64 cost more than
        computing them).
        """
        lo = self.program.index(first)
        last = self._last(upto)
        if lo < 1 or last < lo:
            msg = f"run_values runs layers {first}..{upto or self.program.output.name}: not a range after the input"
            raise EmulatorError(msg)
        later = {name for layer in self.program.layers[lo : last + 1] for name in layer.inputs}
        missing = sorted(name for name in later if self.program.index(name) < lo and name not in values)
        if missing:
            msg = (f"run_values from layer {first}: the codes of {', '.join(missing)} (read by the layers from "
                   f"{first} on) are missing; give every value computed before {first} that they read")
            raise EmulatorError(msg)
        needed = {name: values[name] for name in later if self.program.index(name) < lo}
        n = len(next(iter(needed.values())))

        t = self.program.layers[last].result
        dtype = compiled.narrow_dtype(t.min_code, t.max_code)

        shape = (n,) + self._shape(upto)
        run = self._runner.run_values if self.fused else self._run_values_plain
        if self._thread_count() <= 1:  # one pass over all samples: the result is the kernels' own array
            y = self._map(lambda _: run(dict(needed), lo, last), 1)[0]
            return y.reshape(shape).astype(dtype, copy=False)
        out = np.empty(shape, dtype=dtype)

        def chunk(i: int) -> None:  # each chunk writes its rows (on its thread: no join pass after)
            part = {name: v[i : i + self.chunk] for name, v in needed.items()}
            out[i : i + self.chunk] = run(part, lo, last).reshape((-1,) + shape[1:])

        self._map(chunk, n)
        return out

    def _run_values_plain(self, values: dict[str, np.ndarray], first: int, last: int) -> np.ndarray:
        """``run_values`` on the plain kernels, layer by layer (the reference)."""
        values = dict(values)
        for layer in self.program.layers[first : last + 1]:
            xs = [values[name] for name in layer.inputs]
            types = [self._type_of(name) for name in layer.inputs]
            values[layer.name] = self._layer(layer, xs[0], types[0], xs[1:], types[1:])
        return values[self.program.layers[last].name]

    def _check_cut(self, start: str | None, upto: str | None) -> None:
        """In a graph, continuing from one layer's codes needs every value the later layers read to be
        computed after it: a shortcut from before ``start`` cannot be continued (run from the input)."""
        if start is None:
            return
        first, last = self.program.index(start) + 1, self._last(upto)
        for layer in self.program.layers[first : last + 1]:
            for name in layer.inputs:
                if name != start and self.program.index(name) < first:
                    msg = (f"run_codes cannot continue from layer {start}: layer {layer.name} also reads {name}, "
                           f"computed before {start} (a graph is continued only from a layer that every later "
                           "value depends on alone; run from the input, or give each layer its inputs)")
                    raise EmulatorError(msg)

    def _map(self, job, n: int) -> list[np.ndarray]:
        """``job(start)`` for every chunk start, in order; with one BLAS thread, on up to two threads.

        The fused path's GEMMs are small: OpenBLAS's second thread costs more than it brings (and
        spins on a loaded machine). numpy releases the GIL in its loops and in BLAS, so two chunks at
        once use both cores for the elementwise passes too. Inside a campaign worker that already
        limits BLAS to one thread (one process per core), ``threads=None`` runs on one thread.
        """
        starts = list(range(0, n, self.chunk))
        blas = _blas()
        threads = self._thread_count()
        with blas.limit(limits=1, user_api="blas") if blas is not None else contextlib.nullcontext():
            if threads <= 1 or len(starts) < 2:
                return [job(i) for i in starts]
            with ThreadPoolExecutor(min(threads, len(starts))) as pool:
                return list(pool.map(job, starts))

    def _thread_count(self) -> int:
        """Chunk threads of ``_map``: ``threads``, or as many as BLAS may use now (at most two)."""
        return self.threads if self.threads is not None else _blas_threads(_blas())

    def _last(self, upto: str | None) -> int:
        return len(self.program.layers) - 1 if upto is None else self.program.index(upto)

    def _input_codes(self, x: np.ndarray) -> np.ndarray:
        """The input codes, exact, as float32 when quantizing there is exact (``gemm.quantize_f32``)."""
        spec = self.program.input
        x = np.asarray(x)
        expected = tuple(spec.output_shape)
        if x.shape[1:] == expected:
            fast = gemm.quantize_f32(x, spec.result)
            if fast is not None:
                return fast
        return self.quantize_input(x)

    def trace(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Output codes of every layer, keyed by layer name (for locating a mismatch)."""
        traced = self._run_chunk(self.quantize_input(x), None, True)
        return {name: np.asarray(v).astype(np.int64) for name, v in traced.items()}

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Real values of the network output."""
        return self.program.output.result.to_float(self.run(x))

    def predict_classes(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.run(x), axis=-1)

    # --- execution ---------------------------------------------------------------------------------

    def _shape(self, name: str | None) -> tuple[int, ...]:
        layer = self.program.output if name is None else self.program.layer(name)
        return tuple(layer.output_shape)

    def _run_chunk(self, codes: np.ndarray, upto: str | None, keep: bool, start: str | None = None):
        layers = self.program.layers
        first = 1 if start is None else self.program.index(start) + 1
        begin = layers[first - 1]
        values = {begin.name: codes}
        last_use = self.program.last_use  # a merge reads late
        for i, layer in enumerate(layers[first:], start=first):
            src = values[layer.inputs[0]]
            src_type = self._type_of(layer.inputs[0])
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if not keep and layer.name != upto and self._pool_first(layer, nxt, src_type):
                src = ops.max_pool(src, *self._pool_geometry(nxt)[:2])  # see _pool_first
            more = [values[name] for name in layer.inputs[1:]]
            values[layer.name] = self._layer(layer, src, src_type, more, [self._type_of(n) for n in layer.inputs[1:]])
            if not keep:
                for name in layer.inputs:
                    if last_use.get(name, -1) <= i:
                        values.pop(name, None)
            if layer.name == upto:
                break
        if keep:
            return values
        return values[upto or layers[-1].name]

    def _type_of(self, name: str) -> FixedType:
        return self.program.layer(name).result

    def weights(self, layer: LayerSpec, name: str) -> Weights | None:
        """Array ``name`` of ``layer`` as the current image holds it (None: the layer has no such array)."""
        return self._weights.get((layer.name, name))

    def _layer(self, layer: LayerSpec, x: np.ndarray, x_type: FixedType, more: list | tuple = (),
               more_types: list | tuple = ()) -> np.ndarray:
        kind = layer.kind
        a = layer.attrs
        op = kernels.OPS.get(kind)
        if op is not None:  # a kind whose kernel lives in its own module (hwflow.emulator.kernels)
            return op(self, layer, [x, *more], [x_type, *more_types])
        if kind is Kind.DENSE:
            lead = x.shape[:-1]
            y = self._linear(layer, x.reshape(-1, x.shape[-1]), x_type)
            return y.reshape(lead + (y.shape[-1],))
        if kind is Kind.CONV2D:
            return self._conv(layer, x, x_type, (a["filt_height"], a["filt_width"]),
                              (a["stride_height"], a["stride_width"]),
                              (a["pad_top"], a["pad_left"]), (a["pad_bottom"], a["pad_right"]))
        if kind is Kind.CONV1D:
            return self._conv(layer, x, x_type, (a["filt_width"],), (a["stride_width"],),
                              (a["pad_left"],), (a["pad_right"],))
        if kind is Kind.BATCHNORM:
            return self._batchnorm(layer, x, x_type)
        if kind is Kind.ACTIVATION:
            return self._activation(layer, x, x_type)
        if kind is Kind.CLIPACT:
            return clip_layer(layer, x, x_type)
        if kind in (Kind.POOL2D, Kind.POOL1D):
            return self._pool(layer, x, x_type)
        if kind in (Kind.GLOBALPOOL2D, Kind.GLOBALPOOL1D):
            return pooling.global_pool(layer, x, x_type, self.program.io_type)
        if kind in (Kind.ZEROPAD2D, Kind.ZEROPAD1D):
            nd = x.ndim - 2
            before = (a["pad_top"], a["pad_left"])[-nd:] if nd == 2 else (a["pad_left"],)
            after = (a["pad_bottom"], a["pad_right"])[-nd:] if nd == 2 else (a["pad_right"],)
            return cast(ops.pad(x, before, after), x_type, layer.result)
        if kind is Kind.RESHAPE:
            y = x.reshape((x.shape[0],) + tuple(layer.output_shape))
            return cast(y, x_type, layer.result)
        msg = f"layer {layer.name} of kind {kind.value} cannot be emulated"
        raise UnsupportedLayerError(msg)

    def _linear(self, layer: LayerSpec, x: np.ndarray, x_type: FixedType, shape=None) -> np.ndarray:
        w = self._weights[(layer.name, "weight")]
        b = self._weights.get((layer.name, "bias"))
        wmat = w.codes if w.is_fixed else w.values
        if shape is not None:
            wmat = wmat.reshape(shape)
        if special(layer, w):  # XNOR data, po2 weights
            return product_linear(layer, x, x_type, w, b, layer.accum, layer.result,
                                   resource_order(layer, wmat.shape), wmat.shape)
        if w.is_fixed and (b is None or b.is_fixed):
            return ops.linear_fixed(x, x_type, wmat, w.type, b.codes if b else None, b.type if b else None,
                                    layer.accum, layer.result, resource_order(layer, wmat.shape))
        wreal = w.real().reshape(wmat.shape)
        return ops.linear_float(x, x_type, wreal, b.real() if b else None, layer.result)

    def _conv(self, layer, x, x_type, size, stride, before, after) -> np.ndarray:
        w = self._weights[(layer.name, "weight")]
        if w.is_fixed:  # build the im2col matrix directly in the dtype the product will use
            x = x.astype(ops.matmul_dtype(x_type, w.type, w.codes.size // layer.attrs["n_filt"]), copy=False)
        x = ops.pad(x, before, after)
        cols = ops.patches(x, size, stride)
        n, out = cols.shape[0], cols.shape[1 : 1 + len(size)]
        k = int(np.prod(cols.shape[1 + len(size) :]))
        flat = np.ascontiguousarray(cols).reshape(-1, k)
        y = self._linear(layer, flat, x_type, shape=(k, layer.attrs["n_filt"]))
        return y.reshape((n,) + tuple(out) + (y.shape[-1],))

    def _batchnorm(self, layer: LayerSpec, x: np.ndarray, x_type: FixedType) -> np.ndarray:
        s = self._weights[(layer.name, "scale")]
        b = self._weights[(layer.name, "bias")]
        if s.is_fixed and b.is_fixed:
            return ops.batchnorm_fixed(x, x_type, s.codes, s.type, b.codes, b.type, layer.result)
        return ops.batchnorm_float(x, x_type, s.real(), b.real(), layer.result)

    def _activation(self, layer: LayerSpec, x: np.ndarray, x_type: FixedType) -> np.ndarray:
        fn = layer.attrs["activation"]
        if fn == "relu":
            return cast(np.maximum(x, 0), x_type, layer.result)
        if fn == "linear":
            return cast(x, x_type, layer.result)
        if fn in THRESHOLD_ACTIVATIONS:  # binary_tanh, ternary_tanh (QKeras binary / ternary)
            return threshold_activation(layer, x, x_type, self.program.io_type)
        from hwflow.emulator import activations  # table activations: sigmoid, tanh, softplus, softsign

        y = activations.activation(layer, x, x_type, self.program.io_type)
        if y is not None:
            return y
        msg = (f"activation {fn!r} of layer {layer.name} is not emulated (relu, linear and "
               f"{', '.join(activations.LUT_FUNCTIONS)} are)")
        raise UnsupportedLayerError(msg)

    _pool_geometry = staticmethod(pool_geometry)

    def _pool_first(self, layer: LayerSpec, nxt: LayerSpec | None, x_type: FixedType) -> bool:
        """Whether a ReLU followed by max pooling may pool first, on four times fewer values.

        ReLU and a cast that cannot wrap or zero are monotonic, and max commutes with monotonic functions,
        so the result is identical; the pooling layer then sees values that are already maxima.
        Not with padding (hls4ml pads with a word of the ReLU's output type).
        """
        if nxt is None or layer.kind is not Kind.ACTIVATION or layer.attrs.get("activation") != "relu":
            return False
        if nxt.kind not in (Kind.POOL1D, Kind.POOL2D) or nxt.inputs != (layer.name,):
            return False
        if self.program.reader_count.get(layer.name, 0) != 1:  # a branch reads it unpooled
            return False
        if nxt.attrs.get("pool_op") != "Max" or any(self._pool_geometry(nxt)[2]) or any(self._pool_geometry(nxt)[3]):
            return False
        if self.program.io_type == "io_stream" and not monotone_cast(layer.result, nxt.accum or layer.result):
            return False  # io_stream casts each value to accum_t before the maximum: a wrap reorders
        return monotone_cast(x_type, layer.result)  # a wrap or SAT_ZERO overflow is not monotonic

    def _pool(self, layer: LayerSpec, x: np.ndarray, x_type: FixedType) -> np.ndarray:
        a = layer.attrs
        if a["pool_op"] == "Average":
            return pooling.average_pool(layer, x, x_type, self.program.io_type)
        if a["pool_op"] != "Max":
            msg = f"{a['pool_op']} pooling (layer {layer.name}) is not emulated; hls4ml has Max and Average"
            raise UnsupportedLayerError(msg)
        size, stride, before, after = self._pool_geometry(layer)
        if x.shape[1:] == tuple(layer.output_shape) and self._pooled_already(layer, x):
            return self._max_to(layer, x, x_type)
        acc = layer.accum or x_type
        if self.program.io_type == "io_stream" and not monotone_cast(x_type, acc):
            # io_stream casts each value to accum_t before comparing (reduce_pool); a wrap breaks the order
            return cast(ops.max_pool(pooling.cast_codes(x, x_type, acc), size, stride), acc, layer.result)
        # hls4ml pads max pooling with the word whose MSB alone is set (pad_val<T, Max>).
        pad_code = -(1 << (x_type.width - 1)) if x_type.signed else 1 << (x_type.width - 1)
        return self._max_to(layer, ops.max_pool(ops.pad(x, before, after, pad_code), size, stride), x_type)

    def _pooled_already(self, layer: LayerSpec, x: np.ndarray) -> bool:
        """True when the preceding ReLU pooled first (its output already has the pooled shape)."""
        i = self.program.index(layer.name)
        return self._pool_first(self.program.layers[i - 1], layer, self._type_of(self.program.layers[i - 1].inputs[0]))

    @staticmethod
    def _max_to(layer: LayerSpec, m: np.ndarray, x_type: FixedType) -> np.ndarray:
        """The max is held in accum_t, then assigned to res_t (two casts, as in nnet_pooling.h)."""
        acc = layer.accum or x_type
        return cast(cast(m, x_type, acc), acc, layer.result)


@functools.cache
def _blas():
    """threadpoolctl's controller of the loaded BLAS (made once: 0.4 ms; a limit then costs 6 us), or None."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return None
    return ThreadpoolController()


def _blas_threads(controller) -> int:
    """The BLAS thread count now in force, at most 2 (the emulator's chunk threads)."""
    if controller is None:
        return 1
    counts = [lib.num_threads for lib in controller.lib_controllers if lib.user_api == "blas"]
    return max(1, min([2, *counts]))


def resource_order(layer: LayerSpec, shape: tuple[int, int]) -> np.ndarray | None:
    """The order hls4ml's Resource kernel adds this layer's products in (see ops.accumulation_order)."""
    reuse = int(layer.attrs.get("reuse_factor", 1))
    if not str(layer.attrs.get("strategy", "latency")).startswith("resource") or reuse <= 1:
        return None
    return ops.accumulation_order(int(shape[0]), int(shape[1]), reuse)


def _as_codes(chunks: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Join per-chunk outputs as int64 codes (layers pass exact float64 codes between them)."""
    if not chunks:
        return np.zeros((0,) + shape, dtype=np.int64)
    return np.concatenate(chunks).astype(np.int64)
