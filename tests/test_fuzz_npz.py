"""Fuzzing the ``.npz`` loader (``hwflow.data.npz.load_npz``): shapes, dtypes, label ranges, broken files.

Every generated archive answers with a Dataset or a DatasetError. An accepted one holds what the
module promises: float32 finite inputs of one sample shape, int64 labels >= 0, as many as samples.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hwflow.data.datasets import Dataset
from hwflow.data.npz import load_npz
from hwflow.errors import DatasetError
from tests.fuzzing import answers, fuzz_settings

DTYPES = st.sampled_from(["float32", "float64", "float16", "int8", "uint8", "int64", "uint64", "bool", "complex64",
                          "U3", "S2", "datetime64[s]", "timedelta64[s]"])
SHAPES = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4)


@st.composite
def arrays(draw, n: int | None = None, labels: bool = False):
    dtype = np.dtype(draw(DTYPES))
    if n is not None and draw(st.booleans()):  # mostly consistent sample counts, sometimes not
        shape = (n,) if labels else (n, *draw(st.sampled_from([(4,), (2, 2), (2, 2, 1), (3, 2, 2, 1)])))
        if labels and draw(st.booleans()):
            shape = (n, 1)
    else:
        shape = draw(SHAPES)
    if dtype.kind in "fc":
        elements = st.integers(-50, 50).map(float) if draw(st.booleans()) else None  # whole, or anything
        return draw(hnp.arrays(dtype, shape, elements=elements))
    if dtype.kind in "iu" and labels:
        return draw(hnp.arrays(dtype, shape, elements=st.integers(0, 12) if draw(st.booleans()) else None))
    return draw(hnp.arrays(dtype, shape))


@st.composite
def valid_archives(draw) -> dict[str, np.ndarray]:
    """A valid data set (random sizes, dtypes and layouts), then 0..2 of its arrays replaced by anything."""
    shape = draw(st.sampled_from([(4,), (3, 3), (2, 2, 1), (2, 3, 2)]))
    out, samples = {}, {}
    for split in draw(st.sampled_from([("train", "test"), ("train", "val", "test")])):
        n = draw(st.integers(1, 12)) if split != "train" else draw(st.integers(10, 20))
        samples[f"x_{split}"] = samples[f"y_{split}"] = n
        out[f"x_{split}"] = draw(hnp.arrays(draw(st.sampled_from(["float32", "float64", "uint8", "int16"])),
                                            (n, *shape), elements=st.integers(0, 100)))
        out[f"y_{split}"] = draw(hnp.arrays(draw(st.sampled_from(["int64", "uint8", "float32"])), (n,),
                                            elements=st.integers(0, 9)))
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from(sorted(out)))
        if draw(st.booleans()):
            out[key] = draw(arrays(samples[key], labels=key.startswith("y")))  # a replaced array may be 0-d
        else:
            del out[key]
    return out


@st.composite
def archives(draw) -> dict[str, np.ndarray]:
    if draw(st.booleans()):
        return draw(valid_archives())
    n = draw(st.integers(0, 12))
    keys = draw(st.lists(st.sampled_from(["train", "val", "test"]), unique=True, max_size=3))
    keys = keys if draw(st.integers(0, 4)) else ["train", "test"]
    out = {}
    for split in keys:
        if draw(st.integers(0, 9)):
            out[f"x_{split}"] = draw(arrays(n))
        if draw(st.integers(0, 9)):
            out[f"y_{split}"] = draw(arrays(n, labels=True))
    if draw(st.booleans()):
        out[draw(st.sampled_from(["x", "extra", "y_train.npy"]))] = draw(arrays())
    return out


def _check(data: object) -> None:
    if isinstance(data, DatasetError):
        return
    assert isinstance(data, Dataset)
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val), (data.x_test, data.y_test)):
        assert x.dtype == np.float32
        assert np.all(np.isfinite(x))
        assert x.shape[1:] == data.x_train.shape[1:]
        assert y.dtype == np.int64
        assert y.shape == (len(x),)
        assert len(x) > 0
        assert y.min() >= 0


@fuzz_settings(150)
@given(archives())
@example({"x_train": np.zeros((10, 4), np.float32), "y_train": np.arange(10, dtype=np.uint64) + np.uint64(2**63),
          "x_test": np.zeros((2, 4), np.float32), "y_test": np.zeros(2, np.uint8)})
@example({"x_train": np.zeros((10, 4)), "y_train": np.full(10, 1e300), "x_test": np.zeros((2, 4)),
          "y_test": np.zeros(2)})
def test_generated_archives_are_loaded_or_refused(tmp_path_factory, arrays_):
    path = tmp_path_factory.mktemp("npz") / "data.npz"
    with path.open("wb") as f:
        np.savez(f, **arrays_)
    _check(answers(lambda: load_npz(path)))


def _valid_bytes() -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, x_train=np.arange(40, dtype=np.float32).reshape(10, 4), y_train=np.arange(10) % 3,
                        x_test=np.ones((3, 4), np.float32), y_test=np.array([0, 1, 2]))
    return buf.getvalue()


VALID = _valid_bytes()


@fuzz_settings(100)
@given(st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, len(VALID))),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(1, 255)), min_size=1,
                                        max_size=4)),
    st.tuples(st.just("raw"), st.binary(max_size=64)),
))
# Regressions: damaged zip headers and data raised zlib.error, NotImplementedError, RuntimeError.
@example(("flip", [(28, 1)]))
@example(("flip", [(650, 1)]))
@example(("flip", [(650, 64)]))
@example(("flip", [(648, 64)]))
def test_damaged_archives_are_refused(tmp_path_factory, damage):
    kind, arg = damage
    raw = bytearray(VALID)
    if kind == "truncate":
        raw = raw[:arg]
    elif kind == "flip":
        for pos, mask in arg:
            raw[pos] ^= mask
    else:
        raw = bytearray(arg)
    path = tmp_path_factory.mktemp("npz") / "data.npz"
    path.write_bytes(bytes(raw))
    _check(answers(lambda: load_npz(path)))


@fuzz_settings(60)
@given(st.dictionaries(st.sampled_from(["x_train", "y_train", "x_test", "y_test", "x_val", "y_val"]),
                       st.binary(max_size=40), min_size=1))
@example({"x_train": b"not an array", "y_train": b"", "x_test": b"", "y_test": b""})  # raised AttributeError
def test_zip_members_that_are_not_arrays_are_refused(tmp_path_factory, members):
    """A zip whose members lack the ``.npy`` suffix: numpy hands back their raw bytes, not arrays."""
    path = tmp_path_factory.mktemp("npz") / "data.npz"
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in members.items():
            z.writestr(name, raw)
    _check(answers(lambda: load_npz(path)))
