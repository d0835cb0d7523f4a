"""docs/tests.md names the test behind each claim of the README: every test it names must exist.

The names are checked against what pytest itself collects (a subprocess ``--collect-only`` of the
files the table names), so a renamed, deleted or misspelled test fails here instead of leaving a
claim that points at nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "tests.md"
NODE = re.compile(r"`(tests/test_\w+\.py::\w+(?:\[[^\]`]*\])?)`")


def named_tests(text: str) -> list[str]:
    """Every ``file::name`` (optionally ``[params]``) quoted in backticks."""
    return sorted(set(NODE.findall(text)))


def collected(files: list[str]) -> tuple[set[str], str]:
    """pytest's node ids in ``files`` (with and without parameters), and its output for messages."""
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    ids = {line.strip() for line in done.stdout.splitlines() if "::" in line and not line.startswith(" ")}
    return ids | {i.split("[")[0] for i in ids}, done.stdout[-3000:] + done.stderr[-2000:]


def missing_tests(text: str) -> list[str]:
    names = named_tests(text)
    files = sorted({n.split("::")[0] for n in names if (ROOT / n.split("::")[0]).is_file()})
    ids, output = collected(files) if files else (set(), "")
    missing = [n for n in names if n not in ids]
    return [f"{n} (pytest collected: {output})" for n in missing[:1]] + missing[1:]


def test_every_test_named_in_docs_tests_exists():
    text = TABLE.read_text()
    assert len(named_tests(text)) >= 50
    assert missing_tests(text) == []


def test_the_check_catches_a_missing_test():
    here = "tests/test_claims.py"
    absent = f"{here}::test_that_does_not_exist"
    text = f"`{here}::test_the_check_catches_a_missing_test`, `{absent}`, `tests/test_gone.py::x`"
    assert [m.split(" ")[0] for m in missing_tests(text)] == [absent, "tests/test_gone.py::x"]


def test_the_readme_links_the_table():
    assert "docs/tests.md" in (ROOT / "README.md").read_text()
