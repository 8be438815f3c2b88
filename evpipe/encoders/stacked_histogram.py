"""Stacked histogram (RVT, Gehrig & Scaramuzza, CVPR 2023), as uzh-rpg/RVT
`data/utils/representations.py::StackedHistogram`.

Bin of an event: b = min(B-1, floor(B (t - t0) / max(t_last - t0, 1))) with t0/t_last the
first/last timestamps of the window (not the window bounds); H[p, b, y, x] =
min(cutoff, count), laid out uint8 [2B, H, W] with channel p*B + b (polarity-major).
Defaults are RVT's Gen1 recipe (B = 10, cutoff = 10; the 50 ms windows are the loader's).

Differences from RVT, all outside its normal use:
- b is computed in exact integer arithmetic. RVT divides in float32, which for spans
  above 100 ms can round an event just below a bin boundary into the next bin (none found
  for spans up to 100 ms; Gen1/Gen4 windows are 50 ms).
- counts are clipped exactly; RVT's fastmode (its default) accumulates in uint8, so a pixel
  with 256+ events in one bin wraps around before the clip.
- t0/t_last are the smallest/largest timestamps. RVT assumes time-sorted events (then
  they are the first/last event); unsorted events here give the same histogram as sorted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

from ..events import as_sensor_size
from .base import ENCODINGS, Encoding
from .frames import MAX_BINS, OUT_OF_RANGE, check_int, event_fields, run_event_kernel


@njit(cache=True, nogil=True)
def _stacked_histogram(t, x, y, p, t_first, span, width, height, out, cutoff):
    """Count events into out uint8 [2, B, H, W], clipped at `cutoff`; returns the index of
    the first event outside the sensor or with p not in {0, 1}, OUT_OF_RANGE for one
    outside [t_first, t_first + span] (nothing written for either), or -1."""
    nb = out.shape[1]
    d = max(span, 1)
    # [lo, hi) is the range of t - t_first that maps to bin b: time-sorted input stays in
    # it and needs no division; hi of the last bin is span + 1.
    b, lo, hi = 0, 0, -1
    for i in range(t.shape[0]):
        xi, yi, pi = x[i], y[i], p[i]
        if xi < 0 or xi >= width or yi < 0 or yi >= height or (pi != 0 and pi != 1):
            return i
        u = t[i] - t_first
        if u < lo or u >= hi:
            if u < 0 or u > span:
                return OUT_OF_RANGE
            b = min(nb * u // d, nb - 1)
            lo = (b * d + nb - 1) // nb
            hi = ((b + 1) * d + nb - 1) // nb if b < nb - 1 else span + 1
        c = out[pi, b, yi, xi]
        if c < cutoff:
            out[pi, b, yi, xi] = c + 1
    return -1


def to_stacked_histogram(events: np.ndarray, sensor_size, n_bins: int = 10,
                         cutoff: int = 10) -> np.ndarray:
    """uint8 [2*n_bins, H, W] stacked histogram of one window of EVENT_DTYPE [N] events.

    `sensor_size`: SensorSize or (width, height); t in microseconds. Channel p*n_bins + b
    holds min(cutoff, count) of polarity p in time bin b (module docstring). Events outside
    the sensor or with p not in {0, 1} raise ConfigError.
    """
    n_bins = check_int("n_bins", n_bins, 1, MAX_BINS)
    cutoff = check_int("cutoff", cutoff, 1, 255)
    size = as_sensor_size(sensor_size)
    out = np.zeros((2, n_bins, size.height, size.width), np.uint8)
    run_event_kernel(_stacked_histogram, event_fields(events), size, out, cutoff)
    return out.reshape(2 * n_bins, size.height, size.width)


@dataclass(frozen=True)
class StackedHistogramParams:
    """Parameters of the `stacked_histogram` encoding (record field `stacked_histogram`)."""

    n_bins: int = field(default=10, metadata={"help": f"time bins, 1..{MAX_BINS}"})
    cutoff: int = field(default=10, metadata={"help": "per-cell count clip, 1..255"})

    def __post_init__(self):
        check_int("n_bins", self.n_bins, 1, MAX_BINS)
        check_int("cutoff", self.cutoff, 1, 255)

    def encode(self, events: np.ndarray, sensor_size=None, sample_id=None) -> dict[str, np.ndarray]:
        """Record fields for one window of events [N]: `stacked_histogram`."""
        return {"stacked_histogram": to_stacked_histogram(events, sensor_size, self.n_bins,
                                                          self.cutoff)}


ENCODINGS.register("stacked_histogram")(Encoding(
    "stacked_histogram", StackedHistogramParams, inputs=("events",),
    fixed=("stacked_histogram",),
    summary="RVT stacked histogram: 2*B channels of clipped counts, polarity-major"))
