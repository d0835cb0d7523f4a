"""Users' own data as a ``.npz`` file, checked before any training or fault campaign uses it.

A campaign runs for hours; a label array one element short or images in the wrong layout should
fail here, with the key named, not deep inside Keras. The user's split is kept as given:

- keys ``x_train``, ``y_train``, ``x_test``, ``y_test`` are required, except that a regression data
  set may give ``targets_<split>`` (one row of output values per sample, what ``mse``/``mae`` score
  against) instead of the labels ``y_<split>``: it then has one class, and top-1 means nothing for it;
- ``x_val``, ``y_val`` are optional; without them the last 10% of the training set is the
  validation split (the last, not a random 10%, so the split is the same on every machine);
- ``x`` may be ``(N, H, W)`` (a channel axis is added), ``(N, H, W, C)`` or ``(N, F)``;
- values are cast to float32 but never rescaled: the user knows the range their model expects.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from hwflow.data.datasets import Dataset
from hwflow.errors import DatasetError

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
VAL_FRACTION = 0.1
MAX_LABEL = 2**31  # a larger class index is a mistake (and would wrap when cast to int64)


def load_npz(path: Path) -> Dataset:
    """Load and validate a ``.npz`` data set (see the module docstring for the layout)."""
    if not path.is_file():
        msg = f"{path}: no such .npz file"
        raise DatasetError(msg)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    # zipfile reports damaged headers as NotImplementedError (a "compression method", "encryption") or
    # RuntimeError ("password required"), damaged data as zlib.error: all mean a broken file here.
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError) as err:
        msg = (
            f"{path}: cannot read as a .npz archive of numeric arrays ({err}); "
            "save it with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
        )
        raise DatasetError(msg) from err

    not_arrays = sorted(key for key, value in arrays.items() if not isinstance(value, np.ndarray))
    if not_arrays:  # numpy returns a member without the .npy format as its raw bytes
        msg = (f"{path}: member(s) {', '.join(not_arrays)} are not numpy arrays; save the file with "
               "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
        raise DatasetError(msg)
    for split in ("train", "val", "test"):  # a regression data set: targets, no class labels
        x = arrays.get(f"x_{split}")
        if f"y_{split}" not in arrays and f"targets_{split}" in arrays and x is not None and x.ndim >= 1:
            arrays[f"y_{split}"] = np.zeros(len(x), dtype=np.int64)
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        msg = f"{path}: missing key(s) {', '.join(missing)}; a .npz data set needs {', '.join(REQUIRED_KEYS)}"
        raise DatasetError(msg)
    if ("x_val" in arrays) != ("y_val" in arrays):
        msg = f"{path}: has only one of x_val and y_val; give both or neither"
        raise DatasetError(msg)

    splits = ("train", "val", "test") if "x_val" in arrays else ("train", "test")
    x = {s: _inputs(path, f"x_{s}", arrays[f"x_{s}"]) for s in splits}
    y = {s: _labels(path, f"y_{s}", arrays[f"y_{s}"]) for s in splits}
    for s in splits:
        if len(x[s]) != len(y[s]):
            msg = f"{path}: x_{s} has {len(x[s])} samples but y_{s} has {len(y[s])} labels"
            raise DatasetError(msg)
        if len(x[s]) == 0:
            msg = f"{path}: x_{s} is empty"
            raise DatasetError(msg)
        if x[s].shape[1:] != x["train"].shape[1:]:
            msg = (
                f"{path}: x_train samples have shape {x['train'].shape[1:]} "
                f"but x_{s} samples have shape {x[s].shape[1:]}"
            )
            raise DatasetError(msg)

    if "val" not in x:
        n = len(x["train"])
        n_val = int(round(n * VAL_FRACTION))
        if n_val < 1 or n_val >= n:
            msg = (
                f"{path}: x_train has {n} samples, too few to take the last {VAL_FRACTION:.0%} "
                "as validation; add x_val and y_val"
            )
            raise DatasetError(msg)
        x["train"], x["val"] = x["train"][: n - n_val], x["train"][n - n_val :]
        y["train"], y["val"] = y["train"][: n - n_val], y["train"][n - n_val :]

    return Dataset(str(path), x["train"], y["train"], x["val"], y["val"], x["test"], y["test"])


def _inputs(path: Path, key: str, array: np.ndarray) -> np.ndarray:
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        msg = f"{path}: {key} has dtype {array.dtype}, expected numbers (integers or floats)"
        raise DatasetError(msg)
    if np.iscomplexobj(array):
        msg = f"{path}: {key} is complex ({array.dtype}); expected real numbers"
        raise DatasetError(msg)
    if array.ndim == 3:
        array = array[..., np.newaxis]
    elif array.ndim not in (2, 4):
        msg = (
            f"{path}: {key} has shape {array.shape}; expected (N, H, W), (N, H, W, C) "
            "for images or (N, F) for feature vectors"
        )
        raise DatasetError(msg)
    array = array.astype(np.float32)
    if not np.all(np.isfinite(array)):
        msg = f"{path}: {key} contains NaN or infinite values (after conversion to float32)"
        raise DatasetError(msg)
    return array


def _labels(path: Path, key: str, array: np.ndarray) -> np.ndarray:
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        msg = (
            f"{path}: {key} has shape {array.shape}; expected one integer class label per sample, "
            "shape (N,) (for one-hot labels, save labels.argmax(axis=1))"
        )
        raise DatasetError(msg)
    if array.size and (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)) \
            and np.all(np.isfinite(array)) and array.max() >= MAX_LABEL:  # would wrap in int64
        msg = f"{path}: {key} holds the label {array.max()}; labels must be class indices 0..K-1 (K < {MAX_LABEL})"
        raise DatasetError(msg)
    if np.issubdtype(array.dtype, np.integer):
        labels = array.astype(np.int64)
    elif np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        labels = array.astype(np.int64)
    else:
        msg = f"{path}: {key} has dtype {array.dtype} with non-integer values; labels must be integers 0..K-1"
        raise DatasetError(msg)
    if labels.size and labels.min() < 0:
        msg = f"{path}: {key} contains negative labels (min {labels.min()}); labels must be integers 0..K-1"
        raise DatasetError(msg)
    return labels
