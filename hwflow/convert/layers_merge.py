"""hls4ml's merge layers as emulator kinds: ``Merge`` (Add, Subtract, Multiply, Average, Maximum,
Minimum) and ``Concatenate``.

hls4ml 1.3.0 merges exactly two inputs. Its io_parallel kernels would broadcast inputs of unequal
sizes by index modulo the size (``nnet_merge.h``), which is not Keras's broadcasting, and its
io_stream kernels refuse unequal sizes: hwflow takes equal shapes only and says so. ``Dot`` is not
taken (not a layer of the issue; its accumulator is a different kernel).
"""

from __future__ import annotations

from hwflow.convert.extract import register_layer
from hwflow.convert.names import names_of
from hwflow.emulator.merge import ELEMENTWISE
from hwflow.emulator.program import Kind
from hwflow.errors import UnsupportedLayerError


def _where(layer) -> str:
    return f"layer {names_of(layer.model).to_user(layer.name)!r} ({layer.class_name})"


def _input_shapes(layer) -> list[tuple[int, ...]]:
    return [tuple(int(d) for d in layer.get_input_variable(name).shape) for name in layer.inputs]


def _two_inputs(layer) -> list[tuple[int, ...]]:
    shapes = _input_shapes(layer)
    if len(shapes) != 2:
        msg = f"{_where(layer)} merges {len(shapes)} inputs; hls4ml 1.3.0 merges two (chain two-input merges)"
        raise UnsupportedLayerError(msg)
    return shapes


def merge_attrs(layer) -> dict:
    """The elementwise operation; the inputs must have equal shapes."""
    op = str(layer.get_attr("op")).lower()
    if op not in ELEMENTWISE:
        msg = f"{_where(layer)}: merge operation {op!r} is not supported; supported: {', '.join(ELEMENTWISE)}"
        raise UnsupportedLayerError(msg)
    first, second = _two_inputs(layer)
    if first != second:
        msg = (f"{_where(layer)} merges inputs of shapes {first} and {second}; hwflow takes equal shapes only "
               "(hls4ml broadcasts by index modulo the size, not as Keras does): reshape or repeat the smaller")
        raise UnsupportedLayerError(msg)
    return {"op": op}


def concat_axis(rank: int, axis: int) -> int:
    """The axis (batch excluded) ``nnet_merge.h`` joins along for Keras ``axis`` (batch counted):
    1D ignores it; 2D joins the last axis for 2 or -1, else the first; 3D the last for 3 or -1, the
    middle for 2 or -2, else the first."""
    if rank == 1:
        return 0
    if rank == 2:
        return 1 if axis in (2, -1) else 0
    if rank == 3:
        return 2 if axis in (3, -1) else 1 if axis in (2, -2) else 0
    msg = f"concatenation of rank-{rank} tensors is not supported (hls4ml joins rank 1 to 3)"
    raise UnsupportedLayerError(msg)


def concatenate_attrs(layer) -> dict:
    """The join axis as the C++ picks it; the other axes must agree."""
    first, second = _two_inputs(layer)
    if len(first) != len(second):
        msg = f"{_where(layer)} joins inputs of ranks {len(first)} and {len(second)}; the ranks must be equal"
        raise UnsupportedLayerError(msg)
    axis = concat_axis(len(first), int(layer.get_attr("axis", -1)))
    if any(a != b for i, (a, b) in enumerate(zip(first, second, strict=True)) if i != axis):
        msg = f"{_where(layer)} joins inputs of shapes {first} and {second} along axis {axis + 1}: the others differ"
        raise UnsupportedLayerError(msg)
    return {"op": "concatenate", "concat_axis": axis}


register_layer("Merge", Kind.MERGE, attrs=merge_attrs)
register_layer("Concatenate", Kind.CONCATENATE, attrs=concatenate_attrs)
