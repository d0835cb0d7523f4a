"""``hwflow gate SPEC.yaml --db results.sqlite``: run the campaign in batches and judge its ``require:`` list.

Exit status: 0 when every requirement holds, 1 when one fails or stays undecided, 2 on bad input
(a spec without requirements, a malformed spec, a database holding another campaign of that name).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from hwflow.cli.args import positive

DEFAULT_CACHE = ".hwflow-cache"
"""The CI cache folder (trained zoo models, conversions, fault-free passes), unless --cache or HWFLOW_CACHE names
another."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "gate",
        help="pass or fail a build on the campaign's resilience requirements (require: in the spec)",
        description="Run the campaign in SPEC in batches on the emulator (resuming what the database holds) and "
        "judge every requirement of its 'require:' list with a confidence sequence after each batch; stop as "
        "soon as every verdict is certain. Prints one line per requirement. Exit status: 0 all hold, 1 one "
        "fails or is undecided, 2 bad input.",
    )
    p.add_argument("spec", help="campaign spec (YAML) with a 'require:' list")
    p.add_argument("--db", required=True, help="results database (SQLite), created if missing")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML: one test case per requirement")
    p.add_argument("--summary", metavar="FILE",
                   help="write (append to) a Markdown summary with the plot embedded, e.g. \"$GITHUB_STEP_SUMMARY\"")
    p.add_argument("--batch", type=positive, default=None,
                   help="trials per point per batch (default: a tenth of the spec's trials, rounded up)")
    p.add_argument("--workers", type=positive, default=1, help="local worker processes for the trials (default: 1)")
    p.add_argument("--cache", default=None,
                   help="cache folder for trained models, conversions and fault-free passes "
                   f"(default: $HWFLOW_CACHE or {DEFAULT_CACHE})")
    p.add_argument("--no-cache", action="store_true", help="build every variant afresh, caching nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from hwflow.errors import HwflowError

    try:
        return _run(args)
    except HwflowError as err:
        if args.junit:  # CI shows why the gate could not judge, then the usual message and exit status 2
            from hwflow.gate.junit import write_junit_error

            write_junit_error(args.junit, Path(args.spec).stem, str(err))
        raise


def _run(args) -> int:
    from hwflow.campaign import load_spec
    from hwflow.gate import GateConfig, run_gate
    from hwflow.gate.run import checks_of

    start = time.perf_counter()
    spec = load_spec(args.spec)
    checks_of(spec)  # no requirements: refuse before training or converting anything
    cache = None if args.no_cache else (args.cache or os.environ.get("HWFLOW_CACHE") or DEFAULT_CACHE)
    result = run_gate(spec, args.db, GateConfig(args.batch, args.workers, not args.quiet, cache))
    for v in result.verdicts:
        print(v.line)
    print(result.summary_line())
    if args.junit:
        from hwflow.gate.junit import write_junit

        print(f"JUnit XML: {write_junit(result, args.junit, time.perf_counter() - start)}")
    if args.summary:
        from hwflow.gate.summary import write_summary

        print(f"Markdown summary: {write_summary(result, args.summary)}")
    return result.exit_code
