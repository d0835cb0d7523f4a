"""Zoo models after published architectures: the networks hls4ml users deploy and the seed papers use.

Each builder says where its topology comes from (also in ``docs/zoo.md``). They share the zoo's layer
names, seeded Glorot initializers and ``alpha=1`` quantizers (:mod:`hwflow.zoo.models`), and follow the
source where it says more:

- ``jet-mlp``: hls4ml's jet-tagging tutorial MLP (``hls4ml-tutorial``, part 4, quantization):
  16 -> 64 -> 32 -> 32 -> 5, ``quantized_bits(6, 0, alpha=1)`` weights and biases, ``quantized_relu(6)``
  (0 integer bits), a final softmax. Trains on any ``.npz`` of 16-feature vectors with labels 0..4 (the
  tutorial's data is OpenML's ``hls4ml_lhc_jets_hlf``, which hwflow does not download).
- ``resnet8``: MLPerf Tiny's image-classification reference, ``resnet_v1_eembc`` in
  ``benchmark/training/image_classification/keras_model.py`` of github.com/mlcommons/tiny (16 filters, as
  in v0.5/v0.7): a 3x3 stem, three residual stacks of 16, 32 and 64 filters (two 3x3 convolutions each,
  the second and third strided by 2 with a 1x1 strided shortcut convolution where the shape changes),
  average pooling to 1x1, dense 10. Quantized with QKeras at 8 bits; the reference's final softmax is
  left out (logits, as the rest of the zoo).
- ``rn07``: the network of hls4ml's MLPerf Tiny v0.7 submission, ``open/hls4ml-finn/code/ic/RN07`` of
  github.com/mlcommons/tiny_results_v0.7: ``resnet_v1_eembc_quantized`` with ``training/RN07.yml``
  (filters 32, 4, 32, 32; kernels 1, 4, 4, 4, 4; strides '111', '414'; no skip connections, no average
  pooling; ``quantized_bits(8, 2, alpha=1)`` weights, ``quantized_relu(8, 2)``), a stack of QConv2DBatchnorm
  layers. The published conversion (``inference/pynq-z2/accuracy_power.yml``: io_stream, Resource,
  reuse factor 16384, xc7z020) removes the softmax, as hwflow does.
- ``ds-cnn``: MLPerf Tiny's keyword-spotting DS-CNN (``benchmark/training/keyword_spotting/keras_model.py``,
  ``ds_cnn``: a strided convolution, four depthwise 3x3 + pointwise 1x1 blocks of 64 channels, each with
  batch norm and ReLU, dropout, average pooling to 1x1, dense) scaled to 32x32x3 images: the 10x4
  stem kernel of the 49x10 spectrogram becomes 3x3.

The 32x32 models default to CIFAR-10 and fall back to ``fashion-mnist-32`` where it is absent
(:meth:`hwflow.zoo.models.ZooSpec.default_dataset`), so they train offline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hwflow.zoo.models import LayerFactory, ZooSpec, register

RESNET8_FILTERS = (16, 32, 64)
"""Filters of ResNet-8's three stacks (MLPerf Tiny v0.5/v0.7's ``num_filters = 16``, doubled per stack)."""
DS_CNN_FILTERS = 64
DS_CNN_BLOCKS = 4
IMAGE_32 = (32, 32, 3)


def _jet_mlp(f: LayerFactory) -> list:
    return [
        f.dense("fc1", 64), f.relu("relu1"),
        f.dense("fc2", 32), f.relu("relu2"),
        f.dense("fc3", 32), f.relu("relu3"),
        f.dense("out", 5), f.softmax("softmax"),
    ]  # fmt: skip


def _residual(f: LayerFactory, stack: int, filters: int, strides: int) -> Callable[[Any], Any]:
    """One stack of ResNet-8: conv-bn-relu-conv-bn on one path, the input (or a strided 1x1 convolution
    of it where the shape changes) on the other, added, then ReLU."""
    conv1 = f.conv(f"s{stack}_conv1", filters, 3, strides=strides, padding="same")
    bn1, relu1 = f.bn(f"s{stack}_bn1"), f.relu(f"s{stack}_relu1")
    conv2 = f.conv(f"s{stack}_conv2", filters, 3, padding="same")
    bn2 = f.bn(f"s{stack}_bn2")
    shortcut = f.conv(f"s{stack}_shortcut", filters, 1, strides=strides, padding="same") if strides != 1 else None
    add, relu = f.add(f"s{stack}_add"), f.relu(f"s{stack}_relu")

    def block(x):
        y = bn2(conv2(relu1(bn1(conv1(x)))))
        return relu(add([shortcut(x) if shortcut is not None else x, y]))

    return block


def _resnet8(f: LayerFactory) -> list:
    first, second, third = RESNET8_FILTERS
    return [
        f.conv("conv1", first, 3, padding="same"), f.bn("bn1"), f.relu("relu1"),  # 32x32x16
        _residual(f, 1, first, 1),  # 32x32x16, identity shortcut
        _residual(f, 2, second, 2),  # 16x16x32
        _residual(f, 3, third, 2),  # 8x8x64
        f.avg_pool("pool", 8), f.flatten(), f.dense("out", 10),
    ]  # fmt: skip


def _rn07(f: LayerFactory) -> list:
    # RN07.yml: filters [32, 4, 32, 32], kernels [1, 4, 4, 4, 4, (4)], strides ['111', '414'], skip 0.
    # Without skips the second stack's 1x1-position shortcut convolution feeds nothing and is not built.
    return [
        f.conv_bn("conv1", 32, 1), f.relu("relu1"),  # 32x32x32
        f.conv_bn("conv2", 4, 4), f.relu("relu2"),  # 32x32x4
        f.conv_bn("conv3", 32, 4), f.relu("relu3"),  # 32x32x32
        f.conv_bn("conv4", 32, 4, strides=4), f.relu("relu4"),  # 8x8x32
        f.conv_bn("conv5", 32, 4), f.relu("relu5"),  # 8x8x32
        f.flatten(), f.dense("out", 10),  # 2048 -> 10
    ]  # fmt: skip


def _ds_cnn(f: LayerFactory) -> list:
    layers = [f.conv("conv1", DS_CNN_FILTERS, 3, strides=2, padding="same"), f.bn("bn1"), f.relu("relu1"),
              f.dropout("drop1", 0.2)]  # 16x16x64
    for i in range(1, DS_CNN_BLOCKS + 1):
        layers += [f.depthwise(f"dw{i}"), f.bn(f"dw_bn{i}"), f.relu(f"dw_relu{i}"),
                   f.conv(f"pw{i}", DS_CNN_FILTERS, 1), f.bn(f"pw_bn{i}"), f.relu(f"pw_relu{i}")]
    return [*layers, f.dropout("drop2", 0.4), f.avg_pool("pool", 16), f.flatten(), f.dense("out", 10)]


register(ZooSpec(
    "jet-mlp", None, (16,), _jet_mlp, epochs=30, batch_size=1024, learning_rate=1e-3,
    description="hls4ml's jet-tagging tutorial MLP (16-64-32-32-5, 6-bit, softmax) on a 16-feature .npz",
    default_bits=(6, 6, 0), act_integer=0,
    source="hls4ml-tutorial part 4 (quantization): fastmachinelearning/hls4ml-tutorial",
))  # fmt: skip
register(ZooSpec(
    "resnet8", "cifar-10", IMAGE_32, _resnet8, epochs=5, batch_size=128, learning_rate=3e-3,
    description="MLPerf Tiny's ResNet-8 (8-bit QKeras) on CIFAR-10, else fashion-mnist-32",
    fallback="fashion-mnist-32",
    source="mlcommons/tiny benchmark/training/image_classification/keras_model.py (resnet_v1_eembc, 16 filters)",
))  # fmt: skip
register(ZooSpec(
    "rn07", "cifar-10", IMAGE_32, _rn07, epochs=5, batch_size=128, learning_rate=3e-3,
    description="hls4ml's MLPerf Tiny v0.7 RN07 (QConv2DBatchnorm stack) on CIFAR-10, else fashion-mnist-32",
    fallback="fashion-mnist-32", default_bits=(8, 8, 2), act_integer=2,
    source="mlcommons/tiny_results_v0.7 open/hls4ml-finn/code/ic/RN07 (training/RN07.yml)",
))  # fmt: skip
register(ZooSpec(
    "ds-cnn", "cifar-10", IMAGE_32, _ds_cnn, epochs=5, batch_size=128, learning_rate=3e-3,
    description="MLPerf Tiny's DS-CNN (depthwise-separable, 64 channels) scaled to CIFAR-10, else fashion-mnist-32",
    fallback="fashion-mnist-32",
    source="mlcommons/tiny benchmark/training/keyword_spotting/keras_model.py (ds_cnn)",
))  # fmt: skip
