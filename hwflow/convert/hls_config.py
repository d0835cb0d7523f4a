"""The user's own hls4ml configuration, taken as users write it: read, checked, resolved against hwflow's options.

Two forms are read, both hls4ml's own: the ``HLSConfig`` dictionary (``Model`` + ``LayerName`` /
``LayerType``, as ``hls4ml.utils.config_from_keras_model(..., granularity='name')`` returns it and
users dump it to YAML), or a whole hls4ml YAML project file (``KerasModel``, ``OutputDir``,
``IOType``, ``Backend``, ``Part``, ``ClockPeriod``, ``HLSConfig``) as
``hls4ml.converters.convert_from_config`` reads it.

Everything is checked here, before hls4ml sees it: hls4ml silently ignores what it does not know (a
misspelt ``Precison``, a ``LayerName`` entry for a layer that does not exist, a ``LayerType`` spelt
with the Keras class ``QDense``), so a typo would make hwflow emulate a design that is not the
user's. What hwflow adds itself, and the checks that need the model, are in ``hls_merge``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from hwflow.errors import ConversionError, FormatError, SpecError

if TYPE_CHECKING:
    from hwflow.convert.hls import HlsOptions

PROJECT_KEYS = ("KerasModel", "KerasH5", "KerasJson", "OutputDir", "ProjectName", "ProjectDir", "IOType", "Backend",
                "Part", "Board", "ClockPeriod", "ClockUncertainty", "HLSConfig", "Version", "Stamp", "WriterConfig",
                "InputData", "OutputPredictions", "InputShapes", "OutputShapes")
"""Top-level keys of an hls4ml project file."""
DESIGN_KEYS = ("IOType", "Backend", "Part", "ClockPeriod")
"""Project keys hwflow honours; the others (paths, names, the model) are reported as not used."""
HLS_KEYS = ("Model", "LayerName", "LayerType", "Flows", "Optimizers", "SkipOptimizers")
"""Keys of the ``HLSConfig`` dictionary that hls4ml's converters pass on (others are dropped by hls4ml)."""
MODEL_KEYS = ("Precision", "ReuseFactor", "Strategy", "BramFactor", "TraceOutput", "ConvImplementation",
              "PipelineStyle", "PipelineInterval", "Compression", "TargetCycles", "BitExact")
LAYER_KEYS = ("Precision", "ReuseFactor", "Strategy", "Trace", "ConvImplementation", "Compression", "TargetCycles",
              "Algorithm", "Direction", "Implementation", "ParallelizationFactor", "Skip", "Static", "TableRangePower2",
              "TableSize", "TimeStepLoopParallelism", "DepthwiseReuseFactor", "PointwiseReuseFactor")
"""Keys of a ``LayerName`` / ``LayerType`` entry: hls4ml's configurable layer attributes (Vivado/Vitis)."""
STRATEGIES = {"latency": "Latency", "resource": "Resource"}
"""Strategies the emulator reproduces (Resource stores kernels transposed: ``extract._ARRAY_AXES``)."""
IO_TYPES = ("io_parallel", "io_stream")
BACKENDS = ("Vitis", "Vivado")


