"""The data sets the flow trains and measures on, with splits that never change.

Fault campaigns compare accuracies measured months apart, on a workstation and on a board, so
the train/validation/test split of each data set is part of its definition, not a choice made
at run time:

- ``digits`` (scikit-learn's 8x8 digits, 1,797 images): stratified ``train_test_split`` with
  ``random_state=0``; 20% of the images are the test split, then 10% of the remainder is the
  validation split (1,293 train / 144 validation / 360 test). Pixels 0..16 are divided by 16,
  which is exact in binary, so the inputs are exactly representable in fixed point.
- ``fashion-mnist`` (Zalando's 28x28 images from Debian's ``dataset-fashion-mnist``): the
  official 10,000 test images are the test split; the last 5,000 of the 60,000 training images
  are the validation split (55,000 / 5,000 / 10,000). Pixels are divided by 255.
- ``fashion-mnist-32``: the same images and split, zero-padded by 2 pixels on each side to 32x32 and
  repeated on 3 channels, so that models made for CIFAR-10's ``(32, 32, 3)`` inputs train offline
  (:func:`load_fashion_mnist_32`; 55,000 x 3,072 floats: about 0.9 GB in memory).
- ``cifar-10``: the python-pickle batches, from ``root`` or ``$HWFLOW_CIFAR10``; never downloaded
  (see :mod:`hwflow.data.cifar` for where it is looked for and its split).
- a path ending in ``.npz``: the user's own split (see :mod:`hwflow.data.npz`).

Images are channels-last ``(N, H, W, 1)`` float32 in [0, 1], labels int64, which is what the
zoo models and hls4ml's ``io_parallel`` inputs expect.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwflow.data.idx import read_idx_gz
from hwflow.errors import DatasetError

log = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
FASHION_MNIST_VAL = 5_000
"""The last this many of the 60,000 Fashion-MNIST training images are the validation split."""

DIGITS_TEST_FRACTION = 0.2
DIGITS_VAL_FRACTION = 0.1
DIGITS_SPLIT_SEED = 0

KNOWN_DATASETS = ("digits", "fashion-mnist", "fashion-mnist-32", "cifar-10")
PAD_32 = 2
"""Pixels of zeros on each side that make Fashion-MNIST's 28x28 images 32x32 (``fashion-mnist-32``)."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set with its fixed train / validation / test split."""

    name: str
    """``digits``, ``fashion-mnist``, ``fashion-mnist-32``, ``cifar-10`` or the path of the ``.npz`` it came from."""
    x_train: np.ndarray
    """Training inputs, float32, ``(N, H, W, C)`` (or ``(N, F)`` for feature vectors from a .npz)."""
    y_train: np.ndarray
    """Training labels, int64, ``(N,)``."""
    x_val: np.ndarray
    """Validation inputs (used for early checks during training, never for the reported accuracy)."""
    y_val: np.ndarray
    """Validation labels."""
    x_test: np.ndarray
    """Test inputs: the accuracy every report quotes is measured on these."""
    y_test: np.ndarray
    """Test labels."""

    @property
    def n_classes(self) -> int:
        """Number of classes: one more than the largest label in any split."""
        return int(max(int(y.max()) for y in (self.y_train, self.y_val, self.y_test) if y.size)) + 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, without the batch axis, e.g. ``(28, 28, 1)``."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, input_shape={self.input_shape}, n_classes={self.n_classes}, "
            f"train={len(self.y_train)}, val={len(self.y_val)}, test={len(self.y_test)})"
        )


def load_dataset(name: str | os.PathLike[str], root: str | Path | None = None) -> Dataset:
    """Load a data set by name (``digits``, ``fashion-mnist``, ``fashion-mnist-32``, ``cifar-10``) or from a
    ``.npz`` file.

    ``root`` is the directory holding the Fashion-MNIST ``*.gz`` files when they are not in
    ``/usr/share/datasets/fashion-mnist``, or CIFAR-10's ``cifar-10-batches-py`` (or the directory holding
    it); digits and ``.npz`` files ignore it.
    """
    text = os.fspath(name)
    key = canonical_name(text)
    if key.lower().endswith(".npz"):
        from hwflow.data.npz import load_npz

        return load_npz(Path(key))
    if key == "digits":
        return load_digits()
    if key == "fashion-mnist":
        return load_fashion_mnist(root)
    if key == "fashion-mnist-32":
        return load_fashion_mnist_32(root)
    if key == "cifar-10":
        from hwflow.data.cifar import load_cifar10

        return load_cifar10(root)
    msg = (
        f"unknown data set {text!r}: known data sets are {', '.join(KNOWN_DATASETS)}, "
        "or give the path of a .npz file with x_train, y_train, x_test, y_test"
    )
    raise DatasetError(msg)


