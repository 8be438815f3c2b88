"""Benchmark: evpipe event tensors vs tonic 1.7 (to_frame_numpy, to_voxel_grid_numpy,
to_timesurface_numpy) on one synthetic stream, same parameters, same process.

Usage: python tools/bench_tensors.py [--events 20000000] [--seconds 20] [--repeat 3]
The stream: uniform pixels of a 304x240 (Gen1) sensor, random polarity, sorted uniform
timestamps over `--seconds`. Prints a Markdown table of Mev/s (best of `--repeat` runs,
after one untimed call that compiles the Numba kernels).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tonic.functional as tf

from evpipe.encoders.frames import to_frames
from evpipe.encoders.stacked_histogram import to_stacked_histogram
from evpipe.encoders.time_surface import to_time_surface
from evpipe.encoders.voxel_grid import to_voxel_grid
from evpipe.events import EVENT_DTYPE, SensorSize

SIZE = SensorSize(304, 240)
TONIC_SIZE = (304, 240, 2)
N_BINS = 10
DT_US = TAU_US = 50_000


def make_events(n: int, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ev = np.empty(n, EVENT_DTYPE)
    ev["t"] = np.sort(rng.integers(0, int(seconds * 1e6), n))
    ev["x"] = rng.integers(0, SIZE.width, n)
    ev["y"] = rng.integers(0, SIZE.height, n)
    ev["p"] = rng.integers(0, 2, n)
    return ev


def best(fn, events: np.ndarray, repeat: int) -> float:
    """Best wall seconds of fn(copy of events): tonic's voxel grid rewrites p in place,
    so every call gets a fresh copy (made outside the timing)."""
    times = []
    for _ in range(repeat):
        ev = events.copy()
        t = time.perf_counter()
        fn(ev)
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    events = make_events(args.events, args.seconds)
    small = events[:1000]
    cases = [
        (f"frames, {N_BINS} time bins", lambda e: to_frames(e, SIZE, N_BINS, "time"),
         lambda e: tf.to_frame_numpy(e, TONIC_SIZE, n_time_bins=N_BINS)),
        (f"frames, {N_BINS} count bins", lambda e: to_frames(e, SIZE, N_BINS, "number"),
         lambda e: tf.to_frame_numpy(e, TONIC_SIZE, n_event_bins=N_BINS)),
        (f"voxel grid, {N_BINS} bins", lambda e: to_voxel_grid(e, SIZE, N_BINS),
         lambda e: tf.to_voxel_grid_numpy(e, TONIC_SIZE, N_BINS)),
        (f"time surface, dt = tau = {DT_US // 1000} ms",
         lambda e: to_time_surface(e, SIZE, DT_US, TAU_US),
         lambda e: tf.to_timesurface_numpy(e, TONIC_SIZE, DT_US, TAU_US)),
        (f"stacked histogram, {N_BINS} bins, cutoff 10",
         lambda e: to_stacked_histogram(e, SIZE, N_BINS, 10), None),
    ]
    print(f"{args.events} events, {SIZE.width}x{SIZE.height}, {args.seconds:g} s; "
          f"best of {args.repeat}\n")
    print("| encoding | tonic 1.7 (Mev/s) | evpipe (Mev/s) | speed-up |")
    print("|---|---:|---:|---:|")
    mev = args.events / 1e6
    for name, ours, theirs in cases:
        ours(small.copy())
        t_ours = best(ours, events, args.repeat)
        if theirs is None:
            print(f"| {name} | - | {mev / t_ours:.1f} | - |")
            continue
        t_theirs = best(theirs, events, args.repeat)
        print(f"| {name} | {mev / t_theirs:.1f} | {mev / t_ours:.1f} | "
              f"{t_theirs / t_ours:.1f}x |")


if __name__ == "__main__":
    main()
