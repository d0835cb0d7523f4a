"""FlatENN's SAQ: the SAM/ASAM step against a hand computation, the sparse variant, the sharpness
measure, the sidecar records and the ``hwflow train --method`` options."""

from __future__ import annotations

import numpy as np
import pytest

from hwflow.errors import HardenError
from hwflow.harden.saq import (
    ASAM_ETA,
    QuantizedPerturbation,
    check_options,
    hardening_record,
    make_trainer,
    sam_perturbation,
)
from hwflow.harden.sharpness import DEFAULT_SAMPLES, activation_sparsity, cross_entropy, sharpness
from hwflow.zoo import TrainConfig, build_model, check_supported, load_model, load_or_train, read_sidecar, train

LR = 0.5
RHO = 0.3
EPOCHS = 8  # mlp-digits: enough for the sparsity penalty to show (0.5 -> 0.7 zeros)


def _tiny(seed: int = 0):
    """QDense -> BatchNormalization -> quantized ReLU -> QDense: quantized weights and plain ones."""
    import qkeras
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    init = tf.keras.initializers.RandomUniform(-0.6, 0.6, seed=seed)
    inputs = tf.keras.Input((4,), name="image")
    x = qkeras.QDense(
        5,
        kernel_quantizer=qkeras.quantized_bits(8, 0, alpha=1),
        bias_quantizer=qkeras.quantized_bits(8, 0, alpha=1),
        kernel_initializer=init,
        bias_initializer=tf.keras.initializers.RandomUniform(-0.2, 0.2, seed=seed + 1),
        name="fc1",
    )(inputs)
    x = tf.keras.layers.BatchNormalization(name="bn1")(x)
    x = qkeras.QActivation(qkeras.quantized_relu(8, 3), name="relu1")(x)
    x = qkeras.QDense(
        3,
        kernel_quantizer=qkeras.quantized_bits(8, 0, alpha=1),
        bias_quantizer=qkeras.quantized_bits(8, 0, alpha=1),
        kernel_initializer=tf.keras.initializers.RandomUniform(-0.6, 0.6, seed=seed + 2),
        name="out",
    )(x)
    return tf.keras.Model(inputs, x)


def _batch():
    rng = np.random.default_rng(7)
    return rng.normal(size=(16, 4)).astype(np.float32), rng.integers(0, 3, 16)


def _sam_step(model, method="saq", **kwargs):
    import tensorflow as tf

    trainer = make_trainer(model, method, **kwargs)
    trainer.compile(optimizer=tf.keras.optimizers.SGD(LR))
    x, y = _batch()
    with trainer.perturbation:
        trainer.train_on_batch(x, y)
    return model


def _plain_step(model):
    import tensorflow as tf

    model.compile(
        optimizer=tf.keras.optimizers.SGD(LR), loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x, y = _batch()
    model.train_on_batch(x, y)
    return model


def _hand_sam_step(model, asam: bool):
    """The SAM (ASAM) update of ``model``'s trainable weights, written out with plain TF ops."""
    import tensorflow as tf

    x, y = _batch()
    fc1, bn1, relu1, out = (model.get_layer(n) for n in ("fc1", "bn1", "relu1", "out"))
    q = fc1.kernel_quantizer_internal
    latent = [fc1.kernel, fc1.bias, bn1.gamma, bn1.beta, out.kernel, out.bias]
    # What is perturbed: Q(w) for quantized arrays, the variable itself for batch normalization.
    point = [q(fc1.kernel), q(fc1.bias), tf.identity(bn1.gamma), tf.identity(bn1.beta), q(out.kernel), q(out.bias)]
    assert all(np.all(np.abs(w.numpy()) < 0.99) for w in (fc1.kernel, fc1.bias, out.kernel, out.bias))  # no clipping

    def loss(params):
        w1, b1, gamma, beta, w2, b2 = params
        h = tf.matmul(x, w1) + b1
        mean, var = tf.nn.moments(h, axes=[0])
        h = gamma * (h - mean) / tf.sqrt(var + bn1.epsilon) + beta
        a = relu1.quantizer(h)
        logits = tf.matmul(a, w2) + b2
        return tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))

    def grad(params):
        params = [tf.cast(p, tf.float32) for p in params]
        with tf.GradientTape() as tape:
            tape.watch(params)
            value = loss(params)
        return [g.numpy().astype(np.float64) for g in tape.gradient(value, params)]

    g = grad(point)
    v = [p.numpy().astype(np.float64) for p in point]
    if asam:
        t = [np.abs(vi) + ASAM_ETA for vi in v]
        norm = np.sqrt(sum(np.sum((ti * gi) ** 2) for ti, gi in zip(t, g, strict=True)))
        e = [RHO * ti * ti * gi / norm for ti, gi in zip(t, g, strict=True)]
    else:
        norm = np.sqrt(sum(np.sum(gi**2) for gi in g))
        e = [RHO * gi / norm for gi in g]
    # Quantizers pass the gradient straight through (no clipping here), so dL/dw = dL/dQ(w).
    g_sharp = grad([vi + ei for vi, ei in zip(v, e, strict=True)])
    return [w.numpy() - LR * gs for w, gs in zip(latent, g_sharp, strict=True)]


