"""Deploy and pull: pack a build and a campaign into a bundle the board runs; merge its results back.

- ``bundle.pack``: ``hwflow deploy build/ --campaign SPEC.yaml --out bundle.tar.gz``;
- ``pull.pull``: ``hwflow pull results.sqlite --into campaign.sqlite``, after which ``hwflow report``
  compares the board with the emulator trial by trial.
"""

from hwflow.deploy.bundle import PackResult, pack, unpack
from hwflow.deploy.pull import PullResult, pull

__all__ = ["PackResult", "PullResult", "pack", "pull", "unpack"]
