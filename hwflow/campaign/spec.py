"""The campaign spec: what to fault, how hard, how often — loaded from YAML in one function.

Every field is checked here, with errors that name the file and the field, so that a campaign
never fails an hour in because of a typo. Fault models are checked by building them
(``hwflow.faults.fault_model_from_spec``), the same code the campaign then uses.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from hwflow.errors import HwflowError, SpecError
from hwflow.metrics import MetricSpec

STUDIES = ("layer", "bit", "layer-bit")


@dataclass(frozen=True)
class ModelSpec:
    """One network under test: a zoo model (trained or reused on first use) or a model file."""

    name: str
    """Label in results (``<name>/<variant>``); defaults to the zoo name or the file's stem."""
    zoo: str | None = None
    """Zoo model name (``mlp-digits``, ``cnn-digits``, ``cnn-fmnist``), trained with ``train`` settings."""
    path: str | None = None
    """A QKeras ``.h5`` file (relative paths are relative to the spec file)."""
    weight_bits: int = 8
    """Zoo models: weight and bias bits."""
    act_bits: int = 8
    """Zoo models: activation bits."""
    weight_integer: int = 0
    """Zoo models: integer bits of the weights (sign excluded)."""
    train_seed: int = 0
    """Zoo models: training seed."""
    variants: tuple[str, ...] = ("baseline",)
    """Hardening variants to measure (``hwflow.harden.recipe``): ``baseline`` is the model as trained;
    others stack methods with '+', e.g. ``scale``, ``clipact``, ``saq+clipact+scale``, ``float16+scale``."""
    hls_config: str | None = None
    """The user's own hls4ml configuration of this model (an HLSConfig or hls4ml project YAML file, relative
    to the spec): the design emulated. The spec's io, backend, strategy and reuse_factor apply where the
    file leaves them open; a value other than the default that the file contradicts is refused."""
    metric: MetricSpec | None = None
    """This model's metric (``metric:``, as at the top of the spec); None: the campaign's."""
    keep_softmax: bool = False
    """Keep the model's final softmax (``HlsOptions(keep_softmax=True)``): trials then compare and classify on
    hls4ml's table softmax, emulated bit-exactly, instead of the logits (the default strips it)."""


@dataclass(frozen=True)
class FaultSpec:
    """A fault model (its YAML mapping, checked) with the rates and trials it runs at."""

    spec: dict
    """The fault model's fields, e.g. ``{"model": "bitflip", "mode": "bernoulli"}``."""
    rates: tuple[float, ...]
    """Bit-error (or fault) rates; each in [0, 1]."""
    trials: int
    """Trials per rate (each a different seeded fault map)."""


@dataclass(frozen=True)
class SensitivitySpec:
    """Per-layer / per-bit sensitivity: the first fault model restricted to one layer or bit at a time."""

    rate: float
    trials: int
    studies: tuple[str, ...] = ("layer", "bit")


@dataclass(frozen=True)
class PrecisionSpec:
    """Grow each rate sweep point until its interval is as narrow as asked: the fault entries' ``trials`` are
    then the minimum a point runs (``hwflow.campaign.precision`` has the rule and why it is reproducible)."""

    half_width: float
    """The widest 95 % Student-t half-width accepted, in the metric's own units (top-1 accuracy is a fraction:
    0.02 is ±2 points)."""
    max_trials: int
    """No point runs more trials than this, however wide its interval stays."""