def _trainable(model):
    return [v.numpy() for v in model.trainable_variables]


# --- the SAM step -------------------------------------------------------------------------------


@pytest.mark.parametrize("asam", [False, True])
def test_sam_step_matches_hand_computation(asam):
    expected = _hand_sam_step(_tiny(), asam)
    model = _sam_step(_tiny(), rho=RHO, asam=asam)
    got = _trainable(model)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_sam_step_differs_from_plain_and_asam_from_sam():
    start = _trainable(_tiny())
    plain = _trainable(_plain_step(_tiny()))
    sam = _trainable(_sam_step(_tiny(), rho=RHO))
    asam = _trainable(_sam_step(_tiny(), rho=RHO, asam=True))
    for a, b in ((plain, sam), (sam, asam), (plain, asam)):
        assert max(np.max(np.abs(u - v)) for u, v in zip(a, b, strict=True)) > 1e-4
    for updated in (plain, sam, asam):  # both kernels moved (the bias before batch norm has no gradient)
        assert not np.array_equal(updated[0], start[0])
        assert not np.array_equal(updated[4], start[4])


def test_sam_step_restores_perturbation_and_keeps_unperturbed_bn_statistics():
    plain = _plain_step(_tiny())
    model = _sam_step(_tiny(), rho=RHO)
    bn_plain, bn_sam = plain.get_layer("bn1"), model.get_layer("bn1")
    # Only the unperturbed pass moves the moving statistics: the same as one plain step.
    np.testing.assert_array_equal(bn_sam.moving_mean.numpy(), bn_plain.moving_mean.numpy())
    np.testing.assert_array_equal(bn_sam.moving_variance.numpy(), bn_plain.moving_variance.numpy())
    # The quantizers are the originals again: the model saves and converts as a plain QKeras model.
    assert type(model.get_layer("fc1").kernel_quantizer_internal).__name__ == "quantized_bits"
    assert model.get_layer("out").get_config()["kernel_quantizer"]["class_name"] == "quantized_bits"


def test_quantized_perturbation_adds_after_the_quantizer():
    import tensorflow as tf

    model = _tiny()
    x, _ = _batch()
    before = model.predict(x, verbose=0)
    perturbation = QuantizedPerturbation(model)
    assert [(s.layer.name, s.attribute) for s in perturbation.slots] == [
        ("fc1", "kernel_quantizer_internal"),
        ("fc1", "bias_quantizer_internal"),
        ("out", "kernel_quantizer_internal"),
        ("out", "bias_quantizer_internal"),
    ]
    with perturbation:
        forward = tf.function(lambda b: model(b, training=False))
        np.testing.assert_array_equal(forward(x).numpy(), before)
        # A shift of a thousandth of a step survives: the float weights would round it away.
        perturbation.slots[3].eps.assign(np.full(3, 1e-3 / 128, np.float32))
        assert np.max(np.abs(forward(x).numpy() - before - 1e-3 / 128)) < 1e-6
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)
    assert all(float(np.max(np.abs(s.eps.numpy()))) == 0.0 for s in perturbation.slots)


def test_sam_perturbation_formula():
    import tensorflow as tf

    g = [tf.constant([3.0, 0.0]), tf.constant([[4.0]])]
    v = [tf.constant([1.0, -2.0]), tf.constant([[0.0]])]
    np.testing.assert_allclose([e.numpy() for e in sam_perturbation(g, v, 0.5)][0], [0.3, 0.0], rtol=1e-6)
    e = sam_perturbation(g, v, 0.5, asam=True, eta=0.0)
    # T = |v|: the zero weight is not perturbed, the other gets rho * T^2 g / ||T g|| = 0.5 * 3 / 3.
    np.testing.assert_allclose(e[0].numpy(), [0.5, 0.0], rtol=1e-6)
    np.testing.assert_allclose(e[1].numpy(), [[0.0]], atol=0)


# --- training with the methods ------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("saq")
    return {
        method: train(
            TrainConfig(
                "mlp-digits", epochs=EPOCHS, seed=1, method=method, sparsity=5.0, rho=0.1, out=root / f"{method}.h5"
            ),
            progress=False,
        )
        for method in ("standard", "saq", "sparse")
    }


