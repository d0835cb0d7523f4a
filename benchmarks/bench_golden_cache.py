"""The fault-free pass against reading it back from the cache (``hwflow.campaign.golden_cache``).

For each model: the pass itself (``Golden``, the best of ``--repeat`` runs), writing its entry, and
reading it back (manifest, mapped arrays, checksums) with the file pages dropped from the page cache
first (``posix_fadvise``, as after a CI cache restore) and again with them cached; then a whole
``TrialEvaluator`` built with and without a cache hit. Prints ``bench golden-cache <model>: ...``.
Other processes on the machine change every figure: run it more than once.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn-fmnist,cnn-digits")
    parser.add_argument("--images", type=int, default=10_000, help="evaluation samples (at most the test set)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default="out/bench")
    args = parser.parse_args(argv)
    for name in args.models.split(","):
        program, image, x, y = _setup(name, Path(args.out), args.images)
        _bench(name, program, image, x, y, args.repeat)
    return 0


def _setup(name: str, out: Path, images: int):
    from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls
    from hwflow.data import load_dataset
    from hwflow.zoo.train import TrainConfig, load_or_train

    trained = load_or_train(TrainConfig(name, out=out / f"{name}.h5"), progress=False)
    data = load_dataset(trained.metadata.get("dataset") or "digits")
    hls = convert(trained.model, HlsOptions(), out / f"hls-golden-{name}")
    return program_from_hls(hls), image_from_hls(hls), data.x_test[:images], data.y_test[:images]


def _bench(name, program, image, x, y, repeat: int) -> None:
    from hwflow.campaign import TrialEvaluator
    from hwflow.campaign import golden_cache as gc
    from hwflow.campaign.delta.golden import Golden
    from hwflow.emulator import Emulator

    emulator = Emulator(program, image)
    build = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        golden = Golden(program, image, emulator, x)
        build.append(time.perf_counter() - t0)
    root = Path(tempfile.mkdtemp(prefix="bench-golden-"))
    try:
        key = gc.entry_key(program, image, x, 0, len(x))
        t0 = time.perf_counter()
        gc.save(golden, root / key, key)
        t_save = time.perf_counter() - t0
        cold, warm = [], []
        for _ in range(repeat):
            _drop_pages(root / key)
            t0 = time.perf_counter()
            gc.load(root / key, program, key)
            cold.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            gc.load(root / key, program, key)
            warm.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        TrialEvaluator(program, image, x, y)
        t_plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        TrialEvaluator(program, image, x, y, golden_cache=root)
        t_hit = time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"bench golden-cache {name}: {len(x)} samples, {golden.nbytes / 2**20:.1f} MiB; pass {min(build):.3f} s, "
          f"write {t_save:.3f} s, read {min(cold):.3f} s (pages dropped) / {min(warm):.3f} s (cached); "
          f"TrialEvaluator {t_plain:.3f} s, {t_hit:.3f} s with a cache hit")


def _drop_pages(entry: Path) -> None:
    """Evict the entry's files from the page cache (only these files), as a fresh CI machine has them."""
    for f in entry.iterdir():
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


if __name__ == "__main__":
    raise SystemExit(main())
