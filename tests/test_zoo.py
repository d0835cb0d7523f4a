"""The model zoo: shapes and quantizers, repeatable training, loading users' files, the train command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hwflow.errors import ModelError, UnsupportedLayerError
from hwflow.zoo import ZOO, TrainConfig, build_model, check_supported, load_model, load_or_train, read_sidecar, train
from hwflow.zoo.models import ZooSpec, register


def _weights_equal(a, b) -> bool:
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(np.array_equal(u, v) for u, v in zip(wa, wb, strict=True))


# --- building -----------------------------------------------------------------------------------

OWN_ZOO = sorted(name for name, z in ZOO.items() if not z.source)
"""The zoo's own small models; the published architectures (their own shapes, integer bits, a softmax) are
tested in tests/test_zoo_new.py."""


@pytest.mark.parametrize("bits", [4, 6, 8])
@pytest.mark.parametrize("name", OWN_ZOO)
def test_build_every_model(name, bits):
    model = build_model(name, weight_bits=bits, act_bits=bits)
    assert model.output_shape == ((None, 64) if ZOO[name].task == "autoencode" else (None, 10))  # ad08: the pixels
    assert tuple(model.input_shape[1:]) == ZOO[name].input_shape
    names = [layer.name for layer in model.layers]
    assert names[-1] == "out"
    assert len(names) == len(set(names))
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "Softmax" not in kinds
    out = model.get_layer("out")
    assert out.activation.__name__ == "linear"  # logits (an autoencoder's: the reconstruction)
    assert out.kernel_quantizer_internal.bits == bits
    assert out.kernel_quantizer_internal.alpha == 1
    relu = model.get_layer("relu1")
    assert relu.quantizer.bits == bits
    assert relu.quantizer.integer == (3 if bits >= 6 else 2)
    check_supported(model)


def test_layer_names_of_cnn_fmnist():
    # Not "input": hls4ml reserves that name for its own node.
    model = build_model("cnn-fmnist")
    assert [layer.name for layer in model.layers] == [
        "image", "conv1", "bn1", "relu1", "pool1", "conv2", "bn2", "relu2", "pool2",
        "conv3", "bn3", "relu3", "pool3", "flatten",
        "fc1", "bn4", "relu4", "fc2", "bn5", "relu5", "out",
    ]  # fmt: skip


def test_build_is_seeded():
    assert _weights_equal(build_model("cnn-digits", seed=3), build_model("cnn-digits", seed=3))
    assert not _weights_equal(build_model("cnn-digits", seed=3), build_model("cnn-digits", seed=4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight_bits": 1}, "weight_bits must be in 2..16"),
        ({"weight_bits": 17}, "weight_bits must be in 2..16"),
        ({"act_bits": 1}, "act_bits must be in 2..16"),
        ({"weight_bits": 4, "weight_integer": 4}, r"weight_integer must be in 0..3"),
        ({"weight_integer": -1}, "weight_integer"),
        ({"weight_bits": 8.0}, "must be an integer"),
        ({"seed": -1}, "seed must be"),
    ],
)
def test_bad_bits(kwargs, message):
    with pytest.raises(ModelError, match=message):
        build_model("mlp-digits", **kwargs)


def test_unknown_model_lists_zoo():
    with pytest.raises(ModelError, match="unknown zoo model 'resnet'") as info:
        build_model("resnet")
    for name in ZOO:
        assert name in str(info.value)


def test_registry_refuses_duplicates():
    spec = ZOO["mlp-digits"]
    with pytest.raises(ModelError, match="already registered"):
        register(ZooSpec(**{**spec.__dict__}))


# --- training -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "cnn.h5"
    return train(TrainConfig("cnn-digits", epochs=1, seed=5, out=out), progress=False)


def test_training_is_repeatable(trained, tmp_path):
    again = train(TrainConfig("cnn-digits", epochs=1, seed=5, out=tmp_path / "again.h5"), progress=False)
    assert _weights_equal(trained.model, again.model)
    assert again.test_accuracy == trained.test_accuracy


def test_sidecar(trained):
    assert trained.sidecar == trained.path.with_suffix(".json")
    side = json.loads(trained.sidecar.read_text())
    assert side == read_sidecar(trained.path)
    for key, value in {"model": "cnn-digits", "dataset": "digits", "weight_bits": 8, "act_bits": 8,
                       "weight_integer": 0, "epochs": 1, "seed": 5}.items():  # fmt: skip
        assert side[key] == value
    assert 0.0 <= side["test_accuracy"] <= 1.0
    assert side["test_accuracy"] == trained.test_accuracy
    assert "val_accuracy" in side
    assert "hwflow_version" in side


def test_load_round_trips_predictions(trained):
    from hwflow.data import load_dataset

    x = load_dataset("digits").x_test
    loaded = load_model(trained.path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), trained.model.predict(x, verbose=0))
    check_supported(loaded)


def test_load_or_train_reuses_matching_model(trained, caplog):
    config = TrainConfig("cnn-digits", epochs=1, seed=5, out=trained.path)
    result = load_or_train(config, progress=False)
    assert result.reused
    assert result.test_accuracy == trained.test_accuracy
    assert _weights_equal(result.model, trained.model)


def test_load_or_train_retrains_on_a_different_config(tmp_path):
    config = TrainConfig("mlp-digits", epochs=1, seed=0, out=tmp_path / "m.h5")
    first = load_or_train(config, progress=False)
    assert not first.reused
    second = load_or_train(TrainConfig("mlp-digits", epochs=1, seed=1, out=tmp_path / "m.h5"), progress=False)
    assert not second.reused
    assert read_sidecar(tmp_path / "m.h5")["seed"] == 1


def test_train_rejects_mismatched_data(tmp_path):
    from hwflow.errors import DatasetError

    np.savez(tmp_path / "d.npz", x_train=np.zeros((20, 5, 5)), y_train=np.zeros(20, dtype=int),
             x_test=np.zeros((2, 5, 5)), y_test=np.zeros(2, dtype=int))  # fmt: skip
    config = TrainConfig("mlp-digits", dataset=str(tmp_path / "d.npz"), epochs=1, out=tmp_path / "m.h5")
    with pytest.raises(DatasetError, match=r"takes inputs of shape \(8, 8, 1\)"):
        train(config, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"epochs": 0}, "epochs"), ({"batch_size": -2}, "batch_size"), ({"learning_rate": 0.0}, "learning_rate"),
     ({"out": "model.keras"}, r"\.h5")],
)  # fmt: skip
def test_bad_train_config(kwargs, message):
    with pytest.raises(ModelError, match=message):
        TrainConfig("mlp-digits", **kwargs).resolved()


# --- the zoo models learn --------------------------------------------------------------------------

# Trained with the zoo's defaults (8-bit weights and activations, seed 0), measured here: mlp-digits
# 0.964, cnn-digits 0.967 (digits, 360 test images), cnn-fmnist 0.875 (Fashion-MNIST, 10,000).
# The floors leave about three points for other CPUs' float rounding; chance is 0.1.
ACCURACY_FLOORS = {"mlp-digits": 0.93, "cnn-digits": 0.93, "cnn-fmnist": 0.85}


def test_every_zoo_model_has_a_floor():
    """Every classifier; the autoencoder's AUC is tested in tests/test_metrics_zoo.py, the published
    architectures' training in tests/test_zoo_new.py."""
    assert set(ACCURACY_FLOORS) == {name for name in OWN_ZOO if ZOO[name].task == "classify"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ACCURACY_FLOORS))
