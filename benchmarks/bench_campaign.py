"""The campaign engine against the loop users write today, on the same fault maps.

Today's loop, per trial: flip bits in the quantized weights of the Keras model (``set_weights``)
and run ``model.predict`` on the test set. The engine evaluates the same FaultMaps on the
bit-exact emulator. ``make bench`` runs it; each comparison prints ``bench <name>: <ratio>x (...)``.

Faults are restricted to the kernels and biases of the QConv/QDense layers, the only words the
Keras loop can flip (batch-norm is float in Keras, fixed point in hardware). Where the two
disagree on a trial, the trial is rerun in hls4ml's C simulation with the faulty words, to show
which one speaks for the hardware (a float Keras model neither wraps nor saturates).

Printed in one run (targets of issue 11 in brackets): the overall ratio [25x] and one ratio per
rate [8x at 1e-3], both sides on the same fault maps; ``campaign-exact``: every engine trial
checked against full emulation on a fixed 1,000-image subset that both evaluate [k = n]; the
float32 GEMM peak measured in the same run; peak memory [4 GiB]. ``--profile`` adds where the
engine's time goes at each rate (cProfile). Other processes on the machine change every figure:
run it more than once and compare ratios.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn-fmnist")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--rates", default="1e-5,1e-4,1e-3")
    parser.add_argument("--keras-trials", type=int, default=4, help="trials per rate for the Keras loop")
    parser.add_argument("--engine-trials", type=int, default=40, help="trials per rate for the engine")
    parser.add_argument("--threads", type=int, default=2, help="trials evaluated side by side (both cores)")
    parser.add_argument("--exact-images", type=int, default=1000, help="subset checked against full emulation")
    parser.add_argument("--profile", action="store_true", help="print where the engine's time goes per rate")
    parser.add_argument("--io", default="parallel", choices=("parallel", "stream"),
                        help="hls4ml io type of the design (stream for the 32x32 zoo models: a far shorter g++ build)")
    parser.add_argument("--out", default="out/bench")
    args = parser.parse_args(argv)

    import numpy as np

    from hwflow.campaign import TrialEvaluator
    from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls
    from hwflow.data import load_dataset
    from hwflow.faults import BitFlip, Target
    from hwflow.zoo.train import TrainConfig, load_or_train

    out = Path(args.out)
    trained = load_or_train(TrainConfig(args.model, out=out / f"{args.model}.h5"), progress=False)
    model = trained.model
    data = load_dataset(trained.metadata.get("dataset") or "digits")
    x, y = data.x_test[: args.images], data.y_test[: args.images]
    hls_model = convert(model, HlsOptions.make(args.io), out / f"hls-campaign-{args.model}-{args.io}")
    program, image = program_from_hls(hls_model), image_from_hls(hls_model)
    weighted = [a.layer for a in image if a.name == "weight" and not a.layer.startswith("bn")]
    target = Target(layers=tuple(weighted), arrays=("weight", "bias"))
    rates = [float(r) for r in args.rates.split(",")]

    t0 = time.perf_counter()
    evaluator = TrialEvaluator(program, image, x, y)
    t_setup = time.perf_counter() - t0
    cache_mb = evaluator.store.nbytes / 2**20

    def fault_maps(trials):
        for i, rate in enumerate(rates):
            for t in range(trials):
                yield rate, BitFlip(rate, target=target).sample(image, np.random.default_rng([i, t]))

    # The engine, many trials, timed per rate (the trials of a rate go to the evaluator together).
    engine_maps = list(fault_maps(args.engine_trials))
    # Warm-up outside the timed regions: the compiled kernels are built (or loaded from numba's cache)
    # on their first call, once per dtype combination; two trials of each rate reach every one of them.
    evaluator.evaluate_many([fm for k, (_, fm) in enumerate(engine_maps) if k % args.engine_trials < 2],
                            threads=args.threads)
    engine, t_rate = [], {}
    for rate in rates:
        maps = [fm for r, fm in engine_maps if r == rate]
        t0 = time.perf_counter()
        engine += evaluator.evaluate_many(maps, threads=args.threads)
        t_rate[rate] = (time.perf_counter() - t0) / len(maps)
    t_engine = sum(t_rate[r] * args.engine_trials for r in rates)
    rss_engine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # The Keras loop, on the first trials of the same maps.
    keras_idx = [k for k in range(len(engine_maps)) if k % args.engine_trials < args.keras_trials]
    clean_weights = model.get_weights()
    keras_correct, k_rate = [], {r: 0.0 for r in rates}
    for k in keras_idx:
        rate, fm = engine_maps[k]
        t0 = time.perf_counter()
        keras_correct.append(keras_trial(model, clean_weights, image, fm, x, y))
        k_rate[rate] += (time.perf_counter() - t0) / args.keras_trials
    t_keras = sum(k_rate.values()) * args.keras_trials
    model.set_weights(clean_weights)
    keras_outcomes = [engine[k] for k in keras_idx]

    engine_rate = len(engine_maps) / t_engine
    keras_rate = len(keras_idx) / t_keras
    agree = sum(int(k == o.correct) for k, o in zip(keras_correct, keras_outcomes, strict=True))
    gemm = sgemm_peak()
    print(f"bench campaign-setup: fault-free pass and cache {t_setup:.1f} s, cache {cache_mb:.1f} MiB, "
          f"peak RSS {rss_engine:.0f} MiB after the engine's trials")
    print(f"bench campaign-vs-keras-loop: {engine_rate / keras_rate:.1f}x "
          f"({engine_rate:.2f} vs {keras_rate:.3f} trials/s, {len(x)} images, rates {args.rates}, "
          f"{args.threads} engine threads)")
    for rate in rates:
        print(f"bench campaign-vs-keras-loop rate {rate:g}: {k_rate[rate] / t_rate[rate]:.1f}x "
              f"({1000 * t_rate[rate]:.0f} vs {1000 * k_rate[rate]:.0f} ms per trial)")
    for rate in rates:
        sel = [o for (r, _), o in zip(engine_maps, engine, strict=True) if r == rate]
        print(f"bench campaign-accuracy rate {rate:g}: {np.mean([o.correct for o in sel]) / len(x):.4f} "
              f"over {len(sel)} trials, mean faults {np.mean([o.faults for o in sel]):.1f}")
    print(f"bench campaign-agreement: {agree} of {len(keras_idx)} trials give the same correct count")
    for k, kc in zip(keras_idx, keras_correct, strict=True):
        rate, fm = engine_maps[k]
        if kc != engine[k].correct:
            csim = csim_correct(hls_model, image, fm, x, y)
            print(f"bench campaign-disagreement rate {rate:g}: keras {kc}, engine {engine[k].correct}, "
                  f"C-sim {csim} correct")
            break
    same = exact_check(program, image, [fm for _, fm in engine_maps], x[: args.exact_images], y[: args.exact_images])
    print(f"bench campaign-exact: {same} of {len(engine_maps)} trials equal full emulation "
          f"(outcome and every output code, {min(args.exact_images, len(x))} images)")
    print(f"bench gemm-peak: {2 * gemm / 1e9:.0f} GFLOP/s float32 ({gemm / 1e9:.0f} G multiply-accumulates/s)")
    print(f"bench campaign-memory: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.profile:
        for rate in rates:
            profile_rate(evaluator, [fm for r, fm in engine_maps if r == rate][:10], rate)
    return 0


def exact_check(program, image, maps, x, y) -> int:
    """Trials whose engine outcome and output codes equal full emulation of the faulty image."""
    import numpy as np

    from hwflow.campaign import TrialEvaluator
    from hwflow.emulator import Emulator

    evaluator = TrialEvaluator(program, image, x, y)
    same = 0
    for fm in maps:
        reference = Emulator(program, fm.apply(image)).run(x)
        same += int(np.array_equal(evaluator.output_codes(fm), reference)
                    and evaluator.evaluate(fm) == evaluator.full_evaluate(fm, x))
    return same


def profile_rate(evaluator, maps, rate) -> None:
    """The engine's ten most expensive functions (own time) at one rate."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    evaluator.evaluate_many(maps)
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(10)
    print(f"bench campaign-profile rate {rate:g} ({len(maps)} trials, one thread):")
    print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[-1800:])


