"""Prophesee DAT (Gen1 `*_td.dat`, N-CARS; "DAT v2").

Header: '% ' text lines, then (only if there was a header) one byte event type and one
byte event size. Records are 8 bytes LE: uint32 ts (us), uint32 w with x = bits 0-13,
y = bits 14-27 and polarity from the 4-bit field bits 28-31, of which the Prophesee
toolbox keeps bit 28 (prophesee-automotive-dataset-toolbox src/io/dat_events_tools.py).
`read()` decodes on as many threads as Numba uses (NUMBA_NUM_THREADS); chunked reads
use one.
The 32-bit timestamp wraps every 2^32 us: consecutive timestamps are taken to differ
by less than 2^31 us, so a drop of more than 2^31 counts as a wrap (Gen1 timestamps
jitter backwards by small amounts, which are kept as they are). Files written by evpipe
may carry `% evpipe_time_base_us N`, added to every timestamp (other readers ignore it).
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import get_num_threads, njit

from ..errors import ConfigError
from ..events import EVENT_DTYPE, SensorSize
from .base import FORMATS, WRITERS, EventReader, parse_percent_header
from .kernels import unwrap32

EVENT_TYPES = {0: "Event2d", 12: "EventCD"}
DEFAULT_GEOMETRY = SensorSize(304, 240)  # ATIS / Gen1, when the header has none
PARALLEL_MIN_EVENTS = 1 << 18  # per thread, for read()


@njit(cache=True, nogil=True)
def _decode(words, out, state):
    """words uint32 [2n] (ts, w pairs) -> out[:n].

    state int64 [3] = (time base incl. wraps, last 32-bit ts, started flag).
    """
    base = state[0]
    last = state[1]
    for i in range(out.shape[0]):
        ts = np.int64(words[2 * i])
        w = words[2 * i + 1]
        if state[2]:
            base = unwrap32(ts, last, base)
        state[2] = 1
        last = ts
        e = out[i]
        e.t = base + ts
        e.x = w & 0x3FFF
        e.y = (w >> 14) & 0x3FFF
        e.p = (w >> 28) & 1
    state[0] = base
    state[1] = last


@FORMATS.register("dat")
class DatReader(EventReader):
    """Prophesee DAT CD events; geometry from Height/Width lines, else 304x240 (noted in
    `metadata["geometry"]`)."""

    format = "dat"
    extensions = (".dat",)
    parallel_runs = 0  # read(): number of runs; 0 = one per Numba thread for big files

    @classmethod
    def sniff(cls, head: bytes) -> int:
        if head.startswith(b"% Data file containing"):
            return 2
        text = head[:4096]
        raw_keys = (b"% evt ", b"% format ", b"% plugin_name ", b"% system_ID ")
        if head.startswith(b"% ") and not any(k in text for k in raw_keys):
            return 1
        return 0

    def _open(self) -> None:
        lines, pos = parse_percent_header(self)
        meta = {"header": lines}
        if lines:
            head = self.read_bytes_at(pos, 2)
            if len(head) < 2:
                raise self.error("file ends inside the event type/size bytes", offset=pos)
            etype, esize = head[0], head[1]
            pos += 2
        else:
            etype, esize = 0, 8  # legacy file without header (toolbox convention)
        if esize != 8:
            raise self.error(f"event size {esize} bytes, DAT CD events are 8", offset=pos - 1)
        if etype not in EVENT_TYPES:
            raise self.error(f"event type {etype} is not a CD event type (0 or 12)",
                             offset=pos - 2)
        meta["event_type"] = EVENT_TYPES[etype]
        geometry = {}
        self.time_base = 0
        for line in lines:
            m = re.match(r"evpipe_time_base_us\s+(-?\d+)", line.strip())
            if m:
                self.time_base = int(m.group(1))
            m = re.match(r"(Height|Width)\s+(\d+)", line.strip())
            if m:
                geometry[m.group(1)] = int(m.group(2))
            m = re.match(r"Data file containing (\S+) events", line.strip())
            if m:
                meta["type_name"] = m.group(1)
        if "Height" in geometry and "Width" in geometry:
            self.sensor_size = SensorSize(geometry["Width"], geometry["Height"])
            meta["geometry"] = "header"
        else:
            self.sensor_size = DEFAULT_GEOMETRY
            meta["geometry"] = "assumed 304x240 (ATIS/Gen1): no Height/Width in the header"
        self.data_offset = pos
        self.n_events = (self.file_size - pos) // 8
        self.metadata = meta

    def _check_tail(self) -> None:
        extra = (self.file_size - self.data_offset) % 8
        if extra:
            self.warn(f"{extra} trailing bytes are not a whole 8-byte event; ignored",
                      offset=self.file_size - extra)

    def _state(self) -> np.ndarray:
        return np.array([self.time_base, 0, 0], np.int64)

    def _decode(self):
        state = self._state()
        end = self.data_offset + 8 * self.n_events
        for _, buf in self.byte_blocks(self.data_offset, end, align=8):
            out = np.empty(len(buf) // 8, EVENT_DTYPE)
            _decode(buf.view("<u4"), out, state)
            yield out
        self._check_tail()

    def read(self) -> np.ndarray:
        """All events; the file is cut into one run of records per Numba thread, each
        read (pread, no shared file position) and decoded by its own Python thread (the
        kernel releases the GIL), then the runs' 32-bit wraps are chained."""
        n = self.n_events
        out = np.empty(n, EVENT_DTYPE)
        k = self.parallel_runs or max(1, min(get_num_threads(), n // PARALLEL_MIN_EVENTS))
        bounds = [s * n // k for s in range(k + 1)]
        if k == 1:
            runs = [self._decode_run(out, 0, n)]
        else:
            with ThreadPoolExecutor(k) as pool:
                runs = list(pool.map(lambda s: self._decode_run(out, bounds[s], bounds[s + 1]),
                                     range(k)))
        base, last = self.time_base, None
        for (lo, hi), (first, state) in zip(zip(bounds, bounds[1:]), runs):
            if hi == lo:
                continue
            if last is not None:
                base += unwrap32(first, last, 0)
            if base:
                out["t"][lo:hi] += base
            base += int(state[0])
            last = int(state[1])
        self._check_tail()
        return out

    def _decode_run(self, out: np.ndarray, lo: int, hi: int) -> tuple[int, np.ndarray]:
        """Decode records [lo, hi) into out[lo:hi] with time base 0; returns the run's
        first raw timestamp and its final state (wrap base, last raw timestamp)."""
        state = np.zeros(3, np.int64)
        buf = np.empty(min(self.block_bytes, 8 * (hi - lo)) // 8 * 8, np.uint8)
        fd = self._f.fileno()
        i = lo
        while i < hi:
            m = min(len(buf) // 8, hi - i)
            offset = self.data_offset + 8 * i
            if os.preadv(fd, [memoryview(buf)[:8 * m]], offset) != 8 * m:
                raise self.error("file shrank while being read", offset=offset)
            _decode(buf[:8 * m].view("<u4"), out[i:i + m], state)
            i += m
        return (int(out[lo]["t"]) if hi > lo else 0), state


def dat_header(sensor_size: SensorSize, time_base: int = 0) -> bytes:
    """Header lines plus the type/size bytes of a DAT v2 EventCD file."""
    return (f"% Data file containing EventCD events.\n% Version 2\n"
            f"% Height {sensor_size.height}\n% Width {sensor_size.width}\n"
            + (f"% evpipe_time_base_us {time_base}\n" if time_base else "")).encode() + bytes([12, 8])


def dat_records(events: np.ndarray) -> bytes:
    """8-byte records of `events`, timestamps modulo 2^32."""
    words = np.empty((len(events), 2), "<u4")
    words[:, 0] = events["t"] & 0xFFFFFFFF
    words[:, 1] = (events["x"].astype(np.uint32) | (events["y"].astype(np.uint32) << 14)
                   | (events["p"].astype(np.uint32) << 28))
    return words.tobytes()


@WRITERS.register("dat")
def write_dat(path, events: np.ndarray, sensor_size: SensorSize) -> None:
    """DAT v2 with Height/Width lines and type 12 (EventCD). Timestamps are stored modulo
    2^32 with `% evpipe_time_base_us` holding the rest; consecutive events must be less
    than 2^31 us apart."""
    t = events["t"]
    if len(t) and np.abs(np.diff(t)).max(initial=0) >= 1 << 31:
        raise ConfigError("consecutive timestamps 2^31 us or more apart do not fit DAT's "
                          "32-bit clock")
    base = int(t[0]) - int(t[0]) % (1 << 32) if len(t) else 0
    with open(path, "wb") as f:
        f.write(dat_header(sensor_size, base))
        f.write(dat_records(events))
