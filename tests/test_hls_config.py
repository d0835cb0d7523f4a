"""The user's own hls4ml configuration: read as users write it, checked, merged, reported, recorded.

These tests convert (hls4ml, a few seconds each) but do not compile; the C-simulation comparisons
of configured designs are in ``test_hls_config_csim.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from hwflow.convert import HlsOptions, convert, image_from_hls, load_hls_config, program_from_hls, resolve_options
from hwflow.convert.hls_config import parse_hls_config
from hwflow.errors import ConversionError, DeployError, SpecError
from hwflow.fixed import parse_type
from tests.conftest import zoo_model

# hls4ml's own form (config_from_keras_model(..., granularity='name'), trimmed to what a user edits).
MLP_CONFIG = {
    "Model": {"Precision": {"default": "fixed<14,5>"}, "ReuseFactor": 1, "Strategy": "Latency",
              "BramFactor": 1_000_000_000, "TraceOutput": False},
    "LayerName": {
        "fc1": {"Precision": {"accum": "ap_fixed<12,5,AP_RND,AP_SAT>", "result": "fixed<10,4,RND_CONV,SAT>",
                              "weight": "fixed<8,1,TRN,WRAP,0>"},
                "ReuseFactor": 4, "Strategy": "Resource"},
        "relu1": {"Precision": {"result": "ap_ufixed<6,2,AP_RND,AP_SAT>"}},
        "out": {"Precision": {"accum": "fixed<18,7>"}},
    },
    "LayerType": {"BatchNormalization": {"Precision": {"result": "fixed<12,4,RND,SAT_SYM>"}}},
}


def write(tmp_path, data, name="hls.yml") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return str(path)


@pytest.fixture(scope="module")
def mlp():
    return zoo_model("mlp-digits", 8, 8)


@pytest.fixture(scope="module")
def mlp_graph(mlp, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hlscfg")
    options = resolve_options(load_hls_config(write(tmp, MLP_CONFIG)))
    return convert(mlp, options, tmp / "model")


# --- reading the file --------------------------------------------------------------------------------


def test_both_forms_read_alike(tmp_path):
    plain = load_hls_config(write(tmp_path, MLP_CONFIG))
    project = load_hls_config(write(tmp_path, (
        "KerasModel: !keras_model 'model.h5'\nOutputDir: my-hls-test\nProjectName: myproject\n"
        "IOType: io_stream\nBackend: Vivado\nPart: xc7z020clg400-1\nClockPeriod: 10\n"
        + yaml.safe_dump({"HLSConfig": MLP_CONFIG}, sort_keys=False)), "project.yml"))
    assert project.hls == plain.hls
    assert project.project == {"IOType": "io_stream", "Backend": "Vivado", "Part": "xc7z020clg400-1",
                               "ClockPeriod": 10}
    assert set(project.unused) == {"KerasModel", "OutputDir", "ProjectName"}
    assert project.digest != plain.digest  # the io type and backend are part of the design
    options = resolve_options(project)
    assert (options.io_type.value, options.backend.value, options.part, options.clock_period) == \
        ("io_stream", "Vivado", "xc7z020clg400-1", 10.0)
    assert options.default_precision == "fixed<14,5>"


def test_digest_follows_the_content(tmp_path):
    a = load_hls_config(write(tmp_path, MLP_CONFIG, "a.yml"))
    b = load_hls_config(write(tmp_path, yaml.safe_dump(MLP_CONFIG, sort_keys=True), "b.yml"))
    assert a.digest == b.digest  # key order and file name do not make another design
    changed = yaml.safe_load(yaml.safe_dump(MLP_CONFIG))
    changed["LayerName"]["out"]["Precision"]["accum"] = "fixed<18,8>"
    assert load_hls_config(write(tmp_path, changed, "c.yml")).digest != a.digest


@pytest.mark.parametrize(("text", "message"), [
    ("Model: [\n", "not valid YAML"),
    ("- 1\n- 2\n", "must be a mapping"),
    ("Model:\n  Precison: fixed<8,3>\n", "Model.Precison: unknown key (did you mean 'Precision'?)"),
    ("LayerName:\n  fc1:\n    Precision:\n      accum: fixd<12,4>\n", "LayerName.fc1.Precision.accum: not a fixed"),
    ("LayerName:\n  fc1:\n    Precision: ap_fixed<12,4,AP_RND,AP_SAT,2>\n", "saturation bits"),
    ("LayerName:\n  fc1:\n    Precision:\n      accum: float\n", "not a fixed-point type"),
    ("Model:\n  Strategy: Resorce\n", "Model.Strategy: 'Resorce': hwflow emulates the Latency and Resource "
     "strategies (did you mean 'Resource'?)"),
    ("Model:\n  Strategy: distributed_arithmetic\n", "hwflow emulates the Latency and Resource"),
    ("LayerName:\n  fc1:\n    ReuseFactor: 0\n", "LayerName.fc1.ReuseFactor: must be a positive integer"),
    ("LayerName:\n  fc1:\n    ReuseFactr: 2\n", "did you mean 'ReuseFactor'?"),
    ("IOType: io_stream\nModel:\n  ReuseFactor: 2\n", "IOType: is a key of an hls4ml project file"),
    ("IOType: stream\nHLSConfig:\n  Model:\n    ReuseFactor: 2\n", "IOType: 'stream' is not an hls4ml io type"),
    ("Backend: Quartus\nHLSConfig:\n  Model:\n    ReuseFactor: 2\n", "Backend: 'Quartus'"),
    ("Flows: []\n", "sets none of Model, LayerName, LayerType"),
])
def test_bad_files_are_refused_naming_the_field(tmp_path, text, message):
    with pytest.raises(SpecError, match="hls.yml") as err:
        load_hls_config(write(tmp_path, text))
    assert message in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="hls4ml configuration not found"):
        load_hls_config(tmp_path / "nope.yml")


# --- hwflow's options against the file --------------------------------------------------------------


def test_options_fill_in_and_conflicts_name_both_values():
    user = parse_hls_config({"IOType": "io_stream", "HLSConfig": {"Model": {"Strategy": "Resource",
                                                                            "ReuseFactor": 4}}}, "cfg.yml")
    options = resolve_options(user, backend="Vivado")
    assert (options.io_type.value, options.strategy.value, options.reuse_factor, options.backend.value) == \
        ("io_stream", "Resource", 4, "Vivado")
    assert resolve_options(user, io="stream", strategy="Resource", reuse_factor=4).user_config is user
    for kwargs, words in [({"io": "parallel"}, ("--io parallel", "IOType: io_stream", "cfg.yml")),
                          ({"strategy": "Latency"}, ("--strategy Latency", "Model.Strategy: Resource")),
                          ({"reuse_factor": 2}, ("--reuse-factor 2", "Model.ReuseFactor: 4"))]:
        with pytest.raises(ConversionError) as err:
            resolve_options(user, **kwargs)
        assert all(w in str(err.value) for w in words), str(err.value)


# --- the design hls4ml builds from it ---------------------------------------------------------------


def test_every_setting_reaches_the_program(mlp_graph):
    """Per-layer types (rounding and overflow modes included), LayerType and Model defaults, per-layer
    strategy and reuse factor: all read back from the converted graph into the Program and the image."""
    program = program_from_hls(mlp_graph)
    assert program.layer("fc1").accum == parse_type("fixed<12,5,RND,SAT>")
    assert program.layer("fc1").result == parse_type("fixed<10,4,RND_CONV,SAT>")
    assert program.layer("relu1").result == parse_type("ufixed<6,2,RND,SAT>")
    assert program.layer("bn1").result == parse_type("fixed<12,4,RND,SAT_SYM>")  # LayerType
    assert program.layer("out").accum == parse_type("fixed<18,7>")
    assert program.input.result == parse_type("fixed<14,5>")  # Model default
    layers = {layer.name: layer for layer in mlp_graph.get_layers()}
    assert layers["fc1"].get_attr("strategy") == "resource"
    assert layers["fc1"].get_attr("reuse_factor") == 4
    assert layers["out"].get_attr("strategy") == "latency"
    image = image_from_hls(mlp_graph)
    fc1, out = image.get("fc1", "weight"), image.get("out", "weight")
    assert fc1.axes == (1, 0)
    assert out.axes == (0, 1)
    kernel = mlp_graph.get_layers()  # the firmware's array: the stored words are it, in order
    weights = {layer.name: layer.weights["weight"].data for layer in kernel if "weight" in layer.weights}
    t = fc1.format.fixed
    np.testing.assert_array_equal(t.from_unsigned(fc1.words).reshape(-1),
                                  np.round(np.asarray(weights["fc1"]).reshape(-1) * 2**t.frac).astype(np.int64))
    report = mlp_graph.hwflow_config
    assert report.checked >= 7
    assert report.notes == ()
    assert program.source["hls_config"] == report.digest


def test_merge_is_reported(mlp, tmp_path):
    config = yaml.safe_load(yaml.safe_dump(MLP_CONFIG))
    config["LayerName"]["out"]["ReuseFactor"] = 7  # 320 products: hls4ml moves 7 to a valid factor
    config["LayerName"]["out"]["Strategy"] = "Resource"
    config["Model"].pop("Strategy")
    options = resolve_options(load_hls_config(write(tmp_path, config)), reuse_factor=1, strategy="Resource")
    graph = convert(mlp, options, tmp_path / "model")
    notes = {n.field: n for n in graph.hwflow_config.notes}
    assert notes["Model.Strategy"].user is None
    assert notes["Model.Strategy"].hwflow == "Resource"
    assert notes["LayerName.out.ReuseFactor"].user == "7"
    assert "closest valid" in notes["LayerName.out.ReuseFactor"].why
    assert "Model.Strategy: unset -> Resource" in graph.hwflow_config.summary()


def test_the_final_softmax_entries_are_dropped(tmp_path):
    import qkeras
    import tensorflow as tf

    inp = tf.keras.Input((8,), name="x")
    out = qkeras.QDense(4, kernel_quantizer=qkeras.quantized_bits(8, 0, alpha=1),
                        bias_quantizer=qkeras.quantized_bits(8, 0, alpha=1), activation="softmax", name="logits")(inp)
    model = tf.keras.Model(inp, out)
    config = {"Model": {"Precision": "fixed<16,6>"},
              "LayerName": {"logits": {"Precision": {"accum": "fixed<20,8>"}},
                            "logits_softmax": {"Precision": {"result": "fixed<16,6>", "exp_table": "fixed<18,8>"}}}}
    graph = convert(model, resolve_options(load_hls_config(write(tmp_path, config))), tmp_path / "m")
    notes = {n.field: n for n in graph.hwflow_config.notes}
    assert notes["LayerName.logits_softmax"].hwflow == "dropped"
    assert program_from_hls(graph).layer("logits").accum == parse_type("fixed<20,8>")


@pytest.mark.parametrize(("config", "error", "words"), [
    ({"LayerName": {"fc2": {"ReuseFactor": 2}}}, SpecError, "LayerName.fc2: the model has no layer 'fc2' "
     "(did you mean 'fc1'?)"),
    ({"LayerName": {"fc1": {"Precision": {"acum": "fixed<8,3>"}}}}, SpecError, "no type 'acum' (did you mean "
     "'accum'?)"),
    ({"LayerType": {"QDense": {"ReuseFactor": 2}}}, SpecError, "LayerType.QDense: hls4ml matches LayerType by "
     "its own class name: write Dense"),
    ({"LayerType": {"Dens": {"ReuseFactor": 2}}}, SpecError, "not an hls4ml layer type (did you mean 'Dense'?)"),
    ({"LayerName": {"fc1": {"Precision": {"weight": "fixed<6,1>"}}}}, ConversionError,
     "LayerName.fc1.Precision.weight is fixed<6,1>, but hls4ml built fixed<8,1,TRN,WRAP> (its QKeras quantizer"),
    ({"Model": {"BramFactor": 10}}, ConversionError, "into top-level ports"),
    ({"LayerName": {"flatten": {"Precision": {"result": "ufixed<5,1>"}}}}, ConversionError,
     "LayerName.flatten.Precision.result is ufixed<5,1>, but hls4ml built"),  # a reshape keeps its input's type
    ({"Model": {"Strategy": "Resource"}}, ConversionError, "Model.Strategy: Resource in"),  # options say Latency
])
def test_what_does_not_fit_the_model_is_refused(mlp, tmp_path, config, error, words):
    user = load_hls_config(write(tmp_path, config))
    with pytest.raises(error) as err:
        convert(mlp, HlsOptions(user_config=user), tmp_path / "m")
    assert words in str(err.value), str(err.value)


def test_a_storage_plan_moves_the_files_weight_type(mlp, tmp_path):
    from hwflow.harden.scale import plan_rule

    storage = plan_rule(image_from_hls(convert(mlp, HlsOptions(), tmp_path / "plain")))
    shift = storage.shifts().get("fc1/weight", 0)
    assert shift > 0  # untrained weights are small: the rule scales them
    config = {"LayerName": {"fc1": {"Precision": {"weight": "fixed<8,1,TRN,WRAP,0>"}}}}
    graph = convert(mlp, resolve_options(load_hls_config(write(tmp_path, config))), tmp_path / "m", storage=storage)
    note = {n.field: n for n in graph.hwflow_config.notes}["LayerName.fc1.Precision.weight"]
    assert note.hwflow == str(parse_type(f"fixed<8,{1 - shift}>"))
    assert "storage plan" in note.why
    flows = {**config, "Flows": ["vitis:ip"]}
    with pytest.raises(ConversionError, match="HLSConfig.Flows"):
        convert(mlp, resolve_options(load_hls_config(write(tmp_path, flows, "f.yml"))), tmp_path / "f",
                storage=storage)


# --- a ModelGraph the user converted ------------------------------------------------------------------


def test_from_hls_model_takes_the_users_graph(mlp, tmp_path):
    import hls4ml

    from hwflow.convert import from_hls_model
    from hwflow.convert.hls import quiet
    from hwflow.fixed import from_hls4ml

    with quiet():
        graph = hls4ml.converters.convert_from_keras_model(
            mlp, hls_config=yaml.safe_load(yaml.safe_dump(MLP_CONFIG)), io_type="io_stream", backend="Vitis",
            output_dir=str(tmp_path / "user"))
    design = from_hls_model(graph)
    assert design.model is mlp
    assert design.options.io_type.value == "io_stream"
    ours = convert(design.model, design.options, tmp_path / "ours")
    assert program_from_hls(ours).layer("fc1").accum == parse_type("fixed<12,5,RND,SAT>")
    fc1 = next(layer for layer in graph.get_layers() if layer.name == "fc1")
    fc1.types["accum_t"].precision = graph.config.backend.convert_precision_string("fixed<20,8>")
    assert from_hls4ml(fc1.types["accum_t"].precision) == parse_type("fixed<20,8>")
    with pytest.raises(ConversionError, match="changed after conversion"):
        from_hls_model(graph)
    with pytest.raises(ConversionError, match="not an hls4ml ModelGraph"):
        from_hls_model(object())


# --- recorded with campaigns and builds ---------------------------------------------------------------


def campaign_yaml(config_name: str) -> str:
    return (f"name: own\nseed: 1\ndataset: digits\nsamples: 20\nmodels:\n  - zoo: mlp-digits\n"
            f"    hls_config: {config_name}\nfaults:\n  - model: bitflip\n    rates: [0.001]\n    trials: 2\n")


def test_campaign_specs_record_the_configuration(tmp_path):
    import json

    from hwflow.campaign import load_spec
    from hwflow.campaign.spec import only_more_trials

    write(tmp_path, MLP_CONFIG)
    spec = load_spec(write(tmp_path, campaign_yaml("hls.yml"), "spec.yml"))
    stored = spec.to_json()  # what the results database keeps
    assert stored["models"][0]["hls_config"] == load_hls_config(tmp_path / "hls.yml").record()
    changed = yaml.safe_load(yaml.safe_dump(MLP_CONFIG))
    changed["LayerName"]["out"]["Precision"]["accum"] = "fixed<18,8>"
    write(tmp_path, changed)
    again = load_spec(tmp_path / "spec.yml").to_json()
    # what ResultsDB.register_campaign(..., extends=only_more_trials) refuses once trials are stored
    assert again != stored
    assert not only_more_trials(stored, again)
    assert only_more_trials(again, json.loads(json.dumps(again)))
    bad = write(tmp_path, "LayerName:\n  fc1:\n    Strategy: Fast\n", "bad.yml")
    with pytest.raises(SpecError, match=r"models\[0\]\.hls_config: .*bad.yml: LayerName.fc1.Strategy"):
        load_spec(write(tmp_path, campaign_yaml(bad), "spec2.yml"))
    no_config = load_spec(write(tmp_path, campaign_yaml("x").replace("    hls_config: x\n", ""), "spec3.yml"))
    assert "hls_config" not in no_config.to_json()["models"][0]  # specs stored before the field compare equal


def test_campaign_options_come_from_the_file(tmp_path):
    from hwflow.campaign import load_spec
    from hwflow.campaign.variants import model_options

    write(tmp_path, {"IOType": "io_stream", "HLSConfig": MLP_CONFIG})
    spec = load_spec(write(tmp_path, campaign_yaml("hls.yml"), "spec.yml"))
    assert model_options(spec, spec.models[0]).io_type.value == "io_stream"
    spec = load_spec(write(tmp_path, "io: stream\nstrategy: Resource\n" + campaign_yaml("hls.yml"), "s2.yml"))
    with pytest.raises(ConversionError, match="s2.yml: strategy: Resource conflicts with Model.Strategy: Latency"):
        model_options(spec, spec.models[0])


def test_deploy_refuses_a_build_of_another_configuration(tmp_path):
    from hwflow.campaign import load_spec
    from hwflow.campaign.variants import check_build_config

    write(tmp_path, MLP_CONFIG)
    spec = load_spec(write(tmp_path, campaign_yaml("hls.yml"), "spec.yml"))
    user = load_hls_config(tmp_path / "hls.yml")
    check_build_config(spec, "mlp-digits/baseline", {"hls_config": user.digest})
    with pytest.raises(DeployError, match="hwflow's own configuration"):
        check_build_config(spec, "mlp-digits/baseline", {})
    other = write(tmp_path, {"LayerName": {"fc1": {"ReuseFactor": 2}}}, "other.yml")
    with pytest.raises(DeployError, match="--hls-config is other.yml"):
        check_build_config(spec, "mlp-digits/baseline", {"hls_config": user.digest}, other)
    plain = load_spec(write(tmp_path, campaign_yaml("x").replace("    hls_config: x\n", ""), "plain.yml"))
    with pytest.raises(DeployError, match="campaign own's hls_config is none"):
        check_build_config(plain, "mlp-digits/baseline", {"hls_config": user.digest, "hls_config_name": "hls.yml"})


def test_cli_refuses_a_conflict_before_converting(tmp_path, capsys):
    from hwflow.cli import main

    config = write(tmp_path, {"IOType": "io_stream", "HLSConfig": MLP_CONFIG})
    mlp_path = tmp_path / "m.h5"
    zoo_model("mlp-digits", 8, 8).save(mlp_path)
    assert main(["verify", str(mlp_path), "--dataset", "digits", "--io", "parallel", "--hls-config", config]) == 2
    assert "--io parallel conflicts with IOType: io_stream" in capsys.readouterr().err


def test_build_records_the_configuration_and_refuses_another_part(tmp_path):
    from hwflow.campaign import load_spec
    from hwflow.campaign.variants import check_build_dir
    from hwflow.errors import BuildError
    from hwflow.hardware.boards import load_board
    from hwflow.hardware.project import BuildOptions, generate

    board = load_board("pynq-z2")
    model = zoo_model("mlp-digits", 8, 8)
    config = yaml.safe_load(yaml.safe_dump(MLP_CONFIG))
    config["Model"].update(Strategy="Resource", ReuseFactor=8)
    config["LayerName"]["fc1"].update(ReuseFactor=16)  # the estimate takes each layer's own (fc1 at 4 does not fit)
    config["LayerName"]["out"].update(Strategy="Latency", ReuseFactor=1)
    path = write(tmp_path, {"Part": board.part, "HLSConfig": config}, "build.yml")
    build = generate(model, board, tmp_path / "build", BuildOptions(resolve_options(load_hls_config(path))))
    assert build.program.source["hls_config"] == load_hls_config(path).digest
    assert build.image.get("fc1", "weight").axes == (1, 0)  # fc1 is Resource in the file, out is not
    assert build.image.get("out", "weight").axes == (0, 1)
    assert build.program.layer("fc1").attrs["reuse_factor"] == 16  # the file's, not the Model's
    assert build.program.layer("out").attrs["strategy"] == "latency"
    from hwflow.hardware.resources import estimate

    usage = {item.what.split(" (")[0]: item.what for item in estimate(build.program, build.image,
                                                                      resolve_options(load_hls_config(path))).items}
    assert usage["fc1 multipliers"].startswith("fc1 multipliers (128 of")  # 2048 weights / reuse 16
    assert usage["out multipliers"].startswith("out multipliers (320 of")  # 320 weights / reuse 1
    write(tmp_path, MLP_CONFIG)
    spec = load_spec(write(tmp_path, campaign_yaml("hls.yml"), "spec.yml"))
    with pytest.raises(DeployError, match="made with hls4ml configuration build.yml .* is hls.yml"):
        check_build_dir(tmp_path / "build", spec.source)  # the spec's hls.yml is MLP_CONFIG, not this one
    write(tmp_path, {"Part": board.part, "HLSConfig": config}, "hls.yml")  # the same content: the same design
    assert check_build_dir(tmp_path / "build", spec.source) == (True, None)
    stream = load_spec(write(tmp_path, "io: stream\n" + campaign_yaml("hls.yml"), "stream.yml"))
    own, note = check_build_dir(tmp_path / "build", stream.source)
    assert own
    assert "this build is io_parallel/Vitis/Resource, campaign own emulates mlp-digits as io_stream" in note
    plain = write(tmp_path, campaign_yaml("x").replace("    hls_config: x\n", ""), "plain.yml")
    with pytest.raises(DeployError, match="campaign own's hls_config is none"):
        check_build_dir(tmp_path / "build", plain)
    other = write(tmp_path, {"Part": "xcvu9p-flga2104-2-e", "HLSConfig": MLP_CONFIG}, "vu9p.yml")
    with pytest.raises(BuildError, match="Part xcvu9p-flga2104-2-e in .*vu9p.yml conflicts with board pynq-z2"):
        generate(model, board, tmp_path / "b2", BuildOptions(resolve_options(load_hls_config(other))))


def test_variant_from_the_users_graph(mlp, tmp_path):
    import hls4ml

    from hwflow.campaign.variants import variant_from_hls_model
    from hwflow.convert.hls import quiet

    with quiet():
        graph = hls4ml.converters.convert_from_keras_model(
            mlp, hls_config=yaml.safe_load(yaml.safe_dump(MLP_CONFIG)), io_type="io_parallel", backend="Vitis",
            output_dir=str(tmp_path / "user"))
    variant = variant_from_hls_model(graph, "mine")
    assert variant.label == "mine/baseline"
    options = resolve_options(load_hls_config(write(tmp_path, MLP_CONFIG)))
    ours = convert(mlp, options, tmp_path / "ours")
    assert variant.program.layers == program_from_hls(ours).layers
    for a, b in zip(variant.image, image_from_hls(ours), strict=True):
        assert (a.key, a.axes, a.format) == (b.key, b.axes, b.format)
        np.testing.assert_array_equal(a.words, b.words)


def test_harden_checks_and_records_the_configuration(tmp_path, capsys):
    import json

    from hwflow.cli import main

    model_path = tmp_path / "m.h5"
    zoo_model("mlp-digits", 8, 8).save(model_path)
    bad = write(tmp_path, {"LayerName": {"fc9": {"ReuseFactor": 2}}}, "bad.yml")
    args = ["harden", str(model_path), "--method", "scale", "--dataset", "digits", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "h.h5"), "--hls-config", bad]) == 2
    assert "LayerName.fc9: the model has no layer 'fc9'" in capsys.readouterr().err
    narrow = write(tmp_path, MLP_CONFIG)  # its Model default makes the batch-norm scale fixed<14,5>
    # The searches score on the configured design itself, so its plan fits that design's types.
    assert main([*args, "--out", str(tmp_path / "n.h5"), "--hls-config", narrow]) == 0
    side = json.loads((tmp_path / "n.json").read_text())
    assert side["hardening"]["hls_config"] == load_hls_config(narrow).record()
    config = yaml.safe_load(yaml.safe_dump(MLP_CONFIG))
    del config["Model"]["Precision"]
    good = write(tmp_path, config, "good.yml")
    assert main([*args, "--out", str(tmp_path / "h.h5"), "--hls-config", good]) == 0
    out = capsys.readouterr().out
    assert "hls4ml configuration" in out
    side = json.loads((tmp_path / "h.json").read_text())
    assert side["hls_config"] == load_hls_config(good).record()


def test_options_made_by_hand_must_agree_with_the_project_file(mlp, tmp_path):
    user = load_hls_config(write(tmp_path, {"IOType": "io_stream", "HLSConfig": MLP_CONFIG}))
    with pytest.raises(ConversionError, match="IOType: io_stream in .* conflicts with hwflow's io_parallel"):
        convert(mlp, HlsOptions(user_config=user), tmp_path / "m")


def test_a_layer_type_shadowed_by_a_layer_name_is_reported(mlp, tmp_path):
    config = {"LayerName": {"bn1": {"Precision": {"result": "auto"}}},
              "LayerType": {"BatchNormalization": {"Precision": {"result": "fixed<12,4>"}}}}
    graph = convert(mlp, resolve_options(load_hls_config(write(tmp_path, config))), tmp_path / "m")
    note = {n.field: n for n in graph.hwflow_config.notes}["LayerType.BatchNormalization.Precision.result"]
    assert note.hwflow == "auto for bn1"
    assert program_from_hls(graph).layer("bn1").result != parse_type("fixed<12,4>")  # hls4ml's precedence


def test_activation_types_left_to_the_model_default_are_reported(mlp, tmp_path):
    """A file of LayerType and Model entries only: hls4ml builds the QActivations at the Model default, not at
    their quantizers' types, and the design no longer computes what QKeras does; each one is reported."""
    config = {"Model": {"Precision": {"default": "fixed<16,6>"}},
              "LayerType": {"Dense": {"Precision": {"accum": "fixed<24,10>"}}}}
    graph = convert(mlp, resolve_options(load_hls_config(write(tmp_path, config))), tmp_path / "m")
    notes = {n.field: n for n in graph.hwflow_config.notes}
    own = convert(mlp, HlsOptions(), tmp_path / "own")
    activations = [layer.name for layer in own.get_layers() if layer.get_attr("activation_quantizer") is not None
                   or type(layer).__name__ == "Activation" and "relu" in layer.name]
    assert activations
    for name in activations:
        note = notes[f"LayerName.{name}.Precision.result"]
        want = str(program_from_hls(own).layer(name).result)
        assert note.user is None
        assert note.hwflow == str(program_from_hls(graph).layer(name).result) == str(parse_type("fixed<16,6>"))
        assert f"QKeras quantizer is {want}" in note.why
    # Set by the file (LayerName here, or by type), the same types are not reported.
    config["LayerName"] = {name: {"Precision": {"result": "fixed<16,6>"}} for name in activations}
    graph = convert(mlp, resolve_options(load_hls_config(write(tmp_path, config, "named.yml"))), tmp_path / "n")
    assert not [n for n in graph.hwflow_config.notes if n.field.endswith(".Precision.result")]


