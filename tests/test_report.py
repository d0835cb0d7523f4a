"""Reports: interval arithmetic against hand values, sensitivity matrices, board discrepancies,
and the files (PNG, CSV, self-contained HTML) written from a synthetic results database."""

import argparse
import base64
import csv
import math
import zlib

import numpy as np
import pytest

from hwflow.cli import report as report_cli
from hwflow.errors import HwflowError
from hwflow.report import (
    ReportError,
    compare_boards,
    sensitivity_table,
    sensitivity_tables,
    summarize,
    write_report,
)
from hwflow.report.stats import t_interval, wilson_interval
from hwflow.results import Baseline, ResultsDB, TrialRow

CAMPAIGN = "demo"
BASE, ODD = "cnn/baseline", "cnn/<b>clip</b>"  # ODD checks that names are escaped in HTML
LAYERS = {"conv2d": 8, "conv2d_1": 8, "dense": 4}  # layer -> stored word width
SAMPLES = 100
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(variant, study, fault, rate, trial, correct, layer="", bit=-1, board="emulator", seed=None,
         mismatches=None):
    seed = seed if seed is not None else zlib.crc32(repr((study, fault, layer, bit, rate, trial)).encode())
    return TrialRow(CAMPAIGN, variant, study, fault, layer, bit, float(rate), trial, seed,
                    faults=round(rate * 1000), effective=round(rate * 900), samples=SAMPLES, correct=correct,
                    mismatches=SAMPLES - correct if mismatches is None else mismatches, board=board)


def _rows() -> list[TrialRow]:
    rows = []
    for variant, ff in ((BASE, 97), (ODD, 95)):
        for fault in ("bitflip", "stuck-at(value=mixed)"):
            for rate in (0.0, 1e-3, 1e-2):
                for t in range(3):
                    if variant == BASE and fault == "bitflip" and rate == 1e-3:
                        correct = (80, 90, 100)[t]  # the hand-computed group
                    else:
                        correct = ff - round(rate * 3000) - t
                    rows.append(_row(variant, "sweep", fault, rate, t, correct))
        for layer_i, (layer, width) in enumerate(LAYERS.items()):
            for bit in range(width):
                for t in range(2):  # drop grows with the bit and the layer: cell value is checked below
                    rows.append(_row(variant, "layer-bit", "bitflip", 1e-2, t, ff - bit - 10 * layer_i, layer, bit))
            rows.append(_row(variant, "layer", "bitflip", 1e-2, 0, ff - 5 * layer_i, layer))
    # The board ran the baseline's bitflip sweep at 1e-2: trial 1 disagrees, trial 2 was run with another seed.
    for r in list(rows):
        if r.variant == BASE and r.study == "sweep" and r.fault_model == "bitflip" and r.rate == 1e-2:
            correct = r.correct - 1 if r.trial == 1 else r.correct
            seed = r.seed + 1 if r.trial == 2 else r.seed
            rows.append(_row(BASE, "sweep", "bitflip", 1e-2, r.trial, correct, board="pynq-z2", seed=seed,
                             mismatches=r.mismatches))
    return rows


BASELINES = [Baseline(CAMPAIGN, BASE, "emulator", SAMPLES, 97), Baseline(CAMPAIGN, ODD, "emulator", SAMPLES, 95),
             Baseline(CAMPAIGN, BASE, "pynq-z2", SAMPLES, 97)]


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("report-db") / "results.sqlite"
    with ResultsDB(path) as db:
        db.register_campaign(CAMPAIGN, {"name": CAMPAIGN, "seed": 11, "rates": [0, 1e-3, 1e-2], "note": "<x & y>"})
        for b in BASELINES:
            db.put_baseline(b)
        db.add_trials(_rows())
    return path


@pytest.fixture(scope="module")
def report(db_path, tmp_path_factory):
    return write_report(db_path, tmp_path_factory.mktemp("report") / "out")


# --- statistics -------------------------------------------------------------------------------


def _find(summaries, **want):
    found = [s for s in summaries if all(getattr(s, k) == v for k, v in want.items())]
    assert len(found) == 1, want
    return found[0]


