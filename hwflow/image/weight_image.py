"""The WeightImage: every weight word as it sits in on-chip memory (docs/design.md, contract 1).

This is the one object that the emulator executes from, that fault models corrupt, that the HLS
build writes into BRAM and that the board host rewrites when it scrubs. Words are kept in the exact
order of the arrays in the generated firmware (hls4ml transposes some layers' weights for its
Resource strategy), and ``axes`` records how to get back to the logical (Keras) layout.

Addresses are word addresses: the arrays are laid out one after the other in image order, so
address ``a`` is word ``a - base`` of the array whose range holds it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from hwflow.errors import FormatError
from hwflow.fixed import FixedType
from hwflow.image import divide, quantized
from hwflow.image.formats import Kind, Scale, StorageFormat

MANIFEST = "weight_image.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class StoredArray:
    """One weight array of one layer (``weight``, ``bias`` or batch-norm ``scale``), as stored."""

    layer: str  # hls4ml layer name
    name: str  # role in the layer: "weight", "bias", "scale"
    var: str  # firmware variable name (hls4ml's w2, b2, s4...)
    shape: tuple[int, ...]  # logical shape (Keras order)
    axes: tuple[int, ...]  # firmware array = logical.transpose(axes)
    format: StorageFormat
    scale: Scale
    words: np.ndarray = field(repr=False)  # uint64, firmware order, flat

    def __post_init__(self) -> None:
        words = np.ascontiguousarray(self.words, dtype=np.uint64).reshape(-1)
        object.__setattr__(self, "words", words)
        if words.size != int(np.prod(self.shape, dtype=np.int64)):
            msg = f"{self.key}: {words.size} words do not fill the logical shape {self.shape}"
            raise FormatError(msg)
        if words.size and int(words.max()) >> self.format.width:
            msg = f"{self.key}: a word is wider than the {self.format.width}-bit format {self.format}"
            raise FormatError(msg)
        if self.format.kind in (Kind.XNOR, Kind.TERNARY, Kind.EXPONENT) and not self.scale.is_identity:
            msg = (f"{self.key}: {self.format} words cannot be scaled (scale {self.scale}); weight scaling is for "
                   "fixed point")
            raise FormatError(msg)

    @property
    def key(self) -> str:
        return f"{self.layer}/{self.name}"

    @property
    def size(self) -> int:
        return int(self.words.size)

    @property
    def firmware_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[a] for a in self.axes)

    def to_logical(self, flat: np.ndarray) -> np.ndarray:
        """Reorder a flat firmware-order array into the logical (Keras) layout."""
        inverse = np.argsort(self.axes)
        return np.asarray(flat).reshape(self.firmware_shape).transpose(inverse)

    def compute_type(self) -> FixedType:
        """The type the hardware computes with: the stored type with the binary point moved by a
        power-of-two scale (``fixed<W,I>`` storing ``2**s * w`` is read as ``fixed<W,I-s>``), or,
        for a constant scale, the type the divide-back casts to (``hwflow.image.divide``)."""
        if self.format.kind in (Kind.XNOR, Kind.TERNARY):  # multipliers -1, 0, +1 (hwflow.image.quantized)
            return quantized.MULTIPLIER_TYPE
        if self.format.kind is not Kind.FIXED:
            msg = f"{self.key}: words stored as {self.format} have no fixed-point compute type"
            raise FormatError(msg)
        t = self.format.fixed
        if not self.scale.is_power_of_two:
            return divide.compute_type(t)
        return replace(t, integer=t.integer - self.scale.shift)

    def codes(self) -> np.ndarray:
        """Integer codes in ``compute_type()``, logical layout (after the divide-back, exactly as the
        hardware does it)."""
        if self.format.kind is Kind.FIXED and not self.scale.is_power_of_two:
            t = self.format.fixed
            return self.to_logical(divide.divide_codes(t.from_unsigned(self.words), self.scale.constant, t))
        if self.format.kind is Kind.XNOR:
            return self.to_logical(quantized.xnor_codes(self.words))
        if self.format.kind is Kind.TERNARY:
            return self.to_logical(quantized.ternary_codes(self.words))
        return self.to_logical(self.compute_type().from_unsigned(self.words))

    def values(self) -> np.ndarray:
        """Real values after the divide-back (float64, logical layout), whatever the format: the
        hardware's divide-back for fixed point, a float64 division for float words."""
        if self.format.coded:
            return self.compute_type().to_float(self.codes())
        with np.errstate(over="ignore", invalid="ignore"):  # a faulty float word may be inf or NaN
            return self.to_logical(self.format.decode_float(self.words) / self.scale.factor)

    def with_words(self, words: np.ndarray) -> StoredArray:
        return replace(self, words=words)


