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


def test_every_layer_equals_trace(csim_cache, digits):
    """Not just the logits: every intermediate layer output equals hls4ml's trace."""
    from hwflow.verify import locate_mismatch

    csim = csim_cache.get("cnn-digits", 6, 6, "parallel")
    emulator = Emulator(csim.program, csim.image)
    for sample in range(3):
        assert locate_mismatch(csim, emulator, digits.x_test[sample : sample + 1], sample) is None


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
