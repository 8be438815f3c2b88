"""Cutting a live event stream into windows: time (tumbling or sliding) or event count.

Time windows of one session lie on a grid: window k covers [t0 + k*stride, t0 + k*stride
+ window) microseconds, t0 being the session's first event; a window is finished when an
event at or after its end arrives (or the stream ends: then it is `partial`). Windows
without events are not produced. Count windows hold `window_events` consecutive events.
With tumbling windows every event accepted is in exactly one window.

Timestamps must not go backwards within a session: the out-of-order policy drops such
events ("drop") or raises them to the latest time seen ("clamp"), counting either.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..events import empty_events
from ..io.base import concat_events
from ..io.kernels import clamp_disorder, search_time
from .kernels import count_disorder, keep_in_order

ORDER_POLICIES = ("drop", "clamp")
_MIN_T = np.iinfo(np.int64).min


@dataclass(frozen=True)
class WindowSpec:
    """Window shape: `window_us` (with optional `stride_us` <= window_us for sliding
    windows) or `window_events`; microseconds / events, all >= 1."""

    window_us: int | None = None
    window_events: int | None = None
    stride_us: int | None = None

    def __post_init__(self):
        if (self.window_us is None) == (self.window_events is None):
            raise ConfigError("give a window length in time (window_us) or in events "
                              "(window_events), one of the two")
        for name in ("window_us", "window_events", "stride_us"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))
                                  or v < 1):
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
        if self.stride_us is not None:
            if self.window_us is None:
                raise ConfigError("stride_us (sliding windows) needs window_us")
            if self.stride_us > self.window_us:
                raise ConfigError(f"stride_us ({self.stride_us}) must not exceed window_us "
                                  f"({self.window_us})")

    @property
    def tumbling(self) -> bool:
        return self.stride_us is None or self.stride_us == self.window_us


@dataclass
class Window:
    """One window: `index` (order produced), bounds `t_start_us` <= t < `t_end_us`
    (count windows: first event's t, last event's t + 1), `events` (EVENT_DTYPE),
    `arrival` (monotonic s at which its last event arrived) and `partial` (closed early
    by the end of its session)."""

    index: int
    t_start_us: int
    t_end_us: int
    events: np.ndarray
    arrival: float
    partial: bool = False

    @property
    def n_events(self) -> int:
        return len(self.events)


class Windower:
    """Stateful cutter: feed time-ordered chunks with `push`, get finished windows.

    Counters: `out_of_order` (events behind the latest time seen), `clamped` (of those,
    raised to it), `dropped_events` (out-of-order drops plus events lost around a gap).
    """

    def __init__(self, spec: WindowSpec, out_of_order: str = "drop"):
        if out_of_order not in ORDER_POLICIES:
            raise ConfigError(f"out-of-order policy must be one of "
                              f"{', '.join(ORDER_POLICIES)}, got {out_of_order!r}")
        self.spec = spec
        self.order = out_of_order
        self.size = spec.window_us or spec.window_events
        self.stride = spec.stride_us or spec.window_us
        self.index = 0
        self.out_of_order = 0
        self.clamped = 0
        self.dropped_events = 0
        self._new_session()

    def _new_session(self) -> None:
        self.last_t = _MIN_T          # latest timestamp accepted
        self.skip_through = None      # drop events with t <= this (after a gap)
        self._new_grid()

    def _new_grid(self) -> None:
        self.t0 = None                # grid origin (time windows)
        self.k = 0                    # current window on the grid
        self.pieces: list[tuple[np.ndarray, float]] = []
        self.buffered = 0

    def buffered_events(self) -> int:
        """Events held for windows not yet finished."""
        return self.buffered

    # -- input ------------------------------------------------------------------------------
    def push(self, events: np.ndarray, arrival: float) -> list[Window]:
        """Windows finished by `events` (EVENT_DTYPE, owned by the caller's pipeline; may be
        modified in place by "clamp") that arrived at monotonic time `arrival`."""
        events = self._in_order(events)
        if self.skip_through is not None and len(events):
            cut = search_time(events["t"], self.skip_through, True)
            self.dropped_events += cut
            events = events[cut:]
            if len(events):
                self.skip_through = None
        if not len(events):
            return []
        if self.spec.window_events is not None:
            return self._push_count(events, arrival)
        return self._push_time(events, arrival)

    def gap(self, t_last: int) -> None:
        """Events up to time `t_last` (us) were lost upstream: windows they belonged to
        are incomplete, so the events held for them are dropped (counted), later events
        at or before `t_last` are dropped too, and the grid restarts after them."""
        self.dropped_events += self.buffered
        self._new_grid()
        self.skip_through = t_last if self.skip_through is None else max(self.skip_through,
                                                                          t_last)

    def reset(self) -> list[Window]:
        """End of a session (reconnect): its open windows, marked partial; then a fresh
        grid and clock."""
        out = self.flush()
        self._new_session()
        return out

    def flush(self) -> list[Window]:
        """The open windows, marked partial (end of stream)."""
        out: list[Window] = []
        if not self.buffered:
            self._new_grid()
            return out
        if self.spec.window_events is not None:
            out.append(self._emit(self.pieces, partial=True))
        else:
            while self.pieces:
                start = self.t0 + self.k * self.stride
                w = self._collect(start, start + self.size, partial=True)
                if w is not None:
                    out.append(w)
                self.k += 1
                self._trim(self.t0 + self.k * self.stride)
        self._new_grid()
        return out

    # -- internals ----------------------------------------------------------------------------
    def _in_order(self, events: np.ndarray) -> np.ndarray:
        if not len(events):
            return events
        t = events["t"]
        bad = int(count_disorder(t, self.last_t))
        if bad:
            self.out_of_order += bad
            if self.order == "clamp":
                if not events.flags.writeable:
                    events = events.copy()
                    t = events["t"]
                clamp_disorder(t, self.last_t)
                self.clamped += bad
            else:
                events = events[keep_in_order(t, self.last_t)]
                self.dropped_events += bad
                t = events["t"]
        if len(events):
            self.last_t = max(self.last_t, int(t[-1]))
        return events

    def _emit(self, pieces, partial: bool, start=None, end=None) -> Window:
        events = concat_events([p for p, _ in pieces]) if len(pieces) > 1 else (
            pieces[0][0] if pieces else empty_events())
        t = events["t"]
        if start is None:
            start, end = int(t[0]), int(t[-1]) + 1
        w = Window(self.index, start, end, events, pieces[-1][1], partial)
        self.index += 1
        return w

    def _push_count(self, events: np.ndarray, arrival: float) -> list[Window]:
        out = []
        n = self.size
        while len(events):
            take = min(n - self.buffered, len(events))
            self.pieces.append((events[:take], arrival))
            self.buffered += take
            events = events[take:]
            if self.buffered == n:
                out.append(self._emit(self.pieces, partial=False))
                self.pieces, self.buffered = [], 0
        return out

    def _push_time(self, events: np.ndarray, arrival: float) -> list[Window]:
        if self.t0 is None:
            self.t0 = int(events["t"][0])
            self.k = 0
        self.pieces.append((events, arrival))
        self.buffered += len(events)
        t_max = int(events["t"][-1])
        out = []
        while t_max >= self.t0 + self.k * self.stride + self.size:
            start = self.t0 + self.k * self.stride
            w = self._collect(start, start + self.size, partial=False)
            if w is not None:
                out.append(w)
            self.k += 1
            self._trim(self.t0 + self.k * self.stride)
            if self.pieces:  # jump over windows without events
                first = int(self.pieces[0][0]["t"][0])
                k_min = -(-(first - self.t0 - self.size + 1) // self.stride)
                if k_min > self.k:
                    self.k = k_min
                    self._trim(self.t0 + self.k * self.stride)
        return out

    def _collect(self, start: int, end: int, partial: bool) -> Window | None:
        """The window [start, end) from the held pieces, or None when it has no events."""
        parts = []
        for events, arrival in self.pieces:
            t = events["t"]
            if t[0] >= end:
                break
            lo, hi = search_time(t, start, False), search_time(t, end, False)
            if hi > lo:
                parts.append((events[lo:hi], arrival))
        if not parts:
            return None
        return self._emit(parts, partial, start, end)

    def _trim(self, start: int) -> None:
        """Forget events before `start`: they are in windows already produced."""
        while self.pieces:
            events, arrival = self.pieces[0]
            t = events["t"]
            if t[-1] < start:
                self.pieces.pop(0)
                self.buffered -= len(events)
                continue
            cut = search_time(t, start, False)
            if cut:
                self.pieces[0] = (events[cut:], arrival)
                self.buffered -= cut
            break
