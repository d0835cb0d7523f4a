"""The rule table: one :class:`Rule` per layer kind, looked up by the engine, which never
special-cases a kind.

A rule brings, side by side, the layer's full kernel on integer codes and its delta rule. To add a
layer kind (a merge, a depthwise convolution, average pooling, a lookup table):

1. write a module in ``hwflow/campaign/delta/`` with a class implementing :class:`Rule`
   (``full``, ``delta``, ``needs_input``);
2. call ``register_rule(Kind.X, YourRule())`` at the end of that module and import the module in
   ``hwflow/campaign/delta/__init__.py``;
3. add the kind to the per-layer test (``tests/test_engine_delta.py``), which checks the rule's
   deltas against the traced difference of two full emulations.

A second rule for a kind is refused (``register_rule`` raises), so two modules cannot silently
disagree about one layer.

A kind without a rule of its own is not refused: ``rule_for`` gives it the generic exact fallback
(``hwflow.campaign.delta.fallback.Recompute``), which recomputes the samples an input's blocks hold
(the union over every input; every sample when the layer's own words changed) with the layer's
emulator kernel on the faulty inputs, then trims to what changed. A rule of the kind's own is
faster (it computes only what a block touches), never more exact. Only the input layer, which no
trial computes, has no rule.

A rule may also say what the golden pass must keep beyond the first input (``needs_input``: every
input of the layer is kept): ``needs_output(layer)`` (its own fault-free output, to trim against),
``needs_accumulator`` (``hwflow.campaign.delta.golden.plan``).

Optional, for the engine's folded runs (``hwflow.campaign.delta.chain``): ``takes_pending`` (the rule
accepts a run's blocks unstepped, ``chain.PendingStep``, and applies the step itself, as the merge
kernel does) and ``delta_then(step, folded)`` (the rule's delta with the folded run after it applied
in the same pass, so a wide intermediate is never written).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from hwflow.campaign.delta.fallback import FALLBACK
from hwflow.emulator import Emulator, Kind, LayerSpec
from hwflow.emulator.run import Weights
from hwflow.errors import EmulatorError, UnsupportedLayerError
from hwflow.fixed import FixedType

if TYPE_CHECKING:
    from hwflow.campaign.delta.golden import Golden
    from hwflow.campaign.delta.state import Delta


@dataclass
class Step:
    """What a rule is given for one layer of one trial."""

    layer: LayerSpec
    x_type: FixedType  # type of the layer's input codes
    inputs: Delta  # how the input differs from the fault-free run
    golden: Golden  # fault-free codes of the stored layers (``golden[name]``)
    emulator: Emulator  # the fault-free emulator (its weightless kernels: ``Emulator._layer``)
    weights: dict[str, Weights] = field(default_factory=dict)  # the layer's arrays as the faulty image holds them
    clean: dict[str, Weights] = field(default_factory=dict)  # the fault-free arrays
    changed: dict[str, np.ndarray] = field(default_factory=dict)  # array -> changed words (logical flat index)
    chunk: int = 2048  # samples per kernel call where a kernel builds large temporaries
    more_inputs: tuple = ()  # the deltas of inputs[1:], for layers with several inputs (merges)
    crop: tuple[int, ...] | None = None  # a hint: only these leading spatial positions are read downstream
    # (a max pool moved first reads the windows it tiles); a rule may return blocks cut to them

    @property
    def input_name(self) -> str:
        return self.layer.inputs[0]

    @property
    def samples(self) -> int:
        return self.golden.samples


class Rule(Protocol):
    """A layer kind's full kernel and delta rule."""

    def full(self, step: Step, x: np.ndarray, weights: dict[str, Weights]) -> np.ndarray:
        """The layer's output codes for input codes ``x`` (any samples), with ``weights``."""
        ...

    def delta(self, step: Step) -> Delta:
        """Exactly the output codes that differ from the fault-free run (a superset is allowed:
        the engine trims blocks against the fault-free codes where it keeps them)."""
        ...

    def needs_input(self, layer: LayerSpec) -> bool:
        """Whether ``delta`` reads the fault-free input codes (so the golden pass must keep them)."""
        ...


RULES: dict[Kind, Rule] = {}


def register_rule(kind: Kind, rule: Rule) -> Rule:
    """Add ``rule`` for ``kind``; a kind has one rule only."""
    if kind in RULES:
        msg = f"a delta rule for {kind.value} layers is already registered ({type(RULES[kind]).__name__})"
        raise EmulatorError(msg)
    RULES[kind] = rule
    return rule


def rule_for(layer: LayerSpec) -> Rule:
    """The rule of ``layer``'s kind, or the exact fallback (``fallback.Recompute``) for a kind without one."""
    rule = RULES.get(layer.kind)
    if rule is not None:
        return rule
    if layer.kind is Kind.INPUT:
        msg = (f"layer {layer.name} ({layer.kind.value}) has no delta rule in hwflow.campaign.delta: the input "
               "is never recomputed (a trial starts at its first faulty layer)")
        raise UnsupportedLayerError(msg)
    return FALLBACK
