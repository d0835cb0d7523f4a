"""Stored words that are not fixed-point numbers: hls4ml's XNOR bits, ternary codes and po2 exponents.

QKeras's ``binary``, ``ternary`` and ``quantized_po2`` weight quantizers reach the firmware as words
that hls4ml's product functions (``nnet_mult.h``) read in their own way, so a fault in one of them
means what those functions make of it, not what a fixed-point reading would say:

- **XNOR** (``XnorPrecisionType``, ``ap_uint<1>``; ``binary`` kernels): ``weight_binary`` returns
  ``w == 0 ? -a : a``, so the word 0 is the weight -1 and 1 is +1;
- **ternary** (a signed ``ap_int<2>``; ``ternary`` kernels): ``weight_ternary`` returns 0 for
  ``w == 0``, ``-a`` for ``w == -1`` and ``a`` otherwise, so the word ``10`` (-2, which no trained
  weight has, but a bit flip makes) multiplies like +1;
- **exponent** (``ExponentPrecisionType``; ``quantized_po2`` kernels, ``ApplyAlpha`` po2 scales): a
  struct ``{ap_uint<1> sign; ap_int<E> weight;}``; ``weight_exponential`` shifts the input by the
  exponent and negates it when ``sign == 0``. The stored word is the struct packed as HLS packs it,
  first member in the low bits: bit 0 is the sign, bits ``1..E`` the exponent's two's complement.

XNOR and ternary words multiply exactly like a fixed-point weight whose code is -1, 0 or +1, so they
decode to codes in ``MULTIPLIER_TYPE`` (``int<2>``) and every fixed-point kernel, the fused path and
the engine's linear rule compute them exactly. Exponent words have no such code (a flipped exponent
bit may shift by 2^16); ``hwflow.emulator.products`` computes their shifts.
"""

from __future__ import annotations

import numpy as np

from hwflow.errors import FormatError
from hwflow.fixed import FixedType

MULTIPLIER_TYPE = FixedType(2, 2)
"""The fixed-point type of the multipliers an XNOR or ternary word stands for (-1, 0, +1)."""

EXPONENT_MAX_BITS = 61


def xnor_codes(words: np.ndarray) -> np.ndarray:
    """The multiplier of each XNOR word: 0 -> -1, 1 -> +1 (``weight_binary``)."""
    return 2 * (np.asarray(words, dtype=np.uint64).astype(np.int64) & 1) - 1


def ternary_codes(words: np.ndarray) -> np.ndarray:
    """The multiplier of each 2-bit ternary word as ``weight_ternary`` applies it: 00 -> 0, 01 -> +1,
    11 (-1) -> -1, 10 (-2) -> +1."""
    w = np.asarray(words, dtype=np.uint64).astype(np.int64) & 3
    return np.choose(w, [0, 1, 1, -1])


def encode_xnor(values: np.ndarray) -> np.ndarray:
    """XNOR words of real weights: 1 where ``value >= 0`` (hls4ml's ``BinaryQuantizer(1)``), else 0."""
    return (np.asarray(values, dtype=np.float64) >= 0).astype(np.uint64)


def encode_ternary(values: np.ndarray) -> np.ndarray:
    """2-bit words of real weights rounded to -1, 0 or +1."""
    codes = np.clip(np.rint(np.nan_to_num(np.asarray(values, dtype=np.float64))), -1, 1).astype(np.int64)
    return (codes & 3).astype(np.uint64)


def check_exponent_bits(bits: int) -> None:
    if not 1 <= int(bits) <= EXPONENT_MAX_BITS:
        msg = f"an exponent word holds 1..{EXPONENT_MAX_BITS} exponent bits, got {bits}"
        raise FormatError(msg)


def exponent_fields(words: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``(sign, exponent)`` of packed exponent words: sign 1 means positive; the exponent is signed."""
    w = np.asarray(words, dtype=np.uint64).astype(np.int64)
    sign = w & 1
    e = (w >> 1) & ((1 << bits) - 1)
    e = np.where(e >= (1 << (bits - 1)), e - (1 << bits), e)
    return sign, e


def exponent_words(sign: np.ndarray, exponent: np.ndarray, bits: int) -> np.ndarray:
    """Pack ``(sign, exponent)`` as stored: the exponent wraps into ``bits`` bits as ``ap_int<bits>`` does."""
    e = np.asarray(exponent, dtype=np.int64) & ((1 << bits) - 1)
    return ((np.asarray(sign, dtype=np.int64) & 1) | (e << 1)).astype(np.uint64)


def exponent_values(words: np.ndarray, bits: int) -> np.ndarray:
    """Real values ``(+-1) * 2**e`` of exponent words (float64; a huge exponent gives inf or 0)."""
    sign, e = exponent_fields(words, bits)
    with np.errstate(over="ignore", under="ignore"):
        return np.where(sign == 1, 1.0, -1.0) * np.ldexp(1.0, np.clip(e, -2000, 2000))


def encode_exponent(values: np.ndarray, bits: int) -> np.ndarray:
    """Exponent words of real weights, as hls4ml writes them (``ExponentWeightVariable._format``): sign
    0 for a negative value, exponent ``int(log2|v|)`` truncated toward zero; a zero weight (whose
    logarithm hls4ml turns into the most negative int64) keeps the low ``bits`` bits of it, 0."""
    v = np.asarray(values, dtype=np.float64)
    sign = np.where(v < 0, 0, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log2(np.abs(v))
    e = np.where(np.isfinite(logs), np.trunc(np.nan_to_num(logs, posinf=0.0, neginf=0.0)), 0).astype(np.int64)
    return exponent_words(sign, e, bits)


def parse_exponent_entry(text: str) -> tuple[int, int]:
    """One entry of hls4ml's weight header for an exponent array, ``"{sign, exponent}"``, as integers."""
    try:
        sign, value = (part.strip() for part in text.strip().strip("{}").split(","))
        return int(float(sign)) & 1, int(float(value))
    except ValueError:
        msg = f"not an exponent weight entry {text!r} (expected '{{sign, exponent}}')"
        raise FormatError(msg) from None
