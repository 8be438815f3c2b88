"""cAER AEDAT 3.1 event files, e.g. DVS128 Gesture (formats.md §6; docs.inivation.com
AEDAT 3.1; libcaer include/libcaer/events/common.h and polarity.h).

Header: CRLF lines from `#!AER-DAT3.1` to `#!END-HEADER`. Then back-to-back packets: a
28-byte LE header (int16 eventType, int16 eventSource, int32 eventSize, eventTSOffset,
eventTSOverflow, eventCapacity, eventNumber, eventValid) and eventCapacity * eventSize
bytes of events, of which the first eventNumber are in use. Polarity events (type 1,
8 bytes): uint32 data (bit 0 valid mark, bit 1 polarity (1 = ON), bits 2-16 y,
bits 17-31 x; origin top-left) and int32 timestamp; t = eventTSOverflow << 31 | timestamp
(µs). Other packet types are skipped by size; events without the valid mark are dropped.

Decoding is a Numba state machine over blocks read at the position where the previous
block's packets stopped, so packets may straddle blocks and packets of any size
(one event or millions) cost the same per byte; bodies of skipped packets are seeked
over, not read. Size fields are checked (non-negative, eventNumber <= eventCapacity,
polarity eventSize 8) before use and never size an allocation: output blocks are sized
by the bytes read. A file that ends inside a packet yields the events read so far and
a warning.
"""

from __future__ import annotations

import re

import numpy as np
from numba import njit

from ..events import EVENT_DTYPE, SensorSize
from .aedat2 import find_chip, parse_hash_header
from .base import FORMATS, EventReader

HEADER_BYTES = 28
POLARITY = 1
DEFAULT_GEOMETRY = SensorSize(128, 128)  # DVS128 (DVS128 Gesture), when the header has none

# kernel state (int64 array) slots
MODE, REMAIN, NDEC, OVF, PKT_OFF, ERR, N_PKT, N_POL_PKT, N_INVALID, N_OUTSIDE = range(10)
HEADER, EVENTS, SKIP = 0, 1, 2  # MODE values: expecting a header, polarity events, skipping
ERRORS = {
    1: "packet header with a negative size, capacity, number or TS overflow",
    2: "packet header with eventNumber > eventCapacity or eventValid > eventNumber",
    3: "polarity packet with eventSize != 8 or eventTSOffset != 4",
    4: "packet header with eventCapacity > 0 but eventSize 0",
}


@njit(cache=True, nogil=True)
def _i32(b, i):
    v = (np.int64(b[i]) | (np.int64(b[i + 1]) << 8) | (np.int64(b[i + 2]) << 16)
         | (np.int64(b[i + 3]) << 24))
    return v - (np.int64(1) << 32) if v >= (np.int64(1) << 31) else v


