"""Dataset loaders: one module per dataset, registered by name in `DATASETS`."""

from .base import DATASETS, Loader

__all__ = ["DATASETS", "Loader"]
