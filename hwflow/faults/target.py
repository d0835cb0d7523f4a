"""Where faults may land: the layers, array roles and bit positions a fault model is restricted to.

Every fault model samples from a ``Population``: the selected stored arrays, in image order, each
with its allowed bit positions. Numbering the candidate bits array by array, word by word, is what
makes a sample depend only on the image's structure, the model's parameters and the generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from hwflow.errors import FaultSpecError
from hwflow.image import Kind, StoredArray, WeightImage

ROLES = ("weight", "bias", "scale", "param")  # the array roles a WeightImage holds (scale: batch-norm; param: PReLU)
BIT_ALIASES = ("msb", "sign")  # resolved per array: bit width-1 (the sign bit of signed fixed and float)


def field_error(where: str, field: str, message: str) -> FaultSpecError:
    """``"campaign.yaml: faults[1].mode: unknown mode 'foo' ..."``: the file, the entry and the field."""
    path = f"{where}.{field}" if where else field
    return FaultSpecError(f"{path}: {message}")


def _as_tuple(value: object) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _unique(items: tuple) -> tuple:
    return tuple(dict.fromkeys(items))


def check_layers(value: object, where: str) -> tuple[str | int, ...] | None:
    if value is None:
        return None
    items = _as_tuple(value)
    if not items:
        raise field_error(where, "layers", "an empty list selects nothing; leave it out to select every layer")
    for item in items:
        ok_int = isinstance(item, (int, np.integer)) and not isinstance(item, bool)
        if not (ok_int or (isinstance(item, str) and item)):
            raise field_error(where, "layers", f"{item!r} is neither a layer name nor a layer index")
    return _unique(tuple(int(i) if not isinstance(i, str) else i for i in items))


def check_bits(value: object, where: str) -> tuple[int | str, ...] | None:
    if value is None:
        return None
    items = _as_tuple(value)
    if not items:
        raise field_error(where, "bits", "an empty list selects nothing; leave it out to allow every bit")
    out: list[int | str] = []
    for item in items:
        if isinstance(item, str) and item.strip().lower() in BIT_ALIASES:
            out.append(item.strip().lower())
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool) and 0 <= item <= 63:
            out.append(int(item))
        else:
            raise field_error(where, "bits", f"{item!r} is not a bit position (0..63, 'msb' or 'sign')")
    return _unique(tuple(out))


def check_arrays(value: object, where: str) -> tuple[str, ...]:
    items = _as_tuple(value)
    if not items:
        raise field_error(where, "arrays", f"an empty list selects nothing (roles: {', '.join(ROLES)})")
    for item in items:
        if item not in ROLES:
            raise field_error(where, "arrays", f"unknown array role {item!r} (expected {', '.join(ROLES)})")
    return _unique(items)


def _label(values: tuple) -> str:
    return ",".join(str(v) for v in values)


@dataclass(frozen=True)
class Target:
    """The restriction every fault model takes. ``None`` means everything.

    ``layers``: layer names, or indices into ``image.layers`` (negative counts from the end).
    ``bits``: bit positions, or ``"msb"`` / ``"sign"`` (bit width-1 of each array; ``"sign"`` skips
    unsigned fixed-point arrays, which have none). A bit past an array's width is skipped for that
    array; only a target that leaves no bit at all is an error.
    ``arrays``: array roles, by default all of them (weight, bias, batch-norm scale, PReLU param).
    """

    layers: tuple[str | int, ...] | None = None
    bits: tuple[int | str, ...] | None = None
    arrays: tuple[str, ...] = ROLES

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", check_layers(self.layers, "target"))
        object.__setattr__(self, "bits", check_bits(self.bits, "target"))
        object.__setattr__(self, "arrays", check_arrays(self.arrays, "target"))

    @classmethod
    def from_spec(cls, spec: Mapping, where: str = "") -> Target:
        """The ``layers`` / ``bits`` / ``arrays`` keys of a fault-model spec (each optional)."""
        return cls(check_layers(spec.get("layers"), where), check_bits(spec.get("bits"), where),
                   check_arrays(spec.get("arrays", ROLES), where))

    def to_spec(self) -> dict:
        """The non-default fields, as lists (the inverse of ``from_spec``)."""
        out: dict = {}
        if self.layers is not None:
            out["layers"] = list(self.layers)
        if self.bits is not None:
            out["bits"] = list(self.bits)
        if self.arrays != ROLES:
            out["arrays"] = list(self.arrays)
        return out

    def describe(self) -> str:
        parts = [f"{k}={_label(tuple(v))}" for k, v in self.to_spec().items()]
        return " ".join(parts)

    def resolve_layers(self, image: WeightImage) -> list[str]:
        names = image.layers
        if self.layers is None:
            return names
        out = []
        for item in self.layers:
            if isinstance(item, int):
                if not -len(names) <= item < len(names):
                    msg = (f"target layers: index {item} is out of range; the image has {len(names)} layers "
                           f"(0..{len(names) - 1}): {', '.join(names)}")
                    raise FaultSpecError(msg)
                out.append(names[item])
            elif item not in names:
                msg = f"target layers: unknown layer {item!r}; the image has: {', '.join(names)}"
                raise FaultSpecError(msg)
            else:
                out.append(item)
        return list(dict.fromkeys(out))

    def allowed_bits(self, array: StoredArray) -> np.ndarray:
        """The bit positions of one array this target allows (sorted, possibly empty)."""
        width = array.format.width
        if self.bits is None:
            return np.arange(width, dtype=np.int16)
        signed = array.format.kind is not Kind.FIXED or array.format.fixed.signed
        chosen = set()
        for b in self.bits:
            if b == "msb" or (b == "sign" and signed):
                chosen.add(width - 1)
            elif isinstance(b, int) and b < width:
                chosen.add(b)
        return np.array(sorted(chosen), dtype=np.int16)

    def population(self, image: WeightImage) -> Population:
        """The selected arrays (image order) and their allowed bits; refuses a target that selects nothing."""
        layers = set(self.resolve_layers(image))
        selected = [a for a in image.arrays if a.layer in layers and a.name in self.arrays and a.size]
        if not selected:
            msg = (f"target selects no stored array (layers={_label(tuple(self.layers or ('*',)))}, "
                   f"arrays={_label(self.arrays)}); the image has: {', '.join(a.key for a in image.arrays)}")
            raise FaultSpecError(msg)
        pairs = [(a, self.allowed_bits(a)) for a in selected]
        pairs = [(a, b) for a, b in pairs if b.size]
        if not pairs:
            widths = ", ".join(f"{a.key} {a.format.width}" for a in selected)
            msg = f"target bits={_label(self.bits)} fit no selected array (word widths: {widths})"
            raise FaultSpecError(msg)
        return Population(tuple(a for a, _ in pairs), tuple(b for _, b in pairs))


@dataclass(frozen=True, eq=False)
class Population:
    """Candidate bits numbered array by array (image order), word by word, then by allowed bit."""

    arrays: tuple[StoredArray, ...]
    bits: tuple[np.ndarray, ...]  # allowed bit positions per array, sorted, int16

    def __post_init__(self) -> None:
        sizes = np.array([a.size for a in self.arrays], dtype=np.int64)
        per_word = np.array([b.size for b in self.bits], dtype=np.int64)
        object.__setattr__(self, "_sizes", sizes)
        object.__setattr__(self, "_per_word", per_word)
        object.__setattr__(self, "_word_off", np.concatenate([[0], np.cumsum(sizes)]))
        object.__setattr__(self, "_bit_off", np.concatenate([[0], np.cumsum(sizes * per_word)]))
        object.__setattr__(self, "_table_off", np.concatenate([[0], np.cumsum(per_word)]))
        object.__setattr__(self, "_table", np.concatenate(self.bits).astype(np.int16))

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(a.key for a in self.arrays)

    @property
    def n_words(self) -> int:
        return int(self._word_off[-1])

    @property
    def n_bits(self) -> int:
        """N, the number of candidate bits: what a bit-error rate is a fraction of."""
        return int(self._bit_off[-1])

    def allowed(self, key: str) -> np.ndarray:
        return self.bits[self.keys.index(key)]

    def locate_bits(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(array, word index, bit)`` of candidate bits numbered ``0..n_bits-1``."""
        flat = np.asarray(flat, dtype=np.int64)
        a = np.searchsorted(self._bit_off, flat, side="right") - 1
        local = flat - self._bit_off[a]
        per_word = self._per_word[a]
        word = local // per_word
        bit = self._table[self._table_off[a] + (local - word * per_word)]
        return a, word, bit

    def locate_words(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(array, word index)`` of candidate words numbered ``0..n_words-1``."""
        flat = np.asarray(flat, dtype=np.int64)
        a = np.searchsorted(self._word_off, flat, side="right") - 1
        return a, flat - self._word_off[a]
