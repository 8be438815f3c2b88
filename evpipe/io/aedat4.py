"""iniVation AEDAT 4.0 (DV software, dv-processing), specs/formats.md §7.

Layout: magic `#!AER-DAT4.0\\r\\n`, int32 IOHeader length N, N bytes of IOHeader
FlatBuffer (ioheader.fbs: `compression`, `dataTablePosition`, `infoNode` XML), then packets
`int32 streamId, int32 size` + `size` bytes compressed as a whole with the file codec
(LZ4 frame or zstd), each a size-prefixed FlatBuffer whose identifier is the stream's
typeIdentifier. An optional FTAB data table at `dataTablePosition` (compressed, no packet
header) lists every packet: byteOffset (of the body, past its header), stream, size,
numElements and first/last timestamp (file_data_table.fbs).

Only one EVTS stream is decoded (events.fbs: `struct Event { int64 t; int16 x; int16 y;
bool on; }`, 16 bytes with padding); FRME, IMUS and TRIG packets are skipped without
being decompressed. Every offset and size read from the file is bounds-checked, and
decompression is bounded by the table's element count or by `max_packet_bytes`.
"""

from __future__ import annotations

import os
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from ..errors import EvpipeError, FormatError
from ..events import EVENT_DTYPE, as_sensor_size, empty_events
from .base import FORMATS, EventReader

MAGIC = b"#!AER-DAT4.0\r\n"
DATA_HEADER = len(MAGIC) + 4  # IOHeader starts here
CODECS = {0: "none", 1: "lz4", 2: "lz4", 3: "zstd", 4: "zstd"}  # IOHeader.compression
# Largest decompressed/compressed ratio each codec can reach (LZ4 encodes match lengths in
# 255-byte steps; a zstd RLE block turns 4 bytes into 128 KiB).
MAX_RATIO = {"none": 1, "lz4": 256, "zstd": 1 << 16}
FB_SLACK = 256  # FlatBuffer bytes around an EVTS vector: size prefix, root, id, vtable, table

# file_data_table.fbs FileDataDefinition: byteOffset, PacketHeader{streamId, size},
# numElements, timestampStart, timestampEnd (us).
TABLE_DTYPE = np.dtype([("offset", "<i8"), ("stream", "<i8"), ("size", "<i8"),
                        ("n", "<i8"), ("t_start", "<i8"), ("t_end", "<i8")])
EVTS = np.frombuffer(b"EVTS", np.uint8)
FTAB = np.frombuffer(b"FTAB", np.uint8)
FB_ERRORS = {-1: "is shorter than a FlatBuffer header",
             -2: "has a size prefix larger than itself",
             -3: "has the wrong FlatBuffer identifier",
             -4: "has a table or vector offset outside the buffer"}
MISMATCH, NO_ROOM = -5, -6  # _decode_evts: element count differs from the table; out full


# -- FlatBuffer primitives (flatbuffers.dev "FlatBuffer internals"); b is uint8 ------------
@njit(cache=True, nogil=True)
def _uint(b, pos, n):
    """Little-endian unsigned `n`-byte integer at b[pos]; the caller checks bounds."""
    v = np.int64(0)
    for k in range(n):
        v |= np.int64(b[pos + k]) << (8 * k)
    return v


@njit(cache=True, nogil=True)
def _field(b, table, slot, width):
    """Position of scalar/struct field `slot` (`width` bytes) of the table at `table`:
    0 when the field is absent (default value), -1 when anything lies outside `b`."""
    n = b.shape[0]
    if table < 4 or table + 4 > n:
        return -1
    soff = _uint(b, table, 4)
    vt = table - (soff - (1 << 32) if soff >= 1 << 31 else soff)
    if vt < 0 or vt + 4 > n:
        return -1
    vsize = _uint(b, vt, 2)
    if vsize < 4 or vt + vsize > n:
        return -1
    if 4 + 2 * slot + 2 > vsize:
        return 0
    off = _uint(b, vt + 4 + 2 * slot, 2)
    if off == 0:
        return 0
    if off + width > _uint(b, vt + 2, 2) or table + off + width > n:
        return -1
    return table + off


