"""Fill hwflow's C++ templates (``hls/templates``): the top-level wrapper and the C-simulation bridge.

One way of generating C++: template files with named ``${placeholders}`` (Python's
``string.Template``), filled with values; a list (one line per weight memory) is a small row
template under ``hls/templates/rows`` rendered once per memory. No C++ is assembled in Python
strings, and a placeholder without a value is an error, not an empty string.

This module knows nothing of hls4ml: ``project.py`` reads the converted graph and hands over a
:class:`TopCode`, so the generated text can be tested from plain values.
"""

from __future__ import annotations

import shutil
import string
from dataclasses import dataclass
from pathlib import Path

from hwflow.errors import BuildError
from hwflow.fixed import FixedType
from hwflow.hardware.manifest import WeightMemory
from hwflow.image.formats import Scale

HLS_DIR = Path(__file__).resolve().parents[2] / "hls"
"""hwflow's own HLS sources (static headers and templates), beside the Python package."""
TEMPLATES = HLS_DIR / "templates"
STATIC_HEADERS = ("hwflow_axis.h", "hwflow_weights.h")
"""Copied as they are into the project's ``firmware/`` (synthesis and C simulation)."""
CSIM_HEADERS = ("csim/ap_axi_sdata.h",)
"""Copied into the project's ``csim/``: on the include path of the g++ C simulation only."""


@dataclass(frozen=True)
class Divide:
    """The constant-scale divide-back of one memory: ``w = (C)(S word * q)`` (contract 7)."""

    stored: FixedType
    """``S``: the type of the stored word."""
    q: FixedType
    """``ufixed<18,E>``."""
    q_code: int
    """Integer code of ``q = 1/c`` in ``q``."""
    compute: FixedType
    """``C``: the type the product is cast to (round to nearest, saturate)."""


@dataclass(frozen=True)
class MemoryCode:
    """What the generated code needs about one weight memory."""

    memory: WeightMemory
    type: str
    """hls4ml's C++ type name of the weight array (``weight2_t``)."""
    divide: Divide | None = None
    """``None``: the stored bits are read as ``type`` (no scale, or a power of two)."""


@dataclass(frozen=True)
class TopCode:
    """Everything the wrapper and the bridge are generated from."""

    model: str
    board: str
    io_type: str
    """``io_parallel`` or ``io_stream``."""
    backend: str
    """``Vitis`` or ``Vivado``."""
    project: str
    """hls4ml's top function (``myproject``)."""
    input_t: str
    """hls4ml's C++ type of the input (an element, or a packed ``nnet::array`` for io_stream)."""
    result_t: str
    n_in: int
    n_out: int
    input_pack: int
    """Elements per input stream transaction (io_stream); 1 for io_parallel."""
    output_pack: int
    memories: tuple[MemoryCode, ...]
    """In WeightImage order (the order of the ports of ``hwflow_top``)."""
    call_order: tuple[str, ...]
    """Variable names of the weight arrays in the order of ``myproject``'s parameters."""


def render(name: str, values: dict) -> str:
    """Fill template ``hls/templates/<name>``; every placeholder must have a value."""
    path = TEMPLATES / name
    try:
        return string.Template(path.read_text()).substitute(values)
    except KeyError as err:
        msg = f"template {path} has a placeholder {err} that hwflow does not fill (a bug in hwflow's build)"
        raise BuildError(msg) from None
    except OSError as err:
        msg = f"cannot read the HLS template {path} ({err}); is the hwflow source tree complete?"
        raise BuildError(msg) from None


def render_rows(name: str, rows: list[dict], sep: str = "\n") -> str:
    """One rendering of row template ``rows/<name>`` per row, joined by ``sep``."""
    return sep.join(render(f"rows/{name}", row).rstrip("\n") for row in rows)


def _scale_text(scale: Scale) -> str:
    return f"2^{scale.shift}" if scale.constant is None else f"{scale.constant!r}"


