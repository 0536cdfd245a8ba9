from . import dataset, patches
from .dataset import SPLITS, Dataset, PrepareReport, Sample, find_raw_files, prepare
from .patches import sample_patches, validation_patches

__all__ = [
    "Dataset",
    "PrepareReport",
    "SPLITS",
    "Sample",
    "dataset",
    "find_raw_files",
    "patches",
    "prepare",
    "sample_patches",
    "validation_patches",
]