@pytest.mark.slow
def test_sparse_penalty_raises_activation_sparsity(runs, digits):
    measured = {m: activation_sparsity(r.model, digits.x_test).overall for m, r in runs.items()}
    assert measured["sparse"] > measured["standard"] + 0.1
    assert runs["sparse"].activation_sparsity == measured["sparse"]
    assert runs["sparse"].test_accuracy > 0.8


@pytest.mark.slow
def test_sidecar_records_method_sharpness_and_sparsity(runs):
    for method, result in runs.items():
        side = read_sidecar(result.path)
        assert side["method"] == method
        assert side["sharpness"] == result.sharpness
        assert side["sharpness_measure"]["samples"] == DEFAULT_SAMPLES
        assert side["activation_sparsity"] == result.activation_sparsity
        assert set(side["activation_sparsity_layers"]) == {"relu1"}
    assert read_sidecar(runs["standard"].path)["hardening"] == {
        "methods": [],
        "training": {"method": "standard", "rho": None, "asam": None, "sparsity": None},
    }
    assert read_sidecar(runs["saq"].path)["hardening"] == {
        "methods": ["saq"],
        "training": {"method": "saq", "rho": 0.1, "asam": False, "sparsity": None},
    }
    assert read_sidecar(runs["sparse"].path)["hardening"] == {
        "methods": ["sparse"],
        "training": {"method": "sparse", "rho": None, "asam": None, "sparsity": 5.0},
    }


@pytest.mark.slow
def test_saq_model_is_a_plain_zoo_model(runs, digits):
    loaded = load_model(runs["saq"].path)
    check_supported(loaded)
    assert loaded.get_config() == build_model("mlp-digits", seed=1).get_config()
    np.testing.assert_array_equal(
        loaded.predict(digits.x_test, verbose=0), runs["saq"].model.predict(digits.x_test, verbose=0)
    )
    assert not np.array_equal(loaded.get_weights()[0], load_model(runs["standard"].path).get_weights()[0])


@pytest.mark.slow
def test_saq_training_is_repeatable(runs, tmp_path):
    again = train(
        TrainConfig("mlp-digits", epochs=EPOCHS, seed=1, method="saq", rho=0.1, out=tmp_path / "again.h5"),
        progress=False,
    )
    for a, b in zip(again.model.get_weights(), runs["saq"].model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert again.sharpness == runs["saq"].sharpness


@pytest.mark.slow
def test_cache_is_reused_for_the_same_method_only(runs, tmp_path):
    path = runs["saq"].path
    same = load_or_train(
        TrainConfig("mlp-digits", epochs=EPOCHS, seed=1, method="saq", rho=0.1, out=path), progress=False
    )
    assert same.reused
    assert same.sharpness == runs["saq"].sharpness
    # The standard model's sidecar stands for any rho: SAM's parameters do not apply to it.
    standard = load_or_train(
        TrainConfig("mlp-digits", epochs=EPOCHS, seed=1, rho=0.7, sparsity=2.0, out=runs["standard"].path),
        progress=False,
    )
    assert standard.reused
    # A sidecar written before the training methods existed describes a standard model.
    legacy = tmp_path / "legacy.h5"
    legacy.write_bytes(runs["standard"].path.read_bytes())
    side = read_sidecar(runs["standard"].path)
    for key in ("method", "rho", "asam", "sparsity", "hardening", "sharpness", "activation_sparsity"):
        side.pop(key)
    from hwflow.zoo.loading import write_sidecar

    write_sidecar(legacy, side)
    reused = load_or_train(TrainConfig("mlp-digits", epochs=EPOCHS, seed=1, out=legacy), progress=False)
    assert reused.reused
    assert reused.sharpness is None
    other = load_or_train(
        TrainConfig("mlp-digits", epochs=EPOCHS, seed=1, method="saq", rho=0.2, out=legacy), progress=False
    )
    assert not other.reused
    assert read_sidecar(legacy)["rho"] == 0.2


# --- the sharpness measure ----------------------------------------------------------------------


@pytest.mark.slow
def test_sharpness_is_seeded_positive_and_leaves_the_model_alone(runs, digits):
    model = runs["standard"].model
    weights = model.get_weights()
    first = sharpness(model, digits.x_test, digits.y_test, eps=0.1, samples=6, seed=3)
    again = sharpness(model, digits.x_test, digits.y_test, eps=0.1, samples=6, seed=3)
    assert first == again
    other = sharpness(model, digits.x_test, digits.y_test, eps=0.1, samples=6, seed=4)
    assert other.rises != first.rises
    assert first.loss_rise > 0
    assert other.loss_rise > 0
    larger = sharpness(model, digits.x_test, digits.y_test, eps=0.3, samples=6, seed=3)
    assert larger.loss_rise > first.loss_rise
    zero = sharpness(model, digits.x_test, digits.y_test, eps=0.0, samples=2)
    assert zero.rises == (0.0, 0.0)
    logits = model.predict(digits.x_test, verbose=0)
    assert first.base_loss == pytest.approx(cross_entropy(logits, digits.y_test), rel=1e-6)
    for a, b in zip(model.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_sharpness_perturbs_plain_kernels_too():
    import tensorflow as tf

    inputs = tf.keras.Input((4,))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(3, name="d")(inputs))
    x, y = _batch()
    weights = model.get_weights()
    result = sharpness(model, x, y, eps=0.2, samples=3)
    assert all(r != 0.0 for r in result.rises)
    for a, b in zip(model.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_activation_sparsity_counts_exact_zeros():
    model = _tiny()
    x, _ = _batch()
    import tensorflow as tf

    acts = tf.keras.Model(model.inputs, model.get_layer("relu1").output).predict(x, verbose=0)
    result = activation_sparsity(model, x, batch_size=5)
    assert result.overall == np.count_nonzero(acts == 0) / acts.size
    assert result.layers == {"relu1": result.overall}
    assert 0 < result.overall < 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eps": -0.1}, "eps"),
        ({"samples": 0}, "samples"),
        ({"seed": -1}, "seed"),
        ({"y": np.zeros(3, int)}, "labels"),
        ({"y": np.full(16, 9)}, r"labels must be in 0..2"),
    ],
)
def test_sharpness_rejects_bad_arguments(kwargs, message):
    x, y = _batch()
    kwargs = {"y": y, **kwargs}
    with pytest.raises(HardenError, match=message):
        sharpness(_tiny(), x, **kwargs)


