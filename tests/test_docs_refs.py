"""The repository stands alone: no file points outside it, and every "contract N" is defined.

A user who clones hwflow has nothing beside it; the numbered contracts that comments and
docs cite live in docs/design.md (one ``<a id="contract-N">`` anchor and heading each), and the
methods in docs/methods.md.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = "shared" + "/"  # spelled in two parts, so that this file does not match what it looks for
OUTSIDE = re.compile(r"\.\./" + SHARED + "|" + SHARED + r"(?:DESIGN|PAPERS)\.md")
CITED = re.compile(r"\bcontracts?[ -](\d+)(?:\s*(?:,|and|or)\s*(\d+))*", re.IGNORECASE)
DEFINED = re.compile(r'<a id="contract-(\d+)"></a>\n### (\d+)\. ')
LINK = re.compile(r"docs/(design|methods|hardware)\.md(?:#([\w-]+))?")


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    names = [n for n in out.decode().split("\0") if n]
    return [ROOT / n for n in names if (ROOT / n).is_file()]


def texts() -> dict[str, str]:
    out = {}
    for path in tracked_files():
        try:
            out[path.relative_to(ROOT).as_posix()] = path.read_text()
        except UnicodeDecodeError:  # images, binary test data
            continue
    return out


def defined_contracts(design: str) -> set[int]:
    numbers = set()
    for anchor, heading in DEFINED.findall(design):
        assert anchor == heading, f"docs/design.md: anchor contract-{anchor} heads section {heading}"
        numbers.add(int(anchor))
    return numbers


def cited_contracts(text: str) -> list[tuple[int, int]]:
    """(line, number) of every contract a text cites ("contract 3", "contracts 2 and 7", "contract-8")."""
    out = []
    for match in CITED.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        out.extend((line, int(n)) for n in re.findall(r"\d+", match.group(0)))
    return out


def test_no_file_points_outside_the_repository():
    offenders = [f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
                 for name, text in texts().items() for m in OUTSIDE.finditer(text)]
    assert offenders == []


def test_design_defines_the_contracts_in_order():
    numbers = defined_contracts((ROOT / "docs" / "design.md").read_text())
    assert numbers == set(range(1, max(numbers) + 1))
    assert len(numbers) >= 8


def test_every_cited_contract_is_defined_in_docs_design():
    defined = defined_contracts((ROOT / "docs" / "design.md").read_text())
    undefined = [f"{name}:{line}: contract {n}" for name, text in texts().items()
                 for line, n in cited_contracts(text) if n not in defined]
    assert undefined == []


def test_links_into_docs_name_existing_files_and_anchors():
    broken = []
    for name, text in texts().items():
        for match in LINK.finditer(text):
            target = ROOT / "docs" / f"{match.group(1)}.md"
            anchor = match.group(2)
            if not target.is_file() or (anchor and f'id="{anchor}"' not in target.read_text()):
                broken.append(f"{name}: {match.group(0)}")
    assert broken == []


def test_the_checks_catch_what_they_look_for():
    word = "contract"  # not followed by a number here: this file is scanned too
    assert cited_contracts(f"see {word} 99\nand {word}s 2 and 11, {word}-4") == [(1, 99), (2, 2), (2, 11), (2, 4)]
    assert OUTSIDE.search(f"(see ../{SHARED}PAPERS.md)")
    assert OUTSIDE.search(f"the notes in {SHARED}DESIGN.md")
    assert OUTSIDE.search(f"../../{SHARED}notes.txt")
    assert not OUTSIDE.search("docs/design.md")
    assert defined_contracts('<a id="contract-1"></a>\n### 1. WeightImage\n') == {1}
