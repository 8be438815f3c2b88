"""Event clouds for point-based SNNs: SpikePoint (Ren et al., ICLR 2024) preprocessing, as
the same authors' public code defines it (rhwxmx/EventMamba).

1. Sliding windows by time [EventMamba dataprocess/uti.py `get_window_index`]: starts
   t0 + k * stride for k = 0, 1, ... while start + window < t_last (t0, t_last: first and
   last event); a window holds the events with start <= t < start + window. (EventMamba
   slices [first t >= start, last t <= end), which also drops the final event at or
   before the end; evpipe uses the half-open interval, as `events.slice_by_time` does.)
2. Windows with <= `min_events` events are dropped [generate_dvsgesture.py].
3. N points per window, in time order [uti.py `shuffle_downsample`]: with n >= N events a
   random subset without replacement, else N draws with replacement, indices sorted.
4. Normalisation [uti.py `normaliztion`, polarity dropped]: x' = x / W, y' = y / H,
   t' = (t - t_min) / (t_max - t_min + 1e-6) per window (computed in float64, stored as
   float32; EventMamba computes in float32).
5. Grouping [EventMamba models/modules.py `LocalGrouper`, normalize="anchor"]: farthest
   point sampling from a random start picks M centroids (indices then sorted); each
   centroid's K nearest points by squared Euclidean distance in (x', y', t') (ties: lower
   index first), sorted by index; offsets d = P_knn - c are divided by (sigma + 1e-5) with
   sigma the (n-1) standard deviation of all offsets of the window (`std_scope="window"`,
   as EventMamba) or of each axis (`"axis"`).
6. SpikePoint's "rectified" coordinates (rate coding needs values in [0, 1]), `mode`:
   `abs` |G|; `shift` 0.5 + G / (2 max|G|) (max over the same scope as sigma; 0.5 when
   max|G| = 0), which keeps the sign; `split` max(G, 0) and max(-G, 0) as separate
   channels. The centroid's (x', y', t') is appended to every neighbour, and every value
   is clamped to [0, 1]. Rate code the result with `evpipe.encoders.poisson.poisson`
   (SpikePoint: T = 16).

Random draws, in this order per kept window, from one Generator: the sample (`choice(n, N,
replace=False, shuffle=False)` or `integers(0, n, N)`), then the FPS start
(`integers(0, N)`) when grouping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from numba import njit

from ..errors import ConfigError
from ..events import as_sensor_size
from .base import ENCODINGS, Encoding, as_generator, sample_rng

MODES = ("abs", "shift", "split")
STD_SCOPES = ("window", "axis")
_MAX_WINDOWS = 1 << 22


class EventCloud(NamedTuple):
    """Windows of one recording (W of them) as SpikePoint/EventMamba inputs.

    points float32 [W, N, 3] (x', y', t') in time order; windows int64 [W, 2] (start, end)
    in microseconds, end exclusive. With grouping (M groups of K points, C = 6 for
    abs/shift, 9 for split; else None): groups float32 [W, M, K, C] (rectified offsets,
    then the centroid's x', y', t'; split: d+ x y t, d- x y t, centroid), centroids float32
    [W, M, 3], centroid_index int32 [W, M] and neighbor_index int32 [W, M, K] into points.
    """

    points: np.ndarray
    windows: np.ndarray
    groups: np.ndarray | None
    centroids: np.ndarray | None
    centroid_index: np.ndarray | None
    neighbor_index: np.ndarray | None


@njit(cache=True, nogil=True)
def _first_bad_event(t, x, y, width, height):
    """(index, reason) of the first event that is out of time order (1), or outside the
    sensor in x (2) or y (3); (-1, 0) when all are valid."""
    for i in range(t.size):
        if i > 0 and t[i] < t[i - 1]:
            return i, 1
        if x[i] < 0 or x[i] >= width:
            return i, 2
        if y[i] < 0 or y[i] >= height:
            return i, 3
    return -1, 0


@njit(cache=True, nogil=True)
def _normalise(t, x, y, sel, width, height, points):
    """points[w, i] = (x / W, y / H, (t - t_min) / (t_max - t_min + 1e-6)) of events
    sel[w, i] (sorted event indices per window)."""
    n_events = t.size
    n_win, n = sel.shape
    if points.shape != (n_win, n, 3):
        raise IndexError("event_cloud: points shape does not match the samples")
    for w in range(n_win):
        for i in range(n):
            if sel[w, i] < 0 or sel[w, i] >= n_events:
                raise IndexError("event_cloud: sample index outside the events")
        t_min = t[sel[w, 0]]
        span = np.float64(t[sel[w, n - 1]] - t_min) + 1e-6
        for i in range(n):
            e = sel[w, i]
            points[w, i, 0] = np.float32(np.float64(x[e]) / width)
            points[w, i, 1] = np.float32(np.float64(y[e]) / height)
            points[w, i, 2] = np.float32(np.float64(t[e] - t_min) / span)


@njit(cache=True, nogil=True)
def _fps(xyz, start, cidx, dist):
    """Farthest point sampling of cidx.size indices of points xyz float64 [3, N] from
    `start`: the next centroid is the first point with the largest squared distance to
    the chosen ones (EventMamba `furthest_point_sample`). Indices are sorted at the end."""
    n = xyz.shape[1]
    m = cidx.size
    if m > n or start < 0 or start >= n or dist.size < n:
        raise IndexError("event_cloud: FPS sizes or start out of range")
    dist[:n] = np.inf
    far = start
    for i in range(m):
        cidx[i] = far
        cx, cy, ct = xyz[0, far], xyz[1, far], xyz[2, far]
        for j in range(n):
            dx = xyz[0, j] - cx
            dy = xyz[1, j] - cy
            dt = xyz[2, j] - ct
            dist[j] = min(dist[j], dx * dx + dy * dy + dt * dt)
        best = dist[0]
        far = 0
        for j in range(1, n):
            if dist[j] > best:
                best = dist[j]
                far = j
    cidx.sort()


def farthest_point_sample(xyz: np.ndarray, m: int, start: int = 0) -> np.ndarray:
    """int32 [m] sorted indices of m farthest-point-sampled rows of xyz [N, 3] (m <= N),
    from row `start`, ties to the lower index."""
    pts = np.ascontiguousarray(np.asarray(xyz, np.float64).T)
    if pts.shape[0] != 3 or not 0 <= m <= pts.shape[1]:
        raise ConfigError(f"farthest_point_sample needs xyz [N, 3] and 0 <= m <= N, got "
                          f"{np.shape(xyz)} and m={m}")
    idx = np.empty(m, np.int32)
    if m:
        _fps(pts, int(start), idx, np.empty(pts.shape[1], np.float64))
    return idx


@njit(cache=True, nogil=True, inline="always")
def _offer(xyz, c, j, nidx, best_d, filled):
    """Insert point j into the sorted (distance, index) list of the nearest points to c
    if it belongs there; returns the new fill count."""
    k = nidx.size
    dx = xyz[0, j] - xyz[0, c]
    dy = xyz[1, j] - xyz[1, c]
    dt = xyz[2, j] - xyz[2, c]
    d = dx * dx + dy * dy + dt * dt
    if filled == k and (d > best_d[k - 1] or (d == best_d[k - 1] and j > nidx[k - 1])):
        return filled
    pos = filled if filled < k else k - 1
    while pos > 0 and (best_d[pos - 1] > d or (best_d[pos - 1] == d and nidx[pos - 1] > j)):
        best_d[pos] = best_d[pos - 1]
        nidx[pos] = nidx[pos - 1]
        pos -= 1
    best_d[pos] = d
    nidx[pos] = j
    return min(filled + 1, k)


@njit(cache=True, nogil=True)
def _knn(xyz, c, nidx, best_d):
    """The nidx.size nearest points of xyz float64 [3, N] to point c by (squared
    distance, index), written to nidx sorted by index. xyz[2] (t') must be non-decreasing:
    the scan walks away from c on each side and stops once the time gap alone exceeds the
    current K-th distance."""
    n = xyz.shape[1]
    k = nidx.size
    if k > n or c < 0 or c >= n or best_d.size < k:
        raise IndexError("event_cloud: kNN sizes or centroid out of range")
    tc = xyz[2, c]
    filled = 0
    for j in range(c, n):
        gap = xyz[2, j] - tc
        if filled == k and gap * gap > best_d[k - 1]:
            break
        filled = _offer(xyz, c, j, nidx, best_d, filled)
    for j in range(c - 1, -1, -1):
        gap = xyz[2, j] - tc
        if filled == k and gap * gap > best_d[k - 1]:
            break
        filled = _offer(xyz, c, j, nidx, best_d, filled)
    nidx.sort()


@njit(cache=True, nogil=True)
def _std(off, a0, a1):
    """(n - 1) standard deviation of off[:, :, a0:a1] (0 for a single value)."""
    m, k, _ = off.shape
    cnt = m * k * (a1 - a0)
    s = 0.0
    for i in range(m):
        for j in range(k):
            for a in range(a0, a1):
                s += off[i, j, a]
    mean = s / cnt
    s = 0.0
    for i in range(m):
        for j in range(k):
            for a in range(a0, a1):
                dev = off[i, j, a] - mean
                s += dev * dev
    return np.sqrt(s / (cnt - 1)) if cnt > 1 else 0.0


@njit(cache=True, nogil=True)
def _group(points, starts, per_axis, mode, cidx, nidx, centroids, groups):
    """FPS + kNN + standardised, rectified offsets for every window (see module docstring;
    mode 0 abs, 1 shift, 2 split)."""
    n_win, n, _ = points.shape
    m = cidx.shape[1]
    k = nidx.shape[2]
    cc = 6 if mode == 2 else 3
    if (starts.size != n_win or cidx.shape[0] != n_win or nidx.shape[:2] != (n_win, m)
            or centroids.shape != (n_win, m, 3) or groups.shape != (n_win, m, k, cc + 3)):
        raise IndexError("event_cloud: grouping output shapes do not match")
    xyz = np.empty((3, n), np.float64)
    dist = np.empty(n, np.float64)
    best_d = np.empty(k, np.float64)
    off = np.empty((m, k, 3), np.float64)
    sigma = np.empty(3, np.float64)
    peak = np.empty(3, np.float64)
    for w in range(n_win):
        p = points[w]
        for a in range(3):
            for j in range(n):
                xyz[a, j] = p[j, a]
        _fps(xyz, starts[w], cidx[w], dist)
        for i in range(m):
            c = cidx[w, i]
            for a in range(3):
                centroids[w, i, a] = p[c, a]
            _knn(xyz, c, nidx[w, i], best_d)
            for j in range(k):
                for a in range(3):
                    off[i, j, a] = xyz[a, nidx[w, i, j]] - xyz[a, c]
        if per_axis:
            for a in range(3):
                sigma[a] = _std(off, a, a + 1)
        else:
            sigma[:] = _std(off, 0, 3)
        for a in range(3):
            peak[a] = 0.0
            for i in range(m):
                for j in range(k):
                    off[i, j, a] /= sigma[a] + 1e-5
                    peak[a] = max(peak[a], abs(off[i, j, a]))
        if not per_axis:
            peak[:] = max(peak[0], max(peak[1], peak[2]))
        for i in range(m):
            for j in range(k):
                for a in range(3):
                    g = off[i, j, a]
                    if mode == 0:
                        v = abs(g)
                    elif mode == 1:
                        v = 0.5 + g / (2.0 * peak[a]) if peak[a] > 0 else 0.5
                    else:
                        v = g
                        groups[w, i, j, a + 3] = np.float32(min(max(-g, 0.0), 1.0))
                    groups[w, i, j, a] = np.float32(min(max(v, 0.0), 1.0))
                    groups[w, i, j, cc + a] = np.float32(min(max(centroids[w, i, a], 0.0), 1.0))


def _windows(t: np.ndarray, window_us: int | None, stride_us: int) -> np.ndarray:
    """int64 [W, 2] candidate (start, end) windows, end exclusive."""
    if len(t) == 0:
        return np.zeros((0, 2), np.int64)
    t0, t_last = int(t[0]), int(t[-1])
    if window_us is None:
        return np.array([[t0, t_last + 1]], np.int64)
    span = t_last - t0 - window_us
    count = 0 if span <= 0 else -(-span // stride_us)
    if count > _MAX_WINDOWS:
        raise ConfigError(f"event_cloud: {count} windows of {window_us} us every {stride_us} us "
                          f"(at most {_MAX_WINDOWS}); raise stride_us")
    starts = t0 + stride_us * np.arange(count, dtype=np.int64)
    return np.stack([starts, starts + window_us], axis=1)


def _check(events, sensor_size, window_us, stride_us, min_events, n_points, n_groups, k,
           mode, std_scope):
    names = events.dtype.names
    if names is None or not {"t", "x", "y"} <= set(names):
        raise ConfigError(f"event_cloud: events need fields t, x, y, got dtype {events.dtype}")
    if events.ndim != 1:
        raise ConfigError(f"event_cloud: events must be 1-D, got shape {events.shape}")
    _check_params(window_us, stride_us, min_events, n_points, n_groups, k, mode, std_scope)
    return as_sensor_size(sensor_size)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_params(window_us, stride_us, min_events, n_points, n_groups, k, mode, std_scope):
    if window_us is not None and not (_is_int(window_us) and window_us >= 0):
        raise ConfigError(f"window_us must be an int >= 0 or None, got {window_us!r}")
    if not (_is_int(stride_us) and stride_us >= 1):
        raise ConfigError(f"stride_us must be an int >= 1, got {stride_us!r}")
    if not (_is_int(min_events) and min_events >= 0):
        raise ConfigError(f"min_events must be an int >= 0, got {min_events!r}")
    if not (_is_int(n_points) and n_points >= 1):
        raise ConfigError(f"n_points must be an int >= 1, got {n_points!r}")
    if n_groups is not None:
        if not (_is_int(n_groups) and 0 <= n_groups <= n_points):
            raise ConfigError(f"n_groups must be an int in 0..n_points ({n_points}) or None, "
                              f"got {n_groups!r}")
        if not (_is_int(k) and 1 <= k <= n_points):
            raise ConfigError(f"k must be an int in 1..n_points ({n_points}), got {k!r}")
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if std_scope not in STD_SCOPES:
        raise ConfigError(f"std_scope must be one of {', '.join(STD_SCOPES)}, got {std_scope!r}")


def event_cloud(events: np.ndarray, sensor_size, window_us: int | None = 500_000,
                stride_us: int = 250_000, min_events: int = 100, n_points: int = 1024,
                n_groups: int | None = 512, k: int = 24, mode: str = "abs",
                std_scope: str = "window", seed=None) -> EventCloud:
    """SpikePoint/EventMamba event clouds of time-sorted events (EVENT_DTYPE [n]; t in us).

    `window_us`/`stride_us`: sliding windows (window_us None or 0: the whole input is one
    window, for streams windowed upstream); windows with <= `min_events` events are
    dropped; `n_points` N per window; `n_groups` M (None or 0: no grouping) of `k`
    neighbours; `mode` abs | shift | split; `std_scope` window | axis; `seed` int,
    Generator or None (fresh entropy). Coordinates are ordered (x', y', t') (EventMamba
    stores (t, x, y)). Defaults: the DVS128 Gesture recipe (EventMamba
    generate_dvsgesture.py: 0.5 s / 0.25 s, > 100 events, 1024 points) and EventMamba's
    first grouping stage for Gesture (models/eventmamba.py: 512 groups, 24 neighbours).
    Unsorted times or coordinates outside `sensor_size` raise ConfigError before any
    output is written. Returns an `EventCloud`; steps in the module docstring.
    """
    events = np.asarray(events)
    width, height = _check(events, sensor_size, window_us, stride_us, min_events, n_points,
                           n_groups, k, mode, std_scope)
    window_us, n_groups = window_us or None, n_groups or None
    rng = as_generator(seed)
    t, x, y = events["t"], events["x"], events["y"]
    if t.dtype != np.int64:
        t = t.astype(np.int64)
    bad, reason = _first_bad_event(t, x, y, width, height)
    if bad >= 0:
        what = ("time earlier than the event before it", "x outside 0..%d" % (width - 1),
                "y outside 0..%d" % (height - 1))[reason - 1]
        raise ConfigError(f"event_cloud: event {bad} (t={t[bad]}, x={x[bad]}, y={y[bad]}): "
                          f"{what}")
    cand = _windows(t, window_us, stride_us)
    lo = np.searchsorted(t, cand[:, 0], side="left")
    hi = np.searchsorted(t, cand[:, 1], side="left")
    keep = hi - lo > min_events
    windows, lo, hi = cand[keep], lo[keep], hi[keep]
    n_win = len(windows)
    sel = np.empty((n_win, n_points), np.int64)
    starts = np.empty(n_win, np.int64)
    for w in range(n_win):
        n = int(hi[w] - lo[w])
        if n >= n_points:
            idx = rng.choice(n, n_points, replace=False, shuffle=False)
        else:
            idx = rng.integers(0, n, n_points)
        idx.sort()
        sel[w] = lo[w] + idx
        if n_groups is not None:
            starts[w] = rng.integers(0, n_points)
    points = np.empty((n_win, n_points, 3), np.float32)
    _normalise(t, x, y, sel, float(width), float(height), points)
    if n_groups is None:
        return EventCloud(points, windows, None, None, None, None)
    c = 9 if mode == "split" else 6
    cidx = np.empty((n_win, n_groups), np.int32)
    nidx = np.empty((n_win, n_groups, k), np.int32)
    centroids = np.empty((n_win, n_groups, 3), np.float32)
    groups = np.empty((n_win, n_groups, k, c), np.float32)
    _group(points, starts, std_scope == "axis", MODES.index(mode), cidx, nidx, centroids, groups)
    return EventCloud(points, windows, groups, centroids, cidx, nidx)


@dataclass(frozen=True)
class EventCloudParams:
    """Parameters of the `event_cloud` encoding: ragged fields along the window axis,
    `points` float32 [W, N, 3], `windows` int64 [W, 2] (us) and, with grouping,
    `groups` float32 [W, M, K, C] and `centroids` float32 [W, M, 3] (`event_cloud`)."""

    window_us: int | None = field(
        default=500_000, metadata={"help": "window length, us (0: the whole sample)"})
    stride_us: int = field(default=250_000, metadata={"help": "window step, us"})
    min_events: int = field(default=100, metadata={"help": "drop windows with <= N events"})
    n_points: int = field(default=1024, metadata={"help": "points sampled per window"})
    n_groups: int | None = field(
        default=512, metadata={"help": "FPS groups per window (0: no grouping)"})
    k: int = field(default=24, metadata={"help": "nearest neighbours per group"})
    mode: str = field(default="abs", metadata={"help": "offset rectification: abs, shift, split"})
    std_scope: str = field(
        default="window", metadata={"help": "offset std: window (one scalar) or axis"})
    seed: int = field(default=0, metadata={"help": "seed; each sample draws from (seed, id)"})

    def __post_init__(self):
        _check_params(self.window_us, self.stride_us, self.min_events, self.n_points,
                      self.n_groups, self.k, self.mode, self.std_scope)
        if not (_is_int(self.seed) and self.seed >= 0):
            raise ConfigError(f"seed must be an int >= 0, got {self.seed!r}")

    def encode(self, events: np.ndarray, sensor_size=None, sample_id=None) -> dict:
        """Record fields for one recording (see the class docstring)."""
        if sensor_size is None:
            raise ConfigError("event_cloud: events need a sensor_size", sample_id=sample_id)
        r = event_cloud(events, sensor_size, self.window_us, self.stride_us, self.min_events,
                        self.n_points, self.n_groups, self.k, self.mode, self.std_scope,
                        sample_rng(self.seed, sample_id))
        out = {"points": r.points, "windows": r.windows}
        if r.groups is not None:
            out.update(groups=r.groups, centroids=r.centroids)
        return out

    def stats(self, record: dict) -> dict:
        return {"windows": len(record["windows"])}


ENCODINGS.register("event_cloud")(Encoding(
    "event_cloud", EventCloudParams, inputs=("events",),
    summary="SpikePoint event clouds: windows, N points, FPS + kNN groups (EventMamba)"))
