"""The gate's verdicts as JUnit XML: one test case per requirement, the form every CI shows natively.

The structure is the common JUnit schema (the one Jenkins, GitLab and GitHub's test reporters read):
``<testsuites>`` holding one ``<testsuite>`` (the campaign) with ``tests``/``failures``/``errors``/
``skipped`` counts and ``<properties>``, and one ``<testcase classname name time>`` per check, with a
``<failure message type>`` child when it fails or is undecided, and ``<system-out>`` with the numbers.
"""

from __future__ import annotations

import socket
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from hwflow.gate.judge import HOLDS, UNDECIDED
from hwflow.gate.run import GateResult


def junit_tree(result: GateResult, seconds: float = 0.0) -> ET.ElementTree:
    failures = sum(v.status != HOLDS for v in result.verdicts)
    counts = {"tests": str(len(result.verdicts)), "failures": str(failures), "errors": "0", "skipped": "0",
              "time": f"{seconds:.3f}"}
    suites = ET.Element("testsuites", {"name": "hwflow gate", **counts})
    suite = ET.SubElement(suites, "testsuite", {
        "name": result.spec.name, **counts,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()), "hostname": socket.gethostname()})
    props = ET.SubElement(suite, "properties")
    for name, value in (("spec", result.spec.source), ("trials_per_point", result.trials_per_point),
                        ("max_trials_per_point", result.max_trials), ("trials_used", result.used),
                        ("trials_planned", result.planned), ("trials_saved", result.saved),
                        ("batches", result.batches)):
        ET.SubElement(props, "property", {"name": name, "value": str(value)})
    for v in result.verdicts:
        case = ET.SubElement(suite, "testcase", {"classname": f"hwflow.gate.{result.spec.name}",
                                                 "name": v.check.name, "time": "0"})
        if v.status != HOLDS:
            kind = "Undecided" if v.status == UNDECIDED else "RequirementFailed"
            failure = ET.SubElement(case, "failure", {"message": v.line, "type": kind})
            failure.text = v.line
        out = ET.SubElement(case, "system-out")
        out.text = v.line
    ET.indent(suites)
    return ET.ElementTree(suites)


def write_junit(result: GateResult, path: str | Path, seconds: float = 0.0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    junit_tree(result, seconds).write(path, encoding="utf-8", xml_declaration=True)
    return path


def write_junit_error(path: str | Path, suite: str, message: str) -> Path:
    """JUnit XML for a gate that could not judge (bad input, exit status 2): one test case with an ``<error>``,
    so that CI shows why instead of a missing report."""
    counts = {"tests": "1", "failures": "0", "errors": "1", "skipped": "0", "time": "0"}
    suites = ET.Element("testsuites", {"name": "hwflow gate", **counts})
    node = ET.SubElement(suites, "testsuite", {
        "name": suite, **counts, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
        "hostname": socket.gethostname()})
    case = ET.SubElement(node, "testcase", {"classname": f"hwflow.gate.{suite}", "name": "hwflow gate", "time": "0"})
    error = ET.SubElement(case, "error", {"message": message, "type": "GateInputError"})
    error.text = message
    ET.indent(suites)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
    return path
