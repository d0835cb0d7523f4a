"""hls4ml's pooling and shape layers as emulator kinds: what the kernels need beyond the common geometry,
and the configurations hls4ml accepts but its C simulation cannot run.

hls4ml's io_stream pooling kernels ``assert`` that there is no padding, and the 2D ones that the window
equals the stride; hls4ml converts such a layer without complaint and the assertion then aborts the
process running the C simulation (and would be wrong in hardware). They are refused here, when the
program is read, with what to change.
"""

from __future__ import annotations

from hwflow.convert.extract import register_layer
from hwflow.convert.names import names_of
from hwflow.emulator.program import Kind
from hwflow.errors import UnsupportedLayerError


def _where(layer) -> str:
    return f"layer {names_of(layer.model).to_user(layer.name)!r} ({layer.class_name})"


def _pool_attrs(layer) -> dict:
    stream = str(layer.model.config.get_config_value("IOType")).lower() == "io_stream"
    two_d = layer.class_name == "Pooling2D"
    pads = [int(layer.get_attr(k) or 0) for k in ("pad_top", "pad_bottom", "pad_left", "pad_right")]
    if stream and any(pads):
        msg = (f"{_where(layer)}: hls4ml's io_stream pooling has no padding (its C simulation aborts on an "
               "assertion); use padding='valid', or io_parallel (a ZeroPadding layer before a valid pooling "
               "is not the same: its zeros count in an average and in a maximum of negative values)")
        raise UnsupportedLayerError(msg)
    windows = [("pool_width", "stride_width")] + ([("pool_height", "stride_height")] if two_d else [])
    encoded = str(layer.get_attr("implementation", "linebuffer")).lower() == "encoded"
    if stream and (two_d or encoded) and any(layer.get_attr(p) != layer.get_attr(s) for p, s in windows):
        msg = (f"{_where(layer)}: hls4ml's io_stream 2D pooling needs strides equal to the pool size (its C "
               "simulation aborts on an assertion otherwise); use strides=pool_size, or io_parallel")
        raise UnsupportedLayerError(msg)
    return {}


def _crop_attrs(layer) -> dict:
    keys = ("crop_top", "crop_bottom", "crop_left", "crop_right") if layer.class_name == "Cropping2D" else (
        "crop_left", "crop_right")
    return {k: int(layer.get_attr(k)) for k in keys}


def _resize_attrs(layer) -> dict:
    algorithm = str(layer.get_attr("algorithm", "nearest")).lower()
    if algorithm != "nearest":
        msg = (f"{_where(layer)}: {algorithm} interpolation has no hls4ml kernel for Vivado/Vitis; "
               "use interpolation='nearest'")
        raise UnsupportedLayerError(msg)
    return {"algorithm": algorithm}


register_layer("Pooling1D", Kind.POOL1D, attrs=_pool_attrs)
register_layer("Pooling2D", Kind.POOL2D, attrs=_pool_attrs)
register_layer("Cropping1D", Kind.CROP1D, attrs=_crop_attrs)
register_layer("Cropping2D", Kind.CROP2D, attrs=_crop_attrs)
register_layer("Resize", Kind.RESIZE, attrs=_resize_attrs)
register_layer("Repack", Kind.RESHAPE)  # io_stream's Reshape (repack_stream: the words in order, cast to res_t)
