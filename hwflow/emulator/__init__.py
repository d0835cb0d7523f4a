"""The bit-exact emulator: a Program (layers and types) executed on a WeightImage in numpy."""

from hwflow.emulator import (
    activations,  # noqa: F401 - registers the activation and softmax kernels
    depthwise,  # noqa: F401 - registers the depthwise kernels
    merge,  # noqa: F401 - registers the merge kernels
    products,  # noqa: F401 - registers ApplyAlpha and the binary/ternary thresholds
    shape,  # noqa: F401 - registers the cropping and resize kernels
)
from hwflow.emulator.program import Kind, LayerSpec, Program
from hwflow.emulator.run import Emulator

__all__ = ["Emulator", "Kind", "LayerSpec", "Program"]
