"""A user's own model, the first time: hls4ml's jet-tagging tutorial MLP and the user's own ``.npz``.

The model is written the way the tutorial writes it (QDense 16-64-32-32-5, ``quantized_bits(6, 0,
alpha=1)``, ``quantized_relu(6)``, a softmax, the last dense layer named ``output``); its labels are
its own predictions, so the accuracy every level reports is known. Also here: the layer names
hls4ml cannot carry (renamed inside, the user's names everywhere outside), data sets taken from the
sidecar or refused, shapes checked up front, and campaign specs read with their mistakes named.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from hwflow.campaign.spec import load_spec, parse_spec
from hwflow.cli import main
from hwflow.convert.names import NameMap, clash
from hwflow.errors import DatasetError, SpecError
from tests.conftest import needs_gxx

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "campaign-own-model.yaml"
FEATURES, CLASSES = 16, 5


def jet_tagger(seed: int = 0):
    """The tutorial's model (hls4ml-tutorial part 4), with seeded weights instead of trained ones."""
    import tensorflow as tf
    from qkeras import QActivation, QDense, quantized_bits, quantized_relu

    def dense(units, name, **kw):
        return QDense(units, name=name, kernel_quantizer=quantized_bits(6, 0, alpha=1),
                      bias_quantizer=quantized_bits(6, 0, alpha=1), kernel_initializer="lecun_uniform",
                      kernel_regularizer=tf.keras.regularizers.l1(0.0001), **kw)

    model = tf.keras.Sequential([
        dense(64, "fc1", input_shape=(FEATURES,)), QActivation(quantized_relu(6), name="relu1"),
        dense(32, "fc2"), QActivation(quantized_relu(6), name="relu2"),
        dense(32, "fc3"), QActivation(quantized_relu(6), name="relu3"),
        dense(CLASSES, "output"), tf.keras.layers.Activation("softmax", name="softmax"),
    ])
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(-1, 1, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def save_user_files(folder: Path, model_name: str = "my-model.h5", data_name: str = "my-data.npz"):
    """The user's ``.h5`` and a 16-feature ``.npz`` whose labels are the model's own predictions."""
    model = jet_tagger()
    rng = np.random.default_rng(1)
    splits = {}
    for split, n in (("train", 300), ("val", 60), ("test", 200)):
        x = rng.normal(0, 1, (n, FEATURES)).astype(np.float32)
        splits[f"x_{split}"] = x
        splits[f"y_{split}"] = np.argmax(model.predict(x, verbose=0), axis=1).astype(np.int64)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / model_name)
    np.savez(folder / data_name, **splits)
    return folder / model_name, folder / data_name


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    return save_user_files(tmp_path_factory.mktemp("user"))


# --- 1. layer names --------------------------------------------------------------------------------------

DENSE = ("kernel", "bias")
BATCHNORM = ("gamma", "beta", "moving_mean", "moving_variance")


@pytest.mark.parametrize(("name", "is_input", "weights", "clashes"), [
    ("output", False, DENSE, False),  # the tutorial's last layer: hls4ml converts, compiles and matches it
    ("output", True, (), False),
    ("layer", False, DENSE, False),
    ("model", False, DENSE, False),
    ("class", False, DENSE, False),  # C++ keyword, but hls4ml names a hidden layer's C++ by its index
    ("std", False, DENSE, False),
    ("kernel", False, DENSE, False),  # the first variable holding "kernel" is the kernel: read right
    ("bias_free", False, (), False),  # no weights: the reader never looks
    ("input", False, DENSE, True),  # hls4ml: "No model layer should be named 'input'"
    ("input", True, (), True),
    ("my-dense", False, DENSE, True),  # type names from layer names do not compile
    ("dense.1", False, DENSE, True),
    ("bias", False, DENSE, True),  # hls4ml's reader takes the kernel for the bias: silently wrong outputs
    ("my_bias", False, DENSE, True),
    ("beta_bn", False, BATCHNORM, True),  # gamma read as beta
    ("gamma_bn", False, BATCHNORM, False),
    ("int", True, (), True),  # the input's name is a C++ variable of the top function
    ("myproject", True, (), True),
    ("w2", True, (), True),
    ("int", False, DENSE, False),
])
def test_which_names_clash(name, is_input, weights, clashes):
    assert (clash(name, is_input, weights) is not None) == clashes


