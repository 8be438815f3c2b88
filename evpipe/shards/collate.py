"""Batching records for training code: `collate_for(encoding)` picks one per encoding.

- `svc`: `SparseVoxelCollate` -> coords int32 [sum M, 4] (b, z, y, x), feats float32
  [sum M, C] for spconv.
- `event_cloud`: `EventCloudCollate` -> one item per window: points float32 [B', N, 3],
  groups float32 [B', M, K, C] (B' = windows in the B records).
- `frames`: `StackCollate(time_first)` -> frames [n_bins, B, 2, H, W] (stored dtype,
  uint16 by default); `poisson`: the same -> spikes uint8 [T, B, C, H, W].
- `voxel_grid`: `StackCollate` -> voxel_grid float32 [B, n_bins, H, W];
  `stacked_histogram`: -> uint8 [B, 2*n_bins, H, W] (channel-stacked, as RVT takes it).
- `time_surface`: `PadCollate(time_first)` -> time_surface float32 [K_max, B, 2, H, W]
  zero-padded, with lengths and mask.
- `events`: `PadCollate` -> events int64 [B, N_max, 4] (t, x, y, p) zero-padded, with
  lengths and mask (tonic's `PadTensors` layout).
- anything else: `collate_records`.

Fields an encoding does not name (id, label, boxes...) are batched as `collate_records`
does: integer numbers -> int64 tensors (`label` -> LongTensor [B]), other numbers ->
tensors, equal-shape arrays -> stacked tensors, ragged arrays -> lists of tensors,
structured arrays -> their fields as columns, strings -> lists. Dense outputs keep the
stored dtype (uint8/uint16 counts move to a GPU cheaper than float32; `.float()` there).
Every collate is a module-level function or a class with plain attributes, so it
pickles into DataLoader workers under fork and spawn.
"""

from __future__ import annotations

import numpy as np
import torch


def _fill(dst: np.ndarray, a: np.ndarray) -> None:
    """dst[...] = a, a structured array's fields going to the last axis of `dst`."""
    if a.dtype.names is None:
        dst[...] = a
        return
    for j, name in enumerate(a.dtype.names):
        dst[..., j] = a[name]


def _columns(a: np.ndarray) -> np.ndarray:
    """A structured array [N] as its fields in order, [N, F] of their common type
    (EVENT_DTYPE -> int64 (t, x, y, p)); other arrays unchanged."""
    if a.dtype.names is None:
        return a
    out = np.empty((*a.shape, len(a.dtype.names)), _column_dtype(a.dtype))
    _fill(out, a)
    return out


def _column_dtype(dtype: np.dtype) -> np.dtype:
    return np.result_type(*(dtype[n] for n in dtype.names))


def _field_batch(values: list):
    first = values[0]
    if isinstance(first, str):
        return list(values)
    if isinstance(first, (int, float, bool, np.integer, np.floating, np.bool_)):
        a = np.array(values)
        return torch.from_numpy(a.astype(np.int64) if a.dtype.kind in "iu" else a)
    arrays = [_columns(np.asarray(v)) for v in values]
    if all(a.shape == arrays[0].shape for a in arrays):
        return torch.from_numpy(np.stack(arrays))
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]


def collate_records(records: list[dict]) -> dict:
    """Generic collate: equal-shape arrays and numbers are stacked into tensors (integers
    as int64), ragged arrays become lists of tensors, structured arrays their fields as
    columns [..., F], strings lists of strings."""
    return {k: _field_batch([r[k] for r in records]) for k in records[0]}


def _rest(records: list[dict], names) -> dict:
    """`collate_records` of the fields not in `names`."""
    return collate_records([{k: v for k, v in r.items() if k not in names} for r in records])


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


class StackCollate:
    """Stack the fixed-shape `field` of B records, keeping its dtype.

    Records [T, ...] become [B, T, ...], or with `time_first` [T, B, ...]: the layout of
    multi-step SNNs (SpikingJelly `step_mode="m"`, snnTorch loops over x[t]). Other fields
    as `collate_records`.
    """

    def __init__(self, field: str, time_first: bool = False):
        self.field = field
        self.time_first = bool(time_first)

    def __call__(self, records: list[dict]) -> dict:
        out = _rest(records, (self.field,))
        if self.field in records[0]:
            arrays = [np.asarray(r[self.field]) for r in records]
            out[self.field] = torch.from_numpy(np.stack(arrays, axis=int(self.time_first)))
        return out


