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
from pathlib import Path

import numpy as np

from hwflow.campaign.delta import Golden, Step, rule_for
from hwflow.campaign.delta.chain import FoldedChain, longest_fold, runs
from hwflow.campaign.delta.golden import bytes_per_sample
from hwflow.campaign.delta.hoist import apply_step, chains, pool_blocks, pool_casts, pool_geometry, step_function
from hwflow.campaign.delta.state import Delta, apply, trim
from hwflow.campaign.golden_cache import GoldenCache
from hwflow.campaign.metric import TrialMetric, changed_rows
from hwflow.emulator import Emulator, Kind, Program
from hwflow.emulator.run import Weights
from hwflow.image import WeightImage
from hwflow.metrics import MetricSpec

log = logging.getLogger(__name__)

MAC_KINDS = (Kind.DENSE, Kind.CONV1D, Kind.CONV2D)
CROP_SHARE = 0.7  # a convolution before a hoisted pool computes only the positions the pool reads when
# they are at most this share of its output (cnn-fmnist: conv3's 2x2 of 3x3, not conv2's 10x10 of 11x11)
MEMORY = 3 << 30  # bytes of fault-free codes kept at once (issue 11: at most 4 GiB in all)
RERUN_CHUNK = 256  # samples per pass of a rerun
DENSE = 0.3  # on a graph, a trial whose blocks cover this share of some value's codes reruns the rest of the
# network fused from there (``TrialEvaluator._rerun``). Measured, one thread: on resnet8 (1,000 images) a dense
# trial's delta rules cost 1.6-2x a full fused pass (every stack reaches every sample through the shortcuts),
# and the rerun halves its trials (1e-4: 597 -> 305 ms); on cnn-fmnist's chain the delta rules stay the
# cheaper (1e-3: 90 ms against 192 ms rerun), so a chain keeps them


@dataclass(frozen=True)
class Outcome:
    """What one fault map did to the network on the evaluation samples."""

    correct: int
    mismatches: int  # samples whose output words differ from the fault-free output
    faults: int
    effective: int
    metric: float = float("nan")  # the campaign's metric (``TrialEvaluator.metric``: top-1 unless given)


def _logical_positions(arr) -> np.ndarray:
    """For each stored word (firmware order), its flat index in the logical (Keras) layout."""
    n = arr.size
    firmware_at = arr.to_logical(np.arange(n)).reshape(-1)  # firmware index at each logical position
    logical = np.empty(n, dtype=np.int64)
    logical[firmware_at] = np.arange(n)
    return logical


