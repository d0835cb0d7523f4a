"""Fault models: small plug-ins with one signature, ``sample(image, rng) -> FaultMap``.

Models know nothing of campaigns; the campaign knows nothing of how a model picks bits. A model is a
frozen dataclass (so two specs can be compared and recorded), built from a YAML-like dict by
``fault_model_from_spec`` and written back by ``to_spec``. The rate is not part of the spec: a
campaign sweeps it, so it is passed separately.

Counts: "bernoulli" means every candidate bit (or word, for bursts) is hit independently with
probability ``rate``. It is drawn exactly in distribution but without touching every bit: the count
is ``Binomial(N, rate)``, then that many distinct positions are chosen uniformly. "exact" hits
``round(rate * N)`` distinct bits (Python's ``round``: halves go to the even count).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np

from hwflow.errors import FaultSpecError
from hwflow.faults.faultmap import FaultKind, FaultMap, split_key
from hwflow.faults.target import Target, field_error
from hwflow.image import WeightImage

MODES = ("bernoulli", "exact")
TARGET_KEYS = ("layers", "bits", "arrays")


class FaultModel(Protocol):
    name: ClassVar[str]  # the registry name used in specs
    spec_keys: ClassVar[tuple[str, ...]]  # the spec keys besides "model"

    def sample(self, image: WeightImage, rng: np.random.Generator) -> FaultMap: ...

    def describe(self) -> str: ...

    def to_spec(self) -> dict: ...


FAULT_MODELS: dict[str, type] = {}


def register_fault_model(cls: type) -> type:
    """Add a model class under its ``name``; a second model with the same name is refused."""
    if cls.name in FAULT_MODELS:
        msg = f"a fault model named {cls.name!r} is already registered ({FAULT_MODELS[cls.name].__name__})"
        raise FaultSpecError(msg)
    FAULT_MODELS[cls.name] = cls
    return cls


# --- field checks, shared by constructors (where = model name) and specs (where = file + entry) ------


def check_rate(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise field_error(where, "rate", f"a rate is a number in [0, 1], got {value!r}")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise field_error(where, "rate", f"a rate must be in [0, 1], got {value!r}")
    return float(value)


def check_mode(value: object, where: str) -> str:
    if value not in MODES:
        raise field_error(where, "mode", f"unknown mode {value!r} (expected bernoulli or exact)")
    return str(value)


def check_value(value: object, where: str) -> int | str:
    norm = {0: 0, 1: 1, "0": 0, "1": 1, "mixed": "mixed", "stuck0": 0, "stuck1": 1}
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value not in norm:
        raise field_error(where, "value", f"unknown stuck-at value {value!r} (expected 0, 1 or mixed)")
    return norm[value]


def check_length(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= 64:
        raise field_error(where, "length", f"a burst length is an integer 1..64, got {value!r}")
    return int(value)


def check_target(value: object, where: str) -> Target:
    if value is None:
        return Target()
    if not isinstance(value, Target):
        raise field_error(where, "target", f"expected a Target, got {value!r}")
    return value


# --- sampling helpers -------------------------------------------------------------------------------


def _count(rng: np.random.Generator, n: int, rate: float, mode: str) -> int:
    if mode == "exact":
        return min(n, round(rate * n))
    return int(rng.binomial(n, rate))


def _distinct(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """``k`` distinct positions of ``0..n-1``, uniformly, sorted. numpy's ``choice`` without replacement
    uses Floyd's algorithm (O(k)) when k is small against n, so large images stay cheap."""
    if k == 0:
        return np.zeros(0, np.int64)
    if k == n:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=k, replace=False, shuffle=False).astype(np.int64))


def _target_label(target: Target) -> str:
    text = target.describe()
    return f" {text}" if text else ""


# --- the models -------------------------------------------------------------------------------------


def _hit_bits(target: Target, rate: float, mode: str, image: WeightImage, rng: np.random.Generator):
    """The target's population and the flat indices of the bits a rate hits (None at rate 0).

    The population is built first even at rate 0, so a bad target fails on every trial alike.
    """
    pop = target.population(image)
    if rate == 0:
        return pop, None
    return pop, _distinct(rng, pop.n_bits, _count(rng, pop.n_bits, rate, mode))


@register_fault_model
@dataclass(frozen=True)
class BitFlip:
    """Transient flips (soft errors) at a bit-error rate over the target's bits."""

    name: ClassVar[str] = "bitflip"
    spec_keys: ClassVar[tuple[str, ...]] = ("mode", *TARGET_KEYS)
    rate: float
    mode: str = "bernoulli"
    target: Target = field(default_factory=Target)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", check_rate(self.rate, self.name))
        object.__setattr__(self, "target", check_target(self.target, self.name))
        object.__setattr__(self, "mode", check_mode(self.mode, self.name))

    def sample(self, image: WeightImage, rng: np.random.Generator) -> FaultMap:
        pop, flat = _hit_bits(self.target, self.rate, self.mode, image, rng)
        if flat is None:
            return FaultMap.empty()
        return FaultMap.build(pop.keys, *pop.locate_bits(flat), FaultKind.FLIP.code)

    def describe(self) -> str:
        return f"bitflip({self.mode}){_target_label(self.target)}"

    def to_spec(self) -> dict:
        return {"model": self.name, "mode": self.mode, **self.target.to_spec()}

    @classmethod
    def from_spec(cls, spec: Mapping, rate: float, where: str = "") -> BitFlip:
        return cls(check_rate(rate, where), check_mode(spec.get("mode", "bernoulli"), where),
                   Target.from_spec(spec, where))


