"""The HTML report in a real browser: Debian's Chromium, headless, in a 1280-pixel-wide window.

A report is read on a laptop: the page must never scroll sideways, however long the names and
however many columns the tables have (wide tables scroll inside their own box). The page is
loaded with a small script that records the document's width after layout, and a control page
that is too wide proves the measurement can fail. Skipped, with the reason, without chromium.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from hwflow.report import write_report
from hwflow.results import Baseline, ResultsDB, TrialRow

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (scripts/install-deps.sh "
                                    "installs Debian's chromium; apt-get install chromium)")
WIDTH = 1280
MEASURE = """<script>window.addEventListener("load", function () {
  var d = document.documentElement, out = document.createElement("pre");
  out.id = "hwflow-measure";
  out.textContent = JSON.stringify({scroll: d.scrollWidth, client: d.clientWidth, inner: window.innerWidth});
  document.body.appendChild(out);
});</script>"""


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={tmp / 'profile'}", f"--window-size={WIDTH},900", "--virtual-time-budget=5000", *args],
        capture_output=True, text=True, timeout=180, check=False)


def measure(page: Path, tmp: Path) -> dict:
    """Widths of ``page`` laid out in a 1280-pixel window: document scroll width, client width, window width."""
    probe = tmp / f"measured-{page.name}"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    done = _chromium(tmp, "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="hwflow-measure">([^<]*)</pre>', done.stdout)
    assert found, f"chromium printed no measurement (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(found.group(1))


def wide_database(path: Path) -> Path:
    """Results with long names, many variants and rates, a layer x bit study and two boards that disagree."""
    campaign = "a-campaign-with-a-long-descriptive-name-for-the-fashion-mnist-hardening-comparison"
    variants = [f"cnn-fmnist-with-a-long-model-name/{v}" for v in
                ("baseline", "clipact+scale", "saq+clipact+scale", "float16+scale", "sparse-saq+clipact")]
    faults = ("bitflip", "stuck-at(value=mixed)", "burst(length=3, layers=conv1,conv2,conv3,dense_classifier)")
    layers = [f"layer_with_a_long_name_{i}" for i in range(12)]
    rows, baselines = [], []
    for v in variants:
        baselines.append(Baseline(campaign, v, "emulator", 10_000, 9_000))
        for fault in faults:
            for rate in (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2):
                for t in range(3):
                    seed = zlib.crc32(repr((v, fault, rate, t)).encode())
                    rows.append(TrialRow(campaign, v, "sweep", fault, "", -1, rate, t, seed, 7, 7, 10_000,
                                         9_000 - int(rate * 1e5) - t, 100))
                    if v == variants[0] and rate == 1e-2:  # the board's run: one trial differs
                        rows.append(TrialRow(campaign, v, "sweep", fault, "", -1, rate, t, seed, 7, 7, 10_000,
                                             9_000 - int(rate * 1e5) - t - (t == 1), 100, board="pynq-z2-board"))
        for layer in layers:
            for bit in range(16):
                rows.append(TrialRow(campaign, v, "layer-bit", "bitflip", layer, bit, 1e-2, 0, bit, 5, 5, 10_000,
                                     9_000 - 10 * bit, 50))
    with ResultsDB(path) as db:
        db.register_campaign(campaign, {"name": campaign, "models": [{"path": "x" * 300}], "note": "y " * 400})
        for b in baselines:
            db.put_baseline(b)
        db.add_trials(rows)
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deep-folder-" + "with-a-long-name-" * 6)
    return write_report(wide_database(tmp / "results-of-a-long-campaign.sqlite"), tmp / "report")


def test_the_report_has_wide_tables_to_fit(report):
    text = report.html.read_text(encoding="utf-8")
    assert text.count('<div class="scroll"><table>') >= 4  # headline, sensitivity, boards, details
    assert "a-campaign-with-a-long-descriptive-name" in text


@needs_chromium
def test_the_report_fits_a_1280_pixel_window(report, tmp_path):
    widths = measure(report.html, tmp_path)
    assert widths["inner"] == WIDTH  # measured in the window asked for
    assert widths["scroll"] <= widths["client"] <= WIDTH, widths
    shot = tmp_path / "report.png"
    done = _chromium(tmp_path, f"--screenshot={shot}", report.html.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(shot.read_bytes()[16:20], "big") == WIDTH  # PNG header: the page as a user sees it


@needs_chromium
def test_the_measurement_catches_a_page_that_is_too_wide(tmp_path):
    page = tmp_path / "wide.html"
    page.write_text('<!DOCTYPE html><html><body><div style="width: 2000px">wide</div></body></html>')
    widths = measure(page, tmp_path)
    assert widths["scroll"] > WIDTH
