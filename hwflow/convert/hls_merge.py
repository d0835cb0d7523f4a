"""The user's hls4ml configuration merged with what hwflow must set itself, and the merge reported.

hwflow gives hls4ml the user's ``HLSConfig`` as written; it only adds or changes what its flow needs:
entries for the final softmax it removes (it compares logits) are dropped, Model-level strategy and
reuse factor are filled in where the file leaves them to hwflow's options, tracing is switched on
for verify, and a storage plan moves the binary point of scaled weight arrays. A setting of the file
that hwflow cannot keep is refused, naming both values.

After conversion, ``check_graph`` reads the graph back and checks that every type the file sets
explicitly is the type hls4ml built (it silently keeps a QKeras quantizer's weight type over the
configuration's, for one), that hls4ml kept the reuse factors (it moves invalid ones to the closest
valid one: reported) and that no weight array became a top-level port (``BramFactor``: hwflow
decides which arrays are host-writable).
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass

from hwflow.convert.hls_config import STRATEGIES, UserHlsConfig, closest
from hwflow.errors import ConversionError, FormatError, SpecError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeNote:
    """One place where the design differs from the file as written, and why."""

    field: str
    """Where in the configuration, e.g. ``LayerName.out_softmax`` or ``Model.Strategy``."""
    user: str | None
    """The file's value (None: the file does not set it)."""
    hwflow: str
    """What the design has instead."""
    why: str

    def __str__(self) -> str:
        was = "unset" if self.user is None else self.user
        return f"{self.field}: {was} -> {self.hwflow} ({self.why})"


@dataclass(frozen=True)
class ConfigReport:
    """What was taken from the user's configuration and what hwflow merged in (logged, printed by the CLI)."""

    name: str
    digest: str
    checked: int
    """Explicit types, reuse factors and strategies of the file found as written in the converted graph."""
    notes: tuple[MergeNote, ...] = ()

    def summary(self) -> str:
        head = f"hls config {self.name} ({self.digest}): {self.checked} settings honoured as written"
        if not self.notes:
            return f"{head}, nothing merged"
        return f"{head}; merged: " + "; ".join(str(n) for n in self.notes)

    def to_json(self) -> dict:
        return {"name": self.name, "digest": self.digest, "checked": self.checked,
                "notes": [vars(n) for n in self.notes]}


def merge(model, original, options, renames=None) -> tuple[dict, list[MergeNote], dict]:
    """The ``HLSConfig`` hls4ml gets for ``model`` (softmax removed) from ``options.user_config``, the notes of
    the merge, and hwflow's own per-layer configuration of ``model`` (``LayerName``), for ``check_graph``.

    ``original`` is the model as given (before the softmax was removed), whose layer names the file
    may still name; ``renames`` the ``NameMap`` of layers renamed for hls4ml (the file uses the
    user's names, hls4ml gets the internal ones).
    """
    user: UserHlsConfig = options.user_config
    where = user.name
    to_user = renames.to_user if renames else (lambda n: n)
    layers = layer_classes(model, options)
    internal = {to_user(name): name for name, _ in layers}  # the user's name -> hls4ml's
    reference = _reference(model, options)["LayerName"]
    before = {name for name, _ in layer_classes(original, options)} if original is not model else set(internal)
    config = copy.deepcopy(user.hls)
    notes: list[MergeNote] = []

    names = config.get("LayerName") or {}
    classes = dict(layers)
    for name in list(names):
        if name not in internal:
            if name in before:
                notes.append(MergeNote(f"LayerName.{name}", "set", "dropped", "hwflow removes the final softmax: "
                                       "it compares logits"))
                del names[name]
                continue
            msg = f"{where}: LayerName.{name}: the model has no layer {name!r}{closest(name, internal)}"
            raise SpecError(msg)
        own = internal[name]
        _check_vars(names[name].get("Precision"), set(_vars(reference.get(own))), where, f"LayerName.{name}")
        if classes[own] == "ClipActivation":
            _check_clip(names[name], reference[own], where, name)
        if own != name:
            names[own] = names.pop(name)
    _check_types(config.get("LayerType") or {}, layers, reference, where)
    notes += _shadowed(config, layers, to_user)
    _check_model_vars(config.get("Model") or {}, reference, where)

    for key, value in (("IOType", options.io_type.value), ("Backend", options.backend.value)):
        theirs = user.project.get(key)
        if theirs is not None and str(theirs).lower() != value.lower():
            msg = (f"{key}: {theirs} in {where} conflicts with hwflow's {value}: make the options with "
                   "hwflow.convert.resolve_options(config), or give the same value")
            raise ConversionError(msg)
    model_cfg = config.setdefault("Model", {})
    for key, value, default in (("Strategy", options.strategy.value, "Latency"),
                                ("ReuseFactor", options.reuse_factor, 1)):
        theirs = model_cfg.get(key)
        if theirs is None:
            if value != default:
                model_cfg[key] = value
                notes.append(MergeNote(f"Model.{key}", None, str(value), "hwflow's option"))
        elif str(theirs).lower() != str(value).lower():
            msg = (f"Model.{key}: {theirs} in {where} conflicts with hwflow's {key.lower()} {value}: "
                   "give the same value, or leave one of them out")
            raise ConversionError(msg)
    if options.trace:
        for entry in names.values():
            entry["Trace"] = True
    return config, notes, reference


