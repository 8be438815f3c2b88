"""Numba kernels of the streaming path: packet checks and timestamp order (with
evpipe.io.kernels' clamp_disorder and search_time, which the loaders share).

They take plain field arrays (views of EVENT_DTYPE records are fine) and release the GIL,
so the source thread and the encoder thread run side by side.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..errors import ConfigError
from ..events import empty_events
from ..io.kernels import clamp_disorder, search_time


@njit(cache=True, nogil=True)
def first_bad_event(x, y, p, width, height):
    """Index of the first event outside the width x height sensor or with p not in
    {0, 1}, or -1."""
    for i in range(x.shape[0]):
        if x[i] >= width or y[i] >= height or (p[i] != 0 and p[i] != 1):
            return i
    return -1


@njit(cache=True, nogil=True)
def count_disorder(t, last):
    """Events with t below the running maximum (started at `last`, int64 us)."""
    bad = 0
    m = last
    for i in range(t.shape[0]):
        if t[i] < m:
            bad += 1
        else:
            m = t[i]
    return bad


@njit(cache=True, nogil=True)
def keep_in_order(t, last):
    """bool [N]: True for events at or above the running maximum (started at `last`)."""
    keep = np.empty(t.shape[0], np.bool_)
    m = last
    for i in range(t.shape[0]):
        keep[i] = t[i] >= m
        if t[i] > m:
            m = t[i]
    return keep


@njit(cache=True, nogil=True)
def time_range(t):
    """(min, max) of a non-empty int64 `t` in one pass, read in place (strided views too)."""
    lo = hi = t[0]
    for i in range(1, t.shape[0]):
        v = t[i]
        if v < lo:
            lo = v
        elif v > hi:
            hi = v
    return lo, hi


@njit(cache=True, nogil=True)
def shift_time(t, shift):
    """t += shift in place (strided views too)."""
    for i in range(t.shape[0]):
        t[i] += shift


def check_events(events: np.ndarray, width: int, height: int) -> int:
    """`first_bad_event` of an EVENT_DTYPE array: index of the first event outside the
    sensor or with a polarity other than 0/1, or -1."""
    if width <= 0 or height <= 0:
        raise ConfigError(f"sensor size must be positive, got {width}x{height}")
    return int(first_bad_event(events["x"], events["y"], events["p"], width, height))


def warm_up() -> None:
    """Compile (or load from the cache) every kernel here for the argument types the
    stream uses: a first call costs about 0.3 s with the GIL held, long enough for
    dv-processing's reader to overflow if it happened mid-stream."""
    ev = empty_events(2)
    t = ev["t"]
    check_events(ev, 1, 1)
    count_disorder(t, 0)
    clamp_disorder(t, 0)
    keep_in_order(t, 0)
    search_time(t, 0, False)
    time_range(t)
    shift_time(t, 0)
