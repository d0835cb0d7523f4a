"""A hardened model goes wherever a plain one goes: saved with its record, loaded, converted, emulated."""

from __future__ import annotations

import numpy as np
import pytest

from hwflow.errors import HardenError

from .conftest import zoo_model


@pytest.fixture(scope="module")
def hardened(digits, tmp_path_factory):
    from hwflow.harden.pipeline import HardenConfig, harden, save_hardened
    from hwflow.harden.recipe import Recipe

    config = HardenConfig(clip_rates=(3e-3,), clip_trials=2, clip_rounds=1, val_samples=64)
    model = zoo_model("cnn-digits", 8, 8)
    result = harden(model, Recipe.parse("clipact+scale"), digits, config)
    path = save_hardened(result, tmp_path_factory.mktemp("h") / "h.h5", {"dataset": "digits"})
    return result, path


def test_record_says_what_was_done(hardened):
    result, _ = hardened
    assert result.record["methods"] == ["clipact", "scale"]
    assert set(result.record["clipact"]["thresholds"]) == {"relu1", "relu2"}
    assert result.storage.mode == "rule"
    assert result.storage.shifts()


def test_saved_model_round_trips_with_its_storage(hardened, digits, tmp_path):
    from hwflow.campaign.variants import convert_hardened
    from hwflow.convert import HlsOptions
    from hwflow.emulator import Emulator
    from hwflow.harden.pipeline import load_hardened

    result, path = hardened
    loaded = load_hardened(path)
    assert loaded.storage == result.storage
    assert loaded.record == result.record
    assert [type(layer).__name__ for layer in loaded.model.layers].count("ClipActivation") == 2
    options = HlsOptions.make("parallel")
    _, p1, i1 = convert_hardened(result, options, tmp_path / "a")
    _, p2, i2 = convert_hardened(loaded, options, tmp_path / "b")
    assert any(a.scale.shift for a in i2)
    x = digits.x_test[:64]
    np.testing.assert_array_equal(Emulator(p1, i1).run(x), Emulator(p2, i2).run(x))


def test_cli_refuses_training_methods_and_double_hardening(hardened, capsys):
    from hwflow.cli import main

    _, path = hardened
    assert main(["harden", str(path), "--method", "saq", "--out", "x.h5"]) == 2
    assert "training method" in capsys.readouterr().err
    assert main(["harden", str(path), "--method", "clipact", "--out", "x.h5"]) == 2
    assert "already hardened with clipact" in capsys.readouterr().err
    assert main(["harden", str(path), "--method", "shrink", "--out", "x.h5"]) == 2
    assert "unknown hardening method 'shrink'" in capsys.readouterr().err


def test_save_refuses_other_suffixes(hardened, tmp_path):
    from hwflow.harden.pipeline import save_hardened

    with pytest.raises(HardenError, match=r"saved as \.h5"):
        save_hardened(hardened[0], tmp_path / "m.keras")


@pytest.mark.slow
def test_verify_cli_compiles_the_storage_plan_into_the_csim(hardened, capsys, tmp_path):
    from hwflow.cli import main

    _, path = hardened
    code = main(["verify", str(path), "--samples", "64", "--workdir", str(tmp_path / "csim")])
    assert "verify: 64 samples" in capsys.readouterr().out
    assert code == 0
