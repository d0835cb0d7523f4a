"""Faults on stored weight bits: fault models sample a FaultMap, the FaultMap corrupts a WeightImage.

Faults act on the words of a ``WeightImage`` as they sit in on-chip memory, so a scaled weight, a
``float16`` weight and a ``fixed<8,1>`` weight are each hit exactly as the hardware would hit them.

Seeding contract (what the campaign engine relies on):

- the campaign derives one integer seed per trial (``SeedSequence`` spawning) and calls
  ``model.sample(image, np.random.default_rng(seed))``; the seed is recorded with the trial;
- a sample depends only on the image's structure (array order, sizes, word widths — never the
  word values), the model's parameters and the generator: no global randomness, no dict or set
  iteration order, no clock;
- so the same seed gives the same FaultMap on a workstation and on the board's Python (3.10,
  numpy 1.x), as long as both numpy versions produce the same ``Generator`` streams for
  ``binomial``, ``choice(replace=False)`` and ``integers`` (numpy does not promise this across
  versions). ``FaultMap.digest()`` fingerprints a map: record it to catch a mismatch, and ship the
  map itself (``FaultMap.save``) when the two sides must agree by construction.
"""

from hwflow.faults.faultmap import FaultKind, FaultMap
from hwflow.faults.models import (
    FAULT_MODELS,
    BitFlip,
    Burst,
    Explicit,
    FaultModel,
    StuckAt,
    fault_model_from_spec,
    register_fault_model,
)
from hwflow.faults.target import Population, Target

__all__ = [
    "FAULT_MODELS",
    "BitFlip",
    "Burst",
    "Explicit",
    "FaultKind",
    "FaultMap",
    "FaultModel",
    "Population",
    "StuckAt",
    "Target",
    "fault_model_from_spec",
    "register_fault_model",
]
