"""Voxel grid with bilinear interpolation in time (Zhu et al., CVPR 2019; E2VID), as
uzh-rpg/rpg_e2vid `utils/inference_utils.py::events_to_voxel_grid`.

Each event (polarity 0 -> -1, 1 -> +1) sits at t* = (B-1)(t - t_first)/(t_last - t_first)
(a time span of 0 counts as 1) and deposits p(1 - frac(t*)) into bin floor(t*) and
p frac(t*) into the next bin when it exists: V(b, y, x) = sum_i p_i max(0, 1 - |b - t*_i|).
evpipe sums, per (bin floor(t*), pixel), the polarities and the polarity-weighted
fractions in event order in float64 (rpg_e2vid adds float32 weights event by event,
which loses counts on busy pixels), then V[b] = sum p - sum p frac + (sum p frac of bin
b - 1): the same grid up to float64 rounding, returned as float32 [B, H, W]. Time-sorted
input is split across Numba threads at bin boundaries, so the bytes do not depend on
the thread count. t_first/t_last are the smallest/largest timestamps;
for time-sorted events they are the first and last event, as in rpg_e2vid, and unsorted
events give the same grid up to float64 rounding.

`normalize=True` is E2VID's EventPreprocessor, computed in float64: over the NONZERO
cells only, v <- (v - mean) / std (population std); zero cells stay zero. Where the
nonzero cells are all equal (std 0; E2VID divides by zero) they become v - mean = 0.

tonic's `to_voxel_grid_numpy` scales by B instead of B-1 and drops what falls at index
B or beyond: tonic(B) equals this grid with B+1 bins, cut to its first B bins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import get_num_threads, njit, prange

from ..errors import ConfigError
from ..events import as_sensor_size
from .base import ENCODINGS, Encoding
from .frames import MAX_BINS, OUT_OF_RANGE, check_int, event_fields, run_event_kernel


UNSORTED = -3
PARALLEL_MIN_EVENTS = 1 << 16


@njit(cache=True, nogil=True)
def _accumulate(t, x, y, p, t_first, span, width, height, acc, lo, hi, check_sorted):
    """Add events [lo, hi) to acc float64 [B * H * W * 2], in event order: per (bin of
    t*, pixel) the sum of polarities and the sum of polarity * frac(t*). One cache line
    per event instead of two. Returns the index of the first event outside the sensor or
    with p not in {0, 1}, OUT_OF_RANGE for one outside [t_first, t_first + span],
    UNSORTED for a backward step when `check_sorted`, or -1."""
    plane = width * height
    scale = float(acc.shape[0] // (2 * plane) - 1)
    delta = float(span) if span > 0 else 1.0
    uw, uh, uspan = np.uint64(width), np.uint64(height), np.uint64(span)
    prev = t[lo - 1] if check_sorted and lo > 0 else t_first
    for j in range(max(lo, 0), hi):
        i = np.uint64(j)  # unsigned: Numba skips its negative-index wraparound
        xi, yi, pi, ti = np.int64(x[i]), np.int64(y[i]), np.int64(p[i]), t[i]
        u = ti - t_first
        # One branch for all checks; unsigned compares also catch negative values.
        if (np.uint64(xi) >= uw) | (np.uint64(yi) >= uh) | (np.uint64(pi) > 1) | \
                (np.uint64(u) > uspan) | (check_sorted & (ti < prev)):
            if np.uint64(xi) >= uw or np.uint64(yi) >= uh or np.uint64(pi) > 1:
                return j
            return OUT_OF_RANGE if np.uint64(u) > uspan else UNSORTED
        prev = ti
        ts = scale * float(u) / delta
        b = int(ts)
        pol = float(2 * pi - 1)
        c = np.uint64(2 * (b * plane + yi * width + xi))
        acc[c] += pol
        acc[c + np.uint64(1)] += pol * (ts - b)
    return -1


@njit(cache=True, nogil=True, parallel=True)
def _voxel_sums(t, x, y, p, t_first, span, width, height, acc, n_segments):
    """Fill acc float64 [B, H, W, 2] (see `_accumulate`) on `n_segments` threads.

    Time-sorted input is cut where the bin changes, so each (bin, pixel) pair is summed
    by one segment in event order: the bytes do not depend on the number of segments.
    Unsorted input (found by the segments) is redone serially. Returns what
    `_accumulate` returns for the first event that fails.
    """
    n = t.shape[0]
    flat = acc.reshape(acc.size)
    scale = float(acc.shape[0] - 1)
    delta = float(span) if span > 0 else 1.0
    k = max(1, min(n_segments, n))
    cuts = np.empty(k + 1, np.int64)
    cuts[0] = 0
    cuts[k] = n
    for s in range(1, k):
        i = max(s * n // k, cuts[s - 1])
        if 0 < i < n:
            prev = int(scale * float(t[i - 1] - t_first) / delta)
            while i < n and int(scale * float(t[i] - t_first) / delta) == prev:
                i += 1
        cuts[s] = min(i, n)
    status = np.full(k, -1, np.int64)
    for s in prange(k):
        status[s] = _accumulate(t, x, y, p, t_first, span, width, height, flat, cuts[s],
                                cuts[s + 1], k > 1)
    for s in range(k):
        if status[s] == UNSORTED:
            acc[:] = 0
            return _accumulate(t, x, y, p, t_first, span, width, height, flat, 0, n, False)
        if status[s] != -1:
            return status[s]
    return -1


@njit(cache=True, nogil=True, parallel=True)
def _combine(acc, grid):
    """grid [B, H, W] (float64, or float32 when no normalisation follows) from acc
    [B, H, W, 2]: V[b] = sum p - sum p frac (left weights) + sum p frac of bin b - 1
    (right weights), computed in float64."""
    nb, h, w = acc.shape[0], acc.shape[1], acc.shape[2]
    for b in prange(nb):
        for yi in range(h):
            for xi in range(w):
                v = acc[b, yi, xi, 0] - acc[b, yi, xi, 1]
                if b > 0:
                    v += acc[b - 1, yi, xi, 1]
                grid[b, yi, xi] = v


def _normalize_nonzero(grid: np.ndarray) -> None:
    """E2VID normalisation in place: nonzero cells -> (v - mean) / std over the nonzero
    cells (v - mean when std is 0); zeros stay zero."""
    nz = grid != 0
    if not nz.any():
        return
    v = grid[nz]
    mean = v.mean()
    std = np.sqrt(np.mean((v - mean) ** 2))
    grid[nz] = (v - mean) / std if std > 0 else v - mean


def to_voxel_grid(events: np.ndarray, sensor_size, n_bins: int,
                  normalize: bool = False) -> np.ndarray:
    """float32 [n_bins, H, W] voxel grid of EVENT_DTYPE [N] events (t in microseconds).

    `sensor_size`: SensorSize or (width, height). Definition in the module docstring;
    events outside the sensor or with p not in {0, 1} raise ConfigError.
    """
    n_bins = check_int("n_bins", n_bins, 1, MAX_BINS)
    size = as_sensor_size(sensor_size)
    fields = event_fields(events)
    acc = np.zeros((n_bins, size.height, size.width, 2), np.float64)
    segments = get_num_threads() if len(fields[0]) >= PARALLEL_MIN_EVENTS else 1
    run_event_kernel(_voxel_sums, fields, size, acc, segments)
    grid = np.empty(acc.shape[:3], np.float64 if normalize else np.float32)
    _combine(acc, grid)
    if normalize:
        _normalize_nonzero(grid)
        return grid.astype(np.float32)
    return grid


@dataclass(frozen=True)
class VoxelGridParams:
    """Parameters of the `voxel_grid` encoding (record field `voxel_grid`)."""

    n_bins: int = field(default=5, metadata={"help": f"time bins, 1..{MAX_BINS}"})
    normalize: bool = field(default=False, metadata={
        "help": "E2VID normalisation of the nonzero cells to mean 0, std 1"})

    def __post_init__(self):
        check_int("n_bins", self.n_bins, 1, MAX_BINS)
        if not isinstance(self.normalize, (bool, np.bool_)):
            raise ConfigError(f"normalize must be true or false, got {self.normalize!r}")

    def encode(self, events: np.ndarray, sensor_size=None, sample_id=None) -> dict[str, np.ndarray]:
        """Record fields for events [N]: `voxel_grid`."""
        return {"voxel_grid": to_voxel_grid(events, sensor_size, self.n_bins, self.normalize)}


ENCODINGS.register("voxel_grid")(Encoding(
    "voxel_grid", VoxelGridParams, inputs=("events",), fixed=("voxel_grid",),
    summary="bilinear-in-time voxel grid with (B-1) scaling (Zhu et al. / E2VID)"))
