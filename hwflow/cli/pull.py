"""``hwflow pull results.sqlite --into campaign.sqlite``: merge a board's results into a workstation database."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "pull",
        help="merge the results database a board wrote into a workstation one",
        description="Copy the campaigns, fault-free baselines and trials of a board's results database into a "
        "workstation database (created if missing). hwflow report then compares the board with the emulator "
        "trial by trial (same seeds, same FaultMaps) and lists every trial where they disagree.",
    )
    p.add_argument("source", help="the board's results database (results.sqlite from the bundle folder)")
    p.add_argument("--into", required=True, help="the workstation's database (e.g. the one hwflow campaign wrote)")
    p.set_defaults(func=run)


def run(args) -> int:
    from hwflow.deploy import pull

    r = pull(args.source, args.into)
    print(f"pulled {r.added} trials ({r.present} already there) and {r.baselines} fault-free runs of "
          f"{', '.join(r.campaigns) or 'no campaign'} from {', '.join(r.boards) or 'no board'} into {args.into}")
    print(f"compare board and emulator: hwflow report --db {args.into} --out report/")
    return 0
