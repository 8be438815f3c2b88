"""The zero-run Blosc/LZ4 chunk encoder: every buffer it writes must decode, through h5py
and hdf5plugin's Blosc filter (c-blosc), to the input; the shard writer must pick it only
where it pays and the chunks it writes must read back as the records."""

import h5py
import hdf5plugin
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evpipe.encoders import to_stacked_histogram
from evpipe.io import open_events
from evpipe.shards import ShardDataset, ShardWriter, read_manifest, zero_runs
from evpipe.shards.format import ZERO_RUNS_SLACK

BLOSC = dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))


def decode(arrays, tmp_path):
    """Each array written as one pre-encoded chunk of its own Blosc dataset, read back
    through the filter; also returns the chunk sizes."""
    path = tmp_path / "z.h5"
    with h5py.File(path, "w") as f:
        for k, a in enumerate(arrays):
            ds = f.create_dataset(str(k), shape=(1, *a.shape), dtype=a.dtype,
                                  chunks=(1, *a.shape), **BLOSC)
            ds.id.write_direct_chunk((0,) * (a.ndim + 1), zero_runs.encode(a))
    with h5py.File(path) as f:
        return ([f[str(k)][0] for k in range(len(arrays))],
                [len(f[str(k)].id.read_direct_chunk((0,) * (a.ndim + 1))[1])
                 for k, a in enumerate(arrays)])


def sparse(rng, shape, density, dtype=np.uint8):
    a = np.zeros(shape, dtype)
    mask = rng.random(shape) < density
    a[mask] = rng.integers(1, 200, mask.sum())
    return a


def test_round_trips_of_chosen_layouts(tmp_path):
    rng = np.random.default_rng(1)
    block = zero_runs.BLOCK
    arrays = [
        np.zeros(block * 3, np.uint8),                     # whole blocks of zeros
        np.ones(block + 5, np.uint8),                      # no zeros: raw blocks
        sparse(rng, 2 * block + 1001, 0.01),               # runs across block ends
        sparse(rng, (4, 70001), 0.02, np.int8),            # odd length, 2-D
        sparse(rng, (3, 33333), 0.05, bool),
        np.zeros(1, np.uint8), np.arange(1, 8, dtype=np.uint8),   # shorter than 13 bytes
        np.zeros(13, np.uint8), np.zeros(20, np.uint8),
        np.r_[np.zeros(block - 12), np.arange(1, 13)],
        np.r_[np.zeros(70_000), [7], np.zeros(200_000)],  # offsets > 64 KiB
        np.r_[[1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 3], np.zeros(300), [4]],
    ]
    arrays = [a.astype(np.uint8) if a.dtype.itemsize > 1 else a for a in arrays]
    got, sizes = decode(arrays, tmp_path)
    for a, b in zip(arrays, got):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert sizes[0] < 3 * block // 200                     # zeros cost almost nothing
    assert sizes[1] == zero_runs.bound(block + 5)          # all raw, within the bound


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_round_trip_property(tmp_path_factory, data):
    n = data.draw(st.integers(1, 300_000))
    density = data.draw(st.sampled_from([0.0, 0.001, 0.01, 0.1, 0.5, 1.0]))
    seed = data.draw(st.integers(0, 2**32 - 1))
    dtype = data.draw(st.sampled_from([np.uint8, np.int8]))
    a = sparse(np.random.default_rng(seed), n, density, dtype)
    got, sizes = decode([a], tmp_path_factory.mktemp("z"))
    assert np.array_equal(got[0], a)
    assert sizes[0] <= zero_runs.bound(a.nbytes)


def test_histograms_of_a_real_recording(tmp_path, data_dir):
    """Stacked histograms of 10 ms windows of a real EVT 2.0 recording: decoded equal, and
    within the writer's slack of c-blosc's chunks of the same histograms (so it uses them)."""
    with open_events(data_dir / "prophesee_evt2" / "evt2_sample.raw") as r:
        size = r.sensor_size
        hists = [to_stacked_histogram(ev, size) for ev in r.iter_chunks(dt_us=10_000)][:20]
    got, sizes = decode(hists, tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(hists, got))
    with h5py.File(tmp_path / "b.h5", "w") as f:
        ds = f.create_dataset("b", data=np.stack(hists), chunks=(1, *hists[0].shape), **BLOSC)
        blosc = ds.id.get_storage_size()
    assert sum(sizes) <= ZERO_RUNS_SLACK * blosc


def test_encode_refuses_empty_and_wide_items_and_uses_the_buffer():
    for bad in (np.zeros(0, np.uint8), np.zeros(10, np.uint16)):
        with pytest.raises(ValueError, match="1-byte items"):
            zero_runs.encode(bad)
    out = np.empty(zero_runs.bound(1000), np.uint8)
    assert np.shares_memory(zero_runs.encode(np.zeros(1000, np.uint8), out), out)


def chunk_codecs(path):
    """Dataset path -> "zero_runs" (its first chunk is what zero_runs.encode makes of the
    first row), "blosc" (filtered, other bytes) or None (no filter)."""
    out = {}
    with h5py.File(path) as f:
        def visit(name, ds):
            if isinstance(ds, h5py.Dataset) and name.startswith("data/") and ds.shape[0]:
                filt = ds.id.get_create_plist().get_nfilters()
                raw = ds.id.read_direct_chunk((0,) * ds.ndim)[1]
                mine = bytes(zero_runs.encode(ds[0])) \
                    if ds.chunks[0] == 1 and ds.dtype.itemsize == 1 else None
                out[name] = None if not filt else ("zero_runs" if raw == mine else "blosc")
        f.visititems(visit)
    return out


def write_toy(path, recs):
    with ShardWriter(path, dataset="toy", split="train", encoding={"name": "toy", "params": {}},
                     key="k", samples_per_shard=5,
                     fixed=("hist", "frames", "noise", "ones", "small")) as w:
        for r in recs:
            w.add(r)
    return read_manifest(path)


def test_writer_picks_zero_runs_only_where_it_pays(tmp_path):
    rng = np.random.default_rng(3)
    recs = [{"id": str(i),
             "hist": sparse(rng, (20, 60, 80), 0.01),               # 96 KB, ~1 % nonzero
             "frames": sparse(rng, (4, 2, 60, 80), 0.02, np.uint16),
             "noise": rng.integers(0, 255, (200, 400), dtype=np.uint8),
             "ones": np.full((300, 300), 7, np.uint8),            # Blosc's, not ours
             "small": sparse(rng, (64, 64), 0.01),                 # many rows per chunk
             "coords": rng.integers(0, 9, (int(rng.integers(1, 50)), 3)).astype(np.int32)}
            for i in range(7)]
    manifest = write_toy(tmp_path / "s", recs)
    codecs = chunk_codecs(tmp_path / "s" / manifest["shards"][0]["file"])
    assert codecs["data/hist"] == "zero_runs" and codecs["data/frames"] == "blosc"
    assert codecs["data/noise"] is None and codecs["data/ones"] == "blosc"
    assert codecs["data/small"] == "blosc"
    ds = ShardDataset(tmp_path / "s")
    for i, r in enumerate(recs):
        got = ds[i]
        for k in ("hist", "frames", "noise", "ones", "small", "coords"):
            np.testing.assert_array_equal(got[k], r[k])
    again = write_toy(tmp_path / "s2", recs)  # the same records give the same bytes
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in manifest["shards"]]
