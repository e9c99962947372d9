"""Data sets the project generates itself (no download)."""

from .synthetic import CLASSES, SyntheticConfig, generate_sample, write_dataset

__all__ = ["CLASSES", "SyntheticConfig", "generate_sample", "write_dataset"]
