"""Merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum (hls4ml's ``Merge``) and
Concatenate, bit-exact with ``nnet_merge.h`` / ``nnet_merge_stream.h`` (hls4ml 1.3.0).

hls4ml computes each output as one ``ap_fixed`` expression assigned to ``res_T``:

- ``res = data1 + data2`` (and ``-``, ``*``): the operation is exact in ``ap_fixed`` (its result type
  grows to hold every sum or product), and the one cast is the assignment to ``res_T``;
- ``res = (data1 + data2) * ap_ufixed<1,0>(0.5)``: the exact sum with one more fractional bit, then
  the cast;
- ``res = data1 > data2 ? (res_T) data1 : (res_T) data2`` (``<`` for the minimum): the comparison is
  on the exact values, and each input is cast from its own type;
- concatenation assigns each input word to ``res_T`` in place.

io_stream computes the same expressions on packed words, so one kernel serves both io types. The
ops work on any subset of channels (every output position reads the same position of each input),
which the delta rules of ``hwflow.campaign.delta.merge`` use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hwflow.emulator.kernels import register_op
from hwflow.emulator.program import Kind, LayerSpec
from hwflow.errors import EmulatorError
from hwflow.fixed import FixedType, cast, requantize, value_range

if TYPE_CHECKING:
    from hwflow.emulator.run import Emulator

ELEMENTWISE = ("add", "subtract", "multiply", "average", "maximum", "minimum")
F64_EXACT = 52  # exact results up to this width are computed on float64 codes, wider ones on int64


def _exact(width: int, integer: int, signed: bool) -> FixedType:
    """The type of an exact intermediate result (what ``ap_fixed``'s operator result type holds)."""
    if width > 62:
        msg = f"a merge's exact intermediate needs {width} bits; the emulator computes up to 62"
        raise EmulatorError(msg)
    return FixedType(max(width, 1), integer, signed)


def sum_type(a: FixedType, b: FixedType, minus: bool = False) -> FixedType:
    """``ap_fixed``'s type of ``a + b`` (``a - b``: always signed): one carry bit over the wider operand."""
    frac = max(a.frac, b.frac)
    signed = minus or a.signed or b.signed
    integer = max(a.integer + (b.signed and not a.signed), b.integer + (a.signed and not b.signed)) + 1
    return _exact(integer + frac, integer, signed)


def product_type(a: FixedType, b: FixedType) -> FixedType:
    """``ap_fixed``'s type of ``a * b``: the widths and integer parts add."""
    return _exact(a.width + b.width, a.integer + b.integer, a.signed or b.signed)


def _codes(x: np.ndarray, t: FixedType, frac: int, wide: bool) -> np.ndarray:
    """Exact codes of ``x`` (type ``t``) at ``frac`` fractional bits (``frac >= t.frac``)."""
    if wide:
        return np.left_shift(np.asarray(x, dtype=np.int64), frac - t.frac)
    y = np.asarray(x, dtype=np.float64)
    return y * 2.0 ** (frac - t.frac) if frac != t.frac else y


def elementwise(op: str, a: np.ndarray, ta: FixedType, b: np.ndarray, tb: FixedType, result: FixedType) -> np.ndarray:
    """One elementwise merge of input codes ``a`` (type ``ta``) and ``b`` (``tb``), to ``result`` codes."""
    if op in ("add", "subtract", "average"):
        t = sum_type(ta, tb, minus=op == "subtract")
        wide = t.width > F64_EXACT
        x, y = _codes(a, ta, t.frac, wide), _codes(b, tb, t.frac, wide)
        total = x - y if op == "subtract" else x + y
        if op == "average":  # (a + b) * ap_ufixed<1,0>(0.5): the same codes, one more fractional bit
            t = _exact(t.width + 1, t.integer, t.signed)
        return cast(total, t, result)
    if op == "multiply":
        t = product_type(ta, tb)
        if t.width > F64_EXACT:
            return cast(np.asarray(a, dtype=np.int64) * np.asarray(b, dtype=np.int64), t, result)
        return cast(np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64), t, result)
    if op in ("maximum", "minimum"):
        frac = max(ta.frac, tb.frac)
        wide = max(ta.width + frac - ta.frac, tb.width + frac - tb.frac) > F64_EXACT
        x, y = _codes(a, ta, frac, wide), _codes(b, tb, frac, wide)
        first = x > y if op == "maximum" else x < y
        return np.where(first, cast(a, ta, result), cast(b, tb, result))
    msg = f"merge operation {op!r} is not emulated; supported: {', '.join(ELEMENTWISE)}"
    raise EmulatorError(msg)