def test_zoo_model_learns_its_data_set(name, request, tmp_path):
    """Quantization-aware training with the project's defaults reaches the floor on the test split."""
    from hwflow.data import load_dataset

    if ZOO[name].dataset == "fashion-mnist":
        request.getfixturevalue("require_fmnist")
    result = train(TrainConfig(name, out=tmp_path / f"{name}.h5"), progress=False)
    data = load_dataset(ZOO[name].dataset)
    predicted = np.argmax(result.model.predict(data.x_test, verbose=0), axis=1)
    accuracy = float(np.mean(predicted == data.y_test))  # recomputed, not the trainer's own figure
    assert accuracy == pytest.approx(result.test_accuracy, abs=1e-9)
    assert accuracy >= ACCURACY_FLOORS[name], f"{name}: test accuracy {accuracy:.4f}"


# --- loading users' files -----------------------------------------------------------------------


def test_unsupported_layer_is_named(tmp_path):
    import tensorflow as tf

    inputs = tf.keras.Input((8, 8, 1))
    x = tf.keras.layers.Conv2DTranspose(2, 3, name="my_deconv")(inputs)
    model = tf.keras.Model(inputs, tf.keras.layers.Flatten()(x))
    with pytest.raises(UnsupportedLayerError, match=r"'my_deconv' \(Conv2DTranspose\)"):
        check_supported(model)


