"""An experiment: several campaigns (one per data set) run into one database, with the evidence table.

The hardening comparison needs Fashion-MNIST and digits, and a campaign evaluates one data set;
so an experiment file lists campaigns, each a full campaign spec, with ``defaults`` merged into
each (rates, fault models, seed, hardening settings). Everything resumes: trained and hardened
models are cached, finished trials are not redone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from hwflow.campaign.spec import CampaignSpec, did_you_mean, parse_spec, read_yaml
from hwflow.errors import SpecError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Experiment:
    name: str
    campaigns: tuple[CampaignSpec, ...]
    source: str


@dataclass(frozen=True)
class ExperimentResult:
    db: Path
    reports: dict[str, Path]  # campaign -> report.html
    evidence_md: Path
    evidence_csv: Path
    trials_run: int
    trials_reused: int


def load_experiment(path: str | Path) -> Experiment:
    """Read and check an experiment file (every campaign checked before anything runs)."""
    path = Path(path)
    data = read_yaml(path, "experiment file")
    if not isinstance(data, dict):
        msg = f"{path}: an experiment is a mapping with 'name', 'defaults' and 'campaigns'"
        raise SpecError(msg)
    unknown = sorted(map(str, set(data) - {"name", "defaults", "campaigns"}))
    if unknown:
        hint = did_you_mean(unknown[0], ("name", "defaults", "campaigns"))
        msg = f"{path}: {unknown[0]}: unknown field{hint} (known: name, defaults, campaigns)"
        raise SpecError(msg)
    name, defaults, campaigns = data.get("name"), data.get("defaults"), data.get("campaigns")
    defaults = {} if defaults is None else defaults
    if not isinstance(name, str) or not name:
        msg = f"{path}: name: missing (required): the experiment's name"
        raise SpecError(msg)
    if not isinstance(defaults, dict):
        msg = f"{path}: defaults: must be a mapping of campaign fields"
        raise SpecError(msg)
    if not isinstance(campaigns, list) or not campaigns:
        msg = f"{path}: campaigns: must be a non-empty list of campaign specs"
        raise SpecError(msg)
    specs = []
    for i, entry in enumerate(campaigns):
        if not isinstance(entry, dict):
            msg = f"{path}: campaigns[{i}]: must be a mapping (a campaign spec)"
            raise SpecError(msg)
        spec = parse_spec({**defaults, **entry}, str(path))
        specs.append(spec)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        msg = f"{path}: campaigns: two campaigns share a name ({', '.join(names)})"
        raise SpecError(msg)
    return Experiment(name, tuple(specs), str(path))


def run_experiment(experiment: Experiment, out_dir: str | Path, workers: int | None = None,
                   progress: bool = True) -> ExperimentResult:
    """Run (or resume) every campaign into ``out_dir/results.sqlite``; write reports and the evidence."""
    from hwflow.campaign import run_campaign
    from hwflow.campaign.variants import build_variants, check_data
    from hwflow.report import load_report_data, write_report
    from hwflow.report.evidence import write_evidence

    for spec in experiment.campaigns:  # every campaign's data against its models, before any training or trial
        check_data(spec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    db = out / "results.sqlite"
    ran = reused = 0
    reports = {}
    precision = []
    for spec in experiment.campaigns:
        log.info("experiment %s: campaign %s", experiment.name, spec.name)
        variants = build_variants(spec, progress=progress)
        result = run_campaign(spec, db, workers=workers, progress=progress, variants=variants)
        ran, reused = ran + result.ran, reused + result.skipped
        reports[spec.name] = write_report(db, out / spec.name, spec.name).html
        precision += [_precision_section(v) for v in variants if any(not a.scale.is_identity for a in v.image)]
    summaries = load_report_data(db).summaries
    md, csv_path = write_evidence(summaries, out)
    if precision:
        (out / "precision.md").write_text("# What the scaled storage gained\n\n" + "\n".join(precision),
                                          encoding="utf-8")
    return ExperimentResult(db, reports, md, csv_path, ran, reused)


def _precision_section(variant) -> str:
    """Per array of a scaled variant: bits of resolution gained, how many the weights use, headroom."""
    from hwflow.harden.scale import format_gain_table, precision_gain

    return f"## {variant.label}\n\n```\n{format_gain_table(precision_gain(variant.image))}\n```\n"
