"""Shared fixtures: zoo models with non-trivial batch-norm statistics, compiled once per session."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
GXX_MISSING = "g++ not installed: run 'make deps' (or 'sudo apt-get install g++')"
FMNIST_MISSING = ("Debian package dataset-fashion-mnist not installed: run 'make deps' "
                  "(or 'sudo apt-get install dataset-fashion-mnist')")


# What the Makefile installs (scripts/install-deps.sh) is required: a test that needs a missing one
# fails with what to install. A skip would let "make test" pass without having run those tests.
@pytest.fixture
def require_gxx():
    if shutil.which("g++") is None:
        pytest.fail(GXX_MISSING)


@pytest.fixture
def require_fmnist():
    if not os.path.exists(f"{FMNIST_DIR}/t10k-images-idx3-ubyte.gz"):
        pytest.fail(FMNIST_MISSING)


needs_gxx = pytest.mark.usefixtures("require_gxx")
needs_fmnist = pytest.mark.usefixtures("require_fmnist")


def traced_difference(clean: np.ndarray, faulty: np.ndarray) -> list:
    """The traced difference of one layer as the engine carries it: one ``Block`` (the samples and channels
    where the two runs differ), or none."""
    from hwflow.campaign.delta.state import Block

    lead = (clean != faulty).reshape(len(clean), -1, clean.shape[-1])
    samples = np.flatnonzero(lead.any(axis=(1, 2)))
    if not len(samples):
        return []
    channels = np.flatnonzero(lead[samples].any(axis=(0, 1)))
    return [Block(samples, channels, np.take(faulty[samples], channels, axis=-1).astype(np.float64))]


def random_bn_statistics(model, seed: int = 0):
    """``model`` with random batch-norm statistics, as training leaves them (so each batch norm does
    something, and hls4ml keeps it)."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 2.0, n), rng.normal(0, 0.5, n), rng.normal(0, 0.3, n),
                               rng.uniform(0.1, 1.5, n)])
    return model


def zoo_model(name: str, weight_bits: int, act_bits: int, seed: int = 0):
    """An untrained zoo model whose batch-norm layers have random statistics (so they do something)."""
    from hwflow.zoo.models import build_model

    return random_bn_statistics(build_model(name, weight_bits=weight_bits, act_bits=act_bits, seed=seed), seed)


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
def cnn_digits_file(tmp_path_factory):
    """An untrained 8-bit cnn-digits (seed 1) saved as a model file, once: the campaign tests' own model."""
    path = tmp_path_factory.mktemp("campaign-model") / "cnn.h5"
    zoo_model("cnn-digits", 8, 8, seed=1).save(path)
    return path


@pytest.fixture(scope="session")
def digits():
    from hwflow.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def fmnist():
    from hwflow.data import load_dataset

    if not os.path.exists(f"{FMNIST_DIR}/t10k-images-idx3-ubyte.gz"):
        pytest.fail(FMNIST_MISSING)
    return load_dataset("fashion-mnist")
