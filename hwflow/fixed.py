"""Fixed-point types and the exact arithmetic of Xilinx ``ap_fixed`` on integer codes.

Every tensor in the emulator is a numpy ``int64`` array of *codes* plus a ``FixedType``: the value
is ``code * 2**-frac``. Working on codes (not floats) is what makes the emulator bit-exact: rounding
and overflow are applied exactly where the C++ types apply them, with the same modes.

Type strings such as ``"ap_fixed<8,3,AP_RND,AP_SAT>"`` or hls4ml's ``"fixed<8,3,RND,SAT,0>"`` are
parsed once, at the edge (``parse_type``); nothing downstream looks at strings.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import numpy as np

from hwflow.errors import FormatError


class Rounding(enum.Enum):
    """Quantization modes of ``ap_fixed`` (what happens to the bits below the LSB)."""

    TRN = "TRN"  # toward minus infinity (drop the bits): the default
    TRN_ZERO = "TRN_ZERO"  # toward zero
    RND = "RND"  # to nearest, ties toward plus infinity
    RND_ZERO = "RND_ZERO"  # to nearest, ties toward zero
    RND_INF = "RND_INF"  # to nearest, ties away from zero
    RND_MIN_INF = "RND_MIN_INF"  # to nearest, ties toward minus infinity
    RND_CONV = "RND_CONV"  # to nearest, ties to even (convergent)


class Overflow(enum.Enum):
    """Overflow modes of ``ap_fixed`` (what happens above the MSB)."""

    WRAP = "WRAP"  # keep the low bits: two's complement wrap-around, the default
    SAT = "SAT"  # clamp to the largest / smallest value
    SAT_ZERO = "SAT_ZERO"  # an overflowing value becomes zero
    SAT_SYM = "SAT_SYM"  # clamp symmetrically to [-max, max] (signed)


@dataclass(frozen=True)
class FixedType:
    """``ap_fixed<width, integer, rounding, overflow>`` (or ``ap_ufixed`` when not signed).

    ``integer`` counts the sign bit, as in ``ap_fixed``; it may be negative or exceed ``width``.
    Plain integers (``ap_int<W>``) are ``FixedType(W, W)``.
    """

    width: int
    integer: int
    signed: bool = True
    rounding: Rounding = Rounding.TRN
    overflow: Overflow = Overflow.WRAP

    def __post_init__(self) -> None:
        if self.width < 1 or self.width > 62:
            msg = f"fixed-point width must be 1..62 bits for the emulator, got {self.width}"
            raise FormatError(msg)

    @property
    def frac(self) -> int:
        """Number of fractional bits: the value of a code is ``code * 2**-frac``."""
        return self.width - self.integer

    @property
    def min_code(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def max_code(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def lsb(self) -> float:
        return 2.0**-self.frac

    def to_float(self, codes: np.ndarray) -> np.ndarray:
        """Exact float64 values of codes (exact while ``width <= 53``)."""
        return np.ldexp(np.asarray(codes, dtype=np.float64), -self.frac)

    def to_unsigned(self, codes: np.ndarray) -> np.ndarray:
        """The stored word: the code's two's-complement bit pattern as an unsigned ``width``-bit integer."""
        return (np.asarray(codes, dtype=np.int64) & ((1 << self.width) - 1)).astype(np.uint64)

    def from_unsigned(self, words: np.ndarray) -> np.ndarray:
        """Codes from stored words (the inverse of ``to_unsigned``; extra high bits are ignored)."""
        w = np.asarray(words, dtype=np.uint64).astype(np.int64) & ((1 << self.width) - 1)
        if self.signed:
            w = np.where(w >= (1 << (self.width - 1)), w - (1 << self.width), w)
        return w

    def cpp(self) -> str:
        """The Vivado/Vitis HLS spelling, for generated code and messages."""
        base = "ap_fixed" if self.signed else "ap_ufixed"
        return f"{base}<{self.width},{self.integer},AP_{self.rounding.value},AP_{self.overflow.value}>"

    def __str__(self) -> str:
        base = "fixed" if self.signed else "ufixed"
        return f"{base}<{self.width},{self.integer},{self.rounding.value},{self.overflow.value}>"


_TYPE_RE = re.compile(
    r"^\s*(?:ap_|ac_)?(?P<kind>u?fixed|u?int)\s*<\s*(?P<args>[^>]*)>\s*$", re.IGNORECASE
)


def parse_type(text: str) -> FixedType:
    """Parse ``fixed<W,I[,RND][,SAT][,N]>``, ``ap_ufixed<...>``, ``int<W>``, ``ap_uint<W>`` once, at the edge."""
    match = _TYPE_RE.match(text)
    if not match:
        msg = f"not a fixed-point type: {text!r} (expected e.g. 'fixed<8,3>' or 'ap_fixed<16,6,AP_RND,AP_SAT>')"
        raise FormatError(msg)
    kind = match["kind"].lower()
    args = [a.strip() for a in match["args"].split(",") if a.strip()]
    signed = not kind.startswith("u")
    try:
        width = int(args[0])
        if "int" in kind:
            if len(args) != 1:
                raise ValueError
            return FixedType(width, width, signed)
        integer = int(args[1])
        rounding = Rounding(args[2].upper().removeprefix("AP_")) if len(args) > 2 else Rounding.TRN
        overflow = Overflow(args[3].upper().removeprefix("AP_")) if len(args) > 3 else Overflow.WRAP
        if len(args) > 4 and int(args[4]) != 0:
            msg = f"{text!r}: saturation bits other than 0 are not supported"
            raise FormatError(msg)
    except (ValueError, IndexError):
        msg = f"malformed fixed-point type {text!r} (expected e.g. 'fixed<8,3>' or 'fixed<8,3,RND,SAT>')"
        raise FormatError(msg) from None
    return FixedType(width, integer, signed, rounding, overflow)


def from_hls4ml(precision: object) -> FixedType:
    """Convert an hls4ml precision object (FixedPrecisionType, IntegerPrecisionType) to a FixedType."""
    bases = {cls.__name__ for cls in type(precision).__mro__}
    name = type(precision).__name__
    width = getattr(precision, "width", None)
    if "IntegerPrecisionType" in bases:  # an ap_int: C++ converts an ap_fixed into it truncating toward zero
        return FixedType(width, width, bool(precision.signed), Rounding.TRN_ZERO)
    if "XnorPrecisionType" in bases:  # hls4ml's binary (XNOR) data: ap_uint<1>, 0 meaning -1 (hwflow.image.quantized)
        return FixedType(1, 1, False)
    if "FixedPrecisionType" not in bases:
        msg = f"hls4ml precision {precision} ({name}) is not a fixed-point type; the emulator needs fixed point"
        raise FormatError(msg)
    rounding = Rounding(str(precision.rounding_mode or "TRN").upper().removeprefix("AP_"))
    overflow = Overflow(str(precision.saturation_mode or "WRAP").upper().removeprefix("AP_"))
    if (precision.saturation_bits or 0) != 0:
        msg = f"hls4ml precision {precision}: saturation bits other than 0 are not supported"
        raise FormatError(msg)
    return FixedType(width, precision.integer, bool(precision.signed), rounding, overflow)


# --- the two primitives every cast is made of -------------------------------------------------------


def _round_up(floor: np.ndarray, rem_num: np.ndarray, rem_den: int | float, negative: np.ndarray,
              mode: Rounding) -> np.ndarray:
    """Whether to add one LSB to ``floor`` given the dropped remainder ``rem_num / rem_den`` in [0, 1)."""
    if mode is Rounding.TRN:
        return np.zeros(np.shape(floor), dtype=bool)
    nonzero = rem_num != 0
    if mode is Rounding.TRN_ZERO:
        return nonzero & negative
    twice = 2 * rem_num
    above, tie = twice > rem_den, twice == rem_den
    if mode is Rounding.RND:
        tie_up = np.ones(np.shape(floor), dtype=bool)
    elif mode is Rounding.RND_ZERO:
        tie_up = negative
    elif mode is Rounding.RND_INF:
        tie_up = ~negative
    elif mode is Rounding.RND_MIN_INF:
        tie_up = np.zeros(np.shape(floor), dtype=bool)
    else:  # RND_CONV: ties to the even neighbour
        tie_up = (floor % 2) != 0
    return above | (tie & tie_up)


def overflow(codes: np.ndarray, dst: FixedType) -> np.ndarray:
    """Fit integer codes (already at ``dst.frac``) into ``dst.width`` bits with ``dst``'s overflow mode."""
    codes = np.asarray(codes, dtype=np.int64)
    lo, hi = dst.min_code, dst.max_code
    mode = dst.overflow
    if mode is Overflow.WRAP:
        span = 1 << dst.width
        return ((codes - lo) & (span - 1)) + lo
    if mode is Overflow.SAT:
        return np.clip(codes, lo, hi)
    if mode is Overflow.SAT_ZERO:
        return np.where((codes < lo) | (codes > hi), 0, codes)
    lo_sym = -hi if dst.signed else lo
    return np.clip(codes, lo_sym, hi)


