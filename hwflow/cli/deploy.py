"""``hwflow deploy build/ --campaign SPEC.yaml --out bundle.tar.gz``: pack a bundle for the board."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "deploy",
        help="pack a build and a campaign into a bundle that runs the campaign on the board",
        description="Pack the output of hwflow build (manifest, golden weights, bitstream and .hwh), the campaign's "
        "trial plan for the built variant (same seeds as hwflow campaign), the test data, the board-side host and "
        "the numpy-only part of hwflow it needs into one .tar.gz, and print how to start it on the board.",
    )
    p.add_argument("build", help="the output folder of hwflow build (holds manifest.json)")
    p.add_argument("--campaign", required=True, help="campaign spec (YAML), the one run on the workstation")
    p.add_argument("--out", required=True, help="bundle to write (.tar.gz)")
    p.add_argument("--variant", help="which of the campaign's variants this build is (<model>/<variant>); "
                   "needed when the campaign has several")
    p.add_argument("--bitstream", help="the bitstream (default: <top>.bit under the build folder; its .hwh beside it)")
    p.add_argument("--no-bitstream", action="store_true",
                   help="pack without a bitstream: a dry-run bundle for python -m hwflow_host --board emulator")
    p.add_argument("--board-host", default="xilinx@pynq",
                   help="user@host of the board, for the printed commands (default: xilinx@pynq)")
    p.set_defaults(func=run)


def run(args) -> int:
    from hwflow.deploy import pack

    r = pack(args.build, args.campaign, args.out, variant=args.variant, bitstream=args.bitstream,
             require_bitstream=not args.no_bitstream)
    size = r.path.stat().st_size / 1e6
    print(f"{r.path}: {r.variant}, {r.trials} trials of campaign {r.campaign} on {r.samples} samples, "
          f"bitstream {r.bitstream or 'none (dry run only)'} ({size:.1f} MB)")
    host, name = args.board_host, r.path.name
    print("on the board (PYNQ 3.0 image; as root, since pynq maps the device):")
    print(f"  scp {r.path} {host}:")
    print(f"  ssh {host}")
    print(f"  tar -xzf {name} && sudo ./{r.top}/run.sh --db {r.top}/results.sqlite")
    print("  (the same command resumes after a reboot or a power loss)")
    print("then, here:")
    print(f"  scp {host}:{r.top}/results.sqlite board.sqlite")
    print("  hwflow pull board.sqlite --into CAMPAIGN.sqlite    # the database of hwflow campaign")
    print("  hwflow report --db CAMPAIGN.sqlite --out report/")
    if r.bitstream is None:
        print(f"dry run here: tar -xzf {r.path} -C DIR && python -m hwflow_host DIR/{r.top} --board emulator "
              "--db board.sqlite")
    return 0
