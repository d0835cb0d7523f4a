"""The published architectures of the zoo (jet-mlp, resnet8, rn07, ds-cnn): topology as their sources
give it, stored weight bits, data-set choice (CIFAR-10 or fashion-mnist-32), brief training, and bit-exact
agreement of the trained models with hls4ml's C simulation; jet-mlp end to end through a campaign."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest

from hwflow.errors import DatasetError
from hwflow.zoo import ZOO, TrainConfig, build_model, check_supported, train
from hwflow.zoo.models import logits_model
from tests.conftest import needs_fmnist, needs_gxx, random_bn_statistics

PUBLISHED = ("jet-mlp", "resnet8", "rn07", "ds-cnn")

STORED = {
    # (stored words, stored bits) in hls4ml 1.3.0's weight memory, io_stream, batch norms with statistics
    # (an untrained batch norm with zero bias is folded by hls4ml into the layer before it; see docs/zoo.md).
    "jet-mlp": (4_389, 26_334),  # 6-bit weights and biases
    "resnet8": (78_186, 629_328),  # 8-bit weights, 16-bit batch-norm scale and bias: the issue's ~80k / ~600k
    "rn07": (57_582, 460_656),  # batch norms folded into 8-bit kernels and biases
    "ds-cnn": (22_794, 191_568),  # depthwise kernels 8-bit, batch norms 16-bit
}


def _convert(model, io: str = "stream"):
    from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls

    with tempfile.TemporaryDirectory() as tmp:
        hls = convert(model, HlsOptions.make(io), tmp)
        return program_from_hls(hls), image_from_hls(hls)


# --- topology -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_models_build(name):
    spec = ZOO[name]
    assert spec.source  # says where the architecture comes from
    model = build_model(name)
    check_supported(model)
    assert tuple(model.input_shape[1:]) == spec.input_shape
    assert model.output_shape == (None, 5 if name == "jet-mlp" else 10)
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))
    assert logits_model(model).layers[-1].name == "out"
    assert logits_model(model).get_layer("out").activation.__name__ == "linear"


def test_jet_mlp_is_the_tutorials():
    model = build_model("jet-mlp")
    dense = [layer for layer in model.layers if type(layer).__name__ == "QDense"]
    assert [layer.units for layer in dense] == [64, 32, 32, 5]
    for layer in dense:
        for q in (layer.kernel_quantizer_internal, layer.bias_quantizer_internal):
            assert (q.bits, q.integer, q.alpha) == (6, 0, 1)
    relus = [layer for layer in model.layers if type(layer).__name__ == "QActivation"]
    assert [(r.quantizer.bits, r.quantizer.integer) for r in relus] == [(6, 0)] * 3
    assert model.layers[-1].name == "softmax"
    assert model.layers[-1].activation.__name__ == "softmax"


def test_rn07_is_the_published_stack():
    model = build_model("rn07")
    convs = [layer for layer in model.layers if type(layer).__name__ == "QConv2DBatchnorm"]
    assert [c.filters for c in convs] == [32, 4, 32, 32, 32]  # RN07.yml filters, the second stack's pair
    assert [c.kernel_size for c in convs] == [(1, 1)] + [(4, 4)] * 4
    assert [c.strides for c in convs] == [(1, 1)] * 3 + [(4, 4), (1, 1)]
    assert {c.padding for c in convs} == {"same"}
    for c in convs:
        assert (c.kernel_quantizer_internal.bits, c.kernel_quantizer_internal.integer) == (8, 2)
    relus = [layer for layer in model.layers if type(layer).__name__ == "QActivation"]
    assert {(r.quantizer.bits, r.quantizer.integer) for r in relus} == {(8, 2)}
    assert model.get_layer("flatten").output_shape == (None, 8 * 8 * 32)  # no pooling (avg_pooling: 0)
    assert not any(type(layer).__name__ == "Add" for layer in model.layers)  # skip: 0


def test_resnet8_is_mlperf_tinys():
    model = build_model("resnet8")
    adds = [layer for layer in model.layers if type(layer).__name__ == "Add"]
    assert len(adds) == 3
    for stack, (filters, stride) in enumerate(((16, 1), (32, 2), (64, 2)), 1):
        conv1 = model.get_layer(f"s{stack}_conv1")
        assert (conv1.filters, conv1.strides, conv1.kernel_size) == (filters, (stride, stride), (3, 3))
        if stride == 1:  # identity shortcut: the stack's input goes straight into the Add
            assert f"s{stack}_shortcut" not in [layer.name for layer in model.layers]
        else:
            short = model.get_layer(f"s{stack}_shortcut")
            assert (short.filters, short.kernel_size, short.strides) == (filters, (1, 1), (2, 2))
    assert model.get_layer("pool").output_shape == (None, 1, 1, 64)
    assert model.get_layer("out").kernel_quantizer_internal.bits == 8


def test_ds_cnn_is_depthwise_separable():
    model = build_model("ds-cnn")
    depthwise = [layer for layer in model.layers if type(layer).__name__ == "QDepthwiseConv2D"]
    assert len(depthwise) == 4
    assert all(d.kernel_size == (3, 3) and d.padding == "same" for d in depthwise)
    pointwise = [model.get_layer(f"pw{i}") for i in range(1, 5)]
    assert all(p.kernel_size == (1, 1) and p.filters == 64 for p in pointwise)
    assert model.get_layer("conv1").strides == (2, 2)
    assert model.get_layer("pool").output_shape == (None, 1, 1, 64)


@pytest.mark.parametrize("name", PUBLISHED)
def test_stored_weight_bits(name):
    """What a fault campaign draws from: the words of the WeightImage hls4ml's firmware stores."""
    _, image = _convert(random_bn_statistics(build_model(name)))
    assert (image.total_words, image.total_bits) == STORED[name]


