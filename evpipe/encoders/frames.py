"""Event frames: per-polarity event counts in n_bins bins [n_bins, 2, H, W], after
SpikingJelly `integrate_events_by_fixed_frames_number` (spikingjelly/datasets/utils.py).

Channel 0 counts OFF events (p == 0), channel 1 ON events (p == 1).
- split_by="number": bin j holds events [j*floor(N/M), (j+1)*floor(N/M)) in input order;
  the last bin takes the rest (up to N).
- split_by="time": dT = (t_last - t_first) // M (integer division); bin j holds
  t in [t_first + j*dT, t_first + (j+1)*dT) and the last bin extends to t_last.
  t_first/t_last are the smallest/largest timestamps, so the result does not depend on
  event order; for time-sorted events they are the first and last event, as in
  SpikingJelly. SpikingJelly raises on an empty bin; here empty bins stay zero.

tonic's ToFrame(n_time_bins=M) / ToFrame(n_event_bins=M) use the same bins but drop what
falls after bin M-1 (events at t >= t_first + M*dT, or the last N - M*floor(N/M)) instead
of adding it to the last bin.

Count dtype: uint16 by default, saturating at 65535 rather than wrapping (tonic's int16
wraps to negative past 32767). uint16 halves shard bytes against int32, and a pixel only
reaches 65535 events of one polarity in one bin when it is a stuck hot pixel; "int32"
keeps exact counts (up to 2^31 - 1), "uint8" saturates at 255.

Spike-camera input (uint8/bool [T, H, W] of 0/1 frames) gives [n_bins, 1, H, W] spike
counts: frames are equally spaced in time, so both split modes put floor(T/M) frames in
each bin and the rest in the last.

This module also holds the input checks shared by the event-tensor encoders.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

from ..errors import ConfigError
from ..events import SensorSize, as_sensor_size
from .base import ENCODINGS, Encoding

COUNT_DTYPES = ("uint8", "uint16", "int32")
SPLIT_BY = ("time", "number")
MAX_BINS = 4096
# Largest accepted t_last - t_first (us, about 35 years): bin arithmetic such as
# n_bins * (t - t_first) stays within int64 and t - t_first is exact in float64.
MAX_SPAN_US = 1 << 50

# Kernel status: an event lies outside [t_first, t_first + span] (see run_event_kernel).
OUT_OF_RANGE = -2


def check_int(name: str, value, lo: int, hi: int) -> int:
    """`value` as an int in lo..hi, else ConfigError naming `name` and the range."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be in {lo}..{hi}, got {value}")
    return int(value)