class PadCollate:
    """Zero-pad the field ragged along its first axis (lengths L_i) to L = max L_i.

    `field` [B, L, ...] (with `time_first` [L, B, ...]), `<field>_lengths` int64 [B] and
    `<field>_mask` bool [B, L] ([L, B]), true on real rows (tonic's `PadTensors` pads the
    same way, batch-first or time-first). Structured arrays (raw events) become their fields as
    columns of the common type: EVENT_DTYPE [N] -> int64 [.., 4] (t, x, y, p). Other
    fields as `collate_records`.
    """

    def __init__(self, field: str, time_first: bool = False):
        self.field = field
        self.time_first = bool(time_first)

    def __call__(self, records: list[dict]) -> dict:
        out = _rest(records, (self.field,))
        if self.field not in records[0]:
            return out
        arrays = [np.asarray(r[self.field]) for r in records]
        first = arrays[0]
        dtype, tail = first.dtype, first.shape[1:]
        if dtype.names is not None:
            dtype, tail = _column_dtype(dtype), (*tail, len(dtype.names))
        lengths = np.array([len(a) for a in arrays], np.int64)
        n, b = int(lengths.max(initial=0)), len(arrays)
        padded = np.zeros((n, b, *tail) if self.time_first else (b, n, *tail), dtype)
        for i, a in enumerate(arrays):
            _fill(padded[:len(a), i] if self.time_first else padded[i, :len(a)], a)
        mask = np.arange(n)[None, :] < lengths[:, None]
        if self.time_first:
            mask = np.ascontiguousarray(mask.T)
        out[self.field] = torch.from_numpy(padded)
        out[f"{self.field}_lengths"] = torch.from_numpy(lengths)
        out[f"{self.field}_mask"] = torch.from_numpy(mask)
        return out


class EventCloudCollate:
    """Flatten the W windows of each `event_cloud` record into the batch: one item per
    window, so a batch of B records holds B' = sum W_i items (W_i may be 0).

    `points` float32 [B', N, 3], `windows` int64 [B', 2] (us), `groups` float32
    [B', M, K, C] and `centroids` float32 [B', M, 3] when stored; `sample` int64 [B']: the
    record (0..B-1) each item comes from; every other field repeated per item (`id` list
    [B'], `label` int64 [B']), so each window is trained on with its recording's label as
    SpikePoint/EventMamba do. Pick `batch_size` in records knowing B' ~ B * mean W.
    """

    WINDOW_FIELDS = ("points", "groups", "centroids", "windows")

    def __call__(self, records: list[dict]) -> dict:
        present = [k for k in self.WINDOW_FIELDS if k in records[0]]
        out = _rest(records, present)
        if not present:
            return out
        counts = [len(r[present[0]]) for r in records]
        sample = torch.from_numpy(np.repeat(np.arange(len(records), dtype=np.int64), counts))
        for k, v in out.items():
            out[k] = (v[sample] if isinstance(v, torch.Tensor)
                      else [v[i] for i in sample.tolist()])
        for k in present:
            out[k] = torch.from_numpy(np.concatenate([np.asarray(r[k]) for r in records]))
        out["sample"] = sample
        return out


# Encodings whose one dense field is stacked: name -> (field, time_first).
_STACKED = {"frames": ("frames", True), "poisson": ("spikes", True),
            "voxel_grid": ("voxel_grid", False), "stacked_histogram": ("stacked_histogram", False)}
_PADDED = {"time_surface": ("time_surface", True), "events": ("events", False)}


def collate_for(encoding: dict):
    """Collate function for a manifest's `encoding` entry (table in the module docstring)."""
    params = encoding.get("params", {}) if encoding else {}
    name = encoding.get("name") if encoding else None
    if name == "svc":
        feature = "spikes" if params.get("store") == "spikes" else "feats"
        return SparseVoxelCollate(params["spatial_shape"], feature)
    if name == "event_cloud":
        return EventCloudCollate()
    if name in _STACKED:
        return StackCollate(*_STACKED[name])
    if name in _PADDED:
        return PadCollate(*_PADDED[name])
    return collate_records
