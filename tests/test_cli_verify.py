"""``hwflow verify`` as users run it: exit codes, the summary line, and clear errors for bad input."""

import pytest

from hwflow.cli import main
from tests.conftest import needs_gxx, zoo_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "cnn.h5"
    zoo_model("cnn-digits", 6, 6).save(path)
    return path


@needs_gxx
@pytest.mark.slow
def test_verify_bit_exact_exits_zero(model_file, tmp_path, capsys):
    code = main(["verify", str(model_file), "--dataset", "digits", "--samples", "64", "--io", "stream",
                 "--workdir", str(tmp_path / "hls")])
    out = capsys.readouterr().out
    assert code == 0
    assert "verify: 64 samples, " in out
    assert " 0 mismatches" in out


def test_missing_model_file(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nope.h5"), "--dataset", "digits"]) == 2
    err = capsys.readouterr().err
    assert "nope.h5" in err
    assert "Traceback" not in err


def test_unknown_dataset(model_file, capsys):
    assert main(["verify", str(model_file), "--dataset", "mnist-but-wrong"]) == 2
    assert "mnist-but-wrong" in capsys.readouterr().err


def test_no_dataset_and_no_sidecar(model_file, capsys):
    assert main(["verify", str(model_file)]) == 2
    assert "--dataset" in capsys.readouterr().err


def test_bad_sample_count(model_file):
    with pytest.raises(SystemExit):
        main(["verify", str(model_file), "--samples", "0"])


def test_bad_reuse_factor(model_file, capsys):
    assert main(["verify", str(model_file), "--dataset", "digits", "--reuse-factor", "0"]) == 2
    assert "reuse factor" in capsys.readouterr().err
