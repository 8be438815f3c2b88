"""Time surfaces (HOTS, Lagorce et al., TPAMI 2016), global over the sensor, as tonic
`functional/to_timesurface.py::to_timesurface_numpy` (overlap=0).

A memory M(p, y, x) holds the latest timestamp of each pixel (-inf before its first
event). The events are cut into slices [t0 + k dt, t0 + (k+1) dt) from the first
timestamp t0; at the end of slice k, t_k = t0 + (k+1) dt:
TS_k(p, y, x) = exp(-(t_k - M(p, y, x)) / tau), 0 for pixels never hit.
K = floor((t_last - t0) / dt) complete slices, or ceil(...) with `include_incomplete`,
and at least 1, as tonic's SliceByTime counts them (a recording shorter than dt gives
one slice); events at or after t0 + K dt do not show. Output float32 [K, 2, H, W]; empty
input gives K = 0 (tonic raises).

Events must be time-sorted (tonic slices with searchsorted); unsorted input raises
ConfigError. tonic's `overlap` is not offered: its windows overlap but the surface is
still evaluated at t0 + (k+1) dt, not at each window's end.

Pixels hit in slice k get exp(-(t_k - M) / tau) by tonic's formula; the others decay
from the previous slice by exp(-dt / tau) in float64, equal to tonic's value to about
1e-15 relative before the float32 cast. The kernel is O(N + K*H*W).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from ..errors import ConfigError
from ..events import as_sensor_size
from .base import ENCODINGS, Encoding
from .frames import MAX_SPAN_US, check_int, event_fields, raise_bad_event

# Output cap (float32 values, 4 GiB): dt_us against a hostile time span cannot demand more.
MAX_VALUES = 1 << 30
# Decayed values below this are 0 in float32 anyway; flushing them avoids slow subnormals.
_FLUSH = 1e-50
# Longest age (us) whose exp(-age / tau) the kernel tabulates (8 MiB of float64).
_TABLE_MAX = 1 << 20


@njit(cache=True, nogil=True)
def _emit_slice(row, state, decay):
    """row [2*H*W] = state (the surface at the slice end); then decay state by one slice."""
    for c in range(row.shape[0]):
        s = state[c]
        row[c] = s
        s *= decay
        state[c] = s if s >= _FLUSH else 0.0


@njit(cache=True, nogil=True)
def _time_surface(t, x, y, p, t0, dt, tau, width, height, out):
    """Fill out float32 [K, 2, H, W] with the surfaces at t0 + (k+1) dt; returns the index
    of the first event outside the sensor, with p not in {0, 1} or earlier than its
    predecessor (nothing written for it), or -1. Events after the last slice are checked
    too.

    state[c] holds the surface at the end t_end of the current slice: an event sets it to
    exp(-(t_end - t) / tau), so the latest event of a pixel wins (M = latest timestamp),
    and pixels without events carry the previous value times exp(-dt / tau).
    """
    n_slices = out.shape[0]
    flat = out.reshape((n_slices, 2 * height * width))
    n = t.shape[0]
    # exp(-d / tau) for ages d = t_end - t (1 <= d <= dt), tabulated up to a size that the
    # events can repay; time-sorted events read it in order.
    table = np.empty(min(dt, n, _TABLE_MAX) + 1, np.float64)
    for d in range(table.shape[0]):
        table[d] = math.exp(-float(d) / tau)
    state = np.zeros(2 * height * width, np.float64)
    decay = math.exp(-dt / tau)
    k = 0
    t_end = t0 + dt
    prev = t0
    for i in range(n):
        ti, xi, yi, pi = t[i], x[i], y[i], p[i]
        if xi < 0 or xi >= width or yi < 0 or yi >= height or (pi != 0 and pi != 1) or \
                ti < prev:
            return i
        prev = ti
        while ti >= t_end and k < n_slices:
            _emit_slice(flat[k], state, decay)
            k += 1
            t_end += dt
        if k < n_slices:
            d = t_end - ti
            state[(pi * height + yi) * width + xi] = \
                table[d] if d < table.shape[0] else math.exp(-float(d) / tau)
    while k < n_slices:
        _emit_slice(flat[k], state, decay)
        k += 1
    return -1


def check_tau(tau_us) -> float:
    """`tau_us` as a finite float > 0, else ConfigError."""
    try:
        tau = float(tau_us)
    except (TypeError, ValueError):
        tau = math.nan
    if isinstance(tau_us, bool) or not (0 < tau < math.inf):
        raise ConfigError(f"tau_us must be a number > 0 (microseconds), got {tau_us!r}")
    return tau


def to_time_surface(events: np.ndarray, sensor_size, dt_us: int, tau_us: float,
                    include_incomplete: bool = False) -> np.ndarray:
    """float32 [K, 2, H, W] time surfaces of time-sorted EVENT_DTYPE [N] events.

    `sensor_size`: SensorSize or (width, height); `dt_us` slice length and `tau_us` decay
    constant in microseconds. Definition and K in the module docstring. Events outside the
    sensor, with p not in {0, 1} or out of time order raise ConfigError.
    """
    dt = check_int("dt_us", dt_us, 1, MAX_SPAN_US)
    tau = check_tau(tau_us)
    size = as_sensor_size(sensor_size)
    t, x, y, p = event_fields(events)
    if len(t) == 0:
        return np.zeros((0, 2, size.height, size.width), np.float32)
    t0 = int(t[0])
    span = max(int(t[-1]) - t0, 0)
    if span > MAX_SPAN_US:
        raise ConfigError(f"events span {span} us, more than the {MAX_SPAN_US} us "
                          "this encoder accepts")
    n_slices = max(-(-span // dt) if include_incomplete else span // dt, 1)
    if n_slices * 2 * size.height * size.width > MAX_VALUES:
        raise ConfigError(f"dt_us={dt} cuts the {span} us of events into {n_slices} slices of "
                          f"2x{size.height}x{size.width}, more than {MAX_VALUES} values; "
                          "raise dt_us")
    out = np.empty((n_slices, 2, size.height, size.width), np.float32)
    bad = _time_surface(t, x, y, p, t0, dt, tau, size.width, size.height, out)
    if bad >= 0:
        raise_bad_event(bad, t, x, y, p, size)
    return out


@dataclass(frozen=True)
class TimeSurfaceParams:
    """Parameters of the `time_surface` encoding (record field `time_surface`, ragged
    along K)."""

    dt_us: int = field(default=50_000, metadata={"help": "slice length, microseconds"})
    tau_us: float = field(default=50_000.0, metadata={"help": "decay constant, microseconds"})
    include_incomplete: bool = field(default=False, metadata={
        "help": "keep the last, incomplete slice (tonic's include_incomplete)"})

    def __post_init__(self):
        check_int("dt_us", self.dt_us, 1, MAX_SPAN_US)
        object.__setattr__(self, "tau_us", check_tau(self.tau_us))
        if not isinstance(self.include_incomplete, (bool, np.bool_)):
            raise ConfigError("include_incomplete must be true or false, got "
                              f"{self.include_incomplete!r}")

    def encode(self, events: np.ndarray, sensor_size=None, sample_id=None) -> dict[str, np.ndarray]:
        """Record fields for time-sorted events [N]: `time_surface` [K, 2, H, W]."""
        return {"time_surface": to_time_surface(events, sensor_size, self.dt_us, self.tau_us,
                                                self.include_incomplete)}

    def stats(self, record: dict) -> dict:
        return {"slices": len(record["time_surface"])}


ENCODINGS.register("time_surface")(Encoding(
    "time_surface", TimeSurfaceParams, inputs=("events",),
    summary="global exponential time surfaces per dt slice (HOTS, tonic definition)"))
