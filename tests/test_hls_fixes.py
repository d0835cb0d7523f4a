"""hwflow's fixes of hls4ml 1.3.0 (``hwflow.convert.hls_fixes``): a batch norm after a depthwise convolution.

hls4ml's own fold broadcasts the batch norm's scale over a depthwise kernel (shown here, so that the fix goes
when hls4ml fixes it); with hwflow's fix the batch norm stays a layer, its arrays are stored, the emulator
follows the model and equals the C simulation word for word."""

import numpy as np
import pytest
import tensorflow as tf

from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls
from hwflow.emulator import Emulator
from tests.conftest import needs_gxx, random_bn_statistics


def _model(dims: int):
    keras = tf.keras.layers
    if dims == 2:
        inp = keras.Input((8, 8, 3))
        x = keras.Conv2D(4, 3, padding="same", name="c1")(inp)
        x = keras.DepthwiseConv2D(3, padding="same", name="dw")(x)
    else:
        inp = keras.Input((16, 3))
        x = keras.Conv1D(4, 3, padding="same", name="c1")(inp)
        x = keras.DepthwiseConv1D(3, padding="same", name="dw")(x)
    x = keras.BatchNormalization(name="bn")(x)
    x = keras.ReLU(name="relu")(x)
    x = keras.Flatten(name="flat")(x)
    out = keras.Dense(5, name="out")(x)
    tf.keras.utils.set_random_seed(dims)
    return random_bn_statistics(tf.keras.Model(inp, out, name=f"dwbn{dims}d"), dims)


def _inputs(model, n=64):
    return np.random.default_rng(3).uniform(-1, 1, (n, *model.input_shape[1:])).astype(np.float32)


def test_hls4mls_own_fold_broadcasts_the_scale_over_the_depthwise_kernel(tmp_path, monkeypatch):
    """DepthwiseConv2D (hls4ml 1.3.0 does not fold a batch norm into a DepthwiseConv1D: its type is set)."""
    from hls4ml.model.optimizer.passes.bn_fuse import FuseBatchNormalization

    from hwflow.convert import hls_fixes

    hls_fixes.register()
    monkeypatch.setattr(FuseBatchNormalization, "match", FuseBatchNormalization.match.hwflow_original)
    graph = convert(_model(2), HlsOptions.make("parallel"), tmp_path / "m")
    names = [layer.name for layer in graph.get_layers()]
    assert "bn" not in names  # folded ...
    kernel = graph.graph["dw"].weights["weight"].data
    assert kernel.shape == (3, 3, 4, 4)  # ... into a (k, k, C, C) array: a depth multiplier of 4, not 1


OPTIONS = {"default_precision": "fixed<12,5>"}  # hls4ml's default 16 bits infer a 76-bit batch norm after the depthwise


@pytest.mark.parametrize("dims", [1, 2])
def test_the_batch_norm_stays_a_layer_and_the_emulator_follows_the_model(dims, tmp_path):
    model = _model(dims)
    graph = convert(model, HlsOptions.make("parallel", **OPTIONS), tmp_path / "m")
    assert [layer.name for layer in graph.get_layers()][2:4] == ["dw", "bn"]
    assert graph.graph["dw"].weights["weight"].data.shape[-1] == 1
    program, image = program_from_hls(graph), image_from_hls(graph)
    assert {"bn/scale", "bn/bias"} <= {a.key for a in image}  # stored, so faultable
    x = _inputs(model)
    trace = Emulator(program, image).trace(x)
    for name in ("dw", "bn", "relu"):  # fixed<12,5> against float: within a few quantization steps
        reference = tf.keras.Model(model.input, model.get_layer(name).output).predict(x, verbose=0)
        got = np.asarray(trace[name], dtype=np.float64) * 2.0 ** -program.layer(name).result.frac
        assert np.abs(got.reshape(reference.shape) - reference).max() < 0.05 * np.abs(reference).max(), name


def test_a_type_wider_than_the_emulators_names_its_layer(tmp_path):
    from hwflow.errors import ConversionError

    graph = convert(_model(2), HlsOptions.make("parallel"), tmp_path / "m")
    with pytest.raises(ConversionError, match=r"layer bn: its (result|accum) type .*62 bits.*LayerName\.bn\.Precision"):
        program_from_hls(graph)


@needs_gxx
@pytest.mark.slow
@pytest.mark.parametrize("io", ["parallel", "stream"])
def test_the_fixed_design_equals_the_c_simulation(io, tmp_path):
    from hwflow.verify import build_csim, compare_layers

    model = _model(2)
    design = build_csim(model, HlsOptions.make(io, **OPTIONS), tmp_path / "csim")
    x = _inputs(model, 32)
    np.testing.assert_array_equal(Emulator(design.program, design.image).logits(x).reshape(len(x), -1),
                                  design.csim_logits(x))
    check = compare_layers(design, x)
    assert check.first is None, check.summary()
    assert "bn" in check.compared
