"""``hwflow train``: quantization-aware training of a zoo model, one call to :func:`hwflow.zoo.train`."""

from __future__ import annotations

from pathlib import Path

from hwflow.cli.args import integer, positive
from hwflow.errors import HardenError
from hwflow.harden.saq import DEFAULT_RHO, DEFAULT_SPARSITY, uses_sam, uses_sparsity
from hwflow.zoo.models import ZOO


def add_parser(sub) -> None:
    zoo = ", ".join(f"{name} ({spec.dataset or 'a .npz you give'}"
                    f"{f', else {spec.fallback}' if spec.fallback else ''})" for name, spec in ZOO.items())
    p = sub.add_parser(
        "train",
        help="train a zoo model with quantization-aware training",
        description=f"Train a zoo model with QKeras quantization-aware training and save it as .h5, "
        f"with a .json sidecar recording how it was made. Zoo: {zoo}.",
    )
    p.add_argument("--model", required=True, metavar="NAME", help=f"zoo model: {', '.join(ZOO)}")
    p.add_argument("--dataset", help="digits, fashion-mnist, fashion-mnist-32, cifar-10 or an .npz file "
                   "(default: the zoo model's; the 32x32 models: cifar-10 where found, else fashion-mnist-32)")
    p.add_argument("--data-root", type=Path, help="directory holding the Fashion-MNIST *.gz files, or CIFAR-10's "
                   "cifar-10-batches-py (or its parent; else $HWFLOW_CIFAR10)")
    p.add_argument("--weight-bits", type=integer,
                   help="bits per weight and bias, sign included (2..16; default: the model's, 8 but jet-mlp's 6)")
    p.add_argument("--act-bits", type=integer,
                   help="bits per ReLU output (2..16; default: the model's, 8 but jet-mlp's 6)")
    p.add_argument(
        "--weight-integer", type=integer, help="integer bits of the weights, sign excluded (default: the model's, 0 "
        "but rn07's 2)"
    )
    p.add_argument("--epochs", type=positive, help="training epochs (default: the zoo model's)")
    p.add_argument("--batch-size", type=positive, help="batch size (default: the zoo model's)")
    p.add_argument("--learning-rate", type=float, help="Adam learning rate (default: the zoo model's)")
    p.add_argument("--seed", type=integer, default=0, help="seed of initial weights and shuffling (default 0)")
    p.add_argument(
        "--method",
        default="standard",
        metavar="METHOD",
        help="standard (default), saq (sharpness-aware QAT, FlatENN), sparse (L1 activity penalty) or sparse-saq",
    )
    p.add_argument("--rho", type=float, help=f"SAM radius for saq / sparse-saq (default {DEFAULT_RHO})")
    p.add_argument("--asam", action="store_true", help="adaptive SAM (ASAM) for saq / sparse-saq")
    p.add_argument(
        "--sparsity", type=float, help=f"L1 activity penalty for sparse / sparse-saq (default {DEFAULT_SPARSITY})"
    )
    p.add_argument("--out", type=Path, required=True, help="model file to write (.h5; sidecar .json beside it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from hwflow.zoo.train import TrainConfig, train

    unused = [
        flag for flag, given, used in (
            ("--rho", args.rho is not None, uses_sam(args.method)),
            ("--asam", args.asam, uses_sam(args.method)),
            ("--sparsity", args.sparsity is not None, uses_sparsity(args.method)),
        ) if given and not used
    ]  # fmt: skip
    if unused:
        msg = (
            f"{', '.join(unused)}: not used by --method {args.method} (--rho and --asam apply to saq and "
            "sparse-saq, --sparsity to sparse and sparse-saq); drop it or pick the method that uses it"
        )
        raise HardenError(msg)
    config = TrainConfig(
        model=args.model,
        dataset=args.dataset,
        weight_bits=args.weight_bits,
        act_bits=args.act_bits,
        weight_integer=args.weight_integer,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        out=args.out,
        data_root=args.data_root,
        method=args.method,
        rho=args.rho if args.rho is not None else DEFAULT_RHO,
        asam=args.asam,
        sparsity=args.sparsity if args.sparsity is not None else DEFAULT_SPARSITY,
    )
    result = train(config, progress=not args.quiet)
    meta = result.metadata
    details = []
    if uses_sam(meta["method"]):
        details.append(f"rho {meta['rho']}" + (", ASAM" if meta["asam"] else ""))
    if uses_sparsity(meta["method"]):
        details.append(f"sparsity {meta['sparsity']}")
    method = f"{meta['method']} ({', '.join(details)})" if details else meta["method"]
    score = "accuracy" if meta.get("metric", "top1") == "top1" else meta["metric"]  # ad08: its AUC
    sharp = f"{result.sharpness:.4f}" if result.sharpness is not None else "n/a"
    print(
        f"{meta['model']} on {meta['dataset']} ({meta['weight_bits']}-bit weights with "
        f"{meta['weight_integer']} integer bits, {meta['act_bits']}-bit activations, "
        f"{meta['epochs']} epochs, seed {meta['seed']}, method {method}): "
        f"test {score} {result.test_accuracy:.4f}, val {score} {result.val_accuracy:.4f}, "
        f"sharpness {sharp}, activation sparsity {result.activation_sparsity:.3f} "
        f"in {result.seconds:.1f} s; model {result.path}, sidecar {result.sidecar}"
    )
    return 0