def odd_names_model():
    """One model with every kind of clash: input layer 'int', dense 'input', 'my-dense', 'my_bias'."""
    import tensorflow as tf
    from qkeras import QActivation, QDense, quantized_bits, quantized_relu

    q = quantized_bits(6, 0, alpha=1)
    x = tf.keras.Input(shape=(6,), name="int")
    h = QDense(8, kernel_quantizer=q, bias_quantizer=q, name="input")(x)
    h = QActivation(quantized_relu(6), name="my-act")(h)
    h = QDense(8, kernel_quantizer=q, bias_quantizer=q, name="my-dense")(h)
    h = QActivation(quantized_relu(6), name="relu")(h)
    y = QDense(3, kernel_quantizer=q, bias_quantizer=q, name="my_bias")(h)
    model = tf.keras.Model(x, y, name="odd")
    rng = np.random.default_rng(3)
    model.set_weights([rng.uniform(-1, 1, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def test_name_map_renames_only_clashes_and_keeps_the_network():
    model = odd_names_model()
    names = NameMap.for_model(model)
    assert set(names.internal) == {"int", "input", "my-act", "my-dense", "my_bias"}
    renamed = names.apply(model)
    assert [layer.name for layer in renamed.layers] == [names.to_internal(layer.name) for layer in model.layers]
    assert all(clash(layer.name) is None for layer in renamed.layers)
    x = np.random.default_rng(0).normal(0, 1, (32, 6)).astype(np.float32)
    np.testing.assert_array_equal(renamed.predict(x, verbose=0), model.predict(x, verbose=0))
    inside = names.to_internal("my-dense")
    assert names.to_user(inside) == "my-dense"
    assert names.to_user(f"{inside}_relu") == "my-dense_relu"  # hls4ml's split-off activation
    assert names.to_user("relu") == "relu"
    assert names.user_text(f"layer {inside} has no bias") == "layer my-dense has no bias"
    assert not NameMap.for_model(jet_tagger())  # the tutorial's names need no renaming at all


def test_conversion_shows_only_the_users_names(tmp_path):
    from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls

    hls_model = convert(odd_names_model(), HlsOptions(), tmp_path / "hls")
    program, image = program_from_hls(hls_model), image_from_hls(hls_model)
    assert [spec.name for spec in program.layers] == ["int", "input", "my-act", "my-dense", "relu", "my_bias"]
    assert program.layers[1].inputs == ("int",)
    assert [a.key for a in image] == ["input/weight", "input/bias", "my-dense/weight", "my-dense/bias",
                                      "my_bias/weight", "my_bias/bias"]
    assert "hwflow_l" not in json.dumps([spec.name for spec in program.layers])


@needs_gxx
@pytest.mark.slow
def test_renamed_layers_compile_and_match_keras(tmp_path):
    from hwflow.convert import HlsOptions
    from hwflow.verify import build_csim, compare

    model = odd_names_model()
    csim = build_csim(model, HlsOptions(), tmp_path / "hls")
    x = (np.random.default_rng(5).integers(-64, 64, (100, 6)) / 64).astype(np.float32)  # exact in the input type
    result = compare(csim, x)
    assert result.mismatches == 0
    # 'my_bias' read with hls4ml's substring rule would take the kernel as bias: compare with Keras too
    np.testing.assert_array_equal(csim.csim_logits(x), model.predict(x, verbose=0).astype(np.float64))


@needs_gxx
@pytest.mark.slow
def test_scaled_storage_of_renamed_layers_is_compiled_bit_exact(tmp_path):
    from hwflow.convert import HlsOptions
    from hwflow.data.datasets import Dataset
    from hwflow.harden.pipeline import harden
    from hwflow.harden.recipe import Recipe
    from hwflow.verify import build_csim, compare

    model = odd_names_model()
    model.set_weights([w * 0.2 for w in model.get_weights()])  # small weights: each array scaled by 2^2
    x = (np.random.default_rng(6).integers(-64, 64, (120, 6)) / 64).astype(np.float32)
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    data = Dataset("odd", x[:60], y[:60], x[60:90], y[60:90], x[90:], y[90:])
    hardened = harden(model, Recipe.parse("scale"), data)
    assert set(hardened.storage.shifts()) == {"input/weight", "input/bias", "my-dense/weight", "my-dense/bias",
                                              "my_bias/weight", "my_bias/bias"}
    csim = build_csim(hardened.model, HlsOptions(), tmp_path / "hls", storage=hardened.storage)
    assert {a.key for a in csim.image if not a.scale.is_identity} == set(hardened.storage.shifts())
    assert compare(csim, x).mismatches == 0


@needs_gxx
@pytest.mark.slow
def test_verify_the_tutorial_model_on_the_users_npz(user_files, tmp_path, capsys):
    model, data = user_files
    code = main(["verify", str(model), "--dataset", str(data), "--workdir", str(tmp_path / "hls")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "verify: 200 samples, 8 layers, 0 mismatches" in out  # input, 3 x (dense, relu), output
    line = next(line for line in out.splitlines() if line.startswith("accuracy on 200 test samples"))
    values = [float(v) for v in re.findall(r"(?:QKeras|emulator|C simulation) (\d\.\d+)", line)]
    assert values == [1.0, 1.0, 1.0]  # the labels are the model's own predictions


def test_results_rows_carry_the_users_layer_names(tmp_path):
    from hwflow.campaign import run_campaign
    from hwflow.results import ResultsDB

    odd_names_model().save(tmp_path / "odd.h5")
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "odd.npz", **{f"{k}_{s}": v for s, n in (("train", 40), ("test", 30))
                                       for k, v in (("x", rng.normal(0, 1, (n, 6))), ("y", rng.integers(0, 3, n)))})
    spec = _write(tmp_path, {"name": "odd", "seed": 1, "dataset": "odd.npz", "models": [{"path": "odd.h5"}],
                             "rates": [1e-2], "trials": 1, "faults": [{"model": "bitflip", "layers": ["my-dense"]}],
                             "sensitivity": {"rate": 1e-2, "trials": 1, "studies": ["layer"]}})
    run_campaign(load_spec(spec), tmp_path / "r.sqlite", workers=1, progress=False)
    with ResultsDB(tmp_path / "r.sqlite") as db:
        layers = {row.target_layer for row in db.trials("odd") if row.study == "layer"}
    assert layers == {"input", "my-dense", "my_bias"}


# --- 2. data sets: from the sidecar or refused; shapes checked up front -------------------------------------

def test_harden_without_a_dataset_refuses_instead_of_using_digits(user_files, tmp_path, capsys):
    model, _ = user_files
    out = tmp_path / "hardened.h5"
    for method in ("clipact", "scale"):
        assert main(["harden", str(model), "--method", method, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "has no sidecar" in err
        assert "pass --dataset" in err
        assert "Traceback" not in err
        assert not out.exists()
        assert not out.with_suffix(".json").exists()


def test_harden_refuses_a_dataset_of_another_shape(user_files, tmp_path, capsys):
    model, _ = user_files
    assert main(["harden", str(model), "--method", "scale", "--dataset", "digits",
                 "--out", str(tmp_path / "h.h5")]) == 2
    err = capsys.readouterr().err
    assert "takes inputs of shape (16,)" in err
    assert "samples of shape (8, 8, 1)" in err


def test_verify_refuses_a_dataset_of_another_shape_before_compiling(user_files, tmp_path, capsys):
    model, _ = user_files
    assert main(["verify", str(model), "--dataset", "digits", "--workdir", str(tmp_path / "hls")]) == 2
    err = capsys.readouterr().err
    assert "(16,)" in err
    assert "(8, 8, 1)" in err
    assert not (tmp_path / "hls").exists()  # refused before hls4ml wrote anything


def test_harden_records_the_npz_so_verify_finds_it_without_dataset(user_files, tmp_path, capsys, monkeypatch):
    from hwflow.data.fit import dataset_for

    model, data = user_files
    monkeypatch.chdir(tmp_path)
    assert main(["harden", str(model), "--method", "scale", "--dataset", str(data), "--out", "hardened.h5",
                 "--quiet"]) == 0
    capsys.readouterr()
    side = json.loads((tmp_path / "hardened.json").read_text())
    assert side["dataset"] == str(data.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert dataset_for(tmp_path / "hardened.h5", None) == str(data.resolve())


def test_a_relative_npz_in_a_sidecar_is_found_beside_it(tmp_path, monkeypatch):
    from hwflow.data.fit import dataset_for

    (tmp_path / "m.json").write_text(json.dumps({"dataset": "d.npz"}))
    (tmp_path / "d.npz").write_bytes(b"")
    monkeypatch.chdir(ROOT)
    assert dataset_for(tmp_path / "m.h5", None) == str(tmp_path / "d.npz")
    assert dataset_for(tmp_path / "m.h5", "digits") == "digits"
    (tmp_path / "m.json").write_text(json.dumps({"seed": 1}))
    with pytest.raises(DatasetError, match=r"names no data set \(m.json\).*: pass --dataset"):
        dataset_for(tmp_path / "m.h5", None)


def test_fewer_outputs_than_classes_is_refused(user_files, tmp_path):
    from hwflow.data import load_dataset
    from hwflow.data.fit import check_fits

    _, data = user_files
    with np.load(data) as archive:
        arrays = dict(archive)
    arrays["y_test"] = arrays["y_test"] + 5  # labels 5..9 for a 5-output model
    np.savez(tmp_path / "more.npz", **arrays)
    with pytest.raises(DatasetError, match="has 5 outputs, but data set .* has labels up to 9"):
        check_fits(jet_tagger(), load_dataset(tmp_path / "more.npz"))


# --- 3. FT-ClipAct thresholds beside the output range -----------------------------------------------------

def test_thresholds_are_described_with_the_output_range_and_what_they_apply_to():
    from hwflow.harden.clipact import CLIP_RULES, apply_clipact, describe_thresholds, output_max

    assert output_max(6, 0) == 0.984375
    assert output_max(8, 3) == 7.96875
    clipped = apply_clipact(jet_tagger(), {"relu1": 12.47, "relu2": 0.5})
    text = describe_thresholds(clipped, {"relu1": 12.47, "relu2": 0.5})
    assert text == "relu1 T=12.47 (outputs 0..0.9844), relu2 T=0.5 (outputs 0..0.9844)"
    assert "input" in CLIP_RULES["zero"]
    assert "gives 0" in CLIP_RULES["zero"]


# --- 4. campaign specs ------------------------------------------------------------------------------------

def _spec(**fields) -> dict:
    spec = {"name": "c", "seed": 1, "models": [{"path": "my-model.h5"}], "rates": [1e-3], "trials": 2,
            "faults": [{"model": "bitflip"}]}
    spec.update(fields)
    return {k: v for k, v in spec.items() if v is not None}


def _write(folder: Path, spec: dict, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(spec))
    return path


def test_no_dataset_line_takes_the_sidecars(tmp_path):
    model, data = save_user_files(tmp_path)
    (tmp_path / "my-model.json").write_text(json.dumps({"dataset": data.name}))  # relative, beside the model
    spec = load_spec(_write(tmp_path, _spec()))
    assert spec.dataset == str(data.resolve())


def test_no_dataset_line_and_no_sidecar_is_refused(tmp_path):
    save_user_files(tmp_path)
    with pytest.raises(SpecError, match="dataset: missing, and model my-model has no sidecar naming its data set"):
        load_spec(_write(tmp_path, _spec()))


def test_models_made_for_different_data_sets_are_refused(tmp_path):
    save_user_files(tmp_path)
    (tmp_path / "my-model.json").write_text(json.dumps({"dataset": "my-data.npz"}))
    spec = _spec(models=[{"path": "my-model.h5"}, {"zoo": "mlp-digits"}])
    with pytest.raises(SpecError, match="made for different data sets"):
        load_spec(_write(tmp_path, spec))


def test_an_empty_dataset_line_is_a_clear_error(tmp_path):
    save_user_files(tmp_path)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_spec()) + "dataset:\n")
    with pytest.raises(SpecError, match=r"spec.yaml: dataset: empty: give digits, fashion-mnist or the path"):
        load_spec(path)


def test_a_relative_npz_is_relative_to_the_spec(tmp_path, monkeypatch):
    _, data = save_user_files(tmp_path)
    monkeypatch.chdir(ROOT)
    assert load_spec(_write(tmp_path, _spec(dataset="my-data.npz"))).dataset == str(data.resolve())


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda s: s["faults"][0].update(trails=5), r"faults\[0\]\.trails: unknown field \(did you mean 'trials'\?\)"),
    (lambda s: (s.pop("trials"), s["faults"][0].update(trails=5)),
     r"faults\[0\]\.trails: unknown field \(did you mean 'trials'\?\)"),
    (lambda s: s["faults"][0].update(raets=[1e-3]), r"faults\[0\]\.raets: unknown field \(did you mean 'rates'\?\)"),
    (lambda s: s["faults"][0].update(mdoe="exact"), r"faults\[0\]\.mdoe: unknown field \(did you mean 'mode'\?\)"),
    (lambda s: s.update(sed=3), r"sed: unknown field \(did you mean 'seed'\?\)"),
    (lambda s: s["models"][0].update(variant=["scale"]), r"models\[0\]\.variant: unknown field \(did you mean "
                                                          r"'variants'\?\)"),
    (lambda s: s.update(hardening={"clip_trails": 3}),
     r"hardening\.clip_trails: unknown field \(did you mean 'clip_trials'\?\) \(known here: .*clip_rounds"),
    (lambda s: s.update(sensitivity={"rate": 1e-3, "studys": ["bit"]}),
     r"sensitivity\.studys: unknown field \(did you mean 'studies'\?\)"),
    (lambda s: s.update(colour="red"), r"colour: unknown field \(known here"),  # nothing close: no guess
])
def test_unknown_keys_are_named_with_the_closest_known_one(tmp_path, mutate, message):
    save_user_files(tmp_path)
    spec = _spec(dataset="my-data.npz")
    mutate(spec)
    with pytest.raises(SpecError, match=message):
        parse_spec(spec, str(_write(tmp_path, spec)))


def test_experiment_file_names_its_unknown_key_with_a_suggestion(tmp_path):
    from hwflow.experiment import load_experiment

    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({"name": "e", "campaings": []}))
    with pytest.raises(SpecError, match=r"campaings: unknown field \(did you mean 'campaigns'\?\)"):
        load_experiment(path)


def test_a_campaign_without_trials_is_replaced_one_with_trials_is_not(tmp_path):
    from hwflow.results import Baseline, ResultsDB, TrialRow
    from hwflow.results.db import ResultsError

    with ResultsDB(tmp_path / "r.sqlite") as db:
        db.register_campaign("c", {"dataset": "digits"})
        db.put_baseline(Baseline("c", "m/baseline", "emulator", 10, 9))
        db.register_campaign("c", {"dataset": "mine.npz"})  # the corrected spec
        assert db.campaign_spec("c") == {"dataset": "mine.npz"}
        assert db.baselines("c") == []
        db.add_trials([TrialRow("c", "m/baseline", "sweep", "bitflip", "", -1, 1e-3, 0, 1, 1, 1, 10, 9, 1)])
        with pytest.raises(ResultsError, match="different spec"):
            db.register_campaign("c", {"dataset": "other.npz"})


def test_a_campaign_on_data_that_does_not_fit_registers_nothing_and_the_fix_runs(tmp_path, capsys):
    save_user_files(tmp_path)
    db = tmp_path / "r.sqlite"
    wrong = _write(tmp_path, _spec(dataset="digits"))
    assert main(["campaign", str(wrong), "--db", str(db), "--workers", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "models: my-model" in err
    assert "(16,)" in err
    assert "(8, 8, 1)" in err
    right = _write(tmp_path, _spec(dataset="my-data.npz"))
    assert main(["campaign", str(right), "--db", str(db), "--workers", "1", "--quiet"]) == 0
    assert "campaign c: 2 trials" in capsys.readouterr().out


def test_an_experiment_checks_every_campaigns_data_before_running_any(tmp_path, capsys):
    save_user_files(tmp_path)
    campaign = {"seed": 1, "rates": [1e-3], "trials": 1, "faults": [{"model": "bitflip"}]}
    experiment = {"name": "e", "defaults": campaign, "campaigns": [
        {"name": "fine", "dataset": "my-data.npz", "models": [{"path": "my-model.h5"}]},
        {"name": "wrong", "dataset": "my-data.npz", "models": [{"zoo": "mlp-digits"}]},
    ]}
    path = _write(tmp_path, experiment, "experiment.yaml")
    assert main(["experiment", str(path), "--out", str(tmp_path / "out"), "--workers", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "models: mlp-digits: zoo model mlp-digits takes inputs of shape (8, 8, 1)" in err
    assert "samples of shape (16,)" in err
    assert not (tmp_path / "out" / "results.sqlite").exists()  # the first campaign did not run either


def test_the_own_model_example_runs_on_a_users_files(tmp_path, capsys):
    from hwflow.results import ResultsDB

    shutil.copy(EXAMPLE, tmp_path / EXAMPLE.name)
    save_user_files(tmp_path)
    spec = load_spec(tmp_path / EXAMPLE.name)
    assert spec.models[0].path == "my-model.h5"
    assert spec.models[0].zoo is None  # trains nothing
    db = tmp_path / "own.sqlite"
    assert main(["campaign", str(tmp_path / EXAMPLE.name), "--db", str(db), "--workers", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    planned = len(spec.models[0].variants) * sum(len(f.rates) * f.trials for f in spec.faults)
    assert f"campaign own-model: {planned} trials" in out
    with ResultsDB(db) as d:
        assert len(d.trials("own-model")) == planned
        baselines = {b.variant: b.accuracy for b in d.baselines("own-model")}
    assert baselines == {"my-model/baseline": 1.0, "my-model/scale": 1.0}
    cached = [p.name for p in (tmp_path / "models").glob("*.h5")]
    assert cached == ["my-model--scale.h5"]  # the hardened copy of the user's model; no zoo model trained


# --- 6. the HTML report: headline first, spec last and collapsed --------------------------------------------

def test_report_opens_with_the_headline_and_ends_with_the_spec_collapsed(tmp_path):
    from hwflow.report import write_report
    from hwflow.results import Baseline, ResultsDB, TrialRow

    db = tmp_path / "r.sqlite"
    with ResultsDB(db) as d:
        d.register_campaign("c", {"name": "c", "note": "<x & y>"})
        d.put_baseline(Baseline("c", "m/baseline", "emulator", 10, 9))
        d.add_trials([TrialRow("c", "m/baseline", "sweep", "bitflip", "", -1, 1e-3, i, i, 1, 1, 10, 8, 1)
                      for i in range(3)])
    text = write_report(db, tmp_path / "out").html.read_text()
    headings = re.findall(r"<h2[^>]*>([^<]+)</h2>", text)
    assert headings[:2] == ["Accuracy against fault rate", "Fault-free accuracy"]
    assert headings[-1] == "Campaign spec"
    assert text.index("<img") < text.index("Campaign spec")
    assert "<details open" not in text
    assert re.search(r"<details><summary><b>c</b>[^<]*</summary><pre>", text)
    assert "&lt;x &amp; y&gt;" in text


def _help(command: str) -> str:
    from hwflow.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # argparse's sub-command table
    return " ".join(sub.choices[command].format_help().split())


def test_report_help_says_95_percent_once():
    text = _help("report")
    assert "95% confidence intervals" in text
    assert "%%" not in text


def test_build_help_says_scaled_arrays_always_go_to_bram():
    assert "Arrays stored scaled (a hardened model's weight scaling) always go to BRAM, whatever --min-words " \
           "says" in _help("build")
