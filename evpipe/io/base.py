"""Event-file readers: the common machinery every format module builds on.

A format module defines an `EventReader` subclass, registered with
`@FORMATS.register(name)`, that parses its header in `_open()` and yields decoded
event arrays from `_decode()`. The base class turns that stream into whole-file reads,
count- and time-based chunks and statistics, holding at most one chunk plus one
decoder block in memory.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import ConfigError, FormatError
from ..events import EVENT_DTYPE, SensorSize, as_sensor_size, empty_events
from ..registry import Registry

FORMATS: Registry[type["EventReader"]] = Registry("event format", modules=(
    "evpipe.io.dat", "evpipe.io.evt", "evpipe.io.aedat2", "evpipe.io.aedat3",
    "evpipe.io.aedat4", "evpipe.io.nmnist", "evpipe.io.h5events"))
WRITERS: Registry = Registry("event writer", modules=FORMATS._modules)

SNIFF_BYTES = 1 << 16
HEADER_LIMIT = 1 << 20  # longest text header accepted (jAER headers reach ~175 kB)


class EvpipeWarning(UserWarning):
    """Recoverable input problem (e.g. a truncated tail that was dropped)."""


def warn(message: str, path, offset: int | None = None) -> None:
    where = f"{path}" + (f", offset {offset}" if offset is not None else "")
    warnings.warn(f"{where}: {message}", EvpipeWarning, stacklevel=3)


class EventReader:
    """Reads one event file. Use `open_events(path)` rather than a subclass directly.

    Attributes: `format` (registry name), `sensor_size` (`SensorSize`), `metadata` (dict
    of header facts), `path`. Subclasses implement `_open()` and `_decode()` and may set
    `extensions` and `sniff()` for detection.
    """

    format = ""
    extensions: tuple[str, ...] = ()
    block_bytes = 8 << 20      # bytes read from the file per decoder call
    block_events = 1 << 20     # events per decoder output block

    def __init__(self, path: str | os.PathLike, sensor_size=None):
        self.path = Path(path)
        try:
            self._f = open(self.path, "rb")
        except FileNotFoundError:
            raise FormatError("file not found", path=path) from None
        except IsADirectoryError:
            raise FormatError("is a directory, not an event file", path=path) from None
        self.file_size = os.fstat(self._f.fileno()).st_size
        self.metadata: dict = {}
        self.sensor_size: SensorSize | None = None
        try:
            self._open()
        except BaseException:
            self._f.close()
            raise
        if sensor_size is not None:
            self.sensor_size = as_sensor_size(sensor_size)

    # -- subclass interface -------------------------------------------------------------
    @classmethod
    def sniff(cls, head: bytes) -> int:
        """Confidence 0 (no), 1 (plausible) or 2 (magic matched) that `head` is this format."""
        return 0

    def _open(self) -> None:
        """Parse the header; set `sensor_size`, `metadata` and whatever `_decode` needs."""
        raise NotImplementedError

    def _decode(self) -> Iterator[np.ndarray]:
        """Yield event arrays (EVENT_DTYPE) in file order, each at most a few MB and each a
        fresh array (callers keep them)."""
        raise NotImplementedError

    # -- helpers for subclasses -----------------------------------------------------------
    def error(self, message: str, offset: int | None = None) -> FormatError:
        return FormatError(message, path=self.path, offset=offset)

    def warn(self, message: str, offset: int | None = None) -> None:
        warn(message, self.path, offset)

    def read_bytes_at(self, offset: int, n: int) -> bytes:
        self._f.seek(offset)
        return self._f.read(n)

    def byte_blocks(self, start: int, end: int | None = None, align: int = 1
                    ) -> Iterator[tuple[int, np.ndarray]]:
        """(file offset, uint8 block) pairs covering [start, end), each a multiple of `align`
        bytes except possibly the last (a truncated tail, for the decoder to report).

        Blocks are views of one reused buffer: decode each before asking for the next.
        """
        end = self.file_size if end is None else min(end, self.file_size)
        size = max(align, self.block_bytes - self.block_bytes % align)
        buf = np.empty(min(size, max(end - start, 0)), np.uint8)
        pos = start
        self._f.seek(pos)
        while pos < end:
            n = self._f.readinto(memoryview(buf)[:min(len(buf), end - pos)])
            if not n:
                break
            yield pos, buf[:n]
            pos += n

    # -- public API -----------------------------------------------------------------------
    def read(self) -> np.ndarray:
        """All events of the file (EVENT_DTYPE)."""
        return concat_events(list(self._decode()))

    def iter_chunks(self, n_events: int | None = None, dt_us: int | None = None
                    ) -> Iterator[np.ndarray]:
        """Yield consecutive chunks: `n_events` events each (the last may be shorter), or
        the events of consecutive `dt_us` windows starting at the first event's time
        (empty windows yield empty arrays; an event earlier than the current window, which
        non-monotonic recordings contain, joins the current window). With neither
        argument, the decoder's own blocks."""
        if n_events is not None and dt_us is not None:
            raise ConfigError("give n_events or dt_us, not both")
        if n_events is not None:
            if n_events < 1:
                raise ConfigError(f"n_events must be >= 1, got {n_events}")
            return _by_count(self._decode(), int(n_events))
        if dt_us is not None:
            if dt_us < 1:
                raise ConfigError(f"dt_us must be >= 1, got {dt_us}")
            return _by_time(self._decode(), int(dt_us))
        return (b for b in self._decode() if len(b))

    def read_time_range(self, t_start: int, t_end: int) -> np.ndarray:
        """Events with t_start <= t < t_end, streaming the file (formats with an index
        override this to seek)."""
        return concat_events([b[(b["t"] >= t_start) & (b["t"] < t_end)] for b in self._decode()])

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.format} {self.path} {self.sensor_size}>"


