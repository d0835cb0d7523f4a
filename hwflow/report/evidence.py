"""The evidence table: accuracy under faults per variant and rate, with intervals, as Markdown and CSV.

``hwflow experiment`` writes it and the README quotes it. One table per fault model; one row per
variant (``model/variant``); one column per rate, each cell ``mean ± half-width`` in accuracy
points (95 % Student-t over trials), plus the fault-free accuracy and the gain over the variant's
baseline at each rate (the baseline is the ``baseline`` variant of the same model entry).

Values are the campaign's metric (contract 6): top-k accuracies in percentage points, other metrics
(ROC AUC, MSE, MAE) in their own units; a gain is a move in the metric's direction (for MSE, down).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from hwflow.report.stats import Summary


def _percent(metric: str) -> bool:
    """Accuracies are shown in percentage points; other metrics in their own units."""
    return metric.startswith("top")


def _number(value: float, metric: str, sign: str = "") -> str:
    """Accuracies in points (1 decimal), AUC with 3 decimals, errors with 4 significant digits."""
    if _percent(metric):
        return f"{100 * value:{sign}.1f}"
    return f"{value:{sign}.3f}" if metric == "auc" else f"{value:{sign}.4g}"


def _cell(s: Summary | None) -> str:
    if s is None:
        return "—"
    if math.isnan(s.value_half_width):
        return _number(s.mean_value, s.metric)
    return f"{_number(s.mean_value, s.metric)} ± {_number(s.value_half_width, s.metric)}"


def _gain(s: Summary, b: Summary) -> float:
    """How much better ``s`` is than ``b``, in the metric's direction."""
    return (s.mean_value - b.mean_value) if s.higher_is_better else (b.mean_value - s.mean_value)


def _rate(rate: float) -> str:
    return f"{rate:.0e}".replace("e-0", "e-")


def _baseline_of(variant: str) -> str:
    """The variant a row's gain is measured against: the model's ``baseline``, or for a hardened
    float-stored variant the same float storage unhardened (the paper's comparison: scaled vs unscaled
    float words); plain float storage is measured against the fixed-point baseline."""
    model, name = variant.rsplit("/", 1)
    storage = name.split("+", 1)[0]
    if storage in ("float16", "float32") and name != storage:
        return f"{model}/{storage}"
    return f"{model}/baseline"


def evidence_rows(summaries: Iterable[Summary]) -> dict[str, tuple[list[float], list[dict]]]:
    """Per fault model: the rates and one row per variant (dicts, for CSV and Markdown)."""
    sweep = [s for s in summaries if s.study == "sweep"]
    by_model: dict[str, list[Summary]] = defaultdict(list)
    for s in sweep:
        by_model[s.fault_model].append(s)
    out = {}
    for fault_model, items in by_model.items():
        rates = sorted({s.rate for s in items})
        cells = {(s.variant, s.rate): s for s in items}
        variants = list(dict.fromkeys(s.variant for s in items))
        rows = []
        for v in variants:
            mine = [s for s in items if s.variant == v]
            row = {"variant": v, "fault_free": mine[0].fault_free_value, "metric": mine[0].metric}
            base = _baseline_of(v)
            for r in rates:
                s, b = cells.get((v, r)), cells.get((base, r))
                row[r] = s
                row[("gain", r)] = _gain(s, b) if (s and b and v != base) else math.nan
            rows.append(row)
        out[fault_model] = (rates, rows)
    return out


def evidence_markdown(summaries: Iterable[Summary]) -> str:
    """Markdown tables: accuracy (%) ± 95 % half-width per rate; gain over baseline in brackets."""
    parts = []
    for fault_model, (rates, rows) in evidence_rows(summaries).items():
        head = ["variant", "fault-free"] + [f"rate {_rate(r)}" for r in rates]
        metrics = sorted({row["metric"] for row in rows})
        what = "accuracy %" if metrics == ["top1"] else ", ".join(
            f"{m} %" if _percent(m) else m for m in metrics)
        gain = "gain in points" if metrics == ["top1"] else "gain, in the metric's direction,"
        lines = [f"**{fault_model}** — {what} (mean ± 95 % CI half-width over trials; "
                 f"[{gain} over the model's baseline; float-stored variants: over the same float "
                 "storage unscaled])", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in rows:
            cells = [row["variant"], _number(row["fault_free"], row["metric"])]
            for r in rates:
                text = _cell(row[r])
                gain = row[("gain", r)]
                if not math.isnan(gain):
                    text += f" [{_number(gain, row['metric'], '+')}]"
                cells.append(text)
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def write_evidence(summaries: Iterable[Summary], out_dir: str | Path) -> tuple[Path, Path]:
    """``evidence.md`` and ``evidence.csv`` in ``out_dir``."""
    summaries = list(summaries)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "evidence.md"
    md.write_text(evidence_markdown(summaries), encoding="utf-8")
    path = out / "evidence.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["fault_model", "variant", "rate", "n_trials", "mean_accuracy", "ci_low", "ci_high",
                         "half_width", "fault_free_accuracy", "gain_over_baseline", "metric", "higher_is_better"])
        for fault_model, (rates, rows) in evidence_rows(summaries).items():
            for row in rows:
                for r in rates:
                    s = row[r]
                    if s is None:
                        continue
                    writer.writerow([fault_model, row["variant"], r, s.n_trials, s.mean_value, s.value_low,
                                     s.value_high, s.value_half_width, s.fault_free_value, row[("gain", r)],
                                     s.metric, s.higher_is_better])
    return md, path