# --- data sets ------------------------------------------------------------------------------------


@pytest.fixture
def tiny_cifar(tmp_path, monkeypatch):
    """A CIFAR-10 directory of 40 random images per batch, in the exact pickle format."""
    from hwflow.data import cifar

    monkeypatch.delenv(cifar.ENV_VAR, raising=False)
    root = tmp_path / cifar.BATCHES_DIR
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in (*cifar.TRAIN_BATCHES, cifar.VAL_BATCH, cifar.TEST_BATCH):
        cifar.write_batch(root / name, rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
                          list(rng.integers(0, 10, 40)), name)
    cifar.write_meta(root / cifar.META)
    return root


def test_image_models_use_cifar_where_found_else_fashion_mnist_32(tiny_cifar, monkeypatch):
    from hwflow.data.cifar import ENV_VAR

    for name in ("resnet8", "rn07", "ds-cnn"):
        assert ZOO[name].default_dataset() == "fashion-mnist-32"
        assert TrainConfig(name).resolved().dataset == "fashion-mnist-32"
        assert ZOO[name].default_dataset(tiny_cifar.parent) == "cifar-10"
        assert TrainConfig(name, data_root=tiny_cifar).resolved().dataset == "cifar-10"
    monkeypatch.setenv(ENV_VAR, str(tiny_cifar))
    assert TrainConfig("resnet8").resolved().dataset == "cifar-10"
    assert TrainConfig("resnet8", dataset="fmnist-32").resolved().dataset == "fashion-mnist-32"  # as given


def test_jet_mlp_needs_a_data_set_and_keeps_its_bits(tmp_path):
    with pytest.raises(DatasetError, match=r"'jet-mlp' has no data set of its own: pass one \(--dataset\).*\(16,\)"):
        TrainConfig("jet-mlp").resolved()
    config = TrainConfig("jet-mlp", dataset=str(tmp_path / "jets.npz")).resolved()
    assert (config.weight_bits, config.act_bits, config.weight_integer) == (6, 6, 0)
    assert config.out.name == "jet-mlp-w6i0a6-s0.h5"
    assert TrainConfig("rn07", dataset="digits").resolved().weight_integer == 2
    assert TrainConfig("resnet8", dataset="digits", weight_bits=6).resolved().weight_bits == 6


# --- training and the C simulation ------------------------------------------------------------------


