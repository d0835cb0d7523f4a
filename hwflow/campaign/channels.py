"""Evaluate a fault on the output channels it touches, not on the whole layer.

A faulty word of a Dense/Conv kernel (or bias, or batch-norm scale/bias) changes exactly one
output channel of its layer, and batch normalization, activations, pooling and padding keep
channels apart. So between a multiply-accumulate layer and the next checkpoint, a fault map that
touches channels J only needs those channels computed: the rest equal the fault-free run, which is
cached at the checkpoint. With a few faults per trial that is a small fraction of the layer's work.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from hwflow.emulator import Emulator, Kind, LayerSpec, Program
from hwflow.emulator.run import Weights
from hwflow.image import StoredArray

MAC_KINDS = (Kind.DENSE, Kind.CONV1D, Kind.CONV2D)
PER_CHANNEL = (Kind.BATCHNORM, Kind.ACTIVATION, Kind.CLIPACT, Kind.POOL1D, Kind.POOL2D, Kind.ZEROPAD1D, Kind.ZEROPAD2D)


def word_channels(arr: StoredArray) -> np.ndarray:
    """The output channel (last logical axis) of each stored word, in firmware order."""
    n = arr.size
    firmware_at = arr.to_logical(np.arange(n)).ravel()  # firmware index at each logical position
    channels = np.empty(n, dtype=np.int64)
    channels[firmware_at] = np.arange(n) % arr.shape[-1]
    return channels


class Segment:
    """Layers ``start+1 .. stop`` of a program: optional reshapes, one multiply-accumulate layer,
    then per-channel layers only. ``usable`` is False for any other shape of segment."""

    def __init__(self, program: Program, start: int, stop: int):
        self.program, self.start, self.stop = program, start, stop
        layers = program.layers[start + 1 : stop + 1]
        macs = [i for i, layer in enumerate(layers) if layer.kind in MAC_KINDS]
        self.usable = (
            len(macs) == 1
            and all(layer.kind is Kind.RESHAPE for layer in layers[: macs[0]])
            and all(layer.kind in PER_CHANNEL for layer in layers[macs[0] + 1 :])
        )
        self.layers = layers
        self.mac = layers[macs[0]] if macs else None
        self.channels = int(program.layers[stop].output_shape[-1])

    def contains(self, index: int) -> bool:
        return self.start < index <= self.stop

    def run(self, emulator: Emulator, x: np.ndarray, channels: np.ndarray) -> np.ndarray:
        """Output codes of the segment's last layer for ``channels`` only, from the checkpoint ``x``."""
        k = len(channels)
        first = self.program.layers[self.start]
        specs = [LayerSpec(first.name, Kind.INPUT, (), first.output_shape, first.result)]
        weights = {}
        sliced = False
        for layer in self.layers:
            if layer is self.mac:
                attrs = dict(layer.attrs)
                attrs["n_filt" if layer.kind is not Kind.DENSE else "n_out"] = k
                layer = replace(layer, attrs=attrs)
                sliced = True
            if sliced:
                layer = replace(layer, output_shape=tuple(layer.output_shape[:-1]) + (k,))
                for name in layer.arrays:
                    w = emulator._weights.get((layer.name, name))
                    if w is not None:
                        weights[(layer.name, name)] = _slice(w, channels)
            specs.append(layer)
        sub = object.__new__(Emulator)
        sub.program, sub.chunk, sub.image = Program(tuple(specs), self.program.io_type), emulator.chunk, None
        sub._weights = weights
        return sub.run_codes(x, start=first.name)


def _slice(w: Weights, channels: np.ndarray) -> Weights:
    if w.codes is not None:
        return Weights(np.ascontiguousarray(w.codes[..., channels]), w.type, None)
    return Weights(None, None, np.ascontiguousarray(w.values[..., channels]))
