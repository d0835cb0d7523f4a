"""The HTML report: one self-contained file (inline CSS, figures as base64 data URIs, nothing fetched).

Every piece of text from the database (campaign, variant, fault model and layer names, the spec)
goes through ``html.escape``: names are user input.
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from hwflow.report.load import ReportData
from hwflow.report.plots import metric_units
from hwflow.report.stats import HEADLINE_INTERVAL, SENSITIVITY_STUDIES, SWEEP, Discrepancy, Summary

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 78em;
       padding: 0 1em; color: #222; line-height: 1.4; overflow-wrap: anywhere; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .9em; }
th, td { border: 1px solid #d4d4d4; padding: .25em .6em; overflow-wrap: normal; }
th { background: #f2f2f2; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
.scroll { max-width: 100%; overflow-x: auto; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; white-space: pre-wrap; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.note { background: #eef5ff; border-left: 4px solid #4a7fd0; padding: .5em .8em; }
.bad { background: #fff0f0; border-left: 4px solid #d04a4a; padding: .5em .8em; }
.ok { background: #f0fff2; border-left: 4px solid #4ab05a; padding: .5em .8em; }
code { background: #f2f2f2; padding: 0 .2em; }
summary { cursor: pointer; }
"""
"""Laid out for a 1280-pixel window: the page never scrolls sideways (long names wrap; a table wider
than the page scrolls inside its own box; figures shrink to the page). ``tests/test_report_browser.py``
measures it in headless Chromium."""


def e(value) -> str:
    return html.escape(str(value), quote=True)


