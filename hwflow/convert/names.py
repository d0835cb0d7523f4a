"""Layer names hls4ml 1.3.0 cannot carry, renamed inside the conversion and mapped back outside it.

A user's model keeps its own layer names everywhere the user looks (messages, the emulator's
Program and WeightImage, fault maps, results rows, reports, manifests): only the hls4ml graph and
the C++ it writes see the internal names. Which names really clash was measured by converting,
compiling and running tiny QKeras models under hls4ml 1.3.0 (``tests/test_own_model.py`` keeps
the cases):

- ``input``, for any layer: hls4ml's ``Layer`` refuses it (its graph's name for the model input);
- a name that is not a C identifier (``my-dense``, ``dense.1``, ``1st``): hls4ml writes type names
  from layer names (``<name>_result_t``), which then do not compile;
- a weighted layer whose name makes hls4ml's Keras reader take one weight for another: it picks a
  layer's weight by *substring* of the variable names, in order, so in a Dense ``my_bias`` the kernel
  ``my_bias/kernel:0`` is read as the bias too, and the C simulation computes silently wrong
  outputs (``kernel`` itself is harmless: the first variable holding "kernel" is the kernel);
- the input layer's name is a C++ variable of the generated top function: C++ keywords (``int``,
  ``float``), the project's name (``myproject``) and hls4ml's own identifiers (weight arrays
  ``w2``/``b2``, outputs ``layer2_out``) do not compile there.

Every other name (``output``, ``layer``, ``model``, ``class`` for a hidden layer, ``std``...) converts,
compiles and matches Keras, and is passed through unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

INTERNAL_PREFIX = "hwflow_l"
"""Internal names are ``hwflow_l<index>``: C identifiers with no hls4ml weight name inside."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_GENERATED = re.compile(r"(w|b|s|z|e|r|n|layer|config|input|output)\d+(_out|_t)?\Z")
_CPP_KEYWORDS = frozenset("""
alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t char32_t class
compl concept const consteval constexpr constinit const_cast continue co_await co_return co_yield decltype
default delete do double dynamic_cast else enum explicit export extern false float for friend goto if inline
int long mutable namespace new noexcept not not_eq nullptr operator or or_eq private protected public register
reinterpret_cast requires return short signed sizeof static static_assert static_cast struct switch template
this thread_local throw true try typedef typeid typename union unsigned using virtual void volatile wchar_t
while xor xor_eq main std nnet hls ap_fixed ap_ufixed ap_int ap_uint myproject input_t result_t
""".split())


def clash(name: str, is_input: bool = False, weights: tuple[str, ...] = ()) -> str | None:
    """Why hls4ml 1.3.0 cannot carry ``name``, or None when it can.

    ``weights``: the layer's weight variables' own names in order (``("kernel", "bias")``).
    """
    if name == "input":
        return "hls4ml reserves 'input' for the model input"
    if not _IDENTIFIER.match(name):
        return "not a C identifier (hls4ml writes C++ type names from layer names)"
    full = [f"{name}/{w}:0" for w in weights]
    for i, w in enumerate(weights):  # hls4ml's KerasModelReader: the first variable whose name holds w
        if next(j for j, f in enumerate(full) if w in f) != i:
            return f"hls4ml's reader would take another weight of the layer for its {w}"
    if is_input and (name in _CPP_KEYWORDS or _GENERATED.match(name)):
        return "the input's name is a C++ variable of the generated code, and this one is taken"
    return None


@dataclass(frozen=True)
class NameMap:
    """User layer name -> internal name, for the layers that must be renamed (usually none)."""

    internal: dict[str, str] = field(default_factory=dict)
    """User name -> internal name of each renamed layer."""

    @classmethod
    def for_model(cls, model) -> NameMap:
        """The renames ``model`` needs before hls4ml sees it."""
        weights = {layer.name: tuple(_own_name(w.name) for w in layer.weights) for layer in model.layers}
        layers = model.get_config()["layers"]  # a Sequential model's input layer is only in its config
        names = {layer["config"]["name"] for layer in layers}
        internal = {}
        for index, layer in enumerate(layers):
            name = layer["config"]["name"]
            if clash(name, layer["class_name"] == "InputLayer", weights.get(name, ())) is None:
                continue
            new = f"{INTERNAL_PREFIX}{index}"
            while new in names:
                new += "_"
            internal[name] = new
        return cls(internal)

    def __bool__(self) -> bool:
        return bool(self.internal)

    def to_internal(self, name: str) -> str:
        """The name hls4ml knows a user's layer by."""
        return self.internal.get(name, name)

    def to_user(self, name: str) -> str:
        """The user's name of an hls4ml layer, also of the layers hls4ml derives from a renamed one
        (``hwflow_l3_relu`` for the activation split off ``my-dense`` -> ``my-dense_relu``)."""
        for user, new in self.internal.items():
            if name == new:
                return user
            if name.startswith(new + "_"):
                return user + name[len(new):]
        return name

    def user_text(self, text: str) -> str:
        """``text`` (an hls4ml message) with every internal name replaced by the user's."""
        if not self.internal:
            return text
        return re.sub(rf"\b{INTERNAL_PREFIX}\d+\w*", lambda m: self.to_user(m.group(0)), text)

    def apply(self, model):
        """``model`` with the renamed layers (same weights, same graph), or ``model`` itself."""
        if not self.internal:
            return model
        import tensorflow as tf

        def clone(layer):
            config = layer.get_config()
            config["name"] = self.to_internal(layer.name)
            return layer.__class__.from_config(config)

        source = model.inputs[0].node.layer if len(model.inputs) == 1 else None
        inputs = None
        if source is not None and source.name in self.internal:  # rebuilt on an input of the new name
            inputs = tf.keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype,
                                    name=self.internal[source.name])
        renamed = tf.keras.models.clone_model(model, input_tensors=inputs, clone_function=clone)
        for layer in model.layers:
            weights = layer.get_weights()
            if weights:
                renamed.get_layer(self.to_internal(layer.name)).set_weights(weights)
        return renamed


def _own_name(variable: str) -> str:
    """``fc1/kernel:0`` -> ``kernel``: a weight variable's name within its layer."""
    return variable.rsplit("/", 1)[-1].split(":")[0]


def names_of(hls_model) -> NameMap:
    """The NameMap ``hwflow.convert.convert`` recorded on an hls4ml graph (empty for other graphs)."""
    return getattr(hls_model, "hwflow_names", None) or NameMap()
