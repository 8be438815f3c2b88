import hashlib

import numpy as np
import pytest
import tonic.functional as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from evpipe.encoders import ENCODINGS
from evpipe.encoders.voxel_grid import VoxelGridParams, to_voxel_grid
from evpipe.errors import ConfigError
from evpipe.events import EVENT_DTYPE, SensorSize, make_events

from .test_frames import REAL_FILES, random_events, read_real, streams


def e2vid_reference(ev, size, n_bins, normalize=False, literal=False):
    """rpg_e2vid events_to_voxel_grid (+ EventPreprocessor normalisation) in NumPy,
    float64, with t_first/t_last = min/max (first/last for sorted events).

    By default in evpipe's summation order (per bin and pixel: sum p and sum p frac in
    event order, then V[b] = sum p - sum p frac + sum p frac of bin b - 1), so results are
    bit-equal; `literal=True` adds each event's two weights as rpg_e2vid does."""
    plane = size.height * size.width
    grid = np.zeros(n_bins * plane, np.float64)
    if len(ev):
        t = ev["t"].astype(np.float64)
        first, last = t.min(), t.max()
        delta = last - first if last != first else 1.0
        ts = (n_bins - 1) * (t - first) / delta
        xs, ys = ev["x"].astype(int), ev["y"].astype(int)
        pols = np.where(ev["p"] == 0, -1.0, 1.0)
        tis = ts.astype(int)
        dts = ts - tis
        cell = xs + ys * size.width + tis * plane
        if literal:
            np.add.at(grid, cell, pols * (1.0 - dts))
            ok = tis + 1 < n_bins
            np.add.at(grid, cell[ok] + plane, (pols * dts)[ok])
        else:
            s0, s1 = np.zeros_like(grid), np.zeros_like(grid)
            np.add.at(s0, cell, pols)
            np.add.at(s1, cell, pols * dts)
            grid = s0 - s1
            grid[plane:] += s1[:-plane]
    grid = grid.reshape(n_bins, size.height, size.width)
    nz = grid != 0
    if normalize and nz.any():
        mean, std = grid[nz].mean(), grid[nz].std()
        grid[nz] = (grid[nz] - mean) / std if std > 0 else grid[nz] - mean
    return grid


def assert_close(ours, ref, exact=False):
    """Within 1e-6, or bit-equal after the float32 cast (`exact`: unnormalised grids
    summed in the same order)."""
    if exact:
        np.testing.assert_array_equal(ours, ref.astype(np.float32))
    else:
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(REAL_FILES))
@pytest.mark.parametrize("n_bins", [1, 2, 5, 10])
@pytest.mark.parametrize("normalize", [False, True])
def test_real_files_match_e2vid_reference(data_dir, name, n_bins, normalize):
    ev, size = read_real(data_dir, name)
    v = to_voxel_grid(ev, size, n_bins, normalize)
    assert v.shape == (n_bins, size.height, size.width) and v.dtype == np.float32
    ref = e2vid_reference(ev, size, n_bins, normalize)
    assert_close(v, ref, exact=not normalize)
    np.testing.assert_array_equal(v == 0, ref == 0)
    # rpg_e2vid's own order of additions gives the same grid up to float64 rounding.
    assert_close(v, e2vid_reference(ev, size, n_bins, normalize, literal=True))
    if not normalize:  # the weights of each event sum to its polarity
        np.testing.assert_allclose(v.sum(dtype=np.float64), (2.0 * ev["p"] - 1).sum(), atol=1e-2)
    else:
        nz = v[v != 0].astype(np.float64)
        assert abs(nz.mean()) < 1e-5 and abs(nz.std() - 1) < 1e-5


@pytest.mark.parametrize("name", sorted(REAL_FILES))
@pytest.mark.parametrize("n_bins", [3, 5, 10])
def test_tonic_is_this_grid_with_one_more_bin_cut_off(data_dir, name, n_bins):
    """tonic scales by B, not B-1, and drops index >= B: tonic(B) == ours(B+1)[:B]."""
    ev, size = read_real(data_dir, name)
    theirs = tf.to_voxel_grid_numpy(ev.copy(), (*size, 2), n_bins)[:, 0]
    assert_close(to_voxel_grid(ev, size, n_bins + 1)[:n_bins], theirs)
    assert not np.allclose(to_voxel_grid(ev, size, n_bins), theirs, atol=1e-3)


def test_tonic_drops_the_last_event():
    ev = make_events([0, 50, 100], [0, 1, 2], [0, 0, 0], [1, 0, 1])
    ours = to_voxel_grid(ev, (3, 1), 3)
    # (B-1) scaling: t* = 0, 1, 2 -> each event lands whole in its own bin.
    assert ours[:, 0].tolist() == [[1, 0, 0], [0, -1, 0], [0, 0, 1]]
    theirs = tf.to_voxel_grid_numpy(ev.copy(), (3, 1, 2), 3)[:, 0, 0]
    # tonic: t* = 0, 1.5, 3 -> the middle event is split, the last (t* = B) is gone.
    assert theirs.tolist() == [[1, 0, 0], [0, -0.5, 0], [0, -0.5, 0]]