def test_unsupported_activations_are_named():
    import qkeras
    import tensorflow as tf

    inputs = tf.keras.Input((4,))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(3, activation="swish", name="d1")(inputs))
    with pytest.raises(UnsupportedLayerError, match="'d1' .Dense. uses activation 'swish'"):
        check_supported(model)
    model = tf.keras.Model(inputs, qkeras.QActivation(qkeras.quantized_relu_po2(4), name="qt")(inputs))
    with pytest.raises(UnsupportedLayerError, match="'qt'"):
        check_supported(model)
    model = tf.keras.Model(inputs, tf.keras.layers.Activation("softmax", name="sm")(inputs))
    check_supported(model)


def test_missing_and_corrupt_files(tmp_path, trained):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "absent.h5")
    with pytest.raises(ModelError, match="is a directory"):
        load_model(tmp_path)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"this is not a model" * 10)
    with pytest.raises(ModelError, match="not an HDF5"):
        load_model(junk)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(trained.path.read_bytes()[:2000])
    with pytest.raises(ModelError, match="truncated.h5"):
        load_model(truncated)


def test_weights_only_file(tmp_path, trained):
    path = tmp_path / "weights.h5"
    trained.model.save_weights(path)
    with pytest.raises(ModelError, match="weights only"):
        load_model(path)


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_unknown_custom_layer_file(tmp_path):
    import tensorflow as tf

    class Twice(tf.keras.layers.Layer):
        def call(self, x):
            return 2 * x

    inputs = tf.keras.Input((4,))
    model = tf.keras.Model(inputs, Twice(name="twice")(inputs))
    path = tmp_path / "custom.h5"
    model.save(path, save_format="h5")
    with pytest.raises(ModelError, match="Keras could not load the model"):
        load_model(path)


# --- the train command --------------------------------------------------------------------------


def test_cli_train_end_to_end(tmp_path, capsys):
    from hwflow.cli import main

    out = tmp_path / "sub" / "mlp.h5"
    rc = main(["train", "--model", "mlp-digits", "--epochs", "1", "--seed", "2", "--quiet", "--out", str(out)])
    assert rc == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "test accuracy" in line
    assert str(out) in line
    side = read_sidecar(out)
    assert side["model"] == "mlp-digits"
    assert side["epochs"] == 1
    assert side["seed"] == 2
    assert load_model(out).output_shape == (None, 10)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "nope"], "unknown zoo model 'nope'"),
        (["--model", "mlp-digits", "--weight-bits", "40"], "weight_bits must be in 2..16"),
        (["--model", "mlp-digits", "--dataset", "imagenet"], "unknown data set 'imagenet'"),
    ],
)
def test_cli_train_errors(tmp_path, capsys, argv, message):
    from hwflow.cli import main

    assert main(["train", *argv, "--out", str(tmp_path / "m.h5")]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
