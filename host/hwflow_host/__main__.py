"""``python -m hwflow_host BUNDLE --db results.sqlite``: run (or resume) a bundle's campaign.

On the board (as root, pynq's Python): ``--board pynq`` (the default) loads the bundle's overlay.
On a workstation with hwflow installed, ``--board emulator`` runs the same loop on the bit-exact
emulator (a dry run of the bundle: same plan, same FaultMaps, same database schema).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

log = logging.getLogger("hwflow_host")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hwflow_host",
                                description="Run (or resume) the fault campaign of an unpacked hwflow bundle on a "
                                "board; one row per trial is committed to an SQLite results database.")
    p.add_argument("bundle", help="the unpacked bundle folder (from hwflow deploy)")
    p.add_argument("--db", help="results database (default: BUNDLE/results.sqlite); rerun to resume")
    p.add_argument("--board", choices=("pynq", "emulator"), default="pynq",
                   help="pynq: the overlay on this board (default); emulator: a dry run on a workstation with hwflow")
    p.add_argument("--name", help="board name recorded with the results (default: the manifest's board, or "
                   "'emulator-board')")
    p.add_argument("--max-trials", type=int, default=None, help="stop after this many new trials")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def make_board(bundle, kind: str, name: str | None):
    if kind == "pynq":
        from hwflow_host.pynq_board import PynqBoard

        if bundle.bitstream is None:
            from hwflow_host.board import BoardError

            msg = (f"{bundle.root} was packed without a bitstream (hwflow deploy --no-bitstream): it can only run "
                   "with --board emulator on a workstation; deploy again from a build that has one")
            raise BoardError(msg)
        return PynqBoard(bundle.manifest, bundle.image, bundle.bitstream, name=name)
    try:
        from hwflow.emulator import Program
        from hwflow.hardware.emulator_board import EmulatorBoard
    except ImportError as err:
        from hwflow_host.board import BoardError

        msg = f"--board emulator needs the full hwflow package (a workstation install): {err}"
        raise BoardError(msg) from None
    return EmulatorBoard(Program.load(bundle.program_path), bundle.image, name=name or "emulator-board")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from hwflow.errors import HwflowError
    from hwflow_host.bundle import load_bundle
    from hwflow_host.campaign import run_host_campaign

    try:
        bundle = load_bundle(args.bundle)
        db = args.db or str(bundle.root / "results.sqlite")
        board = make_board(bundle, args.board, args.name)
        name = getattr(board, "name", None) or args.board
        plan = bundle.plan
        print(f"{plan.campaign}: {plan.variant} on {name}, {len(plan.trials)} trials of {plan.samples} samples; "
              f"results in {db}", flush=True)
        result = run_host_campaign(board, bundle.image, plan, bundle.x, bundle.y, db, name,
                                   max_trials=args.max_trials, addresses=bundle.addresses(),
                                   on_trial=_progress(plan, name),
                                   output_frac=bundle.manifest.data.output_type.frac, targets=bundle.targets)
    except HwflowError as err:
        print(f"hwflow_host: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hwflow_host: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    value = "" if result.metric == "top1" else f" ({result.metric} {result.baseline_value:.4g})"
    print(f"{plan.campaign} on {name}: fault-free {result.baseline_correct}/{plan.samples} correct{value}; "
          f"{result.planned} trials, {result.skipped} already done, {result.ran} run in {result.seconds:.1f} s; "
          f"results in {db}", flush=True)
    return 0


def _progress(plan, name: str):
    """A line every 10 seconds (and at the end): trials done, seconds per trial, time left."""
    state = {"last": time.monotonic(), "start": time.monotonic()}

    def report(done: int, total: int, row) -> None:
        now = time.monotonic()
        if now - state["last"] < 10 and done < total:
            return
        state["last"] = now
        per = (now - state["start"]) / done
        print(f"  {plan.campaign} on {name}: {done}/{total} trials, {per:.2f} s/trial, "
              f"{per * (total - done) / 60:.1f} min left", flush=True)

    return report


if __name__ == "__main__":
    sys.exit(main())