# --- options and the command line ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "flat"}, "method must be one of standard, saq, sparse, sparse-saq"),
        ({"method": "saq", "rho": 0.0}, "rho must be positive"),
        ({"method": "sparse", "sparsity": 0.0}, "sparsity must be positive"),
        ({"method": "sparse-saq", "sparsity": -1.0}, "sparsity must be positive"),
        ({"rho": float("nan")}, "rho must be a finite number"),
        ({"asam": 1}, "asam must be True or False"),
    ],
)
def test_bad_method_options(kwargs, message):
    with pytest.raises(HardenError, match=message):
        TrainConfig("mlp-digits", **kwargs).resolved()


def test_hardening_record_of_each_method():
    assert hardening_record("sparse-saq", 0.2, True, 0.5) == {
        "methods": ["sparse", "saq"],
        "training": {"method": "sparse-saq", "rho": 0.2, "asam": True, "sparsity": 0.5},
    }
    assert hardening_record("standard", 0.2, True, 0.5)["methods"] == []
    check_options("saq", 0.05, False, 0.0)  # the sparsity is not used by saq


def test_make_trainer_refuses_standard():
    with pytest.raises(HardenError, match="make_trainer is for saq"):
        make_trainer(_tiny(), "standard")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "flat"], "method must be one of standard, saq, sparse, sparse-saq, got 'flat'"),
        (["--rho", "0.1"], "--rho: not used by --method standard"),
        (["--method", "sparse", "--asam"], "--asam: not used by --method sparse"),
        (["--method", "saq", "--sparsity", "1"], "--sparsity: not used by --method saq"),
        (["--method", "saq", "--rho", "-1"], "rho must be positive"),
        (["--method", "sparse", "--sparsity", "inf"], "sparsity must be a finite number"),
    ],
)
def test_cli_method_errors(tmp_path, capsys, argv, message):
    from hwflow.cli import main

    assert main(["train", "--model", "mlp-digits", *argv, "--out", str(tmp_path / "m.h5")]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "m.h5").exists()


@pytest.mark.slow
def test_cli_train_saq(tmp_path, capsys):
    from hwflow.cli import main

    out = tmp_path / "saq.h5"
    argv = [
        "train",
        "--model",
        "mlp-digits",
        "--epochs",
        "1",
        "--method",
        "sparse-saq",
        "--rho",
        "0.2",
        "--asam",
        "--sparsity",
        "1.5",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "method sparse-saq (rho 0.2, ASAM, sparsity 1.5)" in line
    assert "sharpness" in line
    assert "activation sparsity" in line
    side = read_sidecar(out)
    assert side["hardening"] == {
        "methods": ["sparse", "saq"],
        "training": {"method": "sparse-saq", "rho": 0.2, "asam": True, "sparsity": 1.5},
    }
    check_supported(load_model(out))