@register_fault_model
@dataclass(frozen=True)
class StuckAt:
    """Permanent faults: a fraction ``rate`` of the target's bits read 0 or 1 whatever is written.
    ``value="mixed"`` makes each stuck bit 0 or 1 with probability 1/2."""

    name: ClassVar[str] = "stuck-at"
    spec_keys: ClassVar[tuple[str, ...]] = ("value", "mode", *TARGET_KEYS)
    rate: float
    value: int | str = "mixed"
    target: Target = field(default_factory=Target)
    mode: str = "bernoulli"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", check_rate(self.rate, self.name))
        object.__setattr__(self, "target", check_target(self.target, self.name))
        object.__setattr__(self, "value", check_value(self.value, self.name))
        object.__setattr__(self, "mode", check_mode(self.mode, self.name))

    def sample(self, image: WeightImage, rng: np.random.Generator) -> FaultMap:
        pop, flat = _hit_bits(self.target, self.rate, self.mode, image, rng)
        if flat is None:
            return FaultMap.empty()
        if self.value == "mixed":
            kind = FaultKind.STUCK0.code + rng.integers(0, 2, size=flat.size)
        else:
            kind = (FaultKind.STUCK1 if self.value == 1 else FaultKind.STUCK0).code
        return FaultMap.build(pop.keys, *pop.locate_bits(flat), kind)

    def describe(self) -> str:
        return f"stuck-at({self.value},{self.mode}){_target_label(self.target)}"

    def to_spec(self) -> dict:
        return {"model": self.name, "value": self.value, "mode": self.mode, **self.target.to_spec()}

    @classmethod
    def from_spec(cls, spec: Mapping, rate: float, where: str = "") -> StuckAt:
        return cls(check_rate(rate, where), check_value(spec.get("value", "mixed"), where),
                   Target.from_spec(spec, where), check_mode(spec.get("mode", "bernoulli"), where))