def canonical_name(name: str | os.PathLike[str]) -> str:
    """The name a data set is recorded under: ``FMNIST`` -> ``fashion-mnist``; paths and unknown
    names are returned unchanged (as strings)."""
    text = os.fspath(name)
    if text.lower().endswith(".npz"):
        return text
    key = text.strip().lower().replace("_", "-")
    return {"digits": "digits", "fashion-mnist": "fashion-mnist", "fmnist": "fashion-mnist",
            "fashion-mnist-32": "fashion-mnist-32", "fmnist-32": "fashion-mnist-32", "fmnist32": "fashion-mnist-32",
            "cifar-10": "cifar-10", "cifar10": "cifar-10"}.get(key, text)


def load_digits() -> Dataset:
    """scikit-learn's 8x8 digits, split as documented in this module."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    x = (bunch.images.astype(np.float32) / np.float32(16.0)).reshape(-1, 8, 8, 1)
    y = bunch.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=y
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=DIGITS_VAL_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=y_rest
    )
    return Dataset("digits", x_train, y_train, x_val, y_val, x_test, y_test)


def load_fashion_mnist(root: str | Path | None = None) -> Dataset:
    """Fashion-MNIST from the IDX files in ``root`` (default: Debian's install directory)."""
    directory = Path(root) if root is not None else FASHION_MNIST_DIR
    missing = [f for f in FASHION_MNIST_FILES.values() if not (directory / f).is_file()]
    if missing:
        msg = (
            f"Fashion-MNIST not found in {directory}: missing {', '.join(missing)}. "
            "Install it with `sudo apt-get install dataset-fashion-mnist`, "
            "or pass a directory holding the four *-idx?-ubyte.gz files"
        )
        raise DatasetError(msg)
    arrays = {key: read_idx_gz(directory / f) for key, f in FASHION_MNIST_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.ndim != 3 or images.dtype != np.uint8:
            msg = (
                f"{directory / FASHION_MNIST_FILES[f'x_{split}']}: expected uint8 images of shape "
                f"(N, H, W), got {images.dtype} {images.shape}"
            )
            raise DatasetError(msg)
        if labels.ndim != 1 or len(labels) != len(images):
            msg = (
                f"{directory / FASHION_MNIST_FILES[f'y_{split}']}: expected {len(images)} labels "
                f"(one per image), got shape {labels.shape}"
            )
            raise DatasetError(msg)
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        msg = (
            f"{directory}: training images are {arrays['x_train'].shape[1:]} "
            f"but test images are {arrays['x_test'].shape[1:]}"
        )
        raise DatasetError(msg)
    n_train = len(arrays["y_train"])
    if n_train <= FASHION_MNIST_VAL:
        msg = (
            f"{directory}: only {n_train} training images; the validation split alone "
            f"takes the last {FASHION_MNIST_VAL}"
        )
        raise DatasetError(msg)

    def images(a: np.ndarray) -> np.ndarray:
        return (a.astype(np.float32) / np.float32(255.0))[..., np.newaxis]

    x_all, y_all = images(arrays["x_train"]), arrays["y_train"].astype(np.int64)
    cut = n_train - FASHION_MNIST_VAL
    log.debug("Fashion-MNIST from %s: %d train, %d val, %d test", directory, cut, FASHION_MNIST_VAL,
              len(arrays["y_test"]))
    return Dataset(
        "fashion-mnist",
        x_all[:cut],
        y_all[:cut],
        x_all[cut:],
        y_all[cut:],
        images(arrays["x_test"]),
        arrays["y_test"].astype(np.int64),
    )


def load_fashion_mnist_32(root: str | Path | None = None) -> Dataset:
    """Fashion-MNIST with CIFAR-10's input shape: each image zero-padded to 32x32 and repeated on 3
    channels, the split unchanged. The stand-in the 32x32 zoo models train on where CIFAR-10 is absent."""
    base = load_fashion_mnist(root)
    pad = ((0, 0), (PAD_32, PAD_32), (PAD_32, PAD_32), (0, 0))

    def widen(x: np.ndarray) -> np.ndarray:
        return np.repeat(np.pad(x, pad), 3, axis=3)

    return Dataset("fashion-mnist-32", widen(base.x_train), base.y_train, widen(base.x_val), base.y_val,
                   widen(base.x_test), base.y_test)
