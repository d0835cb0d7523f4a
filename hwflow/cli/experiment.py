"""``hwflow experiment FILE --out DIR``: several campaigns into one database, reports and the evidence table."""

from __future__ import annotations

from pathlib import Path

from hwflow.cli.args import positive


def add_parser(sub) -> None:
    p = sub.add_parser(
        "experiment",
        help="run (or resume) an experiment: campaigns over hardening variants, reports, evidence table",
        description="Run every campaign of an experiment file (e.g. experiments/seeds.yaml) into DIR/results.sqlite, "
        "write one report per campaign and the evidence table (DIR/evidence.md, evidence.csv). Trained and "
        "hardened models are cached and finished trials are not redone, so the same command resumes.",
    )
    p.add_argument("file", help="experiment file (YAML): name, defaults, campaigns")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: out/<experiment name>)")
    p.add_argument("--workers", type=positive, default=None, help="local worker processes (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from hwflow.experiment import load_experiment, run_experiment

    experiment = load_experiment(args.file)
    out = args.out or Path("out") / experiment.name
    result = run_experiment(experiment, out, workers=args.workers, progress=not args.quiet)
    print(f"experiment {experiment.name}: {result.trials_run} trials run, {result.trials_reused} reused; "
          f"results in {result.db}")
    for campaign, html in result.reports.items():
        print(f"  report {campaign}: {html}")
    print(f"  evidence: {result.evidence_md} ({result.evidence_csv.name})")
    print(result.evidence_md.read_text())
    return 0
