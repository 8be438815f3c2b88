"""`evpipe serve` -> `evpipe stream` on loopback, through the real command line."""

import time

import pytest

from evpipe.encoders.frames import FramesParams
from evpipe.events import slice_by_time
from evpipe.io import read_events
from evpipe.stream import record_digest

from .conftest import free_port

AEDAT4 = "aedat4/tonic_sample.aedat4"        # iniVation DVXplorer, 111 954 events, 0.59 s
EVT2 = "prophesee_evt2/evt2_sample.raw"      # Prophesee Gen3, 539 481 events in 50 ms


def summary_and_windows(lines):
    assert "summary" in lines[-1], lines[-1]
    return lines[-1]["summary"], lines[:-1]


def check_windows_offline(windows, events, sensor_size, n_bins):
    """Every window's record equals the frames encoder on the same slice of the file."""
    params = FramesParams(n_bins=n_bins)
    for w in windows:
        part = slice_by_time(events, w["t_start_us"], w["t_end_us"])
        assert w["n_events"] == len(part)
        assert w["sha256"] == record_digest(params.encode(part, sensor_size=sensor_size)), w


def wait_for_windows(proc, n, timeout=30.0):
    deadline = time.monotonic() + timeout
    while len(proc.stdout().splitlines()) < n:
        assert proc.p.poll() is None, proc.stderr()
        assert time.monotonic() < deadline, f"fewer than {n} windows after {timeout} s"
        time.sleep(0.05)


@pytest.mark.parametrize("protocol, name, window_us", [("tcp", EVT2, 5_000),
                                                       ("dv", AEDAT4, 50_000)])
def test_serve_then_stream_accounts_for_every_event(data_dir, cli, protocol, name, window_us):
    path = data_dir / name
    events = read_events(path)
    port = free_port()
    server = cli("serve", "serve", path, "--port", port, "--protocol", protocol)
    stream = cli("stream", "stream", f"{protocol}://127.0.0.1:{port}", "--encoding", "frames",
                 "--n-bins", 3, "--window-us", window_us, "--digest", "--reconnect", 0)
    assert stream.wait(60) == 0, stream.stderr()
    assert server.wait(30) == 0, server.stderr()
    summary, windows = summary_and_windows(stream.lines())
    # tcp: every event of the file arrives; dv: what arrived is all accounted for
    assert summary["events"] == len(events)
    assert summary["events"] == summary["window_events"] + summary["dropped_events"]
    assert sum(w["n_events"] for w in windows) == summary["window_events"]
    assert summary["windows"] == len(windows) > 0
    assert summary["malformed_packets"] == summary["out_of_order"] == 0
    check_windows_offline(windows, events, (640, 480) if name == EVT2 else (320, 240), 3)
    assert summary["p99_latency_ms"] is not None
    assert f"sent {len(events)} events" in server.stderr()


@pytest.mark.parametrize("protocol", ["tcp", "dv"])
def test_killed_server_restarted_client_reconnects_and_reports_the_gap(data_dir, cli,
                                                                       protocol):
    path = data_dir / AEDAT4
    n = len(read_events(path))
    port = free_port()
    first = cli("serve1", "serve", path, "--port", port, "--protocol", protocol,
                "--repeat", 5)
    stream = cli("stream", "stream", f"{protocol}://127.0.0.1:{port}", "--window-us", 20_000,
                 "--reconnect", 10, "--backoff", 0.1)
    wait_for_windows(stream, 5)
    first.kill()
    time.sleep(0.3)
    second = cli("serve2", "serve", path, "--port", port, "--protocol", protocol)
    assert second.wait(60) == 0, second.stderr()
    if protocol == "dv":    # no end-of-stream in dv: stop the client after the replay
        time.sleep(1.0)
        stream.interrupt()
        assert stream.wait(30) == 130
    else:
        assert stream.wait(30) == 0, stream.stderr()
    summary, windows = summary_and_windows(stream.lines())
    assert summary["reconnects"] == 1 and summary["n_gaps"] == 1
    gap = summary["gaps"][0]
    assert gap["lost_s"] > 0.2
    assert gap["t_after_us"] < gap["t_before_us"]          # the restarted server began anew
    assert "reconnected after" in stream.stderr() and "gap of" in stream.stderr()
    assert summary["events"] >= n + sum(w["n_events"] for w in windows[:5])
    assert summary["events"] == summary["window_events"] + summary["dropped_events"]
    assert summary["out_of_order"] == 0                    # a new session, a new clock


def test_ctrl_c_prints_the_summary(data_dir, cli):
    stream = cli("stream", "stream", f"replay:{data_dir / AEDAT4}?repeat=20",
                 "--window-us", 10_000)
    wait_for_windows(stream, 3)
    stream.interrupt()
    assert stream.wait(30) == 130
    summary, windows = summary_and_windows(stream.lines())
    assert summary["ended"] == "interrupted" and len(windows) >= 3
    assert summary["events"] == summary["window_events"] + summary["dropped_events"]
    assert "evpipe: interrupted" in stream.stderr()


@pytest.mark.parametrize("args, message", [
    (("stream", "udp://x:1"), "unknown source scheme"),
    (("stream", "replay:/nonexistent.raw"), "file not found"),
    (("stream", "replay:x.raw", "--window-us", 100, "--stride-us", 200), "must not exceed"),
    (("stream", "replay:x.raw", "--encoding", "frames", "--k", 3), "does not apply"),
    (("serve", "/nonexistent.raw"), "file not found"),
])
def test_bad_input_is_one_line_and_exit_1(cli, args, message):
    proc = cli("bad", *args)
    assert proc.wait(30) == 1
    err = proc.stderr().strip().splitlines()
    assert err[-1].startswith("evpipe: error:") and message in err[-1], err