def cast_int(codes: np.ndarray, src: FixedType, dst: FixedType) -> np.ndarray:
    """``src`` codes assigned to ``dst`` in int64 arithmetic (``requantize``), skipped where the types
    make the assignment a move of the binary point that nothing overflows (hls4ml's merge types often do)."""
    codes = np.asarray(codes)
    lo, hi = value_range(src, dst)
    if src.frac <= dst.frac and dst.min_code <= lo and hi <= dst.max_code:
        shift = dst.frac - src.frac
        y = codes.astype(np.int64)
        return np.left_shift(y, shift, out=y) if shift else y
    return requantize(codes.astype(np.int64), src.frac, dst)


def elementwise_int(op: str, a: np.ndarray, ta: FixedType, b: np.ndarray, tb: FixedType,
                    result: FixedType) -> np.ndarray:
    """:func:`elementwise` on int64 codes: the same expressions, exact up to 62 bits, no float pass.

    The fused path (``hwflow.emulator.fused``) runs merges with it on its compact integer codes;
    the result is the int64 codes of ``result`` (``tests/test_fused_graph.py`` checks it against
    :func:`elementwise` on random types and codes)."""
    if op in ("add", "subtract", "average"):
        t = sum_type(ta, tb, minus=op == "subtract")
        x, y = _codes(a, ta, t.frac, True), _codes(b, tb, t.frac, True)
        total = np.subtract(x, y, out=x) if op == "subtract" else np.add(x, y, out=x)
        if op == "average":
            t = _exact(t.width + 1, t.integer, t.signed)
        return cast_int(total, t, result)
    if op == "multiply":
        t = product_type(ta, tb)
        return cast_int(np.asarray(a, dtype=np.int64) * np.asarray(b, dtype=np.int64), t, result)
    if op in ("maximum", "minimum"):
        frac = max(ta.frac, tb.frac)
        _exact(max(ta.width + frac - ta.frac, tb.width + frac - tb.frac), 0, True)  # refuses over 62 bits
        x, y = _codes(a, ta, frac, True), _codes(b, tb, frac, True)
        first = x > y if op == "maximum" else x < y
        return np.where(first, cast_int(a, ta, result), cast_int(b, tb, result))
    msg = f"merge operation {op!r} is not emulated; supported: {', '.join(ELEMENTWISE)}"
    raise EmulatorError(msg)


def _check_two(layer: LayerSpec, inputs: list) -> None:
    if len(inputs) != 2:
        msg = f"merge layer {layer.name} has {len(inputs)} inputs; hls4ml merges two"
        raise EmulatorError(msg)


def _two_of_one_shape(layer: LayerSpec, inputs: list) -> tuple[np.ndarray, np.ndarray]:
    """An elementwise merge's two inputs, refused unless there are two of equal shapes."""
    _check_two(layer, inputs)
    a, b = inputs
    if a.shape != b.shape:
        msg = f"merge layer {layer.name}: inputs of shapes {a.shape[1:]} and {b.shape[1:]}; the shapes must be equal"
        raise EmulatorError(msg)
    return a, b


def merge_op(emulator: Emulator, layer: LayerSpec, inputs: list[np.ndarray], types: list[FixedType]) -> np.ndarray:
    a, b = _two_of_one_shape(layer, inputs)
    return elementwise(layer.attrs["op"], a, types[0], b, types[1], layer.result)


def concat_axis(layer: LayerSpec) -> int:
    """The axis (batch excluded) the two inputs are joined along, chosen as ``nnet_merge.h`` chooses."""
    return int(layer.attrs["concat_axis"])


def concatenate_op(emulator: Emulator, layer: LayerSpec, inputs: list[np.ndarray],
                   types: list[FixedType]) -> np.ndarray:
    _check_two(layer, inputs)
    parts = [cast(x, t, layer.result) for x, t in zip(inputs, types, strict=True)]
    return np.concatenate(parts, axis=1 + concat_axis(layer))


register_op(Kind.MERGE, merge_op)
register_op(Kind.CONCATENATE, concatenate_op)


def concatenate_int(layer: LayerSpec, inputs: list[np.ndarray], types: list[FixedType]) -> np.ndarray:
    """:func:`concatenate_op` on int64 codes (the fused path's form)."""
    _check_two(layer, inputs)
    parts = [cast_int(x, t, layer.result) for x, t in zip(inputs, types, strict=True)]
    return np.concatenate(parts, axis=1 + concat_axis(layer))


def merge_int(layer: LayerSpec, inputs: list[np.ndarray], types: list[FixedType]) -> np.ndarray:
    """:func:`merge_op` on int64 codes (the fused path's form)."""
    a, b = _two_of_one_shape(layer, inputs)
    return elementwise_int(layer.attrs["op"], a, types[0], b, types[1], layer.result)
