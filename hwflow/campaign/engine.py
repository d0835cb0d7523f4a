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
        self._checkpoints = sorted(inputs | {0, len(names) - 1})
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
        changed = {}
        for arr in self.image:
            new = faulty.get(arr.layer, arr.name)
            if new is not arr:
                where = np.flatnonzero(new.words != arr.words)
                if where.size:
                    changed[arr.key] = where
        emulator = self.emulator.with_arrays(faulty, set(changed))
        names = self.program.names
        live = np.zeros(0, dtype=np.int64)  # samples whose activations differ at the current checkpoint
        live_codes = None
        for seg in self._segments:
            keys = [k for k in changed if seg.contains(names.index(k.split("/", 1)[0]))]
            if not keys and not live.size:
                continue  # no fault here and nothing differs yet: the fault-free run holds
            golden_stop = self.cache[names[seg.stop]]
            parts_idx, parts_codes = [], []
            if live.size:  # samples already off the fault-free path: the whole segment, faulty weights
                out = emulator.run_codes(live_codes, start=names[seg.start], upto=names[seg.stop])
                still = _differs(out, golden_stop[live])
                parts_idx.append(live[still])
                parts_codes.append(out[still])
            if keys:  # the others, from the fault-free checkpoint
                rest = np.setdiff1d(np.arange(self.samples), live, assume_unique=True)
                idx, codes = self._segment_faults(emulator, seg, keys, changed, rest)
                parts_idx.append(idx)
                parts_codes.append(codes)
            live = np.concatenate(parts_idx)
            live_codes = np.concatenate(parts_codes) if live.size else None
        out = self.golden.copy()
        if live.size:
            out[live] = live_codes
        return self._outcome(out, n, effective)

    def _segment_faults(self, emulator: Emulator, seg: Segment, keys: list[str], changed: dict,
                        rest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Samples (among ``rest``) that the segment's faults push off the fault-free path, with their
        activations at the segment's end; on the touched channels only when the segment allows it."""
        names = self.program.names
        x = self.cache[names[seg.start]][rest]
        golden_stop = self.cache[names[seg.stop]][rest]
        channels = np.unique(np.concatenate([self._channels[k][changed[k]] for k in keys]))
        if seg.usable and len(channels) <= seg.channels // 2:
            part = seg.run(emulator, x, channels)
            differs = _differs(part, golden_stop[..., channels])
            codes = golden_stop[differs].astype(np.int64)
            codes[..., channels] = part[differs]
            return rest[differs], codes
        out = emulator.run_codes(x, start=names[seg.start], upto=names[seg.stop])
        differs = _differs(out, golden_stop)
        return rest[differs], out[differs]

    def full_evaluate(self, faultmap, x: np.ndarray) -> Outcome:
        """The reference: emulate the whole faulty network on every sample."""
        out = Emulator(self.program, faultmap.apply(self.image)).run(x)
        return self._outcome(out, len(faultmap), int(faultmap.effective(self.image)))

    def _outcome(self, out: np.ndarray, faults: int, effective: int) -> Outcome:
        flat = out.reshape(len(out), -1)
        mismatches = int(np.sum(np.any(flat != self.golden.reshape(len(out), -1), axis=1)))
        correct = int(np.sum(np.argmax(flat, axis=1) == self.y))
        return Outcome(correct, mismatches, faults, effective)


def _differs(codes: np.ndarray, golden: np.ndarray) -> np.ndarray:
    """Per sample: does any word differ?"""
    n = len(codes)
    if n == 0:
        return np.zeros(0, dtype=bool)
    return np.any(np.asarray(codes).reshape(n, -1) != np.asarray(golden).reshape(n, -1), axis=1)
