"""Shape layers that move positions and keep channels: Cropping1D/2D and UpSampling1D/2D (hls4ml's
``Resize``, nearest), bit-exact with ``nnet_cropping*.h`` and ``nnet_image*.h`` of hls4ml 1.3.0.

Both copy words: cropping assigns each kept input word to ``res_t`` (``(res_T) *data``), resizing
copies words of the input type. Zero padding and reshape stay in ``Emulator._layer``.

Resizing differs between the io types. io_parallel's ``resize_nearest`` takes source row
``(i * ratio) >> 16`` with ``ratio = (height << 16) / new_height + 1`` (16-bit fixed-point index
arithmetic), io_stream's repeats each row and column ``new / old`` times (it asserts an integer
factor). They agree for every size Keras's integer UpSampling factors give below 32768 rows, but the
emulator follows each formula, not the agreement.
"""

from __future__ import annotations

import numpy as np

from hwflow.emulator.kernels import register_op
from hwflow.emulator.program import Kind, LayerSpec
from hwflow.errors import EmulatorError
from hwflow.fixed import FixedType, cast


def crop(emulator, layer: LayerSpec, inputs: list[np.ndarray], types: list[FixedType]) -> np.ndarray:
    """Cropping1D/2D: the kept positions, each word cast to ``res_t``."""
    x, a = inputs[0], layer.attrs
    if layer.kind is Kind.CROP2D:
        top, left = a["crop_top"], a["crop_left"]
        y = x[:, top : top + a["out_height"], left : left + a["out_width"], :]
    else:
        left = a["crop_left"]
        y = x[:, left : left + a["out_width"], :]
    return cast(y, types[0], layer.result)


def source_index(old: int, new: int, io_type: str) -> np.ndarray:
    """For each output row (or column) of a nearest resize, the input row it copies."""
    out = np.arange(new, dtype=np.int64)
    if io_type == "io_stream":
        if new % old:
            msg = f"hls4ml's io_stream resize needs an integer factor; {old} -> {new} is not"
            raise EmulatorError(msg)
        return out // (new // old)
    ratio = ((old << 16) // new) + 1  # nnet_image.h: int y_ratio = (int)((height << 16) / new_height) + 1
    return (out * ratio) >> 16


def resize(emulator, layer: LayerSpec, inputs: list[np.ndarray], types: list[FixedType]) -> np.ndarray:
    """UpSampling1D/2D (nearest): rows and columns copied by index."""
    x, a = inputs[0], layer.attrs
    if a.get("algorithm", "nearest") != "nearest":
        msg = f"layer {layer.name}: only nearest resizing is emulated (hls4ml 1.3.0 has no other for Vivado/Vitis)"
        raise EmulatorError(msg)
    io_type = emulator.program.io_type
    if x.ndim == 4:
        rows = source_index(a["in_height"], a["out_height"], io_type)
        cols = source_index(a["in_width"], a["out_width"], io_type)
        y = x[:, rows][:, :, cols]
    else:
        y = x[:, source_index(a["in_width"], a["out_width"], io_type)]
    return cast(y, types[0], layer.result)


register_op(Kind.CROP1D, crop)
register_op(Kind.CROP2D, crop)
register_op(Kind.RESIZE, resize)
