"""Sources: URI parsing, clear errors, replay pacing, never a hang on a wrong server."""

import importlib.util
import socket
import threading
import time

import numpy as np
import pytest

from evpipe.errors import ConfigError, StreamError
from evpipe.events import EVENT_DTYPE
from evpipe.io import read_events, write_events
from evpipe.stream import StreamConfig, WindowSpec, open_source, run_stream
from evpipe.stream.dvio import from_dv, to_event_store_push_back, to_event_stores
from evpipe.stream.sources import DvSource, ReplaySource, SourceLost, TcpSource

from .conftest import free_port


@pytest.mark.parametrize("uri, match", [
    ("recording.raw", "has no scheme"),
    ("udp://1.2.3.4:5", "unknown source scheme 'udp'"),
    ("dv:127.0.0.1:7777", "expected dv://HOST:PORT"),
    ("dv://127.0.0.1", "expected HOST:PORT"),
    ("tcp://127.0.0.1:70000", "port in 1..65535"),
    ("replay:", "expected replay:FILE"),
    ("replay:x.raw?speed=fast", "speed must be a number"),
    ("replay:x.raw?speed=-1", "speed must be a finite number >= 0"),
    ("replay:x.raw?repeat=0", "repeat must be an integer >= 1"),
    ("replay:x.raw?pace=1", "unknown replay option pace"),
])
def test_bad_uris(uri, match):
    with pytest.raises(ConfigError, match=match):
        open_source(uri)


def test_uri_forms():
    assert isinstance(open_source("dv://127.0.0.1:7777"), DvSource)
    src = open_source("dv:///tmp/dv.sock")
    assert src.path == "/tmp/dv.sock" and src.host is None
    src = open_source("replay:/data/a?b.raw?speed=0.5&repeat=3")
    assert isinstance(src, ReplaySource)
    assert (str(src.path), src.speed, src.repeat) == ("/data/a?b.raw", 0.5, 3)
    assert isinstance(open_source("tcp://[::1]:9000"), TcpSource)


def test_camera_without_a_camera_is_a_clear_error():
    dv = pytest.importorskip("dv_processing")
    if dv.io.camera.discover():
        pytest.skip("a camera is attached")
    with pytest.raises(StreamError, match="no camera attached"):
        run_stream("camera:", config=StreamConfig(report_seconds=0))


def test_metavision_without_the_sdk_is_a_clear_error():
    if importlib.util.find_spec("metavision_core") is not None:
        pytest.skip("the Metavision SDK is installed")
    with pytest.raises(StreamError, match="needs the Prophesee Metavision SDK"):
        run_stream("metavision:", config=StreamConfig(report_seconds=0))


def test_nothing_listening_gives_up_after_the_connect_timeout():
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(StreamError, match="Connection refused"):
        run_stream(f"tcp://127.0.0.1:{port}",
                   config=StreamConfig(connect_timeout_s=0.5, backoff_s=0.05))
    assert time.monotonic() - t0 < 5


