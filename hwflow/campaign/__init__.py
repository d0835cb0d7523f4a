"""Fault campaigns: a YAML spec, a trial plan with derived seeds, the incremental engine, the runner."""

from hwflow.campaign.engine import Outcome, TrialEvaluator
from hwflow.campaign.runner import CampaignResult, run_campaign
from hwflow.campaign.spec import CampaignSpec, load_spec, parse_spec

__all__ = ["CampaignResult", "CampaignSpec", "Outcome", "TrialEvaluator", "load_spec", "parse_spec", "run_campaign"]
