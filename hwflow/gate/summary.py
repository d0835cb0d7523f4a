"""The gate's verdicts as Markdown: a table, and the metric-against-rate plot as an embedded PNG.

GitHub's job summary (``$GITHUB_STEP_SUMMARY``) and merge-request comments show it as is: the image
is a ``data:`` URI, so the summary is one self-contained file. The plot is the report's own
(``hwflow.report.plots.plot_accuracy_vs_rate``) over the trials the gate judged.
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

from hwflow.gate.judge import FAILS, HOLDS
from hwflow.gate.run import GateResult

_ICON = {HOLDS: "✅ holds", FAILS: "❌ fails"}


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def plot_png(result: GateResult) -> bytes | None:
    """The report's accuracy-vs-rate figure of the judged trials, as PNG bytes (None without sweep trials)."""
    from hwflow.report.errors import ReportError
    from hwflow.report.plots import plot_accuracy_vs_rate
    from hwflow.report.stats import summarize

    if not result.rows:
        return None
    with tempfile.TemporaryDirectory(prefix="hwflow-gate-") as tmp:
        path = Path(tmp) / "rate.png"
        try:
            plot_accuracy_vs_rate(summarize(result.rows, result.baselines), path,
                                  title=f"{result.spec.name}: {result.trials_per_point} trials per point")
        except ReportError:
            return None
        return path.read_bytes()


def summary_markdown(result: GateResult, image: bool = True) -> str:
    verdict = "passed" if result.passed else "failed"
    lines = [f"## hwflow gate: {result.spec.name} {verdict}", "",
             f"{result.summary_line()}.", "",
             "| Requirement | Variant | Fault model | Rate | Bound | Mean | Interval | Trials | Verdict |",
             "|---|---|---|---:|---:|---:|---|---:|---|"]
    for v in result.verdicts:
        req = v.check.requirement
        bound = f"{'≥' if req.kind == 'min' else '≤'} {req.bound:g}" + (f" over {v.check.other}" if v.check.other
                                                                           else "")
        conf = 100 * (1 - v.alpha)
        status = _ICON.get(v.status, "❔ undecided") + ("" if v.certain or v.status == "undecided" else " (mean)")
        lines.append("| " + " | ".join(_cell(c) for c in (
            v.check.name, v.check.variant, req.fault_model, f"{req.rate:g}", bound, f"{v.mean:.4f}",
            f"[{v.low:.4f}, {v.high:.4f}] ({conf:.2f}%)", f"{v.trials} / {v.planned}", status)) + " |")
    lines += ["", "Intervals are confidence sequences (valid at every batch, so stopping early keeps the "
              "confidence), each at its share of the error: the stated confidence holds for all requirements "
              "at once."]
    png = plot_png(result) if image else None
    if png is not None:
        data = base64.b64encode(png).decode("ascii")
        lines += ["", f"![{result.spec.name}: metric against fault rate](data:image/png;base64,{data})"]
    return "\n".join(lines) + "\n"


def write_summary(result: GateResult, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if path.exists() and path.stat().st_size else "w", encoding="utf-8") as f:
        f.write(summary_markdown(result))
    return path
