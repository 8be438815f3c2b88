import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from evpipe.encoders import ENCODINGS, encode_record, manifest_params
from evpipe.events import EVENT_DTYPE, make_events
from evpipe.shards import ShardDataset, ShardSampler, ShardWriter, collate_for, collate_records
from evpipe.shards.collate import (EventCloudCollate, PadCollate, SparseVoxelCollate,
                                   StackCollate)

W, H = 32, 24
PARAMS = {
    "frames": {"n_bins": 3},
    "poisson": {"steps": 4},
    "voxel_grid": {"n_bins": 3},
    "stacked_histogram": {"n_bins": 2},
    "time_surface": {"dt_us": 2000, "tau_us": 1000.0},
    "event_cloud": {"window_us": 4000, "stride_us": 2000, "min_events": 10, "n_points": 16,
                    "n_groups": 4, "k": 3},
    "events": {},
    "svc": {"voxel_size": (1.0, 1.0, 1.0), "point_range": (0, 0, 0, 8, 6, 4)},
}
# Collate class and, for stacked/padded fields, (field, time_first).
EXPECTED = {"frames": (StackCollate, "frames", True), "poisson": (StackCollate, "spikes", True),
            "voxel_grid": (StackCollate, "voxel_grid", False),
            "stacked_histogram": (StackCollate, "stacked_histogram", False),
            "time_surface": (PadCollate, "time_surface", True),
            "events": (PadCollate, "events", False),
            "event_cloud": (EventCloudCollate, None, None), "svc": (SparseVoxelCollate, None, None)}


def make_set(name, n=5):
    """n records of `name` from the real encoder (record 0 is short: no event-cloud window
    and no complete time-surface slice), the manifest's encoding entry and fixed fields."""
    spec = ENCODINGS.get(name)
    params = spec.make(**PARAMS[name])
    records = []
    for i in range(n):
        rng = np.random.default_rng(i)
        m, span = (8, 1500) if i == 0 else (60 + 40 * i, 3000 + 2500 * i)
        if name == "svc":
            pts = (rng.random((m, 4)) * [8, 6, 4, 1]).astype(np.float32)
            raw = {"id": f"r{i}", "points": pts, "label": i % 3}
            records.append(encode_record(params, "points", raw))
            continue
        ev = make_events(np.sort(rng.integers(0, span, m)), rng.integers(0, W, m),
                         rng.integers(0, H, m), rng.integers(0, 2, m))
        raw = {"id": f"r{i}", "events": ev, "sensor_size": (W, H), "label": i % 3}
        records.append(encode_record(params, "events", raw))
    return records, {"name": name, "params": manifest_params(params)}, spec.fixed


def as_np(t):
    return t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def columns(a):
    a = np.asarray(a)
    if a.dtype.names is None:
        return a
    return np.stack([a[k].astype(np.int64) for k in a.dtype.names], -1)


