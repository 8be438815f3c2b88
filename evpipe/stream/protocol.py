"""evpipe's framed event protocol (`tcp://`), version 1.

A sender writes one stream header, then packets. All integers are little-endian.

Stream header, 32 bytes:

    offset size field
    0      4    magic b"EVPS"
    4      2    version, u16 = 1
    6      2    header size, u16 = 32 (readers skip bytes past the fields they know)
    8      4    sensor width, u32 (pixels)
    12     4    sensor height, u32
    16     2    record size, u16 = 13
    18     2    record layout, u16 = 1: t i64 (us), x u16, y u16, p i8 (0 OFF, 1 ON), packed
    20     12   reserved, zero

Packet, 16-byte header then `count * 13` payload bytes (records as above):

    0      4    magic b"EVPK"
    4      2    kind, u16: 1 = events, 2 = end of stream (count 0, no payload)
    6      2    flags, u16: bit 0 = the crc field holds the payload's CRC-32
    8      4    count, u32, at most MAX_PACKET_EVENTS
    12     4    crc, u32: zlib.crc32 of the payload when flag bit 0 is set, else 0

A reader skips and counts a malformed packet: a header with an unknown kind or a count
above MAX_PACKET_EVENTS (the reader then scans for the next b"EVPK"), a CRC mismatch, or
an event outside the sensor or with p not in {0, 1}.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from ..errors import StreamError
from ..events import EVENT_DTYPE
from ..io.base import concat_events
from .kernels import check_events

STREAM_MAGIC = b"EVPS"
PACKET_MAGIC = b"EVPK"
VERSION = 1
HEADER_SIZE = 32
PACKET_HEADER_SIZE = 16
RECORD_SIZE = EVENT_DTYPE.itemsize  # 13
LAYOUT_EVENTS = 1
KIND_EVENTS = 1
KIND_END = 2
FLAG_CRC = 1
MAX_PACKET_EVENTS = 1 << 20

_HEADER = struct.Struct("<4sHHIIHH12x")
_PACKET = struct.Struct("<4sHHII")


def stream_header(width: int, height: int) -> bytes:
    """The 32-byte stream header for a width x height sensor."""
    return _HEADER.pack(STREAM_MAGIC, VERSION, HEADER_SIZE, width, height, RECORD_SIZE,
                        LAYOUT_EVENTS)


def parse_stream_header(data: bytes, where: str) -> tuple[int, int, int]:
    """(width, height, header size in bytes) from the first 32 bytes a sender wrote;
    StreamError when they are not an evpipe stream header of a version this reader knows."""
    if len(data) < HEADER_SIZE:
        raise StreamError(f"stream header is {len(data)} bytes, expected {HEADER_SIZE}",
                          path=where, offset=0)
    magic, version, size, width, height, rec, layout = _HEADER.unpack_from(data)
    if magic != STREAM_MAGIC:
        raise StreamError(f"not an evpipe event stream (magic {magic!r}, expected "
                          f"{STREAM_MAGIC!r})", path=where, offset=0)
    if version != VERSION or size < HEADER_SIZE or rec != RECORD_SIZE or \
            layout != LAYOUT_EVENTS:
        raise StreamError(f"unsupported stream: version {version}, header {size} B, "
                          f"record {rec} B, layout {layout} (this reader knows version "
                          f"{VERSION}, {RECORD_SIZE}-byte records, layout {LAYOUT_EVENTS})",
                          path=where, offset=0)
    if not (0 < width <= 65536 and 0 < height <= 65536):
        raise StreamError(f"sensor size {width}x{height} out of range", path=where, offset=8)
    return width, height, size


def packet_header(events: np.ndarray, crc: bool = False) -> bytes:
    """16-byte header of an events packet holding `events` (EVENT_DTYPE, contiguous)."""
    if len(events) > MAX_PACKET_EVENTS:
        raise StreamError(f"packet of {len(events)} events exceeds {MAX_PACKET_EVENTS}")
    value = zlib.crc32(events.view(np.uint8)) if crc else 0
    return _PACKET.pack(PACKET_MAGIC, KIND_EVENTS, FLAG_CRC if crc else 0, len(events), value)


def end_packet() -> bytes:
    """The end-of-stream packet."""
    return _PACKET.pack(PACKET_MAGIC, KIND_END, 0, 0, 0)


class PacketDecoder:
    """Turns received bytes into event arrays.

    Write received bytes into `writable()` and call `commit(n)`; it returns the events of
    every complete, valid packet (one EVENT_DTYPE array, possibly empty). Malformed
    packets are skipped and counted in `malformed`, bytes skipped while looking for the
    next packet in `skipped_bytes`; `ended` turns True at the end-of-stream packet.
    Memory: one buffer of at most about the largest packet (MAX_PACKET_EVENTS records)
    plus 4 MB.
    """

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self._alloc(4 << 20)
        self.start = 0
        self.end = 0
        self.malformed = 0
        self.skipped_bytes = 0
        self.ended = False
        self._lost = False  # inside a run of bytes that are not a packet

    def _alloc(self, size: int) -> None:
        self.buf = bytearray(size)
        self.arr = np.frombuffer(self.buf, np.uint8)

    def writable(self) -> memoryview:
        """Free space at the end of the buffer (at least 64 kB)."""
        self._reserve(1 << 16)
        return memoryview(self.buf)[self.end:]

    def _reserve(self, room: int) -> None:
        """Make `room` bytes free after the unparsed data [start, end)."""
        if len(self.buf) - self.end >= room:
            return
        n = self.end - self.start
        if len(self.buf) >= n + room:
            self.arr[:n] = self.arr[self.start:self.end]
        else:
            old = self.arr
            self._alloc(n + room + (1 << 20))
            self.arr[:n] = old[self.start:self.end]
        self.start, self.end = 0, n

    def feed(self, data) -> np.ndarray:
        """Events of the complete packets after appending `data` (bytes-like)."""
        data = memoryview(data).cast("B")
        parts = []
        while len(data) or not parts:
            room = self.writable()
            n = min(len(room), len(data))
            room[:n] = data[:n]
            data = data[n:]
            parts.append(self.commit(n))
        return parts[0] if len(parts) == 1 else concat_events(parts)

    def commit(self, n: int) -> np.ndarray:
        """Account for `n` bytes written into `writable()`; events of complete packets."""
        self.end += n
        good, total, short = [], 0, 0
        while self.end - self.start >= PACKET_HEADER_SIZE and not self.ended:
            s = self.start
            magic, kind, flags, count, crc = _PACKET.unpack_from(self.buf, s)
            if magic != PACKET_MAGIC or kind not in (KIND_EVENTS, KIND_END) or \
                    count > MAX_PACKET_EVENTS or (kind == KIND_END and count):
                self._resync()
                continue
            self._lost = False
            need = PACKET_HEADER_SIZE + count * RECORD_SIZE
            if self.end - s < need:
                short = need
                break
            self.start = s + need
            if kind == KIND_END:
                self.ended = True
                break
            payload = self.arr[s + PACKET_HEADER_SIZE:s + need]
            if flags & FLAG_CRC and zlib.crc32(payload) != crc:
                self.malformed += 1
                continue
            good.append(payload)
            total += count
        out = np.empty(total, EVENT_DTYPE)
        raw = out.view(np.uint8)
        pos = 0
        for payload in good:
            raw[pos:pos + len(payload)] = payload
            pos += len(payload)
        # One check of everything received (one kernel call per read, not per packet);
        # only when it finds a bad event are the packets checked one by one and dropped.
        if total and check_events(out, self.width, self.height) >= 0:
            out = self._without_bad_packets(out, [len(g) // RECORD_SIZE for g in good])
        if short:
            self._reserve(short - (self.end - self.start))
        return out

    def _without_bad_packets(self, events: np.ndarray, counts: list[int]) -> np.ndarray:
        """`events` less the packets (of `counts` events each, in order) that hold an event
        off the sensor or with p not 0/1; each such packet counts as malformed."""
        keep, pos = [], 0
        for count in counts:
            part = events[pos:pos + count]
            pos += count
            if check_events(part, self.width, self.height) >= 0:
                self.malformed += 1
            else:
                keep.append(part)
        return concat_events(keep) if len(keep) != len(counts) else events

    def _resync(self) -> None:
        """Skip to the next packet magic after a bad header; a run of bad bytes counts as
        one malformed packet."""
        if not self._lost:
            self.malformed += 1
            self._lost = True
        i = self.buf.find(PACKET_MAGIC, self.start + 1, self.end)
        new = i if i >= 0 else max(self.start + 1, self.end - len(PACKET_MAGIC) + 1)
        self.skipped_bytes += new - self.start
        self.start = new