def test_t_interval_matches_hand_value():
    s = _find(summarize(_rows(), BASELINES), variant=BASE, study="sweep", fault_model="bitflip", rate=1e-3,
              board="emulator")
    half = 4.302653 * 0.1 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n), s = 0.1
    assert s.n_trials == 3
    assert s.mean_accuracy == pytest.approx(0.9)
    assert s.half_width == pytest.approx(half, rel=1e-6)
    assert s.ci_low == pytest.approx(0.9 - half, rel=1e-6)
    assert s.ci_high == 1.0  # 0.9 + 0.248 clipped to the range of an accuracy
    assert s.fault_free_accuracy == pytest.approx(0.97)
    assert s.accuracy_drop == pytest.approx(0.07)
    assert s.pooled_accuracy == pytest.approx(0.9)
    assert s.mean_mismatch_rate == pytest.approx(0.1)
    assert s.mean_faults == 1.0


def test_wilson_interval_matches_hand_value():
    # 8 of 10: the textbook Wilson 95% interval is [0.4902, 0.9433].
    low, high = wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.490155, abs=1e-5), pytest.approx(0.943318, abs=1e-5))
    s = _find(summarize(_rows(), BASELINES), variant=BASE, study="sweep", fault_model="bitflip", rate=1e-3,
              board="emulator")
    z, n, p = 1.959964, 300, 0.9
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert (s.wilson_low, s.wilson_high) == (pytest.approx(centre - half, rel=1e-6),
                                            pytest.approx(centre + half, rel=1e-6))
    assert s.wilson_high - s.wilson_low < s.half_width  # pooled samples: narrower, hence secondary


def test_single_trial_has_no_interval():
    mean, low, high, half = t_interval([0.7])
    assert mean == 0.7
    assert math.isnan(low)
    assert math.isnan(high)
    assert math.isnan(half)
    s = _find(summarize(_rows(), BASELINES), variant=BASE, study="layer", target_layer="dense")
    assert s.n_trials == 1
    assert math.isnan(s.half_width)
    assert math.isnan(s.ci_low)


def test_missing_baseline_gives_nan_drop():
    s = summarize(_rows(), [])[0]
    assert math.isnan(s.fault_free_accuracy)
    assert math.isnan(s.accuracy_drop)


def test_layer_bit_sensitivity_matrix():
    summaries = summarize(_rows(), BASELINES)
    with pytest.raises(ReportError, match="2 'layer-bit' sensitivity tables match"):
        sensitivity_table(summaries, "layer-bit")
    rows, cols, drop = sensitivity_table(summaries, "layer-bit", variant=BASE)
    assert rows == ["conv2d", "conv2d_1", "dense"]
    assert cols == [str(b) for b in range(8)]
    # trials at (layer i, bit b): correct = 97 - b - 10 i - 0 and - 0 (both trials equal) -> drop (b + 10 i) / 100
    expected = np.array([[(b + 10 * i) / 100 if b < LAYERS[layer] else np.nan for b in range(8)]
                         for i, layer in enumerate(LAYERS)])
    np.testing.assert_allclose(drop, expected, atol=1e-12)  # NaN where "dense" has no bit 4..7
    table = sensitivity_table(summaries, "layer", variant=ODD)
    assert (table.row_labels, table.col_labels) == (list(LAYERS), ["0.01"])
    np.testing.assert_allclose(table.drop[:, 0], [0.0, 0.05, 0.10], atol=1e-12)
    assert {t.study for t in sensitivity_tables(summaries)} == {"layer", "layer-bit"}
    ordered = sensitivity_table(summaries, "layer-bit", variant=BASE, layer_order=["dense", "conv2d"])
    assert ordered.row_labels == ["dense", "conv2d", "conv2d_1"]  # unlisted layers follow
    np.testing.assert_allclose(ordered.drop[0], expected[2], atol=1e-12)


def test_compare_boards_finds_the_discrepancy_once():
    found = compare_boards(_rows())
    results = [d for d in found if d.kind == "result"]
    seeds = [d for d in found if d.kind == "seed"]
    assert len(results) == 1
    assert (results[0].trial, results[0].reference_board, results[0].board) == (1, "emulator", "pynq-z2")
    assert results[0].differs == ("correct",)
    assert results[0].reference.correct - results[0].other.correct == 1
    assert len(seeds) == 1
    assert seeds[0].trial == 2
    assert compare_boards([r for r in _rows() if r.board == "emulator"]) == []


