"""Load test of streaming inference on loopback: `evpipe serve` -> `run_stream`.

    python tools/bench_stream.py [--seconds 4] [--window-us 10000] [--skip-model]

1. NumPy -> dv.EventStore routes in the installed dv-processing: `push_back` per event
   (the documented one) against evpipe's AEDAT 4 packet route (evpipe/stream/dvio.py).
2. Sustained events/s through dv:// and tcp:// with the frames encoder, without and
   with a small torch model, against a target rate (a synthetic 640x480 EVT 2.0
   recording made at the target rate, replayed by `evpipe serve` at speed 1, so each
   window holds as many events as it would live).
   Reported per run: the server's send rate, the rate received and windowed (Mev/s)
   and its ratio to the target, window latency p50/p99
   (prediction done - arrival of the window's last event), dropped events, events lost
   in transport (sent - received) and unaccounted ones (received - windowed - dropped,
   which must be 0).

The server runs as a subprocess (the real `evpipe serve` command line), the client in
this process; both share this machine's cores, so the numbers are a floor.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evpipe.events import EVENT_DTYPE  # noqa: E402
from evpipe.io import write_events  # noqa: E402
from evpipe.stream import StreamConfig, WindowSpec, run_stream  # noqa: E402
from evpipe.stream.dvio import import_dv, to_event_store_push_back, to_event_stores  # noqa: E402

W, H = 640, 480


def synthetic(rate_mev: float, seconds: float, seed: int = 0) -> np.ndarray:
    """Uniform random events at `rate_mev` Mev/s over `seconds` (EVENT_DTYPE)."""
    n = int(rate_mev * 1e6 * seconds)
    rng = np.random.default_rng(seed)
    ev = np.empty(n, EVENT_DTYPE)
    ev["t"] = (np.arange(n, dtype=np.int64) * int(seconds * 1e6)) // n
    ev["x"] = rng.integers(0, W, n)
    ev["y"] = rng.integers(0, H, n)
    ev["p"] = rng.integers(0, 2, n)
    return ev


def bench_conversion(ev: np.ndarray) -> list[tuple]:
    dv = import_dv()
    n_slow = 200_000
    t = time.perf_counter()
    to_event_store_push_back(ev[:n_slow], dv)
    slow = n_slow / (time.perf_counter() - t) / 1e6
    bounds = np.arange(0, len(ev) + 1, 10_000)
    to_event_stores(ev[:100_000], bounds[:11], (W, H), dv)        # warm the page cache
    t = time.perf_counter()
    to_event_stores(ev, bounds, (W, H), dv)
    fast = len(ev) / (time.perf_counter() - t) / 1e6
    return [("EventStore.push_back per event", n_slow, slow, 1.0),
            ("AEDAT 4 packets + MonoCameraRecording", len(ev), fast, fast / slow)]


def small_model():
    """Frames [T, 2, H, W] -> 8x8 average pool -> linear -> 10 softmax scores (torch)."""
    import torch
    torch.set_num_threads(1)
    net = None

    def predict(record):
        nonlocal net
        x = torch.from_numpy(record["frames"].astype(np.float32)).flatten(0, 1)[None]
        if net is None:
            torch.manual_seed(0)
            net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(8), torch.nn.Flatten(),
                                      torch.nn.Linear(x.shape[1] * 64, 10)).eval()
        with torch.no_grad():
            scores = torch.softmax(net(x)[0], 0)
        return {"class": int(scores.argmax())}
    return predict


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def framed_stream(path: Path, rate_mev: float, seconds: float) -> np.ndarray:
    """Write a whole tcp:// byte stream (header, 10k-event packets at `rate_mev` Mev/s of
    sensor time, end packet) to `path`; int64 [packets, 2]: (end byte offset, t_last us)."""
    from evpipe.stream.protocol import end_packet, packet_header, stream_header
    ev = synthetic(rate_mev, 1.0)
    marks = []
    with open(path, "wb") as f:
        f.write(stream_header(W, H))
        for k in range(max(1, round(seconds))):
            if k:
                ev["t"] += 1_000_000
            for s in range(0, len(ev), 10_000):
                pk = ev[s:s + 10_000]
                f.write(packet_header(pk))
                f.write(pk.tobytes())
                marks.append((f.tell(), int(pk["t"][-1])))
        f.write(end_packet())
    return np.array(marks, np.int64)


def sendfile_sender(path: str, marks: np.ndarray, port: int) -> None:
    """Serve one client the pre-framed stream with os.sendfile (the kernel copies; the
    sender takes almost no CPU), 1M events per call, paced on the events' clock."""
    import socket
    srv = socket.create_server(("127.0.0.1", port))
    conn, _ = srv.accept()
    fd = os.open(path, os.O_RDONLY)
    size, off, wall0 = os.fstat(fd).st_size, 0, time.monotonic()
    for j in range(99, len(marks) + 99, 100):
        end, t_last = marks[min(j, len(marks) - 1)]
        delay = wall0 + (t_last - marks[0, 1]) / 1e6 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        while off < end:
            off += os.sendfile(conn.fileno(), fd, off, int(end) - off)
    while off < size:
        off += os.sendfile(conn.fileno(), fd, off, size - off)
    conn.close()
    srv.close()


