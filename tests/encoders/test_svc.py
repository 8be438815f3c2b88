import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from spconv.pytorch.utils import PointToVoxel

from evpipe.encoders import ENCODINGS, SVCParams, spike_counts, svc
from evpipe.errors import ConfigError
from evpipe.io.kitti import read_velodyne

KITTI_RANGE = [0, -40, -3, 70.4, 40, 1]
KITTI_VOXEL = [0.05, 0.05, 0.1]


def spconv_mean(points, voxel, prange, max_points=5, max_voxels=150000):
    """spconv PointToVoxel (CPU) + OpenPCDet MeanVFE, the reference SVC voxelisation."""
    gen = PointToVoxel(voxel, prange, points.shape[1], max_voxels, max_points)
    vox, idx, num = gen(torch.from_numpy(points))
    mean = vox.sum(dim=1) / torch.clamp_min(num.view(-1, 1), 1.0).type_as(vox)
    return idx.numpy(), mean.numpy(), num.numpy()


def numpy_reference(points, voxel, prange, max_points):
    """Straightforward NumPy SVC: float32 cells, first-appearance order, first points kept."""
    p = points.astype(np.float32)
    lo = np.array(prange[:3], np.float32)
    vs = np.array(voxel, np.float32)
    grid = np.floor((np.array(prange[3:], np.float32) - lo) / vs + np.float32(0.5)).astype(int)
    cell = np.floor((p[:, :3] - lo) / vs)
    ok = np.all((cell >= 0) & (cell < grid), axis=1)
    cell = cell[ok].astype(np.int64)[:, ::-1]  # z, y, x
    p = p[ok]
    keys, first, inverse = np.unique(cell, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    vid = rank[inverse.ravel()]
    coords = keys[order].astype(np.int32)
    sums = np.zeros((len(order), p.shape[1]), np.float32)
    counts = np.zeros(len(order), np.int32)
    for i in range(len(p)):
        v = vid[i]
        if counts[v] < max_points:
            sums[v] += p[i]
            counts[v] += 1
    return coords, sums / counts[:, None].astype(np.float32), counts


@pytest.mark.parametrize("fid", ["000000", "000001", "000002"])
def test_equals_spconv_on_real_scans(kitti_dir, fid):
    pts = read_velodyne(kitti_dir / "training" / "velodyne" / f"{fid}.bin")
    r = svc(pts)
    idx, mean, num = spconv_mean(pts, KITTI_VOXEL, KITTI_RANGE)
    assert 30000 < len(r.coords) < 150000
    np.testing.assert_array_equal(r.coords, idx)
    np.testing.assert_array_equal(r.feats, mean)
    np.testing.assert_array_equal(r.n_points, num)
    assert r.spatial_shape == (40, 1600, 1408)
    assert r.coords.dtype == np.int32 and r.feats.dtype == np.float32 and r.n_points.dtype == np.int32
    assert (r.coords >= 0).all() and (r.coords < np.array(r.spatial_shape)).all()
    assert r.n_points.min() >= 1 and r.n_points.max() == 5


def test_max_voxels_truncates_like_spconv(kitti_dir):
    pts = read_velodyne(kitti_dir / "training" / "velodyne" / "000001.bin")
    r = svc(pts, max_voxels=16000, max_points_per_voxel=3)
    idx, mean, num = spconv_mean(pts, KITTI_VOXEL, KITTI_RANGE, 3, 16000)
    assert len(r.coords) == 16000
    np.testing.assert_array_equal(r.coords, idx)
    np.testing.assert_array_equal(r.feats, mean)
    np.testing.assert_array_equal(r.n_points, num)


clouds = st.integers(0, 400).flatmap(lambda n: st.lists(
    st.tuples(st.floats(-1.5, 4.5, width=32), st.floats(-2.5, 2.5, width=32),
              st.floats(-1.25, 1.25, width=32), st.floats(0, 1, width=32)), min_size=n, max_size=n))


@settings(max_examples=60, deadline=None)
@given(clouds, st.sampled_from([(0.5, 0.5, 0.5), (0.25, 0.4, 0.3), (1.0, 1.0, 2.0)]),
       st.integers(1, 6))
def test_random_clouds_match_numpy_and_spconv(cloud, voxel, max_points):
    pts = np.array(cloud, np.float32).reshape(-1, 4)
    prange = [0.0, -2.0, -1.0, 4.0, 2.0, 1.0]
    r = svc(pts, voxel, prange, max_points)
    coords, feats, counts = numpy_reference(pts, voxel, prange, max_points)
    np.testing.assert_array_equal(r.coords, coords.reshape(-1, 3))
    np.testing.assert_allclose(r.feats, feats.reshape(-1, 4), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(r.n_points, counts)
    if len(pts):
        idx, mean, num = spconv_mean(pts, list(voxel), prange, max_points, max(len(pts), 1))
        np.testing.assert_array_equal(r.coords, idx)
        np.testing.assert_array_equal(r.feats, mean)


def test_edge_cases():
    empty = svc(np.zeros((0, 4), np.float32))
    assert empty.coords.shape == (0, 3) and empty.feats.shape == (0, 4)
    bad = np.array([[np.nan, 1, 0, 0], [1e30, 0, 0, 0], [-1e30, 0, 0, 0], [5, np.inf, 0, 0],
                    [5, 1, 0, 0.5]], np.float32)
    r = svc(bad)
    assert len(r.coords) == 1 and r.feats[0].tolist() == [5, 1, 0, 0.5]
    as64 = svc(bad.astype(np.float64))
    np.testing.assert_array_equal(as64.feats, r.feats)
    xyz_only = svc(bad[:, :3])
    assert xyz_only.feats.shape == (1, 3)


@pytest.mark.parametrize("kwargs,msg", [
    ({"voxel_size": (0.1, 0.1)}, "voxel_size"),
    ({"voxel_size": (0.1, -0.1, 0.1)}, "voxel_size"),
    ({"point_range": (0, 0, 0, -1, 1, 1)}, "point_range"),
    ({"voxel_size": (1e-9, 1e-9, 1e-9)}, "too large"),
    ({"max_points_per_voxel": 0}, "max_points_per_voxel"),
    ({"max_voxels": 0}, "max_voxels"),
])
def test_bad_parameters(kwargs, msg):
    with pytest.raises(ConfigError, match=msg):
        svc(np.zeros((3, 4), np.float32), **kwargs)


def test_bad_points_shape():
    with pytest.raises(ConfigError, match="points must be"):
        svc(np.zeros((3, 2), np.float32))


def test_spike_counts():
    feats = np.array([[0, -40, -3, 0], [70.4, 40, 1, 1], [35.2, 0, -1, 0.5],
                      [8.8, -30, -2.5, 0.125], [-5, 50, 9, 2]], np.float32)
    s = spike_counts(feats, levels=4)
    assert s.dtype == np.uint8
    assert s[0].tolist() == [0, 0, 0, 0]
    assert s[1].tolist() == [4, 4, 4, 4]
    assert s[2].tolist() == [2, 2, 2, 2]  # 0.5 * 4 = 2 exactly
    # u*D = 0.5 (x), 0.5 (y), 0.5 (z), 0.5 (i): round half up -> 1 (E-3DSNN floor(x + 0.5)).
    assert s[3].tolist() == [1, 1, 1, 1]
    assert s[4].tolist() == [0, 4, 4, 4]  # clamped
    assert spike_counts(feats, levels=1).max() == 1
    with pytest.raises(ConfigError, match="levels"):
        spike_counts(feats, levels=0)


def test_registered_encoding_and_params(kitti_dir):
    enc = ENCODINGS.get("svc")
    p = enc.make(store="spikes", levels=8)
    pts = read_velodyne(kitti_dir / "training" / "velodyne" / "000000.bin")
    out = p.encode(pts)
    assert set(out) == {"coords", "n_points", "spikes"}
    assert out["spikes"].max() <= 8 and out["spikes"].dtype == np.uint8
    assert p.extra_params() == {"spatial_shape": [40, 1600, 1408]}
    with pytest.raises(ConfigError, match="no parameter bins"):
        enc.make(bins=3)
    with pytest.raises(ConfigError, match="store"):
        SVCParams(store="all")
    with pytest.raises(ConfigError, match="unknown encoding 'svx'"):
        ENCODINGS.get("svx")