def _jets(path, seed: int = 0):
    """A 16-feature, 5-class .npz like the jet-tagging data's high-level features: Gaussian classes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (5, 16))

    def split(n):
        y = rng.integers(0, 5, n)
        return (centres[y] + rng.normal(0, 0.7, (n, 16))).astype(np.float32), y

    (xtr, ytr), (xte, yte) = split(3000), split(500)
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return path


@pytest.fixture(scope="module")
def jet(tmp_path_factory):
    where = tmp_path_factory.mktemp("jet")
    data = _jets(where / "jets.npz")
    result = train(TrainConfig("jet-mlp", dataset=str(data), epochs=8, batch_size=128, learning_rate=3e-3,
                               out=where / "jet.h5"), progress=False)
    return result, data


@pytest.mark.slow
@needs_gxx
def test_jet_mlp_end_to_end(jet, tmp_path):
    """Trains a few epochs, converts (logits, and with its softmax kept), equals the C simulation, and runs a
    small fault campaign."""
    from hwflow.campaign import TrialEvaluator, parse_spec, run_campaign
    from hwflow.convert import HlsOptions
    from hwflow.data import load_dataset
    from hwflow.faults import fault_model_from_spec
    from hwflow.results import ResultsDB
    from hwflow.verify import build_csim, compare
    from hwflow.zoo import load_model

    result, data = jet
    assert result.metadata["dataset"] == str(data.resolve())
    assert result.metadata["weight_bits"] == 6
    assert result.test_accuracy > 0.8, result.test_accuracy  # chance 0.2
    model = load_model(result.path)
    assert model.layers[-1].name == "softmax"  # saved as published, softmax included

    d = load_dataset(data)
    csim = build_csim(model, HlsOptions.make("parallel"), tmp_path / "hls")
    assert compare(csim, d.x_test).mismatches == 0
    # As published, softmax kept: hls4ml's softmax table emulated and compared after it too.
    kept = build_csim(model, HlsOptions.make("parallel", keep_softmax=True), tmp_path / "hls-softmax")
    assert kept.program.layers[-1].kind.value == "softmax"
    assert compare(kept, d.x_test).mismatches == 0
    x, y = d.x_test[:200], d.y_test[:200]
    evaluator = TrialEvaluator(csim.program, csim.image, x, y)
    rng = np.random.default_rng(3)
    hurt = 0
    for i, (spec, rate) in enumerate([({"model": "bitflip"}, 1e-3), ({"model": "bitflip"}, 1e-2),
                                      ({"model": "stuck-at", "value": "mixed"}, 5e-3)] * 4):
        faultmap = fault_model_from_spec(spec, rate).sample(csim.image, rng)
        outcome = evaluator.evaluate(faultmap)
        assert outcome == evaluator.full_evaluate(faultmap, x), (spec, rate, i)
        hurt += outcome.mismatches > 0
    assert hurt > 2

    spec = parse_spec({"name": "jets", "seed": 1, "dataset": str(data), "samples": 200,
                       "models": [{"path": str(result.path), "name": "jet"}], "rates": [1e-3, 1e-2], "trials": 3,
                       "faults": [{"model": "bitflip"}, {"model": "stuck-at", "value": "mixed"}]},
                      str(tmp_path / "spec.yaml"))
    done = run_campaign(spec, tmp_path / "r.sqlite", workers=1, progress=False)
    with ResultsDB(tmp_path / "r.sqlite") as db:
        rows = db.trials()
        (baseline,) = db.baselines("jets")
    assert len(rows) == 2 * 2 * 3 == done.planned
    assert baseline.correct == evaluator.golden_correct  # the campaign's fault-free model is the one verified


@pytest.fixture(scope="module")
def fmnist32_subset(tmp_path_factory):
    """600 training, 100 validation and 100 test images of fashion-mnist-32, as a .npz (training on all
    55,000 takes minutes per epoch here)."""
    import os

    from hwflow.data import load_dataset
    from tests.conftest import FMNIST_DIR, FMNIST_MISSING

    if not os.path.exists(f"{FMNIST_DIR}/t10k-images-idx3-ubyte.gz"):
        pytest.fail(FMNIST_MISSING)
    d = load_dataset("fashion-mnist-32")
    path = tmp_path_factory.mktemp("fm32") / "fm32.npz"
    np.savez(path, x_train=d.x_train[:600], y_train=d.y_train[:600], x_val=d.x_val[:100], y_val=d.y_val[:100],
             x_test=d.x_test[:100], y_test=d.y_test[:100])
    return path


TRAIN_FLOORS = {"resnet8": 0.3, "ds-cnn": 0.2}
"""Test accuracy after 3 epochs on 600 images (chance 0.1); rn07 trains on the random tiny CIFAR-10."""


@pytest.mark.slow
@needs_gxx
@needs_fmnist
@pytest.mark.parametrize("name", ["resnet8", "rn07", "ds-cnn"])
def test_image_model_trains_and_equals_the_c_simulation(name, fmnist32_subset, tiny_cifar, tmp_path):
    """Brief training (rn07 on the CIFAR-10 files by --data-root, the others on fashion-mnist-32), then the
    trained model converted for io_stream equals hls4ml's C simulation on every output word, and the
    campaign engine equals full emulation on it."""
    from hwflow.campaign import TrialEvaluator
    from hwflow.convert import HlsOptions
    from hwflow.data import load_dataset
    from hwflow.faults import fault_model_from_spec
    from hwflow.verify import build_csim, compare

    if name == "rn07":
        config = TrainConfig(name, data_root=tiny_cifar, epochs=1, batch_size=32, out=tmp_path / f"{name}.h5")
    else:
        config = TrainConfig(name, dataset=str(fmnist32_subset), epochs=3, batch_size=32,
                             out=tmp_path / f"{name}.h5")
    result = train(config, progress=False)
    if name == "rn07":
        assert result.metadata["dataset"] == "cifar-10"
        d = load_dataset("cifar-10", root=tiny_cifar)
    else:
        assert result.metadata["dataset"] == str(fmnist32_subset.resolve())
        assert result.test_accuracy >= TRAIN_FLOORS[name], result.test_accuracy
        d = load_dataset(fmnist32_subset)
    csim = build_csim(result.model, HlsOptions.make("stream"), tmp_path / "hls")
    check = compare(csim, d.x_test[:24])
    assert check.mismatches == 0, check
    # The campaign engine on this design (merges, folded and depthwise layers, average pooling) equals
    # full emulation at the papers' rates, where these models flip several bits per trial.
    x, y = d.x_test[:24], d.y_test[:24]
    evaluator = TrialEvaluator(csim.program, csim.image, x, y)
    rng = np.random.default_rng(len(name))
    for spec, rate in [({"model": "bitflip"}, 1e-5), ({"model": "bitflip"}, 1e-4),
                       ({"model": "stuck-at", "value": "mixed"}, 1e-4), ({"model": "bitflip"}, 1e-3)]:
        faultmap = fault_model_from_spec(spec, rate).sample(csim.image, rng)
        assert evaluator.evaluate(faultmap) == evaluator.full_evaluate(faultmap, x), (spec, rate)


def test_campaign_spec_takes_the_zoo_models_data_and_bits(tiny_cifar, tmp_path):
    from hwflow.campaign import parse_spec

    def spec(**over):
        return parse_spec({"name": "z", "seed": 1, "rates": [1e-4], "trials": 1, "faults": [{"model": "bitflip"}],
                           **over}, str(tmp_path / "spec.yaml"))

    plain = spec(models=[{"zoo": "resnet8"}, {"zoo": "rn07"}])
    assert plain.dataset == "fashion-mnist-32"
    assert [(m.weight_bits, m.act_bits, m.weight_integer) for m in plain.models] == [(8, 8, 0), (8, 8, 2)]
    assert spec(models=[{"zoo": "ds-cnn"}], data_root=str(tiny_cifar)).dataset == "cifar-10"
    jets = spec(models=[{"zoo": "jet-mlp", "weight_bits": 8}], dataset=str(tmp_path / "jets.npz"))
    assert (jets.models[0].weight_bits, jets.models[0].act_bits) == (8, 6)
