"""hwflow.fixed: hand-computed cases, and every rounding/overflow mode against Xilinx's ap_fixed."""

import subprocess
from pathlib import Path

import numpy as np
import pytest

from hwflow.errors import FormatError
from hwflow.fixed import (
    FixedType,
    Overflow,
    Rounding,
    cast,
    overflow,
    parse_type,
    quantize_float,
    requantize,
    value_range,
)

HERE = Path(__file__).parent


def test_parse_type_spellings():
    assert parse_type("fixed<8,3>") == FixedType(8, 3)
    assert parse_type("ap_fixed<16,6,AP_RND,AP_SAT>") == FixedType(16, 6, True, Rounding.RND, Overflow.SAT)
    assert parse_type("ufixed<8,3,RND_CONV,SAT,0>") == FixedType(8, 3, False, Rounding.RND_CONV, Overflow.SAT)
    assert parse_type("ap_uint<5>") == FixedType(5, 5, False)
    assert parse_type("int<12>") == FixedType(12, 12, True)
    t = parse_type(str(FixedType(10, -2, False, Rounding.RND_ZERO, Overflow.SAT_SYM)))
    assert t == FixedType(10, -2, False, Rounding.RND_ZERO, Overflow.SAT_SYM)


@pytest.mark.parametrize("bad", ["float", "fixed<8>", "fixed<a,3>", "fixed<8,3,RND,BAD>", "fixed<8,3,RND,SAT,2>"])
def test_parse_type_rejects(bad):
    with pytest.raises(FormatError):
        parse_type(bad)


# Values with two fractional bits, cast to integers: the tie cases decide between the modes.
VALUES = [-2.5, -1.75, -1.5, -0.5, -0.25, 0.25, 0.5, 1.5, 1.75, 2.5]
EXPECTED = {
    Rounding.TRN: [-3, -2, -2, -1, -1, 0, 0, 1, 1, 2],
    Rounding.TRN_ZERO: [-2, -1, -1, 0, 0, 0, 0, 1, 1, 2],
    Rounding.RND: [-2, -2, -1, 0, 0, 0, 1, 2, 2, 3],
    Rounding.RND_ZERO: [-2, -2, -1, 0, 0, 0, 0, 1, 2, 2],
    Rounding.RND_INF: [-3, -2, -2, -1, 0, 0, 1, 2, 2, 3],
    Rounding.RND_MIN_INF: [-3, -2, -2, -1, 0, 0, 0, 1, 2, 2],
    Rounding.RND_CONV: [-2, -2, -2, 0, 0, 0, 0, 2, 2, 2],
}


@pytest.mark.parametrize("mode", list(Rounding))
def test_rounding_by_hand(mode):
    dst = FixedType(8, 8, True, mode)
    codes = (np.array(VALUES) * 4).astype(np.int64)
    np.testing.assert_array_equal(requantize(codes, 2, dst), EXPECTED[mode])
    np.testing.assert_array_equal(quantize_float(np.array(VALUES), dst), EXPECTED[mode])


@pytest.mark.parametrize("mode", list(Rounding))
def test_fast_cast_rounding_by_hand(mode):
    codes = (np.array(VALUES) * 4).astype(np.int64)
    out = cast(codes, FixedType(8, 6), FixedType(8, 8, True, mode))
    np.testing.assert_array_equal(out, EXPECTED[mode])


def test_fast_cast_skips_only_impossible_overflow():
    # ufixed<8,3> into fixed<12,6>: exact, no rounding or overflow possible.
    codes = np.arange(256)
    np.testing.assert_array_equal(cast(codes, FixedType(8, 3, False), FixedType(12, 6)), codes * 2)
    # fixed<12,6> into ufixed<8,3,SAT>: both negative and large values saturate.
    codes = np.array([-2048, -1, 0, 100, 2047])
    np.testing.assert_array_equal(cast(codes, FixedType(12, 6), FixedType(8, 3, False, overflow=Overflow.SAT)),
                                  [0, 0, 0, 50, 255])


def test_overflow_by_hand():
    s4 = FixedType(4, 4)
    codes = np.array([-10, -9, -8, 7, 8, 9, 17])
    np.testing.assert_array_equal(overflow(codes, s4), [6, 7, -8, 7, -8, -7, 1])
    np.testing.assert_array_equal(overflow(codes, FixedType(4, 4, overflow=Overflow.SAT)), [-8, -8, -8, 7, 7, 7, 7])
    np.testing.assert_array_equal(overflow(codes, FixedType(4, 4, overflow=Overflow.SAT_ZERO)), [0, 0, -8, 7, 0, 0, 0])
    np.testing.assert_array_equal(overflow(codes, FixedType(4, 4, overflow=Overflow.SAT_SYM)), [-7, -7, -7, 7, 7, 7, 7])
    u4 = FixedType(4, 4, signed=False)
    np.testing.assert_array_equal(overflow(np.array([-3, 15, 16, 17]), u4), [13, 15, 0, 1])
    np.testing.assert_array_equal(overflow(np.array([-3, 15, 16]), FixedType(4, 4, False, overflow=Overflow.SAT)),
                                  [0, 15, 15])


def _reference_cast(code: int, src: FixedType, dst: FixedType) -> int:
    """A move of the binary point to more fractional bits, then the overflow, in Python integers."""
    value = code << (dst.frac - src.frac)
    if dst.min_code <= value <= dst.max_code:
        return value
    if dst.overflow is Overflow.WRAP:
        return (value - dst.min_code) % (1 << dst.width) + dst.min_code
    if dst.overflow is Overflow.SAT_ZERO:
        return 0
    low = -dst.max_code if dst.overflow is Overflow.SAT_SYM and dst.signed else dst.min_code
    return low if value < 0 else dst.max_code