HLS_DEFAULTS = {"backend": "Vitis", "strategy": "Latency", "reuse_factor": 1}
"""The HLS options of an emulated design besides ``io``, as ``hwflow build`` defaults them."""


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    """Campaign name: results are stored under it (resuming needs the same name and spec)."""
    seed: int
    """Master seed: every trial's seed is derived from it and the trial's key."""
    dataset: str = "digits"
    """``digits``, ``fashion-mnist`` or an ``.npz`` file (relative to the spec file). Left out of the YAML:
    the models' own data set (a zoo model's, or the one a model file's sidecar records)."""
    split: str = "test"
    """Which split to evaluate: ``test`` or ``val`` (hardening searches use ``val``)."""
    samples: int | None = None
    """Use only the first N samples of the split (None: all)."""
    batch_size: int = 256
    """Samples per emulator batch (memory vs speed)."""
    io: str = "parallel"
    """hls4ml io type the emulated design uses: ``parallel`` or ``stream``."""
    backend: str = HLS_DEFAULTS["backend"]
    """hls4ml backend of the emulated design (``Vitis`` or ``Vivado``)."""
    strategy: str = HLS_DEFAULTS["strategy"]
    """hls4ml strategy of the emulated design. Name the build's (``Resource``): hls4ml stores a Resource
    design's weights in another order, and only the same order makes the same seed fault the same
    weights as on the board, so that board and emulator pair up trial by trial."""
    reuse_factor: int = HLS_DEFAULTS["reuse_factor"]
    """hls4ml reuse factor of the emulated design (the build's ``--reuse-factor``)."""
    models: tuple[ModelSpec, ...] = ()
    faults: tuple[FaultSpec, ...] = ()
    sensitivity: SensitivitySpec | None = None
    precision: PrecisionSpec | None = None
    """A precision target for the rate sweeps (``precision:`` with ``half_width`` and ``max_trials``); None: every
    point runs exactly its ``trials``."""
    hardening: dict | None = None
    """Settings of the hardening searches (``hwflow.harden.pipeline.HardenConfig`` fields), checked."""
    metric: MetricSpec = MetricSpec()
    """The task's metric every trial records (``hwflow.metrics``): ``top1`` (default), ``topN`` / ``topk`` with
    ``k``, ``mse`` / ``mae`` (``target: data`` or ``input``), ``auc`` (``normal:`` classes when the labels are
    classes); a model may override it."""
    require: tuple = ()
    """Resilience requirements (``hwflow.gate.requirements.Requirement``) that ``hwflow gate`` judges; they
    change no trial, so they are left out of the stored spec (``to_json``)."""
    data_root: str | None = None
    """Directory of Fashion-MNIST files when not installed system-wide."""
    models_dir: str = "models"
    """Where trained zoo models are cached (relative to the spec file)."""
    source: str = field(default="", compare=False)
    """The file it was read from (for messages and relative paths)."""

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("source")
        data.pop("require")  # requirements judge trials, they do not change them
        if data["hardening"] is None:  # specs without it compare equal to those stored before it existed
            data.pop("hardening")
        if data["precision"] is None:  # likewise a spec without a precision target
            data.pop("precision")
        data["metric"] = self.metric.to_json()  # likewise the default metric
        if self.metric == MetricSpec():
            data.pop("metric")
        for key, default in HLS_DEFAULTS.items():  # likewise the HLS options added after io
            if data[key] == default:
                data.pop(key)
        for model, spec_model in zip(data["models"], self.models, strict=True):  # likewise a model's metric
            if spec_model.metric is None:
                model.pop("metric", None)
            else:
                model["metric"] = spec_model.metric.to_json()
        for model in data["models"]:  # likewise a model's keep_softmax left at its default
            if not model.get("keep_softmax", False):
                model.pop("keep_softmax", None)
        for model in data["models"]:  # likewise a model's hls_config; its digest: another file is another design
            if model.get("hls_config") is None:
                model.pop("hls_config", None)
            else:
                from hwflow.convert.hls_config import load_hls_config

                model["hls_config"] = load_hls_config(self.resolve(model["hls_config"])).record()
        return data

    def metric_for(self, model: str) -> MetricSpec:
        """The metric of model ``model`` (its name in the spec, or a ``<model>/<variant>`` label)."""
        name = model.split("/", 1)[0]
        for m in self.models:
            if m.name == name and m.metric is not None:
                return m.metric
        return self.metric

    def resolve(self, path: str) -> Path:
        """A path from the spec, relative to the spec file's folder."""
        p = Path(path)
        return p if p.is_absolute() or not self.source else Path(self.source).parent / p