def requantize(codes: np.ndarray, src_frac: int, dst: FixedType) -> np.ndarray:
    """Cast codes with ``src_frac`` fractional bits to ``dst``: round the dropped bits, then overflow.

    This is what assigning one ``ap_fixed`` to another does; the source is assumed to hold its value
    exactly (which is true of products and sums in full precision).
    """
    codes = np.asarray(codes, dtype=np.int64)
    shift = src_frac - dst.frac
    if shift <= 0:
        if dst.overflow is not Overflow.WRAP and shift < 0:
            # A far move of the binary point would overflow int64; every code beyond the type's range
            # by one step after the shift saturates the same, so clip first (a wrap is exact modulo 2**64).
            codes = np.clip(codes, (dst.min_code >> -shift) - 1, (dst.max_code >> -shift) + 1)
        return overflow(np.left_shift(codes, -shift), dst)
    floor = np.right_shift(codes, shift)
    rem = codes - np.left_shift(floor, shift)
    up = _round_up(floor, rem, 1 << shift, codes < 0, dst.rounding)
    return overflow(floor + up, dst)


def quantize_float(values: np.ndarray, dst: FixedType) -> np.ndarray:
    """Convert float values to ``dst`` codes as ``ap_fixed``'s constructor from ``double`` does.

    Scaling by ``2**frac`` is exact in float64, so the rounding decision sees the exact remainder.
    Non-finite inputs are a choice of ours (``ap_fixed`` leaves them undefined): NaN becomes 0 and
    infinities the largest / smallest code.
    """
    x = np.asarray(values, dtype=np.float64)
    scaled = np.ldexp(x, dst.frac)
    finite = np.isfinite(scaled)
    scaled = np.where(finite, scaled, 0.0)
    floor = np.floor(scaled)
    up = _round_up(floor, scaled - floor, 1.0, scaled < 0, dst.rounding)
    rounded = floor + up
    # Reduce huge values modulo 2**width in float (exact) before they reach int64.
    span = float(1 << dst.width)
    big = np.abs(rounded) >= 2.0**62
    if np.any(big):
        if dst.overflow is Overflow.WRAP:
            rounded = np.where(big, np.fmod(rounded, span), rounded)
        else:
            rounded = np.where(big, np.sign(rounded) * span, rounded)
    codes = overflow(rounded.astype(np.int64), dst)
    inf_codes = np.where(np.isposinf(x), dst.max_code, np.where(np.isneginf(x), dst.min_code, 0))
    return np.where(finite, codes, inf_codes)


