"""A few small quantized models, so every part of the flow has something real to run on.

Choices shared by the whole zoo, and why:

- The last layer is a ``QDense`` producing **logits**, with no softmax: hls4ml's softmax is a
  lookup table that matches nothing bit for bit, and hwflow compares logits exactly. Training
  uses ``SparseCategoricalCrossentropy(from_logits=True)``.
- Weights and biases use ``quantized_bits(weight_bits, weight_integer, alpha=1)``. ``alpha=1``
  matters: with QKeras's default (a learned per-channel scale) hls4ml inserts extra scaling
  layers, and the stored weight words are no longer the values the layer multiplies by.
- Activations use ``quantized_relu(act_bits, act_integer)`` with ``act_integer = 3`` for
  ``act_bits >= 6`` and 2 below: after batch normalization the activations rarely exceed 8, and
  with 4 or 5 bits three integer bits would leave almost nothing for the fraction.
- Batch normalization uses ``momentum=0.9`` (Keras's 0.99 is tuned for long runs; the digits
  models train for a few hundred steps and their moving statistics would not settle).
- Layers have fixed names (``image``, ``conv1``, ``bn1``, ``relu1``, ``pool1``, ..., ``fc1``, ...,
  ``out``): fault maps, weight images and reports refer to layers by these names. The input is
  ``image``, not ``input``, which hls4ml reserves for its own node.
- Initializers are seeded from ``seed`` and the layer's position, so the same arguments always
  build the same model.

TensorFlow is imported only when a model is built: the CLI lists the zoo without paying for it.

The models after published architectures (``jet-mlp``, ``resnet8``, ``rn07``, ``ds-cnn``) live in
:mod:`hwflow.zoo.published`; they keep the names and seeding but follow their sources where those
differ from the choices above (a final softmax, the published integer bits, graphs with merges).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hwflow.errors import ModelError

if TYPE_CHECKING:
    import tensorflow as tf

log = logging.getLogger(__name__)

WEIGHT_BITS_RANGE = (2, 16)
ACT_BITS_RANGE = (2, 16)
BN_MOMENTUM = 0.9


def act_integer_bits(act_bits: int) -> int:
    """Integer bits of the quantized ReLU for ``act_bits`` total bits (see the module docstring)."""
    return 3 if act_bits >= 6 else 2


class LayerFactory:
    """Makes the zoo's layers with the quantizers, names and seeded initializers described above."""

    def __init__(self, weight_bits: int, act_bits: int, weight_integer: int, seed: int,
                 act_integer: int | None = None) -> None:
        import qkeras
        import tensorflow as tf

        self._tf = tf
        self._qkeras = qkeras
        self.weight_bits = weight_bits
        self.act_bits = act_bits
        self.weight_integer = weight_integer
        self.act_integer = act_integer_bits(act_bits) if act_integer is None else min(act_integer, act_bits)
        self._seed = seed
        self._count = 0

    def _weight_quantizer(self) -> Any:
        return self._qkeras.quantized_bits(self.weight_bits, self.weight_integer, alpha=1)

    def _initializer(self) -> Any:
        self._count += 1
        layer_seed = int(np.random.SeedSequence([self._seed, self._count]).generate_state(1)[0] >> 1)
        return self._tf.keras.initializers.GlorotUniform(seed=layer_seed)

    def conv(self, name: str, filters: int, kernel: int = 3, strides: int = 1, padding: str = "valid") -> Any:
        return self._qkeras.QConv2D(
            filters,
            (kernel, kernel),
            strides=(strides, strides),
            padding=padding,
            kernel_quantizer=self._weight_quantizer(),
            bias_quantizer=self._weight_quantizer(),
            kernel_initializer=self._initializer(),
            name=name,
        )

    def dense(self, name: str, units: int) -> Any:
        return self._qkeras.QDense(
            units,
            kernel_quantizer=self._weight_quantizer(),
            bias_quantizer=self._weight_quantizer(),
            kernel_initializer=self._initializer(),
            name=name,
        )

    def bn(self, name: str) -> Any:
        return self._tf.keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)

    def relu(self, name: str) -> Any:
        quantizer = self._qkeras.quantized_relu(self.act_bits, self.act_integer)
        return self._qkeras.QActivation(quantizer, name=name)

    def conv_bn(self, name: str, filters: int, kernel: int, strides: int = 1, padding: str = "same") -> Any:
        """QKeras's QConv2DBatchnorm: hls4ml folds the batch norm into the stored kernel and bias."""
        return self._qkeras.QConv2DBatchnorm(
            filters, (kernel, kernel), strides=(strides, strides), padding=padding,
            kernel_quantizer=self._weight_quantizer(), bias_quantizer=self._weight_quantizer(),
            kernel_initializer=self._initializer(), momentum=BN_MOMENTUM, name=name,
        )  # fmt: skip

    def depthwise(self, name: str, kernel: int = 3, strides: int = 1, padding: str = "same") -> Any:
        return self._qkeras.QDepthwiseConv2D(
            (kernel, kernel), strides=(strides, strides), padding=padding,
            depthwise_quantizer=self._weight_quantizer(), bias_quantizer=self._weight_quantizer(),
            depthwise_initializer=self._initializer(), name=name,
        )  # fmt: skip

    def add(self, name: str) -> Any:
        return self._tf.keras.layers.Add(name=name)

    def avg_pool(self, name: str, size: int) -> Any:
        return self._tf.keras.layers.AveragePooling2D(pool_size=(size, size), name=name)

    def dropout(self, name: str, rate: float) -> Any:
        return self._tf.keras.layers.Dropout(rate, seed=self._seed, name=name)

    def softmax(self, name: str = "softmax") -> Any:
        return self._tf.keras.layers.Activation("softmax", name=name)

    def pool(self, name: str) -> Any:
        return self._tf.keras.layers.MaxPooling2D(pool_size=(2, 2), name=name)

    def flatten(self, name: str = "flatten") -> Any:
        return self._tf.keras.layers.Flatten(name=name)


