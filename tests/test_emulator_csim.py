"""The emulator against hls4ml's C simulation, compared with assert_array_equal (no tolerance)."""

import numpy as np
import pytest

from hwflow.emulator import Emulator
from tests.conftest import needs_gxx

pytestmark = [needs_gxx, pytest.mark.slow]

CASES = [
    # (zoo model, weight bits, activation bits, io)
    ("mlp-digits", 8, 8, "parallel"),
    ("mlp-digits", 4, 6, "stream"),
    ("cnn-digits", 8, 8, "parallel"),
    ("cnn-digits", 8, 8, "stream"),
    ("cnn-digits", 4, 4, "parallel"),
    ("cnn-digits", 6, 6, "stream"),
    ("cnn-fmnist", 8, 8, "parallel"),
    ("cnn-fmnist", 8, 8, "stream"),
    ("cnn-fmnist", 4, 6, "parallel"),
    ("cnn-fmnist", 6, 4, "stream"),
]


def _inputs(name, digits, fmnist_loader, n):
    if "fmnist" in name:
        return fmnist_loader().x_test[:n]
    return digits.x_test[:n]


@pytest.mark.parametrize(("name", "wbits", "abits", "io"), CASES)
def test_logits_equal_csim(csim_cache, digits, request, name, wbits, abits, io):
    csim = csim_cache.get(name, wbits, abits, io)
    x = _inputs(name, digits, lambda: request.getfixturevalue("fmnist"), 150)
    ours = Emulator(csim.program, csim.image).logits(x)
    np.testing.assert_array_equal(ours.reshape(len(x), -1), csim.csim_logits(x))


@pytest.mark.parametrize(("strategy", "reuse", "backend"), [("Resource", 4, "Vitis"), ("Latency", 1, "Vivado")])
def test_strategies_and_backends(csim_cache, digits, strategy, reuse, backend):
    csim = csim_cache.get("cnn-digits", 8, 8, "parallel", strategy, reuse, backend)
    if strategy == "Resource":
        assert csim.image.get("conv1", "weight").axes == (3, 0, 1, 2)  # hls4ml transposed it
    x = digits.x_test[:150]
    np.testing.assert_array_equal(Emulator(csim.program, csim.image).logits(x).reshape(len(x), -1),
                                  csim.csim_logits(x))


def _assert_every_layer_compared(csim, check):
    """All layers but those hls4ml runs no C++ function for (the input, reshapes) were compared."""
    from hwflow.emulator import Kind

    uncomparable = {layer.name for layer in csim.program.layers if layer.kind in (Kind.INPUT, Kind.RESHAPE)}
    assert set(check.not_compared) == uncomparable, check.not_compared
    assert all("no C++ function" in why for why in check.not_compared.values()), check.not_compared
    assert len(check.compared) == len(csim.program.layers) - len(uncomparable)
    assert check.first is None, check.summary()


TRACE_SAMPLES = 60


@pytest.mark.parametrize(("wbits", "abits", "io", "strategy", "reuse"), [
    (6, 6, "parallel", "Latency", 1), (8, 8, "stream", "Latency", 1), (8, 8, "parallel", "Resource", 4),
])
def test_every_layer_equals_trace(csim_cache, digits, wbits, abits, io, strategy, reuse):
    """Not just the logits: every intermediate layer output equals hls4ml's trace."""
    from hwflow.verify import compare_layers

    csim = csim_cache.get("cnn-digits", wbits, abits, io, strategy, reuse)
    check = compare_layers(csim, digits.x_test[:TRACE_SAMPLES])
    _assert_every_layer_compared(csim, check)
    assert check.compared == ("conv1", "bn1", "relu1", "pool1", "conv2", "bn2", "relu2", "out")


def test_every_layer_of_a_hardened_model_equals_trace(digits, tmp_path):
    """FT-ClipAct layers and power-of-two scaled weight types, layer by layer (io_stream)."""
    from hwflow.convert import HlsOptions, convert, image_from_hls
    from hwflow.emulator import Kind
    from hwflow.harden.clipact import apply_clipact, profile_thresholds
    from hwflow.harden.scale import plan_rule
    from hwflow.verify import build_csim, compare_layers
    from tests.conftest import zoo_model

    x = digits.x_test[:TRACE_SAMPLES]
    model = zoo_model("cnn-digits", 8, 8, seed=1)
    peaks = profile_thresholds(model, x)
    model = apply_clipact(model, {name: 0.5 * peak for name, peak in peaks.items()}, "zero")
    options = HlsOptions.make("stream")
    plan = plan_rule(image_from_hls(convert(model, options, tmp_path / "plain")))
    csim = build_csim(model, options, tmp_path / "hardened", storage=plan)
    assert any(layer.kind is Kind.CLIPACT for layer in csim.program.layers)
    assert any(not arr.scale.is_identity for arr in csim.image)
    check = compare_layers(csim, x)
    _assert_every_layer_compared(csim, check)
    assert {layer.name for layer in csim.program.layers if layer.kind is Kind.CLIPACT} <= set(check.compared)


def test_verify_reports_a_corrupted_weight(csim_cache, digits):
    """A changed stored word must show up as a mismatch, located at the layer that holds it."""
    from hwflow.verify import compare

    csim = csim_cache.get("cnn-digits", 8, 8, "parallel")
    arr = csim.image.get("conv2", "weight")
    words = arr.words.copy()
    words[:40] ^= np.uint64(1 << 6)
    bad = type(csim)(csim.hls_model, csim.program, csim.image.replace_array(arr.with_words(words)), csim.output_dir)
    result = compare(bad, digits.x_test[:20])
    assert not result.ok
    assert result.first.layer in ("conv2", "bn2", "relu2")
    assert "mismatches" in result.summary()
    assert "first mismatch at layer" in result.summary()
