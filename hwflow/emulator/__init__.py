"""The bit-exact emulator: a Program (layers and types) executed on a WeightImage in numpy."""

from hwflow.emulator.program import Kind, LayerSpec, Program
from hwflow.emulator.run import Emulator

__all__ = ["Emulator", "Kind", "LayerSpec", "Program"]