@njit(cache=True, nogil=True)
def _vector(b, table, slot, elem):
    """(start, count) of vector field `slot` with `elem`-byte elements; (0, 0) when absent,
    (-1, 0) when it lies outside `b`. Strings are vectors of bytes."""
    f = _field(b, table, slot, 4)
    if f <= 0:
        return f, 0
    v = f + _uint(b, f, 4)
    if v + 4 > b.shape[0]:
        return -1, 0
    count = _uint(b, v, 4)
    if v + 4 + count * elem > b.shape[0]:
        return -1, 0
    return v + 4, count


@njit(cache=True, nogil=True)
def _root(b, ident, prefixed):
    """Root table position of a FlatBuffer with identifier `ident` (uint8 [4]); with
    `prefixed` it starts with a uint32 size. Negative FB_ERRORS code on failure."""
    base = 4 if prefixed else 0
    if b.shape[0] < base + 8:
        return -1
    if prefixed and _uint(b, 0, 4) + 4 > b.shape[0]:
        return -2
    for k in range(4):
        if b[base + 4 + k] != ident[k]:
            return -3
    return base + _uint(b, base, 4)


@njit(cache=True, nogil=True)
def _event_vector(b):
    """(start, count) of EventPacket.elements in an EVTS payload, or (FB_ERRORS code, 0)."""
    root = _root(b, EVTS, True)
    if root < 0:
        return root, 0
    start, count = _vector(b, root, 0, 16)
    return (-4, 0) if start < 0 else (start, count)


@njit(cache=True, nogil=True)
def _decode_evts(b, out, pos, expect, seen):
    """Decode the EVTS payload `b` (uint8) into out[pos:pos + n] (EVENT_DTYPE); returns n,
    or a negative code: FB_ERRORS, MISMATCH when n != `expect` (unless -1), NO_ROOM.

    Elements are events.fbs `struct Event { int64 t; int16 x; int16 y; bool on; }`, 16
    bytes, read as int64 pairs (little-endian host); x and y keep their 16 bits (negative
    values wrap to >= 32768), p = on != 0. seen uint16 [2] keeps the largest x and y."""
    start, n = _event_vector(b)
    if start < 0:
        return start
    if expect >= 0 and n != expect:
        return MISMATCH
    if pos + n > out.shape[0]:
        return NO_ROOM
    w = b[start:start + 16 * n].view(np.int64)
    mx = seen[0]
    my = seen[1]
    for i in range(n):
        v = w[2 * i + 1]
        x = np.uint16(v & 0xFFFF)
        y = np.uint16((v >> 16) & 0xFFFF)
        e = out[pos + i]
        e.t = w[2 * i]
        e.x = x
        e.y = y
        e.p = ((v >> 32) & 0xFF) != 0
        mx = max(mx, x)
        my = max(my, y)
    seen[0] = mx
    seen[1] = my
    return n


@njit(cache=True, nogil=True)
def _table_rows(b, start, out):
    """Fill `out` (TABLE_DTYPE) from the [FileDataDefinition] offset vector at b[start];
    returns -1, or the index of the first entry that lies outside `b`."""
    vals = np.zeros(6, np.int64)
    for i in range(out.shape[0]):
        p = start + 4 * i
        t = p + _uint(b, p, 4)
        vals[:] = 0
        for slot in range(5):
            f = _field(b, t, slot, 8)
            if f < 0:
                return i
            if f == 0:
                continue
            if slot == 1:  # PacketHeader struct: int32 streamId, int32 size
                for k in range(2):
                    v = _uint(b, f + 4 * k, 4)
                    vals[1 + k] = v - (1 << 32) if v >= 1 << 31 else v
            else:
                vals[slot if slot == 0 else slot + 1] = _uint(b, f, 8)
        r = out[i]
        r.offset, r.stream, r.size = vals[0], vals[1], vals[2]
        r.n, r.t_start, r.t_end = vals[3], vals[4], vals[5]
    return -1


class _TableMismatch(Exception):
    """The data table disagrees with the packet whose body is at `offset`."""

    def __init__(self, offset: int):
        super().__init__(offset)
        self.offset = offset


