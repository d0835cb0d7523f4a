"""Data sets with fixed splits, so an accuracy measured today compares with one measured later.

See :mod:`hwflow.data.datasets` for the splits and why they are fixed.
"""

from hwflow.data.datasets import KNOWN_DATASETS, Dataset, canonical_name, load_dataset

__all__ = ["KNOWN_DATASETS", "Dataset", "canonical_name", "load_dataset"]
