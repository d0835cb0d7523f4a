"""Quantized models to run the flow on: a small zoo, its training, and the door for users' own models.

TensorFlow is imported only when a model is built, trained or loaded, so importing this package
(for instance to list the zoo in ``hwflow --help``) stays fast.
"""

from hwflow.zoo.loading import check_supported, load_model, read_sidecar, sidecar_path
from hwflow.zoo.models import ZOO, ZooSpec, build_model
from hwflow.zoo.train import TrainConfig, TrainResult, load_or_train, train

__all__ = [
    "ZOO",
    "TrainConfig",
    "TrainResult",
    "ZooSpec",
    "build_model",
    "check_supported",
    "load_model",
    "load_or_train",
    "read_sidecar",
    "sidecar_path",
    "train",
]