def client_capacity(rate_mev: float, seconds: float, window_us: int, n_bins: int) -> dict:
    """`run_stream` over tcp:// from a sendfile sender at `rate_mev` (no evpipe serve)."""
    import multiprocessing
    folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = Path(tmp) / "stream.bin"
        marks = framed_stream(path, rate_mev, seconds)
        port = free_port()
        sender = multiprocessing.get_context("spawn").Process(
            target=sendfile_sender, args=(str(path), marks, port))
        sender.start()
        arrivals = []
        try:
            s = run_stream(f"tcp://127.0.0.1:{port}", encoding="frames",
                           params={"n_bins": n_bins}, windows=WindowSpec(window_us=window_us),
                           on_window=lambda r: arrivals.append((r.arrival_s, r.n_events)),
                           config=StreamConfig(reconnect=0, connect_timeout_s=60,
                                               report_seconds=0))
        finally:
            sender.join(60)
            if sender.is_alive():
                sender.kill()
    return s | {"rate": arrival_rate(s, arrivals)}


def arrival_rate(summary: dict, arrivals: list) -> float:
    """Mev/s received between the first and the last window's arrival."""
    if len(arrivals) < 2:
        return 0.0
    return (summary["events"] - arrivals[0][1]) / (arrivals[-1][0] - arrivals[0][0]) / 1e6


