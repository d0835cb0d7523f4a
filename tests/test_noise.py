"""What the commands print: results on stdout, progress bars and errors on stderr, no library noise.

TensorFlow's start-up lines come from C++ at import time, so only a fresh process shows whether they
are silenced: these tests run ``hwflow`` and the demo as subprocesses. The demo's output is compared
line by line with the sample block in the README (numbers matched by pattern).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import needs_gxx

ROOT = Path(__file__).resolve().parent.parent
HWFLOW = [sys.executable, "-m", "hwflow"]
NUMBER = re.compile(r"\d+(?:\.\d+)?")
# Lines that must never reach a user who did not ask for logs.
NOISE = re.compile(r"Unable to register|UserWarning|warnings\.warn|^(INFO|DEBUG) |Epoch \d+/\d+|\d+/\d+ \[=*")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the conftest sets one; the commands must not need it
    return env


def _run(args: list[str], cwd: Path = ROOT, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False)


def _noise(stderr: str) -> list[str]:
    """The lines of ``stderr`` that are neither a progress bar nor blank (bars redraw with \\r)."""
    lines = [part.strip() for line in stderr.splitlines() for part in line.split("\r")]
    return [line for line in lines if line and not re.match(r"^[\w -]+: +\d+%\|", line)]


def readme_demo_block(readme: Path = ROOT / "README.md") -> list[str]:
    """The lines of the README's sample output of ``make demo`` (the code block after 'make demo` prints')."""
    text = readme.read_text()
    start = text.index("`make demo` prints")
    block = text[text.index("```\n", start) + 4:]
    return block[:block.index("```")].splitlines()


def line_pattern(line: str) -> re.Pattern:
    """``line`` exactly, except that every number may be any number."""
    parts = NUMBER.split(line)
    return re.compile(r"\d+(?:\.\d+)?".join(re.escape(p) for p in parts) + r"\Z")


def mismatches(printed: list[str], expected: list[str]) -> list[str]:
    """How ``printed`` differs from ``expected`` (same lines in the same order, numbers free)."""
    out = [f"line {i + 1}: printed {got!r}, README {want!r}"
           for i, (got, want) in enumerate(zip(printed, expected, strict=False))
           if not line_pattern(want).match(got)]
    if len(printed) != len(expected):
        out.append(f"{len(printed)} lines printed, {len(expected)} in the README")
    return out


def test_readme_block_is_found_and_a_changed_line_is_caught():
    block = readme_demo_block()
    assert block[0].startswith("[1/7] ")
    assert block[-1].startswith("demo finished in ")
    assert mismatches(block, block) == []
    renumbered = [NUMBER.sub(lambda m: str(int(float(m.group())) + 7), line) for line in block]
    assert mismatches(renumbered, block) == []  # numbers are free ...
    i = next(i for i, line in enumerate(block) if "C simulation" in line)
    reworded = [*block[:i], block[i].replace("C simulation", "C sim"), *block[i + 1:]]  # ... words are not
    assert mismatches(reworded, block) == [f"line {i + 1}: printed {reworded[i]!r}, README {block[i]!r}"]
    assert mismatches(block[:-1], block) == [f"{len(block) - 1} lines printed, {len(block)} in the README"]


def test_library_logging_is_off_by_default_and_back_with_verbose():
    from hwflow.quiet import TqdmHandler, configure_logging

    root = logging.getLogger()
    before = (root.level, logging.getLogger("hwflow").level)
    try:
        configure_logging(False)
        assert not logging.getLogger("hwflow.zoo.train").isEnabledFor(logging.INFO)
        assert logging.getLogger("hwflow.zoo.train").isEnabledFor(logging.WARNING)
        configure_logging(True)
        assert logging.getLogger("hwflow.zoo.train").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("hls4ml").isEnabledFor(logging.INFO)
        assert sum(isinstance(h, TqdmHandler) for h in root.handlers) == 1  # replaced, not stacked
    finally:
        for h in [h for h in root.handlers if isinstance(h, TqdmHandler)]:
            root.removeHandler(h)
        root.setLevel(before[0])
        logging.getLogger("hwflow").setLevel(before[1])


@pytest.mark.slow
def test_train_prints_its_result_and_a_progress_bar_only(tmp_path):
    out = tmp_path / "m.h5"
    done = _run([*HWFLOW, "train", "--model", "mlp-digits", "--epochs", "2", "--out", str(out)])
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1, done.stdout
    assert done.stdout.startswith("mlp-digits on digits ")
    assert _noise(done.stderr) == []
    assert "training:" in done.stderr  # the bar over the epochs

    verbose = _run([*HWFLOW, "-v", "train", "--model", "mlp-digits", "--epochs", "2", "--out", str(out), "--quiet"])
    assert verbose.returncode == 0, verbose.stderr
    assert "INFO hwflow.zoo.train: training mlp-digits on digits" in verbose.stderr
    assert "DEBUG hwflow.zoo.train: epoch 2/2: " in verbose.stderr
    assert "Unable to register" not in verbose.stderr  # spurious also when debugging


@pytest.mark.slow
@needs_gxx
def test_verify_prints_one_line_and_no_keras_warning(tmp_path):
    model = tmp_path / "m.h5"
    assert _run([*HWFLOW, "train", "--model", "mlp-digits", "--epochs", "1", "--out", str(model)]).returncode == 0
    done = _run([*HWFLOW, "verify", str(model), "--samples", "20", "--workdir", str(tmp_path / "v")])
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"verify: 20 samples, \d+ layers, 0 mismatches\n", done.stdout.splitlines(keepends=True)[0])
    assert _noise(done.stderr) == []


def test_an_error_is_one_line_on_stderr(tmp_path):
    done = _run([*HWFLOW, "report", "--db", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "r")], timeout=300)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = _noise(done.stderr)
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("hwflow report: error: ")


@pytest.mark.slow
@needs_gxx
def test_demo_prints_what_the_readme_shows(tmp_path):
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # the README runs it from the repository root
    done = _run([sys.executable, "-m", "hwflow.demo", "--out", "out/demo", "--spec", "examples/campaign-digits.yaml"],
                cwd=tmp_path, timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    assert mismatches(done.stdout.splitlines(), readme_demo_block()) == []
    assert _noise(done.stderr) == [], done.stderr[-3000:]
    assert not NOISE.search(done.stdout)


def test_a_log_line_is_printed_above_a_progress_bar_not_into_it(capsys):
    from tqdm import tqdm

    from hwflow.quiet import TqdmHandler, configure_logging

    root = logging.getLogger()
    before = (root.level, logging.getLogger("hwflow").level)
    try:
        configure_logging(True)
        bar = tqdm(total=3, desc="search", file=sys.stderr, ascii=True)
        bar.update(1)
        logging.getLogger("hwflow.harden.thresholds").info("round 0: best threshold 3.2")
        bar.update(1)
        bar.close()
    finally:
        for h in [h for h in root.handlers if isinstance(h, TqdmHandler)]:
            root.removeHandler(h)
        root.setLevel(before[0])
        logging.getLogger("hwflow").setLevel(before[1])
    parts = [p.strip() for line in capsys.readouterr().err.splitlines() for p in line.split("\r")]
    assert "INFO hwflow.harden.thresholds: round 0: best threshold 3.2" in parts  # a line of its own
    assert any(p.startswith("search:") and "2/3" in p for p in parts)  # the bar goes on below it