def only_more_trials(old: dict, new: dict) -> bool:
    """True when ``new`` (a spec's JSON) is ``old`` with the same or more trials everywhere.

    Trial seeds depend on the trial's key and index only, so the first N trials of a grown campaign
    are exactly the N already run: growing a campaign keeps its results and adds trials. A precision
    target counts as more trials when it is added, made narrower or allowed more trials; removing or
    loosening one is fewer.
    """

    def counts_and_rest(spec: dict):
        spec = json.loads(json.dumps(spec))
        counts = [f.pop("trials", None) for f in spec.get("faults") or []]
        if spec.get("sensitivity"):
            counts.append(spec["sensitivity"].pop("trials", None))
        return counts, spec.pop("precision", None), spec

    (a, pa, rest_a), (b, pb, rest_b) = counts_and_rest(old), counts_and_rest(new)
    return rest_a == rest_b and len(a) == len(b) and all(
        isinstance(x, int) and isinstance(y, int) and y >= x for x, y in zip(a, b, strict=True)) \
        and _more_precise(pa, pb)


def _more_precise(old: dict | None, new: dict | None) -> bool:
    """True when the precision target ``new`` runs every trial ``old`` runs (None: no target)."""
    if old is None:
        return True
    if new is None:
        return False
    try:
        return float(new["half_width"]) <= float(old["half_width"]) and int(new["max_trials"]) >= int(
            old["max_trials"])
    except (KeyError, TypeError, ValueError):
        return False


def read_yaml(path: str | Path, what: str = "campaign spec", loader: type | None = None) -> object:
    """The parsed YAML of a spec file, or a SpecError naming the file (missing, unreadable, not YAML).

    ``loader``: a SafeLoader subclass with extra tags (hls4ml's project files); default: safe_load."""
    path = Path(path)
    if not path.is_file():
        msg = f"{path}: {what} not found"
        raise SpecError(msg)
    try:
        text = path.read_text()
        return yaml.safe_load(text) if loader is None else yaml.load(text, Loader=loader)  # noqa: S506
    except (OSError, UnicodeDecodeError) as err:
        msg = f"{path}: cannot read the {what} ({err})"
        raise SpecError(msg) from None
    except yaml.YAMLError as err:
        msg = f"{path}: not valid YAML ({err})"
        raise SpecError(msg) from None


def load_spec(path: str | Path) -> CampaignSpec:
    """Read and check a campaign spec."""
    return parse_spec(read_yaml(path), str(path))


def parse_spec(data: object, where: str = "<spec>") -> CampaignSpec:
    r = _Reader(data, where)
    dataset = _dataset(r)
    spec = CampaignSpec(
        name=r.string("name"),
        seed=r.integer("seed", minimum=0),
        dataset=dataset or "digits",
        split=r.choice("split", ("test", "val"), "test"),
        samples=r.integer("samples", None, minimum=1),
        batch_size=r.integer("batch_size", 256, minimum=1),
        io=r.choice("io", ("parallel", "stream"), "parallel"),
        backend=r.choice("backend", ("Vitis", "Vivado"), HLS_DEFAULTS["backend"]),
        strategy=r.choice("strategy", ("Latency", "Resource"), HLS_DEFAULTS["strategy"]),
        reuse_factor=r.integer("reuse_factor", HLS_DEFAULTS["reuse_factor"], minimum=1),
        models=tuple(_model(m, f"models[{i}]", r) for i, m in enumerate(r.items("models"))),
        faults=(),
        data_root=r.string("data_root", None),
        models_dir=r.string("models_dir", "models"),
        source=where,
    )
    rates = r.rates("rates", None)
    trials = r.integer("trials", None, minimum=1)
    faults = tuple(_fault(f, f"faults[{i}]", r, rates, trials) for i, f in enumerate(r.items("faults")))
    sensitivity = _sensitivity(r.mapping("sensitivity", None), r)
    precision = _precision(r.mapping("precision", None), r, faults)
    hardening = _hardening(r.mapping("hardening", None), r)
    metric = _metric(r)
    from hwflow.gate.requirements import parse_requirements

    require = parse_requirements(r, spec.models, faults)
    r.finish()
    names = [m.name for m in spec.models]
    if len(set(names)) != len(names):
        msg = f"{where}: models: two models are named alike ({', '.join(names)}); give them distinct 'name's"
        raise SpecError(msg)
    from dataclasses import replace

    dataset = dataset or models_dataset(spec)
    models = tuple(_zoo_metric(m, metric) for m in spec.models)
    return replace(spec, dataset=dataset, faults=faults, sensitivity=sensitivity, precision=precision,
                   hardening=hardening,
                   metric=metric or MetricSpec(), models=models, require=require)


