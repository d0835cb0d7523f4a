"""Which data set goes with a model, and whether it fits: decided before any work starts.

A command that measures a model needs the data set the model was made for. hwflow never guesses
one: it takes the one the user names, or the one the model's sidecar (``model.json`` beside
``model.h5``) records, or refuses and says how to pass one. A data set whose samples do not have
the model's input shape is refused here, with both shapes named, instead of as a Keras traceback
(or a C simulation fed the wrong number of values) once the work is under way.
"""

from __future__ import annotations

import os
from pathlib import Path

from hwflow.data.datasets import KNOWN_DATASETS, Dataset
from hwflow.errors import DatasetError

HOW_TO_PASS = f"{', '.join(KNOWN_DATASETS)}, or a .npz file holding x_train, y_train, x_test and y_test"
"""What a data set can be, for messages that ask for one."""


def sidecar_dataset(model_path: str | os.PathLike[str]) -> str | None:
    """The data set the model's sidecar records, or None (no sidecar, or no ``dataset`` in it).

    A relative ``.npz`` path that does not exist from here is looked up beside the sidecar, where
    ``hwflow train`` and ``hwflow harden`` usually put the model it describes.
    """
    from hwflow.zoo.loading import read_sidecar, sidecar_path

    side = read_sidecar(model_path) or {}
    name = side.get("dataset")
    if not isinstance(name, str) or not name.strip():
        return None
    path = Path(name)
    if name.lower().endswith(".npz") and not path.is_absolute() and not path.is_file():
        beside = sidecar_path(model_path).parent / path
        if beside.is_file():
            return str(beside)
    return name


def dataset_for(model_path: str | os.PathLike[str], given: str | None, flag: str = "--dataset") -> str:
    """The data set to use with the model at ``model_path``: ``given``, else its sidecar's, else refused."""
    if given is not None and str(given).strip():
        return str(given)
    name = sidecar_dataset(model_path)
    if name is not None:
        return name
    from hwflow.zoo.loading import sidecar_path

    side = sidecar_path(model_path)
    why = "has no sidecar" if not side.is_file() else "has a sidecar that names no data set"
    msg = (f"{model_path} {why} ({side.name}), so hwflow does not know its data set: pass {flag} "
           f"({HOW_TO_PASS})")
    raise DatasetError(msg)


def recorded_name(data: Dataset) -> str:
    """The name a sidecar records for ``data``: a ``.npz`` file as an absolute path, so the sidecar
    still finds it from another working directory; named data sets as they are."""
    if data.name.lower().endswith(".npz"):
        return str(Path(data.name).resolve())
    return data.name


def model_input_shape(model) -> tuple[int | None, ...]:
    """Shape of one input of a single-input Keras model, without the batch axis."""
    shape = model.input_shape
    if isinstance(shape, list):
        if len(shape) != 1:
            msg = f"model {model.name} has {len(shape)} inputs; hwflow runs models with one input"
            raise DatasetError(msg)
        shape = shape[0]
    return tuple(None if d is None else int(d) for d in shape[1:])


def check_fits(model, data: Dataset, model_label: str | None = None) -> None:
    """Refuse ``data`` when its samples do not have ``model``'s input shape (both named)."""
    expected = model_input_shape(model)
    got = data.input_shape
    fits = len(expected) == len(got) and all(e is None or e == g for e, g in zip(expected, got, strict=True))
    if not fits:
        label = model_label or f"model {model.name}"
        shown = tuple("any" if d is None else d for d in expected)
        msg = (f"{label} takes inputs of shape {shown}, but data set {data.name} has samples of shape {got}: "
               "pass the data set the model was made for")
        raise DatasetError(msg)
    outputs = model.output_shape[-1] if not isinstance(model.output_shape, list) else None
    if outputs is not None and data.n_classes > int(outputs):
        label = model_label or f"model {model.name}"
        msg = (f"{label} has {int(outputs)} outputs, but data set {data.name} has labels up to {data.n_classes - 1}: "
               "pass the data set the model was made for")
        raise DatasetError(msg)
