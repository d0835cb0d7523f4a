"""The main job, on the embedded default data set: ``make demo`` runs ``python -m hwflow.demo``.

Train (or reuse) the ``cnn-digits`` zoo model, compile its hls4ml C simulation, prove the emulator
bit-exact against it on the whole digits test split, harden it (FT-ClipAct thresholds searched
under faults on the validation split, weight scaling by rule), run the fault campaign of
``examples/campaign-digits.yaml`` on both (resumable: rerunning skips finished trials), write the
report, then build the hardened design for a PYNQ-Z2 (no synthesis here) and check the built
design's C simulation against the emulator, fault-free and under fault maps written through its
weight-memory port.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from hwflow.quiet import configure_logging, quiet_tensorflow

    parser = argparse.ArgumentParser(prog="python -m hwflow.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo", help="output directory (the trained model is cached here)")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--spec", default=str(Path(__file__).parent.parent / "examples" / "campaign-digits.yaml"),
                        help="campaign spec to run")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the logs besides the steps' results")
    args = parser.parse_args(argv)
    quiet_tensorflow()  # before anything imports TensorFlow
    configure_logging(args.verbose)

    import numpy as np

    from hwflow.campaign import load_spec, run_campaign
    from hwflow.campaign.variants import Variant, convert_hardened
    from hwflow.convert import HlsOptions
    from hwflow.data import load_dataset
    from hwflow.emulator import Emulator
    from hwflow.errors import HwflowError
    from hwflow.harden.clipact import describe_thresholds
    from hwflow.harden.pipeline import HardenConfig, harden
    from hwflow.harden.recipe import Recipe
    from hwflow.hardware.boards import load_board
    from hwflow.hardware.csim_board import check_build
    from hwflow.hardware.project import BuildOptions, generate
    from hwflow.report import write_report
    from hwflow.verify import build_csim, compare
    from hwflow.zoo.train import TrainConfig, load_or_train

    out = Path(args.out)
    start = time.perf_counter()
    try:
        print("[1/7] quantization-aware training of cnn-digits (8-bit weights and activations)")
        trained = load_or_train(TrainConfig("cnn-digits", seed=args.seed, out=out / "cnn-digits.h5"))
        state = "reused" if trained.reused else f"trained in {trained.seconds:.0f} s"
        print(f"      {trained.path} ({state}), QKeras test accuracy {trained.test_accuracy:.4f}")

        data = load_dataset("digits")
        print("[2/7] hls4ml conversion and C simulation build (g++)")
        csim = build_csim(trained.model, HlsOptions(), out / "hls-cnn-digits")
        print(f"      {len(csim.program.layers)} layers, {csim.image.total_words} weight words "
              f"({csim.image.total_bits} bits) in {csim.output_dir}")

        print(f"[3/7] emulator vs C simulation on the {len(data.x_test)} test images")
        result = compare(csim, data.x_test)
        print(f"      {result.summary()}")
        emulator = Emulator(csim.program, csim.image)
        emu_acc = float(np.mean(emulator.predict_classes(data.x_test) == data.y_test))
        csim_acc = float(np.mean(np.argmax(csim.csim_logits(data.x_test), axis=1) == data.y_test))
        print(f"      accuracy: QKeras {trained.test_accuracy:.4f}, emulator {emu_acc:.4f}, "
              f"C simulation {csim_acc:.4f}")

        spec = load_spec(args.spec)
        recipe = Recipe.parse("clipact+scale")
        print(f"[4/7] hardening: {recipe.name} (thresholds searched under faults on the validation split)")
        hardened = harden(trained.model, recipe, data, HardenConfig(**(spec.hardening or {})), progress=True)
        clip = hardened.record["clipact"]
        print("      FT-ClipAct (clip to zero, T on each ReLU's input): "
              + describe_thresholds(hardened.model, clip["thresholds"], ".3f")
              + f"; validation score {clip['score']:.3f} vs {clip['baseline_score']:.3f} unclipped")
        print(f"      weight scaling: {hardened.storage.describe()}")
        _, h_program, h_image = convert_hardened(hardened, HlsOptions(), out / "hls-hardened")

        print(f"[5/7] fault campaign {spec.name} ({_shown(args.spec)}) on the emulator")
        variants = [Variant("cnn-digits/baseline", csim.program, csim.image),
                    Variant(f"cnn-digits/{recipe.name}", h_program, h_image)]
        db = out / "results.sqlite"
        outcome = run_campaign(spec, db, variants=variants, progress=True)
        print(f"      {outcome.planned} trials ({outcome.skipped} already in {db}, {outcome.ran} run)")
        print("[6/7] report")
        files = write_report(db, out / "report", campaign=spec.name, layer_order=csim.image.layers)
        print(f"      {files.html}")

        board = load_board("pynq-z2")
        options = BuildOptions(HlsOptions.make("parallel", strategy="Resource", reuse_factor=8), min_words=1)
        print(f"[7/7] hardware build of the hardened model for {board.name} ({board.part}), no synthesis here")
        build = generate(hardened.model, board, out / "build", options, storage=hardened.storage)
        print(f"      {len(build.manifest.weight_memories)} weight memories in BRAM, {build.out_dir / 'manifest.json'}")
        check = check_build(build.out_dir, data.x_test[:64], fault_maps=10)
        print(f"      built design in C simulation vs emulator: {check.summary()}")
        ok = result.ok and check.ok
    except HwflowError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return 2
    print(f"demo finished in {time.perf_counter() - start:.0f} s")
    return 0 if ok else 1


def _shown(path: str) -> str:
    """``path`` relative to the working directory when it lies below it (as the README shows it)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


if __name__ == "__main__":
    sys.exit(main())