def _decompressor(codec: str):
    """f(data, bound) -> decompressed bytes of one packet, at most `bound` of them, or
    ValueError. Holds codec state: one per thread. The codec packages (`lz4`,
    `zstandard`) are imported here, so the other formats do not need them."""
    if codec == "none":
        def none(data, bound):
            if len(data) > bound:
                raise ValueError(f"holds {len(data)} bytes, more than the {bound} expected")
            return data
        return none
    if codec == "lz4":
        import lz4.frame

        ctx = [lz4.frame.create_decompression_context()]

        def lz4_frame(data, bound):
            if len(data) >= 14 and data[4] & 0x08:  # FLG.ContentSize: uint64 at byte 6
                claimed = int.from_bytes(data[6:14], "little")
                if claimed > bound:
                    raise ValueError(f"LZ4 frame claims {claimed} bytes, more than {bound}")
                bound = claimed
            # python-lz4 allocates max_length up front: start near the expected size
            parts, total, step = [], 0, min(bound, 4 * len(data) + (1 << 16))
            try:
                while True:
                    out, used, done = lz4.frame.decompress_chunk(ctx[0], data, step)
                    if done and not parts and used == len(data) and len(out) <= bound:
                        return out  # the usual case: one call
                    parts.append(out)
                    total += len(out)
                    data = data[used:]
                    if done or total > bound or not (used or out):
                        break
                    step = max(1, min(bound - total, 2 * step))
            except RuntimeError as e:
                ctx[0] = lz4.frame.create_decompression_context()
                raise ValueError(f"is not a valid LZ4 frame ({e})") from None
            if total > bound or not done:
                ctx[0] = lz4.frame.create_decompression_context()
                raise ValueError(f"LZ4 frame exceeds {bound} bytes" if total > bound
                                 else "LZ4 frame is truncated")
            if len(data):
                raise ValueError(f"has {len(data)} bytes after its LZ4 frame")
            return parts[0] if len(parts) == 1 else b"".join(parts)
        return lz4_frame
    import zstandard

    zstd = zstandard.ZstdDecompressor()

    def zstd_frame(data, bound):
        try:
            size = zstandard.frame_content_size(data)
            if size > bound:
                raise ValueError(f"zstd frame claims {size} bytes, more than {bound}")
            if size >= 0:
                return zstd.decompress(data)
            parts, total = [], 0
            with zstd.stream_reader(data) as r:
                while chunk := r.read(1 << 20):
                    total += len(chunk)
                    if total > bound:
                        raise ValueError(f"zstd frame exceeds {bound} bytes")
                    parts.append(chunk)
            return b"".join(parts)
        except zstandard.ZstdError as e:
            raise ValueError(f"is not a valid zstd frame ({e})") from None
    return zstd_frame


class _Window:
    """File bytes read `block` at a time with pread (position-independent)."""

    def __init__(self, fd: int, block: int):
        self.fd, self.block = fd, block
        self.base, self.buf = 0, b""

    def get(self, pos: int, n: int, end: int) -> memoryview:
        """Bytes [pos, pos + n) (fewer if the file shrank); reads up to `end` ahead."""
        if not (self.base <= pos and pos + n <= self.base + len(self.buf)):
            self.base = pos
            self.buf = os.pread(self.fd, max(n, min(self.block, end - pos)), pos)
        i = pos - self.base
        return memoryview(self.buf)[i:i + n]


