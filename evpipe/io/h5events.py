"""evpipe's own event HDF5 (format name `h5`, extensions `.h5`, `.hdf5`).

Layout, version 1 (plain `h5py` + `import hdf5plugin` reads it without evpipe):
- `/events/t` int64 (us), `/events/x` uint16, `/events/y` uint16, `/events/p` int8
  (0 = OFF, 1 = ON): [n] each, in recording order, chunked by `CHUNK_EVENTS` and
  compressed with the shard codec (Blosc LZ4 + shuffle, `evpipe.shards.format.compression`).
- `/index/t_to_idx` int64 [K + 1]: entry k is the first event index i whose running
  maximum `max(t[:i+1])` is >= `t0_us + k * index_dt_us`, and entry K is n. With
  `index_dt_us` = 1000 this is Prophesee's HDF5 `ms_to_idx` (metavision
  `EventsIterator` / RVT `ms_to_idx`); the running maximum keeps it valid for the
  non-monotonic timestamps Gen1 recordings contain. The bin is widened beyond 1 ms only
  where the span would make K exceed max(n, `MIN_INDEX_BINS`).
- Root attributes: `format` = "evpipe-events", `version`, `width`, `height`, `n_events`,
  `t0_us` (first event's time, 0 when empty), `index_dt_us`, `monotonic` (timestamps
  non-decreasing).

`read_time_range` seeks through the index; `iter_chunks` and `read` stream
`block_events` at a time.
"""

from __future__ import annotations

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter for reading)
import numpy as np

from ..errors import ConfigError
from ..events import EVENT_DTYPE, SensorSize, as_sensor_size, empty_events
from ..shards.format import compression
from .base import FORMATS, WRITERS, EventReader

FORMAT = "evpipe-events"
VERSION = 1
MAGIC = b"\x89HDF\r\n\x1a\n"
CHUNK_EVENTS = 1 << 16
INDEX_DT_US = 1000
MIN_INDEX_BINS = 1 << 16
MAX_EXPANSION = 1024  # decoded bytes per file byte accepted (LZ4 tops out near 255)
FIELDS = ("t", "x", "y", "p")