@pytest.fixture
def silent_server():
    """A server that accepts connections and sends `payload` (default nothing)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.1)
    conns, payload, stop = [], [b""], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            c.sendall(payload[0])
            conns.append(c)

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    yield srv.getsockname()[1], payload
    stop.set()
    th.join(5)
    for c in conns:
        c.close()
    srv.close()


@pytest.mark.parametrize("scheme", ["dv", "tcp"])
def test_a_server_that_says_nothing_is_an_error_not_a_hang(silent_server, scheme, monkeypatch):
    # dv-processing's NetworkReader would block the interpreter (GIL held) here
    monkeypatch.setattr("evpipe.stream.sources.CONNECT_TIMEOUT_S", 0.3)
    port, _ = silent_server
    src = open_source(f"{scheme}://127.0.0.1:{port}")
    t0 = time.monotonic()
    with pytest.raises(StreamError, match="stream header within"):
        src.open()
    assert time.monotonic() - t0 < 10


def test_dv_uri_on_an_evpipe_server_says_so(silent_server):
    from evpipe.stream.protocol import stream_header
    port, payload = silent_server
    payload[0] = stream_header(64, 64)
    with pytest.raises(StreamError, match="use tcp://"):
        open_source(f"dv://127.0.0.1:{port}").open()
    src = open_source(f"tcp://127.0.0.1:{port}")
    src.open()
    assert src.sensor_size == (64, 64)
    assert src.read(0.05) is None
    src.close()


def test_tcp_refused_is_retriable():
    with pytest.raises(SourceLost):
        open_source(f"tcp://127.0.0.1:{free_port()}").open()


def test_replay_of_a_2_s_recording_at_speed_1_takes_2_s(tmp_path):
    rng = np.random.default_rng(0)
    n = 20_000
    ev = np.zeros(n, EVENT_DTYPE)
    ev["t"] = np.sort(rng.integers(0, 2_000_001, n))
    ev["t"][[0, -1]] = 0, 2_000_000
    ev["x"], ev["y"], ev["p"] = rng.integers(0, 64, n), rng.integers(0, 48, n), rng.integers(0, 2, n)
    path = tmp_path / "two_seconds.h5"
    write_events(path, ev, "h5", (64, 48))
    arrivals = []
    t0 = time.monotonic()
    s = run_stream(f"replay:{path}?speed=1", windows=WindowSpec(window_us=100_000),
                   on_window=lambda r: arrivals.append(r.arrival_s),
                   config=StreamConfig(report_seconds=0))
    took = time.monotonic() - t0
    assert s["events"] == n == s["window_events"] and s["dropped_events"] == 0
    assert 1.8 <= took <= 2.2 + 0.5      # + start-up (reader, warm-up)
    span = arrivals[-1] - arrivals[0]     # first to last window: 1.9 s of recording
    assert 1.9 * 0.9 <= span <= 1.9 * 1.1
    t0 = time.monotonic()
    run_stream(f"replay:{path}?speed=4", config=StreamConfig(report_seconds=0))
    assert 0.45 <= time.monotonic() - t0 <= 0.5 * 1.1 + 0.5


def test_numpy_to_event_store_routes_agree(data_dir):
    dv = pytest.importorskip("dv_processing")
    ev = read_events(data_dir / "prophesee_evt3" / "evt3_pedestrians_small.raw")
    bounds = [0, 1, 1000, 1000, 4999, 5000]         # an empty packet is skipped
    stores = to_event_stores(ev, bounds, (1280, 720), dv)
    assert [len(s) for s in stores] == [1, 999, 3999, 1]
    assert np.concatenate([from_dv(s.numpy()) for s in stores]).tobytes() == ev.tobytes()
    slow = to_event_store_push_back(ev[:300], dv)
    assert from_dv(slow.numpy()).tobytes() == ev[:300].tobytes()


UNIX_WRITER = """
import os, sys, time
import dv_processing as dv
from evpipe.io import read_events
from evpipe.stream.dvio import to_event_stores
events = read_events(sys.argv[2])
stores = to_event_stores(events, range(0, len(events) + 1, 500), (1280, 720), dv)
writer = dv.io.NetworkWriter(sys.argv[1], dv.io.Stream.EventStream(0, "events", "t", (1280, 720)))
deadline = time.monotonic() + 20
since = None
while since is None or time.monotonic() - since < 0.3:  # a client, not the header probe
    since = (since or time.monotonic()) if writer.getClientCount() else None
    if time.monotonic() > deadline:
        os._exit(1)
    time.sleep(0.01)
for s in stores:
    writer.writeEvents(s)
while writer.getQueuedPacketCount() and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(0.2)
os._exit(0)  # never destroy a NetworkWriter with a client connected (hangs)
"""


def test_dv_over_a_unix_socket(data_dir, tmp_path):
    import subprocess
    import sys
    pytest.importorskip("dv_processing")
    path = data_dir / "prophesee_evt3" / "evt3_pedestrians_small.raw"
    sock = tmp_path / "dv.sock"
    writer = subprocess.Popen([sys.executable, "-c", UNIX_WRITER, str(sock), str(path)])
    try:
        got = []
        s = run_stream(f"dv://{sock}", encoding="events", windows=WindowSpec(window_events=1000),
                       on_window=lambda r: got.append(r.events),
                       config=StreamConfig(reconnect=0, backoff_s=0.05, overload="block",
                                           report_seconds=0))
        assert writer.wait(20) == 0
    finally:
        writer.kill()
    assert s["events"] == 5000 and s["ended"].startswith("source closed")
    assert np.concatenate(got).tobytes() == read_events(path).tobytes()


def test_tcp_skips_header_fields_of_later_versions(silent_server):
    from evpipe.stream.protocol import end_packet, packet_header, stream_header
    from evpipe.stream.sources import ENDED
    port, payload = silent_server
    head = bytearray(stream_header(64, 48))
    head[6:8] = (48).to_bytes(2, "little")          # 16 more header bytes than v1 knows
    ev = np.zeros(3, EVENT_DTYPE)
    ev["t"], ev["x"] = [5, 6, 7], [1, 2, 63]
    payload[0] = bytes(head) + b"\xff" * 16 + packet_header(ev) + ev.tobytes() + end_packet()
    src = open_source(f"tcp://127.0.0.1:{port}")
    src.open()
    got = src.read(2.0)
    assert got.tobytes() == ev.tobytes() and src.read(1.0) is ENDED
    src.close()
