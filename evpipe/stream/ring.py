"""Bounded queues between the pipeline's threads, with an explicit overload policy.

`RingBuffer`: event chunks from the source thread to the windowing thread, bounded in
events. `WindowQueue`: finished windows from the windowing thread to the encoder/model,
bounded in windows. Policy "drop-oldest" never blocks the producer: the oldest items go
and are counted; "block" makes the producer wait (checking its stop flag) for room.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

POLICIES = ("drop-oldest", "block")


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ConfigError(f"overload policy must be one of {', '.join(POLICIES)}, "
                          f"got {policy!r}")
    return policy


@dataclass(frozen=True)
class Gap:
    """Chunks were dropped from the ring; the last dropped event had time `t_last` (us)."""

    t_last: int
    events: int


@dataclass(frozen=True)
class Reset:
    """The source reconnected: a new session, whose clock may start anywhere."""

    lost_s: float


@dataclass(frozen=True)
class End:
    """The source ended; `reason` says why."""

    reason: str


@dataclass
class Chunk:
    """Events (EVENT_DTYPE) and the monotonic time (s) they arrived."""

    events: np.ndarray
    arrival: float


class RingBuffer:
    """FIFO of `Chunk`s holding at most `capacity` events, plus markers (Gap, Reset, End)
    that take no room. A chunk larger than the whole capacity is accepted into an empty
    ring. Under "drop-oldest", room is made by dropping the oldest chunks: they are
    replaced by one `Gap` marker and counted in `dropped_events` / `dropped_chunks`."""

    def __init__(self, capacity: int, policy: str = "drop-oldest"):
        if capacity < 1:
            raise ConfigError(f"buffer capacity must be >= 1 event, got {capacity}")
        self.capacity = int(capacity)
        self.policy = check_policy(policy)
        self.items: deque = deque()
        self.events = 0
        self.peak = 0
        self.dropped_events = 0
        self.dropped_chunks = 0
        self.cond = threading.Condition()

    def put(self, chunk: Chunk, stop: threading.Event) -> bool:
        """Append `chunk`; False when `stop` was set while waiting for room ("block")."""
        n = len(chunk.events)
        with self.cond:
            if self.policy == "block":
                while self.events and self.events + n > self.capacity:
                    if stop.is_set():
                        return False
                    self.cond.wait(0.05)
            elif self.events + n > self.capacity:
                self._drop(self.events + n - self.capacity)
            self.items.append(chunk)
            self.events += n
            self.peak = max(self.peak, self.events)
            self.cond.notify_all()
        return True

    def put_marker(self, marker) -> None:
        with self.cond:
            self.items.append(marker)
            self.cond.notify_all()

    def _drop(self, need: int) -> None:
        """Drop the oldest chunks holding >= `need` events (or all); markers met on the
        way stay, in order, each preceded by a Gap for the chunks dropped before it."""
        kept: list = []
        t_last, count = None, 0
        while need > 0 and self.items:
            item = self.items.popleft()
            if isinstance(item, Chunk):
                n = len(item.events)
                if n:
                    t = int(item.events["t"].max())
                    t_last = t if t_last is None else max(t_last, t)
                need -= n
                count += n
                self.events -= n
                self.dropped_events += n
                self.dropped_chunks += 1
                continue
            if isinstance(item, Gap):
                t_last = item.t_last if t_last is None else max(t_last, item.t_last)
                count += item.events
                continue
            if count:
                kept.append(Gap(t_last, count))
                t_last, count = None, 0
            kept.append(item)
        if self.items and isinstance(self.items[0], Gap):
            gap = self.items.popleft()
            t_last = gap.t_last if t_last is None else max(t_last, gap.t_last)
            count += gap.events
        if count:
            kept.append(Gap(t_last if t_last is not None else np.iinfo(np.int64).min, count))
        self.items.extendleft(reversed(kept))

    def get(self, timeout: float):
        """The oldest item, or None after `timeout` seconds without one."""
        with self.cond:
            if not self.items:
                self.cond.wait(timeout)
                if not self.items:
                    return None
            item = self.items.popleft()
            if isinstance(item, Chunk):
                self.events -= len(item.events)
            self.cond.notify_all()
            return item

    def pending_events(self) -> int:
        with self.cond:
            return self.events


class WindowQueue:
    """FIFO of windows (anything with `n_events`) holding at most `capacity`, plus an
    end marker. Under "drop-oldest" a full queue drops its oldest window for the new one,
    counted in `dropped_windows` / `dropped_events`."""

    def __init__(self, capacity: int, policy: str = "drop-oldest"):
        if capacity < 1:
            raise ConfigError(f"pending windows must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.policy = check_policy(policy)
        self.items: deque = deque()
        self.windows = 0
        self.dropped_windows = 0
        self.dropped_events = 0
        self.cond = threading.Condition()

    def put(self, window, stop: threading.Event) -> bool:
        """Append `window`; False when `stop` was set while waiting for room ("block")."""
        with self.cond:
            if self.policy == "block":
                while self.windows >= self.capacity:
                    if stop.is_set():
                        return False
                    self.cond.wait(0.05)
            else:
                while self.windows >= self.capacity:
                    old = self.items.popleft()
                    self.windows -= 1
                    self.dropped_windows += 1
                    self.dropped_events += old.n_events
            self.items.append(window)
            self.windows += 1
            self.cond.notify_all()
        return True

    def put_end(self, end: End) -> None:
        with self.cond:
            self.items.append(end)
            self.cond.notify_all()

    def get(self, timeout: float):
        """The oldest window or End, or None after `timeout` seconds without one."""
        with self.cond:
            if not self.items:
                self.cond.wait(timeout)
                if not self.items:
                    return None
            item = self.items.popleft()
            if not isinstance(item, End):
                self.windows -= 1
            self.cond.notify_all()
            return item

    def discard(self) -> tuple[int, int]:
        """Remove every pending window; (windows, events) removed."""
        with self.cond:
            wins = [w for w in self.items if not isinstance(w, End)]
            self.items.clear()
            self.windows = 0
            self.cond.notify_all()
            return len(wins), sum(w.n_events for w in wins)