def check_graph(hls_model, options, notes: list[MergeNote], shifts: dict[str, int], renames=None,
                reference: dict | None = None) -> ConfigReport:
    """Read the converted graph back: the file's explicit settings must be what hls4ml built.

    ``shifts`` are the storage plan's, by hls4ml's layer names; messages give the user's names.
    ``reference``: hwflow's own ``LayerName`` configuration of the model (``merge``'s); None: no check of
    the types the file leaves to the default.
    """
    from hwflow.fixed import from_hls4ml, parse_type

    user: UserHlsConfig = options.user_config
    where = user.name
    to_user = renames.to_user if renames else (lambda n: n)
    layers = {layer.name: layer for layer in hls_model.get_layers()}
    checked = 0
    for own, entry in (hls_model.config.config["HLSConfig"].get("LayerName") or {}).items():
        layer, name = layers.get(own), to_user(own)
        if layer is None or not isinstance(entry, dict):
            continue  # removed by hls4ml's optimizers (a linear activation, a fused layer)
        precision = entry.get("Precision")
        for var, text in (precision.items() if isinstance(precision, dict) else ()):
            t = layer.types.get(f"{var}_t")
            if t is None or str(text).strip().lower() == "auto":
                continue
            if var == "bias" and layer.get_attr("bias_data", None) is None:
                continue  # no bias in the model (use_bias=False, a split separable's depthwise): hls4ml's zero uint<1>
            try:
                got, want = from_hls4ml(t.precision), parse_type(str(text))
            except FormatError:
                continue
            shift = shifts.get(f"{own}/{var}", 0)
            if shift:
                from dataclasses import replace

                want = replace(want, integer=want.integer - shift)
                notes.append(MergeNote(f"LayerName.{name}.Precision.{var}", str(text), str(want),
                                       f"storage plan: stored as {text}, scaled by 2^{shift}"))
            if got != want:
                why = ("its QKeras quantizer fixes the type: hls4ml ignores the configuration for a quantized array; "
                       "change the quantizer, or write the quantizer's type" if layer.get_attr(f"{var}_quantizer")
                       else "hls4ml's optimizers changed it")
                msg = f"{where}: LayerName.{name}.Precision.{var} is {text}, but hls4ml built {got} ({why})"
                raise ConversionError(msg)
            checked += 1
        rf = entry.get("ReuseFactor")
        if rf is not None and layer.get_attr("reuse_factor") is not None:
            if int(layer.get_attr("reuse_factor")) != int(rf):
                notes.append(MergeNote(f"LayerName.{name}.ReuseFactor", str(rf), str(layer.get_attr("reuse_factor")),
                                       "hls4ml moved it to the closest valid reuse factor"))
            else:
                checked += 1
        strategy = entry.get("Strategy")
        built = layer.get_attr("strategy")
        if strategy is not None and built is not None:
            if STRATEGIES.get(str(built).lower()) != STRATEGIES[str(strategy).lower()]:
                notes.append(MergeNote(f"LayerName.{name}.Strategy", str(strategy), str(built), "hls4ml's choice"))
            else:
                checked += 1
    ports = [f"{to_user(layer.name)}/{role}" for layer in hls_model.get_layers() for role, v in layer.weights.items()
             if str(getattr(v, "storage", "")).lower() == "bram"]
    if ports:
        msg = (f"Model.BramFactor {user.model_section.get('BramFactor')} in {where} makes hls4ml turn "
               f"{', '.join(ports)} into top-level ports, but hwflow decides which weight arrays are host-writable "
               "(hwflow build --min-words / --memories): remove BramFactor from the file")
        raise ConversionError(msg)
    notes += _defaulted_quantizer_types(hls_model, reference or {}, to_user)
    report = ConfigReport(user.name, user.digest, checked, tuple(notes))
    log.info("%s", report.summary())
    return report


