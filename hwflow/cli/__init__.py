"""The ``hwflow`` command: a thin layer over library functions, one module per sub-command.

Each command module exposes ``add_parser(subparsers)`` and a ``run(args) -> int`` set as the
parser's default. Errors derived from ``HwflowError`` are printed as one line, without traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from hwflow.errors import HwflowError

COMMANDS = ("train", "verify", "campaign", "report", "deploy", "pull", "experiment", "harden", "build")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="hwflow",
        description="Quantize, harden, measure and deploy fault-resilient neural networks on FPGAs.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"hwflow.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # TensorFlow's C++ start-up chatter buries our output; users can still raise it themselves.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # hls4ml logs its conversion chatter on the root logger
        for handler in logging.getLogger().handlers:
            handler.addFilter(lambda record: record.name != "root" or record.levelno >= logging.WARNING)
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
