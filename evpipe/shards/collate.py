"""Batching records for training code."""

from __future__ import annotations

import numpy as np
import torch


def _field_batch(values: list):
    first = values[0]
    if isinstance(first, str):
        return list(values)
    if isinstance(first, (int, float, bool, np.integer, np.floating, np.bool_)):
        return torch.as_tensor(np.array(values))
    arrays = [np.asarray(v) for v in values]
    if all(a.shape == arrays[0].shape for a in arrays):
        return torch.from_numpy(np.stack(arrays))
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]


def collate_records(records: list[dict]) -> dict:
    """Generic collate: equal-shape arrays and numbers are stacked into tensors, ragged
    arrays become lists of tensors, strings lists of strings."""
    return {k: _field_batch([r[k] for r in records]) for k in records[0]}


class SparseVoxelCollate:
    """Batch SVC records for spconv.

    Returns `coords` int32 [sum M, 4] (batch, z, y, x), `feats` float32 [sum M, C] (the
    record field named by `feature`: float means `feats` or integer `spikes`),
    `batch_size`, `spatial_shape` (Z, Y, X) and the other fields as `collate_records` does.
    """

    def __init__(self, spatial_shape, feature: str = "feats"):
        self.spatial_shape = [int(v) for v in spatial_shape]
        self.feature = feature

    def __call__(self, records: list[dict]) -> dict:
        coords = [np.asarray(r["coords"], np.int32) for r in records]
        batch_col = np.concatenate([np.full(len(c), b, np.int32) for b, c in enumerate(coords)])
        rest = collate_records([{k: v for k, v in r.items()
                                 if k not in ("coords", "feats", "spikes")} for r in records])
        rest.update(
            coords=torch.from_numpy(np.concatenate([batch_col[:, None], np.concatenate(coords)], 1)),
            feats=torch.from_numpy(np.concatenate(
                [np.asarray(r[self.feature], np.float32) for r in records])),
            batch_size=len(records), spatial_shape=list(self.spatial_shape))
        return rest


def to_sparse_tensor(batch: dict):
    """`spconv.pytorch.SparseConvTensor` from a `SparseVoxelCollate` batch."""
    import spconv.pytorch as spconv
    return spconv.SparseConvTensor(batch["feats"], batch["coords"], batch["spatial_shape"],
                                   batch["batch_size"])


def collate_for(encoding: dict):
    """Collate function for a manifest's `encoding` entry."""
    params = encoding.get("params", {}) if encoding else {}
    if encoding and encoding.get("name") == "svc":
        feature = "spikes" if params.get("store") == "spikes" else "feats"
        return SparseVoxelCollate(params["spatial_shape"], feature)
    return collate_records
