"""Live event sources, selected by URI (`open_source`).

    dv://HOST:PORT        dv-processing network stream (iniVation DV, `evpipe serve`)
    dv:///PATH            the same over a UNIX socket
    camera:[SERIAL]       a camera attached through dv-processing
    metavision:[SERIAL]   a Prophesee camera through the Metavision SDK
    replay:PATH[?speed=S&repeat=N&format=NAME]   an event file paced on its own clock
    tcp://HOST:PORT       evpipe's framed protocol (evpipe/stream/protocol.py)

A source is used by one thread: `open()` connects (raising `SourceLost` when the other
side is not there, which may be retried), `read(timeout)` returns an EVENT_DTYPE array,
None when nothing arrived within `timeout` seconds, or ENDED at the end of the stream,
and raises `SourceLost` when the connection breaks. Packets with events outside the
sensor (or unparsable ones) are skipped and counted in `malformed_packets`.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np

from ..errors import ConfigError, StreamError
from ..events import EVENT_DTYPE, SensorSize, as_sensor_size
from .dvio import from_dv, import_dv
from .kernels import check_events
from .playback import PACKET_EVENTS, PACKET_US, Pacer, check_speed, packets
from .protocol import HEADER_SIZE, PacketDecoder, parse_stream_header


class _Ended:
    def __repr__(self) -> str:
        return "ENDED"


ENDED = _Ended()  # what `read` returns at the end of the stream
CONNECT_TIMEOUT_S = 3.0
_POLL_S = 0.0005


class SourceLost(StreamError):
    """The source went away or could not be reached (a reconnect may help)."""


class Source:
    """Base class; see the module docstring. `retriable`: whether losing the source is
    worth reconnecting (live sources) or final (files)."""

    retriable = True

    def __init__(self, uri: str):
        self.uri = uri
        self.sensor_size: SensorSize | None = None
        self.size_override: SensorSize | None = None
        self.malformed_packets = 0

    def open(self) -> None:
        raise NotImplementedError

    def read(self, timeout: float):
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection; safe to call twice."""

    def _checked(self, events: np.ndarray) -> np.ndarray | None:
        """`events`, or None (counted as malformed) when one lies outside the sensor."""
        size = self.sensor_size
        if len(events) and check_events(events, size.width, size.height) >= 0:
            self.malformed_packets += 1
            return None
        return events


def _host_port(uri: str, rest: str) -> tuple[str, int]:
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{uri!r}: expected HOST:PORT with a port in 1..65535")
    return host, int(port)


def open_source(uri: str, sensor_size=None) -> Source:
    """The `Source` a URI names (not yet opened); `sensor_size` (W, H) overrides the
    geometry the source reports."""
    size = None if sensor_size is None else as_sensor_size(sensor_size)
    scheme, sep, rest = uri.partition(":")
    if not sep:
        raise ConfigError(f"source {uri!r} has no scheme; use one of dv://HOST:PORT, "
                          "dv:///SOCKET, tcp://HOST:PORT, replay:FILE, camera:, metavision:")
    if scheme == "dv":
        if not rest.startswith("//"):
            raise ConfigError(f"{uri!r}: expected dv://HOST:PORT or dv:///SOCKET-PATH")
        rest = rest[2:]
        src = DvSource(uri, path=rest) if rest.startswith("/") else \
            DvSource(uri, *_host_port(uri, rest))
    elif scheme == "tcp":
        if not rest.startswith("//"):
            raise ConfigError(f"{uri!r}: expected tcp://HOST:PORT")
        src = TcpSource(uri, *_host_port(uri, rest[2:]))
    elif scheme == "replay":
        path, query = rest, {}
        if "?" in rest:
            head, _, tail = rest.rpartition("?")
            if "=" in tail:
                path, query = head, {k: v[-1] for k, v in parse_qs(tail, strict_parsing=True,
                                                                  keep_blank_values=True)
                                     .items()}
        unknown = sorted(set(query) - {"speed", "repeat", "format"})
        if unknown:
            raise ConfigError(f"{uri!r}: unknown replay option {', '.join(unknown)}; "
                              "valid: speed, repeat, format")
        if not path:
            raise ConfigError(f"{uri!r}: expected replay:FILE")
        repeat = query.get("repeat", "1")
        if not repeat.isdigit() or int(repeat) < 1:
            raise ConfigError(f"{uri!r}: repeat must be an integer >= 1, got {repeat!r}")
        src = ReplaySource(uri, path, speed=check_speed(query.get("speed", "1")),
                           repeat=int(repeat), format=query.get("format") or None)
    elif scheme == "camera":
        src = CameraSource(uri, rest or None)
    elif scheme == "metavision":
        src = MetavisionSource(uri, rest or None)
    else:
        raise ConfigError(f"unknown source scheme {scheme!r} in {uri!r}; valid: dv, tcp, "
                          "replay, camera, metavision")
    src.size_override = size
    return src