# --- the fast cast: the same results as ``requantize``, on float64 when that is exact ---------------

_F64_INT = 2**53


def value_range(src: FixedType, dst: FixedType) -> tuple[int, int]:
    """Smallest and largest ``dst`` codes a ``src`` value can round to, before overflow (Python
    integers: a far move of the binary point leaves int64)."""
    if src.frac <= dst.frac:
        return src.min_code << (dst.frac - src.frac), src.max_code << (dst.frac - src.frac)
    ends = requantize_unbounded(np.array([src.min_code, src.max_code], dtype=np.int64), src.frac, dst)
    return int(ends[0]), int(ends[1])


def requantize_unbounded(codes: np.ndarray, src_frac: int, dst: FixedType) -> np.ndarray:
    """``requantize`` without the overflow step: the rounded code at ``dst.frac``."""
    codes = np.asarray(codes, dtype=np.int64)
    shift = src_frac - dst.frac
    if shift <= 0:
        return np.left_shift(codes, -shift)
    floor = np.right_shift(codes, shift)
    rem = codes - np.left_shift(floor, shift)
    return floor + _round_up(floor, rem, 1 << shift, codes < 0, dst.rounding)


def cast(codes: np.ndarray, src: FixedType, dst: FixedType) -> np.ndarray:
    """Assign ``src``-typed codes to ``dst``: what ``requantize`` does, but fast.

    The types decide, once, whether rounding or overflow can happen at all (hls4ml's inferred types
    often make a cast exact); what remains is done on float64, which holds every code below 2**53
    exactly and has one-pass rounding functions for each mode. Returns float64 codes (exact
    integers); wider types fall back to the int64 reference.
    """
    shift = src.frac - dst.frac
    lo, hi = value_range(src, dst)
    fits = dst.min_code <= lo and hi <= dst.max_code
    if max(abs(lo), abs(hi), 1 << src.width) >= _F64_INT:
        return requantize(codes, src.frac, dst).astype(np.float64)
    if shift <= 0 and fits:  # nothing to round, nothing can overflow: at most a move of the binary point
        y = np.asarray(codes, dtype=np.float64)
        return y * 2.0**-shift if shift else y
    y = np.array(codes, dtype=np.float64)  # a private copy: everything below works in place
    if shift != 0:
        y *= 2.0**-shift  # exact: a power of two
    if shift > 0:
        _round_float(y, dst.rounding)
    if not fits:
        _overflow_float(y, dst)
    return y


