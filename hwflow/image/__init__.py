"""The WeightImage: stored weight words, their formats and scales, and the address map."""

from hwflow.image.formats import Kind, Scale, StorageFormat
from hwflow.image.plan import StoragePlan
from hwflow.image.weight_image import StoredArray, WeightImage

__all__ = ["Kind", "Scale", "StorageFormat", "StoragePlan", "StoredArray", "WeightImage"]