@register_fault_model
@dataclass(frozen=True)
class Burst:
    """Multi-bit upsets: ``length`` adjacent bits of one word flip together. Each candidate word is hit
    with probability ``rate`` (at most one burst per word); the start is uniform over the positions
    where the whole burst lies in allowed bits (adjacent in the word, inside its width)."""

    name: ClassVar[str] = "burst"
    spec_keys: ClassVar[tuple[str, ...]] = ("length", *TARGET_KEYS)
    rate: float
    length: int = 2
    target: Target = field(default_factory=Target)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", check_rate(self.rate, self.name))
        object.__setattr__(self, "target", check_target(self.target, self.name))
        object.__setattr__(self, "length", check_length(self.length, self.name))

    def starts(self, image: WeightImage) -> tuple[list, list[np.ndarray]]:
        """Per array that can hold a burst: the start bits where all ``length`` bits are allowed."""
        pop = self.target.population(image)
        arrays, starts = [], []
        for arr, bits in zip(pop.arrays, pop.bits, strict=True):
            ok = np.zeros(arr.format.width + self.length, dtype=bool)
            ok[bits] = True
            run = np.ones(arr.format.width, dtype=bool)
            for t in range(self.length):
                run &= ok[t : t + arr.format.width]
            if run.any():
                arrays.append(arr)
                starts.append(np.flatnonzero(run).astype(np.int16))
        if not arrays:
            msg = f"burst of {self.length} bits: no selected word has {self.length} adjacent allowed bits"
            raise FaultSpecError(msg)
        return arrays, starts

    def sample(self, image: WeightImage, rng: np.random.Generator) -> FaultMap:
        arrays, starts = self.starts(image)
        if self.rate == 0:
            return FaultMap.empty()
        sizes = np.array([a.size for a in arrays], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        n_words = int(offsets[-1])
        flat = _distinct(rng, n_words, _count(rng, n_words, self.rate, "bernoulli"))
        a = np.searchsorted(offsets, flat, side="right") - 1
        word = flat - offsets[a]
        n_starts = np.array([s.size for s in starts], dtype=np.int64)
        table_off = np.concatenate([[0], np.cumsum(n_starts)])
        pick = rng.integers(0, n_starts[a]) if flat.size else np.zeros(0, np.int64)
        first = np.concatenate(starts)[table_off[a] + pick]
        steps = np.arange(self.length, dtype=np.int16)
        bit = (first[:, None] + steps[None, :]).reshape(-1)
        return FaultMap.build(tuple(x.key for x in arrays), np.repeat(a, self.length),
                              np.repeat(word, self.length), bit, FaultKind.FLIP.code)

    def describe(self) -> str:
        return f"burst(length={self.length}){_target_label(self.target)}"

    def to_spec(self) -> dict:
        return {"model": self.name, "length": self.length, **self.target.to_spec()}

    @classmethod
    def from_spec(cls, spec: Mapping, rate: float, where: str = "") -> Burst:
        return cls(check_rate(rate, where), check_length(spec.get("length", 2), where),
                   Target.from_spec(spec, where))


def _explicit_faults(faults: object, where: str) -> tuple[tuple[str, int, int, str], ...]:
    if not isinstance(faults, (list, tuple)) or not faults:
        raise field_error(where, "faults", "a non-empty list of [array, index, bit, kind] entries is required")
    out = []
    for i, entry in enumerate(faults):
        here = f"faults[{i}]"
        if isinstance(entry, Mapping):
            unknown = set(entry) - {"array", "index", "bit", "kind"}
            if unknown:
                raise field_error(where, here,
                                  f"unknown keys {sorted(unknown, key=str)} (allowed: array, index, bit, kind)")
            entry = (entry.get("array"), entry.get("index"), entry.get("bit"), entry.get("kind", "flip"))
        if not isinstance(entry, (list, tuple)) or len(entry) not in (3, 4):
            raise field_error(where, here, f"expected [array, index, bit] or [array, index, bit, kind], got {entry!r}")
        key, index, bit, kind = (*entry, "flip") if len(entry) == 3 else entry
        try:
            if not isinstance(key, str):
                msg = f"the array is 'layer/name' or a layer name (its weight), got {key!r}"
                raise FaultSpecError(msg)
            rec = FaultMap.from_records([(key, index, bit, kind)])
        except FaultSpecError as err:
            raise field_error(where, here, str(err)) from None
        out.append(("/".join(split_key(key)), int(rec.index[0]), int(rec.bit[0]), FaultKind.parse(kind).value))
    return tuple(out)


@register_fault_model
@dataclass(frozen=True)
class Explicit:
    """A fixed list of faults (a known-bad bit, a reproduction): the same map whatever the rng or
    rate. Entries are ``(array, index, bit, kind)``; ``array`` is ``"layer/name"`` or a layer name
    meaning its weight; ``kind`` defaults to flip. Checked against the image on every sample."""

    name: ClassVar[str] = "explicit"
    spec_keys: ClassVar[tuple[str, ...]] = ("faults",)
    faults: tuple[tuple[str, int, int, str], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "faults", _explicit_faults(self.faults, self.name))
        object.__setattr__(self, "_map", FaultMap.from_records(self.faults))

    def sample(self, image: WeightImage, rng: np.random.Generator | None = None) -> FaultMap:
        self._map.check(image)
        return self._map

    def describe(self) -> str:
        return f"explicit({len(self.faults)} faults)"

    def to_spec(self) -> dict:
        return {"model": self.name, "faults": [list(f) for f in self.faults]}

    @classmethod
    def from_spec(cls, spec: Mapping, rate: float | None = None, where: str = "") -> Explicit:
        return cls(_explicit_faults(spec.get("faults"), where))


def fault_model_from_spec(spec: Mapping, rate: float | None, where: str = "") -> FaultModel:
    """Build a model from a YAML-like dict (``{"model": "bitflip", "mode": "exact", "bits": ["msb"]}``).

    ``rate`` comes from the campaign's sweep, not from the spec; ``explicit`` ignores it. ``where``
    prefixes every error (``"campaign.yaml: faults[1]"``), and each error names its field.
    """
    known = ", ".join(FAULT_MODELS)
    if not isinstance(spec, Mapping):
        msg = f"{where or 'fault model'}: expected a mapping with a 'model' key ({known}), got {spec!r}"
        raise FaultSpecError(msg)
    name = spec.get("model")
    if name is None:
        raise field_error(where, "model", f"missing; known fault models: {known}")
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else ""
    key = {"stuckat": "stuck-at", "bit-flip": "bitflip"}.get(key, key)
    if key not in FAULT_MODELS:
        raise field_error(where, "model", f"unknown fault model {name!r} (known: {known})")
    cls = FAULT_MODELS[key]
    allowed = cls.spec_keys
    for k in spec:
        if k == "model":
            continue
        if k == "rate":
            raise field_error(where, "rate", "the rate is set by the campaign's rate sweep, not in the model spec")
        if k not in allowed:
            raise field_error(where, str(k), f"unknown key for {key} (allowed: model, {', '.join(allowed)})")
    if key != "explicit" and rate is None:
        raise field_error(where, "rate", f"{key} needs a rate in [0, 1]")
    return cls.from_spec(spec, rate, where)
