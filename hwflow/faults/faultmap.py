"""The FaultMap: which stored bits a trial corrupts, and how (docs/design.md, contract 2).

A map is a list of faults ``(array, word index, bit, kind)`` kept as parallel numpy arrays, so that a
map of a million faults is applied with a handful of vectorized operations. The same map has an
equivalent form as per-word masks, ``new = ((old ^ xor) & and_) | or_``, which is what a board host
writes back through ``read_word``/``write_word``.

How several faults on one bit combine (the order of the map matters only for the last rule):

- flips XOR together: two flips of the same bit cancel;
- stuck-at faults act after every flip (a stuck bit reads its value whatever was written);
- if stuck-at-0 and stuck-at-1 both hit one bit, the one later in the map wins.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwflow.errors import FaultSpecError
from hwflow.image import StoredArray, WeightImage

JSON_FORMAT = "hwflow-faultmap"
JSON_VERSION = 1


class FaultKind(enum.Enum):
    FLIP = "flip"  # transient: the bit is inverted once
    STUCK0 = "stuck0"  # permanent: the bit reads 0
    STUCK1 = "stuck1"  # permanent: the bit reads 1

    @property
    def code(self) -> int:
        """The ``int8`` code stored in ``FaultMap.kind`` (0 flip, 1 stuck0, 2 stuck1)."""
        return _KIND_ORDER.index(self)

    @classmethod
    def parse(cls, value: FaultKind | str | int) -> FaultKind:
        """A kind from its enum, its name (``"flip"``, ``"stuck0"``, ``"stuck1"``) or its code."""
        if isinstance(value, FaultKind):
            return value
        if isinstance(value, str):
            key = value.strip().lower().replace("-", "").replace("_", "")
            for kind in cls:
                if key == kind.value:
                    return kind
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < len(cls):
            return _KIND_ORDER[int(value)]
        msg = f"unknown fault kind {value!r} (expected flip, stuck0 or stuck1)"
        raise FaultSpecError(msg)


_KIND_ORDER = (FaultKind.FLIP, FaultKind.STUCK0, FaultKind.STUCK1)
_ONE = np.uint64(1)
# popcount of every byte, for counting changed bits without numpy 2's bitwise_count
_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def split_key(key: str) -> tuple[str, str]:
    """``"conv1/weight"`` -> ``("conv1", "weight")``; a bare layer name means its weight array."""
    layer, sep, name = key.rpartition("/")
    if not sep:
        return key, "weight"
    if not layer or not name:
        msg = f"malformed array key {key!r} (expected 'layer/name', e.g. 'conv1/weight')"
        raise FaultSpecError(msg)
    return layer, name


def _key_of(where: str | tuple[str, str]) -> str:
    if isinstance(where, str):
        return "/".join(split_key(where))
    if isinstance(where, tuple) and len(where) == 2 and all(isinstance(s, str) for s in where):
        return f"{where[0]}/{where[1]}"
    msg = f"a fault names its array as 'layer/name' or (layer, name), got {where!r}"
    raise FaultSpecError(msg)


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        msg = f"a fault's {what} must be an integer, got {value!r}"
        raise FaultSpecError(msg)
    if not -(2**63) <= int(value) < 2**63:  # no memory has that many words (nor bits): say so, not OverflowError
        msg = f"a fault's {what} {int(value)} is out of range (a word index or bit position below 2**63)"
        raise FaultSpecError(msg)
    return int(value)


@dataclass(frozen=True, eq=False)
class FaultMap:
    """Faults as parallel arrays; ``array`` indexes ``array_keys`` (``"layer/name"``)."""

    array_keys: tuple[str, ...]
    array: np.ndarray  # int32, index into array_keys
    index: np.ndarray  # int64, word index in firmware order
    bit: np.ndarray  # int16, bit position (0 = LSB)
    kind: np.ndarray  # int8, FaultKind.code

    def __post_init__(self) -> None:
        keys = tuple(self.array_keys)
        if len(set(keys)) != len(keys):
            msg = f"a FaultMap names each array once, got {keys}"
            raise FaultSpecError(msg)
        for key in keys:
            if not isinstance(key, str) or "/" not in key:
                msg = f"FaultMap.array_keys are 'layer/name' strings, got {key!r}"
                raise FaultSpecError(msg)
        raw = {}
        for name in ("array", "index", "bit", "kind"):
            col = np.asarray(getattr(self, name)).reshape(-1)
            if col.size and not np.issubdtype(col.dtype, np.integer):
                msg = f"FaultMap.{name} must hold integers, got {col.dtype}"
                raise FaultSpecError(msg)
            raw[name] = col
        if len({c.size for c in raw.values()}) > 1:
            msg = "FaultMap columns array, index, bit and kind must have the same length"
            raise FaultSpecError(msg)
        # The ranges are checked in the caller's dtype, before the cast: the narrow columns would wrap
        # silently (a bit 65539 read as bit 3, an index 2**64 + 5 as 5).
        lo, hi = ({k: int(c.min()) for k, c in raw.items()}, {k: int(c.max()) for k, c in raw.items()}) \
            if raw["array"].size else ({}, {})
        if lo and (lo["array"] < 0 or hi["array"] >= len(keys)):
            msg = f"FaultMap.array must index array_keys (0..{len(keys) - 1})"
            raise FaultSpecError(msg)
        if lo and (lo["index"] < 0 or lo["bit"] < 0):
            msg = "FaultMap word indices and bit positions must be >= 0"
            raise FaultSpecError(msg)
        if lo and (hi["bit"] > 63 or lo["kind"] < 0 or hi["kind"] > 2):
            msg = "FaultMap bits must be 0..63 and kinds 0 (flip), 1 (stuck0) or 2 (stuck1)"
            raise FaultSpecError(msg)
        if lo and hi["index"] >= 2**63:
            msg = f"FaultMap word index {hi['index']} is beyond any memory (below 2**63)"
            raise FaultSpecError(msg)
        columns = {}
        for name, dtype in (("array", np.int32), ("index", np.int64), ("bit", np.int16), ("kind", np.int8)):
            col = np.array(raw[name], dtype=dtype)  # a copy: the caller's array is not frozen
            col.flags.writeable = False  # maps are values: shared between trials, never edited
            columns[name] = col
        object.__setattr__(self, "array_keys", keys)
        for name, col in columns.items():
            object.__setattr__(self, name, col)

    # --- construction ------------------------------------------------------------------------------

    @classmethod
    def empty(cls) -> FaultMap:
        return cls((), np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int16), np.zeros(0, np.int8))

    @classmethod
    def build(cls, keys: Iterable[str], array: np.ndarray, index: np.ndarray, bit: np.ndarray,
              kind: np.ndarray | int) -> FaultMap:
        """A map over candidate ``keys``, keeping only the keys that some fault references."""
        keys = tuple(keys)
        array = np.asarray(array, dtype=np.int64).reshape(-1)
        kind = np.broadcast_to(np.asarray(kind, dtype=np.int8), array.shape)
        used, compact = np.unique(array, return_inverse=True)
        return cls(tuple(keys[i] for i in used), compact.reshape(-1), index, bit, kind)

    @classmethod
    def from_records(cls, records: Iterable[tuple]) -> FaultMap:
        """Faults as ``(array, index, bit, kind)``; ``array`` is ``"layer/name"``, ``(layer, name)`` or a
        bare layer name meaning its weight. Kind is a ``FaultKind`` or its name."""
        keys: dict[str, int] = {}
        cols: list[list[int]] = [[], [], [], []]
        for rec in records:
            if not isinstance(rec, (tuple, list)) or len(rec) != 4:
                msg = f"a fault record is (array, index, bit, kind), got {rec!r}"
                raise FaultSpecError(msg)
            key = _key_of(tuple(rec[0]) if isinstance(rec[0], list) else rec[0])
            cols[0].append(keys.setdefault(key, len(keys)))
            cols[1].append(_int(rec[1], "word index"))
            cols[2].append(_int(rec[2], "bit"))
            cols[3].append(FaultKind.parse(rec[3]).code)
        return cls(tuple(keys), *(np.array(c, dtype=np.int64) for c in cols))

    @classmethod
    def concat(cls, maps: Iterable[FaultMap]) -> FaultMap:
        """All faults of ``maps`` in order (so a later map's stuck-at wins over an earlier one's)."""
        maps = list(maps)
        keys: dict[str, int] = {}
        arrays = []
        for m in maps:
            remap = np.array([keys.setdefault(k, len(keys)) for k in m.array_keys], dtype=np.int32)
            arrays.append(remap[m.array] if len(m) else np.zeros(0, np.int32))
        if not maps:
            return cls.empty()
        return cls(tuple(keys), np.concatenate(arrays), *(np.concatenate([getattr(m, c) for m in maps])
                                                          for c in ("index", "bit", "kind")))

    # --- inspection --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.array.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FaultMap):
            return NotImplemented
        if len(self) != len(other):
            return False
        mine = np.asarray(self.array_keys, dtype=object)[self.array] if len(self) else self.array
        theirs = np.asarray(other.array_keys, dtype=object)[other.array] if len(other) else other.array
        return bool(np.array_equal(mine, theirs) and np.array_equal(self.index, other.index)
                    and np.array_equal(self.bit, other.bit) and np.array_equal(self.kind, other.kind))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        counts = np.bincount(self.kind, minlength=3)
        kinds = ", ".join(f"{k.value}={c}" for k, c in zip(_KIND_ORDER, counts, strict=True) if c)
        return f"FaultMap({len(self)} faults in {len(self.array_keys)} arrays{': ' + kinds if kinds else ''})"

    def records(self) -> Iterator[tuple[str, str, int, int, FaultKind]]:
        """``(layer, name, index, bit, kind)`` per fault, in map order (for reports and small maps)."""
        split = [split_key(k) for k in self.array_keys]
        for a, i, b, k in zip(self.array.tolist(), self.index.tolist(), self.bit.tolist(), self.kind.tolist(),
                              strict=True):
            yield (*split[a], i, b, _KIND_ORDER[k])

    def keys_touched(self) -> set[str]:
        return {self.array_keys[i] for i in np.unique(self.array)}

    def layers_touched(self) -> set[str]:
        return {split_key(k)[0] for k in self.keys_touched()}

    def digest(self) -> str:
        """A SHA-256 of the faults in order: record it with a trial to check that two machines sampled
        the same map from the same seed."""
        h = hashlib.sha256(json.dumps(self.to_json()["faults"], separators=(",", ":")).encode())
        return h.hexdigest()

    # --- against an image --------------------------------------------------------------------------

    def _groups(self) -> Iterator[tuple[str, np.ndarray]]:
        """Per referenced array: its key and the positions of its faults, in map order."""
        order = np.argsort(self.array, kind="stable")
        bounds = np.searchsorted(self.array[order], np.arange(len(self.array_keys) + 1))
        for a, key in enumerate(self.array_keys):
            if bounds[a + 1] > bounds[a]:
                yield key, order[bounds[a] : bounds[a + 1]]

    def check(self, image: WeightImage) -> None:
        """Refuse faults outside the image: unknown array, word index past its end, bit past its width."""
        for key, sel in self._groups():
            arr = _array(image, key)
            index, bit = self.index[sel], self.bit[sel]
            if index.max() >= arr.size:
                bad = int(index[index >= arr.size][0])
                msg = f"fault on {key}: word index {bad} is outside the array (0..{arr.size - 1})"
                raise FaultSpecError(msg)
            if bit.max() >= arr.format.width:
                bad = int(bit[bit >= arr.format.width][0])
                msg = (f"fault on {key}: bit {bad} is outside the {arr.format.width}-bit {arr.format} word "
                       f"(bits 0..{arr.format.width - 1})")
                raise FaultSpecError(msg)

    def _sparse(self, image: WeightImage) -> Iterator[tuple[StoredArray, np.ndarray, np.ndarray, np.ndarray,
                                                              np.ndarray]]:
        """Per touched array: the touched word indices (sorted) and their xor / and / or masks."""
        self.check(image)
        for key, sel in self._groups():
            arr = _array(image, key)
            words, pos = np.unique(self.index[sel], return_inverse=True)
            pos = pos.reshape(-1)
            bits = _ONE << self.bit[sel].astype(np.uint64)
            kind = self.kind[sel]
            xor = np.zeros(words.size, np.uint64)
            flip = kind == 0
            np.bitwise_xor.at(xor, pos[flip], bits[flip])
            # stuck-at: for each (word, bit) keep the last fault of the map, then clear or set that bit
            stuck = np.flatnonzero(~flip)
            full = np.uint64((1 << arr.format.width) - 1)
            and_ = np.full(words.size, full, np.uint64)
            or_ = np.zeros(words.size, np.uint64)
            if stuck.size:
                cell = pos[stuck].astype(np.int64) * 64 + self.bit[sel][stuck]
                _, last_rev = np.unique(cell[::-1], return_index=True)
                win = stuck[stuck.size - 1 - last_rev]
                zero, one = win[kind[win] == 1], win[kind[win] == 2]
                clear = np.zeros(words.size, np.uint64)
                np.bitwise_or.at(clear, pos[zero], bits[zero])
                and_ &= ~clear
                np.bitwise_or.at(or_, pos[one], bits[one])
            yield arr, words, xor, and_, or_

    def masks(self, image: WeightImage) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per touched array (key -> ``(xor, and_, or_)``, uint64, one entry per word): the faulty words are
        ``((words ^ xor) & and_) | or_``. Arrays the map does not touch are left out (identity)."""
        out = {}
        for arr, words, xor, and_, or_ in self._sparse(image):
            full = np.uint64((1 << arr.format.width) - 1)
            dense = (np.zeros(arr.size, np.uint64), np.full(arr.size, full, np.uint64), np.zeros(arr.size, np.uint64))
            dense[0][words], dense[1][words], dense[2][words] = xor, and_, or_
            out[arr.key] = dense
        return out

    def touched_words(self, image: WeightImage) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(address, xor, and_, or_)`` for every word the map touches, in address order: what a board
        host needs to read-modify-write the weight memory word by word."""
        parts = [(image.base(arr.layer, arr.name) + words.astype(np.int64), xor, and_, or_)
                 for arr, words, xor, and_, or_ in self._sparse(image)]
        if not parts:
            return np.zeros(0, np.int64), *(np.zeros(0, np.uint64) for _ in range(3))
        cols = [np.concatenate(c) for c in zip(*parts, strict=True)]
        order = np.argsort(cols[0], kind="stable")
        return tuple(c[order] for c in cols)  # type: ignore[return-value]

    def apply(self, image: WeightImage) -> WeightImage:
        """A new image with the faulty words; the input image and its arrays are left as they were, and
        arrays without faults are shared (the same objects)."""
        replaced = {}
        for arr, words, xor, and_, or_ in self._sparse(image):
            new = arr.words.copy()
            new[words] = ((new[words] ^ xor) & and_) | or_
            replaced[arr.key] = arr.with_words(new)
        if not replaced:
            return image
        return WeightImage(tuple(replaced.get(a.key, a) for a in image.arrays))

    def effective(self, image: WeightImage) -> int:
        """Stored bits that the map actually changes. A stuck-at bit already at its value changes
        nothing and two flips of one bit cancel; ``len()`` counts them all. Equal to the number of
        faults that change a bit whenever no two faults share a bit."""
        total = 0
        for arr, words, xor, and_, or_ in self._sparse(image):
            old = arr.words[words]
            diff = old ^ (((old ^ xor) & and_) | or_)
            total += int(_POPCOUNT8[diff.view(np.uint8)].sum())
        return total

    # --- serialization -----------------------------------------------------------------------------

    def to_json(self) -> dict:
        """``{"format", "version", "faults": [[layer, name, index, bit, kind], ...]}`` in map order."""
        faults = [[layer, name, i, b, k.value] for layer, name, i, b, k in self.records()]
        return {"format": JSON_FORMAT, "version": JSON_VERSION, "faults": faults}

    @classmethod
    def from_json(cls, data: dict) -> FaultMap:
        if not isinstance(data, dict) or data.get("format") != JSON_FORMAT:
            msg = f"not a FaultMap: expected a dict with format {JSON_FORMAT!r}"
            raise FaultSpecError(msg)
        if data.get("version") != JSON_VERSION:
            msg = f"FaultMap JSON version {data.get('version')!r}, this hwflow reads version {JSON_VERSION}"
            raise FaultSpecError(msg)
        faults = data.get("faults")
        if not isinstance(faults, list):
            msg = "FaultMap JSON: 'faults' must be a list of [layer, name, index, bit, kind]"
            raise FaultSpecError(msg)
        records = []
        for f in faults:
            if not isinstance(f, list) or len(f) != 5 or not all(isinstance(s, str) for s in f[:2]):
                msg = f"FaultMap JSON: a fault is [layer, name, index, bit, kind], got {f!r}"
                raise FaultSpecError(msg)
            records.append(((f[0], f[1]), f[2], f[3], f[4]))
        return cls.from_records(records)

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.to_json(), separators=(",", ":")))
        return out

    @classmethod
    def load(cls, path: str | Path) -> FaultMap:
        src = Path(path)
        try:
            data = json.loads(src.read_text())
        except (OSError, ValueError, RecursionError) as err:  # RecursionError: nesting too deep to be a map
            msg = f"{src}: cannot read a FaultMap ({err})"
            raise FaultSpecError(msg) from None
        try:
            return cls.from_json(data)
        except FaultSpecError as err:
            msg = f"{src}: {err}"
            raise FaultSpecError(msg) from None


def _array(image: WeightImage, key: str) -> StoredArray:
    layer, name = split_key(key)
    if not image.has(layer, name):
        known = ", ".join(a.key for a in image.arrays)
        msg = f"fault on {key}: the WeightImage has no such array (it has: {known})"
        raise FaultSpecError(msg)
    return image.get(layer, name)
