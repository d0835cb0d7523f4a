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
    p.add_argument("--db", help="the emulator campaign's results (hwflow campaign --db): under a precision target the "
                   "board runs every trial the emulator's points grew to (default: each point's trials)")
    p.add_argument("--bitstream", help="the bitstream (default: <top>.bit under the build folder; its .hwh beside it)")
    p.add_argument("--no-bitstream", action="store_true",
                   help="pack without a bitstream: a dry-run bundle for python -m hwflow_host --board emulator")
    p.add_argument("--hls-config", metavar="FILE", help="the hls4ml configuration the build was made with "
                   "(checked: a build made with another configuration than the campaign's is refused either way)")
    p.add_argument("--board-host", default="xilinx@pynq",
                   help="user@host of the board, for the printed commands (default: xilinx@pynq)")
    p.set_defaults(func=run)


def run(args) -> int:
    from hwflow.campaign.variants import check_build_dir
    from hwflow.deploy import pack

    own, note = check_build_dir(args.build, args.campaign, args.variant, args.hls_config)  # same hls4ml config
    r = pack(args.build, args.campaign, args.out, variant=args.variant, bitstream=args.bitstream,
             require_bitstream=not args.no_bitstream, db=args.db)
    size = r.path.stat().st_size / 1e6
    from hwflow.campaign import load_spec

    if args.db is None and load_spec(args.campaign).precision is not None:
        print(f"note: campaign {r.campaign} has a precision target: this bundle runs each point's trials; give --db "
              "with the emulator campaign's results to run every trial its points grew to")
    print(f"{r.path}: {r.variant}, {r.trials} trials of campaign {r.campaign} on {r.samples} samples, "
          f"bitstream {r.bitstream or 'none (dry run only)'} ({size:.1f} MB)")
    host, name, top = args.board_host, r.path.name, r.top
    print("1. here, the bundle on the emulator of exactly this build (the reference the board is compared with):")
    print(f"   mkdir -p dryrun && tar -xzf {r.path} -C dryrun")
    print(f"   python -m hwflow_host dryrun/{top} --board emulator --name emulator --db reference.sqlite")
    if r.bitstream is None:
        print("2. on the board: deploy again from a build with a bitstream (this bundle has none)")
    else:
        print("2. on the board (PYNQ 3.0 image; as root, pynq maps the device; the same command resumes after a "
              "reboot or a power loss):")
        print(f"   scp {r.path} {host}:")
        print(f"   ssh {host}")
        print(f"   tar -xzf {name} && sudo ./{top}/run.sh --db {top}/results.sqlite")
    print("3. here, bring the results back, merge them, compare board and emulator trial by trial:")
    print(f"   scp {host}:{top}/results.sqlite board.sqlite")
    print("   hwflow pull board.sqlite --into reference.sqlite")
    print("   hwflow report --db reference.sqlite --out report/")
    layout_note = note if own else r.layout_note  # with its own hls4ml configuration, the file decides the design
    if layout_note:
        print(f"note: {layout_note}")
    else:
        print("   (this build is what hwflow campaign emulates: pulling into the campaign's database works too)")
    return 0
