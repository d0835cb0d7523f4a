"""``require:`` in a campaign spec: resilience requirements a build must meet, checked when the spec is read.

A requirement names a variant (or ``all``), a fault model and a rate, a bound (``min:`` or ``max:``)
on the campaign's metric (or the one it names), and what must hold: by default the bound holds for
the near end of the interval (the lower end for ``min:``, the upper end for ``max:``); with
``on: mean``, for the mean. ``gain_over: OTHER`` bounds the paired difference instead: this
variant's metric minus OTHER's, in the metric's good direction (trial k of both variants faults the
same bits, so the difference is paired trial by trial).

Example::

    require:
      - variant: cnn-digits/baseline
        fault: bitflip
        rate: 1.0e-4
        min: 0.90               # accuracy >= 0.90 at the lower end of the 95% interval
      - variant: clipact+scale
        gain_over: baseline     # beats the baseline of the same model by >= 5 points
        fault: bitflip
        rate: 1.0e-3
        min: 0.05
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwflow.errors import HardenError, SpecError

ON = ("interval", "mean")
REQUIRE_KEYS = ("name", "variant", "fault", "rate", "metric", "min", "max", "on", "gain_over", "confidence", "range")


@dataclass(frozen=True)
class Requirement:
    """One entry of ``require:``, its names resolved against the spec's models and faults."""

    variant: str
    """A variant label (``model/variant``), or ``all`` (every variant of the campaign)."""
    fault_model: str
    """The fault model's label in results (``hwflow.campaign.plan.fault_label``)."""
    rate: float
    """One of that fault model's rates."""
    bound: float
    """The bound, in the metric's units (for ``gain_over``: in units of the difference)."""
    kind: str = "min"
    """``min`` (the metric must be at least ``bound``) or ``max`` (at most)."""
    on: str = "interval"
    """``interval``: the bound must hold for the interval's near end (certain at ``confidence``);
    ``mean``: for the mean (trials stop early only once certain; at the last trial the mean decides)."""
    metric: str | None = None
    """Metric name; None: the campaign's metric."""
    gain_over: str | None = None
    """Variant to beat: a label, or a variant name taken in the same model."""
    confidence: float = 0.95
    """Confidence of the interval (the gate divides its error over all requirements: a union bound)."""
    range: tuple[float, float] | None = None
    """The values a trial of an unbounded metric (MSE, MAE) can take; needed for those only."""
    name: str = ""
    """Label in the gate's output and in JUnit; "" (not given): generated per check (``describe``)."""

    def describe(self, variant: str | None = None, metric: str | None = None) -> str:
        """A generated label: what is required of which variant, e.g. ``m/baseline bitflip @ 0.001: top1 >= 0.9``."""
        sign = ">=" if self.kind == "min" else "<="
        what = metric or self.metric or "metric"
        if self.gain_over:
            what = f"{what} gain over {self.gain_over}"
        on = "" if self.on == "interval" else " (on the mean)"
        return f"{variant or self.variant} {self.fault_model} @ {self.rate:g}: {what} {sign} {self.bound:g}{on}"


def parse_requirements(parent, models, faults) -> tuple[Requirement, ...]:
    """The ``require:`` list of a spec (``parent``: the spec's field reader), or () when absent."""
    parent.seen.add("require")
    if "require" not in parent.data or parent.data["require"] is None:
        return ()
    items = parent.items("require")
    labels = [f"{m.name}/{v}" for m in models for v in m.variants]
    return tuple(_one(parent.child(_on_key(item), f"require[{i}]"), labels, faults) for i, item in enumerate(items))


def _on_key(item: object) -> object:
    """YAML 1.1 reads an unquoted ``on:`` key as the boolean true: take it back as ``on``."""
    if isinstance(item, dict) and True in item and "on" not in item:
        return {("on" if k is True else k): v for k, v in item.items()}
    return item


def _one(r, labels: list[str], faults) -> Requirement:
    from hwflow.gate.values import metric_info

    variant = _variant(r, "variant", r.string("variant", "all" if len(labels) > 1 else None), labels)
    if variant is None:
        variant = labels[0] if labels else r.fail("variant", "missing: name a variant or 'all'")
    fault, rates = _fault(r, faults)
    rate = _rate(r, rates)
    kinds = [k for k in ("min", "max") if k in r.data]
    if len(kinds) != 1:
        r.fail("", "give exactly one bound: 'min: X' (at least X) or 'max: X' (at most X)")
    kind = kinds[0]
    r.seen.update(("min", "max"))
    bound = _number(r, kind, r.data[kind])
    on = r.choice("on", ON, "interval")
    metric = r.string("metric", None)
    try:
        info = metric_info(metric)
    except SpecError as err:
        r.fail("metric", str(err))
    gain = r.string("gain_over", None)
    if gain is not None:
        gain = _gain(r, gain, variant, labels)
    confidence = _number(r, "confidence", r._get("confidence", 0.95))
    if not 0.0 < confidence < 1.0:
        r.fail("confidence", f"must be between 0 and 1 (e.g. 0.95), got {confidence:g}")
    span = _range(r, info)
    lo, hi = span if span is not None else (info.lower, info.upper)
    allowed = (lo - hi, hi - lo) if gain else (lo, hi)
    if not allowed[0] <= bound <= allowed[1]:
        r.fail(kind, f"{bound:g} is outside the values {info.name}{' gains' if gain else ''} can take "
               f"([{allowed[0]:g}, {allowed[1]:g}]){' (accuracy is a fraction: 95% is 0.95)' if bound > 1 else ''}")
    name = r.string("name", None)
    r.finish()
    return Requirement(variant, fault, rate, bound, kind, on, metric, gain, confidence, span, name or "")


