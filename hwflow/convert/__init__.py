"""QKeras -> hls4ml: conversion with hwflow's options (or the user's own hls4ml configuration), and
extraction of Program and WeightImage."""

from hwflow.convert import (
           layers_activation,  # noqa: F401 - registers activations and softmax
           layers_conv,  # noqa: F401 - registers depthwise, pointwise, folded conv
           layers_merge,  # noqa: F401 - registers Merge and Concatenate
           layers_pool_shape,  # noqa: F401 - registers cropping and resize, checks pooling
           layers_quant,  # noqa: F401 - registers ApplyAlpha, BatchNormalizationQuantizedTanh, TernaryTanh
)
from hwflow.convert.extract import image_from_hls, program_from_hls
from hwflow.convert.hls import HlsOptions, compile_csim, convert, strip_softmax
from hwflow.convert.hls_config import UserHlsConfig, load_hls_config, parse_hls_config, resolve_options
from hwflow.convert.hls_graph import HlsDesign, from_hls_model
from hwflow.convert.hls_merge import ConfigReport, MergeNote

__all__ = ["ConfigReport", "HlsDesign", "HlsOptions", "MergeNote", "UserHlsConfig", "compile_csim", "convert",
           "from_hls_model", "image_from_hls", "load_hls_config", "parse_hls_config", "program_from_hls",
           "resolve_options", "strip_softmax"]
