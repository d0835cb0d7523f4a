"""What the emulator executes: the layers of the converted network with every type spelled out.

A ``Program`` is extracted once from hls4ml's ModelGraph (``hwflow.convert.program``) and then
needs neither hls4ml nor TensorFlow: it is plain data, serializable to JSON, cheap to send to Dask
workers, and the weights live apart from it in the WeightImage that faults act on.
"""

from __future__ import annotations

import enum
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from hwflow.errors import FormatError
from hwflow.fixed import FixedType, parse_type


class Kind(enum.Enum):
    INPUT = "input"
    DENSE = "dense"
    CONV1D = "conv1d"
    CONV2D = "conv2d"
    BATCHNORM = "batchnorm"
    ACTIVATION = "activation"
    CLIPACT = "clipact"  # FT-ClipAct clipped activation (hwflow.emulator.clip)
    CLIPACT_SLOPED = "clipact_sloped"  # FT-ClipAct on LeakyReLU / PReLU / sloped quantized_relu (hwflow.emulator.clip)
    POOL1D = "pool1d"
    POOL2D = "pool2d"
    GLOBALPOOL1D = "globalpool1d"
    GLOBALPOOL2D = "globalpool2d"
    ZEROPAD1D = "zeropad1d"
    ZEROPAD2D = "zeropad2d"
    RESHAPE = "reshape"
    APPLY_ALPHA = "apply_alpha"  # hls4ml's ApplyAlpha (a QKeras alpha scale; hwflow.emulator.products)
    BN_QUANTIZED_TANH = "bn_quantized_tanh"  # batch norm + binary/ternary tanh as thresholds (hwflow.emulator.products)
    PARAM_ACTIVATION = "param_activation"  # hwflow.emulator.activations: LeakyReLU, ThresholdedReLU, ELU
    HARD_ACTIVATION = "hard_activation"  # hwflow.emulator.activations: hard sigmoid / tanh
    PRELU = "prelu"  # hwflow.emulator.activations
    SOFTMAX = "softmax"  # hwflow.emulator.activations
    MERGE = "merge"  # Add, Subtract, Multiply, Average, Maximum, Minimum (hwflow.emulator.merge)
    CONCATENATE = "concatenate"  # hwflow.emulator.merge
    CROP1D = "crop1d"  # hwflow.emulator.shape
    CROP2D = "crop2d"
    RESIZE = "resize"  # UpSampling1D/2D, nearest (hls4ml Resize)
    DEPTHWISE1D = "depthwise1d"  # hwflow.emulator.depthwise
    DEPTHWISE2D = "depthwise2d"  # hwflow.emulator.depthwise


# Layers whose arrays live in weight memory, and the names of those arrays in hls4ml.
WEIGHTED = {
    Kind.DENSE: ("weight", "bias"),
    Kind.CONV1D: ("weight", "bias"),
    Kind.CONV2D: ("weight", "bias"),
    Kind.BATCHNORM: ("scale", "bias"),
}


def register_arrays(kind: Kind, names: tuple[str, ...]) -> None:
    """Declare the weight-memory arrays of a layer kind added in its own module (hls4ml's names, in
    the order hls4ml declares them); a kind is declared once."""
    if kind in WEIGHTED and WEIGHTED[kind] != tuple(names):
        msg = f"{kind.value} layers already hold the arrays {WEIGHTED[kind]}, not {tuple(names)}"
        raise FormatError(msg)
    WEIGHTED[kind] = tuple(names)


@dataclass(frozen=True)
class LayerSpec:
    """One layer: its kind, inputs, output shape (without batch) and the types it computes in.

    ``accum`` is the accumulator type (Dense, Conv, Pooling); ``attrs`` holds integer geometry
    (filter sizes, strides, paddings) and names (activation function, pooling op).
    """

    name: str
    kind: Kind
    inputs: tuple[str, ...]
    output_shape: tuple[int, ...]
    result: FixedType
    accum: FixedType | None = None
    attrs: dict = field(default_factory=dict)

    @property
    def arrays(self) -> tuple[str, ...]:
        return WEIGHTED.get(self.kind, ())

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "inputs": list(self.inputs),
            "output_shape": list(self.output_shape),
            "result": str(self.result),
            "accum": str(self.accum) if self.accum else None,
            "attrs": self.attrs,
        }

    @classmethod
    def from_json(cls, d: dict) -> LayerSpec:
        return cls(
            name=d["name"],
            kind=Kind(d["kind"]),
            inputs=tuple(d["inputs"]),
            output_shape=tuple(d["output_shape"]),
            result=parse_type(d["result"]),
            accum=parse_type(d["accum"]) if d.get("accum") else None,
            attrs=dict(d.get("attrs", {})),
        )


@dataclass(frozen=True)
class Program:
    """The layers in execution order; the last layer's output is the network output (the logits)."""

    layers: tuple[LayerSpec, ...]
    io_type: str = "io_parallel"
    source: dict = field(default_factory=dict)  # where it came from: backend, strategy, model file

    def __post_init__(self) -> None:
        if not self.layers or self.layers[0].kind is not Kind.INPUT:
            msg = "a Program starts with its input layer"
            raise FormatError(msg)

    @property
    def input(self) -> LayerSpec:
        return self.layers[0]

    @property
    def output(self) -> LayerSpec:
        return self.layers[-1]

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @functools.cached_property
    def last_use(self) -> dict[str, int]:
        """Index of the last layer that reads each layer's output: in a graph a value lives until then."""
        return {name: i for i, layer in enumerate(self.layers) for name in layer.inputs}

    @functools.cached_property
    def readers(self) -> dict[str, list[int]]:
        """The indices of the layers reading each layer's output, in order (empty for the output)."""
        out: dict[str, list[int]] = {layer.name: [] for layer in self.layers}
        for i, layer in enumerate(self.layers):
            for name in layer.inputs:
                out.setdefault(name, []).append(i)
        return out

    @functools.cached_property
    def reader_count(self) -> dict[str, int]:
        """How many layers read each layer's output (two or more at a branch)."""
        return {name: len(readers) for name, readers in self.readers.items() if readers}

    def layer(self, name: str) -> LayerSpec:
        for layer in self.layers:
            if layer.name == name:
                return layer
        msg = f"no layer {name!r}; layers are: {', '.join(self.names)}"
        raise FormatError(msg)

    def index(self, name: str) -> int:
        return self.names.index(self.layer(name).name)

    def to_json(self) -> dict:
        return {"io_type": self.io_type, "source": self.source, "layers": [x.to_json() for x in self.layers]}

    @classmethod
    def from_json(cls, d: dict) -> Program:
        layers = tuple(LayerSpec.from_json(x) for x in d["layers"])
        return cls(layers, d.get("io_type", "io_parallel"), dict(d.get("source", {})))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Program:
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as err:
            msg = f"{path}: not a readable hwflow program ({err})"
            raise FormatError(msg) from None