@pytest.mark.parametrize("mode", list(Overflow))
def test_far_binary_point_moves_leave_no_int64_overflow(mode):
    # fixed<51,41> into ufixed<31,4> / fixed<31,4>: a shift of 17 on 50-bit codes needs 67 bits.
    src = FixedType(51, 41)
    rng = np.random.default_rng(3)
    codes = np.concatenate([rng.integers(src.min_code, src.max_code, 200, endpoint=True),
                            [src.min_code, src.max_code, -1, 0, 1]])
    for dst in (FixedType(31, 4, False, overflow=mode), FixedType(31, 4, True, overflow=mode)):
        want = [_reference_cast(int(c), src, dst) for c in codes]
        np.testing.assert_array_equal(requantize(codes, src.frac, dst), want)
        np.testing.assert_array_equal(cast(codes, src, dst), want)
        assert value_range(src, dst) == (src.min_code << 17, src.max_code << 17)


def test_rounding_then_overflow():
    # 7.75 rounds up to 8, which then overflows a 4-bit signed integer.
    assert int(quantize_float(np.array(7.75), FixedType(4, 4, True, Rounding.RND, Overflow.SAT))) == 7
    assert int(quantize_float(np.array(7.75), FixedType(4, 4, True, Rounding.RND, Overflow.WRAP))) == -8


def test_float_conversion_details():
    t = FixedType(8, 1)
    assert int(quantize_float(np.array(0.3), t)) == 38  # floor(38.4)
    assert int(quantize_float(np.array(-0.3), t)) == -39
    special = quantize_float(np.array([np.nan, np.inf, -np.inf, 1e300, -1e300]), FixedType(8, 1, overflow=Overflow.SAT))
    np.testing.assert_array_equal(special, [0, 127, -128, 127, -128])
    assert int(quantize_float(np.array(2.0**70 + 2.0**18), FixedType(16, 16))) == 0  # wraps exactly


def test_words_round_trip():
    t = FixedType(6, 2)
    codes = np.arange(t.min_code, t.max_code + 1)
    words = t.to_unsigned(codes)
    assert words.min() == 0
    assert words.max() == 63
    np.testing.assert_array_equal(t.from_unsigned(words), codes)
    u = FixedType(6, 2, signed=False)
    np.testing.assert_array_equal(u.from_unsigned(u.to_unsigned(np.arange(64))), np.arange(64))


def _ap_types_dir() -> Path:
    import hls4ml

    return Path(hls4ml.__file__).parent / "templates" / "vivado" / "ap_types"


CASES = [  # (src width, src integer, dst FixedType)
    (12, 4, FixedType(6, 2, True, q, o)) for q in Rounding for o in Overflow
] + [
    (12, 4, FixedType(6, 3, False, q, o)) for q in Rounding for o in Overflow
] + [
    (10, 2, FixedType(14, 6)), (10, 2, FixedType(5, 1, True, Rounding.RND_CONV, Overflow.SAT)),
    (16, 6, FixedType(8, 3, False, Rounding.RND_CONV, Overflow.SAT)), (16, 6, FixedType(8, -1)),
    (8, 1, FixedType(18, 10, True, Rounding.RND, Overflow.SAT_SYM)),
]


@pytest.mark.usefixtures("require_gxx")
def test_against_xilinx_ap_fixed(tmp_path):
    """Every cast in CASES, on every code of a 12-bit source and on random doubles, equals ap_fixed's."""
    lines = []
    for ws, is_, d in CASES:
        q, o = f"AP_{d.rounding.value}", f"AP_{d.overflow.value}"
        lines.append(f"CASE({ws}, {is_}, {d.width}, {d.integer}, {q}, {o}, {str(d.signed).lower()})")
    (tmp_path / "cases.h").write_text("\n".join(lines) + "\n")
    exe = tmp_path / "cast"
    subprocess.run(
        ["g++", "-O1", "-std=c++14", "-I", str(_ap_types_dir()), "-I", str(tmp_path),
         str(HERE / "cpp" / "apfixed_cast.cpp"), "-o", str(exe)],
        check=True, capture_output=True,
    )
    rng = np.random.default_rng(7)
    codes = np.arange(-(1 << 11), 1 << 11)  # every 12-bit code; narrower sources use the low bits
    reals = np.concatenate([rng.normal(0, 8, 3000), np.arange(-40, 40) / 8, rng.uniform(-1e4, 1e4, 200)])
    stdin = f"{len(codes)}\n{' '.join(map(str, codes))}\n{len(reals)}\n" + " ".join(repr(float(r)) for r in reals)
    out = subprocess.run([str(exe)], input=stdin, capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == 2 * len(CASES)
    for k, (ws, is_, dst) in enumerate(CASES):
        src = FixedType(ws, is_)
        src_codes = src.from_unsigned(src.to_unsigned(codes))
        ours = dst.to_unsigned(requantize(src_codes, src.frac, dst))
        theirs = np.array(out[2 * k].split(), dtype=np.uint64)
        np.testing.assert_array_equal(ours, theirs, err_msg=f"{src} -> {dst}")
        fast = dst.to_unsigned(cast(src_codes, src, dst).astype(np.int64))
        np.testing.assert_array_equal(fast, theirs, err_msg=f"fast cast {src} -> {dst}")
        ours_f = dst.to_unsigned(quantize_float(reals, dst))
        np.testing.assert_array_equal(ours_f, np.array(out[2 * k + 1].split(), dtype=np.uint64),
                                      err_msg=f"double -> {dst}")
