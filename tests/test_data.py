"""Data sets: fixed splits, our IDX reader on real and hand-made files, and .npz validation."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from hwflow.data import KNOWN_DATASETS, Dataset, load_dataset
from hwflow.data.datasets import FASHION_MNIST_DIR, FASHION_MNIST_FILES, FASHION_MNIST_VAL
from hwflow.data.idx import parse_idx, read_idx_gz, write_idx_gz
from hwflow.errors import DatasetError


def _splits(d: Dataset):
    return [d.x_train, d.y_train, d.x_val, d.y_val, d.x_test, d.y_test]


# --- digits -------------------------------------------------------------------------------------


def test_digits_split_sizes_and_types():
    d = load_dataset("digits")
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (1293, 144, 360)
    assert d.input_shape == (8, 8, 1)
    assert d.n_classes == 10
    for x in (d.x_train, d.x_val, d.x_test):
        assert x.dtype == np.float32
        assert x.min() >= 0.0
        assert x.max() <= 1.0
        # 0..16 / 16: every pixel is a multiple of 1/16, exactly.
        np.testing.assert_array_equal(x * 16, np.round(x * 16))
    for y in (d.y_train, d.y_val, d.y_test):
        assert y.dtype == np.int64
    # Stratified: every class in every split.
    assert set(np.unique(d.y_val)) == set(range(10))
    assert set(np.unique(d.y_test)) == set(range(10))


def test_digits_split_is_deterministic():
    a, b = load_dataset("digits"), load_dataset("DIGITS")
    for u, v in zip(_splits(a), _splits(b), strict=True):
        np.testing.assert_array_equal(u, v)


def test_canonical_names():
    from hwflow.data import canonical_name

    assert canonical_name("FMNIST") == "fashion-mnist"
    assert canonical_name("Fashion_MNIST") == "fashion-mnist"
    assert canonical_name(" digits ") == "digits"
    assert canonical_name(Path("a/B.NPZ")) == "a/B.NPZ"
    assert canonical_name("mnist") == "mnist"


def test_unknown_dataset_lists_known_names():
    with pytest.raises(DatasetError, match="unknown data set 'mnist'") as info:
        load_dataset("mnist")
    for name in KNOWN_DATASETS:
        assert name in str(info.value)


# --- Fashion-MNIST ------------------------------------------------------------------------------


@pytest.mark.usefixtures("require_fmnist")
def test_fashion_mnist_real_files():
    d = load_dataset("fashion-mnist")
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (55_000, 5_000, 10_000)
    assert d.input_shape == (28, 28, 1)
    assert d.n_classes == 10
    assert d.x_train.dtype == np.float32
    assert d.x_test.max() == 1.0
    assert d.x_test.min() == 0.0
    # The validation split is the last 5,000 training images, unshuffled.
    raw_labels = read_idx_gz(FASHION_MNIST_DIR / FASHION_MNIST_FILES["y_train"])
    np.testing.assert_array_equal(d.y_val, raw_labels[-5_000:])
    np.testing.assert_array_equal(d.y_train, raw_labels[:-5_000])


def _write_tiny_fmnist(root: Path, n_train: int = FASHION_MNIST_VAL + 7, n_test: int = 3) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 4, 5), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 4, 5), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    arrays["x_test"][0, 0, 0] = 255
    for key, name in FASHION_MNIST_FILES.items():
        write_idx_gz(root / name, arrays[key])
    return arrays


def test_fashion_mnist_tiny_idx_files(tmp_path):
    raw = _write_tiny_fmnist(tmp_path)
    d = load_dataset("fashion-mnist", root=tmp_path)
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (7, FASHION_MNIST_VAL, 3)
    assert d.input_shape == (4, 5, 1)
    np.testing.assert_array_equal(d.x_test[..., 0], raw["x_test"].astype(np.float32) / 255)
    np.testing.assert_array_equal(d.x_val[..., 0] * 255, raw["x_train"][7:].astype(np.float32))
    np.testing.assert_array_equal(d.y_train, raw["y_train"][:7])
    assert d.y_test.dtype == np.int64
    assert d.x_test.max() == 1.0


def test_fashion_mnist_corrupted_magic(tmp_path):
    _write_tiny_fmnist(tmp_path)
    path = tmp_path / FASHION_MNIST_FILES["x_test"]
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[0] = 0x12
    path.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(DatasetError, match="bad IDX magic number") as info:
        load_dataset("fashion-mnist", root=tmp_path)
    assert FASHION_MNIST_FILES["x_test"] in str(info.value)


def test_fashion_mnist_truncated_and_not_gzip(tmp_path):
    _write_tiny_fmnist(tmp_path)
    path = tmp_path / FASHION_MNIST_FILES["y_test"]
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[:-1]))
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        load_dataset("fashion-mnist", root=tmp_path)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="cannot decompress"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_fashion_mnist_label_count_mismatch(tmp_path):
    _write_tiny_fmnist(tmp_path)
    write_idx_gz(tmp_path / FASHION_MNIST_FILES["y_test"], np.zeros(2, dtype=np.uint8))
    with pytest.raises(DatasetError, match="expected 3 labels"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_fashion_mnist_missing_files(tmp_path):
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist") as info:
        load_dataset("fashion-mnist", root=tmp_path)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    write_idx_gz(tmp_path / "a.gz", array)
    back = read_idx_gz(tmp_path / "a.gz")
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, array)


def test_idx_too_short():
    with pytest.raises(DatasetError, match="too short"):
        parse_idx(b"\x00\x00")


# --- .npz ---------------------------------------------------------------------------------------


def _npz(tmp_path: Path, **arrays) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def _valid(n_train: int = 20, n_test: int = 5, shape=(6, 6)) -> dict:
    rng = np.random.default_rng(1)
    return {
        "x_train": rng.normal(size=(n_train, *shape)).astype(np.float64) * 100,
        "y_train": rng.integers(0, 4, n_train),
        "x_test": rng.normal(size=(n_test, *shape)),
        "y_test": rng.integers(0, 4, n_test),
    }


def test_npz_default_validation_split_and_no_rescaling(tmp_path):
    arrays = _valid()
    d = load_dataset(_npz(tmp_path, **arrays))
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (18, 2, 5)
    assert d.input_shape == (6, 6, 1)  # channel axis added
    assert d.x_train.dtype == np.float32
    np.testing.assert_array_equal(d.x_val[..., 0], arrays["x_train"][18:].astype(np.float32))
    assert d.y_train.dtype == np.int64
    assert d.name.endswith("data.npz")


def test_npz_explicit_validation_and_feature_vectors(tmp_path):
    arrays = _valid(shape=(7,))
    arrays["x_val"], arrays["y_val"] = arrays["x_test"][:2], np.array([1.0, 3.0])
    d = load_dataset(str(_npz(tmp_path, **arrays)))
    assert (len(d.y_train), len(d.y_val)) == (20, 2)
    assert d.input_shape == (7,)
    np.testing.assert_array_equal(d.y_val, [1, 3])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("y_test"), "missing key.*y_test"),
        (lambda a: a.update(y_train=a["y_train"][:-1]), "x_train has 20 samples but y_train has 19"),
        (lambda a: a.update(x_test=np.array([["a"] * 36] * 5).reshape(5, 6, 6)), "x_test has dtype <U1"),
        (lambda a: a.update(y_train=a["y_train"] + 0.5), "non-integer values"),
        (lambda a: a.update(y_test=-a["y_test"] - 1), "negative labels"),
        (lambda a: a.update(x_train=np.zeros(20)), r"x_train has shape \(20,\)"),
        (lambda a: a.update(x_train=np.zeros((20, 2, 2, 2, 2))), "expected .N, H, W."),
        (lambda a: a.update(x_test=np.zeros((5, 5, 6))), r"x_test samples have shape \(5, 6, 1\)"),
        (lambda a: a.update(x_val=np.zeros((2, 6, 6))), "only one of x_val and y_val"),
        (lambda a: a.update(y_train=np.zeros((20, 4))), "one-hot"),
        (lambda a: a.update(x_test=np.full((5, 6, 6), np.nan)), "NaN"),
    ],
)
def test_npz_validation_errors(tmp_path, change, message):
    arrays = _valid()
    change(arrays)
    with pytest.raises(DatasetError, match=message):
        load_dataset(_npz(tmp_path, **arrays))


def test_npz_too_few_samples_for_validation(tmp_path):
    with pytest.raises(DatasetError, match="too few"):
        load_dataset(_npz(tmp_path, **_valid(n_train=3)))


def test_npz_not_a_npz(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="cannot read as a .npz"):
        load_dataset(path)
    with pytest.raises(DatasetError, match="no such .npz file"):
        load_dataset(tmp_path / "absent.npz")


def test_npz_object_arrays_refused(tmp_path):
    arrays = _valid()
    arrays["x_train"] = np.array([object()] * 20, dtype=object)
    path = tmp_path / "obj.npz"
    np.savez(path, **arrays)  # pickled: refused by allow_pickle=False
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(path)


def test_a_regression_npz_gives_targets_instead_of_labels(tmp_path):
    """mse/mae campaigns score against targets_<split>: such a data set needs no class labels."""
    rng = np.random.default_rng(0)
    path = tmp_path / "reg.npz"
    np.savez(path, x_train=rng.normal(size=(50, 4)), targets_train=rng.normal(size=(50, 2)),
             x_test=rng.normal(size=(20, 4)), targets_test=rng.normal(size=(20, 2)))
    d = load_dataset(str(path))
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (45, 5, 20)
    assert not d.y_test.any()
    np.savez(path, x_train=rng.normal(size=(50, 4)), x_test=rng.normal(size=(20, 4)))  # neither labels nor targets
    with pytest.raises(DatasetError, match="missing key"):
        load_dataset(str(path))
