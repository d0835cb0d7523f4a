"""hwflow build: the generated project, the manifest (contract 8), options, refusals, determinism, CLI.

Nothing here compiles C++ (tests/test_csim_board.py runs the generated design).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from hwflow.cli import main
from hwflow.convert import HlsOptions, convert, image_from_hls
from hwflow.convert.hls import Backend
from hwflow.errors import BuildError
from hwflow.fixed import Overflow, Rounding, parse_type
from hwflow.hardware.boards import load_board
from hwflow.hardware.codegen import Divide, MemoryCode, TopCode, render, top_sources
from hwflow.hardware.manifest import (
    Manifest,
    WeightMemory,
    address_range,
    assign_bases,
    lanes_for,
)
from hwflow.hardware.project import DEFAULT_MIN_WORDS, BuildOptions, generate, load_build
from hwflow.image import Scale, StoragePlan
from tests.conftest import zoo_model

HLS = HlsOptions.make("parallel", strategy="Resource", reuse_factor=8)  # fits a PYNQ-Z2
CONTRACT_KEYS = {"format", "model", "board", "part", "clock_mhz", "backend", "io_type", "top", "ip", "data",
                 "weight_memories", "weight_image", "program"}
DATA_KEYS = {"interface", "dma", "word_bits", "input_shape", "input_type", "output_shape", "output_type", "control",
             "batch_register"}
MEMORY_KEYS = {"name", "layer", "array", "port", "ctrl", "base", "range", "depth", "word_bits", "lanes", "first_word",
               "format", "scale"}
# hls4ml's own bookkeeping: a random stamp, the absolute output folder, the saved Keras model.
NOT_DETERMINISTIC = {"hls/build_lib.sh", "hls/hls4ml_config.yml", "hls/keras_model.keras"}


@pytest.fixture(scope="module")
def pynq():
    return load_board("pynq-z2")


@pytest.fixture(scope="module")
def model():
    return zoo_model("cnn-digits", 8, 8)


@pytest.fixture(scope="module")
def built(tmp_path_factory, pynq, model):
    return generate(model, pynq, tmp_path_factory.mktemp("build"), BuildOptions(HLS, name="cnn-digits"))


# --- the manifest ------------------------------------------------------------------------------------


def test_manifest_follows_contract_8(built, pynq):
    data = json.loads((built.out_dir / "manifest.json").read_text())
    assert set(data) == CONTRACT_KEYS
    assert set(data["data"]) == DATA_KEYS
    assert all(set(m) == MEMORY_KEYS for m in data["weight_memories"])
    assert (data["format"], data["model"], data["board"], data["part"], data["clock_mhz"]) == (
        1, "cnn-digits", "pynq-z2", "xc7z020clg400-1", 100.0)
    assert (data["backend"], data["io_type"], data["top"], data["ip"]) == ("Vitis", "io_parallel", "hwflow_top",
                                                                           "hwflow_top_0")
    assert data["data"] == {"interface": "axis-dma", "dma": "axi_dma_0", "word_bits": 32, "input_shape": [8, 8, 1],
                            "input_type": str(built.program.input.result), "output_shape": [10],
                            "output_type": str(built.program.output.result), "control": "s_axilite",
                            "batch_register": "n_samples"}
    assert parse_type(data["data"]["input_type"]) == parse_type("fixed<16,6>")
    assert (data["weight_image"], data["program"]) == ("weight_image.json", "program.json")
    assert (built.out_dir / "weight_image.json").is_file()
    assert (built.out_dir / "program.json").is_file()


def test_memories_are_the_large_arrays_laid_out_on_the_bus(built, pynq):
    image, memories = built.image, built.manifest.weight_memories
    assert [m.key for m in memories] == [a.key for a in image if a.size >= DEFAULT_MIN_WORDS]
    assert [m.key for m in memories] == ["conv1/weight", "conv2/weight", "out/weight"]
    expected_base = pynq.weight_base
    for m in memories:
        a = image.get(m.layer, m.array)
        assert (m.name, m.port, m.ctrl) == (a.var, f"{a.var}_mem", f"axi_bram_ctrl_{a.var}")
        assert (m.depth, m.word_bits, m.lanes, m.first_word) == (a.size, 8, 4, image.base(m.layer, m.array))
        assert (m.format, m.scale) == ("fixed<8,1,TRN,WRAP>", Scale())
        assert m.range == max(4096, 1 << (4 * -(-m.depth // 4) - 1).bit_length())
        assert m.base == -(-expected_base // m.range) * m.range  # the next multiple of its range
        expected_base = m.base + m.range
    conv2 = built.manifest.memory("conv2/weight")
    assert (conv2.base, conv2.range, conv2.bus_words) == (0x4000_1000, 4096, 288)
    assert conv2.bus_location(6) == (0x4000_1000 + 4, 16)


def test_manifest_round_trips_and_the_host_reads_it(built):
    assert Manifest.load(built.out_dir) == built.manifest
    loaded = load_build(built.out_dir)
    assert loaded.image.equal_words(built.image)
    assert loaded.program.to_json() == built.program.to_json()
    from hwflow_host import manifest as host

    theirs = host.load_manifest(built.out_dir / "manifest.json")
    theirs.check_image(built.image)
    assert [(m.key, m.base, m.range, m.lanes) for m in theirs.memories] == [
        (m.key, m.base, m.range, m.lanes) for m in built.manifest.weight_memories]


def test_manifest_refuses_overlaps_and_bad_packing(built):
    m0, m1 = built.manifest.weight_memories[:2]
    with pytest.raises(BuildError, match="overlap in bus addresses"):
        replace(built.manifest, weight_memories=(m0, replace(m1, base=m0.base)))
    with pytest.raises(BuildError, match="overlap in word addresses"):
        replace(built.manifest, weight_memories=(m0, replace(m1, first_word=m0.first_word + 1)))
    with pytest.raises(BuildError, match="lanes must be"):
        replace(built.manifest, weight_memories=(replace(m0, lanes=3),))
    with pytest.raises(BuildError, match="not aligned"):
        replace(built.manifest, weight_memories=(replace(m0, base=m0.base + 2048),))
    with pytest.raises(BuildError, match="power of two"):
        replace(built.manifest, weight_memories=(replace(m0, range=3 * 4096),))


def test_manifest_load_errors_name_the_file(tmp_path):
    with pytest.raises(BuildError, match="run 'hwflow build"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": 1, "model": "m"}')
    with pytest.raises(BuildError, match="malformed build manifest"):
        Manifest.load(tmp_path)


def test_address_arithmetic():
    assert [lanes_for(b) for b in (1, 6, 8, 12, 16, 17, 32)] == [32, 5, 4, 2, 2, 1, 1]
    with pytest.raises(BuildError, match="does not fit a 32-bit bus word"):
        lanes_for(33)
    assert [address_range(n) for n in (1, 1024, 1025, 5000)] == [4096, 4096, 8192, 32768]
    assert assign_bases([4096, 16384, 4096], 0x4000_0000, (0x4000_0000, 1 << 30)) == [
        0x4000_0000, 0x4000_4000, 0x4000_8000]
    with pytest.raises(BuildError, match="beyond the PS master window"):
        assign_bases([1 << 30, 4096], 0x4000_0000, (0x4000_0000, 1 << 30))


# --- the generated project ---------------------------------------------------------------------------


def test_bram_arrays_are_ports_of_myproject_fed_by_hwflow_top(built):
    firmware = built.hls_dir / "firmware"
    header = (firmware / "myproject.h").read_text()
    for m in built.manifest.weight_memories:
        assert f"{m.name}[{m.depth}]" in header
    params = (firmware / "parameters.h").read_text()
    assert '#include "weights/b2.h"' in params
    assert '#include "weights/w2.h"' not in params
    assert "load_weights_from_txt" not in (firmware / "myproject.cpp").read_text()  # constants compiled in
    top = (firmware / "hwflow_top.cpp").read_text()
    assert "#pragma HLS INTERFACE s_axilite port = n_samples" in top
    for m in built.manifest.weight_memories:
        assert f"#pragma HLS INTERFACE mode = bram port = {m.port} storage_type = ram_1p" in top
        assert f">({m.port}, {m.name}); // {m.key}, scale 2^0" in top
    assert "myproject(x, y, w2, w7, w12);" in top
    assert "hwflow::bus_word w7_mem[288]" in (firmware / "hwflow_top.h").read_text()
    for name in ("hwflow_axis.h", "hwflow_weights.h"):
        assert (firmware / name).is_file()
    assert (built.hls_dir / "csim" / "ap_axi_sdata.h").is_file()
    assert (built.out_dir / "build_ip.tcl").is_file()
    assert (built.out_dir / "block_design.tcl").is_file()


def test_generation_is_deterministic(built, tmp_path, pynq, model):
    again = generate(model, pynq, tmp_path / "again", BuildOptions(HLS, name="cnn-digits"))
    first = {p.relative_to(built.out_dir).as_posix(): p for p in built.out_dir.rglob("*")
             if p.is_file() and p.suffix != ".so"}
    second = {p.relative_to(again.out_dir).as_posix(): p for p in again.out_dir.rglob("*") if p.is_file()}
    assert set(first) == set(second)
    differ = sorted(k for k in first if first[k].read_bytes() != second[k].read_bytes())
    assert set(differ) <= NOT_DETERMINISTIC, differ


def test_options_choose_the_memories(tmp_path, pynq, model):
    every = generate(model, pynq, tmp_path / "every", BuildOptions(HLS, min_words=1))
    assert every.manifest.keys == tuple(a.key for a in every.image)
    assert [m.lanes for m in every.manifest.weight_memories if m.array == "scale"] == [2, 2]  # fixed<16,6>
    chosen = generate(model, pynq, tmp_path / "two", BuildOptions(HLS, memories=("out/weight", "conv1/bias")))
    assert chosen.manifest.keys == ("conv1/bias", "out/weight")  # image order
    with pytest.raises(BuildError, match="no weight array conv9/weight"):
        generate(model, pynq, tmp_path / "bad", BuildOptions(HLS, memories=("conv9/weight",)))
    with pytest.raises(BuildError, match="lower --min-words"):
        generate(model, pynq, tmp_path / "none", BuildOptions(HLS, min_words=100_000))
    with pytest.raises(BuildError, match="positive integer"):
        BuildOptions(HLS, min_words=0)


def test_scaled_arrays_go_to_bram_with_their_divide_back(tmp_path, pynq, model):
    image = image_from_hls(convert(model, HLS, tmp_path / "plain"))
    plan = StoragePlan("fixed", {"conv1/bias": Scale(2), "out/weight": Scale(0, 1.5)}, "constant")
    build = generate(model, pynq, tmp_path / "scaled", BuildOptions(HLS), storage=plan)
    mem = {m.key: m for m in build.manifest.weight_memories}
    assert mem["conv1/bias"].scale == Scale(2)  # 8 words, below min_words, in BRAM anyway
    assert mem["conv1/bias"].format == str(image.get("conv1", "bias").format)  # the stored (trained) type
    assert mem["out/weight"].scale == Scale(0, 1.5)
    header = (build.hls_dir / "firmware" / "hwflow_top.h").read_text()
    assert "typedef ap_ufixed<18,1,AP_RND,AP_SAT> w12_q_t;" in header
    assert "typedef ap_fixed<8,1,AP_RND,AP_SAT> w12_compute_t;" in header
    top = (build.hls_dir / "firmware" / "hwflow_top.cpp").read_text()
    divided = "hwflow::unpack_divided<weight12_t, w12_stored_t, w12_q_t, w12_compute_t, 8, 4, 160, 87381UL>"
    assert divided in top  # q = 87381 * 2^-17 ~ 1 / 1.5
    assert "hwflow::unpack_words<bias2_t, 8, 4, 8>(b2_mem, b2);" in top  # shift: a reinterpretation
    with pytest.raises(BuildError, match="must be in a weight memory"):
        generate(model, pynq, tmp_path / "left", BuildOptions(HLS, memories=("conv2/weight",)), storage=plan)


def test_refusals(tmp_path, pynq, model):
    with pytest.raises(BuildError, match="does not fit pynq-z2"):
        generate(model, pynq, tmp_path / "big", BuildOptions(HlsOptions()))  # Latency, reuse factor 1
    assert not (tmp_path / "big" / "manifest.json").exists()
    with pytest.raises(BuildError, match="axis-dma"):
        generate(model, load_board("alveo-u250"), tmp_path / "alveo", BuildOptions(HLS))
    image = image_from_hls(convert(model, HLS, tmp_path / "p"))
    with pytest.raises(BuildError, match="float weight storage cannot be built"):
        generate(model, pynq, tmp_path / "f16", BuildOptions(HLS),
                 storage=StoragePlan("float16", {a.key: Scale() for a in image}))


def test_vivado_backend_uses_its_pragmas(tmp_path, pynq, model):
    build = generate(model, pynq, tmp_path / "vivado", BuildOptions(replace(HLS, backend=Backend.VIVADO)))
    top = (build.hls_dir / "firmware" / "hwflow_top.cpp").read_text()
    assert "#pragma HLS INTERFACE bram port = w7_mem" in top
    assert "#pragma HLS RESOURCE variable = w7_mem core = RAM_1P_BRAM" in top
    assert "#define HWFLOW_VITIS 0" in (build.hls_dir / "firmware" / "hwflow_top.h").read_text()
    assert build.manifest.backend == "Vivado"


# --- templates ----------------------------------------------------------------------------------------


def _code(**kw) -> TopCode:
    memory = WeightMemory("w2", "fc", "weight", "w2_mem", "axi_bram_ctrl_w2", 0x4000_0000, 4096, 12, 6, 5, 0,
                          "fixed<6,1,TRN,WRAP>", Scale(0, 1.5))
    t = parse_type("fixed<6,1>")
    divide = Divide(t, parse_type("ufixed<18,1>"), 174763, replace(t, rounding=Rounding.RND, overflow=Overflow.SAT))
    fields = {"model": "m", "board": "b", "io_type": "io_stream", "backend": "Vitis", "project": "myproject",
              "input_t": "input_t", "result_t": "result_t", "n_in": 8, "n_out": 3, "input_pack": 2, "output_pack": 3,
              "memories": (MemoryCode(memory, "weight2_t", divide),), "call_order": ("w2",)}
    return TopCode(**{**fields, **kw})


def test_templates_are_filled_from_values():
    files = top_sources(_code())
    assert set(files) == {"firmware/hwflow_top.h", "firmware/hwflow_top.cpp", "hwflow_csim_bridge.cpp"}
    assert "$" not in "".join(files.values())
    top = files["firmware/hwflow_top.cpp"]
    divided = "hwflow::unpack_divided<weight2_t, w2_stored_t, w2_q_t, w2_compute_t, 6, 5, 12, 174763UL>(w2_mem, w2);"
    assert divided in top
    assert "#pragma HLS STREAM variable = x depth = 4" in top
    assert "#define HWFLOW_IO_STREAM 1" in files["firmware/hwflow_top.h"]
    assert '{"w2", 0x40000000ULL, 0x1000ULL, 0ULL, 12ULL, 6, 5, 3, w2_mem},' in files["hwflow_csim_bridge.cpp"]
    with pytest.raises(BuildError, match="takes weight arrays"):
        top_sources(_code(call_order=("w2", "w5")))
    with pytest.raises(BuildError, match="no weight memory"):
        top_sources(_code(memories=(), call_order=()))
    with pytest.raises(BuildError, match="placeholder 'board'"):
        render("hwflow_top.h.in", {"model": "m"})


# --- CLI -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("model") / "cnn-digits.h5"
    model.save(path)
    return path


def test_cli_build_and_synth_without_tools(model_file, tmp_path, capsys, monkeypatch):
    args = [str(model_file), "--board", "pynq-z2", "--strategy", "Resource", "--reuse-factor", "8"]
    assert main(["build", *args, "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "3 weight memories (1384 of 1466 words)" in out
    assert "hls4ml constants" in out
    assert Manifest.load(tmp_path / "b").model == "cnn-digits"
    monkeypatch.setattr("hwflow.hardware.vivado.shutil.which", lambda name: None)
    assert main(["build", *args, "--out", str(tmp_path / "s"), "--synth"]) == 3
    err = capsys.readouterr().err
    assert "needs vitis_hls and vivado" in err
    assert "vitis_hls -f build_ip.tcl" in err
    assert (tmp_path / "s" / "manifest.json").is_file()


def test_cli_build_takes_the_storage_plan_from_the_sidecar(model, tmp_path, capsys):
    from hwflow.zoo.loading import write_sidecar

    path = tmp_path / "scaled.h5"
    model.save(path)
    plan = StoragePlan("fixed", {"conv2/weight": Scale(1), "out/weight": Scale(0, 1.25)}, "constant")
    write_sidecar(path, {"dataset": "digits", "hardening": {"methods": ["scale"], "scale": plan.to_json()}})
    assert main(["build", str(path), "--board", "pynq-z2", "--out", str(tmp_path / "b"), "--strategy", "Resource",
                 "--reuse-factor", "8"]) == 0
    capsys.readouterr()
    scales = {m.key: m.scale for m in Manifest.load(tmp_path / "b").weight_memories}
    assert scales == {"conv1/weight": Scale(), "conv2/weight": Scale(1), "out/weight": Scale(0, 1.25)}


def test_cli_build_errors(model_file, tmp_path, capsys):
    assert main(["build", str(model_file), "--board", "nope", "--out", str(tmp_path)]) == 2
    assert "known boards are" in capsys.readouterr().err
    assert main(["build", str(model_file), "--board", "pynq-z2", "--out", str(tmp_path), "--min-words", "4",
                 "--memories", "out/weight"]) == 2
    assert "not both" in capsys.readouterr().err
    assert not (tmp_path / "manifest.json").exists()
