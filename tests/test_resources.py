"""The resource estimate: its rules on synthetic designs (exact numbers), and the zoo on a PYNQ-Z2."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hwflow.convert import HlsOptions
from hwflow.emulator.program import Kind, LayerSpec, Program
from hwflow.errors import BuildError
from hwflow.fixed import parse_type
from hwflow.hardware.boards import load_board
from hwflow.hardware.resources import (
    BRAM_CTRL,
    DMA,
    LUT_PER_PRODUCT_BIT,
    MEMORY_PORT,
    ResourceEstimate,
    Usage,
    check_fits,
    estimate,
    memory_range,
)
from hwflow.image import Scale, StorageFormat, StoredArray, WeightImage
from tests.conftest import zoo_model


def dense_design(n_in: int, n_out: int, weight_type: str = "fixed<8,1>", scale: Scale | None = None):
    """A synthetic one-layer network: input (n_in,) -> Dense(n_out), 16-bit input, 8-bit weights."""
    layers = (
        LayerSpec("image", Kind.INPUT, (), (n_in,), parse_type("fixed<16,6>")),
        LayerSpec("fc", Kind.DENSE, ("image",), (n_out,), parse_type("fixed<24,12>"), parse_type("fixed<30,14>")),
    )
    fmt = StorageFormat.parse(weight_type)
    arrays = (
        StoredArray("fc", "weight", "w2", (n_in, n_out), (0, 1), fmt, scale or Scale(0),
                    np.zeros(n_in * n_out, dtype=np.uint64)),
        StoredArray("fc", "bias", "b2", (n_out,), (0,), fmt, Scale(0), np.zeros(n_out, dtype=np.uint64)),
    )
    return Program(layers), WeightImage(arrays)


def by_name(estimate_: ResourceEstimate, prefix: str) -> Usage:
    (usage,) = [u for u in estimate_.items if u.what.startswith(prefix)]
    return usage


@pytest.mark.parametrize(
    ("depth", "bits", "expected"),
    [(1, 8, 4096), (144, 8, 4096), (4096, 8, 4096), (4097, 8, 8192), (10000, 8, 16384), (1024, 32, 4096),
     (1025, 32, 8192), (3000, 16, 8192), (262144, 8, 262144)],
)
def test_memory_range_is_the_power_of_two_holding_the_bus_words(depth, bits, expected):
    assert memory_range(depth, bits) == expected


def test_each_weight_memory_is_range_over_4096_bram36_behind_a_controller():
    program, image = dense_design(64, 128)  # 8192 weights of 8 bits: 2048 bus words -> 8 KiB
    usage = estimate(program, image, HlsOptions.make("parallel", "Vitis", "Resource", 64))
    weight, bias = by_name(usage, "weight memory fc/weight"), by_name(usage, "weight memory fc/bias")
    assert (weight.bram36, bias.bram36) == (2.0, 1.0)
    assert weight.lut == MEMORY_PORT[0] + BRAM_CTRL[0]
    assert weight.ff == MEMORY_PORT[1] + BRAM_CTRL[1]


def test_manifest_memories_decide_the_brams():
    program, image = dense_design(64, 128)
    memories = [{"name": "w2", "layer": "fc", "array": "weight", "range": 65536, "word_bits": 8,
                 "scale": {"shift": 0, "constant": None}}]  # only the kernel in BRAM, 64 KiB of address space
    usage = estimate(program, image, HlsOptions.make("parallel", "Vitis", "Resource", 64), memories)
    assert [u.bram36 for u in usage.items if u.what.startswith("weight memory")] == [16.0]


def test_a_constant_scale_adds_one_divide_back_dsp_per_lane():
    plain = estimate(*dense_design(64, 10), HlsOptions.make("parallel", "Vitis", "Resource", 8))
    scaled = estimate(*dense_design(64, 10, scale=Scale(0, 3.0)), HlsOptions.make("parallel", "Vitis", "Resource", 8))
    assert by_name(plain, "weight memory fc/weight").dsp == 0
    assert by_name(scaled, "weight memory fc/weight").dsp == 4  # 8-bit words: 4 lanes per bus word


def test_multipliers_per_reuse_factor_and_the_dsp_rule():
    options = HlsOptions.make("parallel", "Vitis", "Latency", 4)
    narrow = by_name(estimate(*dense_design(64, 10, "fixed<8,1>"), options), "fc multipliers")
    wide = by_name(estimate(*dense_design(64, 10, "fixed<12,2>"), options), "fc multipliers")
    multipliers = 64 * 10 // 4
    assert narrow.what == f"fc multipliers ({multipliers} of 8x16 bits)"
    assert narrow.dsp == 0  # 8-bit weights: LUT multipliers
    assert narrow.lut == multipliers * (math.ceil(LUT_PER_PRODUCT_BIT * 8 * 16) + 30)  # + adder of the 30-bit accum
    assert wide.dsp == multipliers  # 12-bit weights: one DSP each
    assert wide.lut == multipliers * 30
    assert wide.ff == narrow.ff == multipliers * 30


def test_latency_keeps_weights_in_registers_resource_in_ram():
    program, image = dense_design(64, 128)
    latency = by_name(estimate(program, image, HlsOptions.make("parallel", "Vitis", "Latency", 64)), "fc weight arrays")
    resource = by_name(estimate(program, image, HlsOptions.make("parallel", "Vitis", "Resource", 64)),
                       "fc weight arrays")
    assert latency.ff == (64 * 128 + 128) * 8
    assert latency.bram36 == 0
    # 64 deep x (8192 / 64 = 128 weights x 8 bits = 1024 bits) wide: RAMB18s of 512 x 36
    assert resource.bram36 == math.ceil(1024 / 36) / 2
    assert resource.ff == 128 * 8  # the bias stays in registers


def test_infrastructure_is_counted_once():
    usage = estimate(*dense_design(64, 10), HlsOptions.make("stream", "Vitis", "Resource", 8))
    dma = by_name(usage, "AXI DMA")
    assert (dma.lut, dma.ff, dma.bram36) == DMA
    assert usage.bram36 == sum(u.bram36 for u in usage.items)
    assert usage.summary().startswith(f"estimated {usage.bram36:g} BRAM36, {usage.dsp} DSP")
    assert usage.to_json()["lut"] == usage.lut


def test_a_huge_image_is_refused_with_the_numbers():
    program, image = dense_design(2048, 256)  # 524288 8-bit weights: 131072 bus words, 512 KiB
    usage = estimate(program, image, HlsOptions.make("stream", "Vitis", "Resource", 2048))
    # memories of 128 (kernel) + 1 (bias) BRAM36, the DMA's, and hls4ml's 2048-deep x 2048-bit kernel RAM
    assert usage.bram36 == 128 + 1 + DMA[2] + math.ceil(2048 / 9) / 2
    board = load_board("pynq-z2")
    with pytest.raises(BuildError) as err:
        check_fits(usage, board)
    message = str(err.value)
    assert f"needs {usage.bram36:g} BRAM36 of 140 on pynq-z2 (126 usable with a 10% margin" in message
    assert "largest: weight memory fc/weight 128" in message
    assert "raise the reuse factor" in message
    assert "a bigger board" in message
    assert "estimate" in message
    check_fits(usage, load_board("alveo-u250"))  # a big card takes it


def test_every_resource_over_budget_is_named():
    board = load_board("pynq-z2")
    usage = ResourceEstimate((Usage("everything", bram36=200.0, dsp=300, lut=60000, ff=50000),))
    with pytest.raises(BuildError) as err:
        check_fits(usage, board)
    message = str(err.value)
    assert "needs 200 BRAM36 of 140" in message
    assert "needs 300 DSP of 220 on pynq-z2 (198 usable" in message
    assert "needs 60000 LUT of 53200 on pynq-z2 (47880 usable" in message
    assert "FF" not in message


def test_margin():
    board = load_board("pynq-z2")
    usage = ResourceEstimate((Usage("brams", bram36=130.0),))
    check_fits(usage, board, margin=0.0)
    with pytest.raises(BuildError, match="needs 130 BRAM36 of 140 on pynq-z2 \\(126 usable with a 10% margin"):
        check_fits(usage, board)
    with pytest.raises(BuildError, match="margin must be in"):
        check_fits(usage, board, margin=1.0)


def test_a_malformed_memory_range_is_refused():
    program, image = dense_design(64, 10)
    with pytest.raises(BuildError, match="'range' must be a positive byte count"):
        estimate(program, image, HlsOptions.make(), [{"name": "w2", "range": "4K"}])


# --- the zoo ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """hls4ml conversions of the zoo CNNs (no C simulation build), once per module."""
    from hwflow.convert import convert, image_from_hls, program_from_hls

    cache = {}

    def get(name: str, options: HlsOptions):
        key = (name, options)
        if key not in cache:
            hls_model = convert(zoo_model(name, 8, 8), options, tmp_path_factory.mktemp(name))
            cache[key] = program_from_hls(hls_model), image_from_hls(hls_model)
        return cache[key]

    return get


@pytest.mark.parametrize(("name", "reuse"), [("cnn-digits", 16), ("cnn-fmnist", 64)])
def test_the_zoo_cnns_fit_a_pynq_z2_with_resource_strategy(converted, name, reuse):
    options = HlsOptions.make("stream", "Vitis", "Resource", reuse)
    usage = estimate(*converted(name, options), options)
    check_fits(usage, load_board("pynq-z2"))
    assert usage.dsp < 220


def test_cnn_fmnist_fully_parallel_is_refused_on_a_pynq_z2(converted):
    options = HlsOptions.make("parallel", "Vitis", "Latency", 1)
    usage = estimate(*converted("cnn-fmnist", options), options)
    with pytest.raises(BuildError, match=r"does not fit pynq-z2 .*needs \d+ DSP of 220.*needs \d+ LUT of 53200"):
        check_fits(usage, load_board("pynq-z2"))
    # fewer multipliers with a larger reuse factor, everything else equal
    resource = HlsOptions.make("parallel", "Vitis", "Resource", 16)
    assert estimate(*converted("cnn-fmnist", resource), resource).lut < usage.lut


# --- a rule per layer kind --------------------------------------------------------------------------------


def test_every_layer_kind_has_a_rule():
    from hwflow.hardware.resources import RULES

    assert set(RULES) == set(Kind), f"no resource rule for {sorted(k.value for k in set(Kind) - set(RULES))}"


def test_a_kind_without_a_rule_is_refused_by_name(monkeypatch):
    from hwflow.hardware import resources

    program, image = graph_design()
    monkeypatch.delitem(resources.RULES, Kind.MERGE)
    with pytest.raises(BuildError, match="layer 'add': the resource estimate has no rule for merge layers"):
        estimate(program, image, HlsOptions.make("stream", "Vitis", "Resource", 4))


def _array(layer: str, name: str, shape: tuple[int, ...], weight_type: str = "fixed<8,1>") -> StoredArray:
    size = math.prod(shape)
    return StoredArray(layer, name, f"{name[0]}_{layer}", shape, tuple(range(len(shape))),
                       StorageFormat.parse(weight_type), Scale(0), np.zeros(size, dtype=np.uint64))


T8, T10, T16, ACC = (parse_type(t) for t in ("ufixed<8,3>", "fixed<10,4>", "fixed<16,6>", "fixed<20,8>"))


def graph_design():
    """input 4x4x2 -> a (conv 1x1) and b (depthwise 3x3) -> add -> mul(add, a) -> avg pool 2 -> global avg ->
    sigmoid (table) -> prelu -> dense (XNOR products) -> softmax; the input is read twice (a branch)."""
    layers = (
        LayerSpec("x", Kind.INPUT, (), (4, 4, 2), T8),
        LayerSpec("a", Kind.CONV2D, ("x",), (4, 4, 2), T10, ACC,
                  {"n_chan": 2, "filt_height": 1, "filt_width": 1, "in_width": 4}),
        LayerSpec("b", Kind.DEPTHWISE2D, ("x",), (4, 4, 2), T10, ACC,
                  {"n_chan": 2, "filt_height": 3, "filt_width": 3, "in_width": 4, "reuse_factor": 2}),
        LayerSpec("add", Kind.MERGE, ("a", "b"), (4, 4, 2), T10, None, {"op": "add"}),
        LayerSpec("mul", Kind.MERGE, ("add", "a"), (4, 4, 2), T16, None, {"op": "multiply"}),
        LayerSpec("pool", Kind.POOL2D, ("mul",), (2, 2, 2), T16, ACC,
                  {"pool_height": 2, "pool_width": 2, "in_width": 4, "pool_op": "Average"}),
        LayerSpec("gap", Kind.GLOBALPOOL2D, ("pool",), (2,), T16, ACC,
                  {"in_height": 2, "in_width": 2, "pool_op": "Average"}),
        LayerSpec("sig", Kind.ACTIVATION, ("gap",), (2,), T8, None,
                  {"activation": "sigmoid", "table_size": 1024, "table_t": "fixed<18,8>"}),
        LayerSpec("prelu", Kind.PRELU, ("sig",), (2,), T10),
        LayerSpec("fc", Kind.DENSE, ("prelu",), (4,), T16, ACC, {"product": "both_binary"}),
        LayerSpec("soft", Kind.SOFTMAX, ("fc",), (4,), T16, None,
                  {"implementation": "stable", "exp_table_size": 1024, "inv_table_size": 1024,
                   "exp_table_t": "ufixed<18,8>", "inv_table_t": "ufixed<18,4>"}),
    )
    arrays = (
        _array("a", "weight", (1, 1, 2, 2)), _array("a", "bias", (2,)),
        _array("b", "weight", (3, 3, 2, 1)), _array("b", "bias", (2,)),
        _array("prelu", "param", (2,), "fixed<12,2>"),
        StoredArray("fc", "weight", "w_fc", (2, 4), (0, 1), StorageFormat.parse("xnor"), Scale(0),
                    np.zeros(8, dtype=np.uint64)),
    )
    return Program(layers), WeightImage(arrays)


def test_new_kinds_in_io_parallel():
    usage = estimate(*graph_design(), HlsOptions.make("parallel", "Vitis", "Latency", 1))
    # depthwise: one multiplier per channel and tap (18) over its own reuse factor 2; 8-bit weights: LUTs
    dw = by_name(usage, "b multipliers")
    assert dw.what == "b multipliers (9 of 8x8 bits)"
    assert (dw.dsp, dw.lut) == (0, 9 * (math.ceil(LUT_PER_PRODUCT_BIT * 64) + 20))
    # add: an adder per element, no multiplier; multiply: a product per element (10 x 10 bits: LUTs)
    add = by_name(usage, "add (merge)")
    assert add.lut == 32 * 10 + 150
    assert add.dsp == 0
    assert not [u for u in usage.items if u.what.startswith("add multipliers")]
    assert by_name(usage, "mul multipliers").what == "mul multipliers (32 of 10x10 bits)"
    # 2x2 average pool: 3 adders of the 20-bit accumulator per output, no divider (a power of two)
    assert by_name(usage, "pool (pool2d)").lut == 8 * 3 * 20 + 150
    # sigmoid: one 1024 x 18 table (a RAMB18) per two values at once
    table = by_name(usage, "sig table")
    assert table.what == "sig table (1 x 1024 x 18 bits)"
    assert table.bram36 == 0.5
    # PReLU: its param array (2 x 12 bits) in registers, a 12-bit product per value: DSP
    assert by_name(usage, "prelu weight arrays").ff == 2 * 12
    assert by_name(usage, "prelu multipliers").dsp == 2
    # XNOR products: no DSP, one LUT each plus the adder
    xnor = by_name(usage, "fc products")
    assert xnor.what == "fc products (8 both_binary of 1x10 bits)"
    assert (xnor.dsp, xnor.lut) == (0, 8 + 8 * 20)
    # softmax: an exp table per two values, an inverse table, a product per value
    assert by_name(usage, "soft exp table").bram36 == 2 * 0.5
    assert by_name(usage, "soft inverse table").bram36 == 0.5
    assert by_name(usage, "soft multipliers").dsp == 4
    assert not [u for u in usage.items if "copies" in u.what]  # io_parallel reads arrays twice


def test_new_kinds_in_io_stream():
    usage = estimate(*graph_design(), HlsOptions.make("stream", "Vitis", "Latency", 1))
    # a value at once is one pixel's channels: the add's 2 adders; the pool pipelines one reduction
    assert by_name(usage, "add (merge)").lut == 2 * 10 + 150 + 2 * 10  # adders, control, a 16 x 20-bit FIFO
    pool = by_name(usage, "pool (pool2d)")
    assert pool.ff == 4 * 2 * 16 + 200  # the window's 2x2 x 2 channels of mul's 16 bits in registers
    assert pool.lut == 3 * 20 + math.ceil(4 * 2 * 16 / 32) + 150 + 32  # one reduction, a line of 4 pixels, the FIFO
    # the input x is read by a and b: hls4ml's Clone copies it into 2 FIFOs of 16 pixels x 16 bits
    copies = by_name(usage, "x copies for 2 readers")
    assert copies.lut == 2 * 16 + 150
    assert by_name(usage, "a copies for 2 readers").lut == 2 * 20 + 150
    limited = estimate(*graph_design(), HlsOptions.make("stream", "Vitis", "Latency", 1), fifo_depth=1)
    assert by_name(limited, "x copies for 2 readers") == copies  # a branch's copies keep hls4ml's depth


def test_a_shallower_fifo_depth_shrinks_the_layers_fifos():
    program, image = dense_design(64, 10)
    big = LayerSpec("big", Kind.ACTIVATION, ("fc",), (1024, 64), parse_type("fixed<16,6>"), None,
                    {"activation": "relu"})
    program = Program((*program.layers[:1], LayerSpec("fc", Kind.DENSE, ("image",), (1024, 64),
                                                          parse_type("fixed<16,6>"), parse_type("fixed<30,14>")), big))
    options = HlsOptions.make("stream", "Vitis", "Resource", 64)
    deep = by_name(estimate(program, image, options), "big (activation)")
    shallow = by_name(estimate(program, image, options, fifo_depth=32), "big (activation)")
    assert deep.bram36 == math.ceil(64 * 16 / 18) / 2  # 1024 deep x 1024 bits: RAMB18s of 1024 x 18
    assert shallow.bram36 == 0
    assert shallow.lut == 64 * 16 + 150 + 64 * 8  # one SRL32 per bit; control; the compare-and-select


@pytest.mark.parametrize(("product", "lut_per_product"), [("weight_binary", 16), ("data_binary", 16),
                                                           ("weight_ternary", 16), ("weight_exponential", 16 * 11)])
def test_binary_ternary_and_po2_products_use_no_dsp(product, lut_per_product):
    program, image = dense_design(64, 10, "fixed<12,2>")  # 12-bit words: a plain product would take a DSP; a
    # po2 word is a shift: one mux level of the 16-bit input per exponent bit (11 beside the sign)
    fc = program.layer("fc")
    program = Program((program.input, LayerSpec("fc", Kind.DENSE, ("image",), (10,), fc.result, fc.accum,
                                                {"product": product})))
    usage = by_name(estimate(program, image, HlsOptions.make("parallel", "Vitis", "Latency", 4)), "fc products")
    assert usage.dsp == 0
    assert usage.lut == 160 * (lut_per_product + 30)  # the product, then the 30-bit accumulator's adder


def test_an_unknown_product_is_refused():
    program, image = dense_design(8, 2)
    fc = program.layer("fc")
    program = Program((program.input, LayerSpec("fc", Kind.DENSE, ("image",), (2,), fc.result, fc.accum,
                                                {"product": "weight_quaternary"})))
    with pytest.raises(BuildError, match="no rule for hls4ml's product 'weight_quaternary'"):
        estimate(program, image, HlsOptions.make())


def test_an_average_over_a_window_that_is_not_a_power_of_two_adds_a_divider():
    def pool(size: int):
        layers = (LayerSpec("x", Kind.INPUT, (), (6, 6, 1), T8),
                  LayerSpec("pool", Kind.POOL2D, ("x",), (6 // size, 6 // size, 1), T8, ACC,
                            {"pool_height": size, "pool_width": size, "pool_op": "Average"}))
        usage = estimate(Program(layers), WeightImage(()), HlsOptions.make("parallel"))
        return by_name(usage, "pool (pool2d)").lut - 150

    assert pool(2) == 9 * 3 * 20  # 9 outputs, 3 adders each, a shift
    assert pool(3) == 4 * 8 * 20 + 4 * math.ceil(LUT_PER_PRODUCT_BIT * 20 * 20)  # and a constant divider each
