"""The hardware build of a residual network: its C simulation (the C-sim board) equals the emulator.

A small ResNet-8 (the zoo's ``resnet8`` topology at 8x8x3 with 4/8 filters: a stem, an identity stack,
a strided stack with a 1x1 strided shortcut convolution, batch norms, average pooling, dense) built as
the PYNQ-Z2 fitting options build ``resnet8``: io_stream, Resource, every array in BRAM behind the host
port, a FIFO depth limit, and narrower batch-norm and Add types from an hls4ml configuration. The
global reuse factor 8 is above the shortcut's ``n_in`` (4 channels): hls4ml's ``rf_gt_nin_rem0``
kernel on a 1x1 convolution, the case hls4ml re-creates without checking. Compiled once for the module.
Faults are written through the board's weight port as the host writes them.
"""

from __future__ import annotations

import numpy as np
import pytest

from hwflow.convert import HlsOptions
from hwflow.convert.hls_config import load_hls_config, parse_hls_config, resolve_options
from hwflow.emulator import Emulator, Kind
from hwflow.errors import BuildError
from hwflow.hardware.boards import load_board
from hwflow.hardware.csim_board import CSimBoard, board_image, check_board, sample_fault_maps
from hwflow.hardware.project import BuildOptions, check_resources, generate
from tests.conftest import needs_gxx, random_bn_statistics

SAMPLES = 24
FIFO_DEPTH = 4
NARROW = "fixed<12,5,RND,SAT>"


def mini_resnet8(seed: int = 0):
    """ResNet-8's structure at 8x8x3: stem, identity stack (4 filters), strided stack (8 filters, 1x1 strided
    shortcut), average pooling, dense 3; 8-bit QKeras; batch norms with random statistics (so they act)."""
    import tensorflow as tf
    from qkeras import QActivation, QConv2D, QDense, quantized_bits, quantized_relu

    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    q = {"kernel_quantizer": quantized_bits(8, 0, alpha=1), "bias_quantizer": quantized_bits(8, 0, alpha=1)}

    def conv(name, filters, size, strides=1):
        return QConv2D(filters, size, strides=strides, padding="same", name=name, **q)

    def relu(name):
        return QActivation(quantized_relu(8, 3), name=name)

    inp = layers.Input((8, 8, 3), name="image")
    x = relu("relu1")(layers.BatchNormalization(name="bn1")(conv("conv1", 4, 3)(inp)))
    y = relu("s1_relu1")(layers.BatchNormalization(name="s1_bn1")(conv("s1_conv1", 4, 3)(x)))
    y = layers.BatchNormalization(name="s1_bn2")(conv("s1_conv2", 4, 3)(y))
    x = relu("s1_relu")(layers.Add(name="s1_add")([x, y]))  # identity shortcut
    y = relu("s2_relu1")(layers.BatchNormalization(name="s2_bn1")(conv("s2_conv1", 8, 3, strides=2)(x)))
    y = layers.BatchNormalization(name="s2_bn2")(conv("s2_conv2", 8, 3)(y))
    x = relu("s2_relu")(layers.Add(name="s2_add")([conv("s2_shortcut", 8, 1, strides=2)(x), y]))
    x = layers.Flatten(name="flatten")(layers.AveragePooling2D(4, name="pool")(x))
    model = tf.keras.Model(inp, QDense(3, name="out", **q)(x), name="mini_resnet8")
    return random_bn_statistics(model, seed)


