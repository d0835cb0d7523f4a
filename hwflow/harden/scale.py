"""Weight scaling (Fuengfusin & Tamukoh, arXiv 2411.18993): store ``c * w``, divide by ``c`` when used.

A bit flip adds a fixed amount to a stored word; dividing the word by ``c`` on use divides that
error by ``c`` too. This module chooses the constants (a :class:`~hwflow.image.StoragePlan`) and
re-encodes a WeightImage under a plan; ``scale_search`` chooses them by accuracy under faults.

The rule (the default) — our choices, where the paper is silent:

- **Fixed point**: per array, ``c = 2**s`` with ``s`` the largest shift for which every scaled code
  still fits the stored type ``S = fixed<W,I>`` (``code << s`` in range), at most ``W - 1`` (an
  all-zero array would fit any shift). The divide-back is a move of the binary point (the hardware
  reads ``fixed<W,I-s>``): free and exact.
- **float16 / float32**: per array, the largest power of two with ``c * max|w| < 2**14`` (float16) /
  ``2**126`` (float32). The paper's condition — every nonzero ``|c*w| >= 2``, so the exponent's top bit
  is 1 and its flip divides the weight by 2**16 / 2**128 instead of multiplying it — holds whenever
  the array's range allows (8-bit weights span 2**7), but it is not enough on its own: just above 2
  the exponent's lower bits are 0 (``0b10000...``) and their flips multiply the weight by up to
  2**8 / 2**64 (measured on cnn-digits at BER 1e-3: that choice barely helps float16 and makes float32
  worse than no scaling, 0.78 -> 0.50; this rule: float16 0.67 -> 0.88, float32 0.81 -> 0.85).
  Near the top of the range those bits are 1 and most exponent flips shrink the weight; the bound
  keeps at least two 0 bits in the largest weight's exponent (``<= 0b11100`` / ``0b11111100``),
  so no single flip reaches inf/NaN.
  Arrays whose range is too wide keep the top bit 0 for their smallest weights: the plan's details
  count them (``top_bit_zero``). All-zero arrays are scaled as if their largest weight were 1.
- **Arrays**: weights and biases of Dense/Conv layers, and batch-norm scale and bias (their default
  ``fixed<16,6>`` words are the loosest in a QKeras model); ``batchnorm=False`` leaves them out.
  Through hls4ml a scaled batch-norm array gains real precision (hls4ml re-quantizes the float scale
  with ``s`` more fraction bits); :func:`precision_gain` reports it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from hwflow.errors import HardenError
from hwflow.fixed import FixedType, quantize_float
from hwflow.image import Kind, Scale, StoragePlan, StoredArray, WeightImage
from hwflow.image.plan import STORAGE_KINDS

BATCHNORM_ROLE = "scale"  # a layer holding a "scale" array is a batch normalization


def _check_storage(storage: str) -> str:
    if storage not in STORAGE_KINDS:
        msg = f"unknown storage {storage!r} for weight scaling (expected {', '.join(STORAGE_KINDS)})"
        raise HardenError(msg)
    return storage


NOT_SCALED = (Kind.XNOR, Kind.TERNARY, Kind.EXPONENT)
"""Binary, ternary and po2 words (hwflow.image.quantized): a product reads them, no divide-back can."""
THRESHOLDS = ("threshold", "threshold_hi", "threshold_lo")
"""Binary/ternary thresholds: hls4ml types them as the layer's input (a moved binary point breaks the C++)."""


def _unscaled(image: WeightImage) -> None:
    for arr in image:
        if arr.format.kind in NOT_SCALED:
            continue
        if arr.format.kind is not Kind.FIXED or not arr.scale.is_identity:
            msg = (f"{arr.key} is already stored as {arr.format} scaled by {arr.scale}: weight scaling starts "
                   "from the unscaled fixed-point image (image_from_hls without storage)")
            raise HardenError(msg)


def selected_arrays(image: WeightImage, layers: Iterable[str] | None = None,
                    batchnorm: bool = True) -> list[StoredArray]:
    """The arrays weight scaling applies to: Dense/Conv weights and biases, batch-norm arrays if asked,
    restricted to ``layers`` (names of the image's layers) when given."""
    bn_layers = {a.layer for a in image if a.name == BATCHNORM_ROLE}
    if layers is not None:
        wanted = [layers] if isinstance(layers, str) else list(layers)
        unknown = [n for n in wanted if n not in image.layers]
        if unknown:
            msg = (f"weight scaling: unknown layer(s) {', '.join(map(str, unknown))}; "
                   f"the image has {', '.join(image.layers)}")
            raise HardenError(msg)
    else:
        wanted = image.layers
    return [a for a in image if a.layer in wanted and (batchnorm or a.layer not in bn_layers)
            and a.format.kind not in NOT_SCALED and a.name not in THRESHOLDS]


