"""Event arrays and sensor geometry.

Events are a NumPy structured array with fields `t` int64 (microseconds),
`x` uint16, `y` uint16, `p` int8 (0 = OFF, 1 = ON); the names match tonic.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .errors import ConfigError

EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "i1")])


class SensorSize(NamedTuple):
    """Sensor geometry in pixels."""

    width: int
    height: int


def as_sensor_size(size) -> SensorSize:
    """`SensorSize` from a SensorSize, a (width, height) tuple or tonic's (W, H, P)."""
    if isinstance(size, SensorSize):
        return size
    try:
        width, height = int(size[0]), int(size[1])
    except (TypeError, ValueError, IndexError):
        raise ConfigError(f"sensor_size must be (width, height), got {size!r}") from None
    if not (0 < width <= 65536 and 0 < height <= 65536):
        raise ConfigError(f"sensor_size must be within 1..65536 per axis, got {width}x{height}")
    return SensorSize(width, height)


def empty_events(n: int = 0) -> np.ndarray:
    """Zeroed events array of length `n`."""
    return np.zeros(n, dtype=EVENT_DTYPE)


def make_events(t, x, y, p) -> np.ndarray:
    """Events array from four equally long 1-D sequences."""
    t = np.asarray(t)
    ev = np.empty(t.shape[0], dtype=EVENT_DTYPE)
    ev["t"] = t
    ev["x"] = x
    ev["y"] = y
    ev["p"] = p
    return ev


def slice_by_time(events: np.ndarray, t_start: int, t_end: int) -> np.ndarray:
    """Events with t_start <= t < t_end (microseconds); `events` must be time-sorted."""
    t = events["t"]
    lo, hi = np.searchsorted(t, [t_start, t_end], side="left")
    return events[lo:hi]


def slice_by_count(events: np.ndarray, start: int, count: int) -> np.ndarray:
    """`count` events starting at index `start`."""
    return events[start:start + count]
