"""Fault-free passes on disk, under a content key, so a CI job with a restored cache skips them.

The campaign engine's fault-free pass (``Golden``: compact codes of the kept layers for every
evaluation sample) is a pure function of the design and the samples. On cnn-fmnist's 10,000 test
images it takes 6 s and keeps 963 MiB; reading it back takes 0.16-0.37 s (checksum included). An
entry is ``<root>/<key>/``: one ``.npy`` per array and ``manifest.json`` (how the arrays make up the
Golden's attributes, and a CRC-32 of each array).

The key is a SHA-256 of everything that decides the codes: the Program's JSON, every WeightImage
array (its words, format, scale, shape and axes), the chunk's samples (bytes, dtype, shape) and their
range, :data:`STORE_LAYOUT`, hwflow's version and a digest of its source files (a development
checkout changes code without changing its version), and numpy's version. An entry that cannot be
read, whose manifest or arrays disagree with it, or whose checksums fail is a miss: the pass is
recomputed and the entry rewritten; nothing read from the cache is trusted unchecked. Entries are
written into a temporary folder and renamed, so a killed job leaves no half entry (only a
``.tmp-*`` folder, never read, and removed by a later write once an hour old).

Arrays are mapped copy-on-write (``mmap_mode="c"``): worker processes reading one entry share its
pages, and a write by the engine, if there ever were one, stays private to the process.

``hwflow gate --cache DIR`` keeps entries in ``DIR/golden``. The gate hands the folder to the
campaign's evaluators through :data:`ENV` (set by :func:`active` around the campaign run), which
worker processes inherit; ``TrialEvaluator(golden_cache=...)`` names one directly.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

import hwflow
from hwflow.campaign.delta.golden import Golden
from hwflow.campaign.delta.state import ChannelMajor
from hwflow.emulator import Program
from hwflow.errors import HwflowError
from hwflow.image import WeightImage

log = logging.getLogger(__name__)

STORE_LAYOUT = 2  # 2: no stored im2col (``name#cols``) in the pass
"""Bumped when an entry's layout or the key's recipe changes (old entries then simply miss)."""

ENV = "HWFLOW_GOLDEN_CACHE"
"""The folder campaign evaluators cache fault-free passes in when none is given to them."""

MANIFEST = "manifest.json"
STALE_SECONDS = 3600  # a temporary folder this old belongs to a killed writer (a 1 GiB entry is written in seconds)


class GoldenCacheError(HwflowError):
    """A Golden holds an attribute this cache cannot store (the pass is then simply not cached)."""


class CorruptEntry(Exception):
    """An entry that is not what its manifest says: treated as a miss, never shown to users."""


@functools.cache
def source_digest() -> str:
    """SHA-256 of hwflow's Python sources: an edited checkout computes other codes under the same version."""
    root = Path(hwflow.__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def entry_key(program: Program, image: WeightImage, x: np.ndarray, lo: int, hi: int) -> str:
    """The content key of the fault-free pass of ``x[lo:hi]`` through ``program`` with ``image``'s words."""
    samples = np.ascontiguousarray(x[lo:hi])
    head = {"layout": STORE_LAYOUT, "hwflow": hwflow.__version__, "source": source_digest(),
            "numpy": np.__version__, "program": program.to_json(), "range": [lo, hi],
            "samples": {"dtype": samples.dtype.str, "shape": list(samples.shape)},
            "arrays": [{"key": a.key, "format": str(a.format), "scale": a.scale.to_json(), "shape": list(a.shape),
                        "axes": list(a.axes), "words": a.size} for a in image]}
    h = hashlib.sha256(json.dumps(head, sort_keys=True, default=str).encode())
    for a in image:
        h.update(np.ascontiguousarray(a.words, dtype=np.uint64))
    h.update(samples.view(np.uint8).reshape(-1))
    return h.hexdigest()


def _crc(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1))