def _zoo_metric(model: ModelSpec, campaign: MetricSpec | None) -> ModelSpec:
    """A zoo autoencoder scores with its own metric (auc, its normal classes) unless the spec names one; an
    auc without ``normal`` takes the zoo model's normal classes."""
    from dataclasses import replace

    from hwflow.zoo.models import ZOO

    zoo = ZOO[model.zoo] if model.zoo is not None else None
    if zoo is None or zoo.task != "autoencode":
        return model
    metric = model.metric or campaign or MetricSpec(zoo.metric)
    if metric.name == "auc" and metric.normal is None:
        metric = replace(metric, normal=zoo.normal)
    return replace(model, metric=metric)


def _dataset(r: _Reader) -> str | None:
    """The ``dataset:`` line (a relative ``.npz`` made absolute from the spec's folder), None when absent."""
    value = r.string("dataset", None)
    if "dataset" in r.data and (value is None or not value.strip()):
        r.fail("dataset", "empty: give digits, fashion-mnist or the path of a .npz file, or leave the line out "
               "to use the models' own data set")
    if value is not None and value.lower().endswith(".npz") and not Path(value).is_absolute() \
            and Path(r.where).is_file():
        value = str((Path(r.where).parent / value).resolve())
    return value


def models_dataset(spec: CampaignSpec) -> str:
    """The data set of a spec without a ``dataset:`` line: the one every model was made for.

    A zoo model brings its own; a model file the one its sidecar records. No data set is ever guessed:
    a model without one, or models that disagree, are refused with what to write.
    """
    from hwflow.data import canonical_name
    from hwflow.data.fit import sidecar_dataset
    from hwflow.zoo.models import ZOO

    found: dict[str, str | None] = {}
    for m in spec.models:
        if m.zoo is None and not spec.resolve(m.path).is_file():
            msg = f"{spec.source}: models: {m.name}: model file {spec.resolve(m.path)} not found"
            raise SpecError(msg)
        name = (ZOO[m.zoo].default_dataset(spec.data_root) if m.zoo is not None
                else sidecar_dataset(spec.resolve(m.path)))
        if name is not None and name.lower().endswith(".npz"):
            name = str(Path(name).resolve())
        found[m.name] = canonical_name(name) if name is not None else None
    missing = [k for k, v in found.items() if v is None]
    if missing:
        msg = (f"{spec.source}: dataset: missing, and model {missing[0]} has no sidecar naming its data set: add "
               "a line 'dataset: digits', 'dataset: fashion-mnist' or 'dataset: path/to/data.npz'")
        raise SpecError(msg)
    names = sorted(set(found.values()))
    if len(names) > 1:
        which = ", ".join(f"{k}: {v}" for k, v in found.items())
        msg = (f"{spec.source}: dataset: missing, and the models were made for different data sets ({which}): "
               "a campaign evaluates one data set; add a 'dataset:' line, or split the campaign")
        raise SpecError(msg)
    return names[0]