Builder = Callable[[LayerFactory], list]
"""The layers of a model in order. An entry may also be a plain function from a tensor to a tensor
(a residual block that branches and merges): :func:`build_model` calls each entry on the running tensor."""


@dataclass(frozen=True)
class ZooSpec:
    """A zoo model: how to build it and how to train it by default."""

    name: str
    """Registry name, e.g. ``cnn-fmnist``."""
    dataset: str | None
    """Data set it is trained on by default (a name :func:`hwflow.data.load_dataset` knows); None: the
    model has no data set of its own (``jet-mlp``: any ``.npz`` of its feature vectors) and one must be given."""
    input_shape: tuple[int, ...]
    """Shape of one input, without the batch axis."""
    builder: Builder
    """Returns the layers in order, given a :class:`LayerFactory`."""
    epochs: int
    """Default number of training epochs."""
    batch_size: int
    """Default training batch size."""
    learning_rate: float
    """Default Adam learning rate."""
    description: str
    """One line for listings."""
    task: str = "classify"
    """``classify`` (logits, trained with cross-entropy on the labels) or ``autoencode`` (reconstructs its
    input, trained with MSE on the ``normal`` classes only; :mod:`hwflow.zoo.autoencoder`)."""
    normal: tuple[int, ...] = ()
    """Autoencoders: the classes that are normal (trained on); the others are the anomalies."""
    fallback: str | None = None
    """Data set used instead of ``dataset`` where that one is absent on this machine (the 32x32 models:
    ``fashion-mnist-32`` where CIFAR-10 is not found); see :meth:`default_dataset`."""
    default_bits: tuple[int, int, int] = (8, 8, 0)
    """``(weight_bits, act_bits, weight_integer)`` when the caller gives none: the published quantization."""
    act_integer: int | None = None
    """Integer bits of the quantized ReLUs; None: the zoo's rule (:func:`act_integer_bits`)."""
    source: str = ""
    """Where the architecture comes from (a published model), empty for the zoo's own small models."""

    def default_dataset(self, root: str | os.PathLike[str] | None = None) -> str | None:
        """The data set to train and measure on when none is given: ``dataset``, or ``fallback`` when
        ``dataset`` is CIFAR-10 and it is found neither in ``root`` nor in ``$HWFLOW_CIFAR10``."""
        if self.fallback is None or self.dataset != "cifar-10":
            return self.dataset
        from hwflow.data.cifar import ENV_VAR, find_dir

        if find_dir(root) is not None:
            return self.dataset
        log.info("%s: CIFAR-10 not found (--data-root, $%s), so it uses %s", self.name, ENV_VAR, self.fallback)
        return self.fallback

    @property
    def metric(self) -> str:
        """The metric a campaign scores this model with unless its spec names one."""
        return "auc" if self.task == "autoencode" else "top1"


