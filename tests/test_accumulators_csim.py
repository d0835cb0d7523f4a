"""Narrow accumulators, set per layer through hls4ml's own configuration, against the C simulation.

The zoo's accumulators are hls4ml's inferred ones: wide enough to keep every product bit, never
saturating, so the emulator's BLAS path serves them. An accumulator that drops product bits or
saturates takes ``_linear_stepwise`` instead; these tests pin that path to hls4ml's compiled C++:
one model whose conv and dense layers each get an accumulator that truncates products, under every
rounding mode and every overflow mode, compared exactly (logits and every traced layer). They also
show that the stepwise path ran, and that each layer's mode changes that layer's output on the
samples used (so the comparison would see an emulator that ignored the mode).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

from hwflow.emulator import Emulator, Program, ops
from hwflow.fixed import FixedType, Overflow, Rounding
from tests.conftest import needs_gxx

pytestmark = [needs_gxx, pytest.mark.slow]

# Each narrow layer's accumulator: all seven rounding modes, all four overflow modes. Every product
# has more fractional bits than these (input fixed<16,6> x weight fixed<8,1>: 17; relu output
# ufixed<8,2> x weight: 13), so every product is rounded, and the sums overflow these ranges.
ACCUMS = {
    "conv": "fixed<10,2,RND_CONV,SAT>",
    "d1": "fixed<12,4,TRN,WRAP>",
    "d2": "fixed<12,4,TRN_ZERO,SAT>",
    "d3": "fixed<12,4,RND,SAT_ZERO>",
    "d4": "fixed<12,4,RND_ZERO,SAT_SYM>",
    "d5": "fixed<12,4,RND_INF,WRAP>",
    "d6": "fixed<12,4,RND_MIN_INF,SAT>",
    "out": "fixed<12,4,TRN,SAT>",
}
RESULT = "fixed<16,6>"  # wider than the accumulators: the result cast keeps what the accumulator did
SAMPLES = 200


@dataclass(frozen=True)
class Design:
    io: str
    strategy: str
    reuse_factor: int

    def __str__(self) -> str:
        return f"{self.io}-{self.strategy}-rf{self.reuse_factor}"


RESOURCE_RF4 = Design("io_parallel", "Resource", 4)
DESIGNS = [Design("io_parallel", "Latency", 1), Design("io_stream", "Latency", 1), RESOURCE_RF4]
# hls4ml's Resource kernels with reuse factor R > 1 add each output's products in the order
# (i mod R, i) over inputs i: it matters once the accumulator saturates (ops.accumulation_order).


def narrow_model():
    """Conv, then six dense layers, then the logits; uniform weights in [-1, 1) so sums overflow."""
    import qkeras
    import tensorflow as tf

    def quantizer():
        return qkeras.quantized_bits(8, 0, alpha=1)

    inp = tf.keras.Input((8, 8, 1), name="image")
    x = qkeras.QConv2D(4, (3, 3), kernel_quantizer=quantizer(), bias_quantizer=quantizer(), name="conv")(inp)
    x = qkeras.QActivation("quantized_relu(8,2)", name="r0")(x)
    x = tf.keras.layers.Flatten(name="flat")(x)
    for i in range(1, 7):
        x = qkeras.QDense(16, kernel_quantizer=quantizer(), bias_quantizer=quantizer(), name=f"d{i}")(x)
        x = qkeras.QActivation("quantized_relu(8,2)", name=f"r{i}")(x)
    x = qkeras.QDense(10, kernel_quantizer=quantizer(), bias_quantizer=quantizer(), name="out")(x)
    model = tf.keras.Model(inp, x, name="narrow")
    rng = np.random.default_rng(11)
    for layer in model.layers:
        if layer.get_weights():
            layer.set_weights([rng.uniform(-1, 1, w.shape) for w in layer.get_weights()])
    return model


def build(model, design: Design, out):
    """hls4ml's per-layer configuration with our accumulators, converted and compiled by hls4ml itself."""
    import hls4ml

    from hwflow.convert import compile_csim, image_from_hls, program_from_hls
    from hwflow.convert.hls import quiet
    from hwflow.verify import CSimModel

    with quiet():
        config = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis")
    config["Model"]["Strategy"] = design.strategy
    config["Model"]["ReuseFactor"] = design.reuse_factor
    for name, layer_cfg in config["LayerName"].items():
        if name in ACCUMS:
            layer_cfg["Precision"]["accum"] = ACCUMS[name]
            layer_cfg["Precision"]["result"] = RESULT
            layer_cfg["Strategy"] = design.strategy
            layer_cfg["ReuseFactor"] = design.reuse_factor
    with quiet():
        hls_model = hls4ml.converters.convert_from_keras_model(
            model, hls_config=config, io_type=design.io, backend="Vitis", output_dir=str(out))
    compile_csim(hls_model)
    return CSimModel(hls_model, program_from_hls(hls_model), image_from_hls(hls_model), out)