class TrialEvaluator:
    """Holds the fault-free run of one variant on the evaluation samples, and evaluates fault maps."""

    def __init__(self, program: Program, image: WeightImage, x: np.ndarray, y: np.ndarray, chunk: int = 256,
                 memory: int = MEMORY, metric: MetricSpec | None = None, targets: np.ndarray | None = None,
                 golden_cache: str | Path | None = None, dense: float | str | None = "auto"):
        """``memory``: bytes the fault-free codes may take. When the evaluation samples need more, they
        are split into chunks that fit; each trial batch then walks the chunks, recomputing each
        chunk's fault-free pass once per batch (``evaluate_many`` amortizes it over the batch).
        ``golden_cache``: a folder of fault-free passes under content keys (``hwflow.campaign.golden_cache``),
        read instead of recomputed where an entry is there; None: the one ``HWFLOW_GOLDEN_CACHE`` names, if any.
        ``dense``: the share of a value's codes a trial's blocks must cover for the rest of the network to
        rerun on the emulator's fused path from there, on the faulty codes and weights (``_rerun``); None:
        the delta rules run to the end; ``"auto"``: ``DENSE`` on a graph, None on a chain."""
        self._golden_cache = GoldenCache(golden_cache) if golden_cache is not None else GoldenCache.from_env()
        from hwflow.emulator.fused import sequential

        self.dense = (None if sequential(program) else DENSE) if dense == "auto" else dense
        self._cuts: dict[int, tuple[str, ...] | None] = {}  # layer -> the kept values its rerun starts from
        self.program = program
        self.image = image
        self.x = x
        self.y = np.asarray(y)
        self.emulator = Emulator(program, image, chunk=chunk)
        per_sample = max(1, bytes_per_sample(program))
        step = max(1, int(memory // per_sample))
        self._ranges = [(lo, min(lo + step, len(x))) for lo in range(0, len(x), step)] or [(0, 0)]
        if len(self._ranges) > 1:
            log.info("%d samples need %.0f MiB of fault-free codes: %d chunks of %d samples", len(x),
                     per_sample * len(x) / 2**20, len(self._ranges), step)
        self._stores: dict[int, Golden] = {}
        outputs = [self._store(i).output for i in range(len(self._ranges))]
        names = program.names
        self._index = {name: i for i, name in enumerate(names)}
        self._logical = {a.key: _logical_positions(a) for a in image if a.layer in self._index}
        self._clean = {(a.layer, a.name): Weights.of(a) for a in image if a.layer in self._index}
        self._types = {layer.name: layer.result for layer in program.layers}
        # Layers read by the next layer alone: a chain is hoisted past, and a convolution's output cropped
        # to a pool's windows, only where no other layer (a branch, a merge) reads what is skipped.
        readers = program.readers
        self._only_next = {i for i, layer in enumerate(program.layers) if readers[layer.name] == [i + 1]}
        self._chains = {start: end for start, end in chains(program).items()
                        if all(k in self._only_next for k in range(start, end))}
        # The last layer reading each output: a trial's blocks of a layer are dropped after it.
        self._last_use = program.last_use
        self._steps: dict[int, tuple | None] = {}  # chain start -> its folded step function (or None)
        # Runs of per-channel layers without a pool (batch norm, ReLU after a convolution or a merge), folded
        # into one step function where they fold (``delta.chain``): (start, stop) -> the fold or None.
        self._runs = runs(program)
        self._folds: dict[tuple[int, int], FoldedChain | None] = {}
        # A run whose last layer is read by one layer alone, whose rule steps blocks on the fly (a merge):
        # its blocks stay unstepped (``chain.PendingStep``). A run read alone from a layer whose rule can
        # finish with it (``delta_then``: a merge, then ReLU) runs in that rule's pass.
        self._lazy = {k: len(readers[layer.name]) == 1 and self._offers(program.layers[readers[layer.name][0]],
                                                                       "takes_pending")
                      for k, layer in enumerate(program.layers)}
        self._then = {k for k in self._runs if program.layers[k].inputs[0] == program.layers[k - 1].name
                      and readers[program.layers[k - 1].name] == [k] and self._offers(program.layers[k - 1],
                                                                                    "delta_then")}
        # Trim at the kept layers except accumulator outputs (rarely sparser than what follows them).
        self._trim = {layer.name: self.store.has(layer.name) and layer.kind not in MAC_KINDS
                      for layer in program.layers}
        self.golden = np.concatenate(outputs).astype(np.int64)
        self.golden_correct = int(np.sum(np.argmax(self.golden.reshape(len(self.y), -1), axis=1) == self.y))
        # The task's metric (``metric``: top-1 by default; ``targets``: a regression metric's), scored per trial
        # from the samples whose outputs changed: the others keep their fault-free terms.
        self.metric = TrialMetric(metric or MetricSpec(), self.golden, program.output.result.frac, x, self.y,
                                  targets)

    @property
    def store(self) -> Golden:
        """The fault-free codes of the chunk in memory (all samples when they fit)."""
        return next(iter(self._stores.values()))

    def _store(self, i: int) -> Golden:
        if i not in self._stores:
            self._stores.clear()  # one chunk in memory at a time
            lo, hi = self._ranges[i]

            def build(lo=lo, hi=hi) -> Golden:
                return Golden(self.program, self.image, self.emulator, self.x[lo:hi])

            cache = self._golden_cache
            self._stores[i] = build() if cache is None else cache.fault_free(self.program, self.image, self.x, lo,
                                                                             hi, build)
        return self._stores[i]

    @property
    def samples(self) -> int:
        return len(self.y)

    def evaluate(self, faultmap) -> Outcome:
        """Result of running the network with ``faultmap`` applied to its weight memory."""
        return self.evaluate_many([faultmap])[0]

    def evaluate_many(self, faultmaps: Sequence, threads: int = 1) -> list[Outcome]:
        """``[evaluate(m) for m in faultmaps]``, identical results; the runner hands a task's trials over
        together. ``threads > 1`` evaluates trials side by side on one fault-free run (numpy releases the
        GIL in its kernels; BLAS is limited to one thread meanwhile, so the cores are not oversubscribed)."""
        counts = [(len(m), int(m.effective(self.image)) if len(m) else 0) for m in faultmaps]
        live = [i for i, (n, effective) in enumerate(counts) if effective]
        parts = {i: [] for i in live}
        for c in range(len(self._ranges)):
            if not live:
                break
            store = self._store(c)
            lo, hi = self._ranges[c]

            def one(i, store=store, lo=lo, hi=hi):
                return self._partial(self._propagate(faultmaps[i], store), store, lo, hi)

            if threads <= 1 or len(live) <= 1:
                results = [one(i) for i in live]
            else:
                from concurrent.futures import ThreadPoolExecutor

                from threadpoolctl import threadpool_limits

                with threadpool_limits(1), ThreadPoolExecutor(threads) as pool:
                    results = list(pool.map(one, live))
            for i, r in zip(live, results, strict=True):
                parts[i].append(r)
        out = []
        for i, (n, effective) in enumerate(counts):
            mine = parts.get(i, [])
            correct = self.golden_correct + sum(p[0] for p in mine)
            mismatches = sum(p[1] for p in mine)
            value = (self.metric.changed(np.concatenate([p[2] for p in mine]), np.concatenate([p[3] for p in mine]))
                     if mine else self.metric.golden_value)
            out.append(Outcome(correct, mismatches, n, effective, value))
        return out

    def layer_step(self, name: str, inputs: Delta, faultmap) -> Step:
        """What layer ``name``'s rule is given in a trial of ``faultmap`` whose input differs by ``inputs``
        (for tests and diagnostics: ``rule_for(layer).delta(step)``)."""
        return self._step(self.program.layer(name), inputs, self._changes(faultmap)[0].get(name, {}), self._store(0))

    def output_codes(self, faultmap) -> np.ndarray:
        """The faulty network's output codes for every sample (int64), by delta propagation."""
        return np.concatenate([apply(self._propagate(faultmap, self._store(c)), self._store(c).output)
                               for c in range(len(self._ranges))])

    def full_evaluate(self, faultmap, x: np.ndarray) -> Outcome:
        """The reference: emulate the whole faulty network on every sample."""
        out = Emulator(self.program, faultmap.apply(self.image)).run(x)
        return self._outcome_codes(out, len(faultmap), int(faultmap.effective(self.image)))

    # --- propagation -------------------------------------------------------------------------------

    def _changes(self, faultmap) -> tuple[dict[str, dict[str, tuple]], WeightImage]:
        """Per layer, per array: the logical flat indices of the words the map really changes, and the
        faulty array; with the faulty image."""
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
        return changed, faulty

    def _propagate(self, faultmap, store: Golden) -> Delta:
        """The blocks by which the output differs from the fault-free output."""
        changed, faulty = self._changes(faultmap)
        if not changed:
            return []
        layers = self.program.layers
        first = min(self._index[name] for name in changed)
        last = max(self._index[name] for name in changed)
        deltas: dict[str, Delta] = {}
        cropped = set()  # convolutions whose blocks hold only the positions a hoisted pool reads (no rerun from them)
        i = first
        while i < len(layers):
            layer = layers[i]
            cut = self._cut(i, store) if self.dense is not None and i > first else None
            if cut is not None and not cropped.intersection(cut) and self._is_dense(cut, deltas, store.samples):
                return self._rerun(i, cut, deltas, changed, faulty, store)
            inputs = deltas.get(layer.inputs[0], []) if i > first else []
            more = tuple(deltas.get(name, []) for name in layer.inputs[1:])  # a merge's other inputs
            mine = changed.get(layer.name, {})
            if not inputs and not mine and not any(more):
                if i > last and not any(deltas.values()):
                    return []  # every delta vanished after the last faulty layer (on every branch)
                deltas[layer.name] = []
                self._release(deltas, i)
                i += 1
                continue
            end = self._chains.get(i)
            if end is not None and not mine and all(layers[k].name not in changed for k in range(i, end)):
                hoisted = self._hoisted(i, end, inputs, store)
                if hoisted is not None:
                    deltas[layers[end].name] = hoisted
                    self._release(deltas, end)
                    i = end + 1
                    continue
            folded = self._folded(i, changed) if not mine and not any(more) else None
            if folded is not None:
                end = folded.stop - 1
                lazy = self._lazy[end]
                out = folded.apply(inputs, lazy=lazy)
                if self._trim.get(layers[end].name) and not lazy:
                    out = trim(out, store[layers[end].name])
                deltas[layers[end].name] = out
                self._release(deltas, end)
                i = end + 1
                continue
            step = self._step(layer, inputs, mine, store)
            step.crop = self._crop(i, changed)
            if step.crop is not None:
                cropped.add(layer.name)
            step.more_inputs = more
            rule = rule_for(layer)
            after = self._folded(i + 1, changed) if i + 1 in self._then else None
            out = rule.delta_then(step, after) if after is not None else None
            if out is not None:  # the rule ran the folded chain after it in the same pass
                end = after.stop - 1
                if self._trim.get(layers[end].name):
                    out = trim(out, store[layers[end].name])
                deltas[layers[end].name] = out
                self._release(deltas, end)
                i = end + 1
                continue
            out = rule.delta(step)
            if self._trim.get(layer.name):
                out = trim(out, store[layer.name])
            deltas[layer.name] = out
            self._release(deltas, i)
            i += 1
        return deltas[layers[-1].name]

    def _cut(self, i: int, store: Golden) -> tuple[str, ...] | None:
        """The values computed before layer ``i`` that layers ``i..`` read, when the fault-free pass keeps
        every one of them (so a trial's faulty codes of each can be written); None: no rerun from ``i``."""
        if i not in self._cuts:
            layers = self.program.layers
            names = tuple(dict.fromkeys(n for layer in layers[i:] for n in layer.inputs if self._index[n] < i))
            self._cuts[i] = names if names and all(store.has(n) for n in names) else None
        return self._cuts[i]

    def _is_dense(self, cut: tuple[str, ...], deltas: dict[str, Delta], samples: int) -> bool:
        """Whether the blocks of some value of ``cut`` cover at least ``dense`` of its codes."""
        for name in cut:
            delta = deltas.get(name)
            if delta:
                held = sum(len(b.samples) * len(b.channels) for b in delta)
                if held >= self.dense * samples * int(self.program.layer(name).output_shape[-1]):
                    return True
        return False

    def _rerun(self, i: int, cut: tuple[str, ...], deltas: dict[str, Delta], changed: dict, faulty: WeightImage,
               store: Golden) -> Delta:
        """The output blocks of a trial whose deltas turned dense at layer ``i``: layers ``i..`` rerun on the
        emulator's fused path (exact, as every pass of it), with the faulty weights, from the faulty codes of
        ``cut``, for the samples some block holds (every sample when a later layer's own words are faulty)."""
        from hwflow.campaign.delta.fallback import faulty_input
        from hwflow.campaign.delta.golden import compact_dtype
        from hwflow.campaign.delta.state import Block, covered

        if any(self._index[name] >= i for name in changed):
            samples = np.arange(store.samples, dtype=np.int64)
        else:
            samples = np.unique(np.concatenate([covered(deltas.get(name, [])) for name in cut]))
        values = {name: faulty_input(store[name], deltas.get(name, []), samples,
                                     dtype=compact_dtype(self.program.layer(name).result)) for name in cut}
        keys = {f"{layer}/{array}" for layer, arrays in changed.items() for array in arrays}
        emulator = self.emulator.with_arrays(faulty, keys)
        first = self.program.layers[i].name
        out = []
        for lo in range(0, len(samples), RERUN_CHUNK):  # a chunk's activations stay small (two trials run side by side)
            part = emulator.run_values({name: v[lo : lo + RERUN_CHUNK] for name, v in values.items()}, first)
            out += trim([Block(samples[lo : lo + RERUN_CHUNK], np.arange(part.shape[-1], dtype=np.int64), part)],
                        store.output)
        return out

    @staticmethod
    def _offers(layer, what: str) -> bool:
        """Whether ``layer``'s rule has the optional ``what`` (the input layer has no rule)."""
        return layer.kind is not Kind.INPUT and bool(getattr(rule_for(layer), what, False))

    def _folded(self, i: int, changed: dict) -> FoldedChain | None:
        """The run of per-channel layers from ``i`` up to its first faulty layer, folded (``delta.chain``);
        ``None`` where there is no run or it does not fold (the layers' own rules run)."""
        stop = self._runs.get(i)
        if stop is None:
            return None
        stop = next((k for k in range(i, stop) if self.program.layers[k].name in changed), stop)
        if stop == i:
            return None
        if (i, stop) not in self._folds:
            self._folds[(i, stop)] = longest_fold(self.program, i, stop, self._clean)
        return self._folds[(i, stop)]

    def _release(self, deltas: dict[str, Delta], i: int) -> None:
        """Drop the blocks that no layer after ``i`` reads."""
        for name in [n for n in deltas if self._last_use.get(n, -1) <= i and n != self.program.layers[-1].name]:
            del deltas[name]

    def _step(self, layer, inputs: Delta, mine: dict, store: Golden) -> Step:
        weights = {name: self._clean[(layer.name, name)] for name in layer.arrays if (layer.name, name) in self._clean}
        for name, (_, arr) in mine.items():
            weights[name] = Weights.of(arr)
        return Step(layer, self._types[layer.inputs[0]], inputs, store, self.emulator, weights,
                    {name: self._clean[(layer.name, name)] for name in weights},
                    {name: idx for name, (idx, _) in mine.items()})

    def _crop(self, i: int, changed: dict) -> tuple[int, ...] | None:
        """The spatial positions of layer ``i``'s output that a hoisted pool after it reads (its windows),
        when the chain after ``i`` is sure to be hoisted (unfaulted, folded); ``None``: all of them."""
        layers = self.program.layers
        end = self._chains.get(i + 1)
        if end is None or layers[i].kind not in (Kind.CONV1D, Kind.CONV2D):
            return None
        if i not in self._only_next:  # a branch reads every position
            return None
        if any(layers[k].name in changed for k in range(i + 1, end)):
            return None
        if i + 1 not in self._steps:
            self._steps[i + 1] = step_function(self.program, i + 1, end, self._clean)
        if self._steps[i + 1] is None:
            return None
        size, stride, _ = pool_geometry(layers[end])
        pooled = layers[end].output_shape[:-1]
        crop = tuple((p - 1) * st + sz for p, st, sz in zip(pooled, stride, size, strict=True))
        # Worth it where it drops many positions (strided views of the cut cost more than a few rows).
        return crop if np.prod(crop) <= CROP_SHARE * np.prod(layers[i].output_shape[:-1]) else None

    def _hoisted(self, start: int, end: int, inputs: Delta, store: Golden) -> Delta | None:
        """Layers ``start..end`` (monotone per-channel layers, then a max pool) with the pool first, and
        the chain folded into one step function where it folds; ``None`` when some layer of the chain
        is not monotone."""
        layers = self.program.layers
        if start not in self._steps:
            self._steps[start] = step_function(self.program, start, end, self._clean)
        folded = self._steps[start]
        if folded is not None:
            signs = np.where(folded[0] < 0, -1, 1)
            blocks = apply_step(pool_blocks(inputs, layers[end], signs), folded)
            return trim(blocks, store[layers[end].name]) if store.has(layers[end].name) else blocks
        steps = [self._step(layers[k], [], {}, store) for k in range(start, end)]
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
        return trim(blocks, store[layers[end].name]) if store.has(layers[end].name) else blocks

    def _partial(self, delta: Delta, store: Golden, lo: int, hi: int) -> tuple:
        """(change of the correct count, mismatching samples, the samples the blocks hold and their faulty
        output codes, for the metric) of one chunk's samples ``lo..hi``."""
        gained = mismatches = 0
        flat_golden = self.golden[lo:hi].reshape(hi - lo, -1)
        for b in delta:
            part = self.golden[lo:hi][b.samples]
            part[..., b.channels] = b.values
            out = part.reshape(len(b.samples), -1)
            y = self.y[lo:hi][b.samples]
            gained += int(np.sum(np.argmax(out, axis=1) == y)) - int(
                np.sum(np.argmax(flat_golden[b.samples], axis=1) == y))
            mismatches += int(np.sum(np.any(out != flat_golden[b.samples], axis=1)))
        samples, rows = changed_rows(delta, self.golden[lo:hi])
        return gained, mismatches, samples + lo, rows

    def _outcome_codes(self, out: np.ndarray, faults: int, effective: int) -> Outcome:
        flat = out.reshape(len(out), -1)
        mismatches = int(np.sum(np.any(flat != self.golden.reshape(len(out), -1), axis=1)))
        correct = int(np.sum(np.argmax(flat, axis=1) == self.y))
        return Outcome(correct, mismatches, faults, effective, self.metric.full(out))
