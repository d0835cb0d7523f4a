"""Evaluate fault maps fast, with results identical to a full emulation of the faulty network.

Three savings, each exact:

1. A fault map that changes no stored bit costs nothing: its result is the fault-free one.
2. Layers before the first faulty layer compute what they computed without faults: their outputs
   (the inputs of every layer holding weights) are computed once, for the whole data set, and
   reused by every trial.
3. After the last faulty layer, a sample whose activations equal the fault-free ones at the next
   checkpoint is masked: its output is the fault-free output, and only the other samples go on.

``full_evaluate`` is the plain reference (emulate everything); tests check both agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwflow.campaign.channels import MAC_KINDS, Segment, word_channels
from hwflow.emulator import Emulator, Kind, Program
from hwflow.image import WeightImage


@dataclass(frozen=True)
class Outcome:
    """What one fault map did to the network on the evaluation samples."""

    correct: int
    mismatches: int  # samples whose output words differ from the fault-free output
    faults: int
    effective: int


def _compact(codes: np.ndarray, width: int) -> np.ndarray:
    """Store cached activations in the narrowest integer dtype their type allows."""
    for dtype, bits in ((np.int8, 8), (np.int16, 16), (np.int32, 32)):
        if width < bits:  # one spare bit covers unsigned types too
            return codes.astype(dtype)
    return codes.astype(np.int64)


class TrialEvaluator:
    """Holds the fault-free run of one variant on the evaluation samples, and evaluates fault maps."""

    def __init__(self, program: Program, image: WeightImage, x: np.ndarray, y: np.ndarray, chunk: int = 256):
        self.program = program
        self.image = image
        self.y = np.asarray(y)
        self.emulator = Emulator(program, image, chunk=chunk)
        names = program.names
        weighted = [i for i, layer in enumerate(program.layers) if layer.kind in MAC_KINDS]
        # Checkpoints: the input of every multiply-accumulate layer, and the output. Inputs of batch
        # normalization are left out on purpose: they are the wide accumulator outputs of the layer
        # before (32-bit words, the largest tensors of a CNN); a batch-norm fault restarts one layer
        # earlier instead.
        # A reshape (flatten) before a layer is skipped back over, so that checkpoints keep channels.
        inputs = set()
        for i in weighted:
            j = names.index(program.layers[i].inputs[0])
            while program.layers[j].kind is Kind.RESHAPE:
                j = names.index(program.layers[j].inputs[0])
            inputs.add(j)
        self._checkpoints = sorted(inputs | {len(names) - 1})
        pairs = zip(self._checkpoints, self._checkpoints[1:], strict=False)
        self._segments = [Segment(program, a, b) for a, b in pairs]
        self._channels = {a.key: word_channels(a) for a in image if a.layer in names}
        self.cache: dict[str, np.ndarray] = {}
        codes = self.emulator.quantize_input(x)
        start = names[0]
        for idx in self._checkpoints:
            name = names[idx]
            if idx > 0:
                codes = self.emulator.run_codes(codes, start=start, upto=name)
            self.cache[name] = _compact(np.asarray(codes, dtype=np.int64), program.layers[idx].result.width)
            start = name
        self.golden = self.cache[names[-1]].astype(np.int64)
        self.golden_correct = int(np.sum(np.argmax(self.golden.reshape(len(x), -1), axis=1) == self.y))

    @property
    def samples(self) -> int:
        return len(self.y)

    def evaluate(self, faultmap) -> Outcome:
        """Result of running the network with ``faultmap`` applied to its weight memory."""
        n = len(faultmap)
        if n == 0:
            return Outcome(self.golden_correct, 0, 0, 0)
        effective = int(faultmap.effective(self.image))
        if effective == 0:
            return Outcome(self.golden_correct, 0, n, 0)
        faulty = faultmap.apply(self.image)
        keys = {a.key for a in self.image if not np.array_equal(a.words, faulty.get(a.layer, a.name).words)}
        emulator = self.emulator.with_arrays(faulty, keys)
        names = self.program.names
        touched = sorted(names.index(k.split("/", 1)[0]) for k in keys)
        first, last = touched[0], touched[-1]
        segment = next(s for s in self._segments if s.contains(first))
        if segment.usable and segment.contains(last):
            channels = np.unique(np.concatenate([
                self._channels[k][np.flatnonzero(self.image.get(*k.split("/", 1)).words
                                                 != faulty.get(*k.split("/", 1)).words)] for k in keys]))
            if len(channels) <= segment.channels // 2:
                return self._evaluate_channels(emulator, segment, channels, n, effective)
        start = max(c for c in self._checkpoints if c < first)
        stop = min(c for c in self._checkpoints if c >= last)
        codes = emulator.run_codes(self.cache[names[start]], start=names[start], upto=names[stop])
        golden_stop = self.cache[names[stop]]
        n_samples = len(codes)
        differs = np.any(codes.reshape(n_samples, -1) != golden_stop.reshape(n_samples, -1), axis=1)
        idx = np.flatnonzero(differs)
        out = self.golden.copy()
        if idx.size:
            if stop == len(names) - 1:
                out[idx] = codes[idx]
            else:
                out[idx] = emulator.run_codes(codes[idx], start=names[stop])
        return self._outcome(out, n, effective)

    def _evaluate_channels(self, emulator: Emulator, segment: Segment, channels: np.ndarray, n: int,
                           effective: int) -> Outcome:
        """Faults confined to one segment and a few channels: compute those channels only."""
        names = self.program.names
        part = segment.run(emulator, self.cache[names[segment.start]], channels)
        golden_stop = self.cache[names[segment.stop]]
        n_samples = len(part)
        differs = np.any(golden_stop[..., channels].reshape(n_samples, -1) != part.reshape(n_samples, -1), axis=1)
        idx = np.flatnonzero(differs)
        out = self.golden.copy()
        if idx.size:
            full = golden_stop[idx].astype(np.int64)
            full[..., channels] = part[idx]
            out[idx] = full if segment.stop == len(names) - 1 else emulator.run_codes(full, start=names[segment.stop])
        return self._outcome(out, n, effective)

    def full_evaluate(self, faultmap, x: np.ndarray) -> Outcome:
        """The reference: emulate the whole faulty network on every sample."""
        out = Emulator(self.program, faultmap.apply(self.image)).run(x)
        return self._outcome(out, len(faultmap), int(faultmap.effective(self.image)))

    def _outcome(self, out: np.ndarray, faults: int, effective: int) -> Outcome:
        flat = out.reshape(len(out), -1)
        mismatches = int(np.sum(np.any(flat != self.golden.reshape(len(out), -1), axis=1)))
        correct = int(np.sum(np.argmax(flat, axis=1) == self.y))
        return Outcome(correct, mismatches, faults, effective)
