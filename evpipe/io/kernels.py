"""Numba helpers shared by several decoders."""

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