def run(protocol: str, path: Path, speed: float, repeat: int, window_us: int, model,
        target_mev: float, n_bins: int) -> dict:
    port = free_port()
    with tempfile.TemporaryFile() as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "evpipe.cli", "serve", str(path), "--protocol",
             protocol, "--port", str(port), "--speed", str(speed), "--repeat", str(repeat)],
            stderr=err, cwd=Path(__file__).resolve().parents[1])
        arrivals = []
        try:
            s = run_stream(f"{protocol}://127.0.0.1:{port}", encoding="frames",
                           params={"n_bins": n_bins}, windows=WindowSpec(window_us=window_us),
                           model=model,
                           on_window=lambda r: arrivals.append((r.arrival_s, r.n_events)),
                           config=StreamConfig(reconnect=0, connect_timeout_s=30,
                                               report_seconds=0))
            server.wait(60)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        err.seek(0)
        log = err.read().decode()
    m = re.search(r"sent (\d+) events .*\(([\d.]+) Mev/s\)", log)
    sent, sent_rate = (int(m.group(1)), float(m.group(2))) if m else (None, float("nan"))
    rate = arrival_rate(s, arrivals)
    return {"rate": rate, "sent_rate": sent_rate, "ratio": rate / target_mev, "p50": s["p50_latency_ms"],
            "p99": s["p99_latency_ms"], "events": s["events"], "dropped": s["dropped_events"],
            "lost": None if sent is None else sent - s["events"],
            "unaccounted": s["events"] - s["window_events"] - s["dropped_events"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each run")
    ap.add_argument("--window-us", type=int, default=10_000)
    ap.add_argument("--n-bins", type=int, default=5)
    ap.add_argument("--dv-mev", type=float, default=10.0, help="dv:// target rate, Mev/s")
    ap.add_argument("--tcp-mev", type=float, default=100.0, help="tcp:// target rate, Mev/s")
    ap.add_argument("--skip-model", action="store_true", help="no runs with the torch model")
    ap.add_argument("--skip-capacity", action="store_true",
                    help="no client-capacity run (it writes a ~5 GB stream to /dev/shm)")
    args = ap.parse_args()

    rec_s = 1.0
    base = synthetic(10.0, 0.5)
    print("NumPy -> dv.EventStore (dv-processing "
          f"{import_dv().__version__}), 10k-event packets")
    print(f"{'route':40s} {'events':>10s} {'Mev/s':>8s} {'ratio':>7s}")
    for name, n, mev, ratio in bench_conversion(base[:5_000_000]):
        print(f"{name:40s} {n:>10d} {mev:>8.1f} {ratio:>6.1f}x")

    with tempfile.TemporaryDirectory() as tmp:
        recordings = {}

        def recording(rate: float) -> Path:
            """A 1 s EVT 2.0 recording at `rate` Mev/s of sensor time, so that a window
            holds what it would hold live at that rate."""
            if rate not in recordings:
                path = Path(tmp) / f"synthetic_{rate:g}mev.raw"
                write_events(path, synthetic(rate, rec_s), "evt2", (W, H))
                recordings[rate] = path
            return recordings[rate]

        model = None if args.skip_model else small_model()
        runs = [("dv", args.dv_mev, None), ("tcp", args.tcp_mev, None)]
        if model is not None:
            runs += [("dv", args.dv_mev, model), ("tcp", args.tcp_mev, model)]
        runs.append(("tcp", 0.0, None))
        print(f"\nloopback, frames encoder (n_bins {args.n_bins}, {W}x{H}), "
              f"{args.window_us / 1e3:g} ms windows, {args.seconds:g} s per run, "
              f"{os.cpu_count()} cores shared by server and client; recordings made at the "
              "target rate and served at speed 1 (max: the tcp:// one at speed 0)")
        print(f"{'transport':9s} {'model':6s} {'target':>6s} {'sent':>6s} {'Mev/s':>7s} "
              f"{'ratio':>6s} "
              f"{'p50 ms':>7s} {'p99 ms':>7s} {'events':>10s} {'dropped':>9s} {'lost':>7s} "
              f"{'unacc.':>6s}")
        for protocol, target, mdl in runs:
            path = recording(target or args.tcp_mev)
            repeat = max(1, round(args.seconds / rec_s))
            r = run(protocol, path, 1.0 if target else 0.0, repeat, args.window_us, mdl,
                    target or float("nan"), args.n_bins)
            tgt = f"{target:g}" if target else "max"
            ratio = f"{r['ratio']:.2f}" if target else "-"
            p50 = "-" if r["p50"] is None else f"{r['p50']:.1f}"
            p99 = "-" if r["p99"] is None else f"{r['p99']:.1f}"
            print(f"{protocol + '://':9s} {'small' if mdl else 'none':6s} {tgt:>6s} "
                  f"{r['sent_rate']:>6.1f} {r['rate']:>7.1f} {ratio:>6s} {p50:>7s} {p99:>7s} {r['events']:>10d} "
                  f"{r['dropped']:>9d} {str(r['lost']):>7s} {r['unaccounted']:>6d}",
                  flush=True)


    if not args.skip_capacity:
        s = client_capacity(args.tcp_mev, args.seconds, args.window_us, args.n_bins)
        print(f"\nclient capacity: tcp:// from a pre-framed stream sent with os.sendfile "
              f"at {args.tcp_mev:g} Mev/s (no evpipe serve), frames encoder, no model")
        print(f"received {s['rate']:.1f} Mev/s, {s['events']} events, dropped "
              f"{s['dropped_events']} ({100 * s['dropped_events'] / max(s['events'], 1):.2f} %)"
              f", p50 "
              f"{s['p50_latency_ms']:.1f} ms, p99 {s['p99_latency_ms']:.1f} ms, unaccounted "
              f"{s['events'] - s['window_events'] - s['dropped_events']}")


if __name__ == "__main__":
    main()