def did_you_mean(key: object, known, cutoff: float = 0.6) -> str:
    """`` (did you mean 'trials'?)`` for a misspelled field, or nothing when no known field is close."""
    import difflib

    close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model(data: object, field_name: str, parent: _Reader) -> ModelSpec:
    r = parent.child(data, field_name)
    zoo, path = r.string("zoo", None), r.string("path", None)
    if (zoo is None) == (path is None):
        r.fail("", "give exactly one of 'zoo' (a zoo model name) or 'path' (a QKeras .h5 file)")
    bits = (8, 8, 0)  # a model file's defaults; a zoo model's are its published quantization
    if zoo is not None:
        from hwflow.zoo.models import ZOO

        if zoo not in ZOO:
            r.fail("zoo", f"unknown zoo model {zoo!r} (known: {', '.join(sorted(ZOO))})")
        bits = ZOO[zoo].default_bits
    from hwflow.errors import HardenError
    from hwflow.harden.recipe import Recipe

    variants = []
    for v in r.strings("variants", ["baseline"]):
        try:
            variants.append(Recipe.parse(v).name)
        except HardenError as err:
            r.fail("variants", str(err))
    if len(set(variants)) != len(variants):
        r.fail("variants", f"a variant is listed twice ({', '.join(variants)})")
    variants = tuple(variants)
    if path is not None and any(Recipe.parse(v).training != "standard" for v in variants):
        r.fail("variants", "saq / sparse are training methods: they apply to zoo models (or train the model "
               "with 'hwflow train --method saq' and list it as a baseline)")
    spec = ModelSpec(
        name=r.string("name", zoo or (Path(path).stem if path else "")),
        zoo=zoo,
        path=path,
        weight_bits=r.integer("weight_bits", bits[0], minimum=2),
        act_bits=r.integer("act_bits", bits[1], minimum=2),
        weight_integer=r.integer("weight_integer", bits[2], minimum=0),
        train_seed=r.integer("train_seed", 0, minimum=0),
        variants=variants,
        hls_config=_hls_config(r),
        metric=_metric(r),
        keep_softmax=_flag(r, "keep_softmax", False),
    )
    r.finish()
    return spec


def _flag(r: _Reader, key: str, default: bool) -> bool:
    """A yes/no field: YAML's true or false only (not 1, not "yes" as text)."""
    value = r._get(key, default)
    if not isinstance(value, bool):
        r.fail(key, f"must be true or false, got {value!r}")
    return value


def _metric(r: _Reader) -> MetricSpec | None:
    """A ``metric:`` field: a name (``top1``, ``top5``, ``mse``, ``mae``, ``auc``) or a mapping with ``name`` and
    ``k`` (topk), ``target`` (``data`` / ``input``: mse, mae) or ``normal`` (auc: the normal classes)."""
    from hwflow.metrics import TARGETS, MetricError, get

    value = r._get("metric", None)
    if value is None:
        return None
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        r.fail("metric", f"give a metric name (top1, top5, mse, mae, auc) or a mapping with 'name', got {value!r}")
    m = r.child(value, "metric")
    name = m.string("name")
    k = m.integer("k", None, minimum=1)
    try:
        metric = get(name, k)
    except MetricError as err:
        m.fail("name" if k is None else "k", str(err))
    target = m.choice("target", TARGETS, "data")
    if "target" in value and metric.needs == "labels":
        m.fail("target", f"metric {metric.name} scores against the labels; target applies to mse and mae")
    if metric.name == "auc" and target != "data":
        m.fail("target", "auc always scores the reconstruction of the input; leave target out")
    normal = None
    if "normal" in value:
        if metric.name != "auc":
            m.fail("normal", f"normal applies to auc only, not to {metric.name}")
        items = value["normal"] if isinstance(value["normal"], list) else [value["normal"]]
        if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in items):
            m.fail("normal", f"must be a list of class labels (integers >= 0), got {value['normal']!r}")
        normal = tuple(sorted(set(items)))
        m.seen.add("normal")
    m.finish()
    return MetricSpec(metric.name, target, normal)