def check_batch(name, batch, records):
    """Shapes, dtypes and values of a batch against its records."""
    kind, field, time_first = EXPECTED[name]
    b = len(records)
    if kind is StackCollate:
        want = np.stack([r[field] for r in records], axis=1 if time_first else 0)
        got = batch[field]
        assert got.dtype == torch.from_numpy(want).dtype and tuple(got.shape) == want.shape
        np.testing.assert_array_equal(as_np(got), want)
        if time_first:  # [T, B, C, H, W]: step t of sample i is record i's [t]
            assert got.ndim == 5 and got.shape[1] == b
        else:  # [B, C, H, W]
            assert got.ndim == 4 and got.shape[0] == b
    elif kind is PadCollate:
        lengths = [len(r[field]) for r in records]
        got, mask = as_np(batch[field]), as_np(batch[f"{field}_mask"])
        if time_first:
            got, mask = np.swapaxes(got, 0, 1), mask.T
        assert got.shape[:2] == (b, max(lengths)) and mask.dtype == bool
        assert batch[f"{field}_lengths"].dtype == torch.int64
        assert batch[f"{field}_lengths"].tolist() == lengths
        for i, r in enumerate(records):
            np.testing.assert_array_equal(got[i, :lengths[i]], columns(r[field]))
            assert not got[i, lengths[i]:].any()
            assert mask[i].tolist() == [j < lengths[i] for j in range(got.shape[1])]
        if field == "events":
            assert batch["events"].dtype == torch.int64 and got.shape[2] == 4
        else:
            assert batch[field].dtype == torch.float32 and got.shape[2:] == (2, H, W)
    elif kind is EventCloudCollate:
        counts = [len(r["points"]) for r in records]
        assert batch["sample"].tolist() == np.repeat(np.arange(b), counts).tolist()
        for k, dtype in (("points", torch.float32), ("groups", torch.float32),
                         ("centroids", torch.float32), ("windows", torch.int64)):
            assert batch[k].dtype == dtype
            np.testing.assert_array_equal(as_np(batch[k]),
                                          np.concatenate([r[k] for r in records]))
        assert batch["points"].shape[1:] == (16, 3) and batch["groups"].shape[1:3] == (4, 3)
        assert batch["id"] == [r["id"] for r, c in zip(records, counts) for _ in range(c)]
        assert batch["label"].tolist() == [r["label"] for r, c in zip(records, counts)
                                           for _ in range(c)]
    else:
        coords = np.concatenate([np.c_[np.full(len(r["coords"]), i), r["coords"]]
                                 for i, r in enumerate(records)])
        np.testing.assert_array_equal(as_np(batch["coords"]), coords)
        assert batch["batch_size"] == b and batch["spatial_shape"] == [4, 6, 8]
    if kind is not EventCloudCollate:
        assert batch["id"] == [r["id"] for r in records]
        assert batch["label"].dtype == torch.int64
        assert batch["label"].tolist() == [r["label"] for r in records]


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_collate_for_each_encoding(name):
    records, encoding, _ = make_set(name)
    collate = collate_for(encoding)
    kind, field, time_first = EXPECTED[name]
    assert type(collate) is kind
    if field is not None:
        assert (collate.field, collate.time_first) == (field, time_first)
    check_batch(name, collate(records), records)
    check_batch(name, collate(records[2:]), records[2:])
    again = pickle.loads(pickle.dumps(collate))
    check_batch(name, again(records), records)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_dataloader_two_workers(tmp_path, name):
    records, encoding, fixed = make_set(name, n=7)
    with ShardWriter(tmp_path / "s", dataset="toy", split="train", encoding=encoding,
                     key="k", samples_per_shard=3, fixed=fixed) as w:
        for r in records:
            w.add(r)
    ds = ShardDataset(tmp_path / "s")
    sampler = ShardSampler(ds, 1, 0, seed=2)
    order = list(sampler)
    loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=2,
                        collate_fn=ds.collate_fn())
    batches = list(loader)
    assert len(batches) == 4
    for k, batch in enumerate(batches):  # in the sampler's order, whichever worker built it
        check_batch(name, batch, [records[i] for i in order[2 * k:2 * k + 2]])


def test_event_cloud_batch_without_windows():
    records, encoding, _ = make_set("event_cloud", n=1)
    assert len(records[0]["points"]) == 0
    batch = collate_for(encoding)(records + records)
    assert batch["points"].shape == (0, 16, 3) and batch["groups"].shape == (0, 4, 3, 6)
    assert batch["label"].dtype == torch.int64 and batch["label"].shape == (0,)
    assert batch["id"] == [] and batch["sample"].shape == (0,)


def test_event_cloud_without_groups():
    ev = make_events(np.arange(0, 9000, 30), np.arange(300) % W, np.arange(300) % H,
                     np.arange(300) % 2)
    params = ENCODINGS.get("event_cloud").make(window_us=4000, stride_us=4000, min_events=10,
                                               n_points=8, n_groups=0, k=1)
    rec = encode_record(params, "events", {"id": "a", "events": ev, "sensor_size": (W, H),
                                           "label": np.int8(4)})
    batch = EventCloudCollate()([rec])
    assert "groups" not in batch and batch["points"].shape == (2, 8, 3)
    assert batch["label"].tolist() == [4, 4] and batch["label"].dtype == torch.int64


def test_collate_records_generic():
    ev = np.zeros(3, EVENT_DTYPE)
    ev["t"] = [1, 2, 2**40]
    ev["x"] = 65535
    records = [{"id": "a", "label": np.int8(3), "score": 0.5, "flag": True, "name": "x",
                "ragged": np.arange(3, dtype=np.float32), "events": ev},
               {"id": "b", "label": np.int8(-1), "score": 1.5, "flag": False, "name": "y",
                "ragged": np.arange(5, dtype=np.float32), "events": ev[:2]}]
    batch = collate_records(records)
    assert batch["label"].dtype == torch.int64 and batch["label"].tolist() == [3, -1]
    assert batch["score"].dtype == torch.float64 and batch["flag"].dtype == torch.bool
    assert batch["name"] == ["x", "y"] and batch["id"] == ["a", "b"]
    assert [t.shape for t in batch["ragged"]] == [(3,), (5,)]
    assert batch["events"][0].dtype == torch.int64
    assert batch["events"][0].tolist() == [[1, 65535, 0, 0], [2, 65535, 0, 0],
                                           [2**40, 65535, 0, 0]]


def test_fields_left_out_are_tolerated():
    records, encoding, _ = make_set("frames", n=2)
    labels_only = [{"id": r["id"], "label": r["label"]} for r in records]
    for name in ("frames", "time_surface", "event_cloud"):
        batch = collate_for({"name": name, "params": {}})(labels_only)
        assert set(batch) == {"id", "label"}
