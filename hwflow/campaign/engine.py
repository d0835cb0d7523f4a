"""Evaluate fault maps as the difference they make to the fault-free run: exactly, and only where
a fault changed something.

The fault-free run of the evaluation samples is computed once (``Golden``, compact codes). A trial
then walks the layers from the first faulty one and hands each layer's rule (``hwflow.campaign.
delta``) the blocks of codes that differ from the fault-free run; the rule returns exactly the
blocks that differ at its output. Blocks are trimmed against the fault-free codes wherever those
are kept, so a sample whose deltas vanish leaves the trial, and a trial whose deltas all vanish
after its last faulty layer stops there with the fault-free result. A fault map that changes no
stored bit costs nothing.

``full_evaluate`` is the plain reference (emulate the faulty network on every sample); the tests
check that both agree on outcomes and on every output code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hwflow.campaign.delta import Golden, Step, rule_for
from hwflow.campaign.delta.hoist import chains, pool_blocks, pool_casts
from hwflow.campaign.delta.state import Delta, apply, trim
from hwflow.emulator import Emulator, Kind, Program
from hwflow.emulator.run import Weights
from hwflow.image import WeightImage

log = logging.getLogger(__name__)

MAC_KINDS = (Kind.DENSE, Kind.CONV1D, Kind.CONV2D)


@dataclass(frozen=True)
class Outcome:
    """What one fault map did to the network on the evaluation samples."""

    correct: int
    mismatches: int  # samples whose output words differ from the fault-free output
    faults: int
    effective: int


def _logical_positions(arr) -> np.ndarray:
    """For each stored word (firmware order), its flat index in the logical (Keras) layout."""
    n = arr.size
    firmware_at = arr.to_logical(np.arange(n)).reshape(-1)  # firmware index at each logical position
    logical = np.empty(n, dtype=np.int64)
    logical[firmware_at] = np.arange(n)
    return logical


class TrialEvaluator:
    """Holds the fault-free run of one variant on the evaluation samples, and evaluates fault maps."""

    def __init__(self, program: Program, image: WeightImage, x: np.ndarray, y: np.ndarray, chunk: int = 256):
        self.program = program
        self.image = image
        self.y = np.asarray(y)
        self.emulator = Emulator(program, image, chunk=chunk)
        self.store = Golden(program, image, self.emulator, x)
        names = program.names
        self._index = {name: i for i, name in enumerate(names)}
        self._logical = {a.key: _logical_positions(a) for a in image if a.layer in self._index}
        self._clean = {(a.layer, a.name): Weights.of(a) for a in image if a.layer in self._index}
        self._types = {layer.name: layer.result for layer in program.layers}
        self._chains = chains(program)
        # Trim at the kept layers except accumulator outputs (rarely sparser than what follows them).
        self._trim = {layer.name: self.store.has(layer.name) and layer.kind not in MAC_KINDS
                      for layer in program.layers}
        self.golden = self.store.output.astype(np.int64)
        self.golden_correct = int(np.sum(np.argmax(self.golden.reshape(len(self.y), -1), axis=1) == self.y))

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
        return self._outcome(self._propagate(faultmap), n, effective)

    def evaluate_many(self, faultmaps: Sequence, threads: int = 1) -> list[Outcome]:
        """``[evaluate(m) for m in faultmaps]``, identical results; the runner hands a task's trials over
        together. ``threads > 1`` evaluates trials side by side on one fault-free run (numpy releases the
        GIL in its kernels; BLAS is limited to one thread meanwhile, so the cores are not oversubscribed)."""
        if threads <= 1 or len(faultmaps) <= 1:
            return [self.evaluate(m) for m in faultmaps]
        from concurrent.futures import ThreadPoolExecutor

        from threadpoolctl import threadpool_limits

        with threadpool_limits(1), ThreadPoolExecutor(threads) as pool:
            return list(pool.map(self.evaluate, faultmaps))

    def layer_step(self, name: str, inputs: Delta, faultmap) -> Step:
        """What layer ``name``'s rule is given in a trial of ``faultmap`` whose input differs by ``inputs``
        (for tests and diagnostics: ``rule_for(layer).delta(step)``)."""
        return self._step(self.program.layer(name), inputs, self._changes(faultmap).get(name, {}))

    def output_codes(self, faultmap) -> np.ndarray:
        """The faulty network's output codes for every sample (int64), by delta propagation."""
        return apply(self._propagate(faultmap), self.store.output)

    def full_evaluate(self, faultmap, x: np.ndarray) -> Outcome:
        """The reference: emulate the whole faulty network on every sample."""
        out = Emulator(self.program, faultmap.apply(self.image)).run(x)
        return self._outcome_codes(out, len(faultmap), int(faultmap.effective(self.image)))

    # --- propagation -------------------------------------------------------------------------------

    def _changes(self, faultmap) -> dict[str, dict[str, np.ndarray]]:
        """Per layer, per array: the logical flat indices of the words the map really changes."""
        faulty = faultmap.apply(self.image)
        changed: dict[str, dict[str, np.ndarray]] = {}
        for key in faultmap.keys_touched():
            layer, name = key.split("/", 1)
            if layer not in self._index:
                continue
            old, new = self.image.get(layer, name), faulty.get(layer, name)
            where = np.flatnonzero(new.words != old.words)
            if where.size:
                changed.setdefault(layer, {})[name] = (np.sort(self._logical[key][where]), new)
        return changed

    def _propagate(self, faultmap) -> Delta:
        """The blocks by which the output differs from the fault-free output."""
        changed = self._changes(faultmap)
        if not changed:
            return []
        layers = self.program.layers
        first = min(self._index[name] for name in changed)
        last = max(self._index[name] for name in changed)
        deltas: dict[str, Delta] = {}
        i = first
        while i < len(layers):
            layer = layers[i]
            inputs = deltas.get(layer.inputs[0], []) if i > first else []
            mine = changed.get(layer.name, {})
            if not inputs and not mine:
                if i > last:
                    return []  # every delta vanished after the last faulty layer
                deltas[layer.name] = []
                i += 1
                continue
            end = self._chains.get(i)
            if end is not None and not mine and all(layers[k].name not in changed for k in range(i, end)):
                hoisted = self._hoisted(i, end, inputs)
                if hoisted is not None:
                    deltas[layers[end].name] = hoisted
                    deltas.pop(layer.inputs[0], None)
                    i = end + 1
                    continue
            out = rule_for(layer).delta(self._step(layer, inputs, mine))
            if self._trim.get(layer.name):
                out = trim(out, self.store[layer.name])
            deltas[layer.name] = out
            deltas.pop(layer.inputs[0], None)
            i += 1
        return deltas[layers[-1].name]

    def _step(self, layer, inputs: Delta, mine: dict) -> Step:
        weights = {name: self._clean[(layer.name, name)] for name in layer.arrays if (layer.name, name) in self._clean}
        for name, (_, arr) in mine.items():
            weights[name] = Weights.of(arr)
        return Step(layer, self._types[layer.inputs[0]], inputs, self.store, self.emulator, weights,
                    {name: self._clean[(layer.name, name)] for name in weights},
                    {name: idx for name, (idx, _) in mine.items()})

    def _hoisted(self, start: int, end: int, inputs: Delta) -> Delta | None:
        """Layers ``start..end`` (monotone per-channel layers, then a max pool) with the pool first;
        ``None`` when some layer of the chain is not monotone."""
        layers = self.program.layers
        steps = [self._step(layers[k], [], {}) for k in range(start, end)]
        signs = 1
        for step in steps:
            sign = getattr(rule_for(step.layer), "monotone", lambda _: None)(step)
            if sign is None:
                return None
            signs = signs * np.asarray(sign)
        blocks = pool_blocks(inputs, layers[end], signs)
        for step in steps:
            step.inputs = blocks
            blocks = rule_for(step.layer).delta(step)
        blocks = pool_casts(blocks, layers[end], self._types[layers[end - 1].name])
        return trim(blocks, self.store[layers[end].name]) if self.store.has(layers[end].name) else blocks

    def _outcome(self, delta: Delta, faults: int, effective: int) -> Outcome:
        if not delta:
            return Outcome(self.golden_correct, 0, faults, effective)
        correct = self.golden_correct
        mismatches = 0
        flat_golden = self.golden.reshape(self.samples, -1)
        for b in delta:
            part = self.golden[b.samples]
            part[..., b.channels] = b.values
            out = part.reshape(len(b.samples), -1)
            y = self.y[b.samples]
            correct += int(np.sum(np.argmax(out, axis=1) == y)) - int(
                np.sum(np.argmax(flat_golden[b.samples], axis=1) == y))
            mismatches += int(np.sum(np.any(out != flat_golden[b.samples], axis=1)))
        return Outcome(correct, mismatches, faults, effective)

    def _outcome_codes(self, out: np.ndarray, faults: int, effective: int) -> Outcome:
        flat = out.reshape(len(out), -1)
        mismatches = int(np.sum(np.any(flat != self.golden.reshape(len(out), -1), axis=1)))
        correct = int(np.sum(np.argmax(flat, axis=1) == self.y))
        return Outcome(correct, mismatches, faults, effective)