def _defaulted_quantizer_types(hls_model, reference: dict, to_user) -> list[MergeNote]:
    """Result types a QKeras quantizer gives in hwflow's own configuration (a ``QActivation``'s) that the file
    leaves unset, where hls4ml built another type (``Model``'s default): the design then no longer computes
    what QKeras computes. Reported, not refused (the emulator follows the design as built), so that a file
    written with ``LayerType`` or ``Model`` entries only does not silently widen the activations."""
    from hwflow.fixed import from_hls4ml, parse_type

    hls = hls_model.config.config["HLSConfig"]
    names, types = hls.get("LayerName") or {}, hls.get("LayerType") or {}
    notes = []
    for layer in hls_model.get_layers():
        text = _precision_of(reference.get(layer.name), "result")
        t = layer.types.get("result_t")
        if text is None or str(text).lower() == "auto" or t is None:
            continue
        if _precision_of(names.get(layer.name), "result") or _precision_of(types.get(type(layer).__name__), "result"):
            continue  # the file sets it: check_graph compared it above, or hls4ml applied it by type
        try:
            got, want = from_hls4ml(t.precision), parse_type(str(text))
        except FormatError:
            continue
        if got != want:
            notes.append(MergeNote(
                f"LayerName.{to_user(layer.name)}.Precision.result", None, str(got),
                f"the file leaves it to the Model default, but the layer's QKeras quantizer is {want}: the design "
                f"no longer computes what QKeras does; set this type to {want} to follow QKeras"))
    return notes


def _precision_of(entry, var: str):
    """The type a ``LayerName`` / ``LayerType`` entry gives ``var`` (a plain ``Precision`` string: every type)."""
    precision = entry.get("Precision") if isinstance(entry, dict) else None
    if isinstance(precision, dict):
        return precision.get(var)
    return precision


def _reference(model, options) -> dict:
    """hwflow's own per-layer configuration of ``model``: the names, arrays and types hls4ml knows."""
    from dataclasses import replace

    from hwflow.convert.hls import hls_config

    return hls_config(model, replace(options, user_config=None, trace=False))


def layer_classes(model, options) -> list[tuple[str, str]]:
    """(name, hls4ml class) of every layer hls4ml makes of ``model``, before its optimizers run."""
    import hls4ml
    from hls4ml.converters.keras_v2_to_hls import KerasModelReader, parse_keras_model

    from hwflow.convert import clipact_hls
    from hwflow.convert.hls import quiet

    clipact_hls.register()
    with quiet():
        layer_list, *_ = parse_keras_model(json.loads(model.to_json()), KerasModelReader(model))
    out = []
    for layer in layer_list:
        cls = hls4ml.model.layers.layer_map.get(layer["class_name"])
        out.append((layer["name"], cls.__name__ if cls is not None else layer["class_name"]))
    return out


