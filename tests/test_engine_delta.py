"""The delta engine against full emulation: identical outcomes and identical output codes over many
seeded fault maps (every fault model, rates 1e-6..1e-2, every zoo model, hardened and float-stored
variants, io_parallel and io_stream, saturating / wrapping / truncating accumulators), and every
layer's rule against the traced difference of two full runs."""

from __future__ import annotations

import tempfile
from dataclasses import replace

import numpy as np
import pytest

from hwflow.campaign import TrialEvaluator
from hwflow.campaign.delta import register_rule, rule_for
from hwflow.campaign.delta.state import apply, trim
from hwflow.emulator import Emulator, Kind, LayerSpec, Program
from hwflow.errors import EmulatorError, UnsupportedLayerError
from hwflow.faults import fault_model_from_spec
from hwflow.fixed import Overflow, parse_type
from tests.conftest import traced_difference, zoo_model

FAULT_SPECS = [
    {"model": "bitflip"},
    {"model": "bitflip", "mode": "exact"},
    {"model": "stuck-at", "value": 0},
    {"model": "stuck-at", "value": 1},
    {"model": "stuck-at", "value": "mixed"},
    {"model": "burst", "length": 3},
    {"model": "bitflip", "bits": ["msb"]},
]
RATES = [1e-6, 1e-5, 1e-4, 1e-3, 3e-3, 1e-2]


def _convert(model, io="parallel"):
    from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls

    with tempfile.TemporaryDirectory() as tmp:
        hls = convert(model, HlsOptions.make(io), tmp)
        return program_from_hls(hls), image_from_hls(hls)


@pytest.fixture(scope="module")
def cnn_keras():
    return zoo_model("cnn-digits", 8, 8, seed=3)


@pytest.fixture(scope="module")
def nets(cnn_keras):
    """name -> (program, image): the digits zoo models, io_stream, clipped, scaled and float-stored."""
    from hwflow.harden.clipact import apply_clipact
    from hwflow.harden.scale import plan_constant, plan_rule, scaled_image

    out = {"mlp-digits": _convert(zoo_model("mlp-digits", 8, 8, seed=2)), "cnn-digits": _convert(cnn_keras),
           "cnn-digits-stream": _convert(cnn_keras, "stream"),
           "clip-zero": _convert(apply_clipact(cnn_keras, {"relu1": 1.0, "relu2": 0.8}, "zero")),
           "clip-saturate": _convert(apply_clipact(cnn_keras, {"relu1": 1.0, "relu2": 0.8}, "saturate"))}
    out["negative-bn"] = _convert(_negative_batch_norm(zoo_model("cnn-digits", 8, 8, seed=5)))
    program, image = out["cnn-digits"]
    out["scaled-pow2"] = (program, scaled_image(image, plan_rule(image)))
    out["scaled-const"] = (program, scaled_image(image, plan_constant(
        image, {"conv2/weight": 1.7, "out/weight": 1.3, "bn1/scale": 1.9})))
    out["float16"] = (program, plan_rule(image, "float16").apply(image))
    out["float32"] = (program, plan_rule(image, "float32").apply(image))
    return out


def _negative_batch_norm(model):
    """Every other batch-norm channel with a negative scale: the layer decreases there, so pooling moved
    before it must take the minimum."""
    import tensorflow as tf

    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            gamma, *rest = layer.get_weights()
            layer.set_weights([gamma * np.where(np.arange(len(gamma)) % 2, -1.0, 1.0), *rest])
    return model


def _with_accumulators(program: Program, overflow: Overflow | None = None, width: int | None = None,
                       frac_cut: int = 0) -> Program:
    """``program`` with every multiply-accumulate layer's accumulator changed (saturating, narrow so it
    wraps, or with fewer fractional bits so products are truncated)."""
    layers = []
    for layer in program.layers:
        if layer.kind in (Kind.DENSE, Kind.CONV2D, Kind.CONV1D):
            acc = layer.accum
            if overflow is not None:
                acc = replace(acc, overflow=overflow)
            if width is not None:
                acc = replace(acc, width=width, integer=acc.integer - (acc.width - width))
            if frac_cut:
                acc = replace(acc, integer=acc.integer + frac_cut)
            layer = replace(layer, accum=acc, result=acc)
        layers.append(layer)
    return Program(tuple(layers), program.io_type)


