"""CIFAR-10's pickle batches (small files in the exact format), their validation, and fashion-mnist-32."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from hwflow.data import canonical_name, cifar, load_dataset
from hwflow.errors import DatasetError

from .conftest import needs_fmnist

N = 6  # images per batch in these fixtures


def _images(seed: int, n: int = N) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def _labels(seed: int, n: int = N) -> list[int]:
    return [int(v) for v in np.random.default_rng(seed + 100).integers(0, 10, size=n)]


@pytest.fixture
def cifar_dir(tmp_path, monkeypatch):
    """A cifar-10-batches-py directory of six-image batches; batch i's images and labels seeded by i."""
    monkeypatch.delenv(cifar.ENV_VAR, raising=False)
    root = tmp_path / cifar.BATCHES_DIR
    root.mkdir()
    for i, name in enumerate((*cifar.TRAIN_BATCHES, cifar.VAL_BATCH, cifar.TEST_BATCH)):
        cifar.write_batch(root / name, _images(i), _labels(i), name)
    cifar.write_meta(root / cifar.META)
    return root


def test_split_layout_and_values(cifar_dir):
    d = load_dataset("cifar-10", root=cifar_dir)
    assert d.name == "cifar-10"
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (4 * N, N, N)
    assert d.input_shape == (32, 32, 3)
    for x in (d.x_train, d.x_val, d.x_test):
        assert x.dtype == np.float32
    for y in (d.y_train, d.y_val, d.y_test):
        assert y.dtype == np.int64
    # data_batch_5 is the validation split, test_batch the test split, batches 1..4 in order the training one.
    np.testing.assert_array_equal(d.x_val * 255, _images(4).astype(np.float32))
    np.testing.assert_array_equal(d.y_test, _labels(5))
    np.testing.assert_array_equal(d.x_train[N:2 * N] * 255, _images(1).astype(np.float32))
    np.testing.assert_array_equal(d.y_train, np.concatenate([_labels(i) for i in range(4)]))


def test_channel_planes_become_channels_last(tmp_path):
    # The format's row: 1024 red bytes, 1024 green, 1024 blue, each plane row-major.
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.arange(1024) % 256]).astype(np.uint8)
    images, labels = cifar.parse_batch(tmp_path / "b", {b"data": row[np.newaxis], b"labels": [3]})
    assert images.shape == (1, 32, 32, 3)
    assert images[0, 5, 7, 0] == 10
    assert images[0, 5, 7, 1] == 20
    assert images[0, 1, 2, 2] == (32 + 2) % 256
    assert labels.tolist() == [3]


def test_parent_directory_and_environment_variable(cifar_dir, monkeypatch):
    assert cifar.find_dir(cifar_dir.parent) == cifar_dir
    assert cifar.find_dir(cifar_dir) == cifar_dir
    assert cifar.find_dir(None) is None
    monkeypatch.setenv(cifar.ENV_VAR, str(cifar_dir.parent))
    assert cifar.find_dir(None) == cifar_dir
    assert load_dataset("CIFAR10").name == "cifar-10"
    assert canonical_name("cifar10") == "cifar-10"


def test_missing_set_says_how_to_obtain_it(tmp_path, monkeypatch):
    monkeypatch.delenv(cifar.ENV_VAR, raising=False)
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar-10")
    text = str(info.value)
    for part in (cifar.URL, cifar.ENV_VAR, "--data-root", cifar.BATCHES_DIR, "does not download"):
        assert part in text
    with pytest.raises(DatasetError, match="lacks data_batch_1"):
        load_dataset("cifar-10", root=tmp_path)


def test_missing_file_is_named(cifar_dir):
    (cifar_dir / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match=r"lacks data_batch_3") as info:
        load_dataset("cifar-10", root=cifar_dir)
    assert cifar.URL in str(info.value)