ZOO: dict[str, ZooSpec] = {}
"""Every zoo model by name; filled by :func:`register`, which refuses duplicates."""


def register(spec: ZooSpec) -> ZooSpec:
    """Add a model to :data:`ZOO`; a name can be registered once only."""
    if spec.name in ZOO:
        msg = f"zoo model {spec.name!r} is already registered"
        raise ModelError(msg)
    ZOO[spec.name] = spec
    return spec


def get_spec(name: str) -> ZooSpec:
    """The :class:`ZooSpec` called ``name``, or a :class:`ModelError` listing the zoo."""
    try:
        return ZOO[name]
    except KeyError:
        msg = f"unknown zoo model {name!r}: the zoo has {', '.join(ZOO)}"
        raise ModelError(msg) from None


def _mlp_digits(f: LayerFactory) -> list:
    return [f.flatten(), f.dense("fc1", 32), f.bn("bn1"), f.relu("relu1"), f.dense("out", 10)]


def _cnn_digits(f: LayerFactory) -> list:
    return [
        f.conv("conv1", 8), f.bn("bn1"), f.relu("relu1"), f.pool("pool1"),  # 8x8 -> 6x6 -> 3x3
        f.conv("conv2", 16), f.bn("bn2"), f.relu("relu2"),  # 3x3 -> 1x1
        f.flatten(), f.dense("out", 10),
    ]  # fmt: skip


AD08_HIDDEN = 32
"""Width of ad08's hidden layers: MLPerf Tiny's 128 for 640 inputs, scaled to the digits' 64 inputs."""
AD08_BOTTLENECK = 8


def _ad08(f: LayerFactory) -> list:
    # MLPerf Tiny's anomaly-detection autoencoder (AD08 on PYNQ-Z2): four dense/BN/ReLU blocks, a
    # bottleneck of 8, four more, and a linear dense layer back to the input's size.
    layers = [f.flatten()]
    widths = [AD08_HIDDEN] * 4 + [AD08_BOTTLENECK] + [AD08_HIDDEN] * 4
    for i, width in enumerate(widths, 1):
        layers += [f.dense(f"fc{i}", width), f.bn(f"bn{i}"), f.relu(f"relu{i}")]
    return [*layers, f.dense("out", 64)]


def _cnn_fmnist(f: LayerFactory) -> list:
    # The CNN of hls4ml's tutorial, sized to fit a small FPGA.
    return [
        f.conv("conv1", 16), f.bn("bn1"), f.relu("relu1"), f.pool("pool1"),  # 28 -> 26 -> 13
        f.conv("conv2", 16), f.bn("bn2"), f.relu("relu2"), f.pool("pool2"),  # 13 -> 11 -> 5
        f.conv("conv3", 24), f.bn("bn3"), f.relu("relu3"), f.pool("pool3"),  # 5 -> 3 -> 1
        f.flatten(),
        f.dense("fc1", 42), f.bn("bn4"), f.relu("relu4"),
        f.dense("fc2", 64), f.bn("bn5"), f.relu("relu5"),
        f.dense("out", 10),
    ]  # fmt: skip