@pytest.fixture(scope="module")
def model():
    return narrow_model()


@pytest.fixture(scope="module", params=DESIGNS, ids=str)
def csim(request, model, tmp_path_factory):
    return build(model, request.param, tmp_path_factory.mktemp(f"acc-{request.param}"))


@pytest.fixture
def stepwise_calls(monkeypatch):
    """The accumulator type of every call of ``_linear_stepwise`` while the test runs."""
    calls = []
    real = ops._linear_stepwise

    def spy(x, w, p_frac, bias, accum, order=None):
        calls.append(accum)
        return real(x, w, p_frac, bias, accum, order)

    monkeypatch.setattr(ops, "_linear_stepwise", spy)
    return calls


def test_types_come_from_the_configuration(csim):
    for name, text in ACCUMS.items():
        layer = csim.program.layer(name)
        assert str(layer.accum) == text
        assert str(layer.result) == "fixed<16,6,TRN,WRAP>"


def test_logits_equal_csim_through_the_stepwise_path(csim, digits, stepwise_calls):
    x = digits.x_test[:SAMPLES]
    ours = Emulator(csim.program, csim.image).logits(x).reshape(len(x), -1)
    np.testing.assert_array_equal(ours, csim.csim_logits(x))
    assert {str(t) for t in stepwise_calls} == set(ACCUMS.values())


def test_every_layer_equals_trace(csim, digits):
    from hwflow.verify import compare_layers

    check = compare_layers(csim, digits.x_test[:SAMPLES])
    assert set(check.not_compared) == {"image", "flat"}  # hls4ml runs no C++ function for them
    assert len(check.compared) == len(csim.program.layers) - 2 == 15
    assert check.first is None, check.summary()


def _with_accum(program: Program, name: str, accum: FixedType) -> Program:
    i = program.index(name)
    return Program(program.layers[:i] + (replace(program.layers[i], accum=accum),) + program.layers[i + 1 :],
                   program.io_type, program.source)


def test_each_mode_changes_its_layer(csim, digits):
    """Every other rounding mode and every other overflow mode gives that layer another output here.

    So the C-simulation comparison above distinguishes each mode: an emulator that applied a
    different mode (or none) to any one layer would have failed it.
    """
    emulator = Emulator(csim.program, csim.image)
    x = digits.x_test[:SAMPLES]
    trace = emulator.trace(x)
    for name, text in ACCUMS.items():
        layer = csim.program.layer(name)
        before = layer.inputs[0]
        others = ([replace(layer.accum, rounding=r) for r in Rounding if r is not layer.accum.rounding]
                  + [replace(layer.accum, overflow=o) for o in Overflow if o is not layer.accum.overflow])
        for other in others:
            changed = Emulator(_with_accum(csim.program, name, other), csim.image)
            out = changed.run_codes(trace[before], start=before, upto=name)
            assert np.any(out != trace[name]), f"{name}: {text} and {other} agree on every sample"