class _Boom:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("payload", [
    {b"data": _Boom(), b"labels": [1]},  # a callable that is not numpy's array rebuild
    {b"labels": [1], b"data": np.array([[_Boom()]], dtype=object)},  # inside an object array
])
def test_malicious_pickle_is_refused_not_run(cifar_dir, payload, capsys):
    (cifar_dir / "data_batch_2").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DatasetError, match=r"data_batch_2: not a CIFAR-10 batch: the pickle refers to "):
        load_dataset("cifar-10", root=cifar_dir)
    assert "must never run" not in capsys.readouterr().out


def test_os_system_pickle_is_refused(cifar_dir, tmp_path):
    marker = tmp_path / "ran"
    evil = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."  # protocol 0: os.system("touch ...")
    (cifar_dir / cifar.META).write_bytes(evil)
    with pytest.raises(DatasetError, match=r"batches.meta: not a CIFAR-10 batch: the pickle refers to os.system"):
        load_dataset("cifar-10", root=cifar_dir)
    assert not marker.exists()


@pytest.mark.parametrize(("batch", "message"), [
    ({b"data": np.zeros((2, 3072), dtype=object), b"labels": [0, 1]}, r"uint8 array .*got object"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, r"uint8 array of shape \(N, 3072\).*float32"),
    ({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}, r"shape \(N, 3072\).*\(2, 1024\)"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but 1 labels"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, r"labels must be 0..9, found 0..10"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1.5]}, "list of integer class indices"),
    ({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, "holds no images"),
    ({b"labels": [0]}, r"no 'data' entry"),
    ([1, 2, 3], "holds a list, expected the dict"),
])
def test_malformed_batches_are_named(cifar_dir, batch, message):
    (cifar_dir / cifar.TEST_BATCH).write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset("cifar-10", root=cifar_dir)
    assert str(cifar_dir / cifar.TEST_BATCH) in str(info.value)


def test_truncated_and_bad_meta(cifar_dir):
    good = (cifar_dir / cifar.VAL_BATCH).read_bytes()
    (cifar_dir / cifar.VAL_BATCH).write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match="data_batch_5: cannot unpickle .*truncated or corrupt"):
        load_dataset("cifar-10", root=cifar_dir)
    (cifar_dir / cifar.VAL_BATCH).write_bytes(good)
    (cifar_dir / cifar.META).write_bytes(pickle.dumps({b"label_names": [b"cat"]}, protocol=2))
    with pytest.raises(DatasetError, match="batches.meta: 'label_names' must list the 10 class names"):
        load_dataset("cifar-10", root=cifar_dir)


def test_python2_style_pickle_reads(cifar_dir):
    # The published batches are Python 2 pickles with str keys as bytes; protocol 0/1 text forms must read too.
    rows = np.ascontiguousarray(_images(7, 2).transpose(0, 3, 1, 2)).reshape(2, 3072)
    for protocol in (0, 1, 2, 4):
        (cifar_dir / cifar.TEST_BATCH).write_bytes(pickle.dumps({b"data": rows, b"labels": [4, 2]}, protocol=protocol))
        d = load_dataset("cifar-10", root=cifar_dir)
        np.testing.assert_array_equal(d.x_test * 255, _images(7, 2).astype(np.float32))


@needs_fmnist
def test_fashion_mnist_32_pads_and_keeps_the_split():
    small = load_dataset("fashion-mnist")
    wide = load_dataset("fmnist-32")
    assert wide.name == "fashion-mnist-32"
    assert wide.input_shape == (32, 32, 3)
    for a, b in ((small.y_train, wide.y_train), (small.y_val, wide.y_val), (small.y_test, wide.y_test)):
        np.testing.assert_array_equal(a, b)
    for c in range(3):
        np.testing.assert_array_equal(wide.x_test[:, 2:30, 2:30, c], small.x_test[..., 0])
    assert not wide.x_test[:, :2].any()
    assert not wide.x_test[:, :, 30:].any()
