"""Layers hls4ml cannot carry under the user's name (renamed inside): the hardware build puts their
weights in BRAM under the user's names, the built design's C simulation equals the emulator under
faults, and the layer-by-layer comparison with hls4ml's trace covers them."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import needs_gxx
from tests.test_own_model import odd_names_model

RENAMED = ("input", "my-dense", "my_bias")  # weighted layers whose hls4ml names are internal


def test_build_keeps_the_users_names_for_renamed_weight_memories(tmp_path):
    from hwflow.hardware.boards import load_board
    from hwflow.hardware.project import BuildOptions, generate

    build = generate(odd_names_model(), load_board("pynq-z2"), tmp_path / "build", BuildOptions(min_words=1))
    layers = {(m.layer, m.array) for m in build.manifest.weight_memories}
    assert layers == {(name, role) for name in RENAMED for role in ("weight", "bias")}
    assert "hwflow_l" not in (tmp_path / "build" / "manifest.json").read_text()


@needs_gxx
@pytest.mark.slow
def test_built_design_with_renamed_layers_equals_the_emulator_under_faults(tmp_path):
    from hwflow.hardware.boards import load_board
    from hwflow.hardware.csim_board import check_build
    from hwflow.hardware.project import BuildOptions, generate

    generate(odd_names_model(), load_board("pynq-z2"), tmp_path / "build", BuildOptions(min_words=1))
    x = (np.random.default_rng(5).integers(-64, 64, (40, 6)) / 64).astype(np.float32)
    check = check_build(tmp_path / "build", x, fault_maps=10)
    assert check.ok, check.summary()
    assert check.words_written > 0


@needs_gxx
@pytest.mark.slow
def test_every_renamed_layer_is_compared_with_hls4mls_trace(tmp_path):
    from hwflow.convert import HlsOptions
    from hwflow.verify import build_csim, compare_layers

    csim = build_csim(odd_names_model(), HlsOptions(), tmp_path / "hls")
    x = (np.random.default_rng(6).integers(-64, 64, (30, 6)) / 64).astype(np.float32)
    check = compare_layers(csim, x)
    assert check.first is None
    assert set(check.compared) == {"input", "my-act", "my-dense", "relu", "my_bias"}
    assert set(check.not_compared) == {"int"}  # the input layer: hls4ml runs no function for it
