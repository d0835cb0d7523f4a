"""A hardening recipe: which methods a variant stacks, parsed from a name like ``saq+clipact+scale``.

Campaign specs, ``hwflow experiment`` and result labels all name variants this way, so one parser
decides what a name means. The methods apply in a fixed order whatever the spelling: training
first (SAQ / sparse are training methods), then clipped activations (the thresholds are searched on
the trained network), then the storage (format and weight scaling, searched on the clipped network).
"""

from __future__ import annotations

from dataclasses import dataclass

from hwflow.errors import HardenError

TOKENS = {
    "baseline": "the model as trained, stored in its trained fixed-point type",
    "saq": "sharpness-aware quantization-aware training (FlatENN; SAM, rho 0.05 unless configured)",
    "sparse": "activation-sparse training (L1 activity penalty)",
    "clipact": "FT-ClipAct clipped activations, clip to zero, thresholds searched under faults",
    "clipact-saturate": "FT-ClipAct with values above the threshold saturated to it",
    "scale": "weight scaling by rule (largest power of two that fits the stored format)",
    "scale-search": "weight scaling, constants searched under faults on the validation split",
    "float16": "weights stored as float16 words (emulator study of the paper's float experiments)",
    "float32": "weights stored as float32 words (emulator study)",
    "all": "saq + clipact + scale",
}


@dataclass(frozen=True)
class Recipe:
    """What is done to a model to get one variant."""

    training: str = "standard"
    """Training method: ``standard``, ``saq``, ``sparse`` or ``sparse-saq``."""
    clip_mode: str | None = None
    """FT-ClipAct mode (``zero`` / ``saturate``), None: unclipped ReLUs."""
    scale: str | None = None
    """Weight scaling: ``rule`` or ``search``; None: unscaled."""
    storage: str = "fixed"
    """How weights are stored: ``fixed`` (the trained type), ``float16`` or ``float32``."""

    @classmethod
    def parse(cls, name: str) -> Recipe:
        """``"baseline"``, ``"scale"``, ``"saq+clipact+scale"``, ``"float16+scale"``, ``"all"``, ..."""
        tokens = [t.strip().lower() for t in str(name).split("+") if t.strip()]
        if not tokens:
            msg = "an empty variant name: use 'baseline' or methods joined by '+', e.g. 'saq+clipact+scale'"
            raise HardenError(msg)
        training, clip, scale, storage = set(), None, None, "fixed"
        for token in tokens:
            if token not in TOKENS:
                known = ", ".join(TOKENS)
                msg = f"unknown hardening method {token!r} in variant {name!r}; known: {known}"
                raise HardenError(msg)
            if token == "baseline":
                if len(tokens) > 1:
                    msg = f"variant {name!r}: 'baseline' cannot be combined with other methods"
                    raise HardenError(msg)
            elif token == "all":
                training.add("saq")
                clip = clip or "zero"
                scale = scale or "rule"
            elif token in ("saq", "sparse"):
                training.add(token)
            elif token.startswith("clipact"):
                mode = "saturate" if token.endswith("saturate") else "zero"
                if clip is not None and clip != mode:
                    msg = f"variant {name!r} asks for two clip modes"
                    raise HardenError(msg)
                clip = mode
            elif token.startswith("scale"):
                mode = "search" if token.endswith("search") else "rule"
                if scale is not None and scale != mode:
                    msg = f"variant {name!r} asks for two scaling modes"
                    raise HardenError(msg)
                scale = mode
            else:
                if storage != "fixed":
                    msg = f"variant {name!r} names two storage formats"
                    raise HardenError(msg)
                storage = token
        method = "sparse-saq" if training == {"saq", "sparse"} else (training.pop() if training else "standard")
        return cls(method, clip, scale, storage)

    @property
    def name(self) -> str:
        """The canonical spelling (what results are labelled with)."""
        parts = []
        if self.storage != "fixed":
            parts.append(self.storage)
        parts += {"standard": [], "saq": ["saq"], "sparse": ["sparse"], "sparse-saq": ["sparse", "saq"]}[
            self.training]
        if self.clip_mode:
            parts.append("clipact" if self.clip_mode == "zero" else "clipact-saturate")
        if self.scale:
            parts.append("scale" if self.scale == "rule" else "scale-search")
        return "+".join(parts) or "baseline"

    @property
    def methods(self) -> list[str]:
        """The hardening methods in the order they are applied (what the sidecar records)."""
        out = []
        if "saq" in self.training:
            out.append("saq")
        if self.clip_mode:
            out.append("clipact")
        if self.scale:
            out.append("scale")
        return out
