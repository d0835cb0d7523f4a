"""The campaign plan the board runs: the workstation's trial plan for one variant, with digests.

The host does not parse the campaign YAML (no PyYAML needed on the board): the workstation plans
the trials with ``hwflow.campaign.plan`` (the same keys and seeds as ``hwflow campaign``), and
samples each trial's FaultMap once to record its digest. The host samples it again from the seed
with the same fault-model code and refuses to go on if the digest differs (another numpy draws
differently), so a board trial and an emulator trial with the same key did see the same faults.
"""

from __future__ import annotations

import json

import numpy as np
from hwflow_host.campaign import CampaignPlan, HostTrial

from hwflow.campaign.plan import plan
from hwflow.campaign.spec import CampaignSpec
from hwflow.errors import DeployError
from hwflow.faults import fault_model_from_spec
from hwflow.image import WeightImage


def layer_widths(image: WeightImage) -> dict[str, int]:
    """Widest stored word of each layer, in image order (what ``Variant.widths`` gives the planner)."""
    out: dict[str, int] = {}
    for arr in image:
        out[arr.layer] = max(out.get(arr.layer, 0), arr.format.width)
    return out


def host_plan(spec: CampaignSpec, variant: str, image: WeightImage, samples: int,
              in_memory: set[str] | None = None, grown: list | None = None) -> CampaignPlan:
    """The trials of ``variant`` with their seeds, fault specs and FaultMap digests.

    ``in_memory``: the array keys the build holds in host-writable memory; a trial whose faults
    land elsewhere is refused here, not half-way through the campaign on the board. ``grown``: the
    trials a precision target added on the emulator (``runner.grown_trials``), run on the board too.
    """
    trials = []
    for t in plan(spec, variant, layer_widths(image)) + list(grown or ()):
        faultmap = fault_model_from_spec(t.fault, t.key.rate).sample(image, np.random.default_rng(t.seed))
        if in_memory is not None:
            outside = sorted(faultmap.keys_touched() - in_memory)
            if outside:
                k = t.key
                msg = (f"trial {k.fault_model} rate {k.rate:g} #{k.trial} puts faults in {', '.join(outside)}, which"
                       " the build does not hold in host-writable weight memory; restrict the campaign's faults "
                       f"(e.g. arrays: [weight]) or rebuild with those arrays in BRAM (in memory: "
                       f"{', '.join(sorted(in_memory))})")
                raise DeployError(msg)
        trials.append(HostTrial(t.key, t.seed, dict(t.fault), faultmap.digest()))
    spec_json = json.loads(json.dumps(spec.to_json()))  # as the board reads it back (lists, not tuples)
    return CampaignPlan(spec.name, spec_json, variant, samples, tuple(trials))
