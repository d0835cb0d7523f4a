"""Figures of a campaign: accuracy against fault rate, and sensitivity heatmaps.

Drawn with matplotlib's object API (``Figure`` + the Agg canvas), never pyplot: no screen is
needed and no global backend or state is touched, so importing this module is safe anywhere.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from hwflow.report.errors import ReportError
from hwflow.report.stats import SWEEP, SensitivityTable, Summary, metric_direction

_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_LINESTYLES = ("-", ":", "-.", (0, (5, 1)))
_ANNOTATE_MAX_CELLS = 600  # beyond this the numbers are unreadable; the colours still are


def _plain(text) -> str:
    """Text shown as written: a "$" in a name would otherwise start matplotlib's mathtext."""
    return str(text).replace("$", r"\$")


def _varying(keys: list[tuple]) -> list[int]:
    """Positions at which the keys differ: only those go into legend labels."""
    return [i for i in range(len(keys[0])) if len({k[i] for k in keys}) > 1] if keys else []


def _line_colours(keys: list) -> dict:
    """One colour per key. Up to 10: matplotlib's default cycle. More (an experiment's 14 variants):
    tab20's 10 dark hues, then its 10 light ones, so that no two lines share a colour up to 20."""
    if len(keys) <= 10:
        return {k: f"C{i}" for i, k in enumerate(keys)}
    tab20 = matplotlib.colormaps["tab20"]
    return {k: tab20((2 * i + i // 10) % 20) for i, k in enumerate(keys)}


def metric_units(summaries: Sequence[Summary]) -> str:
    """What the summaries' values are, for axes and headers: ``top-1 accuracy``, ``MSE``, ``ROC AUC`` (joined
    with ' / ' when models of one report were scored differently)."""
    from hwflow.metrics import MetricError, get

    def unit(name: str) -> str:
        try:
            return get(name).unit
        except MetricError:
            return name

    units = sorted({unit(s.metric) for s in summaries}) or ["top-1 accuracy"]
    return " / ".join(units)


def plot_accuracy_vs_rate(summaries: Sequence[Summary], path: str | Path, title: str | None = None) -> Path:
    """Mean metric against fault rate for the "sweep" study, one subplot per fault model.

    x: rate on a log axis; y: mean of the campaign's metric over trials, in its units (top-1 accuracy, MSE,
    ROC AUC: ``Summary.metric``); one line per variant (and per board and
    campaign when there are several), with the 95% t interval as a shaded band (absent where a
    point has fewer than 2 trials). Rate 0 cannot sit on a log axis: each line's fault-free
    accuracy (its baseline; else its rate-0 trials) is drawn as a dashed horizontal line instead.
    """
    sweep = [s for s in summaries if s.study == SWEEP]
    if not sweep:
        msg = "no 'sweep' trials to plot accuracy against rate"
        raise ReportError(msg)
    faults = sorted({s.fault_model for s in sweep})
    lines = sorted({(s.campaign, s.variant, s.board) for s in sweep})
    shown = _varying(lines) or [1]  # at least the variant
    colours = _line_colours(sorted({(c, v) for c, v, _ in lines}))
    boards = sorted({b for _, _, b in lines})
    style = {b: (_LINESTYLES[i % len(_LINESTYLES)], _MARKERS[i % len(_MARKERS)]) for i, b in enumerate(boards)}

    ncols = min(3, len(faults))
    nrows = math.ceil(len(faults) / ncols)
    fig = Figure(figsize=(5.2 * ncols, 4.0 * nrows + 0.9 + 0.25 * len(lines) / ncols), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    handles = {}
    for ax, fault in zip(axes.flat, faults, strict=False):
        for line in lines:
            pts = sorted((s for s in sweep if s.fault_model == fault and (s.campaign, s.variant, s.board) == line),
                         key=lambda s: s.rate)
            if not pts:
                continue
            label = _plain(" · ".join(str(line[i]) for i in shown))
            colour = colours[line[:2]]
            ls, marker = style[line[2]]
            pos = [s for s in pts if s.rate > 0]
            if pos:
                x = np.array([s.rate for s in pos])
                low = np.array([s.value_low for s in pos])
                high = np.array([s.value_high for s in pos])
                ax.fill_between(x, low, high, color=colour, alpha=0.18, linewidth=0)
                (h,) = ax.plot(x, [s.mean_value for s in pos], color=colour, linestyle=ls, marker=marker,
                               markersize=4, label=label)
                handles.setdefault(label, h)
            ff = pts[0].fault_free_value
            if math.isnan(ff) and pts[0].rate == 0:
                ff = pts[0].mean_value
            if not math.isnan(ff):
                ax.axhline(ff, color=colour, linestyle="--", linewidth=1, alpha=0.8)
        ax.set_xscale("log")
        ax.set_title(_plain("\n".join(textwrap.wrap(fault, 42))), fontsize=10)
        ax.set_xlabel("fault rate")
        ax.grid(True, which="major", alpha=0.3)
        ax.grid(True, which="minor", alpha=0.1)
    for ax in axes.flat[len(faults):]:
        ax.set_visible(False)
    units = metric_units(sweep)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"mean {units} (95% t interval)")
    lo, hi = axes[0, 0].get_ylim()
    if all(metric_direction(s.metric)[2] <= 1 for s in sweep):  # fractions: accuracy, AUC
        axes[0, 0].set_ylim(max(lo, -0.02), min(hi, 1.02))
    legend = list(handles.values()) + [Line2D([], [], color="grey", linestyle="--", linewidth=1)]
    fig.legend(legend, list(handles) + [f"fault-free {units} (rate 0)"], loc="outside lower center",
               ncols=min(4 if ncols > 1 else 2, len(legend)), fontsize=9, frameon=False)
    what = "Accuracy" if units == "top-1 accuracy" else units
    fig.suptitle(_plain(title or _campaigns_title(f"{what[0].upper()}{what[1:]} vs fault rate", sweep)))
    return _save(fig, path)


def plot_sensitivity_heatmap(tables: SensitivityTable | Sequence[SensitivityTable], path: str | Path,
                             title: str | None = None) -> Path:
    """Heatmap(s) of accuracy drop in percentage points, cells annotated, one shared colour bar.

    Several tables (e.g. one per variant) are stacked as panels on one colour scale, so they can
    be compared at a glance. Red: accuracy lost; blue: accuracy gained; grey: no trials.
    """
    tables = [tables] if isinstance(tables, SensitivityTable) else list(tables)
    if not tables:
        msg = "no sensitivity table to plot"
        raise ReportError(msg)
    percent = all(t.metric.startswith("top") for t in tables)  # accuracies in points; other metrics as they are
    drops = [t.drop * 100 if percent else t.drop for t in tables]
    finite = np.concatenate([d[np.isfinite(d)] for d in drops])
    vmax = float(np.abs(finite).max()) if finite.size else 0.0
    norm = Normalize(-(vmax or 1.0), vmax or 1.0)
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#d0d0d0")

    ncol = max(len(t.col_labels) for t in tables)
    heights = [max(1.6, 0.32 * len(t.row_labels) + 1.1) for t in tables]
    width = max(6.5, 0.5 * ncol + 3.5)
    fig = Figure(figsize=(width, sum(heights) + 0.8), layout="constrained")
    axes = fig.subplots(len(tables), 1, squeeze=False, height_ratios=heights)[:, 0]
    varying = _varying([(t.campaign, t.variant, t.fault_model, t.board) for t in tables])
    image = None
    for ax, table, drop in zip(axes, tables, drops, strict=True):
        image = ax.imshow(np.ma.masked_invalid(drop), cmap=cmap, norm=norm, aspect="auto",
                          interpolation="nearest")
        ax.set_xticks(range(len(table.col_labels)), [_plain(c) for c in table.col_labels], fontsize=8,
                      rotation=0 if table.study == "layer-bit" else 30)
        ax.set_yticks(range(len(table.row_labels)), [_plain(r) for r in table.row_labels], fontsize=8)
        ax.set_xlabel(table.col_title)
        ax.set_ylabel(table.row_title)
        parts = (table.campaign, table.variant, table.fault_model, table.board)
        panel = " · ".join(parts[i] for i in sorted(set(varying) | {1, 2}))  # always variant and fault model
        ax.set_title(_plain("\n".join(textwrap.wrap(panel, 90))), fontsize=9)
        if drop.size <= _ANNOTATE_MAX_CELLS:
            size = 8 if drop.shape[1] <= 16 else 6
            for (i, j), v in np.ndenumerate(drop):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.1f}" if percent else f"{v:.2g}", ha="center", va="center", fontsize=size,
                            color="white" if abs(v) > 0.6 * (vmax or 1.0) else "black")
        if not finite.size:
            ax.text(0.5, 0.5, "no fault-free baseline: accuracy drop unknown", transform=ax.transAxes,
                    ha="center", va="center")
    label = ("accuracy drop (percentage points)" if percent else
             f"{' / '.join(sorted({t.metric for t in tables}))} loss vs fault-free (positive: worse)")
    fig.colorbar(image, ax=list(axes), label=label, shrink=0.9)
    t0 = tables[0]
    fig.suptitle(_plain(title or f"{t0.study} sensitivity — campaign {t0.campaign} — {t0.fault_model}"))
    return _save(fig, path)


def _campaigns_title(what: str, summaries: Sequence[Summary]) -> str:
    names = sorted({s.campaign for s in summaries})
    return f"{what} — campaign{'s' if len(names) > 1 else ''} {', '.join(names)}"


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