def fmt(value, digits: int = 4) -> str:
    """A number for people: fixed digits, "–" for NaN or None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def data_uri(png: bytes | Path) -> str:
    data = png if isinstance(png, bytes) else Path(png).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _table(headers: Sequence[str], rows: Iterable[Sequence], numeric: Iterable[int] = ()) -> str:
    """An HTML table; cells are escaped here, columns in ``numeric`` right-aligned."""
    numeric = set(numeric)
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{e(c)}</td>' if i in numeric else f"<td>{e(c)}</td>"
                         for i, c in enumerate(row)) + "</tr>\n"
        for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table></div>\n'


def _figure(png: Path | None, alt: str) -> str:
    return f'<p><img alt="{e(alt)}" src="{data_uri(png)}"></p>\n' if png is not None else ""


def render_html(data: ReportData, accuracy_png: Path | None = None,
                sensitivity_pngs: dict[str, Path] | None = None, files: Sequence[str] = ()) -> str:
    """The report as one HTML string; the PNGs given are read and embedded.

    The headline comes first (the accuracy-against-rate plot and its summary table, then the
    fault-free accuracy it drops from), then the studies, the boards and the full statistics; the
    campaign spec comes last, collapsed: it is what was run, not what was found.
    """
    sensitivity_pngs = sensitivity_pngs or {}
    names = ", ".join(data.campaigns)
    many = len(data.campaigns) > 1
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>hwflow report: {e(names)}</title><style>{CSS}</style></head><body>\n",
        f"<h1>Fault campaign report: {e(names)}</h1>\n",
        f"<p>{len(data.rows)} trials from <code>{e(data.db_path)}</code>, boards: {e(', '.join(data.boards))}; "
        f"generated {e(time.strftime('%Y-%m-%d %H:%M:%S'))}.</p>\n",
        _sweep(data, accuracy_png, many),
        _fault_free(data, many),
        f'<p class="note"><b>Confidence intervals.</b> {e(HEADLINE_INTERVAL)}</p>\n',
        _sensitivity(data, sensitivity_pngs),
        _other_studies(data, many),
        _boards(data),
        _sweep_details(data, many),
    ]
    if files:
        parts.append("<h2>Files</h2><p>Beside this report: " + ", ".join(f"<code>{e(f)}</code>" for f in files)
                     + " (every trial, and every summary row, as CSV).</p>\n")
    parts.append(_specs(data))
    parts.append("</body></html>\n")
    return "".join(parts)


def _specs(data: ReportData) -> str:
    out = ["<h2>Campaign spec</h2>\n"]
    for c in data.campaigns:
        spec = data.specs.get(c)
        body = (f"<pre>{e(json.dumps(spec, indent=2, sort_keys=True))}</pre>" if spec is not None
                else "<p>(no spec recorded in the database for this campaign)</p>")
        out.append(f"<details><summary><b>{e(c)}</b> (the spec as run: click to open)</summary>{body}</details>\n")
    return "".join(out)


def _fault_free(data: ReportData, many: bool) -> str:
    if not data.baselines:
        return "<h2>Fault-free accuracy</h2><p>No fault-free baseline recorded: accuracy drops are unknown.</p>\n"
    headers = (["campaign"] if many else []) + ["variant", "board", "correct / samples", "accuracy"]
    rows = [([b.campaign] if many else []) + [b.variant, b.board, f"{b.correct} / {b.samples}", fmt(b.accuracy)]
            for b in data.baselines]
    if any(b.metric != "top1" for b in data.baselines):  # the task's metric, named, with its direction
        headers += ["metric", "fault-free value"]
        for row, b in zip(rows, data.baselines, strict=True):
            row += [f"{b.metric} ({'higher' if b.higher_is_better else 'lower'} is better)", fmt(b.value)]
    return "<h2>Fault-free accuracy</h2>\n" + _table(headers, rows, numeric=range(2 + many, len(headers)))


def _summary_rows(summaries: list[Summary], many: bool, target: bool = False):
    """Headers, rows and numeric columns of a summary table; ``target`` adds study, layer and bit."""
    headers = (["campaign"] if many else []) + ["variant", "board", "fault model"]
    headers += ["study", "layer", "bit"] if target else []
    headers += ["rate", "trials", "mean accuracy", "± (95% t)", "95% t interval", "drop vs fault-free",
                "pooled accuracy", "Wilson 95% (pooled)", "faults / trial", "mismatch rate"]
    rows = []
    for s in summaries:
        row = ([s.campaign] if many else []) + [s.variant, s.board, s.fault_model]
        row += [s.study, s.target_layer or "all", s.target_bit if s.target_bit >= 0 else "all"] if target else []
        row += [f"{s.rate:g}", s.n_trials, fmt(s.mean_accuracy), fmt(s.half_width),
                f"[{fmt(s.ci_low)}, {fmt(s.ci_high)}]", fmt(s.accuracy_drop), fmt(s.pooled_accuracy),
                f"[{fmt(s.wilson_low)}, {fmt(s.wilson_high)}]", fmt(s.mean_faults, 1), fmt(s.mean_mismatch_rate)]
        rows.append(row)
    first_num = headers.index("rate")
    return headers, rows, range(first_num, len(headers))


def _sweep_rows(data: ReportData) -> list[Summary]:
    return sorted((s for s in data.summaries if s.study == SWEEP),
                  key=lambda s: (s.campaign, s.fault_model, s.variant, s.board, s.rate))


def _sweep(data: ReportData, png: Path | None, many: bool) -> str:
    """The headline: the plot and, per variant and rate, the mean accuracy and its drop (narrow columns)."""
    sweep = _sweep_rows(data)
    if not sweep:
        return "<h2>Accuracy against fault rate</h2><p>No 'sweep' trials in these results.</p>\n"
    units = metric_units(sweep)
    top1 = units == "top-1 accuracy"
    what = "Accuracy" if top1 else units
    headers = (["campaign"] if many else []) + ["variant", "board", "fault model", "rate", "trials",
                                                  f"mean {'accuracy' if top1 else units} ± 95% t",
                                                  "drop vs fault-free" if top1 else "loss vs fault-free"]
    rows = [([s.campaign] if many else []) + [s.variant, s.board, s.fault_model, f"{s.rate:g}", s.n_trials,
                                              f"{fmt(s.mean_value)} ± {fmt(s.value_half_width)}", fmt(s.value_loss)]
            for s in sweep]
    first_num = headers.index("rate")
    note = "" if top1 else (f"<p>Values are the campaign's metric ({e(units)}); the loss is how much worse than "
                            "fault-free each mean is in the metric's direction (positive: worse).</p>\n")
    alt = f"{'accuracy' if top1 else units} against fault rate"
    return (f"<h2>{e(what)} against fault rate</h2>\n" + note + _figure(png, alt)
            + f"<p>Dashed lines: fault-free {'accuracy' if top1 else e(units)} (rate 0 cannot sit on a log axis). "
              "Shaded: 95% t interval "
              "over trials. Every statistic of each row: <a href=\"#details\">details</a>.</p>\n"
            + _table(headers, rows, range(first_num, len(headers))))


def _sweep_details(data: ReportData, many: bool) -> str:
    sweep = _sweep_rows(data)
    if not sweep:
        return ""
    headers, rows, numeric = _summary_rows(sweep, many)
    return ('<h2 id="details">Accuracy against fault rate: every statistic</h2>\n'
            + _table(headers, rows, numeric))


def _sensitivity(data: ReportData, pngs: dict[str, Path]) -> str:
    if not data.sensitivity:
        return ""
    out = ["<h2>Sensitivity</h2>\n<p>Accuracy drop (fault-free minus mean faulty accuracy) in percentage points "
           "when the faults are restricted to one layer, one bit position, or both; \"–\": no trials.</p>\n"]
    for study in SENSITIVITY_STUDIES:
        tables = [t for t in data.sensitivity if t.study == study]
        if not tables:
            continue
        out.append(f"<h3>Study “{e(study)}”</h3>\n" + _figure(pngs.get(study), f"{study} sensitivity heatmap"))
        for t in tables:
            out.append(f"<p><b>{e(t.name)}</b> — rows: {e(t.row_title)}, columns: {e(t.col_title)}</p>\n")
            scale = 100 if t.metric.startswith("top") else 1  # accuracies in points, other metrics as they are
            if scale == 1:
                out.append(f"<p>Loss of {e(t.metric)} against fault-free, in its units (positive: worse).</p>\n")
            rows = [[label] + [fmt(v * scale, 1 if scale == 100 else 4) for v in t.drop[i]]
                    for i, label in enumerate(t.row_labels)]
            out.append(_table([f"{t.row_title} \\ {t.col_title}", *t.col_labels], rows,
                              numeric=range(1, len(t.col_labels) + 1)))
    return "".join(out)


def _other_studies(data: ReportData, many: bool) -> str:
    other = [s for s in data.summaries if s.study != SWEEP and s.study not in SENSITIVITY_STUDIES]
    if not other:
        return ""
    headers, rows, numeric = _summary_rows(other, many, target=True)
    return "<h2>Other studies</h2>\n" + _table(headers, rows, numeric)


def _boards(data: ReportData) -> str:
    out = ["<h2>Boards against the emulator</h2>\n"]
    if len(data.boards) < 2:
        out.append(f'<p class="note">Only one board ({e(", ".join(data.boards))}) in these results: '
                   "nothing to compare.</p>\n")
        return "".join(out)
    if not data.paired:
        out.append(f"<p class=\"note\">Boards {e(', '.join(data.boards))} share no trials (same campaign and key): "
                   "nothing to compare trial by trial.</p>\n")
    else:
        pairs = "; ".join(f"{e(b)} against {e(ref)}: {n} trials" for (ref, b), n in data.paired.items())
        out.append(f"<p>Trials run on more than one board, compared with the reference board: {pairs}.</p>\n")
    results = [d for d in data.discrepancies if d.kind == "result"]
    seeds = [d for d in data.discrepancies if d.kind == "seed"]
    if data.paired:
        if results:
            out.append(f'<p class="bad">{len(results)} trial(s) with the same seed gave different results:</p>\n'
                       + _discrepancy_table(results))
        else:
            out.append('<p class="ok">Discrepancies: none. Every shared trial with the same seed agrees.</p>\n')
        if seeds:
            out.append(f'<p class="bad">{len(seeds)} trial(s) ran with different seeds on different boards (not '
                       "comparable: was the same spec and master seed used?):</p>\n" + _discrepancy_table(seeds))
        else:
            out.append("<p>Seed mismatches: none.</p>\n")
    mism = data.baseline_mismatches()
    if mism:
        rows = [[a.campaign, a.variant, f"{a.board}: {a.correct}/{a.samples}", f"{b.board}: {b.correct}/{b.samples}"]
                for a, b in mism]
        out.append('<p class="bad">Fault-free runs that differ between boards:</p>\n'
                   + _table(["campaign", "variant", "reference", "other"], rows))
    return "".join(out)


def _discrepancy_table(items: list[Discrepancy]) -> str:
    headers = ["campaign", "variant", "study", "fault model", "layer", "bit", "rate", "trial", "boards", "differs"]
    rows = []
    for d in items:
        diff = "; ".join(f"{f}: {getattr(d.reference, f)} vs {getattr(d.other, f)}" for f in d.differs)
        rows.append([d.campaign, d.variant, d.study, d.fault_model, d.target_layer or "all",
                     d.target_bit if d.target_bit >= 0 else "all", f"{d.rate:g}", d.trial,
                     f"{d.reference_board} vs {d.board}", diff])
    return _table(headers, rows)
