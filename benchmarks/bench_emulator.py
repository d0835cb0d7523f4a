"""Emulator inference throughput against hls4ml's C simulation and QKeras, on the same inputs.

``make bench`` runs it. Each comparison prints one line ``bench <name>: <ratio>x (<A> vs <B>)`` for
scripts. The emulator must be bit-exact with the C simulation on every image (checked here too),
at least 20x faster than it, and not slower than QKeras's ``model.predict``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn-fmnist")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--out", default="out/bench")
    args = parser.parse_args(argv)

    import numpy as np

    from hwflow.convert import HlsOptions
    from hwflow.data import load_dataset
    from hwflow.emulator import Emulator
    from hwflow.verify import build_csim
    from hwflow.zoo.train import TrainConfig, load_or_train

    out = Path(args.out)
    trained = load_or_train(TrainConfig(args.model, out=out / f"{args.model}.h5"), progress=False)
    data = load_dataset(trained.metadata.get("dataset") or "digits")
    x = data.x_test[: args.images]
    n = len(x)
    csim = build_csim(trained.model, HlsOptions(), out / f"hls-{args.model}")
    emulator = Emulator(csim.program, csim.image)

    emulator.logits(x[:64])  # warm-up (BLAS threads, allocations)
    emu, t_emu = timed(emulator.logits, x)
    ref, t_csim = timed(csim.csim_logits, x)
    trained.model.predict(x[:64], verbose=0)
    _, t_keras = timed(lambda v: trained.model.predict(v, batch_size=1024, verbose=0), x)

    mismatches = int(np.sum(emu.reshape(n, -1) != ref))
    acc = float(np.mean(np.argmax(emu.reshape(n, -1), axis=1) == data.y_test[:n]))
    print(f"bench emulator-images/s: {n / t_emu:.0f} ({n} images of {args.model}, accuracy {acc:.4f}, "
          f"{mismatches} output words differ from C-sim)")
    print(f"bench emulator-vs-csim: {t_csim / t_emu:.1f}x ({n / t_emu:.0f} vs {n / t_csim:.0f} images/s)")
    print(f"bench emulator-vs-qkeras: {t_keras / t_emu:.2f}x ({n / t_emu:.0f} vs {n / t_keras:.0f} images/s)")
    return 0 if mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
