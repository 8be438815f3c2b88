"""Benchmark: a 60 s Gen1-rate recording converted to RVT stacked histograms at 50 ms
windows (one per label timestamp), evpipe's `evpipe convert gen1 --to stacked_histogram`
vs a straight NumPy port of RVT's per-window preprocessing on the same file
(tools/rvt_port.py: np.bincount, np.add.at, and np.bincount + RVT's HDF5 writer), each in
its own process with its peak RSS; then the histogram code alone on the same in-memory
windows, evpipe's marginal time per recording (a root of COPIES copies minus one, divided
by COPIES - 1), and the
floor of any Numba-based process (import NumPy + Numba, call one cached kernel).

Checked: the port's NumPy decode equals evpipe's reader, the port's histograms equal
evpipe's `to_stacked_histogram` on every window (np.add.at's on every 10th), and evpipe's
shards hold the port's histograms (every 50th window compared).

Usage: python tools/bench_gen1.py [--seconds 60] [--rate 333000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from evpipe.events import EVENT_DTYPE, SensorSize
from evpipe.io import read_events
from evpipe.io.dat import dat_header, dat_records
from evpipe.shards import ShardDataset
from rvt_port import (BINS, CUTOFF, HEIGHT, WIDTH, WINDOW_US, label_bounds, read_dat_numpy,
                      rvt_histogram, window_fields)

SIZE = SensorSize(WIDTH, HEIGHT)
PORT = Path(__file__).resolve().with_name("rvt_port.py")
COPIES = 4  # recordings in the root whose conversion gives the marginal time per recording
# Processes write and reuse bytecode as on a user's machine (this sandbox sets
# PYTHONDONTWRITEBYTECODE, which made every run compile evpipe's modules from source).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
PORTS = {"bincount": "NumPy port of RVT, np.bincount",
         "add_at": "NumPy port of RVT, np.add.at as torch put_",
         "write": "NumPy port of RVT, np.bincount + RVT's HDF5 writer (Blosc zstd 1)"}


def make_recording(folder: Path, seconds: float, rate: float, seed: int = 0,
                   label_every_us: int = WINDOW_US) -> Path:
    """A Gen1-style train/<name>_td.dat + _bbox.npy pair: `rate` events/s of uniform
    noise, one labelled box every `label_every_us` (v2 bbox dtype)."""
    split = folder / "train"
    split.mkdir(parents=True)
    name = "17-04-06_09-57-37_0_60000000"
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    block = 5_000_000
    with open(split / f"{name}_td.dat", "wb") as f:
        f.write(dat_header(SIZE))
        for start in range(0, n, block):
            m = min(block, n - start)
            ev = np.empty(m, EVENT_DTYPE)
            ev["t"] = np.sort(rng.integers(int(start / rate * 1e6), int((start + m) / rate * 1e6),
                                           m))
            ev["x"] = rng.integers(0, SIZE.width, m)
            ev["y"] = rng.integers(0, SIZE.height, m)
            ev["p"] = rng.integers(0, 2, m)
            f.write(dat_records(ev))
    ts = np.arange(label_every_us, int(seconds * 1e6), label_every_us, dtype=np.int64)
    boxes = np.zeros(len(ts), dtype=[("t", "<i8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"),
                                     ("h", "<f4"), ("class_id", "<u4"), ("track_id", "<u4"),
                                     ("class_confidence", "<f4")])
    boxes["t"] = ts
    boxes["x"] = 50 + 100 * (ts / ts[-1])
    boxes["y"], boxes["w"], boxes["h"] = 80, 40, 30
    boxes["class_confidence"] = 1
    np.save(split / f"{name}_bbox.npy", boxes)
    return split / f"{name}_td.dat"


def histograms_only(ev: np.ndarray, bbox: Path) -> tuple[float, float, float, int]:
    """Seconds for the port's per-window histogram code (np.bincount), for evpipe's
    `to_stacked_histogram` and for the np.add.at port on the same in-memory windows of
    the events `ev` (as evpipe reads them; times repaired in place), and the number of
    windows; evpipe's results all checked equal to the port's, every 10th of the np.add.at
    port's."""
    from evpipe.encoders import to_stacked_histogram
    ev["t"] = np.maximum.accumulate(ev["t"])
    t = np.ascontiguousarray(ev["t"])
    bounds = list(label_bounds(t, bbox))
    windows = [ev[lo:hi] for lo, hi in bounds]
    to_stacked_histogram(windows[0], SIZE, BINS, CUTOFF)  # compile / load the kernel
    # Each result is dropped before the next window, as a converter writes and moves on:
    # keeping 1.75 GB of fresh histograms would time page faults, not histogram code.
    t0 = time.perf_counter()
    for lo, hi in bounds:
        rvt_histogram(*window_fields(ev, lo, hi, t), False)
    t1 = time.perf_counter()
    for win in windows:
        to_stacked_histogram(win, SIZE, BINS, CUTOFF)
    t2 = time.perf_counter()
    for lo, hi in bounds:
        rvt_histogram(*window_fields(ev, lo, hi, t), True)
    t3 = time.perf_counter()
    for k, (win, (lo, hi)) in enumerate(zip(windows, bounds)):
        f = window_fields(ev, lo, hi, t)
        ref = rvt_histogram(*f, False)
        assert np.array_equal(ref, to_stacked_histogram(win, SIZE, BINS, CUTOFF)), \
            f"histograms differ in window {k}"
        assert k % 10 or np.array_equal(ref, rvt_histogram(*f, True)), \
            f"add.at port differs ({k})"
    return t1 - t0, t2 - t1, t3 - t2, len(windows)