def time_index(t: np.ndarray) -> tuple[int, int, np.ndarray]:
    """(t0_us, dt_us, t_to_idx int64 [K + 1]) for timestamps `t` (int64 us, any order)."""
    n = len(t)
    if n == 0:
        return 0, INDEX_DT_US, np.zeros(1, np.int64)
    t0 = int(t[0])
    run_max = np.maximum.accumulate(t)
    span = int(run_max[-1]) - t0  # Python int: int64 extremes do not overflow
    cap = max(n, MIN_INDEX_BINS)
    dt = max(INDEX_DT_US, -(-(span + 1) // cap))
    k = span // dt + 1
    # Offsets from t0 fit uint64 (two's-complement wrap of the int64 difference).
    rel = (run_max - np.int64(t0)).view(np.uint64)
    edges = np.arange(k, dtype=np.uint64) * np.uint64(dt)
    index = np.empty(k + 1, np.int64)
    index[:k] = np.searchsorted(rel, edges, side="left")
    index[k] = n
    return t0, dt, index


@WRITERS.register("h5")
def write_h5(path, events: np.ndarray, sensor_size: SensorSize) -> None:
    """Write EVENT_DTYPE events and their time index (layout in the module docstring)."""
    t = np.ascontiguousarray(events["t"])
    t0, dt, index = time_index(t)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        f.attrs["width"] = sensor_size.width
        f.attrs["height"] = sensor_size.height
        f.attrs["n_events"] = len(t)
        f.attrs["t0_us"] = t0
        f.attrs["index_dt_us"] = dt
        f.attrs["monotonic"] = bool(np.all(t[1:] >= t[:-1]))
        for name in FIELDS:
            f.create_dataset(f"events/{name}", data=np.ascontiguousarray(events[name]),
                             chunks=(CHUNK_EVENTS,), maxshape=(None,), **compression())
        f.create_dataset("index/t_to_idx", data=index, chunks=(min(CHUNK_EVENTS, len(index)),),
                         **compression())


@FORMATS.register("h5")
class H5EventsReader(EventReader):
    """evpipe event HDF5; rejects other HDF5 files (shards, Prophesee HDF5, ...)."""

    format = "h5"
    extensions = (".h5", ".hdf5")

    @classmethod
    def sniff(cls, head: bytes) -> int:
        if not head.startswith(MAGIC):
            return 0
        # The root attributes are written first, so they sit in the first object header.
        return 2 if FORMAT.encode() in head else 1

    def _open(self) -> None:
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as e:
            raise self.error(f"not a readable HDF5 file ({e})", offset=0) from None
        try:
            self._check()
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
            self._h5.close()
            raise self.error(f"corrupt event HDF5 ({type(e).__name__}: {e})") from None
        except BaseException:
            self._h5.close()
            raise

    def _check(self) -> None:
        f = self._h5
        fmt = f.attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode("utf-8", "replace")
        if not isinstance(fmt, str) or fmt != FORMAT:
            raise self.error(f"HDF5 file is not an evpipe event file: root attribute "
                             f"'format' is {fmt!r}, expected {FORMAT!r}", offset=0)
        attrs = {}
        for key in ("version", "width", "height", "n_events", "t0_us", "index_dt_us"):
            value = f.attrs.get(key)
            if not isinstance(value, (int, np.integer)):
                raise self.error(f"root attribute {key!r} missing or not an integer", offset=0)
            attrs[key] = int(value)
        if attrs["version"] != VERSION:
            raise self.error(f"event HDF5 version {attrs['version']}; this evpipe reads "
                             f"version {VERSION}", offset=0)
        try:
            self._geometry = as_sensor_size((attrs["width"], attrs["height"]))
        except ConfigError as e:
            raise self.error(f"bad geometry attributes: {e.message}", offset=0) from None
        self.sensor_size = self._geometry
        n = attrs["n_events"]
        if n < 0 or n * EVENT_DTYPE.itemsize > MAX_EXPANSION * max(self.file_size, 1 << 16):
            raise self.error(f"n_events {n} does not fit a file of {self.file_size} bytes",
                             offset=0)
        self._ds = {}
        for name in FIELDS:
            ds = f.get(f"events/{name}")
            if not isinstance(ds, h5py.Dataset):
                raise self.error(f"dataset /events/{name} is missing", offset=0)
            if ds.shape != (n,) or ds.dtype != EVENT_DTYPE[name]:
                raise self.error(f"/events/{name} is {ds.dtype}{list(ds.shape or ())}, "
                                 f"expected {EVENT_DTYPE[name]}[{n}]", offset=0)
            self._ds[name] = ds
        index = f.get("index/t_to_idx")
        if (not isinstance(index, h5py.Dataset) or index.ndim != 1 or index.shape[0] < 1
                or index.dtype != np.int64):
            raise self.error("/index/t_to_idx is missing or not int64 [K + 1]", offset=0)
        if attrs["index_dt_us"] < 1:
            raise self.error(f"index_dt_us {attrs['index_dt_us']} < 1", offset=0)
        self._index = index
        self.n_events = n
        self.t0 = attrs["t0_us"]
        self.index_dt = attrs["index_dt_us"]
        self.monotonic = bool(f.attrs.get("monotonic", False))
        self.metadata = {"version": attrs["version"], "n_events": n, "t0_us": self.t0,
                         "index_dt_us": self.index_dt, "monotonic": self.monotonic}

    def _field(self, name: str, start: int, stop: int) -> np.ndarray:
        try:
            return self._ds[name][start:stop]
        except (OSError, ValueError) as e:
            raise self.error(f"cannot read /events/{name}[{start}:{stop}] ({e})") from None

    def _slice(self, start: int, stop: int) -> np.ndarray:
        """Events [start, stop), checked against the stored geometry and polarity."""
        out = np.empty(stop - start, EVENT_DTYPE)
        for name in FIELDS:
            out[name] = self._field(name, start, stop)
        w, h = self._geometry
        bad = (out["x"] >= w) | (out["y"] >= h) | (out["p"] < 0) | (out["p"] > 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            e = out[i]
            raise self.error(f"event {start + i} (x={e['x']}, y={e['y']}, p={e['p']}) is "
                             f"outside the {w}x{h} sensor or has a polarity other than 0/1")
        return out

    def _ranges(self, start: int, stop: int):
        step = max(CHUNK_EVENTS, self.block_events - self.block_events % CHUNK_EVENTS)
        for a in range(start, stop, step):
            yield a, min(stop, a + step)

    def _decode(self):
        for a, b in self._ranges(0, self.n_events):
            yield self._slice(a, b)

    def read(self) -> np.ndarray:
        return self._slice(0, self.n_events)

    def _index_at(self, k: int) -> int:
        """t_to_idx[k] with k clamped to the index and the value to [0, n]."""
        k = min(max(k, 0), self._index.shape[0] - 1)
        return min(max(int(self._index[k]), 0), self.n_events)

    def read_time_range(self, t_start: int, t_end: int) -> np.ndarray:
        """Events with t_start <= t < t_end, reading only the indexed range (to the end
        of the file for non-monotonic recordings, whose late events may come anywhere
        after)."""
        t_start, t_end = int(t_start), int(t_end)
        if self.n_events == 0 or t_end <= t_start:
            return empty_events()
        lo = self._index_at((t_start - self.t0) // self.index_dt)
        hi = (self._index_at(-(-(t_end - self.t0) // self.index_dt)) if self.monotonic
              else self.n_events)
        parts = []
        for a, b in self._ranges(lo, hi):
            t = self._field("t", a, b)
            keep = np.flatnonzero((t >= t_start) & (t < t_end))
            if len(keep):
                first = int(keep[0])
                block = self._slice(a + first, a + int(keep[-1]) + 1)
                parts.append(block[keep - first])
        return np.concatenate(parts) if parts else empty_events()

    def close(self) -> None:
        h5 = getattr(self, "_h5", None)
        if h5 is not None:
            h5.close()
        super().close()