def _hls_config(r: _Reader) -> str | None:
    """A model's ``hls_config:`` file, read and checked now (its own errors name its fields)."""
    from hwflow.convert.hls_config import load_hls_config

    path = r.string("hls_config", None)
    if path is not None:
        p = Path(path) if Path(path).is_absolute() or not Path(r.where).is_file() else Path(r.where).parent / path
        try:
            load_hls_config(p)
        except SpecError as err:
            r.fail("hls_config", str(err))
    return path


def _fault(data: object, field_name: str, parent: _Reader, rates, trials) -> FaultSpec:
    r = parent.child(data, field_name)
    own_rates = r.rates("rates", rates)
    own_trials = r.integer("trials", trials, minimum=1)
    if own_rates is None or own_trials is None:
        _fault_keys(r.data, r)
    if own_rates is None:
        r.fail("rates", "missing: give 'rates' here or at the top of the spec")
    if own_trials is None:
        r.fail("trials", "missing: give 'trials' here or at the top of the spec")
    body = {k: v for k, v in r.data.items() if k not in ("rates", "trials")}
    allowed = _fault_keys(body)
    for key in body:  # a misspelled 'trials' would otherwise read as a missing one
        if allowed is not None and key not in allowed:
            r.fail(str(key), f"unknown field{did_you_mean(key, {'rates', 'trials', *allowed})} (known here: "
                   f"{', '.join(sorted({'rates', 'trials', *allowed}))})")
    r.seen.update(body)
    r.finish()
    _build_fault_model(body, own_rates[0], f"{r.where}: {field_name}")
    return FaultSpec(body, tuple(own_rates), own_trials)


def _fault_keys(body: dict, r: _Reader | None = None) -> tuple[str, ...] | None:
    """The keys the entry's fault model takes (with ``model``), or None for an unknown model (named later).

    With ``r``: refuse a key close to 'rates' or 'trials' that the fault model does not take."""
    from hwflow.faults.models import FAULT_MODELS

    name = body.get("model")
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else ""
    cls = FAULT_MODELS.get({"stuckat": "stuck-at", "bit-flip": "bitflip"}.get(key, key))
    allowed = ("model", *cls.spec_keys) if cls is not None else None
    if r is not None:
        for k in body:
            hint = did_you_mean(k, ("rates", "trials"))
            if k not in ("rates", "trials") and hint and (allowed is None or k not in allowed):
                r.fail(str(k), f"unknown field{hint}")
    return allowed


def _sensitivity(data: dict | None, parent: _Reader) -> SensitivitySpec | None:
    if data is None:
        return None
    r = parent.child(data, "sensitivity")
    studies = tuple(r.strings("studies", ["layer", "bit"]))
    for s in studies:
        if s not in STUDIES:
            r.fail("studies", f"unknown study {s!r} (known: {', '.join(STUDIES)})")
    rate = r.rates("rate", None)
    if rate is None or len(rate) != 1:
        r.fail("rate", "give one rate for the sensitivity study")
    spec = SensitivitySpec(rate[0], r.integer("trials", 20, minimum=1), studies)
    r.finish()
    return spec


def _precision(data: dict | None, parent: _Reader, faults: tuple[FaultSpec, ...]) -> PrecisionSpec | None:
    if data is None:
        return None
    r = parent.child(data, "precision")
    value = r._get("half_width", _REQUIRED)
    if isinstance(value, str):  # YAML reads 2e-2 as text: accept numbers written either way
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        r.fail("half_width", f"must be a number above 0, in the metric's units (top-1: 0.02 is ±2 points), "
               f"got {value!r}")
    most = max((f.trials for f in faults), default=1)
    max_trials = r.integer("max_trials", minimum=2)
    if max_trials < most:
        r.fail("max_trials", f"must be at least the trials a point runs anyway ({most}), got {max_trials}")
    r.finish()
    return PrecisionSpec(float(value), max_trials)


