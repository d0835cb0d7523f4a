"""How a weight is stored in on-chip memory: its word format and the scale the divide-back undoes.

Faults hit stored bits, so the format is not a detail: a flip in bit 6 of a ``fixed<8,1>`` word and
a flip in bit 14 of a ``float16`` word do very different things to the weight. Keeping the format
explicit per array lets the same network be analysed with fixed-point, half or single storage.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from hwflow.errors import FormatError
from hwflow.fixed import FixedType, parse_type, quantize_float
from hwflow.image import quantized


class Kind(enum.Enum):
    FIXED = "fixed"
    FLOAT16 = "float16"
    FLOAT32 = "float32"
    XNOR = "xnor"  # binary weights, 1 bit (hwflow.image.quantized)
    TERNARY = "ternary"  # ternary weights, 2 bits
    EXPONENT = "exponent"  # quantized_po2 weights: sign + exponent bits


_FLOAT_DTYPES = {Kind.FLOAT16: (np.float16, np.uint16), Kind.FLOAT32: (np.float32, np.uint32)}
_QUANTIZED_WIDTH = {Kind.XNOR: 1, Kind.TERNARY: 2}


@dataclass(frozen=True)
class StorageFormat:
    """The format of one stored word: ``fixed<W,I>`` (what is deployed), ``float16`` or ``float32``."""

    kind: Kind
    fixed: FixedType | None = None
    exponent_bits: int = 0  # EXPONENT only: the width of the exponent (the word adds a sign bit)

    def __post_init__(self) -> None:
        if (self.kind is Kind.FIXED) != (self.fixed is not None):
            msg = "a fixed storage format needs a FixedType, and a float format must not have one"
            raise FormatError(msg)
        if self.kind is Kind.EXPONENT:
            quantized.check_exponent_bits(self.exponent_bits)
        elif self.exponent_bits:
            msg = f"only an exponent storage format has exponent bits ({self.kind.value} has none)"
            raise FormatError(msg)

    @property
    def coded(self) -> bool:
        """Whether a word decodes to an integer code of a fixed-point compute type (fixed, XNOR, ternary)."""
        return self.kind in (Kind.FIXED, Kind.XNOR, Kind.TERNARY)

    @property
    def width(self) -> int:
        """Bits per stored word."""
        if self.kind is Kind.FIXED:
            return self.fixed.width
        if self.kind in _QUANTIZED_WIDTH:
            return _QUANTIZED_WIDTH[self.kind]
        if self.kind is Kind.EXPONENT:
            return self.exponent_bits + 1
        return 16 if self.kind is Kind.FLOAT16 else 32

    @classmethod
    def parse(cls, text: str) -> StorageFormat:
        """``"float16"``, ``"float32"`` or any fixed-point spelling ``parse_type`` accepts."""
        key = text.strip().lower()
        if key in ("float16", "half", "fp16"):
            return cls(Kind.FLOAT16)
        if key in ("float32", "float", "single", "fp32"):
            return cls(Kind.FLOAT32)
        if key in ("xnor", "ternary"):
            return cls(Kind(key))
        if key.startswith("exponent<") and key.endswith(">") and key[9:-1].strip().isdigit():
            return cls(Kind.EXPONENT, exponent_bits=int(key[9:-1]))
        return cls(Kind.FIXED, parse_type(text))

    def __str__(self) -> str:
        if self.kind is Kind.EXPONENT:
            return f"exponent<{self.exponent_bits}>"
        return str(self.fixed) if self.kind is Kind.FIXED else self.kind.value

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Stored words (uint64) for real values, rounding as the format's type does."""
        if self.kind is Kind.FIXED:
            return self.fixed.to_unsigned(quantize_float(values, self.fixed))
        if self.kind is Kind.XNOR:
            return quantized.encode_xnor(values)
        if self.kind is Kind.TERNARY:
            return quantized.encode_ternary(values)
        if self.kind is Kind.EXPONENT:
            return quantized.encode_exponent(values, self.exponent_bits)
        ftype, utype = _FLOAT_DTYPES[self.kind]
        return np.asarray(values, dtype=np.float64).astype(ftype).view(utype).astype(np.uint64)

    def decode_float(self, words: np.ndarray) -> np.ndarray:
        """Real values (float64) of stored words; exact for every format up to 53-bit fixed point."""
        if self.kind is Kind.FIXED:
            return self.fixed.to_float(self.fixed.from_unsigned(words))
        if self.kind is Kind.XNOR:
            return quantized.xnor_codes(words).astype(np.float64)
        if self.kind is Kind.TERNARY:
            return quantized.ternary_codes(words).astype(np.float64)
        if self.kind is Kind.EXPONENT:
            return quantized.exponent_values(words, self.exponent_bits)
        ftype, utype = _FLOAT_DTYPES[self.kind]
        with np.errstate(invalid="ignore"):  # NaN words (a faulty exponent) stay NaN
            return np.asarray(words, dtype=np.uint64).astype(utype).view(ftype).astype(np.float64)


@dataclass(frozen=True)
class Scale:
    """The constant ``c`` a weight array was multiplied by before storage (weight scaling).

    ``shift`` is used when ``c = 2**shift``: in fixed point the divide-back is then a move of the
    binary point (no logic, exact). ``constant`` holds any other ``c`` (divide-back = a multiply).
    """

    shift: int = 0
    constant: float | None = None

    def __post_init__(self) -> None:
        if self.constant is not None and (not math.isfinite(self.constant) or self.constant <= 0):
            msg = f"a weight scale must be a positive finite number, got {self.constant}"
            raise FormatError(msg)
        if self.constant is not None and self.shift != 0:
            msg = f"a weight scale is a shift or a constant, not both (shift {self.shift}, constant {self.constant})"
            raise FormatError(msg)

    @property
    def factor(self) -> float:
        return self.constant if self.constant is not None else 2.0**self.shift

    @property
    def is_power_of_two(self) -> bool:
        return self.constant is None

    @property
    def is_identity(self) -> bool:
        return self.constant is None and self.shift == 0

    @classmethod
    def of(cls, factor: float) -> Scale:
        """The scale ``c``: a shift when ``c`` is an exact power of two (the free divide-back), else a constant."""
        c = float(factor)
        if math.isfinite(c) and c > 0 and math.frexp(c)[0] == 0.5:
            return cls(math.frexp(c)[1] - 1)
        return cls(0, c)

    def __str__(self) -> str:
        return f"2^{self.shift}" if self.constant is None else f"{self.constant:g}"

    def to_json(self) -> dict:
        return {"shift": self.shift, "constant": self.constant}

    @classmethod
    def from_json(cls, data: dict) -> Scale:
        constant = data.get("constant")
        return cls(int(data.get("shift", 0)), None if constant is None else float(constant))
