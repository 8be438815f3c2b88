"""Poisson (Bernoulli rate) coding, as snnTorch `spikegen.rate` and SpikingJelly
`PoissonEncoder` define it.

For values x, p = clamp(gain * x + offset, 0, 1) (snnTorch `spikegen.rate`) and spike
s_t = 1[u_t < p] with u_t ~ U[0, 1) independent per time step and element (SpikingJelly
`PoissonEncoder` draws `rand_like(x) <= x` once per step). Output is time-first
[T, *x.shape].

Random bits: p is quantised to q = round(p * 65536) and each spike compares a 16-bit
uniform draw u with q, so P(s = 1) = q / 65536 exactly (within 2^-17 of p; p = 0 never
and p = 1 always fires). The draws are the four 16-bit lanes, low bits first, of the
words of SplitMix64 (Steele, Lea & Flood, OOPSLA 2014; Java's SplittableRandom) keyed by
one 64-bit draw from the NumPy Generator: element g of the flat output uses lane g % 4 of
word g // 4, and word i = mix(key + (i + 1) * 0x9E3779B97F4A7C15). Every word is computed
from its own counter, so the output is the same for any thread count or block order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange

from ..errors import ConfigError
from ..events import as_sensor_size
from .base import ENCODINGS, Encoding, as_generator, sample_rng

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_LEVELS = 65536          # resolution of p: 1 / 65536
_BLOCK = 1 << 16         # elements per parallel block (a multiple of 4: word aligned)


@njit(cache=True, nogil=True, inline="always")
def _splitmix(key, i):
    """Word i (0-based) of the SplitMix64 stream seeded with `key`."""
    z = key + (i + np.uint64(1)) * _GAMMA
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def _quantise(x, gain, offset, q):
    """q[i] = round(clamp(gain * x[i] + offset, 0, 1) * 65536) as uint32; returns the
    index of the first NaN of the result, or -1."""
    for i in range(x.size):
        p = gain * np.float64(x[i]) + offset
        if p != p:
            return i
        p = min(max(p, 0.0), 1.0)
        q[i] = np.uint32(np.floor(p * _LEVELS + 0.5))
    return -1


@njit(cache=True, nogil=True)
def _words(q, j, out, g, key, word, n_words):
    """`n_words` whole words: out[g + l] = 1[lane l < q[j + l]] for l < 4 * n_words."""
    m = np.uint64(0xFFFF)
    for w in range(n_words):
        z = _splitmix(key, word + np.uint64(w))
        o = g + 4 * w
        k = j + 4 * w
        out[o] = np.uint8((z & m) < q[k])
        out[o + 1] = np.uint8(((z >> np.uint64(16)) & m) < q[k + 1])
        out[o + 2] = np.uint8(((z >> np.uint64(32)) & m) < q[k + 2])
        out[o + 3] = np.uint8((z >> np.uint64(48)) < q[k + 3])


@njit(cache=True, nogil=True, parallel=True)
def _bernoulli(q, steps, key, out):
    """out[t * n + j] = 1[u < q[j]] for t < steps, j < n = q.size (out uint8 [steps * n])."""
    n = q.size
    total = steps * n
    if n == 0 or out.size != total:
        raise ValueError("poisson: output size does not match steps * q.size")
    n_blocks = (total + _BLOCK - 1) // _BLOCK
    for b in prange(n_blocks):
        g = b * _BLOCK
        end = min(g + _BLOCK, total)
        j = g % n
        while g < end:
            # Whole words that neither wrap around q nor cross the block end...
            n_words = min(end - g, n - j) // 4
            _words(q, j, out, g, key, np.uint64(g >> 2), n_words)
            g += 4 * n_words
            j += 4 * n_words
            if j == n:
                j = 0
            if g >= end:
                break
            # ...then one word lane by lane (g stays word aligned).
            z = _splitmix(key, np.uint64(g >> 2))
            for _ in range(4):
                if g >= end:
                    break
                out[g] = np.uint8((z & np.uint64(0xFFFF)) < q[j])
                z >>= np.uint64(16)
                g += 1
                j += 1
                if j == n:
                    j = 0


def poisson(x, T: int, seed=None, gain: float = 1.0, offset: float = 0.0,
            dtype=np.uint8) -> np.ndarray:
    """Bernoulli rate coding of real values `x` (any shape) over `T` time steps.

    Returns [T, *x.shape] of `dtype` (np.uint8 0/1, or bool) with
    P(s_t = 1) = clamp(gain * x + offset, 0, 1) quantised to 1/65536 (module docstring).
    `seed`: int, np.random.Generator (advanced by one 64-bit draw) or None (fresh entropy,
    not reproducible). Equal inputs and seed give equal bytes in any process. NaN
    probabilities raise ConfigError. After snnTorch `spikegen.rate(data, num_steps, gain,
    offset)` and SpikingJelly `PoissonEncoder`.
    """
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise ConfigError(f"poisson: x must be a real numeric array, got dtype {a.dtype}")
    if isinstance(T, (bool, np.bool_)) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ConfigError(f"poisson: T must be an int >= 1, got {T!r}")
    if not (np.isfinite(gain) and np.isfinite(offset)):
        raise ConfigError(f"poisson: gain and offset must be finite, got {gain}, {offset}")
    out_dtype = np.dtype(dtype)
    if out_dtype not in (np.dtype(np.uint8), np.dtype(bool)):
        raise ConfigError(f"poisson: dtype must be uint8 or bool, got {out_dtype}")
    rng = as_generator(seed)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    flat = np.ascontiguousarray(a).reshape(-1)
    q = np.empty(flat.size, np.uint32)
    bad = _quantise(flat, float(gain), float(offset), q)
    if bad >= 0:
        raise ConfigError(f"poisson: gain * x + offset is NaN at flat index {bad}")
    key = rng.integers(0, 1 << 64, dtype=np.uint64)
    out = np.empty((int(T),) + a.shape, np.uint8)
    if q.size:
        _bernoulli(q, int(T), key, out.reshape(-1))
    return out.view(bool) if out_dtype == np.dtype(bool) else out


def count_image(events: np.ndarray, sensor_size) -> np.ndarray:
    """int64 [2, H, W] events per (polarity, y, x); coordinates outside the sensor or
    polarities other than 0/1 raise ConfigError."""
    width, height = sensor_size
    x, y, p = events["x"], events["y"], events["p"]
    if len(events):
        lo = min(int(x.min()), int(y.min()))
        if lo < 0 or int(x.max()) >= width or int(y.max()) >= height:
            raise ConfigError(f"event coordinates outside the {width}x{height} sensor "
                              f"(x in {x.min()}..{x.max()}, y in {y.min()}..{y.max()})")
        if int(p.min()) < 0 or int(p.max()) > 1:
            raise ConfigError(f"event polarities must be 0 or 1, got {p.min()}..{p.max()}")
    flat = (p.astype(np.int64) * height + y) * width + x
    return np.bincount(flat, minlength=2 * height * width).reshape(2, height, width)


@dataclass(frozen=True)
class PoissonParams:
    """Parameters of the `poisson` encoding.

    events EVENT_DTYPE [N] (with `sensor_size`): the sample's per-polarity count image
    [2, H, W] divided by `scale` (None: by its largest count) is rate coded ->
    `spikes` uint8 [steps, 2, H, W]. Spike-camera frames uint8/bool [T', H, W] (0/1): the
    per-pixel mean spike rate [1, H, W] is rate coded -> `spikes` uint8 [steps, 1, H, W].
    Spikes are drawn with sample_rng(seed, sample id).
    """

    steps: int = field(default=16, metadata={"help": "time steps T of the rate code"})
    gain: float = field(default=1.0, metadata={"help": "p = clamp(gain * x + offset, 0, 1)"})
    offset: float = field(default=0.0, metadata={"help": "p = clamp(gain * x + offset, 0, 1)"})
    scale: float | None = field(
        default=None, metadata={"help": "events per pixel for x = 1 (default: the sample's "
                                        "largest count)"})
    seed: int = field(default=0, metadata={"help": "seed; each sample draws from (seed, id)"})

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"steps must be an int >= 1, got {self.steps!r}")
        if not (np.isfinite(self.gain) and np.isfinite(self.offset)):
            raise ConfigError(f"gain and offset must be finite, got {self.gain}, {self.offset}")
        if self.scale is not None and not (np.isfinite(self.scale) and self.scale > 0):
            raise ConfigError(f"scale must be > 0 or None, got {self.scale}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an int >= 0, got {self.seed!r}")

    def encode(self, x: np.ndarray, sensor_size=None, sample_id=None) -> dict[str, np.ndarray]:
        """Record fields for one sample: `spikes` uint8 [steps, C, H, W]."""
        x = np.asarray(x)
        if x.dtype.names is not None:
            if not {"x", "y", "p"} <= set(x.dtype.names):
                raise ConfigError("poisson: events need fields x, y, p", sample_id=sample_id)
            if sensor_size is None:
                raise ConfigError("poisson: events need a sensor_size", sample_id=sample_id)
            counts = count_image(x, as_sensor_size(sensor_size))
            scale = self.scale if self.scale is not None else max(int(counts.max()), 1)
            values = counts / np.float64(scale)
        elif x.ndim == 3 and x.dtype.kind in "bu":
            values = x.mean(axis=0, dtype=np.float64)[None]
        else:
            raise ConfigError(f"poisson: expected events or spike frames [T, H, W] of 0/1, "
                              f"got dtype {x.dtype} shape {x.shape}", sample_id=sample_id)
        rng = sample_rng(self.seed, sample_id)
        return {"spikes": poisson(values, self.steps, rng, self.gain, self.offset)}

    def stats(self, record: dict) -> dict:
        return {"spikes": int(np.count_nonzero(record["spikes"]))}


ENCODINGS.register("poisson")(Encoding(
    "poisson", PoissonParams, inputs=("events", "spikes"), fixed=("spikes",),
    summary="Bernoulli rate coding of count images or spike rates (snnTorch spikegen.rate)"))