class ReplaySource(Source):
    """An event file played on its own clock (`speed` x real time, 0 = as fast as
    possible), `repeat` times; packets of at most 1 ms / 10k events."""

    retriable = False

    def __init__(self, uri: str, path, speed: float = 1.0, repeat: int = 1,
                 format: str | None = None):
        super().__init__(uri)
        self.path, self.speed, self.repeat, self.format = Path(path), speed, repeat, format
        self.reader = None

    def open(self) -> None:
        from ..io.base import open_events
        self.reader = open_events(self.path, self.format)
        self.sensor_size = self.size_override or self.reader.sensor_size
        if self.sensor_size is None:
            raise ConfigError("the file does not give its sensor size; pass one "
                              "(--sensor-size W H)", path=self.path)
        self.packets = packets(self.reader, PACKET_US, PACKET_EVENTS, self.repeat)
        self.pacer = Pacer(self.speed)
        self.pending = None

    def read(self, timeout: float):
        if self.pending is None:
            self.pending = next(self.packets, ENDED)
        if self.pending is ENDED:
            return ENDED
        t = self.pending["t"]
        delay = self.pacer.delay(int(t[0]), int(t[-1]))
        if delay > timeout:
            time.sleep(timeout)
            return None
        if delay > 0:
            time.sleep(delay)
        out, self.pending = self.pending, None
        return self._checked(out)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


class TcpSource(Source):
    """Client of evpipe's framed protocol."""

    def __init__(self, uri: str, host: str, port: int):
        super().__init__(uri)
        self.host, self.port = host, port
        self.sock = None
        self.decoder = None

    def open(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT_S)
        except OSError as e:
            raise SourceLost(f"cannot connect: {e.strerror or e}", path=self.uri) from None
        try:
            deadline = time.monotonic() + CONNECT_TIMEOUT_S
            header = _recv_exact(sock, HEADER_SIZE, deadline, self.uri)
            width, height, size = parse_stream_header(header, self.uri)
            _recv_exact(sock, size - HEADER_SIZE, deadline, self.uri)  # fields of later versions
        except TimeoutError:
            sock.close()
            raise StreamError(f"no stream header within {CONNECT_TIMEOUT_S:g} s (is it an "
                              "evpipe tcp:// sender?)", path=self.uri) from None
        except OSError as e:
            sock.close()
            raise SourceLost(f"connection failed: {e.strerror or e}", path=self.uri) from None
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.sensor_size = self.size_override or SensorSize(width, height)
        self.decoder = PacketDecoder(self.sensor_size.width, self.sensor_size.height)

    def read(self, timeout: float):
        if self.decoder.ended:
            return ENDED
        self.sock.settimeout(timeout)
        try:
            n = self.sock.recv_into(self.decoder.writable())
        except TimeoutError:
            return None
        except OSError as e:
            raise SourceLost(f"connection lost: {e.strerror or e}", path=self.uri) from None
        if n == 0:
            raise SourceLost("connection closed by the sender before its end-of-stream "
                             "packet", path=self.uri)
        events = self.decoder.commit(n)
        self.malformed_packets += self.decoder.malformed
        self.decoder.malformed = 0
        if not len(events):
            return ENDED if self.decoder.ended else None
        return events

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _recv_exact(sock: socket.socket, n: int, deadline: float, uri: str) -> bytes:
    """`n` bytes from `sock` before `deadline` (monotonic s); TimeoutError after it,
    SourceLost when the other side closes first."""
    data = b""
    while len(data) < n:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        part = sock.recv(n - len(data))
        if not part:
            raise SourceLost("connection closed before the stream header", path=uri)
        data += part
    return data


