"""Designs configured the way hls4ml users configure them, emulated bit for bit against the C simulation.

Three compiles: a CNN through the user's own ModelGraph (a dumped ``config_from_keras_model``
config, edited per layer: accumulator and result types with rounding and saturation, activation
types, LayerType entries, Model default, Resource with reuse factors on some layers), a project
file (io_stream, Vivado) on the MLP, and ``hwflow verify --hls-config`` on the MLP.

Accumulators that saturate are kept on Latency layers here: hls4ml's dense_resource adds products
in another order, which only a saturating accumulator sees (``test_accumulators_csim.py`` holds
that case as a strict xfail for the emulator's owner).
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from hwflow.emulator import Emulator
from tests.conftest import needs_gxx, zoo_model

pytestmark = [needs_gxx, pytest.mark.slow]
SAMPLES = 200


def cnn_config(model) -> dict:
    """What a user writes: hls4ml's per-layer dump, edited layer by layer."""
    import hls4ml

    from hwflow.convert.hls import quiet

    with quiet():
        config = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis")
    config["Model"]["Precision"]["default"] = "fixed<14,5>"
    names = config["LayerName"]
    names["conv1"]["Precision"].update(accum="fixed<14,6,RND_CONV,SAT>", result="fixed<12,5,RND,SAT>")
    names["image"]["Precision"]["result"] = "fixed<10,3,RND_CONV,SAT>"  # the input, rounded and saturated
    names["relu1"]["Precision"]["result"] = "ufixed<6,2,RND,SAT>"
    names["pool1"]["Precision"].update(accum="ufixed<8,2,TRN,SAT>", result="ufixed<6,1,RND,SAT>")
    names["conv2"].update(Strategy="Resource", ReuseFactor=8)
    names["conv2"]["Precision"]["accum"] = "fixed<20,8>"
    names["relu2"]["Precision"]["result"] = "ufixed<7,3,RND_ZERO,SAT>"
    names["out"].update(Strategy="Resource", ReuseFactor=4)
    names["out"]["Precision"]["result"] = "fixed<16,6,RND,SAT>"
    for bn in ("bn1", "bn2"):  # set by type instead: the name entries would shadow it
        del names[bn]
    config["LayerType"] = {"BatchNormalization": {"Precision": {"result": "fixed<12,4,RND_INF,SAT_SYM>",
                                                                "scale": "fixed<12,3,RND>"}}}
    return config


@pytest.fixture(scope="module")
def cnn():
    return zoo_model("cnn-digits", 8, 8, seed=3)


@pytest.fixture(scope="module")
def cnn_csim(cnn, tmp_path_factory):
    import hls4ml

    from hwflow.convert.hls import quiet
    from hwflow.verify import build_csim

    tmp = tmp_path_factory.mktemp("cfg-cnn")
    with quiet():
        graph = hls4ml.converters.convert_from_keras_model(
            cnn, hls_config=cnn_config(cnn), io_type="io_parallel", backend="Vitis", output_dir=str(tmp / "user"))
    return build_csim(None, output_dir=tmp / "hwflow", hls_model=graph)


def test_configured_cnn_equals_csim(cnn_csim, digits):
    from hwflow.verify import compare_layers

    x = digits.x_test[:SAMPLES]
    logits = Emulator(cnn_csim.program, cnn_csim.image).logits(x).reshape(len(x), -1)
    np.testing.assert_array_equal(logits, cnn_csim.csim_logits(x))
    check = compare_layers(cnn_csim, x)
    assert check.first is None, check.summary()
    assert {"conv1", "relu1", "pool1", "conv2", "out"} <= set(check.compared)


