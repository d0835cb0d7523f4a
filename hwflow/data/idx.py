"""Reading the IDX format of (Fashion-)MNIST ourselves, so the flow never downloads anything.

Keras's loader fetches the files from the network; the Debian package ``dataset-fashion-mnist``
already puts them on disk. The format is small enough to parse with ``gzip`` and numpy, and
doing it here lets us check the header and say exactly which file is broken.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from hwflow.errors import DatasetError

# IDX element type codes (third byte of the magic number); all multi-byte values are big-endian.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of an (uncompressed) IDX file into an array of its declared shape."""
    if len(data) < 4:
        msg = f"{source}: too short to be an IDX file ({len(data)} bytes)"
        raise DatasetError(msg)
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or code not in _IDX_DTYPES or ndim == 0:
        msg = (
            f"{source}: bad IDX magic number 0x{data[:4].hex()} "
            "(expected 0x0000 then a type code 08/09/0B/0C/0D/0E and the number of dimensions); "
            "the file is corrupt or not an IDX file"
        )
        raise DatasetError(msg)
    header_end = 4 + 4 * ndim
    if len(data) < header_end:
        msg = f"{source}: truncated IDX header ({ndim} dimensions declared, {len(data)} bytes in file)"
        raise DatasetError(msg)
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header_end != expected:
        msg = (
            f"{source}: IDX header declares shape {dims} of {dtype} ({expected} bytes of data) "
            f"but the file holds {len(data) - header_end}; the file is truncated or corrupt"
        )
        raise DatasetError(msg)
    array = np.frombuffer(data, dtype=dtype, offset=header_end).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx_gz(path: Path) -> np.ndarray:
    """Read a gzip-compressed IDX file (``*-idx?-ubyte.gz``)."""
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError as err:
        msg = f"{path}: file not found"
        raise DatasetError(msg) from err
    except (OSError, EOFError, zlib.error) as err:
        msg = f"{path}: cannot decompress ({err}); the download is corrupt, reinstall or replace it"
        raise DatasetError(msg) from err
    return parse_idx(data, source=str(path))


def write_idx_gz(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as a gzip-compressed IDX file (used by tests and for small fixtures)."""
    codes = {dtype: code for code, dtype in _IDX_DTYPES.items()}
    big_endian = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    code = codes.get(big_endian)
    if code is None:
        msg = f"IDX cannot store dtype {array.dtype}"
        raise DatasetError(msg)
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as handle:
        handle.write(header + np.ascontiguousarray(array, dtype=big_endian).tobytes())
