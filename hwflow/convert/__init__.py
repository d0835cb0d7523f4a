"""QKeras -> hls4ml: conversion with hwflow's options, and extraction of Program and WeightImage."""

from hwflow.convert.extract import image_from_hls, program_from_hls
from hwflow.convert.hls import HlsOptions, compile_csim, convert, strip_softmax

__all__ = ["HlsOptions", "compile_csim", "convert", "image_from_hls", "program_from_hls", "strip_softmax"]
