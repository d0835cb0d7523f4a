"""A StoragePlan: how every weight array is stored — the word format and the weight-scaling constant.

Weight scaling (Fuengfusin & Tamukoh; docs/methods.md) does not change the trained weights: it
changes what sits in memory. Each array ``layer/name`` listed in the plan is stored as ``c * w`` and
divided back by ``c`` when used; arrays not listed are stored unscaled. The storage kind applies to
the whole weight memory: ``fixed`` keeps each array's trained fixed-point type, ``float16`` /
``float32`` store every array as IEEE words (scaled or not: an unscaled float16 memory is the
baseline of the float study).

The plan is plain data: it goes into the hardened model's sidecar (``"hardening"/"scale"``), into
``hwflow.convert.convert(..., storage=plan)`` and into :meth:`StoragePlan.apply`, which re-encodes a
WeightImage. How the constants are chosen (rule, constants, search) lives in ``hwflow.harden.scale``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from hwflow.errors import FormatError, HardenError
from hwflow.image import divide
from hwflow.image.formats import Kind, Scale, StorageFormat
from hwflow.image.weight_image import StoredArray, WeightImage

STORAGE_KINDS = ("fixed", "float16", "float32")
MODES = ("none", "rule", "constant", "search")
PLAN_FORMAT = 1
MAX_FIXED_SHIFT = 62  # a FixedType holds at most 62 bits: no shift beyond that can mean anything
MAX_SHIFT = 1023  # 2**shift must be a finite float64 (float32 storage may need shifts beyond 100)

# Largest finite value of each float storage kind (a scaled weight must stay below it).
FLOAT_MAX = {"float16": float(np.finfo(np.float16).max), "float32": float(np.finfo(np.float32).max)}


def _check_key(key: object) -> str:
    if not isinstance(key, str) or key.count("/") != 1 or not all(key.split("/")):
        msg = f"storage plan: array key {key!r} is not of the form 'layer/name' (e.g. 'conv1/weight')"
        raise HardenError(msg)
    return key


def _check_scale(key: str, scale: object) -> Scale:
    if not isinstance(scale, Scale):
        msg = f"storage plan: the scale of {key} must be a hwflow.image.Scale, got {scale!r}"
        raise HardenError(msg)
    if isinstance(scale.shift, bool) or not isinstance(scale.shift, (int, np.integer)):
        msg = f"storage plan: the shift of {key} must be an integer, got {scale.shift!r}"
        raise HardenError(msg)
    if abs(int(scale.shift)) > MAX_SHIFT:
        msg = f"storage plan: the shift of {key} ({scale.shift}) is beyond +-{MAX_SHIFT} bits"
        raise HardenError(msg)
    return scale


@dataclass(frozen=True)
class StoragePlan:
    """The storage of a model's weight memory: one word kind, and a scale per listed array."""

    storage: str = "fixed"
    """``fixed`` (each array keeps its trained fixed-point type), ``float16`` or ``float32``."""
    scales: Mapping[str, Scale] = field(default_factory=dict)
    """Scale per array key ``"layer/name"``; arrays not listed are stored unscaled (c = 1)."""
    mode: str = "none"
    """How the scales were chosen: ``none``, ``rule``, ``constant`` or ``search`` (recorded, not used)."""
    details: Mapping = field(default_factory=dict)
    """JSON-serializable notes of the method that made the plan (rule options, search scores)."""

    def __post_init__(self) -> None:
        if self.storage not in STORAGE_KINDS:
            msg = f"storage plan: unknown storage {self.storage!r} (expected {', '.join(STORAGE_KINDS)})"
            raise HardenError(msg)
        if self.mode not in MODES:
            msg = f"storage plan: unknown mode {self.mode!r} (expected {', '.join(MODES)})"
            raise HardenError(msg)
        if not isinstance(self.scales, Mapping):
            msg = f"storage plan: scales must be a mapping 'layer/name' -> Scale, got {type(self.scales).__name__}"
            raise HardenError(msg)
        scales = {_check_key(k): _check_scale(k, v) for k, v in self.scales.items()}
        too_far = [k for k, v in scales.items() if abs(int(v.shift)) > MAX_FIXED_SHIFT]
        if self.storage == "fixed" and too_far:
            msg = f"storage plan: shifts of {', '.join(too_far)} are beyond +-{MAX_FIXED_SHIFT} bits of fixed point"
            raise HardenError(msg)
        object.__setattr__(self, "scales", scales)
        try:
            details = json.loads(json.dumps(dict(self.details)))
        except (TypeError, ValueError) as err:
            msg = f"storage plan: details must be JSON-serializable ({err})"
            raise HardenError(msg) from None
        object.__setattr__(self, "details", details)

    # --- queries ------------------------------------------------------------------------------------

    def scale_of(self, key: str) -> Scale:
        """The scale of an array (``Scale()``, c = 1, when the plan does not list it)."""
        return self.scales.get(key, Scale())

    @property
    def is_fixed(self) -> bool:
        return self.storage == "fixed"

    @property
    def is_identity(self) -> bool:
        """True when applying the plan changes nothing (fixed storage, every scale 1)."""
        return self.is_fixed and all(s.is_identity for s in self.scales.values())

    def shifts(self) -> dict[str, int]:
        """The power-of-two shifts of fixed storage (the arrays whose hls4ml type moves its binary point)."""
        if not self.is_fixed:
            return {}
        return {k: int(s.shift) for k, s in self.scales.items() if s.is_power_of_two and s.shift != 0}

    def format_for(self, array: StoredArray) -> StorageFormat:
        """The storage format of an array under this plan (``array`` is the unscaled, fixed-point one)."""
        if self.is_fixed:
            return array.format
        return StorageFormat.parse(self.storage)

    def check(self, image: WeightImage) -> None:
        """Refuse a plan that names arrays the image does not have (a plan made for another model)."""
        missing = [k for k in self.scales if not image.has(*k.split("/"))]
        if missing:
            have = ", ".join(a.key for a in image)
            msg = (f"storage plan names {', '.join(missing)}, which the model does not have (it has: {have}); "
                   "make the plan for this model")
            raise HardenError(msg)

    # --- re-encoding --------------------------------------------------------------------------------

    def apply(self, image: WeightImage) -> WeightImage:
        """The image stored under this plan, from the unscaled fixed-point image (the trained weights).

        Fixed storage, ``c = 2**s``: the code of ``c * w`` in the stored type ``S`` (the original
        code shifted left by ``s``); it must fit ``S``. Fixed storage, constant ``c``: the code of
        ``c * w`` in ``S``, rounded to nearest and saturated (contract 7). Float storage: the IEEE
        bits of ``c * w`` (rounded to nearest even by the float conversion); a value beyond the
        format's range is refused.
        """
        self.check(image)
        out = []
        for arr in image:
            if arr.format.kind is not Kind.FIXED or not arr.scale.is_identity:
                msg = (f"{arr.key} is already stored as {arr.format} scaled by {arr.scale}; apply a storage "
                       "plan to the unscaled fixed-point image (image_from_hls without storage)")
                raise HardenError(msg)
            out.append(self.encode_array(arr))
        return WeightImage(tuple(out))

    def encode_array(self, arr: StoredArray) -> StoredArray:
        """One unscaled fixed-point array as this plan stores it (see :meth:`apply`)."""
        scale = self.scale_of(arr.key)
        s_type = arr.format.fixed
        codes = s_type.from_unsigned(arr.words)  # firmware order, like the words
        if not self.is_fixed:
            fmt = StorageFormat.parse(self.storage)
            scaled = s_type.to_float(codes) * scale.factor
            limit = FLOAT_MAX[self.storage]
            if codes.size and float(np.max(np.abs(scaled))) > limit:
                msg = (f"{arr.key}: c * w reaches {float(np.max(np.abs(scaled))):g}, beyond the largest "
                       f"{self.storage} ({limit:g}); use a smaller scale")
                raise HardenError(msg)
            return replace(arr, format=fmt, scale=scale, words=fmt.encode(scaled))
        if scale.is_power_of_two:
            shifted = _shift_codes(arr.key, codes, scale.shift, s_type)
            return replace(arr, scale=scale, words=s_type.to_unsigned(shifted))
        try:
            divide.q_code(scale.constant)
        except FormatError as err:
            msg = f"{arr.key}: {err}"
            raise HardenError(msg) from None
        scaled = divide.encode_codes(codes, scale.constant, divide.stored_type(s_type))
        return replace(arr, scale=scale, words=s_type.to_unsigned(scaled))

    # --- JSON (the sidecar's "hardening"/"scale") ----------------------------------------------------

    def to_json(self) -> dict:
        return {
            "format": PLAN_FORMAT,
            "storage": self.storage,
            "mode": self.mode,
            "scales": {k: s.to_json() for k, s in self.scales.items()},
            "details": dict(self.details),
        }

    @classmethod
    def from_json(cls, data: object) -> StoragePlan:
        """Read a plan written by :meth:`to_json`, with an error naming the bad field."""
        if not isinstance(data, Mapping):
            msg = f"storage plan: expected a JSON object, got {type(data).__name__}"
            raise HardenError(msg)
        if data.get("format", PLAN_FORMAT) != PLAN_FORMAT:
            msg = f"storage plan: format {data.get('format')!r} is not supported (expected {PLAN_FORMAT})"
            raise HardenError(msg)
        unknown = sorted(str(k) for k in set(data) - {"format", "storage", "mode", "scales", "details"})
        if unknown:
            msg = f"storage plan: unknown field(s) {', '.join(unknown)}"
            raise HardenError(msg)
        raw = data.get("scales", {})
        if not isinstance(raw, Mapping):
            msg = "storage plan: 'scales' must be an object {'layer/name': {'shift': s, 'constant': c}}"
            raise HardenError(msg)
        scales = {}
        for key, value in raw.items():
            if not isinstance(value, Mapping) or set(value) - {"shift", "constant"}:
                msg = f"storage plan: scales/{key} must be {{'shift': int, 'constant': number or null}}, got {value!r}"
                raise HardenError(msg)
            shift, constant = value.get("shift", 0), value.get("constant")
            if isinstance(shift, bool) or not isinstance(shift, int):
                msg = f"storage plan: scales/{key}/shift must be an integer, got {shift!r}"
                raise HardenError(msg)
            if constant is not None and (isinstance(constant, bool) or not isinstance(constant, (int, float))
                                         or not math.isfinite(constant) or constant <= 0):
                msg = f"storage plan: scales/{key}/constant must be a positive number or null, got {constant!r}"
                raise HardenError(msg)
            try:
                scales[key] = Scale(shift, None if constant is None else float(constant))
            except FormatError as err:
                msg = f"storage plan: scales/{key}: {err}"
                raise HardenError(msg) from None
        details = data.get("details", {})
        if not isinstance(details, Mapping):
            msg = "storage plan: 'details' must be an object"
            raise HardenError(msg)
        return cls(str(data.get("storage", "fixed")), scales, str(data.get("mode", "none")), details)

    def describe(self) -> str:
        """One line for logs and reports."""
        listed = ", ".join(f"{k} x{s}" for k, s in self.scales.items() if not s.is_identity) or "no array scaled"
        return f"{self.storage} storage, {self.mode}: {listed}"


def _shift_codes(key: str, codes: np.ndarray, shift: int, s_type) -> np.ndarray:
    """``codes * 2**shift`` in ``s_type``; refuses a shift that overflows or drops nonzero bits."""
    codes = np.asarray(codes, dtype=np.int64)
    if shift >= 0:
        if codes.size and shift >= 63:
            bad = bool(np.any(codes != 0))
            shifted = np.zeros_like(codes)
        else:
            shifted = np.left_shift(codes, shift)
            bad = bool(np.any((shifted < s_type.min_code) | (shifted > s_type.max_code)))
        if bad:
            msg = (f"{key}: weights scaled by 2^{shift} do not fit {s_type} (largest code "
                   f"{int(np.max(np.abs(codes)))} << {shift}); use a smaller shift (plan_rule finds the largest)")
            raise HardenError(msg)
        return shifted
    if np.any(codes & ((1 << -shift) - 1)):
        msg = f"{key}: a scale of 2^{shift} drops nonzero low bits of the weights in {s_type}"
        raise HardenError(msg)
    return np.right_shift(codes, -shift)