def sgemm_peak(n: int = 2048, repeats: int = 5) -> float:
    """numpy's float32 GEMM in multiply-accumulates per second: a large square product, best of several."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    best = float("inf")
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return n**3 / best


def keras_trial(model, clean_weights, image, faultmap, x, y) -> int:
    """Today's loop: write the faulty weight values into the Keras model and predict."""
    import numpy as np

    faulty = faultmap.apply(image)
    model.set_weights(clean_weights)
    for key in faultmap.keys_touched():
        layer, name = key.split("/", 1)
        keras_layer = model.get_layer(layer)
        values = [w.copy() for w in keras_layer.get_weights()]
        values[0 if name == "weight" else 1] = faulty.get(layer, name).values().astype(np.float32)
        keras_layer.set_weights(values)
    logits = model.predict(x, batch_size=1024, verbose=0)
    return int(np.sum(np.argmax(logits, axis=1) == y))


def csim_correct(hls_model, image, faultmap, x, y) -> int:
    """The same faulty words in hls4ml's C simulation (rewritten weights, recompiled)."""
    import numpy as np

    from hwflow.convert import compile_csim

    faulty = faultmap.apply(image)
    for key in faultmap.keys_touched():
        layer, name = key.split("/", 1)
        arr = faulty.get(layer, name)
        var = hls_model.graph[layer].weights[name]
        var.data = arr.format.decode_float(arr.words).reshape(arr.firmware_shape)
    compile_csim(hls_model)
    logits = hls_model.predict(np.ascontiguousarray(x, dtype=np.float64))
    return int(np.sum(np.argmax(np.asarray(logits).reshape(len(x), -1), axis=1) == y))


if __name__ == "__main__":
    sys.exit(main())
