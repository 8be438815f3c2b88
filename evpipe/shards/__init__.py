"""HDF5 shard sets (format v1): writer, torch dataset, sampler and collate functions.

The torch-facing names are imported on first use, so writing shards (conversion
workers) does not pay for importing torch.
"""

import importlib

from .format import ShardFile
from .writer import ShardWriter, read_manifest, sha256_file

_LAZY = {"ShardDataset": "dataset", "ShardSampler": "sampler",
         "SparseVoxelCollate": "collate", "StackCollate": "collate", "PadCollate": "collate",
         "EventCloudCollate": "collate", "collate_for": "collate",
         "collate_records": "collate", "to_sparse_tensor": "collate"}

__all__ = ["ShardFile", "ShardWriter", "read_manifest", "sha256_file", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
