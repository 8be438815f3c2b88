"""Numba helpers on event fields shared by the decoders, loaders and the streaming path."""

from __future__ import annotations

from numba import njit


@njit(cache=True, inline="always")
def unwrap32(ts, last, base):
    """Time base after the step last -> ts of a 32-bit microsecond clock: a drop of more
    than 2^31 us is a wrap (+2^32), a rise of more than 2^31 us a wrap back (-2^32).
    Consecutive events must therefore be less than 2^31 us (~36 min) apart."""
    if ts - last < -(1 << 31):
        return base + (1 << 32)
    if ts - last > (1 << 31):
        return base - (1 << 32)
    return base


@njit(cache=True, nogil=True)
def clamp_disorder(t, last):
    """Raise, in place, each t below the running maximum (started at `last`) to it."""
    m = last
    for i in range(t.shape[0]):
        if t[i] < m:
            t[i] = m
        else:
            m = t[i]


@njit(cache=True, nogil=True)
def search_time(t, value, right):
    """np.searchsorted(t, value, "right" if right else "left") on sorted int64 `t`, read in
    place: NumPy copies a strided field view (the `t` of packed records) before searching."""
    lo, hi = 0, t.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if t[mid] < value or (right and t[mid] == value):
            lo = mid + 1
        else:
            hi = mid
    return lo
