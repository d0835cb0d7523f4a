"""The campaign engine against the loop users write today, on the same fault maps.

Today's loop, per trial: flip bits in the quantized weights of the Keras model (``set_weights``)
and run ``model.predict`` on the test set. The engine evaluates the same FaultMaps on the
bit-exact emulator. ``make bench`` runs it; each comparison prints ``bench <name>: <ratio>x (...)``.

Faults are restricted to the kernels and biases of the QConv/QDense layers, the only words the
Keras loop can flip (batch-norm is float in Keras, fixed point in hardware). Where the two
disagree on a trial, the trial is rerun in hls4ml's C simulation with the faulty words, to show
which one speaks for the hardware (a float Keras model neither wraps nor saturates).
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
    hls_model = convert(model, HlsOptions(), out / f"hls-campaign-{args.model}")
    program, image = program_from_hls(hls_model), image_from_hls(hls_model)
    weighted = [a.layer for a in image if a.name == "weight" and not a.layer.startswith("bn")]
    target = Target(layers=tuple(weighted), arrays=("weight", "bias"))
    rates = [float(r) for r in args.rates.split(",")]

    t0 = time.perf_counter()
    evaluator = TrialEvaluator(program, image, x, y)
    t_setup = time.perf_counter() - t0
    cache_mb = sum(a.nbytes for a in evaluator.cache.values()) / 2**20

    def fault_maps(trials):
        for i, rate in enumerate(rates):
            for t in range(trials):
                yield rate, BitFlip(rate, target=target).sample(image, np.random.default_rng([i, t]))

    # The engine, many trials.
    engine_maps = list(fault_maps(args.engine_trials))
    t0 = time.perf_counter()
    engine = [evaluator.evaluate(fm) for _, fm in engine_maps]
    t_engine = time.perf_counter() - t0

    # The Keras loop, on the first trials of the same maps.
    keras_maps = [m for k, m in enumerate(engine_maps) if k % args.engine_trials < args.keras_trials]
    keras_outcomes = [engine[k] for k in range(len(engine_maps)) if k % args.engine_trials < args.keras_trials]
    clean_weights = model.get_weights()
    t0 = time.perf_counter()
    keras_correct = [keras_trial(model, clean_weights, image, fm, x, y) for _, fm in keras_maps]
    t_keras = time.perf_counter() - t0
    model.set_weights(clean_weights)

    engine_rate = len(engine_maps) / t_engine
    keras_rate = len(keras_maps) / t_keras
    agree = sum(int(k == o.correct) for k, o in zip(keras_correct, keras_outcomes, strict=True))
    print(f"bench campaign-setup: fault-free pass and cache {t_setup:.1f} s, cache {cache_mb:.1f} MiB, "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(f"bench campaign-vs-keras-loop: {engine_rate / keras_rate:.1f}x "
          f"({engine_rate:.2f} vs {keras_rate:.3f} trials/s, {len(x)} images, rates {args.rates})")
    for rate in rates:
        sel = [o for (r, _), o in zip(engine_maps, engine, strict=True) if r == rate]
        print(f"bench campaign-accuracy rate {rate:g}: {np.mean([o.correct for o in sel]) / len(x):.4f} "
              f"over {len(sel)} trials, mean faults {np.mean([o.faults for o in sel]):.1f}")
    print(f"bench campaign-agreement: {agree} of {len(keras_maps)} trials give the same correct count")
    for (rate, fm), k, o in zip(keras_maps, keras_correct, keras_outcomes, strict=True):
        if k != o.correct:
            csim = csim_correct(hls_model, image, fm, x, y)
            print(f"bench campaign-disagreement rate {rate:g}: keras {k}, engine {o.correct}, C-sim {csim} correct")
            break
    return 0


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