def test_campaign_scaled_variant_is_searched_on_the_configured_design(tmp_path):
    import json

    from hwflow.campaign import load_spec
    from hwflow.campaign.variants import build_variants

    zoo_model("mlp-digits", 8, 8).save(tmp_path / "m.h5")
    write(tmp_path, MLP_CONFIG)  # its Model default stores the batch-norm scale as fixed<14,5>
    spec = load_spec(write(tmp_path, (
        "name: own\nseed: 1\ndataset: digits\nsamples: 20\nmodels:\n  - path: m.h5\n    hls_config: hls.yml\n"
        "    variants: [baseline, scale]\nfaults:\n  - model: bitflip\n    rates: [0.001]\n    trials: 2\n"),
        "spec.yml"))
    variants = {v.label: v for v in build_variants(spec)}  # the scale rule planned on fixed<14,5>, not on 8 bits
    assert set(variants) == {"m/baseline", "m/scale"}
    digest = load_hls_config(tmp_path / "hls.yml").digest
    assert all(v.program.source["hls_config"] == digest for v in variants.values())
    assert any(a.scale.shift or a.scale.constant for a in variants["m/scale"].image)
    side = json.loads(next(tmp_path.rglob("m--scale.json")).read_text())
    assert side["hardening"]["hls_config"]["digest"] == digest


def test_the_shipped_example_configures_a_zoo_model(tmp_path):
    """examples/hls-config.yml (the README's worked example) reads, and converts cnn-digits as it says."""
    from pathlib import Path

    import hwflow

    example = Path(__file__).resolve().parent.parent / "examples" / "hls-config.yml"
    user = load_hls_config(example)
    options = resolve_options(user)
    graph = convert(zoo_model("cnn-digits", 8, 8), options, tmp_path / "hls")
    assert graph.hwflow_config is not None
    design = hwflow.from_hls_model(graph, check=False)  # the top-level name the issue promises
    assert design.options.user_config is not None