@dataclass(frozen=True)
class UserHlsConfig:
    """A user's hls4ml configuration, checked, held as canonical JSON (hashable; its digest names the design)."""

    name: str
    """Where it came from: the file, or ``<ModelGraph name>`` for a graph the user converted."""
    hls_json: str
    """The ``HLSConfig`` dictionary as canonical JSON."""
    project_json: str = "{}"
    """The project-level keys hwflow honours (``DESIGN_KEYS``) that the file sets, as canonical JSON."""
    unused: tuple[str, ...] = ()
    """Project keys that are read but not used (``KerasModel``, ``OutputDir``...), for the report."""

    @cached_property
    def hls(self) -> dict:
        return json.loads(self.hls_json)

    @cached_property
    def project(self) -> dict:
        return json.loads(self.project_json)

    @property
    def model_section(self) -> dict:
        return self.hls.get("Model") or {}

    @property
    def digest(self) -> str:
        """What makes the design: another configuration is another design (campaigns, builds, deploy compare it)."""
        text = json.dumps({"hls": self.hls, "project": self.project}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return f"{Path(self.name).name} ({self.digest})"

    def record(self) -> dict:
        """Name and digest, as campaigns and builds record them."""
        return {"name": Path(self.name).name, "digest": self.digest}


def load_hls_config(path: str | Path) -> UserHlsConfig:
    """Read and check an hls4ml configuration file (either form); a SpecError names the file and the field."""
    import yaml

    from hwflow.campaign.spec import read_yaml

    loader = type("_HlsLoader", (yaml.SafeLoader,), {})
    # hls4ml's project files load the model with a '!keras_model' tag: keep its path, do not load it.
    loader.add_constructor("!keras_model", lambda ld, node: str(ld.construct_scalar(node)))
    return parse_hls_config(read_yaml(path, "hls4ml configuration", loader), str(path))


def parse_hls_config(data: object, where: str = "<hls config>") -> UserHlsConfig:
    """Check a configuration dictionary (``HLSConfig`` or a whole project file) and hold it."""
    if not isinstance(data, dict):
        _fail(where, "", f"must be a mapping (hls4ml's HLSConfig or a project file), got {type(data).__name__}")
    project, unused = {}, []
    if "HLSConfig" in data:
        _known_keys(data, PROJECT_KEYS, where, "")
        hls = data["HLSConfig"]
        for key in data:
            if key in DESIGN_KEYS:
                project[key] = data[key]
            elif key != "HLSConfig":
                unused.append(key)
        _check_project(project, where)
    else:
        stray = [k for k in data if k in PROJECT_KEYS]
        if stray:
            _fail(where, stray[0], "is a key of an hls4ml project file, which holds the layer settings under "
                  "'HLSConfig:'; put Model/LayerName/LayerType under HLSConfig (or leave the project keys out)")
        hls = data
    if not isinstance(hls, dict):
        _fail(where, "HLSConfig", "must be a mapping with Model, LayerName and/or LayerType")
    _known_keys(hls, HLS_KEYS, where, "")
    if not any(k in hls for k in ("Model", "LayerName", "LayerType")):
        _fail(where, "", "sets none of Model, LayerName, LayerType: nothing to configure")
    _check_section(hls.get("Model"), MODEL_KEYS, where, "Model")
    for section in ("LayerName", "LayerType"):
        entries = hls.get(section)
        if entries is None:
            continue
        if not isinstance(entries, dict):
            _fail(where, section, "must map names to settings")
        for name, entry in entries.items():
            _check_section(entry, LAYER_KEYS, where, f"{section}.{name}")
    for key in ("Flows", "Optimizers", "SkipOptimizers"):
        value = hls.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            _fail(where, key, f"must be a list of names, got {value!r}")
    canonical = json.dumps(hls, sort_keys=True)
    return UserHlsConfig(where, canonical, json.dumps(project, sort_keys=True), tuple(unused))


def from_graph_config(graph) -> UserHlsConfig:
    """The configuration a user converted an hls4ml ``ModelGraph`` with (``graph.config.config``)."""
    config = graph.config.config
    hls = json.loads(json.dumps(config.get("HLSConfig") or {}, default=str))
    if not hls.get("Flows"):
        hls.pop("Flows", None)
    model = hls.get("Model") or {}
    if model.get("BitExact") is None:
        model.pop("BitExact", None)  # hls4ml's converter adds it; a file does not have it
    data = {"HLSConfig": hls, **{k: config[k] for k in DESIGN_KEYS if config.get(k) is not None}}
    return parse_hls_config(data, f"<ModelGraph {config.get('ProjectName', 'myproject')}>")


def resolve_options(user: UserHlsConfig, io: str | None = None, backend: str | None = None,
                    strategy: str | None = None, reuse_factor: int | None = None, label=None) -> HlsOptions:
    """hwflow's HlsOptions for a design the user configured.

    The arguments are what the caller asked for (None: not asked). A value the file also sets must
    agree with it; the error names both. What neither sets gets hwflow's default. ``label(key)``
    names the caller's setting in messages (default: the command-line flag, ``--io``).
    """
    from hwflow.convert.hls import HlsOptions

    label = label or (lambda key: f"--{key.replace('_', '-')}")
    model = user.model_section
    chosen = {}
    for key, asked, theirs, where, norm in (
        ("io", io, user.project.get("IOType"), "IOType", lambda v: v if str(v).startswith("io_") else f"io_{v}"),
        ("backend", backend, user.project.get("Backend"), "Backend", lambda v: str(v).lower()),
        ("strategy", strategy, model.get("Strategy"), "Model.Strategy", lambda v: str(v).lower()),
        ("reuse_factor", reuse_factor, model.get("ReuseFactor"), "Model.ReuseFactor", int),
    ):
        if asked is not None and theirs is not None and norm(asked) != norm(theirs):
            msg = (f"{label(key)} {asked} conflicts with {where}: {theirs} in {user.name}: give the same value, "
                   f"or leave one of them out")
            raise ConversionError(msg)
        chosen[key] = asked if asked is not None else theirs
    io_value = str(chosen["io"] or "parallel")
    precision = model.get("Precision")
    default = precision.get("default") if isinstance(precision, dict) else precision
    kw = {"default_precision": str(default or "fixed<16,6>"), "user_config": user}
    if user.project.get("Part") is not None:
        kw["part"] = str(user.project["Part"])
    if user.project.get("ClockPeriod") is not None:
        kw["clock_period"] = float(user.project["ClockPeriod"])
    return HlsOptions.make(io_value.removeprefix("io_"), str(chosen["backend"] or "Vitis"),
                           STRATEGIES.get(str(chosen["strategy"] or "latency").lower(), str(chosen["strategy"])),
                           1 if chosen["reuse_factor"] is None else int(chosen["reuse_factor"]), **kw)


def closest(name: str, known) -> str:
    """' (did you mean X?)' for the closest known name, or ''."""
    from hwflow.campaign.spec import did_you_mean

    known = list(known)
    hint = did_you_mean(name, known, cutoff=0.5)
    lower = {k.lower(): k for k in known}
    if hint or name.lower() not in lower:
        return hint
    return f" (did you mean {lower[name.lower()]!r}?)"  # only the case differs


def check_type(text: object, where: str, field: str) -> None:
    """A precision must be 'auto' or a fixed-point/integer type the emulator reproduces."""
    from hwflow.fixed import parse_type

    if not isinstance(text, str):
        _fail(where, field, f"must be a type such as 'ap_fixed<16,6>' or 'auto', got {text!r}")
    if text.strip().lower() == "auto":
        return
    try:
        parse_type(text)
    except FormatError as err:
        _fail(where, field, f"{err}; hwflow emulates fixed-point and integer types (any rounding and overflow "
              "mode) and 'auto'")


def _check_project(project: dict, where: str) -> None:
    io = project.get("IOType")
    if io is not None and io not in IO_TYPES:
        _fail(where, "IOType", f"{io!r} is not an hls4ml io type: use {' or '.join(IO_TYPES)}")
    backend = project.get("Backend")
    if backend is not None and str(backend).capitalize() not in BACKENDS:
        _fail(where, "Backend", f"{backend!r}: hwflow emulates and builds the {' and '.join(BACKENDS)} backends")
    clock = project.get("ClockPeriod")
    if clock is not None and (isinstance(clock, bool) or not isinstance(clock, (int, float)) or clock <= 0):
        _fail(where, "ClockPeriod", f"must be a positive number of ns, got {clock!r}")
    part = project.get("Part")
    if part is not None and not isinstance(part, str):
        _fail(where, "Part", f"must be an FPGA part name, got {part!r}")


def _check_section(entry: object, keys: tuple[str, ...], where: str, field: str) -> None:
    if entry is None:
        return
    if not isinstance(entry, dict):
        _fail(where, field, f"must be a mapping of settings ({', '.join(keys[:4])}...), got {entry!r}")
    _known_keys(entry, keys, where, field)
    precision = entry.get("Precision")
    if isinstance(precision, dict):
        for var, text in precision.items():
            check_type(text, where, f"{field}.Precision.{var}")
    elif precision is not None:
        check_type(precision, where, f"{field}.Precision")
    for key in ("ReuseFactor", "BramFactor", "DepthwiseReuseFactor", "PointwiseReuseFactor"):
        value = entry.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            _fail(where, f"{field}.{key}", f"must be a positive integer, got {value!r}")
    strategy = entry.get("Strategy")
    if strategy is not None and str(strategy).lower() not in STRATEGIES:
        _fail(where, f"{field}.Strategy", f"{strategy!r}: hwflow emulates the {' and '.join(STRATEGIES.values())} "
              f"strategies{closest(str(strategy), STRATEGIES.values())}")


def _known_keys(data: dict, keys: tuple[str, ...], where: str, field: str) -> None:
    for key in data:
        if key not in keys:
            _fail(where, f"{field}.{key}".strip("."), f"unknown key{closest(str(key), keys)}; known here: "
                  f"{', '.join(keys)}")


def _fail(where: str, field: str, problem: str):
    msg = f"{where}: {field}: {problem}" if field else f"{where}: {problem}"
    raise SpecError(msg)
