"""Exceptions users see. Each message says what was wrong and what to do about it.

The CLI catches ``HwflowError`` and prints its message without a traceback, so anything raised
from deep inside TensorFlow or hls4ml must be wrapped in one of these first.
"""


class HwflowError(Exception):
    """Base class of every error hwflow reports to users."""


class DatasetError(HwflowError):
    """A data set is missing, unknown or malformed."""


class ModelError(HwflowError):
    """A model file cannot be loaded or is not usable."""


class UnsupportedLayerError(ModelError):
    """A layer type the flow cannot emulate or convert."""


class ConversionError(HwflowError):
    """hls4ml could not convert or compile the model."""


class FormatError(HwflowError):
    """A number format (fixed<W,I>, float16, float32) is malformed or unsupported."""


class EmulatorError(HwflowError):
    """The emulator was given inputs or a WeightImage it cannot run."""


class ToolMissingError(HwflowError):
    """An external tool (g++, Vivado, Vitis HLS) is not available."""


class FaultSpecError(HwflowError):
    """A fault model, target or FaultMap is malformed or does not fit the WeightImage it is applied to."""


class SpecError(HwflowError):
    """A campaign / build spec (YAML) is malformed; the message names the file and the field."""


class HardenError(HwflowError):
    """A hardening method cannot be applied as asked (bad option, unsupported model or storage)."""


class BuildError(HwflowError):
    """The hardware build cannot be generated: unknown board, a model that does not fit, bad options."""


class BoardError(HwflowError):
    """A Board refused an operation: an address outside the weight memories, a word too wide, no device."""


class DeployError(HwflowError):
    """A deployment bundle cannot be packed: a build folder without its files, a variant or campaign that does not
    fit the build."""
