"""The ``hwflow`` command: a thin layer over library functions, one module per sub-command.

Each command module exposes ``add_parser(subparsers)`` and a ``run(args) -> int`` set as the
parser's default. Errors derived from ``HwflowError`` are printed as one line, without traceback.
By default a command prints its results, progress bars and errors; ``-v`` adds the logs
(:mod:`hwflow.quiet`).
"""

from __future__ import annotations

import argparse
import sys

from hwflow.errors import HwflowError
from hwflow.quiet import configure_logging, quiet_tensorflow

COMMANDS = ("train", "verify", "campaign", "report", "deploy", "pull", "experiment", "harden", "build", "gate")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="hwflow",
        description="Quantize, harden, measure and deploy fault-resilient neural networks on FPGAs.",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the logs (hwflow's debug, libraries' info) besides results and progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"hwflow.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()  # imports no TensorFlow: the commands import it when they run
    args = parser.parse_args(argv)
    quiet_tensorflow()
    configure_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except HwflowError as err:
        print(f"hwflow {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hwflow {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