def can_wrap(src: FixedType, dst: FixedType) -> bool:
    """Whether casting ``src`` to ``dst`` can wrap around (the one cast that is not monotonic)."""
    lo, hi = value_range(src, dst)
    return dst.overflow is Overflow.WRAP and not (dst.min_code <= lo and hi <= dst.max_code)


def monotone_cast(src: FixedType, dst: FixedType) -> bool:
    """Whether casting ``src`` to ``dst`` is non-decreasing: nothing overflows, or it saturates.

    Rounding is monotone; a wrap (``WRAP``) or an overflow to zero (``SAT_ZERO``) is not.
    """
    lo, hi = value_range(src, dst)
    fits = dst.min_code <= lo and hi <= dst.max_code
    return fits or dst.overflow in (Overflow.SAT, Overflow.SAT_SYM)


def _round_float(y: np.ndarray, mode: Rounding) -> None:
    """Round float64 values (whose fractional part is exact) to integers with an ap_fixed mode, in place."""
    if mode is Rounding.TRN:
        np.floor(y, out=y)
    elif mode is Rounding.TRN_ZERO:
        np.trunc(y, out=y)
    elif mode is Rounding.RND:
        y += 0.5
        np.floor(y, out=y)
    elif mode is Rounding.RND_CONV:
        np.rint(y, out=y)  # IEEE round-half-to-even
    elif mode is Rounding.RND_MIN_INF:
        y -= 0.5
        np.ceil(y, out=y)
    elif mode is Rounding.RND_ZERO:
        y[...] = np.copysign(np.ceil(np.abs(y) - 0.5), y)
    else:  # RND_INF: ties away from zero
        y[...] = np.copysign(np.floor(np.abs(y) + 0.5), y)


def _overflow_float(y: np.ndarray, dst: FixedType) -> None:
    lo, hi = float(dst.min_code), float(dst.max_code)
    mode = dst.overflow
    if mode is Overflow.WRAP:
        span = float(1 << dst.width)
        y -= span * np.floor((y - lo) / span)
    elif mode is Overflow.SAT:
        np.clip(y, lo, hi, out=y)
    elif mode is Overflow.SAT_ZERO:
        y[(y < lo) | (y > hi)] = 0.0
    else:
        np.clip(y, -hi if dst.signed else lo, hi, out=y)
