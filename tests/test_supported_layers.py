"""The README's list of supported layers is the converter's, no more and no less, and each entry is
exercised: a README that overstates (or forgets) what hwflow takes fails here."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from hwflow.emulator import Emulator
from hwflow.zoo.loading import ACTIVATIONS, QUANTIZED_ACTIVATIONS, SUPPORTED_LAYERS, WEIGHT_QUANTIZERS
from tests.conftest import needs_gxx

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _between(start: str, end: str) -> str:
    i = README.index(start)
    return README[i : README.index(end, i)]


def _ticked(text: str, pattern: str) -> set[str]:
    return {t for t in re.findall(r"`([^`]+)`", text) if re.fullmatch(pattern, t)}


def test_the_readme_lists_exactly_the_layers_the_converter_accepts():
    listed = _ticked(_between("Supported layers (Keras and QKeras classes", "Activations (in an"), r"[A-Z]\w+")
    assert listed == set(SUPPORTED_LAYERS), (
        f"README lists but hwflow refuses: {sorted(listed - SUPPORTED_LAYERS)}; "
        f"hwflow accepts but README omits: {sorted(SUPPORTED_LAYERS - listed)}")


def test_the_readme_lists_exactly_the_activations_and_quantizers_accepted():
    activations = _ticked(_between("Activations (in an", "(a final softmax"), r"[a-z_]+")
    assert activations == set(ACTIVATIONS)
    quantizers = _ticked(_between("Quantizers: `", "in object or keyword"), r"[a-z_0-9]+")
    assert quantizers == set(QUANTIZED_ACTIVATIONS) | set(WEIGHT_QUANTIZERS)


_THIS_FILES_MODEL = "Conv1D( ReLU("  # built by test_plain_keras_conv1d_and_relu_layers_equal_csim below


def test_every_listed_layer_is_built_by_a_test_or_a_zoo_model():
    """Each class is constructed somewhere the suite converts models: the tests and the zoo."""
    sources = "\n".join(p.read_text() for p in [*ROOT.glob("tests/*.py"), *ROOT.glob("hwflow/zoo/*.py"),
                                                 *ROOT.glob("hwflow/harden/*.py")])
    sources = sources.replace(Path(__file__).read_text(), "") + _THIS_FILES_MODEL  # not this test's own list
    constructed = {"InputLayer"} if re.search(r"\bInput\(", sources) else set()
    constructed |= {name for name in SUPPORTED_LAYERS if re.search(rf"\b{name}\(", sources)}
    assert constructed == set(SUPPORTED_LAYERS), f"never built in a test: {sorted(SUPPORTED_LAYERS - constructed)}"


@pytest.mark.slow
@needs_gxx
def test_plain_keras_conv1d_and_relu_layers_equal_csim(tmp_path):
    """The two classes no family test built: an unquantized ``Conv1D`` and a Keras ``ReLU`` layer
    (hls4ml gives them its default types), every layer against the C simulation."""
    import tensorflow as tf

    from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls
    from hwflow.verify import CSimModel, compare_layers

    tf.keras.utils.set_random_seed(3)
    inp = tf.keras.Input((12, 2), name="seq")
    h = tf.keras.layers.Conv1D(4, 3, strides=2, padding="same", name="conv")(inp)
    h = tf.keras.layers.ReLU(name="relu")(h)
    h = tf.keras.layers.Flatten(name="flat")(h)
    out = tf.keras.layers.Dense(3, name="dense")(h)
    model = tf.keras.Model(inp, out)
    x = np.random.default_rng(0).uniform(-2, 2, (64, 12, 2)).astype(np.float32)
    hls = convert(model, HlsOptions.make("parallel"), tmp_path)
    csim = CSimModel(hls, program_from_hls(hls), image_from_hls(hls), tmp_path)
    check = compare_layers(csim, x)
    assert check.first is None, check.summary()
    assert {"conv", "relu", "dense"} <= set(check.compared)
    np.testing.assert_array_equal(Emulator(csim.program, csim.image).logits(x).reshape(len(x), -1),
                                  csim.csim_logits(x))
