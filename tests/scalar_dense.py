"""A scalar reference for hls4ml's dense layer: Python ints, one explicit ``ap_fixed`` cast per step.

Written from hls4ml's C++ and Xilinx's ``ap_fixed`` rules, not from hwflow's code, so that tests
can check hwflow's vectorized kernels against something other than themselves:

- ``nnet_dense_latency.h``: ``mult[i][j] = (accum_t)(data[i] * weights[i][j])`` (``nnet_mult.h``'s
  ``product`` returns the full-precision product), ``acc[j] = (accum_t)bias[j]``, then
  ``acc[j] += mult[i][j]`` for ``i`` in input order, then ``res[j] = (res_t)acc[j]``;
- an assignment between fixed-point types drops low bits with the destination's rounding mode,
  then fits the high bits with its overflow mode (``ap_fixed_base.h``).

Slow on purpose (a loop per product); use small shapes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ApType:
    """``ap_[u]fixed<width, integer, rounding, overflow>`` by its parts (names as in ap_fixed)."""

    width: int
    integer: int
    signed: bool = True
    rounding: str = "TRN"  # TRN TRN_ZERO RND RND_ZERO RND_INF RND_MIN_INF RND_CONV
    overflow: str = "WRAP"  # WRAP SAT SAT_ZERO SAT_SYM

    @property
    def frac(self) -> int:
        return self.width - self.integer


def _round(code: int, drop: int, mode: str) -> int:
    """``code / 2**drop`` rounded to an integer with ``mode`` (exact integer arithmetic)."""
    if drop <= 0:
        return code << -drop
    unit = 1 << drop
    floor, rem = code // unit, code % unit  # Python: floor division, 0 <= rem < unit
    half = unit // 2
    negative = code < 0
    if mode == "TRN":
        up = False
    elif mode == "TRN_ZERO":
        up = negative and rem != 0
    elif rem != half:
        up = rem > half
    else:  # exactly half way
        up = {"RND": True, "RND_ZERO": negative, "RND_INF": not negative, "RND_MIN_INF": False,
              "RND_CONV": floor % 2 == 1}[mode]
    return floor + int(up)


def _fit(code: int, t: ApType) -> int:
    """Fit an integer code into ``t.width`` bits with ``t``'s overflow mode."""
    lo, hi = (-(1 << (t.width - 1)), (1 << (t.width - 1)) - 1) if t.signed else (0, (1 << t.width) - 1)
    if t.overflow == "WRAP":
        return (code - lo) % (1 << t.width) + lo
    if lo <= code <= hi:
        return -hi if t.overflow == "SAT_SYM" and t.signed and code == lo else code
    if t.overflow == "SAT_ZERO":
        return 0
    if t.overflow == "SAT_SYM" and t.signed:
        return hi if code > hi else -hi
    return hi if code > hi else lo  # SAT (and SAT_SYM of an unsigned type)


def cast(code: int, src_frac: int, dst: ApType) -> int:
    """Assign a value held exactly as ``code * 2**-src_frac`` to an ``ap_fixed`` of type ``dst``."""
    return _fit(_round(code, src_frac - dst.frac, dst.rounding), dst)


def dense(x: list[list[int]], x_frac: int, w: list[list[int]], w_frac: int, b: list[int], b_frac: int,
          accum: ApType, result: ApType) -> list[list[int]]:
    """Result codes of hls4ml's dense_latency for every row of ``x`` (codes), ``w`` as ``[n_in][n_out]``."""
    out = []
    for row in x:
        acc = [cast(bj, b_frac, accum) for bj in b]
        for i, xi in enumerate(row):
            for j in range(len(b)):
                mult = cast(xi * w[i][j], x_frac + w_frac, accum)
                acc[j] = cast(acc[j] + mult, accum.frac, accum)
        out.append([cast(a, accum.frac, result) for a in acc])
    return out
