"""The fault-free run that every trial's deltas are relative to, kept compact.

Codes are stored in the narrowest integer dtype their type allows (an 8-bit activation in one
byte, a 29-bit accumulator in four). Layers wider than 32 bits (batch-norm outputs in full
precision) are kept only where a rule reads them as its fault-free input; the engine trims a
trial's blocks at the layers kept here. The pass itself runs the emulator in sample chunks, so its
peak memory is one chunk's activations plus what is kept.
"""

from __future__ import annotations

import numpy as np

from hwflow.campaign.delta.registry import rule_for
from hwflow.campaign.delta.state import ChannelMajor
from hwflow.emulator import Emulator, Kind, Program
from hwflow.emulator.fused import sequential
from hwflow.emulator.run import Weights
from hwflow.fixed import FixedType
from hwflow.image import WeightImage

KEEP_WIDTH = 32  # outputs up to this width are kept for trimming; wider ones only where a rule reads them
PASS_CHUNK = 1024  # samples per chunk of the fault-free pass


def compact_dtype(t: FixedType) -> type:
    """The narrowest numpy integer dtype holding every code of ``t``."""
    for bits, signed, unsigned in ((8, np.int8, np.uint8), (16, np.int16, np.uint16), (32, np.int32, np.uint32)):
        if t.width <= bits:
            return signed if t.signed else unsigned
    return np.int64


def _float32_if_exact(codes):
    """Accumulator codes as float32 (the same four bytes) when every one is below 2**24: the delta
    rules add to them in float32, and a stored float32 copy saves a conversion per trial."""
    if isinstance(codes, ChannelMajor):
        return ChannelMajor(_float32_if_exact(codes.array))
    if codes is None or codes.dtype.itemsize != 4 or not np.issubdtype(codes.dtype, np.integer):
        return codes
    if codes.size and max(-int(codes.min()), int(codes.max())) >= 2**24:
        return codes
    return codes.astype(np.float32)


def accumulator_key(name: str) -> str:
    return f"{name}#acc"


def plan(program: Program) -> tuple[dict[str, tuple[tuple[int, ...], type]], set[str], set[str]]:
    """What the golden pass keeps: ``key -> (shape of one sample, dtype)``, the kept layers and the
    layers whose accumulator is kept. No im2col is kept: a convolution's rule reads shifted slices of
    its fault-free input (``compiled.conv_sum``)."""
    layers = program.layers
    needed = {layers[0].name, layers[-1].name}
    accumulators = set()
    for layer in layers[1:]:
        rule = rule_for(layer)
        if rule.needs_input(layer):
            needed.update(layer.inputs)  # every input: a merge's rule fills blocks from each
        if getattr(rule, "needs_output", lambda _: False)(layer):
            needed.add(layer.name)
        if getattr(rule, "needs_accumulator", lambda _: False)(layer):
            accumulators.add(layer.name)
    keep = [layer for layer in layers if layer.name in needed or layer.result.width <= KEEP_WIDTH]
    shapes = {layer.name: (tuple(layer.output_shape), compact_dtype(layer.result)) for layer in keep}
    for name in accumulators:
        layer = program.layer(name)
        shapes[accumulator_key(name)] = (tuple(layer.output_shape), compact_dtype(layer.accum))
    return shapes, {layer.name for layer in keep}, accumulators


def bytes_per_sample(program: Program) -> int:
    """Memory the golden pass keeps per evaluation sample."""
    return sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in plan(program)[0].values())


class Golden:
    """Fault-free codes of the kept layers for every evaluation sample: ``golden[name]`` (the sample
    axis first; a convolution's accumulator channel first, ``ChannelMajor``)."""

    def __init__(self, program: Program, image: WeightImage, emulator: Emulator, x: np.ndarray):
        self.program = program
        layers = program.layers
        shapes, self.kept, self.accumulators = plan(program)
        n = len(x)
        self.samples = n
        self.codes: dict[str, np.ndarray] = {}
        # Convolution accumulators (not the network output) are kept channel first (``ChannelMajor``).
        self._channel_major = {key for key in shapes if key.split("#")[0] in self.conv_layers(program)
                               and key != layers[-1].name}
        for key, (shape, dtype) in shapes.items():
            if key in self._channel_major:
                self.codes[key] = ChannelMajor(np.empty((shape[-1], n) + shape[:-1], dtype=dtype))
            else:
                self.codes[key] = np.empty((n,) + shape, dtype=dtype)
        weights = {(a.layer, a.name): Weights.of(a) for a in image if a.layer in program.names}

        self._bound = {}
        graph = not sequential(program)
        last_use = program.last_use
        for lo in range(0, n, PASS_CHUNK):
            sl = slice(lo, min(lo + PASS_CHUNK, n))
            codes = emulator.quantize_input(x[sl])
            if len(codes):
                self._bound[layers[0].name] = max(self._bound.get(layers[0].name, 0), int(np.abs(codes).max()))
            outputs = {layers[0].name: codes}
            if layers[0].name in self.kept:
                self._write(layers[0].name, sl, codes)
            for i, layer in enumerate(layers[1:], start=1):
                src = outputs[layer.inputs[0]]
                if layer.name in self.accumulators:
                    rule = rule_for(layer)
                    arrays = {nm: weights[(layer.name, nm)] for nm in layer.arrays if (layer.name, nm) in weights}
                    x_type = program.layer(layer.inputs[0]).result
                    self._write(accumulator_key(layer.name), sl, rule.accumulate(layer, src, x_type, arrays))
                out = self._run(emulator, layer, outputs, graph)
                outputs[layer.name] = out
                if graph:  # a value is dropped after its last reader
                    for name in layer.inputs:
                        if last_use[name] <= i:
                            outputs.pop(name, None)
                if layer.name in self.kept:
                    self._write(layer.name, sl, out)
        for name in self.accumulators | {layer.name for layer in layers[1:] if layer.accum is not None}:
            key = accumulator_key(name) if name in self.accumulators else name
            if key in self.codes:
                self.codes[key] = _float32_if_exact(self.codes[key])
        self.output = self.codes[layers[-1].name]

    @staticmethod
    def _run(emulator: Emulator, layer, outputs: dict[str, np.ndarray], graph: bool) -> np.ndarray:
        """One layer's fault-free output codes from its inputs' codes.

        A chain of layers continues through ``run_codes`` (the fused path). In a graph (a merge reads
        two values) ``run_values`` runs the layer from the codes of every input, on the fused path's
        kernels too (``run_codes`` can only continue from a single value)."""
        if not graph:
            return emulator.run_codes(outputs[layer.inputs[0]], start=layer.inputs[0], upto=layer.name)
        return emulator.run_values({name: outputs[name] for name in layer.inputs}, layer.name, layer.name)

    @staticmethod
    def conv_layers(program: Program) -> set[str]:
        return {layer.name for layer in program.layers if layer.kind in (Kind.CONV1D, Kind.CONV2D)}

    def _write(self, key: str, rows: slice, values: np.ndarray) -> None:
        target = self.codes[key]
        if isinstance(target, ChannelMajor):
            target.write(rows, values)
        else:
            target[rows] = values

    def __getitem__(self, name: str) -> np.ndarray:
        return self.codes[name]

    def code_bound(self, name: str) -> int:
        """The largest ``|code|`` layer ``name`` can output: from the data for the network input (which
        never faults), from its type for every other layer."""
        if name in self._bound:
            return self._bound[name]
        t = self.program.layer(name).result
        return max(-t.min_code, t.max_code)

    def has(self, name: str) -> bool:
        return name in self.codes

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.codes.values())
