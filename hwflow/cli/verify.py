"""``hwflow verify MODEL``: emulator against hls4ml's C simulation, word for word; exit 0 only if equal."""

from __future__ import annotations

from hwflow.cli.args import add_hls_options, config_line, hls_options, positive


def add_parser(sub) -> None:
    p = sub.add_parser(
        "verify",
        help="check the emulator against hls4ml's C simulation, bit for bit",
        description="Compile the hls4ml C simulation of MODEL (g++), run it and the emulator on the same "
        "test samples and compare the logits word for word. Exits 0 only when they are identical.",
    )
    p.add_argument("model", help="QKeras model file (.h5)")
    p.add_argument("--dataset", help="digits, fashion-mnist or an .npz file (default: the model's sidecar)")
    p.add_argument("--data-root", help="directory holding the data set's files (fashion-mnist, fashion-mnist-32; "
                   "cifar-10: cifar-10-batches-py or its parent, else $HWFLOW_CIFAR10)")
    add_hls_options(p)
    p.add_argument("--samples", type=positive, default=1000, help="test samples to compare (default 1000)")
    p.add_argument("--workdir", help="where to write the hls4ml project (default: a temporary directory)")
    p.add_argument("--target", default="csim", choices=["csim", "csim-board"],
                   help="csim (default): hls4ml's C simulation; csim-board: the design of 'hwflow build' (weights "
                   "in BRAM behind hwflow_top) compiled with g++, fault-free and under --fault-maps fault maps")
    p.add_argument("--board", default="pynq-z2", help="board to build for with --target csim-board (default pynq-z2)")
    p.add_argument("--fault-maps", type=positive, default=50,
                   help="fault maps (bit flips and stuck-at, written through the weight port) for csim-board")
    p.set_defaults(func=run)


def run(args) -> int:
    from hwflow.data import load_dataset
    from hwflow.data.fit import check_fits, dataset_for
    from hwflow.harden.pipeline import load_hardened
    from hwflow.verify import build_csim, compare

    options = hls_options(args)  # --hls-config: the user's own hls4ml configuration
    dataset_name = dataset_for(args.model, args.dataset)  # given, or the sidecar's, or refused
    hardened = load_hardened(args.model)  # a hardened model's sidecar brings its storage plan (weight scaling)
    data = load_dataset(dataset_name, root=args.data_root)
    check_fits(hardened.model, data, f"model {args.model}")
    x, y = data.x_test[: args.samples], data.y_test[: args.samples]
    if args.target == "csim-board":
        from hwflow.cli.build import verify_board

        return verify_board(args, args.model, x)
    csim = build_csim(hardened.model, options, args.workdir, storage=hardened.storage)
    result = compare(csim, x)
    print(result.summary())
    if csim.config is not None:
        print(config_line(csim.config))
    name = f"{csim.config.name} ({csim.config.digest})" if csim.config is not None else "hwflow's own"
    print(f"{accuracy_line(hardened.model, csim, x, y)}; hls4ml configuration {name}")
    return 0 if result.ok else 1


def accuracy_line(model, csim, x, y) -> str:
    """Top-1 accuracy of QKeras (float), the emulator and the C simulation on the same samples, one line."""
    import numpy as np

    from hwflow.emulator import Emulator

    def top1(logits) -> float:
        return float(np.mean(np.argmax(np.asarray(logits).reshape(len(y), -1), axis=1) == y))

    keras = top1(model.predict(x, batch_size=256, verbose=0))
    emulator = top1(Emulator(csim.program, csim.image).logits(x))
    return (f"accuracy on {len(y)} test samples: QKeras {keras:.4f}, emulator {emulator:.4f}, "
            f"C simulation {top1(csim.csim_logits(x)):.4f}")
