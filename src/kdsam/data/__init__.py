"""Datasets: one adapter per on-disk layout, all yielding `Sample`s."""

from kdsam.data.dataset import Dataset, Record
from kdsam.data.registry import ADAPTERS, dataset_splits, open_dataset
from kdsam.data.sample import Sample

__all__ = ["ADAPTERS", "Dataset", "Record", "Sample", "dataset_splits", "open_dataset"]