def concat_events(parts: list[np.ndarray]) -> np.ndarray:
    """A new array holding `parts` one after another. Copies bytes: NumPy copies the packed
    13-byte records field by field, about 10x slower."""
    parts = [p for p in parts if len(p)]
    out = np.empty(sum(len(p) for p in parts), EVENT_DTYPE)
    raw = out.view(np.uint8)
    pos = 0
    for p in parts:
        nbytes = len(p) * EVENT_DTYPE.itemsize
        raw[pos:pos + nbytes] = np.ascontiguousarray(p).view(np.uint8)
        pos += nbytes
    return out


def _by_count(blocks: Iterator[np.ndarray], n: int) -> Iterator[np.ndarray]:
    pending: list[np.ndarray] = []
    have = 0
    for b in blocks:
        while len(b):
            take = min(n - have, len(b))
            pending.append(b[:take])
            have += take
            b = b[take:]
            if have == n:
                yield concat_events(pending)
                pending, have = [], 0
    if have:
        yield concat_events(pending)


def _by_time(blocks: Iterator[np.ndarray], dt: int) -> Iterator[np.ndarray]:
    t0 = None
    current = 0  # index of the window being filled
    pending: list[np.ndarray] = []
    for b in blocks:
        if not len(b):
            continue
        if t0 is None:
            t0 = int(b["t"][0])
        w = (b["t"] - t0) // dt
        np.maximum.accumulate(np.maximum(w, current), out=w)
        cuts = np.flatnonzero(np.diff(w)) + 1
        starts = np.concatenate([[0], cuts])
        for s, e in zip(starts, np.concatenate([cuts, [len(b)]])):
            win = int(w[s])
            if win != current:
                yield concat_events(pending) if pending else empty_events()
                pending = []
                for _ in range(current + 1, win):
                    yield empty_events()
                current = win
            pending.append(b[s:e])
    if pending:
        yield concat_events(pending)


def parse_percent_header(reader: EventReader) -> tuple[list[str], int]:
    """Prophesee text header: lines starting with '% ' up to the first line that does not
    (or up to and including '% end'). Returns (lines without '% ', data offset)."""
    head = reader.read_bytes_at(0, HEADER_LIMIT + 1)
    lines, pos = [], 0
    while head.startswith(b"% ", pos) or head.startswith(b"%\n", pos):
        nl = head.find(b"\n", pos)
        if nl < 0:
            if len(head) > HEADER_LIMIT:
                raise reader.error(f"header longer than {HEADER_LIMIT} bytes", offset=pos)
            raise reader.error("header line without newline (truncated file?)", offset=pos)
        line = head[pos + 2:nl].decode("latin-1").rstrip("\r")
        pos = nl + 1
        if line.strip() == "end":
            break
        lines.append(line)
    return lines, pos


def detect_format(path: str | os.PathLike) -> str:
    """Format name by content (magic/header) first, extension second."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except FileNotFoundError:
        raise FormatError("file not found", path=path) from None
    scores = {name: FORMATS.get(name).sniff(head) for name in FORMATS.names()}
    best = max(scores.values(), default=0)
    ext = path.suffix.lower()
    by_ext = [n for n in FORMATS.names() if ext in FORMATS.get(n).extensions]
    if best > 0:
        top = [n for n, s in scores.items() if s == best]
        if len(top) == 1:
            return top[0]
        narrowed = [n for n in top if n in by_ext]
        if narrowed:
            return narrowed[0]
        return top[0]
    if by_ext:
        return by_ext[0]
    raise FormatError(f"unknown event format (extension {ext or 'none'!r}, no known header); "
                      f"name one of: {', '.join(FORMATS.names())}", path=path, offset=0)


def open_events(path: str | os.PathLike, format: str | None = None, sensor_size=None,
                **options) -> EventReader:
    """Open an event file for reading; `format` overrides detection, `sensor_size`
    overrides (or supplies) the geometry, `options` go to the format's reader (e.g.
    `chip=` for aedat2)."""
    name = format or detect_format(path)
    cls = FORMATS.get(name)
    try:
        return cls(path, sensor_size=sensor_size, **options)
    except TypeError as e:
        if options and "unexpected keyword" in str(e):
            raise ConfigError(f"format {name!r} takes no option {sorted(options)}") from None
        raise


def read_events(path: str | os.PathLike, format: str | None = None) -> np.ndarray:
    """All events of a file (EVENT_DTYPE)."""
    with open_events(path, format) as r:
        return r.read()


def write_events(path: str | os.PathLike, events: np.ndarray, format: str,
                 sensor_size) -> None:
    """Write events (EVENT_DTYPE) to `path` in `format` (dat, evt2, h5)."""
    writer = WRITERS.get(format)
    events = np.asarray(events)
    if events.dtype != EVENT_DTYPE:
        if events.dtype.names is None or not {"t", "x", "y", "p"} <= set(events.dtype.names):
            raise ConfigError(f"events need fields t, x, y, p; got dtype {events.dtype}")
        conv = np.empty(len(events), EVENT_DTYPE)
        for k in "txyp":
            conv[k] = events[k]
        events = conv
    size = as_sensor_size(sensor_size)
    if len(events) and (events["x"].max() >= size.width or events["y"].max() >= size.height):
        raise ConfigError(f"events exceed the sensor size {size.width}x{size.height}")
    if len(events) and not np.isin(events["p"], (0, 1)).all():
        raise ConfigError("polarity must be 0 or 1")
    tmp = Path(str(path) + ".tmp")
    try:
        writer(tmp, events, size)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