class GoldenCache:
    """A folder of fault-free passes, one entry per content key."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def from_env(cls) -> GoldenCache | None:
        """The cache :data:`ENV` names, or None."""
        folder = os.environ.get(ENV)
        return cls(folder) if folder else None

    def fault_free(self, program: Program, image: WeightImage, x: np.ndarray, lo: int, hi: int,
                   build: Callable[[], Golden]) -> Golden:
        """The fault-free pass of ``x[lo:hi]``: read from its entry when one is there and intact, else
        ``build()`` and stored."""
        key = entry_key(program, image, x, lo, hi)
        entry = self.root / key
        if entry.is_dir():
            try:
                golden = load(entry, program, key)
            except CorruptEntry as why:
                log.warning("fault-free pass cache: %s is unusable (%s); recomputing it", entry, why)
            else:
                log.info("fault-free pass of samples %d-%d from the cache (%s)", lo, hi, entry)
                return golden
        golden = build()
        try:
            save(golden, entry, key)
        except GoldenCacheError as why:
            log.warning("fault-free pass not cached: %s", why)
        except OSError as why:  # a full or read-only disk costs the cache, not the campaign
            log.warning("fault-free pass not cached in %s: %s", entry, why)
        return golden


@contextlib.contextmanager
def active(root: str | Path | None) -> Iterator[None]:
    """Campaign evaluators created inside (in this process or its workers) cache in ``root``; None: unchanged."""
    if root is None:
        yield
        return
    before = os.environ.get(ENV)
    os.environ[ENV] = str(Path(root).resolve())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


# --- one entry -----------------------------------------------------------------------------------------


def save(golden: Golden, entry: Path, key: str) -> None:
    """Write ``golden`` as ``entry`` (temporary folder, then rename; an existing entry is replaced)."""
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(vars(golden), golden.program, arrays, {})
    entry.parent.mkdir(parents=True, exist_ok=True)
    _sweep(entry.parent)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
    try:
        files = {}
        for name, a in arrays.items():
            np.save(tmp / name, a, allow_pickle=False)
            files[name] = {"dtype": a.dtype.str, "shape": list(a.shape), "crc32": _crc(a)}
        manifest = {"layout": STORE_LAYOUT, "key": key, "hwflow": hwflow.__version__, "attributes": tree,
                    "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest))
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)
        try:
            tmp.rename(entry)
        except OSError:  # another process stored the same entry meanwhile: theirs is as good
            if not (entry / MANIFEST).is_file():
                raise
            log.info("fault-free pass already cached by another process (%s)", entry)
            return
        log.info("fault-free pass cached in %s (%.0f MiB)", entry, golden.nbytes / 2**20)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _sweep(root: Path) -> None:
    """Remove what killed writers left (``.tmp-*`` folders untouched for :data:`STALE_SECONDS`), so a CI
    cache that outlives many jobs does not keep them forever."""
    now = time.time()
    for tmp in root.glob(".tmp-*"):
        try:
            if now - tmp.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:  # another process swept it first
            continue


def load(entry: Path, program: Program, key: str) -> Golden:
    """The Golden stored in ``entry``; raises :class:`CorruptEntry` unless the entry is intact and ``key``'s."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        if not isinstance(manifest, dict) or manifest.get("layout") != STORE_LAYOUT or manifest.get("key") != key:
            msg = "its manifest is another layout's or key's"
            raise CorruptEntry(msg)
        arrays = {}
        for name, meta in manifest["files"].items():
            if Path(name).name != name or not name.endswith(".npy"):
                msg = f"file name {name!r} in the manifest"
                raise CorruptEntry(msg)
            empty = 0 in meta["shape"]  # an empty file cannot be mapped
            a = np.load(entry / name, mmap_mode=None if empty else "c", allow_pickle=False)
            if a.dtype.str != meta["dtype"] or list(a.shape) != meta["shape"]:
                msg = f"{name} holds {a.dtype.str} {list(a.shape)}, the manifest says {meta['dtype']} {meta['shape']}"
                raise CorruptEntry(msg)
            a = np.asarray(a)
            if _crc(a) != meta["crc32"]:
                msg = f"{name} fails its checksum"
                raise CorruptEntry(msg)
            arrays[name] = a
        attributes = _decode(manifest["attributes"], program, arrays, {})
    except CorruptEntry:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError) as err:
        msg = f"{type(err).__name__}: {err}"
        raise CorruptEntry(msg) from None
    if not isinstance(attributes, dict):
        msg = "its attributes are not a mapping"
        raise CorruptEntry(msg)
    golden = Golden.__new__(Golden)  # the pass's result, without running it again
    golden.__dict__.update(attributes)
    return golden


# --- attributes <-> JSON tree and arrays ------------------------------------------------------------------
# Golden's attributes are stored generically (arrays, ChannelMajor wrappers, dicts, sets, scalars), so an
# attribute added to Golden is stored too, or (of a type unknown here) makes the pass uncached, never wrong.


def _encode(value, program: Program, arrays: dict, seen: dict):
    if value is program:
        return {"program": True}
    if isinstance(value, (np.ndarray, ChannelMajor)):
        if id(value) in seen:  # one object under two names (``output`` is a code array): kept one object
            return {"ref": seen[id(value)]}
        ref = str(len(seen))
        seen[id(value)] = ref
        if isinstance(value, ChannelMajor):
            return {"channel_major": _encode(value.array, program, arrays, seen), "id": ref}
        name = f"a{len(arrays)}.npy"
        arrays[name] = value
        return {"array": name, "id": ref}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            msg = f"a dict with keys other than strings ({list(value)[:3]})"
            raise GoldenCacheError(msg)
        return {"dict": [[k, _encode(v, program, arrays, seen)] for k, v in value.items()]}
    if isinstance(value, (set, frozenset)):
        return {"set": [_encode(v, program, arrays, seen) for v in sorted(value, key=repr)]}
    if isinstance(value, (list, tuple)):
        return {"list" if isinstance(value, list) else "tuple": [_encode(v, program, arrays, seen) for v in value]}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    msg = f"Golden holds a {type(value).__name__}, which the fault-free pass cache cannot store"
    raise GoldenCacheError(msg)


def _decode(node: dict, program: Program, arrays: dict, seen: dict):
    if "program" in node:
        return program
    if "ref" in node:
        return seen[node["ref"]]
    if "array" in node:
        seen[node["id"]] = arrays[node["array"]]
        return seen[node["id"]]
    if "channel_major" in node:
        seen[node["id"]] = ChannelMajor(_decode(node["channel_major"], program, arrays, seen))
        return seen[node["id"]]
    if "dict" in node:
        return {k: _decode(v, program, arrays, seen) for k, v in node["dict"]}
    if "set" in node:
        return {_decode(v, program, arrays, seen) for v in node["set"]}
    if "list" in node:
        return [_decode(v, program, arrays, seen) for v in node["list"]]
    if "tuple" in node:
        return tuple(_decode(v, program, arrays, seen) for v in node["tuple"])
    if "value" in node:
        return node["value"]
    msg = f"unknown node {sorted(node)}"
    raise KeyError(msg)
