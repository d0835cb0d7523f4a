"""The main job, on the embedded default data set: ``make demo`` runs ``python -m hwflow.demo``.

Train (or reuse) the ``cnn-digits`` zoo model, compile its hls4ml C simulation, prove the emulator
bit-exact against it on the whole digits test split, run the fault campaign of
``examples/campaign-digits.yaml`` on the emulator (resumable: rerunning skips finished trials) and
write its report. Later stages of the flow (hardening, build, board) extend this script.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog="python -m hwflow.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo", help="output directory (the trained model is cached here)")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--spec", default=str(Path(__file__).parent.parent / "examples" / "campaign-digits.yaml"),
                        help="campaign spec to run")
    args = parser.parse_args(argv)

    import numpy as np

    from hwflow.campaign import load_spec, run_campaign
    from hwflow.campaign.variants import Variant
    from hwflow.convert import HlsOptions
    from hwflow.data import load_dataset
    from hwflow.emulator import Emulator
    from hwflow.errors import HwflowError
    from hwflow.report import write_report
    from hwflow.verify import build_csim, compare
    from hwflow.zoo.train import TrainConfig, load_or_train

    out = Path(args.out)
    start = time.perf_counter()
    try:
        print("[1/5] quantization-aware training of cnn-digits (8-bit weights and activations)")
        trained = load_or_train(TrainConfig("cnn-digits", seed=args.seed, out=out / "cnn-digits.h5"))
        state = "reused" if trained.reused else f"trained in {trained.seconds:.0f} s"
        print(f"      {trained.path} ({state}), QKeras test accuracy {trained.test_accuracy:.4f}")

        data = load_dataset("digits")
        print("[2/5] hls4ml conversion and C simulation build (g++)")
        csim = build_csim(trained.model, HlsOptions(), out / "hls-cnn-digits")
        print(f"      {len(csim.program.layers)} layers, {csim.image.total_words} weight words "
              f"({csim.image.total_bits} bits) in {csim.output_dir}")

        print(f"[3/5] emulator vs C simulation on the {len(data.x_test)} test images")
        result = compare(csim, data.x_test)
        print(f"      {result.summary()}")
        emulator = Emulator(csim.program, csim.image)
        emu_acc = float(np.mean(emulator.predict_classes(data.x_test) == data.y_test))
        csim_acc = float(np.mean(np.argmax(csim.csim_logits(data.x_test), axis=1) == data.y_test))
        print(f"      accuracy: QKeras {trained.test_accuracy:.4f}, emulator {emu_acc:.4f}, "
              f"C simulation {csim_acc:.4f}")

        spec = load_spec(args.spec)
        print(f"[4/5] fault campaign {spec.name} ({args.spec}) on the emulator")
        variant = Variant("cnn-digits/baseline", csim.program, csim.image)
        db = out / "results.sqlite"
        outcome = run_campaign(spec, db, variants=[variant], progress=True)
        print(f"      {outcome.planned} trials ({outcome.skipped} already in {db}, {outcome.ran} run)")
        print("[5/5] report")
        files = write_report(db, out / "report", campaign=spec.name, layer_order=csim.image.layers)
        print(f"      {files.html}")
    except HwflowError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return 2
    print(f"demo finished in {time.perf_counter() - start:.0f} s")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