def test_configured_cnn_is_the_users_design(cnn, cnn_csim, digits, tmp_path):
    """The types and layouts are the file's, and the logits are not those of hwflow's own design."""
    from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls
    from hwflow.fixed import parse_type

    program = cnn_csim.program
    assert program.layer("conv1").accum == parse_type("fixed<14,6,RND_CONV,SAT>")
    assert program.layer("bn1").result == parse_type("fixed<12,4,RND_INF,SAT_SYM>")
    assert program.layer("relu2").result == parse_type("ufixed<7,3,RND_ZERO,SAT>")
    assert program.input.result == parse_type("fixed<10,3,RND_CONV,SAT>")
    assert program.layer("pool1").accum == parse_type("ufixed<8,2,TRN,SAT>")
    assert cnn_csim.image.get("bn2", "scale").format.fixed == parse_type("fixed<12,3,RND>")
    assert cnn_csim.image.get("conv1", "weight").axes == (0, 1, 2, 3)
    assert cnn_csim.image.get("conv2", "weight").axes == (3, 0, 1, 2)  # Resource: stored transposed
    assert cnn_csim.image.get("out", "weight").axes == (1, 0)
    assert cnn_csim.config.digest == program.source["hls_config"]
    plain = convert(cnn, HlsOptions(), tmp_path / "plain")
    x = digits.x_test[:SAMPLES]
    ours = Emulator(program, cnn_csim.image).logits(x)
    theirs = Emulator(program_from_hls(plain), image_from_hls(plain)).logits(x)
    assert np.any(ours != theirs)


def test_project_file_on_stream_and_vivado(tmp_path, digits):
    from hwflow.convert import load_hls_config, resolve_options
    from hwflow.fixed import parse_type
    from hwflow.verify import build_csim, compare_layers

    model = zoo_model("mlp-digits", 8, 8, seed=5)
    project = {
        "KerasModel": "mlp.h5", "OutputDir": "my-hls-test", "IOType": "io_stream", "Backend": "Vivado",
        "Part": "xc7z020clg400-1", "ClockPeriod": 10,
        "HLSConfig": {
            "Model": {"Precision": "fixed<12,4>", "ReuseFactor": 1, "Strategy": "Latency"},
            "LayerName": {
                "fc1": {"Precision": {"accum": "fixed<12,5,RND,SAT>", "result": "fixed<11,5,RND_MIN_INF,SAT>"}},
                "relu1": {"Precision": {"result": "ufixed<5,2,RND_CONV,SAT>"}},
                "out": {"Strategy": "Resource", "ReuseFactor": 2, "Precision": {"accum": "fixed<18,7>"}},
            },
        },
    }
    path = tmp_path / "project.yml"
    path.write_text(yaml.safe_dump(project))
    options = resolve_options(load_hls_config(path))
    assert (options.io_type.value, options.backend.value) == ("io_stream", "Vivado")
    csim = build_csim(model, options, tmp_path / "hls")
    assert csim.program.layer("fc1").accum == parse_type("fixed<12,5,RND,SAT>")
    assert csim.image.get("out", "weight").axes == (1, 0)
    x = digits.x_test[:SAMPLES]
    logits = Emulator(csim.program, csim.image).logits(x).reshape(len(x), -1)
    np.testing.assert_array_equal(logits, csim.csim_logits(x))
    check = compare_layers(csim, x)
    assert check.first is None, check.summary()


def test_verify_cli_with_a_config_file(tmp_path, capsys):
    from hwflow.cli import main

    model_path = tmp_path / "mlp.h5"
    zoo_model("mlp-digits", 8, 8, seed=7).save(model_path)
    config = {"Model": {"Precision": {"default": "fixed<14,5>"}},
              "LayerName": {"fc1": {"Precision": {"accum": "fixed<13,5,RND>"}, "Strategy": "Resource",
                                    "ReuseFactor": 8}}}
    path = tmp_path / "hls-config.yml"
    path.write_text(yaml.safe_dump(config))
    assert main(["verify", str(model_path), "--dataset", "digits", "--samples", "100", "--hls-config", str(path),
                 "--workdir", str(tmp_path / "w")]) == 0
    out = capsys.readouterr().out
    assert "verify: 100 samples" in out
    assert "0 mismatches" in out
    line = next(x for x in out.splitlines() if x.startswith("accuracy on 100"))
    assert "QKeras" in line
    assert "hls4ml configuration" in line
    assert str(path) in line