def _vars(entry: dict | None) -> list[str]:
    precision = (entry or {}).get("Precision")
    return list(precision) if isinstance(precision, dict) else []


def _check_vars(precision, known: set[str], where: str, field: str) -> None:
    if not isinstance(precision, dict):
        return
    for var in precision:
        if var not in known | {"default"}:
            msg = (f"{where}: {field}.Precision.{var}: this layer has no type {var!r}{closest(var, known)}; "
                   f"its types: {', '.join(sorted(known)) or 'none'}")
            raise SpecError(msg)


def _check_types(types: dict, layers: list[tuple[str, str]], reference: dict, where: str) -> None:
    import hls4ml

    present: dict[str, set[str]] = {}
    for name, cls in layers:
        present.setdefault(cls, set()).update(_vars(reference.get(name)))
    for cls in types:
        if cls not in present:
            theirs = hls4ml.model.layers.layer_map.get(cls)
            if theirs is not None and theirs.__name__ != cls and theirs.__name__ in present:
                msg = (f"{where}: LayerType.{cls}: hls4ml matches LayerType by its own class name: write "
                       f"{theirs.__name__} (it would ignore {cls})")
                raise SpecError(msg)
            if theirs is None:
                msg = (f"{where}: LayerType.{cls}: not an hls4ml layer type{closest(cls, present)}; this model has "
                       f"{', '.join(sorted(present))}")
                raise SpecError(msg)
            log.info("%s: LayerType.%s: no layer of this type in the model", where, cls)
            continue
        _check_vars(types[cls].get("Precision"), present[cls], where, f"LayerType.{cls}")


def _shadowed(config: dict, layers: list[tuple[str, str]], to_user) -> list[MergeNote]:
    """LayerType types that hls4ml does not apply to a layer because its LayerName entry sets the same type
    (``auto`` included: what ``config_from_keras_model`` writes): hls4ml's precedence, reported."""
    names = config.get("LayerName") or {}
    notes = []
    for cls, entry in (config.get("LayerType") or {}).items():
        precision = entry.get("Precision") if isinstance(entry, dict) else None
        for own, layer_cls in layers:
            mine = (names.get(own) or {}).get("Precision")
            if layer_cls != cls or not isinstance(precision, dict) or not isinstance(mine, dict):
                continue
            for var in sorted(set(precision) & set(mine)):
                notes.append(MergeNote(f"LayerType.{cls}.Precision.{var}", str(precision[var]),
                                       f"{mine[var]} for {to_user(own)}",
                                       f"hls4ml applies LayerName.{to_user(own)}'s type first"))
    return notes


def _check_model_vars(model_cfg: dict, reference: dict, where: str) -> None:
    known = {"default", "maximum"}
    for entry in reference.values():
        known.update(_vars(entry))
    _check_vars(model_cfg.get("Precision"), known, where, "Model")


def _check_clip(entry: dict, ref: dict, where: str, name: str) -> None:
    """FT-ClipAct layers are hwflow's: their output type is the one the threshold was searched for."""
    mine = (ref.get("Precision") or {}).get("result")
    precision = entry.get("Precision")
    theirs = precision.get("result") if isinstance(precision, dict) else precision
    if theirs is None or str(theirs).lower() == "auto" or mine is None:
        return
    from hwflow.fixed import parse_type

    if parse_type(str(theirs)) != parse_type(str(mine)):
        msg = (f"{where}: LayerName.{name}.Precision.result {theirs} conflicts with hwflow's FT-ClipAct layer "
               f"type {mine} (the threshold was searched for it): leave the clip layer's type out of the file")
        raise ConversionError(msg)
