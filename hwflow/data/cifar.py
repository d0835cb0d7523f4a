"""CIFAR-10 from the standard python-pickle batches, read from disk and never downloaded.

The seed papers report their results on CIFAR-10; our machines do not have it, so nothing here
fetches it. A user who has the archive points hwflow at it:

- ``--data-root DIR`` (or ``root=``): ``DIR`` is the ``cifar-10-batches-py`` directory itself or the
  directory it was unpacked into;
- else the environment variable ``HWFLOW_CIFAR10``, with the same meaning.

The files are ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and ``batches.meta``, each a pickle
of a dict with bytes keys (``b"data"``: a uint8 array ``(N, 3072)``, the red, green and blue 32x32
planes of each image one after another; ``b"labels"``: N class indices 0..9).

A pickle can run any code when it is loaded, so these are read with :class:`RestrictedUnpickler`,
which builds only dicts, lists, bytes, numbers and numpy arrays: a file that names any other
callable is refused, not executed.

The split is fixed, like the other data sets': ``data_batch_1`` .. ``data_batch_4`` are the training
split, ``data_batch_5`` is the validation split and ``test_batch`` the test split (40,000 / 10,000 /
10,000 images for the real set). Images are float32 ``(N, 32, 32, 3)`` in [0, 1] (bytes divided by
255, as Fashion-MNIST's), labels int64.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
from pathlib import Path

import numpy as np

from hwflow.data.datasets import Dataset
from hwflow.errors import DatasetError

log = logging.getLogger(__name__)

ENV_VAR = "HWFLOW_CIFAR10"
"""Environment variable naming the CIFAR-10 directory when ``--data-root`` does not."""
BATCHES_DIR = "cifar-10-batches-py"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
"""Where the python version of CIFAR-10 is published (163 MB); hwflow never fetches it itself."""
TRAIN_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4")
VAL_BATCH = "data_batch_5"
TEST_BATCH = "test_batch"
META = "batches.meta"
FILES = (*TRAIN_BATCHES, VAL_BATCH, TEST_BATCH, META)
N_CLASSES = 10
SIDE = 32
CHANNELS = 3
ROW = SIDE * SIDE * CHANNELS  # 3072 bytes per image

_ALLOWED_GLOBALS = {
    # What numpy needs to rebuild an ndarray (numpy 1.x and 2.x module names) and its dtype.
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    # Python 3 pickles bytes for protocol 2 as _codecs.encode(text, 'latin1'): it only makes bytes.
    ("_codecs", "encode"),
    ("__builtin__", "bytes"),  # an empty bytes object, in protocol 2 (Python 2's module name)
    ("builtins", "bytes"),
}


class ForbiddenGlobalError(pickle.UnpicklingError):
    """A pickle named a callable :class:`RestrictedUnpickler` does not allow."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds dicts, lists, bytes, numbers and numpy arrays, and nothing else.

    Pickles call the globals they name; allowing only numpy's array reconstruction (and the codec
    call that makes bytes) means a crafted batch file cannot run code, it is refused here.
    """

    def find_class(self, module: str, name: str):  # noqa: D102 (pickle's hook)
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        msg = f"refers to {module}.{name}, which a CIFAR-10 batch never holds (only dicts, lists, bytes and arrays)"
        raise ForbiddenGlobalError(msg)


def how_to_obtain(where: str) -> str:
    """The sentence every "CIFAR-10 not found" message ends with."""
    return (f"CIFAR-10 not found ({where}). hwflow does not download it: fetch {URL} by hand, unpack it "
            f"(tar xzf cifar-10-python.tar.gz, which makes {BATCHES_DIR}/), and pass --data-root with that "
            f"directory (or the one holding it) or set {ENV_VAR} to it")


def find_dir(root: str | os.PathLike[str] | None = None) -> Path | None:
    """The ``cifar-10-batches-py`` directory in ``root`` (itself or a child), else in ``$HWFLOW_CIFAR10``;
    None when neither holds every batch file. Only looks: nothing is read."""
    for base in (root, os.environ.get(ENV_VAR) or None):
        if base is None:
            continue
        for candidate in (Path(base), Path(base) / BATCHES_DIR):
            if all((candidate / f).is_file() for f in FILES):
                return candidate
    return None


def _locate(root: str | os.PathLike[str] | None) -> Path:
    found = find_dir(root)
    if found is not None:
        return found
    looked = [str(p) for p in (root, os.environ.get(ENV_VAR) or None) if p is not None]
    if not looked:
        raise DatasetError(how_to_obtain(f"no --data-root given and {ENV_VAR} is not set"))
    base = Path(looked[0])
    directory = base / BATCHES_DIR if (base / BATCHES_DIR).is_dir() else base
    missing = [f for f in FILES if not (directory / f).is_file()]
    where = f"looked in {', '.join(looked)}; {directory} lacks {', '.join(missing)}"
    raise DatasetError(how_to_obtain(where))


def read_batch(path: Path) -> dict:
    """One pickled batch as a dict, read with :class:`RestrictedUnpickler`; any failure names the file."""
    try:
        data = path.read_bytes()
    except OSError as err:
        msg = f"{path}: cannot read ({err})"
        raise DatasetError(msg) from err
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except ForbiddenGlobalError as err:
        msg = f"{path}: not a CIFAR-10 batch: the pickle {err}; replace the file with one from {URL}"
        raise DatasetError(msg) from err
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError,
            OverflowError, UnicodeDecodeError) as err:
        msg = f"{path}: cannot unpickle ({type(err).__name__}: {err}); the file is truncated or corrupt"
        raise DatasetError(msg) from err
    if not isinstance(obj, dict):
        msg = f"{path}: holds a {type(obj).__name__}, expected the dict of a CIFAR-10 batch"
        raise DatasetError(msg)
    return obj


def _field(path: Path, batch: dict, key: str):
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    msg = f"{path}: no {key!r} entry (has {sorted(str(k) for k in batch)}); not a CIFAR-10 batch"
    raise DatasetError(msg)


def parse_batch(path: Path, batch: dict) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 32, 32, 3)`` uint8 and labels int64 of one batch dict, checked."""
    data = _field(path, batch, "data")
    labels = _field(path, batch, "labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        msg = f"{path}: 'data' must be a uint8 array of shape (N, {ROW}) (32x32 RGB planes), got {got}"
        raise DatasetError(msg)
    if isinstance(labels, np.ndarray):
        labels = labels.tolist()
    if not isinstance(labels, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        msg = f"{path}: 'labels' must be a list of integer class indices"
        raise DatasetError(msg)
    y = np.asarray(labels, dtype=np.int64)
    if len(y) != len(data):
        msg = f"{path}: {len(data)} images but {len(y)} labels"
        raise DatasetError(msg)
    if len(y) == 0:
        msg = f"{path}: the batch holds no images"
        raise DatasetError(msg)
    if y.min() < 0 or y.max() >= N_CLASSES:
        msg = f"{path}: labels must be 0..{N_CLASSES - 1}, found {int(y.min())}..{int(y.max())}"
        raise DatasetError(msg)
    # Each row is the red plane, then green, then blue, each 32x32 row-major: (N, C, H, W) -> (N, H, W, C).
    images = data.reshape(-1, CHANNELS, SIDE, SIDE).transpose(0, 2, 3, 1)
    return images, y


def _check_meta(path: Path) -> None:
    names = _field(path, read_batch(path), "label_names")
    if not isinstance(names, list) or len(names) != N_CLASSES:
        msg = f"{path}: 'label_names' must list the {N_CLASSES} class names, got {names!r:.80}"
        raise DatasetError(msg)


def load_cifar10(root: str | os.PathLike[str] | None = None) -> Dataset:
    """CIFAR-10 from ``root`` or ``$HWFLOW_CIFAR10``, split as the module docstring says."""
    directory = _locate(root)
    _check_meta(directory / META)

    def split(files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        parts = [parse_batch(directory / f, read_batch(directory / f)) for f in files]
        x = np.concatenate([p[0] for p in parts])
        return (x.astype(np.float32) / np.float32(255.0)), np.concatenate([p[1] for p in parts])

    x_train, y_train = split(TRAIN_BATCHES)
    x_val, y_val = split((VAL_BATCH,))
    x_test, y_test = split((TEST_BATCH,))
    log.info("CIFAR-10 from %s: %d train, %d val, %d test", directory, len(y_train), len(y_val), len(y_test))
    return Dataset("cifar-10", x_train, y_train, x_val, y_val, x_test, y_test)


def write_batch(path: Path, images: np.ndarray, labels: list[int], name: str = "batch") -> None:
    """Write a batch in CIFAR-10's format (for tests and fixtures): ``images`` uint8 ``(N, 32, 32, 3)``."""
    rows = np.ascontiguousarray(np.asarray(images, dtype=np.uint8).transpose(0, 3, 1, 2)).reshape(len(images), ROW)
    batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in labels], b"data": rows,
             b"filenames": [f"{name}_{i}.png".encode() for i in range(len(labels))]}
    path.write_bytes(pickle.dumps(batch, protocol=2))


def write_meta(path: Path) -> None:
    """Write ``batches.meta`` as CIFAR-10 ships it (for tests and fixtures)."""
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    path.write_bytes(pickle.dumps({b"num_cases_per_batch": 10000, b"label_names": names, b"num_vis": ROW},
                                  protocol=2))