def narrow_options(model, reuse: int) -> HlsOptions:
    """As ``examples/resnet8-pynq-z2.yml`` is made: hls4ml's ``config_from_keras_model(granularity='name')``
    (which keeps the QKeras types), Resource, ``reuse``, the batch norms and Adds in ``NARROW``."""
    import hls4ml

    config = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis")
    config["Model"].update(ReuseFactor=reuse, Strategy="Resource")
    for name, entry in config["LayerName"].items():
        entry.pop("ReuseFactor", None)
        if "bn" in name or name.endswith("_add"):
            entry["Precision"]["result"] = NARROW
    return resolve_options(parse_hls_config(config), io="stream")


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1).uniform(-1, 2, (SAMPLES, 8, 8, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("mini-resnet8")
    model = mini_resnet8()
    build = generate(model, load_board("pynq-z2"), out,
                     BuildOptions(narrow_options(model, 8), min_words=1, fifo_depth=FIFO_DEPTH))
    return build, out


@pytest.fixture(scope="module")
def board(built):
    return CSimBoard(built[1])


def test_the_build_is_the_residual_design_it_claims(built):
    """Every array in BRAM, the shortcut convolution and the merges in the Program, the narrow types taken,
    the FIFOs limited except the branches' copies (hls4ml's Clone outputs keep their depth)."""
    build, out = built
    program = build.program
    assert set(build.manifest.keys) == {a.key for a in build.image}
    assert program.layer("s2_add").kind is Kind.MERGE
    assert program.layer("s2_add").inputs == ("s2_shortcut", "s2_bn2")
    assert program.layer("s1_add").inputs == ("relu1", "s1_bn2")
    assert str(program.layer("s2_add").result) == NARROW
    assert str(program.layer("s1_bn1").result) == NARROW
    assert str(program.layer("s2_relu").result) == "ufixed<8,3,RND_CONV,SAT>"  # the QKeras quantizer's, kept
    assert program.layer("s2_shortcut").attrs["reuse_factor"] == 8  # above n_in = 4: rf_gt_nin_rem0
    source = (out / "hls" / "firmware" / "myproject.cpp").read_text()
    depths = dict(line.split("variable=")[1].split(" depth=") for line in source.splitlines()
                  if "#pragma HLS STREAM" in line)
    copies = {name: int(d) for name, d in depths.items() if "_cpy" in name}
    assert copies
    assert all(d > FIFO_DEPTH for d in copies.values())
    assert all(int(d) <= FIFO_DEPTH for name, d in depths.items() if name not in copies)


@pytest.mark.slow
@needs_gxx
def test_fault_free_and_fault_maps_equal_the_emulator(built, board, x):
    """Fault-free, then 30 maps (bit flips and stuck-at) over every array, written through the weight port."""
    build, _ = built
    emulator = Emulator(build.program, build.image)
    np.testing.assert_array_equal(board.run(x), emulator.run(x))
    maps = sample_fault_maps(board_image(build.image, build.manifest), 30, seed=5)
    check = check_board(board, build.program, build.image, x, maps)
    assert check.ok, check.summary()
    assert check.maps == 30
    assert check.words_written > 0
    clean = emulator.run(x)
    reached = sum(not np.array_equal(emulator.with_arrays(m.apply(build.image), m.keys_touched()).run(x), clean)
                  for m in maps)
    assert reached >= 5  # the maps do reach the outputs: the comparison is not vacuous


def test_a_reuse_factor_hls4ml_has_no_kernel_for_is_refused_before_anything_is_written(tmp_path):
    """Global reuse factor 12: hls4ml re-creates the 1x1 shortcut (4 x 8 kernel) with it unchecked; 12 does not
    divide 32. Refused naming the layer and a reuse factor that works, before the project is written."""
    with pytest.raises(BuildError) as err:
        generate(mini_resnet8(), load_board("pynq-z2"), tmp_path, BuildOptions(HlsOptions.make("stream", "Vitis",
                                                                                              "Resource", 12)))
    message = str(err.value)
    assert "layer 's2_shortcut' (PointwiseConv2D, n_in 4, n_out 8)" in message
    assert "cannot run reuse factor 12: it does not divide n_in * n_out (32)" in message
    assert "use reuse factor 8 for this layer" in message
    assert not (tmp_path / "manifest.json").exists()
    assert not (tmp_path / "hls" / "firmware" / "myproject.cpp").exists()


def test_a_fifo_depth_is_refused_in_io_parallel(tmp_path):
    with pytest.raises(BuildError, match="applies to io_stream designs only"):
        generate(mini_resnet8(), load_board("pynq-z2"), tmp_path,
                 BuildOptions(HlsOptions.make("parallel", "Vitis", "Resource", 8), fifo_depth=4))
    with pytest.raises(BuildError, match="fifo_depth must be a positive integer"):
        BuildOptions(fifo_depth=0)


# --- the zoo's resnet8 and rn07, built with the options that make them fit a PYNQ-Z2 ----------------------

RESNET8_CONFIG = "examples/resnet8-pynq-z2.yml"
FITTING = {  # model -> (options, fifo depth): what README's build section and docs/zoo.md document
    "resnet8": (lambda: resolve_options(load_hls_config(RESNET8_CONFIG), io="stream"), 32),
    "rn07": (lambda: HlsOptions.make("stream", "Vitis", "Resource", 16384), 64),
}


@pytest.fixture(scope="module", params=sorted(FITTING))
def zoo_build(request, tmp_path_factory):
    """The zoo model (untrained, batch norms with random statistics) built for the PYNQ-Z2 with its fitting
    options; ``generate`` refuses a design the estimate says does not fit."""
    from tests.conftest import zoo_model

    name = request.param
    options, depth = FITTING[name]
    out = tmp_path_factory.mktemp(name)
    board = load_board("pynq-z2")
    build = generate(zoo_model(name, 8, 8), board, out, BuildOptions(options(), fifo_depth=depth))
    usage = check_resources(build.program, build.image, board, options(), build.manifest, depth)
    return name, build, out, usage


def test_resnet8_and_rn07_fit_a_pynq_z2_with_the_documented_options(zoo_build):
    name, build, _, usage = zoo_build
    board = load_board("pynq-z2")
    assert usage.bram36 <= 0.9 * board.bram36
    assert usage.dsp <= 0.9 * board.dsp
    assert usage.lut <= 0.9 * board.lut
    assert usage.ff <= 0.9 * board.ff
    assert build.manifest.io_type == "io_stream"
    if name == "resnet8":  # the residual stacks are there, with their 1x1 shortcuts
        assert build.program.layer("s3_add").kind is Kind.MERGE
        assert "s3_shortcut" in build.program.layer("s3_add").inputs


def test_without_the_options_they_do_not_fit(tmp_path):
    """hls4ml's defaults (FIFOs as deep as the layers have pixels, its wide batch-norm types) are refused."""
    from tests.conftest import zoo_model

    with pytest.raises(BuildError, match=r"does not fit pynq-z2 .*needs [\d.]+ BRAM36"):
        generate(zoo_model("resnet8", 8, 8), load_board("pynq-z2"), tmp_path,
                 BuildOptions(HlsOptions.make("stream", "Vitis", "Resource", 512)))


@pytest.mark.slow
@needs_gxx
def test_the_zoo_builds_csim_equals_the_emulator_under_fault_maps(zoo_build):
    """The built resnet8 / rn07 themselves (C simulation of the fitting design, weights in BRAM): fault-free
    and 8 maps over the arrays in BRAM, written through the weight port."""
    name, build, out, _ = zoo_build
    xb = np.random.default_rng(3).uniform(0, 1, (6, 32, 32, 3)).astype(np.float32)
    maps = sample_fault_maps(board_image(build.image, build.manifest), 8, seed=11)
    check = check_board(CSimBoard(out), build.program, build.image, xb, maps)
    assert check.ok, f"{name}: {check.summary()}"
    assert check.words_written > 0


@pytest.mark.parametrize(("name", "options"), [
    ("rn07", ["--io", "stream", "--strategy", "Resource", "--reuse-factor", "16384", "--fifo-depth", "64"]),
    ("resnet8", ["--io", "stream", "--hls-config", RESNET8_CONFIG, "--fifo-depth", "32"]),
])
def test_the_documented_command_lines_build(tmp_path, capsys, name, options):
    """``hwflow build`` with the options README and docs/zoo.md give (no compile: the project is written)."""
    from hwflow.cli import main
    from tests.conftest import zoo_model

    path = tmp_path / f"{name}.h5"
    zoo_model(name, 8, 8).save(path)
    out = tmp_path / "build"
    assert main(["build", str(path), "--board", "pynq-z2", *options, "--out", str(out)]) == 0
    assert f"build: {name} for pynq-z2" in capsys.readouterr().out
    source = (out / "hls" / "firmware" / "myproject.cpp").read_text()
    depth = int(options[-1])
    assert f"depth={depth}\n" in source
    assert not [line for line in source.splitlines() if "#pragma HLS STREAM" in line and "_cpy" not in line
                and int(line.rsplit("depth=", 1)[1]) > depth]