def check_port(td: Path, bbox: Path, ref: np.ndarray, shards: Path) -> None:
    """The port's NumPy decode of `td` equals `ref` (evpipe's reader); evpipe's shards hold
    the port's histograms (every 50th window)."""
    ev = read_dat_numpy(td)
    for k in "txyp":
        assert np.array_equal(ev[k], ref[k]), f"NumPy decode differs in {k}"
    t = np.maximum.accumulate(ev["t"])
    ds = ShardDataset(shards)
    for k, (lo, hi) in enumerate(label_bounds(t, bbox)):
        if k % 50 == 0:
            assert np.array_equal(ds[k]["stacked_histogram"],
                                  rvt_histogram(*window_fields(ev, lo, hi, t), False)), \
                f"shard histogram {k} differs from the port's"


def run_port(td: Path, bbox: Path, kind: str, out: Path) -> tuple[float, float, int, int]:
    """(wall s, s after interpreter start-up, peak RSS kB, windows) of one port run."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, str(PORT), str(td), str(bbox), kind, str(out)],
                          capture_output=True, text=True, check=True, env=ENV)
    wall = time.perf_counter() - t
    windows, inside, hwm = proc.stdout.split()
    return wall, float(inside), int(hwm), int(windows)


def run_peak(cmd: list[str]) -> tuple[float, float, int]:
    """(wall seconds, seconds inside the command after interpreter start-up, peak RSS kB
    via VmHWM), printed by a wrapper."""
    wrapped = [sys.executable, "-c",
               "import runpy, sys, time, atexit; t0 = time.perf_counter(); "
               "atexit.register(lambda: print('HWM', open('/proc/self/status')"
               ".read().split('VmHWM:')[1].split()[0], time.perf_counter() - t0, "
               "file=sys.stderr)); "
               "runpy.run_module('evpipe.cli', run_name='__main__')"] + cmd
    t = time.perf_counter()
    proc = subprocess.run(wrapped, capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    hwm, inside = proc.stderr.rsplit("HWM", 1)[1].split()[:2]
    return wall, float(inside), int(hwm)


FLOOR = """import numpy as np
from numba import njit
@njit(cache=True)
def one(a):
    return a[0] + 1
