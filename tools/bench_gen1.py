"""Benchmark: a 60 s Gen1-rate recording converted to RVT stacked histograms at 50 ms
windows (one per label timestamp), evpipe's `evpipe convert gen1 --to stacked_histogram`
vs a straight NumPy port of RVT's per-window preprocessing on the same file, each in its
own process with its peak RSS.

The port follows uzh-rpg/RVT (scripts/genx/preprocess_dataset.py + data/utils/
representations.py StackedHistogram.construct): all timestamps in RAM, a running max to
repair non-monotonic time, searchsorted per window, then the histogram of the window's
events clipped to the cutoff: with np.bincount (the faster port) and with np.add.at on
uint8 (the literal analogue of torch's put_(accumulate=True)). The ports keep their
histograms and write nothing; RVT also writes each one to HDF5 (Blosc zstd).

Usage: python tools/bench_gen1.py [--seconds 60] [--rate 333000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from evpipe.events import EVENT_DTYPE, SensorSize
from evpipe.io.dat import dat_header, dat_records

SIZE = SensorSize(304, 240)
WINDOW_US = 50_000
BINS, CUTOFF = 10, 10


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


def rvt_histogram(x, y, p, t, add_at: bool) -> np.ndarray:
    """RVT StackedHistogram.construct in NumPy on one window's int64 x, y, p and sorted t:
    uint8 [2*BINS, H, W]. Counts with np.bincount, or with `add_at` the literal form:
    uint8 zeros + np.add.at (torch put_(accumulate=True)), then the clip."""
    w, h = SIZE
    cells = 2 * BINS * h * w
    if not len(t):
        return np.zeros((2 * BINS, h, w), np.uint8)
    tn = (t - t[0]) / max(int(t[-1] - t[0]), 1) * BINS
    ti = np.minimum(np.floor(tn).astype(np.int64), BINS - 1)
    idx = x + w * y + w * h * ti + w * h * BINS * p
    if add_at:
        rep = np.zeros(cells, np.uint8)
        np.add.at(rep, idx, 1)
    else:
        rep = np.bincount(idx, minlength=cells)
    return np.minimum(rep, CUTOFF).astype(np.uint8, copy=False).reshape(2 * BINS, h, w)


def window_fields(ev: np.ndarray, lo: int, hi: int, t: np.ndarray):
    """int64 x, y, p of events [lo, hi) and their (corrected) times t[lo:hi]."""
    return (*(ev[k][lo:hi].astype(np.int64) for k in "xyp"), t[lo:hi])


RVT_PORT = r'''
import sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from bench_gen1 import WINDOW_US, rvt_histogram, window_fields
from evpipe.io import read_events
td, bbox, add_at = sys.argv[2], sys.argv[3], sys.argv[4] == "add_at"
t0 = time.perf_counter()
ev = read_events(td)                       # RVT's H5Reader: every event in RAM
t = np.maximum.accumulate(ev["t"])         # RVT _correct_time
out = []
for t_end in np.unique(np.load(bbox)["t"]):
    lo = np.searchsorted(t, t_end - WINDOW_US, side="left")
    hi = np.searchsorted(t, t_end, side="right")
    out.append(rvt_histogram(*window_fields(ev, lo, hi, t), add_at))
hwm = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
print(len(out), time.perf_counter() - t0, hwm)
'''


def histograms_only(td: Path, bbox: Path) -> tuple[float, float, float, int]:
    """Seconds for the port's per-window histogram code (np.bincount), for evpipe's
    `to_stacked_histogram` and for the np.add.at port on the same in-memory windows
    (events read once), and the number of windows; evpipe's results all checked equal to
    the port's, every 10th of the np.add.at port's."""
    from evpipe.encoders import to_stacked_histogram
    from evpipe.io import read_events
    ev = read_events(td)
    ev["t"] = np.maximum.accumulate(ev["t"])
    t = np.ascontiguousarray(ev["t"])
    bounds = [(np.searchsorted(t, te - WINDOW_US, "left"), np.searchsorted(t, te, "right"))
              for te in np.unique(np.load(bbox)["t"])]
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
    proc = subprocess.run(wrapped, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    hwm, inside = proc.stderr.rsplit("HWM", 1)[1].split()[:2]
    return wall, float(inside), int(hwm)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=333_000.0, help="events per second")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp) / "gen1"
        td = make_recording(root, args.seconds, args.rate)
        n = (td.stat().st_size - len(dat_header(SIZE))) // 8
        bbox = td.with_name(td.name.replace("_td.dat", "_bbox.npy"))
        ports = {}
        for kind in ("bincount", "add_at"):
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", RVT_PORT,
                                   str(Path(__file__).resolve().parent), str(td), str(bbox),
                                   kind], capture_output=True, text=True, check=True)
            windows, compute, port_hwm = proc.stdout.split()
            ports[kind] = (time.perf_counter() - t, float(compute), int(port_hwm))
        wall, inside, hwm = run_peak(["convert", "gen1", "--to", "stacked_histogram",
                                      "--root", str(root), "--out", str(Path(tmp) / "shards"),
                                      "-q"])
        print(f"recording: {n / 1e6:.1f}M events, {args.seconds:.0f} s, {int(windows)} label "
              f"timestamps, 50 ms windows, {BINS} bins, cutoff {CUTOFF}\n")
        base_wall, base_inside, _ = ports["bincount"]
        print("| | wall s | after start-up s | peak RSS MB | speed-up (wall / after start-up) |")
        print("|---|---:|---:|---:|---:|")
        for kind, label in (("bincount", "NumPy port of RVT, np.bincount (whole recording in "
                                         "RAM)"),
                            ("add_at", "NumPy port of RVT, np.add.at as torch put_")):
            pw, pi, ph = ports[kind]
            print(f"| {label} | {pw:.2f} | {pi:.2f} | {ph / 1024:.0f} | "
                  f"{base_wall / pw:.1f}x / {base_inside / pi:.1f}x |")
        print(f"| evpipe convert gen1 --to stacked_histogram | {wall:.2f} | {inside:.2f} "
              f"| {hwm / 1024:.0f} | {base_wall / wall:.1f}x / {base_inside / inside:.1f}x |")
        port_h, ours_h, add_at_h, k = histograms_only(td, bbox)
        print(f"| histograms only, same {k} in-memory windows: port, np.bincount | - | "
              f"{port_h:.2f} | - | 1.0x |")
        print(f"| histograms only: port, np.add.at | - | {add_at_h:.2f} | - "
              f"| {port_h / add_at_h:.1f}x |")
        print(f"| histograms only: evpipe `to_stacked_histogram` | - | {ours_h:.2f} | - "
              f"| {port_h / ours_h:.0f}x |")
        print("\n(first three rows: each in its own process; 'after start-up' excludes the "
              "interpreter start-up, not evpipe's imports or Numba's loading of its cached "
              "kernels; evpipe also compresses and writes the shards, the ports write "
              "nothing)")


if __name__ == "__main__":
    main()