@dataclass(frozen=True)
class WeightImage:
    """All stored arrays of a model, in memory order; addresses are word indices across them."""

    arrays: tuple[StoredArray, ...]

    def __post_init__(self) -> None:
        keys = [a.key for a in self.arrays]
        if len(set(keys)) != len(keys):
            msg = "a WeightImage holds each (layer, array) once"
            raise FormatError(msg)
        object.__setattr__(self, "_index", {a.key: i for i, a in enumerate(self.arrays)})
        bases = np.cumsum([0] + [a.size for a in self.arrays])
        object.__setattr__(self, "_bases", bases)

    def __iter__(self) -> Iterator[StoredArray]:
        return iter(self.arrays)

    def __len__(self) -> int:
        return len(self.arrays)

    def get(self, layer: str, name: str) -> StoredArray:
        try:
            return self.arrays[self._index[f"{layer}/{name}"]]
        except KeyError:
            msg = f"no stored array {layer}/{name}; the image has: {', '.join(self._index)}"
            raise FormatError(msg) from None

    def has(self, layer: str, name: str) -> bool:
        return f"{layer}/{name}" in self._index

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(a.layer for a in self.arrays))

    @property
    def total_words(self) -> int:
        return int(self._bases[-1])

    @property
    def total_bits(self) -> int:
        return int(sum(a.size * a.format.width for a in self.arrays))

    def base(self, layer: str, name: str) -> int:
        """Word address of the first word of an array."""
        self.get(layer, name)
        return int(self._bases[self._index[f"{layer}/{name}"]])

    def locate(self, address: int) -> tuple[StoredArray, int]:
        """The array and word index at a word address; refuses addresses outside the image."""
        if not 0 <= address < self.total_words:
            msg = f"address {address} is outside the weight memory (0..{self.total_words - 1})"
            raise FormatError(msg)
        i = int(np.searchsorted(self._bases, address, side="right")) - 1
        return self.arrays[i], int(address - self._bases[i])

    def replace_array(self, array: StoredArray) -> WeightImage:
        """A new image with one array replaced (same key); images are values, never edited in place."""
        i = self._index[array.key]
        return WeightImage(self.arrays[:i] + (array,) + self.arrays[i + 1 :])

    def equal_words(self, other: WeightImage) -> bool:
        return len(self) == len(other) and all(
            a.key == b.key and np.array_equal(a.words, b.words) for a, b in zip(self, other, strict=True)
        )

    # --- bundle: manifest JSON + one .npy per array ------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write the image as ``weight_image.json`` plus ``<layer>__<name>.npy`` files."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        entries = []
        for arr in self.arrays:
            fname = f"{arr.layer}__{arr.name}.npy"
            np.save(out / fname, arr.words)
            entries.append(
                {
                    "layer": arr.layer,
                    "name": arr.name,
                    "var": arr.var,
                    "shape": list(arr.shape),
                    "axes": list(arr.axes),
                    "format": str(arr.format),
                    "scale": arr.scale.to_json(),
                    "base": self.base(arr.layer, arr.name),
                    "words": arr.size,
                    "width": arr.format.width,
                    "file": fname,
                }
            )
        manifest = {"format_version": FORMAT_VERSION, "total_words": self.total_words, "arrays": entries}
        (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
        return out / MANIFEST

    @classmethod
    def load(cls, directory: str | Path) -> WeightImage:
        """Read a saved image, checking that the manifest and the arrays agree."""
        src = Path(directory)
        path = src / MANIFEST
        if not path.is_file():
            msg = f"{src} holds no WeightImage ({MANIFEST} missing); write one with WeightImage.save"
            raise FormatError(msg)
        try:
            manifest = json.loads(path.read_text())
            if not isinstance(manifest, dict):
                msg = f"{path}: not a WeightImage manifest (an object with 'format_version' and 'arrays')"
                raise FormatError(msg)
            if manifest.get("format_version") != FORMAT_VERSION:
                msg = f"{path}: format_version {manifest.get('format_version')}, expected {FORMAT_VERSION}"
                raise FormatError(msg)
            if not isinstance(manifest.get("arrays"), list):
                msg = f"{path}: 'arrays' must be a list of the stored arrays"
                raise FormatError(msg)
            arrays = []
            for e in manifest["arrays"]:
                arrays.append(_load_array(src, path, e))
            image = cls(tuple(arrays))
            for e in manifest["arrays"]:
                if image.base(e["layer"], e["name"]) != e["base"]:
                    msg = f"{path}: base address of {e['layer']}/{e['name']} disagrees with the array sizes"
                    raise FormatError(msg)
        except (KeyError, TypeError, ValueError, OSError, EOFError, AttributeError, RecursionError) as err:
            msg = f"{path}: malformed WeightImage bundle ({type(err).__name__}: {err})"
            raise FormatError(msg) from None
        return image


def _load_array(src: Path, path: Path, e: dict) -> StoredArray:
    """One array of a saved image: its ``.npy`` beside the manifest, integer words only."""
    file = e["file"]
    if not isinstance(file, str) or Path(file).name != file or file in ("", ".", ".."):
        msg = f"{path}: array file {file!r} is not a file name beside the manifest"
        raise FormatError(msg)
    words = np.load(src / file, allow_pickle=False)
    if not isinstance(words, np.ndarray) or not np.issubdtype(words.dtype, np.integer):
        what = words.dtype if isinstance(words, np.ndarray) else type(words).__name__
        msg = f"{path}: {file} holds {what}, not integer words"
        raise FormatError(msg)
    if words.size and np.issubdtype(words.dtype, np.signedinteger) and int(words.min()) < 0:
        msg = f"{path}: {file} holds negative words; stored words are unsigned bit patterns"
        raise FormatError(msg)
    return StoredArray(layer=e["layer"], name=e["name"], var=e["var"], shape=tuple(e["shape"]), axes=tuple(e["axes"]),
                       format=StorageFormat.parse(e["format"]), scale=Scale.from_json(e["scale"]), words=words)
