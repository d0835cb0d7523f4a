"""The table of layer kernels that live outside ``run.py``: one op per layer kind.

``Emulator._layer`` runs the kinds it has always known itself; every other kind (merges, depthwise
convolutions, lookup-table activations, ...) brings its kernel in a module of its own and adds it
here with ``register_op``, so a new layer family is one new file, not an edit of the dispatcher.

An op is ``op(emulator, layer, inputs, types) -> codes``:

- ``inputs``: the input codes of the layer, one array per entry of ``layer.inputs`` (exact integer
  codes, any numeric dtype, batch first);
- ``types``: the fixed-point type of each input;
- ``emulator.weights(layer, name)``: the layer's arrays as the current WeightImage holds them
  (``Weights``: codes and type, or real values for a float-stored array);
- the result: the output codes in ``layer.result``, exactly as hls4ml's C simulation computes them.

A kind has one op only: ``register_op`` refuses a second, so two modules cannot silently disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from hwflow.emulator.program import Kind, LayerSpec
from hwflow.errors import EmulatorError
from hwflow.fixed import FixedType

if TYPE_CHECKING:
    from hwflow.emulator.run import Emulator

Op = Callable[["Emulator", LayerSpec, list[np.ndarray], list[FixedType]], np.ndarray]

OPS: dict[Kind, Op] = {}


def register_op(kind: Kind, op: Op) -> Op:
    """Add the kernel of ``kind``; a kind has one kernel only."""
    if kind in OPS:
        msg = f"an emulator kernel for {kind.value} layers is already registered ({OPS[kind].__qualname__})"
        raise EmulatorError(msg)
    OPS[kind] = op
    return op