def _check_many(program, image, x, y, seed: int, trials: int, specs=FAULT_SPECS, rates=RATES, chunk=64,
                dense="auto"):
    evaluator = TrialEvaluator(program, image, x, y, chunk=chunk, dense=dense)
    rng = np.random.default_rng(seed)
    hurt = 0
    for i in range(trials):
        spec, rate = specs[i % len(specs)], rates[(i // len(specs)) % len(rates)]
        faultmap = fault_model_from_spec(spec, rate).sample(image, rng)
        reference = Emulator(program, faultmap.apply(image)).run(x)
        np.testing.assert_array_equal(evaluator.output_codes(faultmap), reference, err_msg=f"{spec} {rate} {i}")
        outcome = evaluator.evaluate(faultmap)
        assert outcome == evaluator.full_evaluate(faultmap, x), (spec, rate, i)
        hurt += outcome.mismatches > 0
    return hurt


@pytest.mark.parametrize("name", ["mlp-digits", "cnn-digits", "cnn-digits-stream", "negative-bn", "clip-zero",
                                  "clip-saturate", "scaled-pow2", "scaled-const", "float16", "float32"])
def test_engine_equals_full_emulation(nets, digits, name):
    program, image = nets[name]
    hurt = _check_many(program, image, digits.x_test[:150], digits.y_test[:150], seed=len(name), trials=84)
    assert hurt > 5  # the maps really changed outputs


@pytest.mark.parametrize("name", ["cnn-digits", "cnn-digits-stream", "clip-zero", "scaled-pow2", "float16"])
def test_dense_trials_rerun_fused_on_a_chain_too(nets, digits, name, monkeypatch):
    """``dense=0``: every trial reruns fused from the first layer after its first faulty one that has a cut (a
    chain keeps its delta rules by default, being faster there): exact, also after a cropped convolution
    (which is no cut) and a hoisted pool."""
    program, image = nets[name]
    reruns = []
    original = TrialEvaluator._rerun
    monkeypatch.setattr(TrialEvaluator, "_rerun", lambda self, i, *a: reruns.append(i) or original(self, i, *a))
    hurt = _check_many(program, image, digits.x_test[:150], digits.y_test[:150], seed=len(name) + 1, trials=36,
                       dense=0.0)
    assert hurt > 5
    assert len(reruns) > 10


def test_hoisted_chains_without_the_step_function(nets, digits, monkeypatch):
    """Pooling before the rules one by one (each rule says it is monotone), where the chain does not fold."""
    import hwflow.campaign.engine as engine

    monkeypatch.setattr(engine, "step_function", lambda *a: None)
    for name in ("negative-bn", "clip-saturate"):
        program, image = nets[name]
        _check_many(program, image, digits.x_test[:100], digits.y_test[:100], seed=5, trials=28)


@pytest.mark.parametrize(("label", "kw"), [("saturating", {"overflow": Overflow.SAT}),
                                           ("narrow-wrapping", {"width": 14}),
                                           ("truncating", {"frac_cut": 4})])
def test_accumulators_that_break_linearity(nets, digits, label, kw):
    program, image = nets["cnn-digits"]
    narrow = _with_accumulators(program, **kw)
    x, y = digits.x_test[:80], digits.y_test[:80]
    hurt = _check_many(narrow, image, x, y, seed=7, trials=30, rates=[1e-3, 1e-2])
    assert hurt > 3, label


def test_saturating_resource_layers_sum_in_hls4mls_order(nets, digits):
    """Resource with reuse factor 4 adds each output's products in (i mod 4, i) order, which a saturating
    accumulator sees: the engine's recomputation must follow the same order as full emulation."""
    program, image = nets["cnn-digits"]
    narrow = _with_accumulators(program, overflow=Overflow.SAT, width=12)
    resource = Program(tuple(replace(layer, attrs={**layer.attrs, "strategy": "resource", "reuse_factor": 4})
                             if layer.kind in (Kind.DENSE, Kind.CONV2D) else layer for layer in narrow.layers),
                       narrow.io_type)
    x, y = digits.x_test[:80], digits.y_test[:80]
    assert not np.array_equal(Emulator(resource, image).run(x), Emulator(narrow, image).run(x))  # order matters
    hurt = _check_many(resource, image, x, y, seed=9, trials=24, rates=[1e-3, 1e-2])
    assert hurt > 3


@pytest.mark.parametrize("dense", ["auto", 0.0])
def test_cnn_fmnist_equals_full_emulation(fmnist, dense):
    """With its delta rules, and rerun fused from every dense trial's first cut (conv3 is cropped to the windows
    of the hoisted pool after it: its blocks are no cut to rerun from)."""
    program, image = _convert(zoo_model("cnn-fmnist", 8, 8, seed=4))
    x, y = fmnist.x_test[:120], fmnist.y_test[:120]
    hurt = _check_many(program, image, x, y, seed=11, trials=42, rates=[1e-5, 1e-4, 1e-3, 1e-2], dense=dense)
    assert hurt > 5


def test_batch_norm_and_bias_faults(nets, digits):
    program, image = nets["cnn-digits"]
    specs = [{"model": "bitflip", "layers": ["bn1"]}, {"model": "bitflip", "layers": ["bn2"], "arrays": ["bias"]},
             {"model": "stuck-at", "value": 1, "arrays": ["bias"]}]
    _check_many(program, image, digits.x_test[:100], digits.y_test[:100], seed=3, trials=24, specs=specs,
                rates=[1e-2, 5e-2])


def test_evaluate_many_equals_one_at_a_time(nets, digits):
    program, image = nets["cnn-digits"]
    x, y = digits.x_test[:100], digits.y_test[:100]
    evaluator = TrialEvaluator(program, image, x, y)
    rng = np.random.default_rng(2)
    maps = [fault_model_from_spec({"model": "bitflip"}, 3e-3).sample(image, rng) for _ in range(10)]
    single = [evaluator.evaluate(m) for m in maps]
    assert evaluator.evaluate_many(maps) == single
    assert evaluator.evaluate_many(maps, threads=2) == single


def test_samples_in_chunks_when_the_codes_would_not_fit(nets, digits):
    from hwflow.campaign.delta.golden import bytes_per_sample

    program, image = nets["cnn-digits"]
    x, y = digits.x_test[:100], digits.y_test[:100]
    whole = TrialEvaluator(program, image, x, y)
    chunked = TrialEvaluator(program, image, x, y, memory=30 * bytes_per_sample(program))
    assert len(chunked._ranges) == 4
    assert chunked.golden_correct == whole.golden_correct
    rng = np.random.default_rng(4)
    maps = [fault_model_from_spec({"model": "bitflip"}, r).sample(image, rng) for r in (1e-3, 1e-2) * 4]
    assert chunked.evaluate_many(maps) == whole.evaluate_many(maps)
    for m in maps[:3]:
        np.testing.assert_array_equal(chunked.output_codes(m), whole.output_codes(m))



@pytest.mark.parametrize("name", ["cnn-digits", "mlp-digits", "clip-zero", "float16", "cnn-digits-stream"])
def test_each_rule_gives_the_traced_difference(nets, digits, name):
    """Per layer: the rule, given the traced input difference and the faulty weights, returns exactly
    the traced output difference of two full runs."""
    program, image = nets[name]
    x, y = digits.x_test[:60], digits.y_test[:60]
    evaluator = TrialEvaluator(program, image, x, y)
    clean = Emulator(program, image).trace(x)
    rng = np.random.default_rng(9)
    checked = set()
    for i in range(12):
        faultmap = fault_model_from_spec({"model": "bitflip"}, [3e-3, 1e-2, 3e-2][i % 3]).sample(image, rng)
        faulty = Emulator(program, faultmap.apply(image)).trace(x)
        for layer in program.layers[1:]:
            inputs = traced_difference(clean[layer.inputs[0]], faulty[layer.inputs[0]])
            step = evaluator.layer_step(layer.name, inputs, faultmap)
            if not inputs and not step.changed:
                continue
            out = rule_for(layer).delta(step)
            np.testing.assert_array_equal(apply(out, clean[layer.name]), faulty[layer.name], err_msg=layer.name)
            exact = trim(out, clean[layer.name])
            expected = traced_difference(clean[layer.name], faulty[layer.name])
            got_samples = np.sort(np.concatenate([b.samples for b in exact])) if exact else np.zeros(0, int)
            np.testing.assert_array_equal(got_samples, expected[0].samples if expected else np.zeros(0, int))
            checked.add(layer.kind)
    assert {Kind.DENSE, Kind.BATCHNORM} <= checked


def test_rule_table_refuses_duplicates_and_names_missing_kinds():
    t = parse_type("fixed<8,3>")
    with pytest.raises(EmulatorError, match="already registered"):
        register_rule(Kind.DENSE, rule_for(LayerSpec("d", Kind.DENSE, ("i",), (1,), t)))
    with pytest.raises(UnsupportedLayerError, match="no delta rule"):
        rule_for(LayerSpec("i", Kind.INPUT, (), (1,), t))