# --- the rule ---------------------------------------------------------------------------------------


def max_fit_shift(array: StoredArray, max_shift: int | None = None) -> int:
    """Largest ``s`` (0 .. ``max_shift``, default ``W - 1``) with every ``code << s`` inside the stored type."""
    t = array.format.fixed
    limit = t.width - 1 if max_shift is None else max_shift
    codes = t.from_unsigned(array.words)
    hi, lo = (int(codes.max()), int(codes.min())) if codes.size else (0, 0)
    s = 0
    while s < limit and (hi << (s + 1)) <= t.max_code and (lo << (s + 1)) >= t.min_code:
        s += 1
    return s


def max_fit_constant(array: StoredArray) -> float:
    """Largest ``c`` for which ``c * w`` does not saturate the stored type (inf for an all-zero array)."""
    t = array.format.fixed
    codes = t.from_unsigned(array.words)
    hi, lo = (int(codes.max()), int(codes.min())) if codes.size else (0, 0)
    bounds = [t.max_code / hi if hi > 0 else math.inf, t.min_code / lo if lo < 0 else math.inf]
    return min(bounds)


# Exclusive bound of max|c*w| in float storage: the largest binade whose exponent field keeps two 0 bits.
FLOAT_TOP_EXPONENT = {"float16": 14, "float32": 126}


def float_shift(array: StoredArray, storage: str) -> tuple[int, int]:
    """The float rule's shift for one array, and how many nonzero weights keep the exponent's top bit 0."""
    values = np.abs(array.values()).reshape(-1)
    nonzero = values[values > 0]
    top = FLOAT_TOP_EXPONENT[storage]
    if nonzero.size == 0:
        return top - 1, 0
    _, exponent = math.frexp(float(nonzero.max()))  # max = m * 2**exponent, 0.5 <= m < 1
    shift = top - exponent  # the largest s with max * 2**s < 2**top
    low = int(np.sum(nonzero * 2.0**shift < 2.0))
    return shift, low


def plan_rule(image: WeightImage, storage: str = "fixed", layers: Iterable[str] | None = None,
              batchnorm: bool = True, max_shift: int | None = None) -> StoragePlan:
    """The rule's plan (see the module docstring) for an unscaled fixed-point image."""
    _check_storage(storage)
    _unscaled(image)
    scales, short = {}, {}
    for arr in selected_arrays(image, layers, batchnorm):
        if storage == "fixed":
            scales[arr.key] = Scale(max_fit_shift(arr, max_shift))
        else:
            shift, low = float_shift(arr, storage)
            if max_shift is not None:
                shift = min(shift, max_shift)
            scales[arr.key] = Scale(shift)
            if low:
                short[arr.key] = low
    rule = "fill the stored range" if storage == "fixed" else f"max|c*w| < 2^{FLOAT_TOP_EXPONENT[storage]}"
    details: dict = {"rule": rule, "batchnorm": bool(batchnorm), "layers": None if layers is None else list(layers)}
    if short:
        details["top_bit_zero"] = short  # weights left below 2: their exponent's top bit stays 0
    return StoragePlan(storage, scales, "rule", details)


def plan_constant(image: WeightImage, constants: Mapping[str, float], storage: str = "fixed") -> StoragePlan:
    """A plan with the given constants per array key. An exact power of two becomes a shift (the free
    divide-back); in fixed storage a constant that would saturate a weight is refused."""
    _check_storage(storage)
    _unscaled(image)
    scales = {}
    for key, c in dict(constants).items():
        layer, _, name = str(key).partition("/")
        if not image.has(layer, name):
            msg = f"plan_constant: no array {key!r}; the image has {', '.join(a.key for a in image)}"
            raise HardenError(msg)
        if isinstance(c, bool) or not isinstance(c, (int, float, np.integer, np.floating)) \
                or not math.isfinite(c) or c <= 0:
            msg = f"plan_constant: the constant of {key} must be a positive number, got {c!r}"
            raise HardenError(msg)
        scale = Scale.of(float(c))
        arr = image.get(layer, name)
        if storage == "fixed" and not scale.is_power_of_two and scale.factor > max_fit_constant(arr):
            msg = (f"plan_constant: {key} scaled by {c:g} saturates {arr.format} (largest constant that fits: "
                   f"{max_fit_constant(arr):g})")
            raise HardenError(msg)
        scales[key] = scale
    plan = StoragePlan(storage, scales, "constant")
    plan.apply(image)  # refuses shifts that overflow and constants whose 1/c cannot be formed
    return plan