def _memory_values(code: MemoryCode) -> dict:
    m = code.memory
    values = {
        "name": m.name, "var": m.name, "port": m.port, "key": m.key, "upper": m.name.upper(), "type": code.type,
        "depth": m.depth, "word_bits": m.word_bits, "lanes": m.lanes, "bus_words": m.bus_words,
        "base": f"{m.base:#x}", "range": f"{m.range:#x}", "first_word": m.first_word, "format": m.format,
        "scale": _scale_text(m.scale),
    }
    if code.divide is not None:
        d = code.divide
        values.update(stored=d.stored.cpp(), q=d.q.cpp(), q_code=d.q_code, compute=d.compute.cpp(),
                      q_value=repr(d.q.to_float(d.q_code).item()))
    return values


def _decoder(code: MemoryCode) -> str:
    """The row template that decodes one memory's words into hls4ml's array."""
    if code.memory.format.startswith("exponent<"):  # po2 words into hls4ml's {sign, weight} struct
        return "decode_exponents"
    return "decode_divided" if code.divide else "decode_words"


def top_sources(code: TopCode) -> dict[str, str]:
    """The generated files, by path relative to the hls4ml project: the wrapper and the C-sim bridge."""
    if code.backend not in ("Vitis", "Vivado"):
        msg = f"unknown HLS backend {code.backend!r}: use Vitis or Vivado"
        raise BuildError(msg)
    if not code.memories:
        msg = "the design has no weight memory (nothing for the host to write): lower --min-words"
        raise BuildError(msg)
    rows = [_memory_values(m) for m in code.memories]
    by_var = {m.memory.name: m for m in code.memories}
    if sorted(code.call_order) != sorted(by_var):
        msg = (f"hls4ml's {code.project} takes weight arrays {list(code.call_order)}, but the build put "
               f"{list(by_var)} in BRAM (a bug in hwflow's build)")
        raise BuildError(msg)
    decode = [render(f"rows/{_decoder(m)}.in", r).rstrip("\n") for m, r in zip(code.memories, rows, strict=True)]
    divided = [r for m, r in zip(code.memories, rows, strict=True) if m.divide is not None]
    common = {
        "model": code.model, "board": code.board, "io_type": code.io_type, "backend": code.backend,
        "project": code.project, "vitis": int(code.backend == "Vitis"),
        "io_stream": int(code.io_type == "io_stream"), "n_in": code.n_in, "n_out": code.n_out,
        "input_t": code.input_t, "result_t": code.result_t,
        "input_packs": code.n_in // code.input_pack, "output_packs": code.n_out // code.output_pack,
        "memory_params": render_rows("memory_param.in", rows, sep=""),
        "memory_args": render_rows("memory_arg.in", rows, sep=""),
        "n_memories": len(rows),
    }
    header = render("hwflow_top.h.in", {
        **common,
        "memory_defines": render_rows("memory_define.in", rows),
        "divide_types": render_rows("divide_types.in", divided) if divided else "// (none)",
    })
    source = render("hwflow_top.cpp.in", {
        **common,
        "memory_pragmas": render_rows(f"memory_pragma_{code.backend.lower()}.in", rows),
        "weight_decls": render_rows("weight_decl.in", rows),
        "weight_decode": "\n".join(decode),
        "weight_args": ", ".join(code.call_order),
    })
    bridge = render("hwflow_csim_bridge.cpp.in", {
        **common,
        "memory_arrays": render_rows("csim_memory_array.in", rows),
        "memory_table": render_rows("csim_memory_row.in", rows),
    })
    return {"firmware/hwflow_top.h": header, "firmware/hwflow_top.cpp": source, "hwflow_csim_bridge.cpp": bridge}


def write_sources(code: TopCode, project_dir: str | Path) -> list[Path]:
    """Write the generated files and copy hwflow's static headers into the hls4ml project."""
    root = Path(project_dir)
    written = []
    for rel, text in top_sources(code).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    for rel, dest in [(h, f"firmware/{h}") for h in STATIC_HEADERS] + [(h, h) for h in CSIM_HEADERS]:
        target = root / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HLS_DIR / rel, target)
        written.append(target)
    return written
