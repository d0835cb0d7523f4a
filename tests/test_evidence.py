"""The evidence table: one row per variant, mean ± half-width per rate, gain over the right baseline."""

from __future__ import annotations

import math

from hwflow.report.evidence import evidence_markdown, evidence_rows, write_evidence
from hwflow.report.stats import Summary


def _s(variant: str, rate: float, mean: float, half: float = 0.01, study: str = "sweep") -> Summary:
    return Summary("c", variant, study, "bitflip", "", -1, rate, "emulator", 10, mean, mean - half, mean + half,
                   half, mean, mean - half, mean + half, 1.0, 1.0, 0.0, 0.9, 0.9 - mean)


def test_rows_gains_and_float_baselines(tmp_path):
    summaries = [_s("m/baseline", 1e-3, 0.5), _s("m/scale", 1e-3, 0.9), _s("m/float16", 1e-3, 0.3),
                 _s("m/float16+scale", 1e-3, 0.8), _s("m/baseline", 1e-4, 0.85, study="layer")]
    rates, rows = evidence_rows(summaries)["bitflip"]
    assert rates == [1e-3]
    gains = {row["variant"]: row[("gain", 1e-3)] for row in rows}
    assert math.isnan(gains["m/baseline"])
    assert math.isclose(gains["m/scale"], 0.4)
    assert math.isclose(gains["m/float16"], -0.2)
    assert math.isclose(gains["m/float16+scale"], 0.5)  # against float16 unscaled, not the fixed baseline
    text = evidence_markdown(summaries)
    assert "| m/scale | 90.0 | 90.0 ± 1.0 [+40.0] |" in text
    md, csv_path = write_evidence(summaries, tmp_path)
    assert md.read_text() == text
    assert len(csv_path.read_text().splitlines()) == 5  # header + 4 sweep rows (the layer study is not evidence)
