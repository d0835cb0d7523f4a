"""``hwflow build MODEL --board B --out DIR``: the HLS project with host-writable weight memories.

Exit codes: 0 the project (and, with ``--synth``, the overlay) was written; 2 an error (nothing
usable written, the message says why); 3 ``--synth`` was asked but Vitis HLS / Vivado are not on
the PATH: the project and scripts are written, the message says what to run on a machine with them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hwflow.cli.args import add_hls_options, config_line, hls_options, positive

EXIT_NO_TOOLS = 3


def add_parser(sub) -> None:
    p = sub.add_parser(
        "build",
        help="generate the HLS project, manifest and Vivado scripts for a board",
        description="Convert MODEL with hls4ml and write an HLS project whose weight arrays live in BRAM the "
        "board's host can read and write (the stored words the emulator faults), with hwflow_top (AXI-Stream "
        "in/out, one BRAM port per weight memory), manifest.json, the WeightImage bundle, program.json and "
        "the Vivado scripts. The final softmax is removed: the outputs are the logits. Exit 0 when written, "
        "2 on error, 3 when --synth is asked but the tools are missing (the project is written).",
    )
    p.add_argument("model", help="QKeras model file (.h5); a hardened model's sidecar brings its storage plan")
    p.add_argument("--board", required=True, help="board name (boards/<name>/board.yaml), e.g. pynq-z2")
    p.add_argument("--out", type=Path, required=True, help="build folder to write")
    add_hls_options(p)
    p.add_argument("--min-words", type=positive, default=None,
                   help="arrays with at least this many words go to BRAM (default 64); smaller ones stay "
                   "hls4ml constants: not in the manifest, no faults injected into them on the board. Arrays "
                   "stored scaled (a hardened model's weight scaling) always go to BRAM, whatever --min-words "
                   "says: their divide-back is done when the words are read")
    p.add_argument("--memories", help="comma-separated layer/array keys to put in BRAM instead (e.g. "
                   "conv1/weight,out/weight)")
    p.add_argument("--name", help="model name in the manifest (default: the file name)")
    p.add_argument("--fifo-depth", type=positive, default=None,
                   help="io_stream: every layer's output FIFO at most this many words deep (default: hls4ml's, as "
                   "deep as the layer has pixels); a branch's copies keep hls4ml's depth. C simulation cannot "
                   "tell a FIFO too shallow: confirm with co-simulation before a board run")
    p.add_argument("--synth", action="store_true", help="run Vitis HLS and Vivado when they are on the PATH")
    p.set_defaults(func=run)


def build_options(args, name: str | None = None):
    """BuildOptions from the shared options (io, backend, strategy, reuse factor, min words, memories)."""
    from hwflow.errors import BuildError
    from hwflow.hardware.project import DEFAULT_MIN_WORDS, BuildOptions

    memories = getattr(args, "memories", None)
    min_words = getattr(args, "min_words", None)
    if memories and min_words is not None:
        msg = "give --min-words or --memories, not both"
        raise BuildError(msg)
    keys = tuple(k.strip() for k in memories.split(",") if k.strip()) if memories else None
    return BuildOptions(hls_options(args), min_words or DEFAULT_MIN_WORDS, keys, name,
                        fifo_depth=getattr(args, "fifo_depth", None))


def load_for_build(path: str):
    """The model and the storage plan of its sidecar (``hardening.scale``), or None."""
    from hwflow.harden.pipeline import load_hardened

    hardened = load_hardened(path)
    return hardened.model, hardened.storage


def run(args) -> int:
    from hwflow.errors import ToolMissingError
    from hwflow.hardware.boards import load_board
    from hwflow.hardware.project import generate
    from hwflow.hardware.vivado import synthesis_command, synthesize

    board = load_board(args.board)
    options = build_options(args, args.name or Path(args.model).stem)
    model, storage = load_for_build(args.model)
    build = generate(model, board, args.out, options, storage=storage)
    m = build.manifest
    words = sum(mem.depth for mem in m.weight_memories)
    constants = [a.key for a in build.image if a.key not in m.keys]
    print(f"build: {m.model} for {m.board} ({m.part}, {m.clock_mhz:g} MHz), {m.backend} {m.io_type}: "
          f"{len(m.weight_memories)} weight memories ({words} of {build.image.total_words} words) in {args.out}")
    if constants:
        print(f"       hls4ml constants (not host-writable, no faults on the board): {', '.join(constants)}")
    print(f"       {config_line(getattr(build.hls_model, 'hwflow_config', None))}")
    if not args.synth:
        print(f"       synthesize: {synthesis_command(args.out)}")
        return 0
    try:
        synthesize(args.out, board)
    except ToolMissingError as err:
        print(f"hwflow build: the project is written, synthesis skipped: {err}", file=sys.stderr)
        return EXIT_NO_TOOLS
    print(f"build: overlay written in {args.out}")
    return 0


def verify_board(args, model_path: str, x) -> int:
    """``hwflow verify --target csim-board``: build, compile the design's C simulation, compare with the
    emulator fault-free and under ``--fault-maps`` maps; exit 0 only when every output is equal."""
    import tempfile

    from hwflow.hardware.boards import load_board
    from hwflow.hardware.csim_board import check_build
    from hwflow.hardware.project import generate

    board = load_board(args.board)
    model, storage = load_for_build(model_path)
    out = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="hwflow-build-"))
    generate(model, board, out, build_options(args, Path(model_path).stem), storage=storage)
    result = check_build(out, x, args.fault_maps)
    print(result.summary())
    return 0 if result.ok else 1