one(np.zeros(1))
"""


def numba_floor(folder: Path) -> float:
    """Wall seconds of a process that only imports NumPy and Numba and calls one cached
    kernel (the second run: the first fills the cache): the least any Numba-based
    converter's process costs here."""
    script = folder / "floor.py"
    script.write_text(FLOOR)
    for _ in range(2):
        t = time.perf_counter()
        subprocess.run([sys.executable, str(script)], check=True, env=ENV)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=333_000.0, help="events per second")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        root = tmp / "gen1"
        td = make_recording(root, args.seconds, args.rate)
        n = (td.stat().st_size - len(dat_header(SIZE))) // 8
        bbox = td.with_name(td.name.replace("_td.dat", "_bbox.npy"))
        ports = {kind: run_port(td, bbox, kind, tmp / "rvt.h5") for kind in PORTS}
        convert = ["convert", "gen1", "--to", "stacked_histogram", "-q"]
        # untimed: a first run after an edit compiles evpipe's kernels into Numba's cache
        run_peak(convert + ["--root", str(root), "--out", str(tmp / "s0")])
        wall, inside, hwm = run_peak(convert + ["--root", str(root), "--out", str(tmp / "s1")])
        ev = read_events(td)
        check_port(td, bbox, ev, tmp / "s1")
        # more copies of the recording: evpipe's marginal cost per recording
        many = tmp / "gen1xN" / "train"
        many.mkdir(parents=True)
        for f in (td, bbox):
            for day in range(COPIES):
                os.link(f, many / f.name.replace("17-04-06", f"17-04-{day + 10}"))
        wall_n, _, hwm_n = run_peak(convert + ["--root", str(many.parent), "--out",
                                               str(tmp / "s2")])
        floor = numba_floor(tmp)
        windows = ports["bincount"][3]
        print(f"recording: {n / 1e6:.1f}M events, {args.seconds:.0f} s, {windows} label "
              f"timestamps, 50 ms windows, {BINS} bins, cutoff {CUTOFF}\n")
        # speed-ups against the faster port that writes nothing
        base = min(("bincount", "add_at"), key=lambda k: ports[k][1])
        base_wall, base_inside = ports[base][:2]
        print("| | wall s | after start-up s | peak RSS MB | speed-up (wall / after start-up) |")
        print("|---|---:|---:|---:|---:|")
        for kind, label in PORTS.items():
            pw, pi, ph, _ = ports[kind]
            print(f"| {label} | {pw:.2f} | {pi:.2f} | {ph / 1024:.0f} | "
                  f"{base_wall / pw:.1f}x / {base_inside / pi:.1f}x |")
        print(f"| evpipe convert gen1 --to stacked_histogram | {wall:.2f} | {inside:.2f} "
              f"| {hwm / 1024:.0f} | {base_wall / wall:.1f}x / {base_inside / inside:.1f}x |")
        marginal = (wall_n - wall) / (COPIES - 1)
        print(f"| evpipe, each further recording ({COPIES} copies {wall_n:.2f} s - 1 copy, "
              f"/ {COPIES - 1}) | {marginal:.2f} | - | {hwm_n / 1024:.0f} | "
              f"{base_inside / marginal:.1f}x "
              f"(against the port after start-up; {ports['write'][1] / marginal:.1f}x "
              "against it with RVT's writer) |")
        print(f"| floor: a process importing NumPy + Numba, one cached kernel call, no work | "
              f"{floor:.2f} | - | - | {base_wall / floor:.1f}x |")
        port_h, ours_h, add_at_h, k = histograms_only(ev, bbox)
        print(f"| histograms only, same {k} in-memory windows: port, np.bincount | - | "
              f"{port_h:.2f} | - | 1.0x |")
        print(f"| histograms only: port, np.add.at | - | {add_at_h:.2f} | - "
              f"| {port_h / add_at_h:.1f}x |")
        print(f"| histograms only: evpipe `to_stacked_histogram` | - | {ours_h:.2f} | - "
              f"| {port_h / ours_h:.0f}x |")
        print(f"\n(speed-ups against the faster port that writes nothing: {PORTS[base]}; each "
              "conversion row in its own process; 'after start-up' excludes only the "
              "interpreter's own start-up: it includes NumPy's import for the ports, and "
              "evpipe's imports and Numba's loading of its cached kernels for evpipe, which "
              "also writes shards)")


if __name__ == "__main__":
    main()
