"""Spike voxel coding (SVC), after E-3DSNN (Qiu et al., AAAI 2025, bollossom/E-3DSNN).

Voxelisation equals spconv `PointToVoxel` (CPU, `point_to_voxel_static`) followed by
OpenPCDet `MeanVFE`: a point's voxel is floor((p - range_min) / voxel_size) in float32,
voxels are numbered in order of first appearance, each keeps its first
`max_points_per_voxel` points in input order, and the feature is their float32 mean.
The spike step normalises the mean features to [0, 1] and quantises them to integer
spike counts 0..D as the I-LIF neuron does: S = floor(clamp(u * D, 0, D) + 0.5).

Why our own kernel: spconv's CPU voxeliser allocates a dense int32 table of the whole
grid (90M cells for the KITTI range) and clears a max_voxels buffer per call; an
open-addressing hash over the occupied voxels is O(N) in the points and cache-resident.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from numba import njit

from ..errors import ConfigError
from .base import ENCODINGS, Encoding

KITTI_POINT_RANGE = (0.0, -40.0, -3.0, 70.4, 40.0, 1.0)
KITTI_VOXEL_SIZE = (0.05, 0.05, 0.1)


class SVCResult(NamedTuple):
    """coords int32 [M, 3] (z, y, x); feats float32 [M, C]; n_points int32 [M];
    spatial_shape (Z, Y, X) of the voxel grid."""

    coords: np.ndarray
    feats: np.ndarray
    n_points: np.ndarray
    spatial_shape: tuple[int, int, int]


_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, nogil=True)
def _voxelize(points, lo, vsize, grid, max_points, max_voxels, keys, table, vkeys, sums, counts,
              point_voxel):
    """Hash voxelisation; `keys`, `table`, `vkeys`, `sums`, `counts` are reused scratch
    buffers of at least N, 4N + 16, N, N*C and N entries; `point_voxel` int32 [N] receives
    each point's voxel number (-1: outside the grid, NaN, or beyond max_voxels).

    points float32 [N, C]; lo, vsize float32 [3] and grid int64 [3] in (z, y, x) order.
    """
    n, c = points.shape
    # Pass 1: cell key z << 42 | y << 21 | x per point (each axis < 2^21), -1 outside the
    # grid. NaN and out-of-range values fail the float comparisons before any integer
    # conversion.
    valid = 0
    for i in range(n):
        fz = np.floor((points[i, 2] - lo[0]) / vsize[0])
        fy = np.floor((points[i, 1] - lo[1]) / vsize[1])
        fx = np.floor((points[i, 0] - lo[2]) / vsize[2])
        ok = (fz >= 0) & (fz < grid[0]) & (fy >= 0) & (fy < grid[1]) & (fx >= 0) & (fx < grid[2])
        if ok:
            keys[i] = (np.int64(fz) << 42) | (np.int64(fy) << 21) | np.int64(fx)
            valid += 1
        else:
            keys[i] = -1
    # Pass 2: open addressing over voxel numbers (int32, load factor <= 1/2); keys are
    # compared through vkeys. Both arrays stay cache-resident for a KITTI scan.
    bits = 4
    while (1 << bits) < 2 * valid:
        bits += 1
    mask = (1 << bits) - 1
    shift = np.uint64(64 - bits)
    for s in range(1 << bits):
        table[s] = -1
    limit = min(valid, max_voxels)
    m = 0
    last_key = -1
    last_v = -1
    for i in range(n):
        key = keys[i]
        if key < 0:
            point_voxel[i] = -1
            continue
        if key != last_key:
            # Scan order makes neighbours share voxels: the last lookup is often the answer.
            slot = np.int64((np.uint64(key) * _HASH_MUL) >> shift)
            v = -1
            while True:
                t = table[slot]
                if t == -1:
                    if m < limit:
                        table[slot] = m
                        vkeys[m] = key
                        counts[m] = 0
                        for j in range(c):
                            sums[m * c + j] = 0
                        v = m
                        m += 1
                    break
                if vkeys[t] == key:
                    v = t
                    break
                slot = (slot + 1) & mask
            last_key = key
            last_v = v
        v = last_v
        point_voxel[i] = v
        if v >= 0 and counts[v] < max_points:
            for j in range(c):
                sums[v * c + j] += points[i, j]
            counts[v] += 1
    coords = np.empty((m, 3), np.int32)
    feats = np.empty((m, c), np.float32)
    n_points = np.empty(m, np.int32)
    for v in range(m):
        k = vkeys[v]
        coords[v, 0] = k >> 42
        coords[v, 1] = (k >> 21) & 0x1FFFFF
        coords[v, 2] = k & 0x1FFFFF
        n_points[v] = counts[v]
        d = np.float32(counts[v])
        for j in range(c):
            feats[v, j] = sums[v * c + j] / d
    return coords, feats, n_points


_scratch = threading.local()
_SCRATCH_MAX_POINTS = 1 << 22


def _buffers(n: int, c: int) -> tuple[np.ndarray, ...]:
    """Per-thread scratch buffers, kept between calls up to 4M points: fresh multi-MB
    allocations cost more in page faults than the voxelisation itself."""
    if n > _SCRATCH_MAX_POINTS:
        return _new_buffers(n, c)
    buf = getattr(_scratch, "buf", None)
    if buf is None or len(buf[0]) < n or len(buf[3]) < n * c:
        cap = max(n, 1024)
        buf = _scratch.buf = _new_buffers(cap, max(c, 4))
    return buf


def _new_buffers(n: int, c: int) -> tuple[np.ndarray, ...]:
    n = max(n, 1)
    return (np.empty(n, np.int64), np.empty(4 * n + 16, np.int32), np.empty(n, np.int64),
            np.empty(n * c, np.float32), np.empty(n, np.int32), np.empty(n, np.int32))


@njit(cache=True, nogil=True)
def _majority(point_voxel, labels, m, n_classes):
    """int8 [m]: per voxel the most frequent label in 0..n_classes-1 of all its points
    (-1 ignored; -1 when a voxel has no other label; the smaller label on ties)."""
    counts = np.zeros((m, n_classes), np.int32)
    for i in range(point_voxel.shape[0]):
        v, lab = point_voxel[i], labels[i]
        if 0 <= v < m and 0 <= lab < n_classes:
            counts[v, lab] += 1
    out = np.full(m, -1, np.int8)
    for v in range(m):
        best = 0
        for lab in range(n_classes):
            if counts[v, lab] > best:
                best = counts[v, lab]
                out[v] = lab
    return out


def grid_shape(voxel_size, point_range) -> tuple[int, int, int]:
    """(Z, Y, X) grid as spconv computes it: round((max - min) / size) in float32."""
    vs = np.asarray(voxel_size, np.float32)
    pr = np.asarray(point_range, np.float32)
    g = np.floor((pr[3:] - pr[:3]) / vs + np.float32(0.5)).astype(np.int64)
    return int(g[2]), int(g[1]), int(g[0])


def _check_geometry(voxel_size, point_range):
    vs = tuple(float(v) for v in voxel_size)
    pr = tuple(float(v) for v in point_range)
    if len(vs) != 3 or not all(v > 0 and np.isfinite(v) for v in vs):
        raise ConfigError(f"voxel_size must be 3 positive numbers (x, y, z metres), got {vs}")
    if len(pr) != 6 or not all(np.isfinite(pr)) or not all(pr[i] < pr[i + 3] for i in range(3)):
        raise ConfigError("point_range must be (x_min, y_min, z_min, x_max, y_max, z_max) "
                          f"with min < max, got {pr}")
    shape = grid_shape(vs, pr)
    if min(shape) < 1 or max(shape) >= 1 << 21:
        raise ConfigError(f"grid {shape} from voxel_size {vs} and point_range {pr} is empty or "
                          "too large (at most 2^21 - 1 voxels per axis)")
    return vs, pr, shape


def svc(points: np.ndarray, voxel_size=KITTI_VOXEL_SIZE, point_range=KITTI_POINT_RANGE,
        max_points_per_voxel: int = 5, max_voxels: int | None = None) -> SVCResult:
    """Voxelise float32 [N, C>=3] points (x, y, z, features...; metres).

    Points outside `point_range` (x_min, y_min, z_min, x_max, y_max, z_max) and NaN points
    are dropped; with `max_voxels`, points that would open voxel number max_voxels+1 are
    dropped (spconv semantics). Returns an `SVCResult`; defaults are the KITTI/OpenPCDet
    configuration E-3DSNN uses.
    """
    return _svc(points, voxel_size, point_range, max_points_per_voxel, max_voxels)[0]


def svc_with_point_map(points: np.ndarray, voxel_size=KITTI_VOXEL_SIZE,
                       point_range=KITTI_POINT_RANGE, max_points_per_voxel: int = 5,
                       max_voxels: int | None = None) -> tuple[SVCResult, np.ndarray]:
    """`svc` plus int32 [N]: the voxel of each input point (index into coords), -1 for
    points that were dropped."""
    result, point_voxel = _svc(points, voxel_size, point_range, max_points_per_voxel,
                               max_voxels)
    return result, point_voxel.copy()


def voxel_labels(point_voxel: np.ndarray, labels: np.ndarray, n_voxels: int) -> np.ndarray:
    """int8 [n_voxels] segmentation targets: each voxel's most frequent point label (int
    [N], -1 = ignore, largest label < 127) over ALL its points; -1 when all are -1; the
    smaller label on ties."""
    lab = np.asarray(labels)
    if lab.shape != point_voxel.shape:
        raise ConfigError(f"{lab.shape[0] if lab.ndim else 0} labels for "
                          f"{point_voxel.shape[0]} points")
    if lab.size and int(lab.max()) >= 127:
        raise ConfigError(f"labels must be below 127, got {int(lab.max())}")
    n_classes = int(lab.max()) + 1 if lab.size else 0
    return _majority(point_voxel, lab.astype(np.int64), int(n_voxels), max(n_classes, 1))


def _svc(points, voxel_size, point_range, max_points_per_voxel, max_voxels):
    vs, pr, shape = _check_geometry(voxel_size, point_range)
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ConfigError(f"points must be [N, C>=3], got shape {pts.shape}")
    if max_points_per_voxel < 1:
        raise ConfigError(f"max_points_per_voxel must be >= 1, got {max_points_per_voxel}")
    if max_voxels is not None and max_voxels < 1:
        raise ConfigError(f"max_voxels must be >= 1 or None, got {max_voxels}")
    pts = np.ascontiguousarray(pts, dtype=np.float32)
    lo = np.array(pr[2::-1], np.float32)
    size = np.array(vs[::-1], np.float32)
    buffers = _buffers(*pts.shape)
    coords, feats, n_points = _voxelize(pts, lo, size, np.array(shape, np.int64),
                                        int(max_points_per_voxel),
                                        len(pts) if max_voxels is None else int(max_voxels),
                                        *buffers)
    return SVCResult(coords, feats, n_points, shape), buffers[5][:len(pts)]


def spike_counts(feats: np.ndarray, point_range=KITTI_POINT_RANGE, levels: int = 4,
                 feature_range=(0.0, 1.0)) -> np.ndarray:
    """uint8 [M, C] integer spikes 0..levels from float32 [M, C] voxel features.

    x, y, z are normalised by `point_range`, further channels (intensity) by
    `feature_range`; then S = floor(clamp(u * D, 0, D) + 0.5) with D = `levels`
    (E-3DSNN Multispike, round half up).
    """
    if not 1 <= levels <= 255:
        raise ConfigError(f"levels must be in 1..255, got {levels}")
    f = np.asarray(feats, np.float32)
    if f.ndim != 2 or f.shape[1] < 3:
        raise ConfigError(f"feats must be [M, C>=3], got shape {f.shape}")
    pr = np.asarray(point_range, np.float32)
    lo = np.full(f.shape[1], feature_range[0], np.float32)
    hi = np.full(f.shape[1], feature_range[1], np.float32)
    lo[:3], hi[:3] = pr[:3], pr[3:]
    u = (f - lo) / (hi - lo) * np.float32(levels)
    return np.floor(np.clip(u, 0, levels) + np.float32(0.5)).astype(np.uint8)


@dataclass(frozen=True)
class SVCParams:
    """Parameters of the `svc` encoding as stored in the manifest."""

    voxel_size: tuple[float, float, float] = field(
        default=KITTI_VOXEL_SIZE, metadata={"help": "voxel edge x y z, metres"})
    point_range: tuple[float, ...] = field(
        default=KITTI_POINT_RANGE, metadata={"help": "x_min y_min z_min x_max y_max z_max, metres"})
    max_points_per_voxel: int = field(default=5, metadata={"help": "points averaged per voxel"})
    max_voxels: int | None = field(
        default=None, metadata={"help": "voxel cap; points opening voxel N+1 are dropped"})
    levels: int = field(default=4, metadata={"help": "spike levels D: counts 0..D"})
    store: str = field(default="both", metadata={"help": "both, feats or spikes"})
    feature_range: tuple[float, float] = field(
        default=(0.0, 1.0), metadata={"help": "min max of the channels after x, y, z, mapped "
                                              "to spikes 0..D (intensity 0 1; normals -1 1)"})
    point_map: bool = field(default=False, metadata={
        "help": "also store point_voxel int32 [N]: each input point's voxel (-1 dropped)"})

    def __post_init__(self):
        object.__setattr__(self, "voxel_size", tuple(float(v) for v in self.voxel_size))
        object.__setattr__(self, "point_range", tuple(float(v) for v in self.point_range))
        object.__setattr__(self, "feature_range", tuple(float(v) for v in self.feature_range))
        lo_hi = self.feature_range
        if len(lo_hi) != 2 or not all(np.isfinite(lo_hi)) or not lo_hi[0] < lo_hi[1]:
            raise ConfigError(f"feature_range must be two numbers min < max, got {lo_hi}")
        _check_geometry(self.voxel_size, self.point_range)
        if self.store not in ("both", "feats", "spikes"):
            raise ConfigError(f"store must be both, feats or spikes, got {self.store!r}")
        if not 1 <= self.levels <= 255:
            raise ConfigError(f"levels must be in 1..255, got {self.levels}")
        if self.max_points_per_voxel < 1:
            raise ConfigError(f"max_points_per_voxel must be >= 1, got {self.max_points_per_voxel}")
        if self.max_voxels is not None and self.max_voxels < 1:
            raise ConfigError(f"max_voxels must be >= 1 or None, got {self.max_voxels}")

    def encode(self, points: np.ndarray, sensor_size=None, sample_id=None,
               point_labels=None) -> dict[str, np.ndarray]:
        """Record fields for one cloud: coords, feats and/or spikes, n_points; with
        per-point `point_labels` (segmentation datasets) also `voxel_labels` int8 [M], the
        majority label of each voxel; with `point_map`, `point_voxel` int32 [N]."""
        r, point_voxel = _svc(points, self.voxel_size, self.point_range,
                              self.max_points_per_voxel, self.max_voxels)
        out = {"coords": r.coords, "n_points": r.n_points}
        if self.store in ("both", "feats"):
            out["feats"] = r.feats
        if self.store in ("both", "spikes"):
            out["spikes"] = spike_counts(r.feats, self.point_range, self.levels,
                                         self.feature_range)
        if point_labels is not None:
            out["voxel_labels"] = voxel_labels(point_voxel, point_labels, len(r.coords))
        if self.point_map:
            out["point_voxel"] = point_voxel.copy()
        return out

    def stats(self, record: dict) -> dict:
        return {"voxels": len(record["coords"])}

    def extra_params(self) -> dict:
        return {"spatial_shape": list(grid_shape(self.voxel_size, self.point_range))}


ENCODINGS.register("svc")(Encoding(
    "svc", SVCParams, inputs=("points",),
    summary="spike voxel coding: mean voxel features + integer spikes 0..D (E-3DSNN)"))