# --- applying a plan -------------------------------------------------------------------------------


def scaled_image(image: WeightImage, plan: StoragePlan) -> WeightImage:
    """The image stored under ``plan`` (``StoragePlan.apply``), with the power-of-two fixed arrays
    checked: their words are the codes of ``c * w`` in the stored type, i.e. the original codes
    shifted (the re-encoding is exact)."""
    _unscaled(image)
    out = plan.apply(image)
    for key, shift in plan.shifts().items():
        old, new = image.get(*key.split("/")), out.get(*key.split("/"))
        t = old.format.fixed
        direct = t.to_unsigned(quantize_float(old.values() * 2.0**shift, t))
        if not np.array_equal(old.to_logical(new.words), direct):
            msg = f"{key}: the scaled words are not the codes of 2^{shift} * w in {t} (internal error)"
            raise HardenError(msg)
        if not np.array_equal(new.values(), old.values()):
            msg = f"{key}: the divide-back of the scaled words does not give the weights back (internal error)"
            raise HardenError(msg)
    return out


# --- what the scaled storage gained -----------------------------------------------------------------


@dataclass(frozen=True)
class GainRow:
    """Precision of one array's storage under a plan."""

    key: str
    stored: str
    """The stored word format."""
    compute: str
    """The type the hardware computes with after the divide-back ("float64" for float words)."""
    scale: str
    gained_bits: int | None
    """Bits of resolution the compute type gained (``s`` for ``2**s`` in fixed point; 0 for a constant,
    whose divide-back rounds to the trained type; None for float words)."""
    used_bits: int | None
    """How many of the gained low bits the stored weights actually use (0 when they are on the trained grid)."""
    headroom_bits: int | None
    """Further shift that would still fit (0 when the rule's shift is used)."""


def _trailing_zeros(codes: np.ndarray, cap: int) -> int:
    nonzero = np.abs(codes[codes != 0]).astype(np.int64)
    if nonzero.size == 0:
        return cap
    low = np.bitwise_and(nonzero, -nonzero)  # lowest set bit of each code
    return min(cap, int(np.log2(low.min())))


def precision_gain(image: WeightImage, plan: StoragePlan | None = None) -> list[GainRow]:
    """Per array: bits of resolution gained by scaled storage and how many the weights use.

    ``image`` is either an unscaled image and ``plan`` the plan to apply, or an image that already
    carries its storage (e.g. ``image_from_hls(hls_model)`` of a model converted with a plan:
    there batch-norm arrays can use the gained bits).
    """
    if plan is not None:
        image = scaled_image(image, plan)
    rows = []
    for arr in image:
        if arr.format.kind is not Kind.FIXED:
            rows.append(GainRow(arr.key, str(arr.format), "float64", str(arr.scale), None, None, None))
            continue
        t: FixedType = arr.format.fixed
        if not arr.scale.is_power_of_two:
            rows.append(GainRow(arr.key, str(t), str(arr.compute_type()), str(arr.scale), 0, 0, None))
            continue
        s = int(arr.scale.shift)
        codes = t.from_unsigned(arr.words)
        used = max(0, s - _trailing_zeros(codes, s)) if s > 0 else 0
        hi, lo = (int(codes.max()), int(codes.min())) if codes.size else (0, 0)
        room = 0
        while room < t.width - 1 and (hi << (room + 1)) <= t.max_code and (lo << (room + 1)) >= t.min_code:
            room += 1
        rows.append(GainRow(arr.key, str(t), str(arr.compute_type()), str(arr.scale), s, used, room))
    return rows


def format_gain_table(rows: Iterable[GainRow]) -> str:
    """The precision table as aligned text, for the CLI and reports."""
    head = ("array", "stored", "computes as", "scale", "gained", "used", "headroom")
    body = [(r.key, r.stored, r.compute, r.scale, _opt(r.gained_bits), _opt(r.used_bits), _opt(r.headroom_bits))
            for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=False)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
             for line in (head, *body)]
    return "\n".join(lines)


def _opt(value: int | None) -> str:
    return "-" if value is None else str(value)

