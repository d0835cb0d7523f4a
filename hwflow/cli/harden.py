"""``hwflow harden MODEL --method scale,clipact --out hardened.h5``: clip and/or scale a trained model."""

from __future__ import annotations

from pathlib import Path

from hwflow.cli.args import integer, positive

METHODS = ("scale", "clipact")


def _rates(text: str) -> tuple[float, ...]:
    import argparse

    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        msg = f"rates must be numbers separated by commas, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not values or not all(0.0 < v <= 1.0 for v in values):
        msg = f"rates must lie in (0, 1], got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return values


def add_parser(sub) -> None:
    p = sub.add_parser(
        "harden",
        help="apply weight scaling and/or FT-ClipAct to a trained model",
        description="Harden a trained QKeras model: FT-ClipAct (clipped activations, thresholds searched under "
        "faults on the validation split) and/or weight scaling (how the weights are stored; by rule or searched). "
        "Writes the model (.h5) and a sidecar recording what was done; the result converts, emulates, verifies, "
        "campaigns and builds like any model. SAQ is a training method: hwflow train --method saq.",
    )
    p.add_argument("model", type=Path, help="trained model (.h5), e.g. from hwflow train")
    p.add_argument("--method", required=True, help=f"comma-separated, applied clip first: {', '.join(METHODS)}")
    p.add_argument("--out", type=Path, required=True, help="hardened model to write (.h5, sidecar .json beside it)")
    p.add_argument("--dataset", help="digits, fashion-mnist or an .npz file: the data set the searches use "
                   "(default: the one the model's sidecar names; required for a model without one)")
    p.add_argument("--data-root", type=Path, help="directory holding the Fashion-MNIST *.gz files or CIFAR-10's "
                   "cifar-10-batches-py (else $HWFLOW_CIFAR10)")
    p.add_argument("--storage", default="fixed", choices=("fixed", "float16", "float32"),
                   help="how weights are stored (default: fixed, the trained types)")
    p.add_argument("--scale-mode", default="rule", choices=("rule", "search"),
                   help="rule: largest power of two that fits (default); search: best under faults on validation")
    p.add_argument("--clip-mode", default="zero", choices=("zero", "saturate"),
                   help="values above the threshold become 0 (the paper's form, default) or the threshold")
    p.add_argument("--rates", type=_rates, help="bit-error rates the searches score at, e.g. 1e-4,3e-4,1e-3")
    p.add_argument("--trials", type=positive, help="seeded fault maps per rate per candidate")
    p.add_argument("--rounds", type=positive, help="FT-ClipAct interval-search rounds")
    p.add_argument("--val-samples", type=positive, help="validation samples the searches score on")
    p.add_argument("--io", choices=("parallel", "stream"), help="hls4ml io type (default parallel, or the "
                   "--hls-config file's IOType)")
    p.add_argument("--hls-config", metavar="FILE", help="your own hls4ml configuration (as for hwflow verify): "
                   "checked against the model, recorded in the sidecar, and the design whose storage gain is shown; "
                   "the searches take its io type")
    p.add_argument("--seed", type=integer, default=0, help="seed of the searches' fault maps (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from dataclasses import replace

    from hwflow.data import load_dataset
    from hwflow.data.fit import check_fits, dataset_for, recorded_name
    from hwflow.errors import HardenError
    from hwflow.harden.pipeline import HardenConfig, harden, load_hardened, save_hardened
    from hwflow.harden.recipe import Recipe
    from hwflow.zoo.loading import read_sidecar

    methods = [m.strip().lower() for m in args.method.split(",") if m.strip()]
    for m in methods:
        if m in ("saq", "sparse", "sparse-saq"):
            msg = f"{m} is a training method: train the model with 'hwflow train --method {m}', then harden it"
            raise HardenError(msg)
        if m not in METHODS:
            msg = f"unknown hardening method {m!r}: use {', '.join(METHODS)} (comma-separated)"
            raise HardenError(msg)
    if not methods:
        msg = "--method is empty: give scale, clipact or scale,clipact"
        raise HardenError(msg)
    base = load_hardened(args.model)
    done = set(base.record.get("methods", []))
    again = sorted(done & set(methods))
    if again:
        msg = f"{args.model} is already hardened with {', '.join(again)}: start from the model before that step"
        raise HardenError(msg)
    if base.storage is not None and "scale" in methods:
        msg = f"{args.model} already has a storage plan: start from the unscaled model"
        raise HardenError(msg)
    recipe = Recipe(clip_mode=args.clip_mode if "clipact" in methods else None,
                    scale=args.scale_mode if "scale" in methods else None, storage=args.storage)
    side = read_sidecar(args.model) or {}
    data = load_dataset(dataset_for(args.model, args.dataset), root=args.data_root)  # never a guessed one
    check_fits(base.model, data, f"model {args.model}")
    options = None
    if args.hls_config:
        from hwflow.convert.hls_config import load_hls_config, resolve_options

        options = resolve_options(load_hls_config(args.hls_config), io=args.io)
        _check_config(base.model, options)  # before any search: a file that does not fit the model fails now
    io = options.io_type.value.removeprefix("io_") if options else args.io or "parallel"
    config = HardenConfig(io=io, seed=args.seed)
    if args.rates:
        config = replace(config, clip_rates=args.rates, scale_rates=args.rates)
    if args.trials:
        config = replace(config, clip_trials=args.trials, scale_trials=args.trials)
    if args.rounds:
        config = replace(config, clip_rounds=args.rounds)
    if args.val_samples:
        config = replace(config, val_samples=args.val_samples)
    hardened = harden(base.model, recipe, data, config, progress=not args.quiet, base_record=base.record,
                      options=options)
    if options is not None and hardened.storage is not None:
        _check_plan(hardened, options)  # before anything is written
    metadata = {k: v for k, v in side.items() if k != "hardening"}
    metadata.update(hardened_from=str(args.model), dataset=recorded_name(data), variant=recipe.name)
    if options is not None:
        metadata["hls_config"] = options.user_config.record()
    path = save_hardened(hardened, args.out, metadata)
    print(f"hardened {args.model} -> {path} ({', '.join(hardened.record['methods'])}; dataset {data.name}, "
          "searches on the validation split)")
    clip = hardened.record.get("clipact")
    if clip:
        from hwflow.harden.clipact import CLIP_RULES, describe_thresholds

        print(f"  FT-ClipAct ({clip['mode']}: {CLIP_RULES[clip['mode']]}): "
              f"{describe_thresholds(hardened.model, clip['thresholds'])}")
        print(f"  validation score (area under accuracy vs rate) {clip['score']:.4f} vs {clip['baseline_score']:.4f} "
              f"unclipped; fault-free {clip['clean_accuracy']:.4f} vs {clip['baseline_clean_accuracy']:.4f}")
    if hardened.storage is not None:
        print(f"  storage: {hardened.storage.describe()}")
        _print_gain(hardened, io, options)
    return 0


def _check_config(model, options) -> None:
    import tempfile

    from hwflow.cli.args import config_line
    from hwflow.convert import convert

    with tempfile.TemporaryDirectory(prefix="hwflow-harden-") as tmp:
        print(config_line(convert(model, options, Path(tmp) / "model").hwflow_config))


def _check_plan(hardened, options) -> None:
    """The storage plan must fit the design the user's configuration makes (its stored types)."""
    import tempfile

    from hwflow.convert import convert
    from hwflow.errors import HardenError

    with tempfile.TemporaryDirectory(prefix="hwflow-harden-") as tmp:
        try:
            convert(hardened.model, options, Path(tmp) / "model", storage=hardened.storage)
        except HardenError as err:
            msg = (f"{err} (the storage plan was searched on the design of {options.user_config.name}, which "
                   "stores this array in another type than the plan's): harden with a configuration that keeps the "
                   "weight, bias and batch-norm types")
            raise HardenError(msg) from None


def _print_gain(hardened, io: str, options=None) -> None:
    import tempfile

    from hwflow.campaign.variants import convert_hardened
    from hwflow.convert import HlsOptions
    from hwflow.harden.scale import format_gain_table, precision_gain

    with tempfile.TemporaryDirectory(prefix="hwflow-harden-") as tmp:
        _, _, image = convert_hardened(hardened, options or HlsOptions.make(io), Path(tmp) / "model")
    if hardened.storage.is_fixed and any(not a.scale.is_identity for a in image):
        print("  precision of the scaled storage:")
        for line in format_gain_table(precision_gain(image)).splitlines():
            print(f"    {line}")
