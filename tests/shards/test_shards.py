import json

import h5py
import hdf5plugin  # noqa: F401  (codec for plain h5py reads)
import numpy as np
import pytest
import spconv.pytorch as spconv
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from evpipe.errors import ShardError
from evpipe.events import EVENT_DTYPE, make_events
from evpipe.shards import (ShardDataset, ShardSampler, ShardWriter, SparseVoxelCollate,
                           read_manifest, sha256_file, to_sparse_tensor)


def make_records(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        m = int(rng.integers(0, 50))
        out.append({"id": f"s{i:04d}", "coords": rng.integers(0, 30, (m, 3)).astype(np.int32),
                    "feats": rng.normal(size=(m, 4)).astype(np.float32),
                    "frame": rng.integers(0, 9, (2, 3, 4)).astype(np.uint8),
                    "label": int(rng.integers(0, 5)), "score": float(rng.normal()),
                    "name": f"obj-{i}", "events": make_events(
                        np.cumsum(rng.integers(0, 9, m)), rng.integers(0, 64, m),
                        rng.integers(0, 48, m), rng.integers(0, 2, m))})
    return out


def assert_record_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert a[k].dtype == np.asarray(b[k]).dtype, k
            np.testing.assert_array_equal(a[k], b[k])
        else:
            assert a[k] == b[k], k


def write_set(path, records, per=4, key="k1"):
    with ShardWriter(path, dataset="toy", split="train", encoding={"name": "toy", "params": {}},
                     key=key, samples_per_shard=per, fixed=("frame",)) as w:
        for r in records:
            w.add(r)
    return read_manifest(path)


def test_round_trip_every_field(tmp_path):
    recs = make_records(11)
    m = write_set(tmp_path / "s", recs)
    assert m["complete"] and m["total_samples"] == 11
    assert [s["samples"] for s in m["shards"]] == [4, 4, 3]
    assert m["schema"]["frame"]["kind"] == "fixed" and m["schema"]["coords"]["kind"] == "ragged"
    assert m["schema"]["events"]["dtype"] == [list(f) for f in EVENT_DTYPE.descr]
    ds = ShardDataset(tmp_path / "s")
    assert len(ds) == 11 and ds.shard_sizes == [4, 4, 3]
    for i, r in enumerate(recs):
        assert_record_equal(ds[i], r)
    assert_record_equal(ds[-1], recs[-1])
    with pytest.raises(IndexError):
        ds[11]
    for s in m["shards"]:
        assert sha256_file(tmp_path / "s" / s["file"]) == s["sha256"]
        assert (tmp_path / "s" / s["file"]).stat().st_size == s["bytes"]
    # A single shard file is self-describing and readable with plain h5py.
    single = ShardDataset(tmp_path / "s" / "shard-00001.h5")
    assert_record_equal(single[0], recs[4])
    with h5py.File(tmp_path / "s" / "shard-00000.h5", "r") as f:
        idx = f["index/coords"][:]
        np.testing.assert_array_equal(f["data/coords"][idx[1]:idx[2]], recs[1]["coords"])
        assert f["data/frame"].shape == (4, 2, 3, 4)
        assert json.loads(f.attrs["encoding"]) == {"name": "toy", "params": {}}


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 9), st.integers(1, 5), st.integers(0, 2**31))
def test_round_trip_property(tmp_path_factory, n, per, seed):
    path = tmp_path_factory.mktemp("p") / "s"
    recs = make_records(n, seed)
    write_set(path, recs, per)
    ds = ShardDataset(path)
    assert len(ds) == n
    for i, r in enumerate(recs):
        assert_record_equal(ds[i], r)


def test_same_records_same_bytes(tmp_path):
    recs = make_records(6)
    a = write_set(tmp_path / "a", recs)
    b = write_set(tmp_path / "b", recs)
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]


def test_other_key_refused_nothing_overwritten(tmp_path):
    write_set(tmp_path / "s", make_records(5))
    before = sha256_file(tmp_path / "s" / "shard-00000.h5")
    with pytest.raises(ShardError, match="refusing to mix"):
        write_set(tmp_path / "s", make_records(5, seed=1), key="k2")
    assert sha256_file(tmp_path / "s" / "shard-00000.h5") == before
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(ShardError, match="not empty"):
        write_set(tmp_path / "junk", make_records(2))


def test_incomplete_set_refused_and_resumed(tmp_path):
    recs = make_records(10)
    w = ShardWriter(tmp_path / "s", dataset="toy", split="train", encoding={"name": "toy"},
                    key="k", samples_per_shard=4, fixed=("frame",))
    w.write_shard(recs[:4], (0, 4))
    w.write_shard(recs[4:8], (4, 8))
    (tmp_path / "s" / "shard-00002.h5.tmp").write_bytes(b"partial")
    del w
    with pytest.raises(ShardError, match="incomplete"):
        ShardDataset(tmp_path / "s")
    assert len(ShardDataset(tmp_path / "s", allow_incomplete=True)) == 8
    # Corrupt the second shard: a reopen keeps only the first one.
    p = tmp_path / "s" / "shard-00001.h5"
    data = bytearray(p.read_bytes())
    data[-100] ^= 0xFF
    p.write_bytes(bytes(data))
    w = ShardWriter(tmp_path / "s", dataset="toy", split="train", encoding={"name": "toy"},
                    key="k", samples_per_shard=4, fixed=("frame",))
    assert w.done_sources == 4 and not p.exists()
    assert not (tmp_path / "s" / "shard-00002.h5.tmp").exists()
    w.write_shard(recs[4:8], (4, 8))
    with pytest.raises(ShardError, match="out of order .expected shard 2 at 8"):
        w.write_shard(recs[9:], (9, 10))
    w.write_shard(recs[8:], (8, 10))
    w.close()
    ds = ShardDataset(tmp_path / "s")
    for i, r in enumerate(recs):
        assert_record_equal(ds[i], r)


