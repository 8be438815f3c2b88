"""`evpipe serve`: publish a recording as a live stream on the recording's own clock.

- protocol "dv": a dv-processing network stream (`dv.io.NetworkWriter`), what iniVation
  cameras and DV publish. The writer lives in a child process: deleting a NetworkWriter
  while a client is connected can hang forever (2.0.4), so the child ends with
  `os._exit` once its queue is empty. Its queue silently loses packets when it grows
  past about 1000, so writing waits while more than MAX_QUEUED_PACKETS are queued.
- protocol "tcp": evpipe's framed protocol (evpipe/stream/protocol.py), in this process;
  a client that stops reading for SEND_TIMEOUT_S is disconnected.

Both wait for `clients` clients before the first packet, so those see every event.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import socket
import sys
import threading
import time

import numpy as np

from ..encoders.frames import check_int
from ..errors import ConfigError, EvpipeError, StreamError
from ..io.base import concat_events, open_events
from .dvio import check_dv_size, import_dv, to_event_stores
from .playback import PACKET_EVENTS, PACKET_US, Pacer, check_speed, packets
from .protocol import end_packet, packet_header, stream_header

PROTOCOLS = ("dv", "tcp")
MAX_QUEUED_PACKETS = 64
SEND_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 30.0
LINGER_S = 5.0
_SETTLE_S = 0.3                 # clients must stay connected this long before playing
_BATCH_EVENTS = 1 << 19         # events converted to EventStores at a time
_BATCH_PACKETS = 256
_IOV_MAX = 1024                 # buffers per sendmsg (Linux UIO_MAXIOV)
_SEND_BATCH_BYTES = 1 << 21     # tcp: packets already due are sent together up to this


def serve(path, *, protocol: str = "dv", host: str = "127.0.0.1", port: int = 7777,
          speed: float = 1.0, repeat: int = 1, format: str | None = None,
          packet_us: int = PACKET_US, packet_events: int = PACKET_EVENTS, clients: int = 1,
          wait_s: float = 600.0, crc: bool = False, log=None) -> dict:
    """Publish the event file `path` on host:port until it has been played `repeat`
    times at `speed` x real time (0 = as fast as clients take it), in packets of at most
    `packet_events` events / `packet_us` us. Waits up to `wait_s` seconds for `clients`
    clients first. Returns {"events", "packets", "seconds", "clients"}; `log(message)`
    gets progress lines."""
    log = log or (lambda msg: None)
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    port = check_int("port", port, 1, 65535)
    clients = check_int("clients", clients, 0, 1024)
    speed = check_speed(speed)
    check_int("repeat", repeat, 1, 1 << 20)
    check_int("packet_us", packet_us, 1, 1 << 40)
    check_int("packet_events", packet_events, 1, 1 << 20)
    if not wait_s > 0:
        raise ConfigError(f"wait_s must be > 0, got {wait_s!r}")
    with open_events(path, format) as reader:
        size = reader.sensor_size
        if size is None:
            raise ConfigError("the file does not give its sensor size", path=path)
        if protocol == "dv":
            check_dv_size(size)
    args = dict(path=str(path), format=format, host=host, port=port, speed=speed,
                repeat=repeat, packet_us=packet_us, packet_events=packet_events,
                clients=clients, wait_s=wait_s)
    if protocol == "tcp":
        return _serve_tcp(**args, crc=crc, log=log)
    return _serve_dv_child(args, log)


def _wait_clients(count, clients: int, wait_s: float, where: str) -> None:
    """Wait until `count()` >= clients has held for _SETTLE_S (a connection probe comes
    and goes); StreamError after `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    since = None
    while True:
        now = time.monotonic()
        if count() >= clients:
            since = since or now
            if now - since >= _SETTLE_S or clients == 0:
                return
        else:
            since = None
        if now >= deadline:
            raise StreamError(f"{count()} of {clients} client(s) connected within {wait_s:g} s",
                              path=where)
        time.sleep(0.01)


# -- tcp ---------------------------------------------------------------------------------------

class _TcpPublisher:
    """Listening socket + connected clients; each gets the stream header on accept."""

    def __init__(self, host: str, port: int, header: bytes, log):
        self.header, self.log = header, log
        self.clients: list[tuple[socket.socket, str]] = []
        self.lock = threading.Lock()
        self.closed = threading.Event()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.lsock = socket.socket(family, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.lsock.bind((host, port))
        except OSError as e:
            self.lsock.close()
            raise StreamError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.lsock.listen(16)
        self.lsock.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept, name="evpipe-accept", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                sock, addr = self.lsock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            name = f"{addr[0]}:{addr[1]}"
            sock.settimeout(SEND_TIMEOUT_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                sock.sendall(self.header)
            except OSError:
                sock.close()
                continue
            with self.lock:
                self.clients.append((sock, name))
            self.log(f"client {name} connected")

    def count(self) -> int:
        with self.lock:
            return len(self.clients)

    def send(self, parts: list) -> None:
        """Send the byte blobs `parts` to every client; drop clients that fail or stall."""
        with self.lock:
            clients = list(self.clients)
        for sock, name in clients:
            try:
                _send_parts(sock, parts)
            except OSError as e:
                self._drop(sock, name, f"{e.strerror or e}")

    def _drop(self, sock, name: str, why: str) -> None:
        with self.lock:
            self.clients = [c for c in self.clients if c[0] is not sock]
        sock.close()
        self.log(f"client {name} dropped ({why})")

    def finish(self) -> None:
        """End-of-stream packet to every client, then wait (LINGER_S) for them to close."""
        self.send([end_packet()])
        with self.lock:
            clients = list(self.clients)
        deadline = time.monotonic() + LINGER_S
        for sock, _ in clients:
            try:
                sock.shutdown(socket.SHUT_WR)
                while time.monotonic() < deadline:
                    sock.settimeout(max(deadline - time.monotonic(), 0.01))
                    if not sock.recv(1 << 16):
                        break
            except OSError:
                pass

    def close(self) -> None:
        self.closed.set()
        self.lsock.close()
        self.thread.join(2.0)
        with self.lock:
            for sock, _ in self.clients:
                sock.close()
            self.clients = []


def _send_parts(sock: socket.socket, parts: list) -> None:
    """Send the byte blobs `parts` in order with as few `sendmsg` calls (one copy into the
    kernel each, no joining here) as the socket takes."""
    views = [memoryview(p).cast("B") for p in parts]
    i = 0
    while i < len(views):
        sent = sock.sendmsg(views[i:i + _IOV_MAX])
        while i < len(views) and sent >= len(views[i]):
            sent -= len(views[i])
            i += 1
        if sent:
            views[i] = views[i][sent:]


def _serve_tcp(path, format, host, port, speed, repeat, packet_us, packet_events, clients,
               wait_s, crc, log) -> dict:
    with open_events(path, format) as reader:
        size = reader.sensor_size
        pub = _TcpPublisher(host, port, stream_header(size.width, size.height), log)
        where = f"tcp://{host}:{port}"
        try:
            log(f"{where}: serving {path} ({size.width}x{size.height}, speed {speed:g}); "
                f"waiting for {clients} client(s)")
            _wait_clients(pub.count, clients, wait_s, where)
            pacer = Pacer(speed)
            n = k = 0
            t0 = time.monotonic()
            batch, batch_bytes = [], 0
            for pk in packets(reader, packet_us, packet_events, repeat):
                t_first, t_last = int(pk["t"][0]), int(pk["t"][-1])
                delay = pacer.delay(t_first, t_last)
                if delay > 0 and batch:  # what is due goes out before waiting for this packet
                    pub.send(batch)
                    batch, batch_bytes = [], 0
                    delay = pacer.delay(t_first, t_last)
                if delay > 0:
                    time.sleep(delay)
                pk = np.ascontiguousarray(pk)
                batch += [packet_header(pk, crc), pk.view(np.uint8)]
                batch_bytes += pk.nbytes
                n += len(pk)
                k += 1
                if batch_bytes >= _SEND_BATCH_BYTES:
                    pub.send(batch)
                    batch, batch_bytes = [], 0
            if batch:
                pub.send(batch)
            seconds = time.monotonic() - t0
            pub.finish()
            stats = {"events": n, "packets": k, "seconds": round(seconds, 3),
                     "clients": pub.count()}
        finally:
            pub.close()
    log(_sent_line(stats))
    return stats


def _sent_line(stats: dict) -> str:
    rate = stats["events"] / max(stats["seconds"], 1e-9) / 1e6
    return (f"sent {stats['events']} events in {stats['packets']} packets in "
            f"{stats['seconds']:.2f} s ({rate:.2f} Mev/s)")


# -- dv ------------------------------------------------------------------------------------------

def _serve_dv_child(args: dict, log) -> dict:
    """Run `_publish_dv` in a spawned child and relay its messages."""
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_dv_child, args=(send, args), name="evpipe-serve-dv", daemon=True)
    proc.start()
    send.close()
    stats = error = None
    try:
        while True:
            try:
                if not recv.poll(0.2):
                    if not proc.is_alive() and not recv.poll(0):
                        break
                    continue
                kind, value = recv.recv()
            except EOFError:
                break
            if kind == "log":
                log(value)
            elif kind == "done":
                stats = value
            else:
                error = value
        proc.join(5.0)
    except KeyboardInterrupt:
        proc.terminate()
        raise
    finally:
        proc.join(3.0)
        if proc.is_alive():
            proc.kill()
            proc.join(3.0)
        recv.close()
    if error is not None:
        raise error
    if stats is None:
        raise StreamError(f"the dv publisher process ended with code {proc.exitcode} and "
                          "no result", path=args["path"])
    log(_sent_line(stats))
    return stats


def _dv_child(conn, args: dict) -> None:
    """Child process body: publish, report through `conn`, and leave with os._exit (no
    NetworkWriter destructor)."""
    code = 0
    keep: list = []  # holds the NetworkWriter until os._exit: its destructor may hang
    parent = os.getppid()

    def orphaned() -> None:  # the parent was killed: do not serve on alone
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=orphaned, name="evpipe-orphan", daemon=True).start()
    try:
        stats = _publish_dv(**args, keep=keep, log=lambda msg: conn.send(("log", msg)))
        conn.send(("done", stats))
    except KeyboardInterrupt:
        code = 130
    except BaseException as e:
        code = 1
        err = e if isinstance(e, EvpipeError) else StreamError(f"{type(e).__name__}: {e}")
        try:
            conn.send(("error", err))
        except OSError:
            pass
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _publish_dv(path, format, host, port, speed, repeat, packet_us, packet_events, clients,
                wait_s, keep: list, log) -> dict:
    """Publish on a NetworkWriter that is appended to `keep` and never destroyed here."""
    dv = import_dv("evpipe serve --protocol dv")
    where = f"dv://{host}:{port}"
    reader = open_events(path, format)
    size = reader.sensor_size
    stream = dv.io.Stream.EventStream(0, "events", "evpipe", (size.width, size.height))
    stream.setCompression(dv.CompressionType.NONE)
    try:
        writer = dv.io.NetworkWriter(host, port, stream)
    except RuntimeError as e:
        raise StreamError(f"cannot listen: {str(e).split(' [')[0]}", path=where) from None
    keep.append(writer)
    log(f"{where}: serving {path} ({size.width}x{size.height}, speed {speed:g}); waiting "
        f"for {clients} client(s)")
    _wait_clients(writer.getClientCount, clients, wait_s, where)

    stop = threading.Event()
    batches: queue.Queue = queue.Queue(maxsize=4)
    failure: list[BaseException] = []

    def convert() -> None:
        pending: list[np.ndarray] = []
        try:
            for pk in packets(reader, packet_us, packet_events, repeat):
                pending.append(pk)
                if len(pending) >= _BATCH_PACKETS or sum(map(len, pending)) >= _BATCH_EVENTS:
                    _put(batches, _stores(pending, size, dv), stop)
                    pending = []
            if pending:
                _put(batches, _stores(pending, size, dv), stop)
        except BaseException as e:
            failure.append(e)
        finally:
            _put(batches, None, stop)

    thread = threading.Thread(target=convert, name="evpipe-convert", daemon=True)
    thread.start()
    pacer = Pacer(speed)
    n = k = 0
    t0 = time.monotonic()
    try:
        while (stores := batches.get(timeout=DRAIN_TIMEOUT_S)) is not None:
            for store in stores:
                delay = pacer.delay(store.getLowestTime(), store.getHighestTime())
                if delay > 0:
                    time.sleep(delay)
                _wait_queue(writer, MAX_QUEUED_PACKETS, where)
                writer.writeEvents(store)
                n += len(store)
                k += 1
        seconds = time.monotonic() - t0
        _wait_queue(writer, 0, where, DRAIN_TIMEOUT_S)
        time.sleep(0.2)  # let the kernel hand the last bytes over before the process ends
    except queue.Empty:
        raise StreamError(f"no packets converted within {DRAIN_TIMEOUT_S:g} s",
                          path=where) from None
    finally:
        stop.set()
        thread.join(5.0)
        reader.close()
    if failure:
        raise failure[0]
    return {"events": n, "packets": k, "seconds": round(seconds, 3),
            "clients": writer.getClientCount()}


def _stores(pending: list[np.ndarray], size, dv) -> list:
    bounds = np.cumsum([0] + [len(p) for p in pending])
    return to_event_stores(concat_events(pending), bounds, size, dv)


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _wait_queue(writer, limit: int, where: str, timeout: float = SEND_TIMEOUT_S) -> None:
    """Wait until the writer holds at most `limit` queued packets; StreamError when it
    has not moved for `timeout` seconds (no client reads)."""
    last, since = writer.getQueuedPacketCount(), time.monotonic()
    while last > limit:
        time.sleep(0.0005)
        queued = writer.getQueuedPacketCount()
        if queued != last:
            last, since = queued, time.monotonic()
        elif time.monotonic() - since > timeout:
            raise StreamError(f"{queued} packets stayed queued for {timeout:g} s (clients "
                              "stopped reading)", path=where)
