"""Resilience requirements that pass or fail a build: ``require:`` in a campaign spec, judged by
``hwflow gate`` with a confidence sequence after each batch of trials, reported as text, JUnit XML
and Markdown.

- ``requirements``: the ``require:`` entries (parsed and checked with the spec);
- ``values``: per-trial values of the metric a requirement judges (the seam to the results);
- ``sequence``: the betting confidence sequence (valid under optional stopping);
- ``judge``: a requirement's verdict from the values;
- ``run``: the batches (the campaign grown through the ordinary runner) and the stopping rule;
- ``junit`` / ``summary``: CI-native output; ``cache``: trained models and conversions for CI.
"""

from hwflow.gate.errors import GateError
from hwflow.gate.judge import FAILS, HOLDS, UNDECIDED, Verdict
from hwflow.gate.requirements import Requirement
from hwflow.gate.run import GateConfig, GateResult, run_gate

__all__ = ["FAILS", "HOLDS", "UNDECIDED", "GateConfig", "GateError", "GateResult", "Requirement", "Verdict",
           "run_gate"]
