"""The example CI workflow runs the README's commands, in order, and names the cache folder the README names."""

import re
from pathlib import Path

import yaml

from hwflow.campaign import load_spec
from hwflow.cli.gate import DEFAULT_CACHE

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "examples" / "ci" / "github-actions.yml"


def _readme_ci_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Resilience requirements in CI", 1)[1].split("\n## ", 1)[0]
    job = section.split("**The CI job**", 1)[1]
    block = re.search(r"```sh\n(.*?)```", job, re.S)
    assert block is not None, "the README's CI job section has no sh block"
    return [line.strip() for line in block[1].splitlines() if line.strip()]


def test_workflow_steps_are_the_readmes_commands():
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["gate"]["steps"]
    runs = [" ".join(s["run"].split()) for s in steps if "run" in s]
    assert runs == [" ".join(c.split()) for c in _readme_ci_commands()]
    uses = [s["uses"].split("@")[0] for s in steps if "uses" in s]
    assert uses == ["actions/checkout", "actions/setup-python", "actions/cache", "actions/upload-artifact"]
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache"))
    assert cache["with"]["path"] == DEFAULT_CACHE
    assert f"**`{DEFAULT_CACHE}/`**" in (ROOT / "README.md").read_text()
    gate = next(r for r in runs if " gate " in r)
    assert f"--cache {DEFAULT_CACHE}" in gate
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["with"]["path"].rstrip("/") == "out/ci"


def test_the_specs_the_readme_gates_parse_with_requirements():
    ci = load_spec(ROOT / "examples" / "ci" / "resilience.yaml")
    assert [r.name for r in ci.require] == ["baseline keeps 80% at BER 1e-4",
                                            "clipact+scale beats the baseline by 10 points at BER 1e-2"]
    demo = load_spec(ROOT / "examples" / "campaign-digits.yaml")
    assert [r.bound for r in demo.require] == [0.80, 0.90, 0.10]
    assert demo.require[2].gain_over == "baseline"