def _probe_dv(uri: str, host: str | None, port: int | None, path: str | None) -> None:
    """Check that a dv-processing stream header arrives before handing the address to
    `dv.io.NetworkReader`, whose constructor blocks the whole interpreter (GIL held)
    when the other side accepts but sends nothing."""
    try:
        if path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(CONNECT_TIMEOUT_S)
            sock.connect(path)
        else:
            sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    except OSError as e:
        raise SourceLost(f"cannot connect: {e.strerror or e}", path=uri) from None
    try:
        head = _recv_exact(sock, 12, time.monotonic() + CONNECT_TIMEOUT_S, uri)
    except TimeoutError:
        raise StreamError(f"no dv-processing stream header within {CONNECT_TIMEOUT_S:g} s",
                          path=uri) from None
    except OSError as e:
        raise SourceLost(f"connection failed: {e.strerror or e}", path=uri) from None
    finally:
        sock.close()
    if head[8:12] != b"IOHE":
        hint = " (an evpipe tcp:// stream: use tcp://)" if head[:4] == b"EVPS" else ""
        raise StreamError(f"not a dv-processing network stream{hint}", path=uri, offset=0)


class _DvInput(Source):
    """Shared reading of a dv-processing input (network stream or camera)."""

    def _open_input(self, reader) -> None:
        self.input = reader
        if not reader.isEventStreamAvailable():
            raise StreamError("the stream carries no events", path=self.uri)
        res = reader.getEventResolution()
        if self.size_override:
            self.sensor_size = self.size_override
        elif res is None:
            raise StreamError("the stream gives no event resolution; pass one "
                              "(--sensor-size W H)", path=self.uri)
        else:
            self.sensor_size = SensorSize(int(res[0]), int(res[1]))

    def read(self, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            try:
                batch = self.input.getNextEventBatch()
            except RuntimeError:  # a packet dv-processing could not parse
                self.malformed_packets += 1
                batch = None
            if batch is not None:
                return self._checked(from_dv(batch.numpy()))
            if not self.input.isRunning():
                raise SourceLost("the stream stopped (connection closed)", path=self.uri)
            if time.monotonic() >= deadline:
                return None
            time.sleep(_POLL_S)

    def close(self) -> None:
        self.input = None


class DvSource(_DvInput):
    """dv-processing network stream (`dv.io.NetworkReader`), TCP or UNIX socket. Read it
    without pause: the reader keeps about 1000 packets and silently drops the oldest
    beyond that."""

    def __init__(self, uri: str, host: str | None = None, port: int | None = None,
                 path: str | None = None):
        super().__init__(uri)
        self.host, self.port, self.path = host, port, path
        self.input = None

    def open(self) -> None:
        dv = import_dv(self.uri)
        _probe_dv(self.uri, self.host, self.port, self.path)
        try:
            reader = (dv.io.NetworkReader(self.path) if self.path is not None
                      else dv.io.NetworkReader(self.host, self.port))
        except RuntimeError as e:
            raise SourceLost(f"cannot connect: {e}".split(" [")[0], path=self.uri) from None
        self._open_input(reader)


class CameraSource(_DvInput):
    """A camera attached through dv-processing (`dv.io.camera.open`)."""

    def __init__(self, uri: str, serial: str | None):
        super().__init__(uri)
        self.serial = serial
        self.input = None

    def open(self) -> None:
        dv = import_dv(self.uri)
        found = dv.io.camera.discover()
        if not found:
            raise StreamError("no camera attached (dv-processing's camera.discover() found "
                              "none; check the USB connection and permissions)", path=self.uri)
        try:
            cam = dv.io.camera.open(self.serial) if self.serial else dv.io.camera.open()
        except RuntimeError as e:
            raise SourceLost(f"cannot open the camera: {e}", path=self.uri) from None
        self._open_input(cam)


class MetavisionSource(Source):
    """A Prophesee camera through the Metavision SDK's `EventsIterator` (1 ms slices)."""

    def __init__(self, uri: str, serial: str | None):
        super().__init__(uri)
        self.serial = serial
        self.it = None

    def open(self) -> None:
        try:
            from metavision_core.event_io import EventsIterator
        except ImportError:
            raise StreamError("metavision: needs the Prophesee Metavision SDK (Python module "
                              "metavision_core), which is not installed; see "
                              "https://docs.prophesee.ai", path=self.uri) from None
        try:
            mv = EventsIterator(input_path=self.serial or "", mode="delta_t", delta_t=1000)
        except Exception as e:  # the SDK raises its own types when no camera answers
            raise SourceLost(f"cannot open the camera: {e}", path=self.uri) from None
        height, width = mv.get_size()
        self.sensor_size = self.size_override or SensorSize(int(width), int(height))
        self.it = iter(mv)

    def read(self, timeout: float):
        batch = next(self.it, None)
        if batch is None:
            return ENDED
        out = np.empty(len(batch), EVENT_DTYPE)
        for k in "txyp":
            out[k] = batch[k]
        return self._checked(out)

    def close(self) -> None:
        self.it = None