def _variant(r, key: str, text: str | None, labels: list[str]) -> str | None:
    if text is None or text == "all":
        return text
    from hwflow.harden.recipe import Recipe

    model, _, name = text.rpartition("/")
    try:
        name = Recipe.parse(name).name
    except HardenError as err:
        r.fail(key, str(err))
    found = [label for label in labels if label.rpartition("/")[2] == name and (not model or label.startswith(
        f"{model}/"))]
    if not found:
        r.fail(key, f"no variant {text!r} in this campaign (its variants: {', '.join(labels)}, or 'all')")
    if len(found) > 1:
        r.fail(key, f"{text!r} is a variant of several models ({', '.join(found)}): name one as model/variant")
    return found[0]


def _gain(r, text: str, variant: str, labels: list[str]) -> str:
    """The variant to beat: a label, or (without a model) the variant of that name in each model checked."""
    from hwflow.harden.recipe import Recipe

    if "/" in text:
        other = _variant(r, "gain_over", text, labels)
        if other == variant:
            r.fail("gain_over", f"{variant} cannot be compared with itself")
        return other
    try:
        name = Recipe.parse(text).name
    except HardenError as err:
        r.fail("gain_over", str(err))
    checked = labels if variant == "all" else [variant]
    models = {label.rpartition("/")[0] for label in checked}
    for model in sorted(models):
        if f"{model}/{name}" not in labels:
            r.fail("gain_over", f"model {model} has no variant {name!r} (its variants: "
                   f"{', '.join(x for x in labels if x.startswith(model + '/'))})")
    if variant != "all" and variant.rpartition("/")[2] == name:
        r.fail("gain_over", f"{variant} cannot be compared with itself")
    return name


def _fault(r, faults) -> tuple[str, tuple[float, ...]]:
    from hwflow.campaign.plan import fault_label

    entries = [(fault_label(f.spec), f) for f in faults]
    text = r.string("fault", None)
    if text is None:
        if len(entries) != 1:
            r.fail("fault", f"missing: name the fault model (this campaign has {', '.join(e[0] for e in entries)})")
        return entries[0][0], entries[0][1].rates
    exact = [e for e in entries if e[0] == text]
    norm = _model_name(text)
    found = exact or [e for e in entries if _model_name(str(e[1].spec.get("model", ""))) == norm]
    if not found:
        r.fail("fault", f"no fault model {text!r} in this campaign's faults (they are: "
               f"{', '.join(e[0] for e in entries)})")
    if len(found) > 1:
        r.fail("fault", f"{text!r} matches several fault entries ({', '.join(e[0] for e in found)}): give the "
               "label as written here")
    return found[0][0], found[0][1].rates


def _model_name(text: str) -> str:
    key = text.strip().lower().replace("_", "-")
    return {"stuckat": "stuck-at", "bit-flip": "bitflip"}.get(key, key)


def _rate(r, rates: tuple[float, ...]) -> float:
    if "rate" not in r.data:
        r.seen.add("rate")
        if len(rates) != 1:
            r.fail("rate", f"missing: name one of the fault model's rates ({', '.join(f'{x:g}' for x in rates)})")
        return rates[0]
    value = r.rates("rate", None)
    if value is None or len(value) != 1:
        r.fail("rate", "give one rate")
    for x in rates:
        if math.isclose(x, value[0], rel_tol=1e-9, abs_tol=0.0):
            return x
    r.fail("rate", f"{value[0]:g} is not a rate of this fault model (its rates: {', '.join(f'{x:g}' for x in rates)})")
    return value[0]  # unreachable: fail raises


def _number(r, key: str, value) -> float:
    try:
        f = float(value)  # YAML reads 1e-3 as text: accept numbers written either way
    except (TypeError, ValueError):
        r.fail(key, f"must be a number, got {value!r}")
    if isinstance(value, bool) or not math.isfinite(f):
        r.fail(key, f"must be a finite number, got {value!r}")
    return f


def _range(r, info) -> tuple[float, float] | None:
    value = r._get("range", None)
    if value is None:
        if not info.bounded:
            r.fail("range", f"{info.name} has no upper bound: give the values a trial can take, e.g. "
                   "'range: [0, 10]' (a trial outside it stops the gate)")
        return None
    if not isinstance(value, list) or len(value) != 2:
        r.fail("range", f"must be [low, high], got {value!r}")
    lo, hi = (_number(r, "range", v) for v in value)
    if not lo < hi:
        r.fail("range", f"low must be below high, got [{lo:g}, {hi:g}]")
    if lo < info.lower or hi > info.upper:
        r.fail("range", f"[{lo:g}, {hi:g}] goes beyond the values {info.name} takes ([{info.lower:g}, {info.upper:g}])")
    return lo, hi
