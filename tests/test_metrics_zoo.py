"""The ad08 zoo model: MLPerf Tiny's autoencoder shape sized to the digits, trained on the normal digits
only, its reported test "accuracy" the reconstruction-error ROC AUC (scikit-learn's, on all digits)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from hwflow.campaign.spec import parse_spec
from hwflow.metrics import MetricSpec
from hwflow.zoo.models import ZOO, build_model


def test_ad08_shape_and_default_metric():
    model = build_model("ad08")
    dense = [layer for layer in model.layers if type(layer).__name__ == "QDense"]
    assert [layer.units for layer in dense] == [32, 32, 32, 32, 8, 32, 32, 32, 32, 64]
    assert model.output_shape == (None, 64)
    assert ZOO["ad08"].task == "autoencode"
    spec = parse_spec({"name": "a", "seed": 1, "models": [{"zoo": "ad08"}],
                       "faults": [{"model": "bitflip", "rates": [1e-3], "trials": 1}]})
    assert spec.metric_for("ad08/baseline") == MetricSpec("auc", normal=(0, 1, 2, 3, 4))  # the zoo's own
    spec = parse_spec({"name": "a", "seed": 1, "metric": {"name": "mse", "target": "input"},
                       "models": [{"zoo": "ad08"}], "faults": [{"model": "bitflip", "rates": [1e-3], "trials": 1}]})
    assert spec.metric_for("ad08/baseline") == MetricSpec("mse", target="input")  # the spec's wins


@pytest.mark.slow
@pytest.mark.parametrize("method", ["standard", "saq"])
def test_ad08_trains_on_normal_digits_and_reports_its_auc(tmp_path, digits, method):
    from hwflow.zoo import TrainConfig, train

    result = train(TrainConfig("ad08", epochs=4, out=tmp_path / "ad08.h5", method=method), progress=False)
    out = result.model.predict(digits.x_test, verbose=0)
    errors = np.mean((out.astype(np.float64) - digits.x_test.reshape(len(out), -1).astype(np.float64)) ** 2, axis=1)
    expected = roc_auc_score(digits.y_test >= 5, errors)
    assert result.test_accuracy == pytest.approx(expected, rel=1e-12)
    assert result.test_accuracy > 0.6  # far from chance after a few epochs already
    side = json.loads(result.sidecar.read_text())
    assert (side["metric"], side["method"]) == ("auc", method)


@pytest.mark.slow
def test_ad08_with_the_zoo_defaults_reaches_its_floor(tmp_path):
    """The zoo's training settings separate the anomalies well (0.963 measured; seeded, so repeatable)."""
    from hwflow.zoo import TrainConfig, train

    result = train(TrainConfig("ad08", out=tmp_path / "ad08.h5"), progress=False)
    assert result.test_accuracy >= 0.95
