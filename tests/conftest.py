"""Shared fixtures: zoo models with non-trivial batch-norm statistics, compiled once per session."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed (make deps installs it)")
FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
needs_fmnist = pytest.mark.skipif(
    not os.path.exists(f"{FMNIST_DIR}/t10k-images-idx3-ubyte.gz"),
    reason="Debian package dataset-fashion-mnist not installed (make deps installs it)",
)


def zoo_model(name: str, weight_bits: int, act_bits: int, seed: int = 0):
    """An untrained zoo model whose batch-norm layers have random statistics (so they do something)."""
    import tensorflow as tf

    from hwflow.zoo.models import build_model

    model = build_model(name, weight_bits=weight_bits, act_bits=act_bits, seed=seed)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 2.0, n), rng.normal(0, 0.5, n), rng.normal(0, 0.3, n),
                               rng.uniform(0.1, 1.5, n)])
    return model


class CSimCache:
    """Compiles each (model, options) once per test session: g++ is the slow part of the suite."""

    def __init__(self, root):
        self.root = root
        self.built = {}

    def get(self, name: str, weight_bits: int = 8, act_bits: int = 8, io: str = "parallel",
            strategy: str = "Latency", reuse_factor: int = 1, backend: str = "Vitis"):
        from hwflow.convert import HlsOptions
        from hwflow.verify import build_csim

        key = (name, weight_bits, act_bits, io, strategy, reuse_factor, backend)
        if key not in self.built:
            options = HlsOptions.make(io, backend, strategy, reuse_factor)
            out = self.root / "_".join(str(k) for k in key)
            self.built[key] = build_csim(zoo_model(name, weight_bits, act_bits), options, out)
        return self.built[key]


@pytest.fixture(scope="session")
def csim_cache(tmp_path_factory):
    return CSimCache(tmp_path_factory.mktemp("csim"))


@pytest.fixture(scope="session")
def digits():
    from hwflow.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def fmnist():
    from hwflow.data import load_dataset

    if not os.path.exists(f"{FMNIST_DIR}/t10k-images-idx3-ubyte.gz"):
        pytest.skip("Debian package dataset-fashion-mnist not installed (make deps installs it)")
    return load_dataset("fashion-mnist")
