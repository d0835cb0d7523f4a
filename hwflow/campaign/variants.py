"""From a campaign's model entries to what the engine runs: a Program and a WeightImage per variant.

Zoo models are trained on first use and cached (``models_dir``); model files are loaded and
checked. Conversion goes through hls4ml, so each variant is emulated exactly as it would be built.
Hardening variants other than ``baseline`` arrive with the hardening work.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hwflow.campaign.spec import CampaignSpec, ModelSpec
from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls
from hwflow.emulator import Program
from hwflow.errors import SpecError
from hwflow.image import WeightImage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    label: str  # "<model>/<variant>"
    program: Program
    image: WeightImage

    def widths(self) -> dict[str, int]:
        """Widest stored word of each layer holding weight memory, in image order."""
        out: dict[str, int] = {}
        for arr in self.image:
            out[arr.layer] = max(out.get(arr.layer, 0), arr.format.width)
        return out


def load_keras_model(spec: CampaignSpec, model: ModelSpec, progress: bool = False):
    """The Keras model of an entry: trained (or reused from the cache) for zoo names, loaded for files."""
    if model.zoo is not None:
        from hwflow.zoo.train import TrainConfig, load_or_train

        cfg = TrainConfig(model.zoo, dataset=None, weight_bits=model.weight_bits, act_bits=model.act_bits,
                          weight_integer=model.weight_integer, seed=model.train_seed,
                          out=spec.resolve(spec.models_dir) / (
                              f"{model.zoo}-w{model.weight_bits}i{model.weight_integer}a{model.act_bits}"
                              f"-s{model.train_seed}.h5"),
                          data_root=spec.data_root)
        return load_or_train(cfg, progress=progress).model
    from hwflow.zoo.loading import check_supported, load_model

    path = spec.resolve(model.path)
    if not path.is_file():
        msg = f"{spec.source}: models: {model.name}: model file {path} not found"
        raise SpecError(msg)
    keras_model = load_model(path)
    check_supported(keras_model)
    return keras_model


def build_variants(spec: CampaignSpec, progress: bool = False) -> list[Variant]:
    """Every (model, variant) of the campaign, converted and read back from hls4ml."""
    variants = []
    options = HlsOptions.make(spec.io)
    for model in spec.models:
        keras_model = load_keras_model(spec, model, progress)
        with tempfile.TemporaryDirectory(prefix="hwflow-campaign-") as tmp:
            hls_model = convert(keras_model, options, Path(tmp) / model.name)
            program = program_from_hls(hls_model, source={"model": model.name})
            image = image_from_hls(hls_model)
        for name in model.variants:
            variants.append(Variant(f"{model.name}/{name}", program, image))
    return variants
