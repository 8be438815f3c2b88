"""Playing a recording as a live stream: packets in file order, paced on its own clock."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from ..encoders.frames import check_int
from ..errors import ConfigError
from ..io.base import EventReader
from ..io.kernels import search_time
from .kernels import shift_time, time_range

PACKET_US = 1000
PACKET_EVENTS = 10_000


def check_speed(speed) -> float:
    """`speed` as a float >= 0 (0 = as fast as possible), else ConfigError."""
    try:
        value = float(speed)
    except (TypeError, ValueError):
        raise ConfigError(f"speed must be a number >= 0, got {speed!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"speed must be a finite number >= 0 (0 = as fast as possible), "
                          f"got {speed!r}")
    return value


def packets(reader: EventReader, packet_us: int = PACKET_US,
            packet_events: int = PACKET_EVENTS, repeat: int = 1) -> Iterator[np.ndarray]:
    """The recording's events (EVENT_DTYPE) in file order, cut into packets of at most
    `packet_events` events spanning less than `packet_us` microseconds (one packet per
    timestamp run longer than that). With `repeat` > 1 the recording plays that many
    times, each pass shifted by (t_max - t_min + 1) us so time keeps increasing. Packets
    are views of the reader's blocks."""
    packet_us = check_int("packet_us", packet_us, 1, 1 << 40)
    packet_events = check_int("packet_events", packet_events, 1, 1 << 20)
    repeat = check_int("repeat", repeat, 1, 1 << 20)
    t_min = t_max = None
    for n in range(repeat):
        shift = 0 if n == 0 else n * (t_max - t_min + 1)
        for block in reader.iter_chunks():
            if n == 0 and len(block):
                lo, hi = (int(v) for v in time_range(block["t"]))
                t_min = lo if t_min is None else min(t_min, lo)
                t_max = hi if t_max is None else max(t_max, hi)
            if shift:  # a byte copy: NumPy copies packed records field by field, slowly
                shifted = np.empty_like(block)
                shifted.view(np.uint8)[:] = np.ascontiguousarray(block).view(np.uint8)
                shift_time(shifted["t"], shift)
                block = shifted
            yield from _cut(block, packet_us, packet_events)
        if t_min is None:
            return


def _cut(block: np.ndarray, packet_us: int, packet_events: int) -> Iterator[np.ndarray]:
    t = block["t"]
    s, n = 0, len(block)
    while s < n:
        e = min(n, s + packet_events)
        e_time = s + search_time(t[s:e], t[s] + packet_us, False)
        e = max(s + 1, min(e, e_time))
        yield block[s:e]
        s = e


class Pacer:
    """Releases packets on the recording's clock: the first packet's first event is "now"
    and a packet is due when its last event happened, `(t_last - t_first) / speed`
    seconds later. speed 0 releases at once. Timestamps below an earlier one do not move
    the clock back.
    """

    def __init__(self, speed: float):
        self.speed = check_speed(speed)
        self.t0 = None
        self.t_clock = 0
        self.wall0 = 0.0

    def delay(self, t_first: int, t_last: int) -> float:
        """Seconds until a packet with first/last event times `t_first`/`t_last` (us) is
        due (<= 0: due now). Asking again for the same packet gives the same due time."""
        if self.speed == 0:
            return 0.0
        if self.t0 is None:
            self.t0 = self.t_clock = t_first
            self.wall0 = time.monotonic()
        self.t_clock = max(self.t_clock, t_last)
        return self.wall0 + (self.t_clock - self.t0) / (self.speed * 1e6) - time.monotonic()