@settings(max_examples=80, deadline=None)
@given(streams, st.integers(1, 6), st.booleans(), st.booleans())
def test_random_streams_match_reference(stream, n_bins, normalize, ordered):
    n, w, h, span, seed = stream
    ev = random_events(n, w, h, span, seed, ordered)
    size = SensorSize(w, h)
    v = to_voxel_grid(ev, size, n_bins, normalize)
    assert_close(v, e2vid_reference(ev, size, n_bins, normalize), exact=not normalize)
    assert np.isfinite(v).all()
    # t_first/t_last are min/max: order changes rounding only. Compared before the
    # normalisation, whose nonzero mask a cell cancelling to 2e-16 in one order and to 0
    # in the other changes (found by hypothesis: 299 events on 4x3, span 7 us, 2 bins).
    assert_close(to_voxel_grid(ev, size, n_bins),
                 to_voxel_grid(np.sort(ev, order="t"), size, n_bins))


def test_edge_cases():
    size = SensorSize(4, 3)
    empty = to_voxel_grid(np.zeros(0, EVENT_DTYPE), size, 5, normalize=True)
    assert empty.shape == (5, 3, 4) and not empty.any()
    one = to_voxel_grid(make_events([7], [3], [2], [0]), size, 5)
    assert one[0, 2, 3] == -1 and np.count_nonzero(one) == 1
    # A single nonzero cell has std 0: normalised to 0, not NaN (E2VID divides by 0).
    assert not to_voxel_grid(make_events([7], [3], [2], [0]), size, 5, normalize=True).any()
    # One timestamp: the span counts as 1, every event at t* = 0.
    same_t = make_events([9] * 4, [0, 1, 1, 3], [0] * 4, [0, 1, 1, 1])
    v = to_voxel_grid(same_t, size, 3)
    assert v[0, 0].tolist() == [-1, 2, 0, 1] and not v[1:].any()
    # One bin: scale B-1 = 0, every event whole in bin 0.
    assert to_voxel_grid(random_events(20, 4, 3, 100, 0), size, 1).sum() == \
        (2.0 * random_events(20, 4, 3, 100, 0)["p"] - 1).sum()


@pytest.mark.parametrize("field,value,msg", [
    ("x", 4, "outside the 4x3 sensor"), ("y", 3, "outside the 4x3 sensor"),
    ("p", 2, "polarity must be 0 or 1"),
])
@pytest.mark.parametrize("ordered", [True, False])
def test_events_outside_the_sensor_are_rejected(field, value, msg, ordered):
    ev = random_events(50, 4, 3, 1000, 1, ordered)
    ev[field][17] = value
    with pytest.raises(ConfigError, match=f"event 17 .*{msg}"):
        to_voxel_grid(ev, (4, 3), 4)


def test_huge_time_span_is_rejected():
    ev = make_events([-(2**62), 2**62], [0, 0], [0, 0], [0, 1])
    with pytest.raises(ConfigError, match="events span"):
        to_voxel_grid(ev, (1, 1), 4)
    with pytest.raises(ConfigError, match="events span"):
        to_voxel_grid(ev[::-1], (1, 1), 4)


@pytest.mark.parametrize("kwargs,msg", [
    ({"n_bins": 0}, r"n_bins must be in 1\.\.4096, got 0"),
    ({"n_bins": 5000}, r"n_bins must be in 1\.\.4096, got 5000"),
    ({"normalize": "yes"}, "normalize must be true or false"),
])
def test_bad_parameters(kwargs, msg):
    with pytest.raises(ConfigError, match=msg):
        VoxelGridParams(**kwargs)


def test_registered_encoding(data_dir):
    enc = ENCODINGS.get("voxel_grid")
    assert enc.inputs == ("events",) and enc.fixed == ("voxel_grid",)
    assert VoxelGridParams() == VoxelGridParams(n_bins=5, normalize=False)
    ev, size = read_real(data_dir, "nmnist")
    out = enc.make(n_bins=4, normalize=True).encode(ev, sensor_size=size)
    np.testing.assert_array_equal(out["voxel_grid"], to_voxel_grid(ev, size, 4, True))


def test_golden_digest(data_dir):
    """Bit-exact regression guard on a real file."""
    ev, size = read_real(data_dir, "ncars_dat")
    digest = hashlib.sha256(to_voxel_grid(ev, size, 5).tobytes()).hexdigest()[:16]
    assert digest == GOLDEN


GOLDEN = "4a4ba4d2728fc237"


@pytest.mark.parametrize("sort", [True, False])
def test_bytes_do_not_depend_on_thread_segments(sort):
    from evpipe.encoders.frames import event_fields, run_event_kernel
    from evpipe.encoders.voxel_grid import _voxel_sums
    size = SensorSize(64, 48)
    rng = np.random.default_rng(5)
    n = 50_000
    ev = np.empty(n, EVENT_DTYPE)
    ev["t"] = np.cumsum(rng.integers(0, 3, n))
    ev["x"], ev["y"], ev["p"] = rng.integers(0, 64, n), rng.integers(0, 48, n), rng.integers(0, 2, n)
    if not sort:
        ev = ev[rng.permutation(n)]
    grids = []
    for segments in (1, 2, 3, 7, 64):
        acc = np.zeros((7, 48, 64, 2))
        run_event_kernel(_voxel_sums, event_fields(ev), size, acc, segments)
        grids.append(acc)
    for g in grids[1:]:
        np.testing.assert_array_equal(g, grids[0])