@njit(cache=True, nogil=True)
def _decode(buf, start, width, height, out, st):
    """Walk packets in buf (uint8, file bytes from offset `start`), writing valid polarity
    events inside width x height to out (len >= len(buf) // 8).

    st int64 [10]: the state slots above, carried between calls. Returns (events written,
    bytes consumed); stops at the end of buf, or at a bad header with st[ERR] set and
    st[PKT_OFF] its offset.
    """
    n = buf.shape[0]
    i = 0
    k = 0
    mode = st[MODE]
    while True:
        if mode == HEADER:
            if n - i < HEADER_BYTES:
                break
            etype = np.int64(buf[i]) | (np.int64(buf[i + 1]) << 8)
            esize = _i32(buf, i + 4)
            tsoff = _i32(buf, i + 8)
            ovf = _i32(buf, i + 12)
            cap = _i32(buf, i + 16)
            num = _i32(buf, i + 20)
            valid = _i32(buf, i + 24)
            st[PKT_OFF] = start + i
            if esize < 0 or cap < 0 or num < 0 or valid < 0 or ovf < 0:
                st[ERR] = 1
                break
            if num > cap or valid > num:
                st[ERR] = 2
                break
            if etype == POLARITY and (esize != 8 or tsoff != 4):
                st[ERR] = 3
                break
            if cap > 0 and esize == 0:
                st[ERR] = 4
                break
            i += HEADER_BYTES
            st[N_PKT] += 1
            st[REMAIN] = cap * esize  # < 2^62: no overflow
            if etype == POLARITY:
                st[N_POL_PKT] += 1
                st[NDEC] = num
                st[OVF] = ovf
                mode = EVENTS
            else:
                mode = SKIP
        elif mode == EVENTS:
            m = min(st[NDEC], (n - i) // 8)
            base = st[OVF] << 31
            for j in range(m):
                d = np.uint32(_i32(buf, i))
                ts = _i32(buf, i + 4)
                i += 8
                if not d & 1:
                    st[N_INVALID] += 1
                    continue
                x = (d >> 17) & 0x7FFF
                y = (d >> 2) & 0x7FFF
                if x >= width or y >= height:
                    st[N_OUTSIDE] += 1
                    continue
                e = out[k]
                e.t = base | ts
                e.x = x
                e.y = y
                e.p = (d >> 1) & 1
                k += 1
            st[NDEC] -= m
            st[REMAIN] -= 8 * m
            if st[NDEC] > 0:
                break
            mode = SKIP  # unused slots past eventNumber
        else:
            r = min(st[REMAIN], n - i)
            i += r
            st[REMAIN] -= r
            if st[REMAIN] > 0:
                break
            mode = HEADER
    st[MODE] = mode
    return k, i


@FORMATS.register("aedat3")
class Aedat3Reader(EventReader):
    """cAER AEDAT 3.1 polarity events. Geometry from `sizeX`/`sizeY` header entries or a
    known `#Source` device (DVS128, DAVIS240/346/640...), else 128x128 (DVS128 Gesture),
    noted in `metadata["geometry"]`. `metadata["counts"]` holds packet and event counts
    after a full pass."""

    format = "aedat3"
    extensions = (".aedat",)

    @classmethod
    def sniff(cls, head: bytes) -> int:
        return 2 if head.startswith(b"#!AER-DAT3.1") else 0

    def _open(self) -> None:
        lines, pos = parse_hash_header(self, b"#!end-header")
        if not lines or lines[0].strip() != "!AER-DAT3.1":
            raise self.error("not an AEDAT 3.1 file (first line is not #!AER-DAT3.1)",
                             offset=0)
        if lines[-1].strip() != "!END-HEADER":
            raise self.error("header does not end with #!END-HEADER", offset=pos)
        meta = {"version": "3.1", "header": lines, "sources": {}}
        for ln in lines:
            m = re.match(r"Source (\d+):\s*(.*)", ln)
            if m:
                meta["sources"][int(m.group(1))] = m.group(2).strip()
            m = re.match(r"Start-Time:\s*(.*)", ln)
            if m:
                meta["start_time"] = m.group(1).strip()
        text = "\n".join(lines)
        sx = re.search(r"sizeX\W{1,4}(\d+)", text)
        sy = re.search(r"sizeY\W{1,4}(\d+)", text)
        chips = [c for c in map(find_chip, meta["sources"].values()) if c is not None]
        if sx and sy and 0 < int(sx.group(1)) <= 32768 and 0 < int(sy.group(1)) <= 32768:
            self.sensor_size = SensorSize(int(sx.group(1)), int(sy.group(1)))
            meta["geometry"] = "header sizeX/sizeY"
        elif chips:
            self.sensor_size = SensorSize(chips[0].width, chips[0].height)
            meta["geometry"] = f"source device {chips[0].name}"
        else:
            self.sensor_size = DEFAULT_GEOMETRY
            meta["geometry"] = "assumed 128x128 (DVS128): no known source or sizeX/sizeY"
        self.data_offset = pos
        self.metadata = meta

    def _blocks(self, out: np.ndarray | None = None):
        """Decoded blocks, written into consecutive slices of `out` when given."""
        st = np.zeros(10, np.int64)
        w, h = self.sensor_size
        size = max(self.block_bytes, HEADER_BYTES)
        pos, i = self.data_offset, 0
        while pos < self.file_size:
            if st[MODE] == SKIP:  # seek over the rest of a skipped body
                step = min(st[REMAIN], self.file_size - pos)
                pos += step
                st[REMAIN] -= step
                if st[REMAIN] == 0:
                    st[MODE] = HEADER
                continue
            buf = np.frombuffer(self.read_bytes_at(pos, size), np.uint8)
            dst = np.empty(len(buf) // 8, EVENT_DTYPE) if out is None else out[i:]
            k, used = _decode(buf, pos, w, h, dst, st)
            i += k
            yield dst[:k]
            if st[ERR]:
                raise self.error(ERRORS[int(st[ERR])], offset=int(st[PKT_OFF]))
            pos += used
            if used == 0:  # fewer bytes left than a packet header or an event
                break
        self._finish(st, pos)

    def _finish(self, st: np.ndarray, pos: int) -> None:
        self.metadata["counts"] = {
            "packets": int(st[N_PKT]), "polarity_packets": int(st[N_POL_PKT]),
            "invalid_events": int(st[N_INVALID]), "outside_sensor": int(st[N_OUTSIDE])}
        if st[MODE] != HEADER or pos < self.file_size:
            where = int(st[PKT_OFF]) if st[MODE] != HEADER else pos
            self.warn("file ends inside a packet (truncated?); events up to there were read",
                      offset=where)
        if st[N_OUTSIDE]:
            w, h = self.sensor_size
            self.warn(f"{st[N_OUTSIDE]} events outside the {w}x{h} sensor dropped "
                      "(pass sensor_size if the geometry is wrong)")

    def _decode(self):
        return self._blocks()

    def read(self) -> np.ndarray:
        out = np.empty(max(self.file_size - self.data_offset, 0) // 8, EVENT_DTYPE)
        n = sum(len(b) for b in self._blocks(out))
        return out[:n] if 2 * n > len(out) else out[:n].copy()
