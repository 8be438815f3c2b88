"""Latency percentiles in constant memory."""

from __future__ import annotations

import math

import numpy as np

LO_MS = 1e-3       # smallest latency told apart (1 us)
HI_MS = 1e7        # largest (about 2.8 hours); larger values land in the top bin
RESOLUTION = 0.01  # relative bin width: percentiles are within 1 %


class LatencyHistogram:
    """Log-spaced histogram of latencies in milliseconds (about 2300 int64 bins):
    percentiles within RESOLUTION, memory independent of the number of windows."""

    def __init__(self):
        self._log_step = math.log1p(RESOLUTION)
        self.bins = np.zeros(int(math.log(HI_MS / LO_MS) / self._log_step) + 2, np.int64)
        self.count = 0
        self.total_ms = 0.0
        self.max_ms = 0.0

    def add(self, ms: float) -> None:
        i = 0 if ms <= LO_MS else min(int(math.log(ms / LO_MS) / self._log_step) + 1,
                                      len(self.bins) - 1)
        self.bins[i] += 1
        self.count += 1
        self.total_ms += ms
        self.max_ms = max(self.max_ms, ms)

    def percentile(self, q: float) -> float | None:
        """Latency (ms) at percentile `q` (0..100): the geometric middle of its bin,
        capped at the largest value seen; None when empty."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q / 100 * self.count))
        i = int(np.searchsorted(np.cumsum(self.bins), rank))
        if i == 0:
            return min(LO_MS, self.max_ms)
        mid = LO_MS * math.exp((i - 0.5) * self._log_step)
        return min(mid, self.max_ms)

    def reset(self) -> None:
        self.bins[:] = 0
        self.count = 0
        self.total_ms = 0.0
        self.max_ms = 0.0