def test_schema_mismatch_is_shard_error(tmp_path):
    recs = make_records(3)
    recs[2]["feats"] = recs[2]["feats"].astype(np.float64)
    with pytest.raises(ShardError, match="feats"):
        write_set(tmp_path / "s", recs, per=8)
    assert not list((tmp_path / "s").glob("shard-*"))


def test_failed_background_write_is_raised_and_the_file_removed(tmp_path, monkeypatch):
    """A write failing in the shard writer's thread surfaces in the producer (at a later
    flush or at close), and the unfinished file goes."""
    from evpipe.shards import format as fmt
    monkeypatch.setattr(fmt, "FLUSH_BYTES", 1)  # one batch per record
    calls = []
    real = fmt.ShardFileWriter._append_data

    def failing(self, path, data):
        calls.append(path)
        if len(calls) > 3:
            raise OSError(28, "No space left on device")
        real(self, path, data)
    monkeypatch.setattr(fmt.ShardFileWriter, "_append_data", failing)
    with pytest.raises(OSError, match="No space left"):
        write_set(tmp_path / "s", make_records(20), per=20)
    assert not list((tmp_path / "s").glob("shard-*"))


@pytest.mark.parametrize("shards", [[7], [5, 5, 5], [3, 1, 4, 1, 5, 9, 2, 6]])
@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_sampler_each_sample_once(shards, replicas):
    class Fake:
        shard_sizes = shards
    n = sum(shards)
    orders = []
    for epoch in range(2):
        seen = []
        for rank in range(replicas):
            s = ShardSampler(Fake(), num_replicas=replicas, rank=rank, seed=3)
            s.set_epoch(epoch)
            part = list(s)
            assert len(part) == len(s)
            seen += part
        assert sorted(seen) == list(range(n))
        orders.append(seen)
    if n > 3:
        assert orders[0] != orders[1]
    # Same (seed, epoch) -> same order; drop_last evens the ranks out.
    again = ShardSampler(Fake(), num_replicas=replicas, rank=0, seed=3)
    again.set_epoch(1)
    assert list(again) == orders[1][:len(again)]
    lens = {len(ShardSampler(Fake(), replicas, r, drop_last=True)) for r in range(replicas)}
    assert lens == {n // replicas}


def test_sampler_reads_are_shard_local():
    class Fake:
        shard_sizes = [10] * 10
    s = ShardSampler(Fake(), num_replicas=4, rank=1, seed=0)
    shards = [i // 10 for i in s]
    assert len(set(shards)) <= 4  # 25 samples touch at most 4 shards
    runs = 1 + sum(a != b for a, b in zip(shards, shards[1:]))
    assert runs == len(set(shards))


def test_sampler_bad_rank():
    with pytest.raises(Exception, match="rank 2"):
        ShardSampler(list(range(4)), num_replicas=2, rank=2)


def test_dataloader_workers_and_sparse_collate(tmp_path):
    recs = make_records(9)
    for r in recs:
        r["coords"] = np.unique(r["coords"], axis=0)
        r["feats"] = np.ones((len(r["coords"]), 4), np.float32)
    write_set(tmp_path / "s", recs, per=3)
    ds = ShardDataset(tmp_path / "s", fields=["coords", "feats", "label"])
    ds[0]  # open a handle in the parent before the workers fork
    collate = SparseVoxelCollate((30, 30, 30))
    loader = DataLoader(ds, batch_size=4, sampler=ShardSampler(ds, 1, 0, seed=1), num_workers=2,
                        collate_fn=collate)
    ids = []
    for batch in loader:
        ids += batch["id"]
        assert batch["coords"].dtype == torch.int32 and batch["coords"].shape[1] == 4
        assert batch["feats"].shape == (len(batch["coords"]), 4)
        assert batch["coords"][:, 0].max() < batch["batch_size"]
        x = to_sparse_tensor(batch)
        assert isinstance(x, spconv.SparseConvTensor) and x.batch_size == batch["batch_size"]
        conv = spconv.SubMConv3d(4, 2, 3)
        assert conv(x).features.shape == (len(batch["coords"]), 2)
    assert sorted(ids) == sorted(r["id"] for r in recs)


def test_open_shards_are_capped(tmp_path, monkeypatch):
    from evpipe.shards import dataset as ds_mod
    monkeypatch.setattr(ds_mod, "MAX_OPEN_SHARDS", 2)
    recs = make_records(7)
    write_set(tmp_path / "s", recs, per=1)
    ds = ShardDataset(tmp_path / "s")
    for i in (0, 1, 2, 0, 5, 6, 3):
        assert_record_equal(ds[i], recs[i])
        assert len(ds._open) <= 2
    assert list(ds._open) == [6, 3]
