"""A design the user configured and converted in hls4ml themselves: ``from_hls_model(graph)``.

A notebook user has an hls4ml ``ModelGraph`` already. hwflow takes its Keras model and the
configuration it was converted with (``graph.config.config``) and converts again through
``hwflow.convert.convert``, so that what hwflow must set (the final softmax removed, a storage plan,
the weight ports of a build) is merged and reported exactly as for a configuration file. hls4ml's
conversion is deterministic, so this is the user's design; to be sure, the types of every layer the
two graphs share are compared, and a graph changed by hand after conversion is refused (the change
belongs in the configuration, where hwflow sees it).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hwflow.convert.hls import HlsOptions
from hwflow.errors import ConversionError


@dataclass(frozen=True)
class HlsDesign:
    """The user's converted graph as hwflow takes it: the Keras model and the options that give that graph."""

    model: object
    """The Keras model the graph was converted from (``graph.config.config['KerasModel']``)."""
    options: HlsOptions
    """io type, backend, strategy, reuse factor, part and clock of the graph, and its configuration."""
    graph: object
    """The user's ModelGraph itself (hwflow converts its own copy)."""


def from_hls_model(graph, check: bool = True) -> HlsDesign:
    """Take an hls4ml ``ModelGraph`` the user configured and converted (``convert_from_keras_model``).

    Every entry point that takes a model and HlsOptions takes ``design.model, design.options``;
    ``build_csim``, ``generate`` and ``variant_from_hls_model`` take the graph itself as ``hls_model``.
    ``check`` converts once more and compares the types with the graph's (a few seconds).
    """
    from hwflow.convert.hls_config import from_graph_config, resolve_options
    from hwflow.convert.hls_merge import layer_classes

    config = getattr(getattr(graph, "config", None), "config", None)
    if not isinstance(config, dict) or "HLSConfig" not in config:
        msg = (f"{type(graph).__name__} is not an hls4ml ModelGraph (what hls4ml.converters.convert_from_keras_model "
               "returns)")
        raise ConversionError(msg)
    model = config.get("KerasModel")
    if model is None or isinstance(model, (str, Path)) or not hasattr(model, "layers"):
        msg = ("this ModelGraph was not converted from a Keras model in memory (no KerasModel in its configuration): "
               "convert it with hls4ml.converters.convert_from_keras_model, or give hwflow the model and the "
               "configuration file (--hls-config)")
        raise ConversionError(msg)
    user = from_graph_config(graph)
    names = {name for name, _ in layer_classes(model, resolve_options(_without_names(user)))}
    hls = user.hls
    if hls.get("LayerName"):  # hls4ml's optimizers add entries for the layers they create: not the user's
        hls["LayerName"] = {k: v for k, v in hls["LayerName"].items() if k in names}
        user = _with_hls(user, hls)
    design = HlsDesign(model, resolve_options(user), graph)
    if check:
        _check_same(design)
    return design


def _without_names(user):
    hls = dict(user.hls)
    hls.pop("LayerName", None)
    hls.setdefault("Model", {})
    return _with_hls(user, hls)


def _with_hls(user, hls: dict):
    from dataclasses import replace

    return replace(user, hls_json=json.dumps(hls, sort_keys=True))


def _check_same(design: HlsDesign) -> None:
    """The types of hwflow's conversion must be the graph's, layer by layer."""
    from hwflow.convert.hls import convert
    from hwflow.convert.names import names_of

    with tempfile.TemporaryDirectory(prefix="hwflow-graph-") as tmp:
        ours = convert(design.model, design.options, Path(tmp) / "model")
    to_user = names_of(ours).to_user
    mine = {to_user(layer.name): layer for layer in ours.get_layers()}
    for layer in design.graph.get_layers():
        other = mine.get(layer.name)
        if other is None:
            continue
        for key, t in layer.types.items():
            theirs, got = str(t.precision), str(other.types[key].precision) if key in other.types else None
            if got is not None and got != theirs:
                msg = (f"layer {layer.name}: the graph has {key} {theirs}, but its configuration gives {got}: the "
                       "graph was changed after conversion; put the change in the configuration (hls_config) and "
                       "convert again")
                raise ConversionError(msg)