def _hardening(data: dict | None, parent: _Reader) -> dict | None:
    if data is None:
        return None
    from dataclasses import fields

    from hwflow.harden.pipeline import HardenConfig

    r = parent.child(data, "hardening")
    r.seen.update(f.name for f in fields(HardenConfig))  # every field is known here, given or not
    values = {}
    for f in fields(HardenConfig):
        if f.name not in data:
            continue
        if f.name.endswith("_rates"):
            values[f.name] = r.rates(f.name, None)
        elif f.name == "io":
            values[f.name] = r.choice("io", ("parallel", "stream"), "parallel")
        else:
            values[f.name] = r.integer(f.name, None, minimum=1 if f.name != "seed" else 0)
    r.finish()
    HardenConfig(**values)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _build_fault_model(body: dict, rate: float, where: str):
    from hwflow.faults import fault_model_from_spec

    try:
        return fault_model_from_spec(body, rate, where)
    except SpecError:
        raise
    except HwflowError as err:
        raise SpecError(str(err)) from None


class _Reader:
    """Reads fields of one YAML mapping, remembering which were used, to refuse unknown ones."""

    def __init__(self, data: object, where: str, prefix: str = ""):
        if not isinstance(data, dict):
            msg = f"{where}: {prefix or 'the spec'} must be a mapping of fields, got {type(data).__name__}"
            raise SpecError(msg)
        self.data, self.where, self.prefix, self.seen = data, where, prefix, set()

    def child(self, data: object, name: str) -> _Reader:
        return _Reader(data, self.where, f"{self.prefix}{name}.")

    def fail(self, key: str, problem: str):
        label = f"{self.prefix}{key}".rstrip(".") or "spec"
        msg = f"{self.where}: {label}: {problem}"
        raise SpecError(msg)

    def _get(self, key: str, default):
        self.seen.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                self.fail(key, "missing (required)")
            return default
        return self.data[key]

    def string(self, key: str, default=...):
        value = self._get(key, _REQUIRED if default is ... else default)
        if value is not None and not isinstance(value, str):
            self.fail(key, f"must be text, got {value!r}")
        return value

    def integer(self, key: str, default=..., minimum: int | None = None):
        value = self._get(key, _REQUIRED if default is ... else default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            self.fail(key, f"must be >= {minimum}, got {value}")
        return value

    def choice(self, key: str, options: tuple[str, ...], default: str):
        value = self.string(key, default)
        if value not in options:
            self.fail(key, f"must be one of {', '.join(options)}, got {value!r}")
        return value

    def rates(self, key: str, default):
        value = self._get(key, default)
        if value is None or value is default:
            return value
        values = value if isinstance(value, list) else [value]
        if not values:
            self.fail(key, "must list at least one rate")
        out = []
        for v in values:
            try:
                f = float(v)  # YAML reads 1e-3 as text: accept numbers written either way
            except (TypeError, ValueError):
                self.fail(key, f"not a number: {v!r}")
            if not (math.isfinite(f) and 0.0 <= f <= 1.0):
                self.fail(key, f"rate {v!r} is outside [0, 1]")
            out.append(f)
        return tuple(out)

    def strings(self, key: str, default):
        value = self._get(key, default)
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str) for v in values):
            self.fail(key, f"must be a list of names, got {value!r}")
        return values

    def items(self, key: str) -> list:
        value = self._get(key, _REQUIRED)
        if not isinstance(value, list) or not value:
            self.fail(key, "must be a non-empty list")
        return value

    def mapping(self, key: str, default):
        value = self._get(key, default)
        if value is not None and not isinstance(value, dict):
            self.fail(key, "must be a mapping of fields")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.seen, key=str)  # YAML keys may be numbers too
        if unknown:
            self.fail(str(unknown[0]), f"unknown field{did_you_mean(unknown[0], self.seen)} (known here: "
                      f"{', '.join(sorted(map(str, self.seen)))})")


_REQUIRED = object()
