"""``hwflow report --db results.sqlite --out report/``: figures, CSV and an HTML report of campaign results."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write plots, CSV and a self-contained HTML report from a results database",
        description="Summarize the trials in a results database: mean accuracy with 95% confidence intervals "
        "(Student-t over trials), accuracy against fault rate, sensitivity heatmaps and board-vs-emulator "
        "discrepancies, written as PNG, CSV and one self-contained report.html.",
    )
    p.add_argument("--db", required=True, help="results database (SQLite) written by hwflow campaign")
    p.add_argument("--out", required=True, help="directory for the report files (created if missing)")
    p.add_argument("--campaign", help="report only this campaign (default: every campaign in the database)")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from hwflow.report import write_report
    from hwflow.report.html import fmt

    files = write_report(args.db, args.out, args.campaign)
    data = files.data
    print(f"report of {', '.join(data.campaigns)} ({len(data.rows)} trials) written:")
    for path in files.paths:
        print(f"  {path}")
    many = len(data.campaigns) > 1
    boards = len({s.board for s in data.summaries}) > 1
    sweep = sorted((s for s in data.summaries if s.study == "sweep"),
                   key=lambda s: (s.campaign, s.fault_model, s.variant, s.board, s.rate))
    if sweep:
        print("accuracy (mean over trials ± 95% t half-width):")
    for s in sweep:
        where = (f"{s.campaign}: " if many else "") + s.variant + (f" @{s.board}" if boards else "")
        print(f"  {where:28s} {s.fault_model:28s} rate {s.rate:<8g} {fmt(s.mean_accuracy)} ± "
              f"{fmt(s.half_width)}  ({s.n_trials} trials)")
    for t in data.sensitivity:
        if np.isfinite(t.drop).any():
            i, j = np.unravel_index(np.nanargmax(t.drop), t.drop.shape)
            worst = f"largest drop {fmt(t.drop[i, j] * 100, 1)} points at {t.row_labels[i]} / {t.col_labels[j]}"
        else:
            worst = "accuracy drop unknown (no fault-free baseline)"
        print(f"  sensitivity {t.study} ({t.name}): {worst}")
    results = sum(d.kind == "result" for d in data.discrepancies)
    seeds = sum(d.kind == "seed" for d in data.discrepancies)
    if data.paired:
        print(f"  boards: {sum(data.paired.values())} shared trials, {results} discrepancies, "
              f"{seeds} seed mismatches")
    return 0