def check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def event_fields(events) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(t, x, y, p) of a 1-D structured events array, read by field name.

    EVENT_DTYPE and other integer layouts with fields t, x, y, p (tonic's) are accepted;
    t is returned as int64 (microseconds) and a bool p as int8, the others as stored
    (views, no copy).
    """
    names = getattr(getattr(events, "dtype", None), "names", None) or ()
    if not isinstance(events, np.ndarray) or events.ndim != 1 or \
            not {"t", "x", "y", "p"} <= set(names):
        raise ConfigError("events must be a 1-D structured array with fields t, x, y, p, got "
                          f"{getattr(events, 'dtype', type(events).__name__)}")
    cols = [events[k] for k in ("t", "x", "y", "p")]
    for k, c in zip("txyp", cols):
        if c.dtype.kind not in ("iub" if k == "p" else "iu"):
            raise ConfigError(f"events field {k} must be integer, got {c.dtype}")
    if cols[0].dtype != np.int64:
        cols[0] = cols[0].astype(np.int64)
    if cols[3].dtype == np.bool_:
        cols[3] = cols[3].astype(np.int8)
    return cols[0], cols[1], cols[2], cols[3]


def time_span(t: np.ndarray) -> tuple[int, int]:
    """(t_first, t_last) = (min, max) of t; ConfigError when the span exceeds MAX_SPAN_US."""
    t_first, t_last = int(t.min()), int(t.max())
    if t_last - t_first > MAX_SPAN_US:
        raise ConfigError(f"events span {t_last - t_first} us, more than the {MAX_SPAN_US} us "
                          "this encoder accepts")
    return t_first, t_last


def run_event_kernel(kernel, fields, size: SensorSize, out: np.ndarray, *extra) -> None:
    """Fill `out` with kernel(t, x, y, p, t_first, span, width, height, out, *extra).

    t_first and span = t_last - t_first are the min and the max - min of t. The kernel
    first runs with t[0] and t[-1] (time-sorted input needs no extra pass); when it
    reports OUT_OF_RANGE (an event before t[0] or after t[-1]), `out` is cleared and it
    runs again with the true min/max. A rejected event raises ConfigError.
    """
    t, x, y, p = fields
    if len(t) == 0:
        return
    t_first, span = int(t[0]), int(t[-1]) - int(t[0])
    status = OUT_OF_RANGE
    if 0 <= span <= MAX_SPAN_US:
        status = kernel(t, x, y, p, t_first, span, size.width, size.height, out, *extra)
    if status == OUT_OF_RANGE:
        out[...] = 0
        t_first, t_last = time_span(t)
        status = kernel(t, x, y, p, t_first, t_last - t_first, size.width, size.height, out,
                        *extra)
    if status >= 0:
        raise_bad_event(status, t, x, y, p, size)


def raise_bad_event(i: int, t, x, y, p, size: SensorSize) -> None:
    """ConfigError for event `i`, the first one a kernel rejected."""
    xi, yi, pi = int(x[i]), int(y[i]), int(p[i])
    ev = f"event {i} (t={int(t[i])}, x={xi}, y={yi}, p={pi})"
    if pi not in (0, 1):
        raise ConfigError(f"{ev}: polarity must be 0 or 1")
    if not (0 <= xi < size.width and 0 <= yi < size.height):
        raise ConfigError(f"{ev} lies outside the {size.width}x{size.height} sensor")
    raise ConfigError(f"{ev}: timestamps must be non-decreasing (previous t={int(t[i - 1])})")


@njit(cache=True, nogil=True)
def _frames_by_time(t, x, y, p, t_first, span, width, height, out, cap, idx):
    """Count events into out [M, 2, H, W] with dT = span // M; returns the index of the
    first event outside the sensor or with p not in {0, 1}, OUT_OF_RANGE for one outside
    [t_first, t_first + span] (nothing written for either), or -1.

    Two passes: checked flat indices into the scratch `idx` [N] (uint32, or uint64 when
    `out` has 2^32 cells or more), then the saturating scatter, whose loop of independent
    loads runs about 1.5x faster than one fused loop (1M-event 640x480 windows, measured
    here)."""
    m = out.shape[0]
    flat = out.reshape(-1)
    plane = height * width
    dt = span // m
    # [lo, hi) is the time range (relative to t_first) of the current bin b: time-sorted
    # input stays in it and needs no division; hi of the last bin is span + 1.
    b, lo, hi = m - 1, 0, span + 1
    if dt > 0 and m > 1:
        b, hi = 0, dt
    base = 2 * b * plane
    for i in range(t.shape[0]):
        xi, yi, pi = np.int64(x[i]), np.int64(y[i]), np.int64(p[i])
        if xi < 0 or xi >= width or yi < 0 or yi >= height or (pi != 0 and pi != 1):
            return i
        u = t[i] - t_first
        if u < lo or u >= hi:
            if u < 0 or u > span:
                return OUT_OF_RANGE
            b = min(u // dt, m - 1)
            lo = b * dt
            hi = lo + dt if b < m - 1 else span + 1
            base = 2 * b * plane
        idx[i] = base + pi * plane + yi * width + xi
    for i in range(t.shape[0]):
        k = idx[i]
        c = flat[k]
        if c < cap:
            flat[k] = c + 1
    return -1


@njit(cache=True, nogil=True)
def _frames_by_index(x, y, p, starts, width, height, out, cap):
    """Count events starts[b] <= i < starts[b+1] into out[b]; returns as `_frames_by_time`."""
    for b in range(out.shape[0]):
        for i in range(starts[b], starts[b + 1]):
            xi, yi, pi = x[i], y[i], p[i]
            if xi < 0 or xi >= width or yi < 0 or yi >= height or (pi != 0 and pi != 1):
                return i
            c = out[b, pi, yi, xi]
            if c < cap:
                out[b, pi, yi, xi] = c + 1
    return -1


@njit(cache=True, nogil=True)
def _spike_frames(spikes, starts, out, cap):
    """Sum spike frames starts[b] <= f < starts[b+1] into out[b, 0] (saturating at `cap`);
    returns the index of the first frame holding a value other than 0/1, or -1."""
    _, h, w = spikes.shape
    for b in range(out.shape[0]):
        for f in range(starts[b], starts[b + 1]):
            for yy in range(h):
                for xx in range(w):
                    v = spikes[f, yy, xx]
                    if v > 1:
                        return f
                    out[b, 0, yy, xx] = min(np.int64(out[b, 0, yy, xx]) + v, cap)
    return -1


def _count_starts(n: int, n_bins: int) -> np.ndarray:
    """Bin boundaries [n_bins + 1]: floor(n / n_bins) items per bin, the rest in the last."""
    starts = np.arange(n_bins + 1, dtype=np.int64) * (n // n_bins)
    starts[-1] = n
    return starts


def to_frames(events: np.ndarray, sensor_size, n_bins: int, split_by: str = "time",
              dtype: str = "uint16") -> np.ndarray:
    """Event counts per bin and polarity: [n_bins, 2, H, W] of `dtype` (saturating).

    `events`: EVENT_DTYPE [N] (t in microseconds); `sensor_size`: SensorSize or
    (width, height). Or spike-camera frames uint8/bool [T, H, W] of 0/1, giving
    [n_bins, 1, H, W] spike counts (`sensor_size` may then be None). Bins and polarity
    channels follow SpikingJelly (module docstring); empty bins are zeros. Events outside
    the sensor or with p not in {0, 1} raise ConfigError.
    """
    n_bins = check_int("n_bins", n_bins, 1, MAX_BINS)
    check_choice("split_by", split_by, SPLIT_BY)
    check_choice("dtype", dtype, COUNT_DTYPES)
    cap = int(np.iinfo(dtype).max)
    if getattr(getattr(events, "dtype", None), "names", None) is None:
        return _spike_counts(events, sensor_size, n_bins, dtype, cap)
    size = as_sensor_size(sensor_size)
    t, x, y, p = event_fields(events)
    out = np.zeros((n_bins, 2, size.height, size.width), dtype)
    if split_by == "time":
        idx = np.empty(len(t), np.uint32 if out.size < 1 << 32 else np.uint64)
        run_event_kernel(_frames_by_time, (t, x, y, p), size, out, cap, idx)
        return out
    bad = _frames_by_index(x, y, p, _count_starts(len(t), n_bins), size.width, size.height,
                           out, cap)
    if bad >= 0:
        raise_bad_event(bad, t, x, y, p, size)
    return out


def _spike_counts(spikes, sensor_size, n_bins: int, dtype: str, cap: int) -> np.ndarray:
    s = np.asarray(spikes)
    if s.ndim != 3 or s.dtype not in (np.uint8, np.bool_):
        raise ConfigError("spike frames must be uint8 or bool [T, H, W], got "
                          f"{s.dtype} {list(s.shape)}")
    if sensor_size is not None:
        size = as_sensor_size(sensor_size)
        if (size.height, size.width) != s.shape[1:]:
            raise ConfigError(f"spike frames are {s.shape[2]}x{s.shape[1]} (WxH), "
                              f"sensor_size says {size.width}x{size.height}")
    s = np.ascontiguousarray(s).view(np.uint8)
    out = np.zeros((n_bins, 1, s.shape[1], s.shape[2]), dtype)
    bad = _spike_frames(s, _count_starts(len(s), n_bins), out, cap)
    if bad >= 0:
        raise ConfigError(f"spike frame {bad} holds values other than 0 and 1")
    return out


@dataclass(frozen=True)
class FramesParams:
    """Parameters of the `frames` encoding (record field `frames`)."""

    n_bins: int = field(default=10, metadata={"help": f"time bins, 1..{MAX_BINS}"})
    split_by: str = field(default="time", metadata={
        "help": "time (equal durations) or number (equal event counts)"})
    dtype: str = field(default="uint16", metadata={
        "help": "count dtype (saturating): " + ", ".join(COUNT_DTYPES)})

    def __post_init__(self):
        check_int("n_bins", self.n_bins, 1, MAX_BINS)
        check_choice("split_by", self.split_by, SPLIT_BY)
        check_choice("dtype", self.dtype, COUNT_DTYPES)

    def encode(self, x: np.ndarray, sensor_size=None, sample_id=None) -> dict[str, np.ndarray]:
        """Record fields for events [N] or spike frames [T, H, W]: `frames`."""
        return {"frames": to_frames(x, sensor_size, self.n_bins, self.split_by, self.dtype)}


ENCODINGS.register("frames")(Encoding(
    "frames", FramesParams, inputs=("events", "spikes"), fixed=("frames",),
    summary="per-polarity event counts in n_bins time/count bins (SpikingJelly frames)"))