register(ZooSpec("mlp-digits", "digits", (8, 8, 1), _mlp_digits, epochs=30, batch_size=32,
                 learning_rate=3e-3, description="one hidden layer of 32 on the 8x8 digits"))
register(ZooSpec("cnn-digits", "digits", (8, 8, 1), _cnn_digits, epochs=30, batch_size=32,
                 learning_rate=3e-3, description="two small convolutions on the 8x8 digits"))
register(ZooSpec("ad08", "digits", (8, 8, 1), _ad08, epochs=60, batch_size=32, learning_rate=3e-3,
                 description="MLPerf Tiny's anomaly-detection autoencoder on the digits (0-4 normal)",
                 task="autoencode", normal=(0, 1, 2, 3, 4)))
register(ZooSpec("cnn-fmnist", "fashion-mnist", (28, 28, 1), _cnn_fmnist, epochs=5, batch_size=128,
                 learning_rate=3e-3, description="hls4ml-tutorial-sized CNN on Fashion-MNIST"))


def check_bits(weight_bits: int, act_bits: int, weight_integer: int) -> None:
    """Raise :class:`ModelError` unless the bit widths are ones the flow supports."""
    for label, value in (("weight_bits", weight_bits), ("act_bits", act_bits), ("weight_integer", weight_integer)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            msg = f"{label} must be an integer, got {value!r}"
            raise ModelError(msg)
    low, high = WEIGHT_BITS_RANGE
    if not low <= weight_bits <= high:
        msg = f"weight_bits must be in {low}..{high}, got {weight_bits}"
        raise ModelError(msg)
    low, high = ACT_BITS_RANGE
    if not low <= act_bits <= high:
        msg = f"act_bits must be in {low}..{high}, got {act_bits}"
        raise ModelError(msg)
    if not 0 <= weight_integer <= weight_bits - 1:
        msg = (
            f"weight_integer must be in 0..{weight_bits - 1} (weight_bits - 1: one bit is the sign), "
            f"got {weight_integer}"
        )
        raise ModelError(msg)


def build_model(
    name: str, weight_bits: int | None = None, act_bits: int | None = None, weight_integer: int | None = None,
    seed: int = 0,
) -> tf.keras.Model:
    """Build the zoo model ``name`` (untrained) with the given quantization; a bit width left None is the
    model's :attr:`ZooSpec.default_bits` (8, 8, 0 except where a published model says otherwise).

    Calls ``tf.keras.utils.set_random_seed(seed)`` first, so the initial weights depend on the
    arguments only.
    """
    spec = get_spec(name)
    weight_bits, act_bits, weight_integer = (
        default if given is None else given
        for given, default in zip((weight_bits, act_bits, weight_integer), spec.default_bits, strict=True)
    )
    check_bits(weight_bits, act_bits, weight_integer)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        msg = f"seed must be a non-negative integer, got {seed!r}"
        raise ModelError(msg)
    import tensorflow as tf

    tf.keras.utils.set_random_seed(int(seed))
    factory = LayerFactory(int(weight_bits), int(act_bits), int(weight_integer), int(seed), spec.act_integer)
    inputs = tf.keras.Input(shape=spec.input_shape, name="image")
    x = inputs
    for layer in spec.builder(factory):
        x = layer(x)
    return tf.keras.Model(inputs, x, name=spec.name.replace("-", "_"))


def logits_model(model: tf.keras.Model) -> tf.keras.Model:
    """``model`` without a final softmax ``Activation`` (sharing its layers and weights), else ``model``.

    Training and accuracy work on logits (``from_logits=True``) for every zoo model; a model that ends
    in a softmax as published (``jet-mlp``) is trained through this view and saved whole.
    """
    import tensorflow as tf

    last = model.layers[-1]
    if type(last).__name__ == "Activation" and getattr(last.activation, "__name__", "") == "softmax":
        return tf.keras.Model(model.inputs, last.input, name=f"{model.name}_logits")
    return model


from hwflow.zoo import published  # noqa: E402, F401  (registers the published architectures)
