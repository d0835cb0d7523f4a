"""The list of trials a campaign runs, each with its own seed derived from the master seed.

A trial's seed depends on the master seed and the trial's key *without* the variant: trial ``k``
at a given fault model and rate faults the same bits in every variant whose weight memory has the
same shape (a paired comparison: less noise between variants). The seed is recorded with the
result, and ``np.random.default_rng(seed)`` alone resamples the trial's FaultMap.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from hwflow.campaign.spec import CampaignSpec, FaultSpec
from hwflow.results import TrialKey


@dataclass(frozen=True)
class Trial:
    """One trial to run: its key, its seed, and the fault model spec (with its restriction)."""

    key: TrialKey
    seed: int
    fault: dict  # fault model fields (without rate), restriction included


def trial_seed(master: int, key: TrialKey) -> int:
    """A 63-bit seed from the master seed and the key (variant excluded; see the module docstring)."""
    label = repr((key.study, key.fault_model, key.target_layer, key.target_bit, float(key.rate)))
    seq = np.random.SeedSequence(entropy=master, spawn_key=(zlib.crc32(label.encode()), key.trial))
    lo, hi = (int(v) for v in seq.generate_state(2, dtype=np.uint32))
    return ((hi << 32) | lo) & ((1 << 63) - 1)


def fault_label(fault: dict) -> str:
    """A fault model's label in results: its fields, restriction excluded (that has its own columns)."""
    body = {k: v for k, v in fault.items() if k not in ("layers", "bits")}
    name = body.pop("model", "?")
    rest = ",".join(f"{k}={body[k]}" for k in sorted(body))
    label = f"{name}({rest})" if rest else name
    if "layers" in fault or "bits" in fault:
        parts = [f"{k}={fault[k]}" for k in ("layers", "bits") if k in fault]
        label += "[" + " ".join(parts) + "]"
    return label


def sweep_trial(master: int, variant: str, fault: FaultSpec, rate: float, index: int) -> Trial:
    """Trial ``index`` of a rate sweep point (the same whether the spec's trials or a precision target asked for it)."""
    key = TrialKey(variant, "sweep", fault_label(fault.spec), "", -1, float(rate), index)
    return Trial(key, trial_seed(master, key), dict(fault.spec))


def plan(spec: CampaignSpec, variant: str, widths: dict[str, int]) -> list[Trial]:
    """Every trial of one variant: the rate sweeps, then the sensitivity studies (a precision target's extra
    trials come later, from ``hwflow.campaign.precision``).

    ``widths`` maps each layer holding weight memory to its widest stored word, in image order.
    """
    layers = list(widths)
    max_width = max(widths.values(), default=0)
    trials = []
    for fault in spec.faults:
        for rate in fault.rates:
            trials += [sweep_trial(spec.seed, variant, fault, rate, t) for t in range(fault.trials)]
    sens = spec.sensitivity
    if sens is not None and spec.faults:
        base = {k: v for k, v in spec.faults[0].spec.items() if k not in ("layers", "bits")}
        label = fault_label(base)
        targets = []
        if "layer" in sens.studies:
            targets += [("layer", layer, -1) for layer in layers]
        if "bit" in sens.studies:
            targets += [("bit", "", b) for b in range(max_width)]
        if "layer-bit" in sens.studies:
            targets += [("layer-bit", layer, b) for layer in layers for b in range(widths[layer])]
        for study, layer, bit in targets:
            fault = dict(base)
            if layer:
                fault["layers"] = [layer]
            if bit >= 0:
                fault["bits"] = [bit]
            for t in range(sens.trials):
                key = TrialKey(variant, study, label, layer, bit, float(sens.rate), t)
                trials.append(Trial(key, trial_seed(spec.seed, key), fault))
    return trials
