"""Delta propagation: a trial carries only the codes that a fault changed, layer by layer.

- ``state``: the :class:`Block` lists a trial carries (changed samples x channels, dense inside);
- ``registry``: the rule table (one :class:`Rule` per layer kind) and how to add a kind;
- ``golden``: the fault-free run, kept compact, that the deltas are relative to;
- ``mac``, ``channelwise``, ``reshape``, ``merge``: the rules of today's layer kinds;
- ``depthwise``: depthwise convolutions, per channel (the changed channels recomputed);
- ``fallback``: the exact rule of every kind without its own (recompute the affected samples);
- ``hoist``: max pooling moved before the monotone per-channel layers in front of it (exact), and
  such a chain folded into the emulator's step function;
- ``chain``: runs of per-channel layers without a pool (batch norm, ReLU, FT-ClipAct, read only by the
  next layer) folded into one step function, as residual networks have them;
- ``int_kernels``: the compiled integer kernels of folded runs and merges (each with its numpy
  reference); ``compiled``, ``convsum``: the convolution rule's compiled sums.

Importing the package registers every rule.
"""

from hwflow.campaign.delta import (  # noqa: F401 - registers the rules
    activations,  # noqa: F401 - activation rules (PReLU, parametrized, hard)
    channelwise,
    clipact,
    depthwise,
    mac,
    merge,
    pooling,  # noqa: F401 - cropping and resize rules
    reshape,
)
from hwflow.campaign.delta.golden import Golden
from hwflow.campaign.delta.quantizers import PerChannel  # noqa: F401 - registers ApplyAlpha, binary/ternary thresholds
from hwflow.campaign.delta.registry import RULES, Rule, Step, register_rule, rule_for
from hwflow.campaign.delta.state import Block, Delta

__all__ = ["RULES", "Block", "Delta", "Golden", "Rule", "Step", "register_rule", "rule_for"]
