"""FT-ClipAct: the Keras layer, the emulator's clip, hls4ml's C simulation, and the threshold search."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest

from hwflow.emulator.clip import clip_codes, threshold_code, threshold_value
from hwflow.errors import EmulatorError, HardenError
from hwflow.fixed import parse_type, quantize_float
from tests.conftest import needs_gxx, zoo_model

OUT_T = parse_type("ufixed<8,3,RND_CONV,SAT>")  # quantized_relu(8, 3) as hls4ml types it


def _layer_out(mode, threshold, x, bits=8, integer=3):
    from hwflow.harden.clipact import ClipActivation

    return ClipActivation(threshold, mode, bits, integer)(np.asarray(x, dtype=np.float32)[None]).numpy()[0]


# --- the function at and around T -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["zero", "saturate"])
def test_keras_layer_at_and_around_threshold(mode):
    t, lsb = 2.5, 1 / 32  # on the output grid of quantized_relu(8, 3)
    x = [-1.0, 0.0, t - lsb, t, t + lsb, t + 0.001, 7.0]
    above = t if mode == "saturate" else 0.0
    np.testing.assert_array_equal(_layer_out(mode, t, x), [0, 0, t - lsb, t, above, above, above])


@pytest.mark.parametrize("mode", ["zero", "saturate"])
def test_keras_layer_threshold_above_output_range(mode):
    # T = 10 is above ufixed<8,3>'s largest value 7.96875: values up to T saturate, values above T are clipped.
    y = _layer_out(mode, 10.0, [5.0, 9.0, 10.0, 11.0])
    np.testing.assert_array_equal(y, [5.0, 7.96875, 7.96875, 7.96875 if mode == "saturate" else 0.0])


@pytest.mark.parametrize("mode", ["zero", "saturate"])
def test_emulator_clip_at_and_around_threshold(mode):
    x_t = parse_type("fixed<16,6>")  # frac 10: T = 1.3 is not on the grid, floor(1.3 * 1024) = 1331
    assert threshold_code(1.3, x_t) == 1331
    codes = np.array([-700, -1, 0, 1, 1330, 1331, 1332, 2000, 32767])
    y = clip_codes(codes, x_t, OUT_T, 1.3, mode)
    real = codes / 1024
    t_real = 1331 / 1024
    ref = np.where(real > t_real, t_real if mode == "saturate" else 0.0, np.maximum(real, 0.0))
    np.testing.assert_array_equal(y, quantize_float(ref, OUT_T))
    kept = 1331 / 1024 * 32  # 41.59375 -> 42 (round to nearest)
    assert y[5] == 42 == round(kept)
    assert y[6] == (42 if mode == "saturate" else 0)


def test_threshold_code_rule():
    x_t = parse_type("fixed<16,6>")
    assert threshold_code(0.0, x_t) == 0
    assert threshold_code(2.5, x_t) == 2560  # on the grid: exact
    assert threshold_code(2.5 - 2**-11, x_t) == 2559  # below a grid point: rounded down
    assert threshold_code(31.99999, x_t) == 32767
    assert threshold_code(1e9, x_t) == x_t.max_code  # above the type: clips nothing
    assert threshold_value(1.3, x_t) == 1331 / 1024
    for bad in (-0.5, float("nan"), float("inf"), "1.0", True):
        with pytest.raises(EmulatorError, match="threshold"):
            threshold_code(bad, x_t)
    with pytest.raises(EmulatorError, match="mode"):
        clip_codes(np.zeros(2), x_t, OUT_T, 1.0, "clamp")


# --- the Keras layer in a model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cnn():
    return zoo_model("cnn-digits", 8, 8)


def test_apply_keeps_names_weights_and_equals_original_when_saturating_above_range(cnn, digits):
    from hwflow.harden.clipact import ClipActivation, apply_clipact, clip_layers

    assert clip_layers(cnn) == {"relu1": (8, 3), "relu2": (8, 3)}
    clipped = apply_clipact(cnn, {"relu1": 8.0, "relu2": 100.0}, "saturate")
    assert [layer.name for layer in clipped.layers] == [layer.name for layer in cnn.layers]
    assert isinstance(clipped.get_layer("relu1"), ClipActivation)
    for a, b in zip(cnn.get_weights(), clipped.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x = digits.x_test[:64]
    np.testing.assert_array_equal(clipped.predict(x, verbose=0), cnn.predict(x, verbose=0))
    partly = apply_clipact(cnn, {"relu2": 0.5}, "zero")  # relu1 stays a QActivation
    assert type(partly.get_layer("relu1")).__name__ == "QActivation"
    assert not np.array_equal(partly.predict(x, verbose=0), cnn.predict(x, verbose=0))


def test_profile_is_the_largest_activation(cnn, digits):
    from hwflow.harden.clipact import apply_clipact, profile_thresholds

    x = digits.x_train[:200]
    profile = profile_thresholds(cnn, x)
    assert set(profile) == {"relu1", "relu2"}
    assert all(v > 0 for v in profile.values())
    at_max = apply_clipact(cnn, profile, "zero")  # nothing on x is above its own maximum
    np.testing.assert_array_equal(at_max.predict(x, verbose=0), cnn.predict(x, verbose=0))
    below = apply_clipact(cnn, {k: 0.9 * v for k, v in profile.items()}, "zero")
    assert not np.array_equal(below.predict(x, verbose=0), cnn.predict(x, verbose=0))


def test_apply_refuses_bad_input(cnn):
    from hwflow.harden.clipact import ClipActivation, apply_clipact

    with pytest.raises(HardenError, match="clippable: relu1, relu2"):
        apply_clipact(cnn, {"bn1": 1.0})
    with pytest.raises(HardenError, match="mode"):
        apply_clipact(cnn, {"relu1": 1.0}, "clamp")
    with pytest.raises(HardenError, match="threshold of relu1"):
        apply_clipact(cnn, {"relu1": -1.0})
    with pytest.raises(HardenError, match="non-empty"):
        apply_clipact(cnn, {})
    with pytest.raises(HardenError, match="bits"):
        ClipActivation(1.0, "zero", bits=8, integer=9)


def test_h5_save_and_load(cnn, digits, tmp_path):
    from hwflow.harden.clipact import ClipActivation, apply_clipact, clip_settings
    from hwflow.zoo.loading import check_supported, load_model, read_sidecar, write_sidecar

    clipped = apply_clipact(cnn, {"relu1": 1.25, "relu2": 0.75}, "saturate")
    path = tmp_path / "clipped.h5"
    clipped.save(path, save_format="h5")
    entry = clip_settings(clipped)
    write_sidecar(path, {"hardening": {"methods": ["clipact"], "clipact": entry}})
    loaded = load_model(path)
    check_supported(loaded)
    layer = loaded.get_layer("relu2")
    assert isinstance(layer, ClipActivation)
    assert (layer.threshold, layer.mode, layer.bits, layer.integer) == (0.75, "saturate", 8, 3)
    x = digits.x_test[:64]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), clipped.predict(x, verbose=0))
    assert read_sidecar(path)["hardening"]["clipact"] == {"mode": "saturate",
                                                          "thresholds": {"relu1": 1.25, "relu2": 0.75}}
    assert clip_settings(loaded) == entry


# --- conversion (no compilation) ----------------------------------------------------------------------

def test_softmax_inside_the_last_layer_is_stripped_from_a_clipped_model(digits):
    # The last layer carries its softmax (QDense(..., activation="softmax")): stripping it rebuilds the
    # model from its config, which needs ClipActivation among the custom objects.
    import qkeras
    import tensorflow as tf

    from hwflow.convert import strip_softmax
    from hwflow.harden.clipact import ClipActivation

    q = qkeras.quantized_bits(8, 0, alpha=1)
    inp = tf.keras.Input((8, 8, 1), name="image")
    x = tf.keras.layers.Flatten(name="flat")(inp)
    x = qkeras.QDense(16, kernel_quantizer=q, bias_quantizer=q, name="fc1")(x)
    x = ClipActivation(1.5, "zero", name="relu1")(x)
    out = qkeras.QDense(10, kernel_quantizer=q, bias_quantizer=q, activation="softmax", name="fc2")(x)
    model = tf.keras.Model(inp, out)
    logits = strip_softmax(model)
    assert isinstance(logits.get_layer("relu1"), ClipActivation)
    assert logits.get_layer("fc2").get_config()["activation"] == "linear"
    x = digits.x_test[:32]
    np.testing.assert_allclose(tf.nn.softmax(logits.predict(x, verbose=0)).numpy(), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)



def test_registration_is_idempotent():
    from hls4ml.converters.keras_v2_to_hls import layer_handlers
    from hls4ml.model.optimizer.optimizer import optimizer_map

    from hwflow.convert import clipact_hls

    clipact_hls.register()
    clipact_hls.register()
    assert "ClipActivation" in layer_handlers
    for backend in ("vivado", "vitis"):
        assert f"{backend}:clipactivation_config_template" in optimizer_map
        assert f"{backend}:clipactivation_function_template" in optimizer_map


def test_conversion_gives_clip_layers_and_config(cnn, tmp_path):
    from hwflow.convert import HlsOptions, convert, program_from_hls
    from hwflow.emulator import Kind, Program
    from hwflow.emulator.clip import hardware_thresholds
    from hwflow.harden.clipact import apply_clipact

    clipped = apply_clipact(cnn, {"relu1": 1.3, "relu2": 1e9}, "zero")
    hls_model = convert(clipped, HlsOptions.make("parallel"), tmp_path / "hls")
    program = program_from_hls(hls_model)
    spec = program.layer("relu1")
    assert spec.kind is Kind.CLIPACT
    assert spec.attrs["threshold"] == pytest.approx(1.3)
    assert spec.attrs["mode"] == "zero"
    assert spec.result == OUT_T
    assert Program.from_json(program.to_json()) == program
    x_t = program.layer("bn1").result
    hw = hardware_thresholds(program)
    assert hw["relu1"] == threshold_value(spec.attrs["threshold"], x_t) <= 1.3
    x2_t = program.layer("bn2").result
    assert hw["relu2"] == x2_t.to_float(x2_t.max_code)  # above the input type: clips nothing
    node = next(layer for layer in hls_model.get_layers() if layer.name == "relu1")
    config = node.get_attr("config_cpp")
    assert f"threshold = {hw['relu1']!r};" in config
    assert "saturate = false;" in config
    assert node.get_attr("function_cpp").startswith("nnet::clipact<")


# --- emulator == hls4ml C simulation ------------------------------------------------------------------


@pytest.fixture(scope="module")
def traced_thresholds(cnn, digits):
    """Thresholds equal to real activations of the test images (so x == T occurs) near their median."""
    from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls
    from hwflow.emulator import Emulator

    with tempfile.TemporaryDirectory() as tmp:
        hls_model = convert(cnn, HlsOptions.make("parallel"), tmp)
        program, image = program_from_hls(hls_model), image_from_hls(hls_model)
    trace = Emulator(program, image).trace(digits.x_test)
    out = {}
    for relu, bn in (("relu1", "bn1"), ("relu2", "bn2")):
        positive = np.sort(trace[bn][trace[bn] > 0])
        out[relu] = float(program.layer(bn).result.to_float(positive[len(positive) // 2]))
    return out


@pytest.mark.slow
@needs_gxx
# Each mode, each io type and each backend at least once (every C-sim build costs ~20-40 s of g++).
@pytest.mark.parametrize(("mode", "io", "backend"), [
    ("saturate", "parallel", "Vitis"), ("zero", "stream", "Vitis"), ("zero", "parallel", "Vivado"),
])
def test_emulator_equals_csim(cnn, digits, traced_thresholds, tmp_path, mode, io, backend):
    from hwflow.convert import HlsOptions
    from hwflow.emulator import Emulator
    from hwflow.harden.clipact import apply_clipact
    from hwflow.verify import build_csim

    clipped = apply_clipact(cnn, traced_thresholds, mode)
    csim = build_csim(clipped, HlsOptions.make(io, backend), tmp_path / "hls")
    emulator = Emulator(csim.program, csim.image)
    x = digits.x_test
    np.testing.assert_array_equal(emulator.logits(x), csim.csim_logits(x))
    # the clip did act: inputs at and above T, and outputs differing from the unclipped ReLU's
    trace = emulator.trace(x)
    for relu, bn in (("relu1", "bn1"), ("relu2", "bn2")):
        t = threshold_code(traced_thresholds[relu], csim.program.layer(bn).result)
        assert np.any(trace[bn] == t)
        assert np.any(trace[bn] > t)
    relu_out = clip_codes(trace["bn2"], csim.program.layer("bn2").result, OUT_T, 1e9, "saturate")
    assert not np.array_equal(trace["relu2"], relu_out)


# --- the threshold search -----------------------------------------------------------------------------


def test_search_config_is_checked():
    from hwflow.harden.thresholds import ClipSearchConfig

    with pytest.raises(HardenError, match="rates"):
        ClipSearchConfig(rates=())
    with pytest.raises(HardenError, match="rates"):
        ClipSearchConfig(rates=(0.0, 1e-3))
    with pytest.raises(HardenError, match="candidates"):
        ClipSearchConfig(candidates=2)
    with pytest.raises(HardenError, match="mode"):
        ClipSearchConfig(mode="clamp")
    with pytest.raises(HardenError, match="fault"):
        ClipSearchConfig(fault={"model": "nope"})
    assert ClipSearchConfig(rates=(1e-2, 1e-3)).rates == (1e-3, 1e-2)


def test_auc_is_the_normalized_trapezoid():
    from hwflow.harden.thresholds import auc

    assert auc((1e-3,), np.array([0.7])) == 0.7
    assert auc((1e-4, 1e-3, 1e-2), np.array([1.0, 0.5, 0.0])) == pytest.approx(0.5)
    assert auc((1e-4, 1e-2), np.array([0.8, 0.8])) == pytest.approx(0.8)


def test_search_finds_thresholds(cnn, digits):
    from hwflow.harden.clipact import ClipActivation
    from hwflow.harden.thresholds import ClipSearchConfig, search_thresholds

    config = ClipSearchConfig(mode="zero", rates=(1e-3, 1e-2), trials=3, candidates=3, rounds=3,
                              profile_samples=200, val_samples=60, seed=3)
    result = search_thresholds(cnn, digits, config)
    assert set(result.thresholds) == {"relu1", "relu2"}
    for name, t in result.thresholds.items():
        assert 0 <= t <= result.profile[name]
        assert result.hardware_thresholds[name] <= t
        assert isinstance(result.model.get_layer(name), ClipActivation)
        assert result.model.get_layer(name).threshold == t
    first = [r for r in result.rounds if r.round == 0]
    assert [r.layer for r in first] == ["relu1", "relu2"]
    assert first[0].candidates == pytest.approx((0.0, result.profile["relu1"] / 2, result.profile["relu1"]))
    assert result.score == max(max(r.scores) for r in result.rounds)  # the best setting seen is kept
    assert result.score >= result.initial_score
    assert 1 <= len(result.rounds) <= 6
    assert result.sidecar_entry() == {"mode": "zero", "thresholds": result.thresholds}
    with pytest.raises(HardenError, match="clippable layers: relu1, relu2"):
        search_thresholds(cnn, digits, ClipSearchConfig(layers=("conv1",)))


# --- end to end: a trained model, searched on validation, evaluated on test ---------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["zero", "saturate"])
def test_clipped_model_beats_baseline_under_faults(digits, tmp_path_factory, mode):
    """cnn-digits trained, thresholds searched on the validation split; on the test split, under bit
    flips at 3e-3 (where the unclipped model drops from 0.97 to about 0.65), paired over 100 fault maps."""
    from pathlib import Path

    from hwflow.campaign.engine import TrialEvaluator
    from hwflow.convert import HlsOptions
    from hwflow.harden.thresholds import ClipSearchConfig, _convert, sample_faultmaps, search_thresholds
    from hwflow.report.stats import t_interval
    from hwflow.zoo.train import TrainConfig, load_or_train

    out = Path(tmp_path_factory.getbasetemp()) / "clipact-models" / "cnn-digits.h5"
    trained = load_or_train(TrainConfig("cnn-digits", out=out), progress=False).model
    result = search_thresholds(trained, digits, ClipSearchConfig(mode=mode))
    assert result.score > result.baseline_score
    clipped_eval = TrialEvaluator(*_convert(result.model, HlsOptions(), "clipped"), digits.x_test, digits.y_test)
    base_eval = TrialEvaluator(*_convert(trained, HlsOptions(), "baseline"), digits.x_test, digits.y_test)
    maps = sample_faultmaps(ClipSearchConfig(rates=(3e-3,), trials=100, seed=12345), clipped_eval.image)[0]
    n = len(digits.y_test)
    diff = [(clipped_eval.evaluate(m).correct - base_eval.evaluate(m).correct) / n for m in maps]
    mean, low, high, _ = t_interval(diff)
    print(f"clipact {mode}: test accuracy gain at bitflip 3e-3 {mean:+.4f} (95% CI {low:+.4f} .. {high:+.4f}); "
          f"thresholds {result.hardware_thresholds}; search {result.seconds:.1f} s")
    assert low > 0