# --- files --------------------------------------------------------------------------------------


def test_files_written(report):
    names = sorted(p.name for p in report.out_dir.iterdir())
    assert names == ["accuracy_vs_rate.png", "report.html", "sensitivity_layer-bit.png", "sensitivity_layer.png",
                     "summary.csv", "trials.csv"]
    for png in (report.accuracy_vs_rate, *report.sensitivity.values()):
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC
        assert len(data) > 20_000, png  # a real figure, not an empty canvas


def test_csv_files(report):
    with report.trials_csv.open() as f:
        trials = list(csv.DictReader(f))
    assert len(trials) == len(_rows())
    assert set(trials[0]) == set(TrialRow.__dataclass_fields__) | {"accuracy"}
    assert float(trials[0]["accuracy"]) == int(trials[0]["correct"]) / int(trials[0]["samples"])
    with report.summary_csv.open() as f:
        summary = list(csv.DictReader(f))
    assert len(summary) == len(summarize(_rows(), BASELINES))
    assert any(r["half_width"] == "" for r in summary)  # NaN written as an empty cell


def test_html_is_self_contained_and_escaped(report):
    text = report.html.read_text(encoding="utf-8")
    assert 'src="http' not in text
    assert "<link" not in text
    assert "<script" not in text
    assert text.count('src="data:image/png;base64,') == 3
    for png in (report.accuracy_vs_rate, *report.sensitivity.values()):
        assert base64.b64encode(png.read_bytes()).decode() in text
    assert "cnn/&lt;b&gt;clip&lt;/b&gt;" in text
    assert ODD not in text
    assert "&lt;x &amp; y&gt;" in text  # the spec, escaped
    assert "Student-t" in text
    assert "1 trial(s) with the same seed gave different results" in text
    assert "1 trial(s) ran with different seeds" in text


def test_single_board_report_says_so(tmp_path):
    db = tmp_path / "one.sqlite"
    with ResultsDB(db) as d:
        d.register_campaign(CAMPAIGN, {"name": CAMPAIGN})
        d.add_trials(r for r in _rows() if r.board == "emulator" and r.study == "sweep")
    files = write_report(db, tmp_path / "out", campaign=CAMPAIGN)
    text = files.html.read_text(encoding="utf-8")
    assert "Only one board (emulator)" in text
    assert "No fault-free baseline recorded" in text
    assert files.sensitivity == {}


def test_cli_report(db_path, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="hwflow")
    report_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", "--db", str(db_path), "--out", str(tmp_path / "r"), "--campaign", CAMPAIGN])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "r" / "report.html") in out
    assert "bitflip" in out
    assert "0.9000 ± 0.2484" in out
    assert "1 discrepancies, 1 seed mismatches" in out


# --- errors -------------------------------------------------------------------------------------


def test_empty_database(tmp_path):
    db = tmp_path / "empty.sqlite"
    ResultsDB(db).close()
    with pytest.raises(ReportError, match="holds no trials"):
        write_report(db, tmp_path / "out")
    assert issubclass(ReportError, HwflowError)


def test_missing_database_is_not_created(tmp_path):
    with pytest.raises(ReportError, match="no results database"):
        write_report(tmp_path / "nope.sqlite", tmp_path / "out")
    assert not (tmp_path / "nope.sqlite").exists()


def test_unknown_campaign(db_path, tmp_path):
    with pytest.raises(ReportError, match=r"no campaign 'other'; it has: demo"):
        write_report(db_path, tmp_path / "out", campaign="other")
    ns = argparse.Namespace(db=str(db_path), out=str(tmp_path / "out"), campaign="other")
    with pytest.raises(ReportError):
        report_cli.run(ns)


def test_line_colours_are_distinct_up_to_twenty_lines():
    from matplotlib.colors import to_hex

    from hwflow.report.plots import _line_colours

    for n in (3, 10, 14, 20):
        colours = _line_colours([f"v{i}" for i in range(n)])
        assert len({to_hex(c) for c in colours.values()}) == n