@FORMATS.register("aedat4")
class Aedat4Reader(EventReader):
    """AEDAT 4.0 events of one EVTS stream (the lowest id, or `stream_id`); geometry from
    its sizeX/sizeY. `metadata` has `compression`, `streams` ({id: type, name, source,
    size}), `event_stream`, `data_table` and, with a table, `n_events`, `t_start`, `t_end`.
    `read()` and `read_time_range()` use the data table to preallocate, seek and decode
    packets on `threads` threads; without a usable table packets are scanned in order."""

    format = "aedat4"
    extensions = (".aedat4",)
    max_packet_bytes = 1 << 28   # largest decompressed packet accepted (16M events)
    header_limit = 1 << 24       # largest IOHeader accepted
    group_bytes = 1 << 21        # file bytes per read() work item
    threads = min(4, os.cpu_count() or 1)

    def __init__(self, path, sensor_size=None, stream_id: int | None = None):
        self._want_stream = stream_id
        super().__init__(path, sensor_size)

    @classmethod
    def sniff(cls, head: bytes) -> int:
        return 2 if head.startswith(MAGIC[:12]) else 0

    # -- header -----------------------------------------------------------------------
    def _open(self) -> None:
        head = self.read_bytes_at(0, DATA_HEADER)
        if not head.startswith(MAGIC):
            raise self.error(f"not an AEDAT 4.0 file: starts with {head[:14]!r}", offset=0)
        if len(head) < DATA_HEADER:
            raise self.error("file ends inside the IOHeader length", offset=len(MAGIC))
        size = struct.unpack_from("<i", head, len(MAGIC))[0]
        if not 8 <= size <= min(self.header_limit, self.file_size - DATA_HEADER):
            raise self.error(f"IOHeader length {size} is not within 8..{self.header_limit} "
                             f"and the file ({self.file_size} bytes)", offset=len(MAGIC))
        codec, table_pos, info = self._io_header(
            np.frombuffer(self.read_bytes_at(DATA_HEADER, size), np.uint8))
        self.codec = codec
        self.data_start = DATA_HEADER + size
        streams = self._streams(info)
        evts = sorted(k for k, s in streams.items() if s["type"] == "EVTS")
        if self._want_stream is not None:
            if self._want_stream not in evts:
                raise self.error(f"stream {self._want_stream} is not an EVTS stream; EVTS "
                                 f"streams: {evts}", offset=DATA_HEADER)
            self.stream = self._want_stream
        else:
            self.stream = evts[0] if evts else None
            if not evts:
                self.warn("no EVTS stream in the infoNode: the file holds no events")
            elif len(evts) > 1:
                self.warn(f"EVTS streams {evts}: reading stream {evts[0]} only "
                          f"(Aedat4Reader(path, stream_id=...) picks another)")
        if self.stream is not None and streams[self.stream]["size"] is not None:
            self.sensor_size = streams[self.stream]["size"]
        self.metadata = {"compression": codec, "streams": streams,
                         "event_stream": self.stream, "data_table": False}
        self.data_end = self.file_size
        self._table = None
        if table_pos != -1:
            if self.data_start <= table_pos < self.file_size:
                self.data_end = table_pos
                self._table = self._load_table(table_pos)
            else:
                self.warn(f"dataTablePosition {table_pos} is outside the data "
                          f"({self.data_start}..{self.file_size}); scanning packets "
                          "(truncated file?)", offset=DATA_HEADER)
        if self._table is not None:
            rows = self._event_rows()
            self.metadata.update(data_table=True, n_events=int(rows["n"].sum()))
            if len(rows):
                self.metadata.update(t_start=int(rows["t_start"].min()),
                                     t_end=int(rows["t_end"].max()))

    def _io_header(self, b: np.ndarray) -> tuple[str, int, str]:
        """(codec, dataTablePosition, infoNode) from the IOHeader bytes (ioheader.fbs)."""
        root = _root(b, np.frombuffer(b"IOHE", np.uint8), False)
        if root == -3:  # the identifier is optional in FlatBuffers; faery and aedat skip it
            root = _uint(b, 0, 4)
        pos = [_field(b, root, slot, w) for slot, w in ((0, 4), (1, 8))]
        start, n = _vector(b, root, 2, 1)
        if root < 0 or min(pos) < 0 or start < 0:
            raise self.error("IOHeader FlatBuffer has an offset outside the header",
                             offset=DATA_HEADER)
        code = struct.unpack_from("<i", b, pos[0])[0] if pos[0] else 0
        if code not in CODECS:
            raise self.error(f"unknown compression {code} (0..4 are defined)",
                             offset=DATA_HEADER + pos[0])
        table_pos = struct.unpack_from("<q", b, pos[1])[0] if pos[1] else -1
        if n == 0:
            raise self.error("IOHeader has no infoNode (stream descriptions)",
                             offset=DATA_HEADER)
        return CODECS[code], table_pos, bytes(b[start:start + n]).decode("utf-8", "replace")

    def _streams(self, info: str) -> dict[int, dict]:
        """{stream id: {type, name, source, size}} from the infoNode XML
        (`<dv version="2.0">`, node outInfo/<id> with typeIdentifier and info/sizeX, sizeY)."""
        try:
            root = ET.fromstring(info)
        except ET.ParseError as e:
            raise self.error(f"infoNode is not valid XML ({e})", offset=DATA_HEADER) from None
        streams = {}
        for out in root.iter("node"):
            if out.get("name") != "outInfo":
                continue
            for node in out.findall("node"):
                name = node.get("name", "")
                if not (name.isascii() and name.isdigit()):
                    continue
                attrs = _attrs(node)
                info_node = node.find("node[@name='info']")
                extra = _attrs(info_node) if info_node is not None else {}
                size = None
                if "sizeX" in extra and "sizeY" in extra:
                    try:
                        size = as_sensor_size((extra["sizeX"], extra["sizeY"]))
                    except EvpipeError as e:
                        raise self.error(f"stream {name}: {e.message}",
                                         offset=DATA_HEADER) from None
                streams[int(name)] = {"type": attrs.get("typeIdentifier"),
                                      "name": attrs.get("originalOutputName"),
                                      "source": extra.get("source"), "size": size}
        return streams

    # -- data table -------------------------------------------------------------------------
    def _bound(self, size: int) -> int:
        """Most bytes `size` compressed bytes may decompress to."""
        return min(self.max_packet_bytes, MAX_RATIO[self.codec] * size + FB_SLACK)

    def _load_table(self, pos: int) -> np.ndarray | None:
        """FTAB rows (TABLE_DTYPE), or None with a warning when the table is unusable."""
        try:
            rows = self._parse_table(pos)
        except FormatError as e:
            self.warn(f"{e.message}; scanning packets instead", offset=e.offset)
            return None
        return rows

    def _parse_table(self, pos: int) -> np.ndarray:
        size = self.file_size - pos
        if size > self.max_packet_bytes:
            raise self.error(f"data table of {size} bytes exceeds max_packet_bytes", pos)
        try:
            payload = _decompressor(self.codec)(self.read_bytes_at(pos, size), self._bound(size))
        except ValueError as e:
            raise self.error(f"data table {e}", pos) from None
        b = np.frombuffer(payload, np.uint8)
        root = _root(b, FTAB, True)
        if root < 0:
            raise self.error(f"data table {FB_ERRORS[root]}", pos)
        start, n = _vector(b, root, 0, 4)
        if start < 0:
            raise self.error(f"data table {FB_ERRORS[-4]}", pos)
        rows = np.zeros(n, TABLE_DTYPE)
        bad = _table_rows(b, start, rows)
        if bad >= 0:
            raise self.error(f"data table entry {bad} {FB_ERRORS[-4]}", pos)
        # Packets tile the data exactly: each body follows its 8-byte header.
        ends = rows["offset"] + rows["size"]
        starts = np.concatenate([[self.data_start], ends[:-1]]) + 8
        bad = np.flatnonzero((rows["offset"] != starts) | (rows["size"] < 0))
        if len(bad) or (ends[-1] if n else self.data_start) != pos:
            i = int(bad[0]) if len(bad) else n
            raise self.error(f"data table entry {i} does not match the packet layout "
                             f"(offset {rows['offset'][i] if i < n else 'end'})", pos)
        ev = rows[rows["stream"] == self.stream]
        limit = np.minimum(self.max_packet_bytes, MAX_RATIO[self.codec] * ev["size"] + FB_SLACK)
        bad = np.flatnonzero((ev["n"] < 0) | (ev["n"] > limit // 16))
        if len(bad):
            raise self.error(f"data table claims {ev['n'][bad[0]]} events for the "
                             f"{ev['size'][bad[0]]}-byte packet at offset "
                             f"{ev['offset'][bad[0]]}", pos)
        return rows

    def _event_rows(self) -> np.ndarray:
        return self._table[self._table["stream"] == self.stream]

    # -- decoding ---------------------------------------------------------------------------
    def _unpack(self, dec, body, offset: int, bound: int):
        try:
            return dec(body, bound)
        except ValueError as e:
            raise self.error(f"packet {e}", offset) from None

    def _evts_error(self, code: int, offset: int) -> Exception:
        if code == MISMATCH:
            return _TableMismatch(offset)
        return self.error(f"EVTS packet payload {FB_ERRORS[code]}", offset)

    def _check_range(self, seen: np.ndarray) -> None:
        size, (mx, my) = self.sensor_size, seen.tolist()
        if size is not None and (mx >= size.width or my >= size.height):
            self.warn(f"events outside the {size.width}x{size.height} sensor (x up to {mx}, "
                      f"y up to {my}; negative int16 values wrap to >= 32768)")

    def _scan(self, win: _Window, pos: int) -> Iterator[tuple[int, int, memoryview | None]]:
        """(body offset, stream id, body or None) of each packet from the header at `pos`
        on; only event-stream bodies are read."""
        end = self.data_end
        while pos < end:
            if end - pos < 8:
                self.warn(f"{end - pos} bytes after the last packet are not a packet "
                          "header (truncated file?); ignored", offset=pos)
                return
            head = win.get(pos, 8, end)
            if len(head) < 8:
                raise self.error("file shrank while being read", pos)
            stream, size = struct.unpack("<ii", head)
            if not 0 <= size <= end - pos - 8:
                self.warn(f"packet header claims {size} bytes, {end - pos - 8} are left "
                          "(truncated file?); the rest is ignored", offset=pos)
                return
            body = win.get(pos + 8, size, end) if stream == self.stream else None
            if body is not None and len(body) < size:
                raise self.error("file shrank while being read", pos)
            yield pos + 8, stream, body
            pos += 8 + size

    def _payloads(self, win: _Window) -> Iterator[tuple[int, np.ndarray]]:
        """(body offset, decompressed EVTS payload as uint8) of each event-stream packet in
        file order, following the data table while it agrees with the packets, else
        scanning packet headers."""
        dec = _decompressor(self.codec)
        pos = self.data_start
        if self._table is not None:
            for off, size, n in self._event_rows()[["offset", "size", "n"]].tolist():
                data = win.get(off - 8, size + 8, self.data_end)
                if len(data) < size + 8:
                    raise self.error("file shrank while being read", off - 8)
                if struct.unpack_from("<ii", data) == (self.stream, size):
                    b = np.frombuffer(self._unpack(dec, data[8:], off, 16 * n + FB_SLACK),
                                      np.uint8)
                    start, count = _event_vector(b)
                    if start < 0:
                        raise self._evts_error(start, off)
                    if count == n:
                        yield off, b
                        continue
                self.warn("data table disagrees with the packet; scanning packet headers "
                          "from here", offset=off - 8)
                pos = off - 8
                break
            else:
                return
        unknown = set()
        for off, stream, body in self._scan(win, pos):
            if stream == self.stream:
                yield off, np.frombuffer(self._unpack(dec, body, off, self._bound(len(body))),
                                         np.uint8)
            elif stream not in self.metadata["streams"] and stream not in unknown:
                unknown.add(stream)
                self.warn(f"packets of stream {stream}, which the infoNode does not "
                          "describe, skipped", offset=off - 8)

    def _decode(self) -> Iterator[np.ndarray]:
        """Events in blocks of about `block_events`, several packets per block."""
        if self.stream is None:
            return
        seen = np.zeros(2, np.uint16)
        block, fill = empty_events(), 0
        for off, b in self._payloads(_Window(self._f.fileno(), self.block_bytes)):
            n = _decode_evts(b, block, fill, -1, seen)
            if n == NO_ROOM:
                if fill:
                    yield block[:fill]
                block = np.empty(max(self.block_events, _event_vector(b)[1]), EVENT_DTYPE)
                fill, n = 0, _decode_evts(b, block, 0, -1, seen)
            if n < 0:
                raise self._evts_error(n, off)
            fill += n
        if fill:
            yield block[:fill]
        self._check_range(seen)

    # -- indexed reads ----------------------------------------------------------------------
    def read(self) -> np.ndarray:
        """All events (EVENT_DTYPE) of the event stream."""
        if self._table is not None:
            out = self._read_rows(self._event_rows())
            if out is not None:
                return out
        return super().read()

    def read_time_range(self, t_start: int, t_end: int) -> np.ndarray:
        """Events with t_start <= t < t_end (us); with a data table only the packets whose
        [timestampStart, timestampEnd] meets the range are read."""
        if self._table is not None:
            rows = self._event_rows()
            out = self._read_rows(rows[(rows["t_end"] >= t_start) & (rows["t_start"] < t_end)])
            if out is not None:
                return out[(out["t"] >= t_start) & (out["t"] < t_end)]
        return super().read_time_range(t_start, t_end)

    def _read_rows(self, rows: np.ndarray) -> np.ndarray | None:
        """Events of the table `rows` decoded into one preallocated array, in groups of
        about `group_bytes` on `threads` threads. None when the table claims implausibly
        many events, or (after a warning, table dropped) disagrees with a packet."""
        if self.stream is None or not len(rows):
            return empty_events()
        if 16 * rows["n"].sum() > MAX_RATIO["lz4"] * rows["size"].sum() + FB_SLACK:
            return None  # decode as data arrives instead of trusting a huge allocation
        firsts = np.concatenate([[0], np.cumsum(rows["n"])])
        out = np.empty(int(firsts[-1]), EVENT_DTYPE)
        cuts = np.flatnonzero(np.diff(rows["offset"] // self.group_bytes)) + 1
        bounds = np.concatenate([[0], cuts, [len(rows)]]).tolist()
        jobs = [(rows[a:b], out[firsts[a]:firsts[b]]) for a, b in zip(bounds[:-1], bounds[1:])]
        if self.threads > 1 and len(jobs) > 1:
            pool = ThreadPoolExecutor(min(self.threads, len(jobs)))
            try:
                seen = list(pool.map(lambda job: self._read_group(*job), jobs))
            finally:
                pool.shutdown(cancel_futures=True)
        else:
            seen = [self._read_group(*job) for job in jobs]
        for s in seen:
            if isinstance(s, _TableMismatch):
                self.warn("data table disagrees with the packet; scanning packet headers "
                          "instead", offset=s.offset - 8)
                self._table = None
                return None
        self._check_range(np.max(seen, axis=0))
        return out

    def _read_group(self, rows: np.ndarray, out: np.ndarray):
        """Decode the packets of `rows` (one file span) into `out`; returns the largest
        (x, y) as uint16 [2], or the _TableMismatch."""
        dec = _decompressor(self.codec)
        seen = np.zeros(2, np.uint16)
        lo = int(rows["offset"][0]) - 8
        hi = int(rows["offset"][-1] + rows["size"][-1])
        span = os.pread(self._f.fileno(), hi - lo, lo)
        if len(span) < hi - lo:
            raise self.error("file shrank while being read", lo + len(span))
        view = memoryview(span)
        i = 0
        for off, size, n in rows[["offset", "size", "n"]].tolist():
            h = off - 8 - lo
            if struct.unpack_from("<ii", span, h) != (self.stream, size):
                return _TableMismatch(off)
            b = np.frombuffer(self._unpack(dec, view[h + 8:h + 8 + size], off,
                                           16 * n + FB_SLACK), np.uint8)
            got = _decode_evts(b, out, i, n, seen)
            if got < 0:
                e = self._evts_error(got, off)
                if isinstance(e, _TableMismatch):
                    return e
                raise e
            i += n
        return seen


def _attrs(node) -> dict:
    """{key: value} of a DV XML node's <attr key type> children; int/long become int."""
    out = {}
    for a in node.findall("attr"):
        value = a.text or ""
        if a.get("type") in ("int", "long", "short", "byte"):
            try:
                value = int(value)
            except ValueError:
                pass
        out[a.get("key")] = value
    return out
