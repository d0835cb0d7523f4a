"""The Keras ``Softmax`` layer takes the softmax activation's path
(``hwflow.convert.layers_activation.register_softmax_layer``), against hls4ml's C simulation."""

from __future__ import annotations

import numpy as np
import pytest

from hwflow.convert import HlsOptions
from hwflow.emulator import Emulator, Kind
from tests.conftest import needs_gxx

Q = "quantized_bits(6,0,alpha=1)"


@pytest.fixture(scope="module")
def model():
    import tensorflow as tf
    from qkeras import QActivation, QDense

    from hwflow.convert.layers_activation import register_softmax_layer

    register_softmax_layer()
    register_softmax_layer()  # idempotent: the handler is wrapped once
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((6,), name="x")
    x = QDense(8, kernel_quantizer=Q, bias_quantizer=Q, name="d1")(inp)
    x = QActivation("quantized_relu(6)", name="r1")(x)
    x = QDense(5, kernel_quantizer=Q, bias_quantizer=Q, name="d2")(x)
    x = tf.keras.layers.Softmax(name="sm")(x)
    return tf.keras.Model(inp, x, name="softmax_layer")


def test_the_handler_is_wrapped_once_and_the_keras_check_accepts_the_layer(model):
    from hls4ml.converters.keras_v2_to_hls import layer_handlers

    from hwflow.zoo.loading import check_supported

    handler = layer_handlers["Softmax"]
    assert handler._hwflow_softmax
    assert not getattr(handler.__closure__[0].cell_contents, "_hwflow_softmax", False)  # hls4ml's own inside
    check_supported(model)


def test_a_final_softmax_layer_is_removed_by_default(model):
    from hwflow.convert.hls import strip_softmax

    assert strip_softmax(model).layers[-1].name == "d2"


@needs_gxx
@pytest.mark.slow
@pytest.mark.parametrize("io", ["parallel", "stream"])
def test_kept_softmax_layer_equals_csim(model, io, tmp_path):
    """With ``keep_softmax`` the layer is hls4ml's Softmax (it compiles), emulated bit-exactly: the outputs and
    every traced layer equal the C simulation; the probabilities are QKeras's to hls4ml's table precision."""
    from hwflow.verify import build_csim, compare_layers

    x = np.random.default_rng(0).uniform(-1, 1, (50, 6))
    design = build_csim(model, HlsOptions.make(io, keep_softmax=True), tmp_path)
    assert design.program.layers[-1].kind is Kind.SOFTMAX
    csim = design.csim_logits(x)
    np.testing.assert_array_equal(Emulator(design.program, design.image).logits(x).reshape(len(x), -1), csim)
    check = compare_layers(design, x)
    assert check.first is None, check.summary()
    assert "sm" in check.compared
    # hls4ml's stable softmax: 1024-entry exp and inverse tables (here at most 0.04 off, rows summing
    # to 1.00-1.10): close to QKeras's float softmax, not equal
    np.testing.assert_allclose(csim, model.predict(x, verbose=0), atol=0.06)
