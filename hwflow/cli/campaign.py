"""``hwflow campaign SPEC.yaml --db results.sqlite``: run or resume a fault campaign."""

from __future__ import annotations

from hwflow.cli.args import positive


def add_parser(sub) -> None:
    p = sub.add_parser(
        "campaign",
        help="run (or resume) a fault campaign described by a YAML spec",
        description="Run every trial of the campaign in SPEC on the bit-exact emulator and record one row per "
        "trial in the results database. Running the same command again resumes: finished trials are skipped.",
    )
    p.add_argument("spec", help="campaign spec (YAML); see examples/")
    p.add_argument("--db", required=True, help="results database (SQLite), created if missing")
    p.add_argument("--workers", type=positive, default=None, help="local worker processes (default: all cores)")
    p.add_argument("--scheduler", help="Dask scheduler address, or 'local' for a local Dask cluster")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from collections import defaultdict

    from hwflow.campaign import load_spec, run_campaign
    from hwflow.results import ResultsDB

    spec = load_spec(args.spec)
    result = run_campaign(spec, args.db, workers=args.workers, scheduler=args.scheduler, progress=not args.quiet)
    print(f"campaign {spec.name}: {result.planned} trials, {result.skipped} already done, {result.ran} run; "
          f"results in {args.db}")
    for model in spec.models:  # the design each model is emulated as
        if model.hls_config:
            from hwflow.convert.hls_config import load_hls_config

            user = load_hls_config(spec.resolve(model.hls_config))
            print(f"  {model.name}: hls4ml configuration {model.hls_config} ({user.digest})")
    with ResultsDB(args.db) as db:
        for b in db.baselines(spec.name):  # in the campaign's metric (top-1 accuracy unless the spec names one)
            name = "accuracy" if b.metric == "top1" else b.metric
            print(f"  {b.variant}: fault-free {name} {b.value:.4f}")
        groups = defaultdict(list)
        for row in db.trials(spec.name):
            if row.study == "sweep":
                groups[(row.variant, row.fault_model, row.rate, row.metric)].append(row.value)
        for (variant, fault, rate, metric), values in sorted(groups.items()):
            name = "accuracy" if metric == "top1" else metric
            print(f"  {variant:24s} {fault:28s} rate {rate:<8g} {name} {sum(values) / len(values):.4f} "
                  f"({len(values)} trials)")
    return 0
