"""Render one picture per registered encoding, for the README.

    python tools/render_examples.py [--out docs/images] [--real-data ../shared/data]

By default the inputs are SYNTHETIC (a deterministic rotating-bar event stream and the
bundled synthetic KITTI sample), so the committed pictures carry no third-party data
licence; `--real-data DIR` renders from the real sample files instead (for local
inspection). Writes <out>/<encoding>.png with `evpipe.view.view` (what `evpipe view`
runs) and prints one line per picture.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from evpipe.encoders import ENCODINGS
from evpipe.errors import EvpipeError
from evpipe.events import make_events
from evpipe.io import write_events
from evpipe.io.kitti import png_size
from evpipe.loaders.kitti_sample import sample_root
from evpipe.view import view

REPO = Path(__file__).resolve().parents[1]
EVENTS = "aedat4/tonic_sample.aedat4"   # real: 320x240 recording from tonic's test data
# encoding -> (real input under --real-data, encoding parameters); event inputs show their
# first 50 ms
EXAMPLES = {
    "events": (EVENTS, {}),
    "frames": (EVENTS, {"n_bins": 5}),
    "voxel_grid": (EVENTS, {"n_bins": 5}),
    "stacked_histogram": (EVENTS, {"n_bins": 5}),
    "time_surface": (EVENTS, {"tau_us": 10_000.0}),
    "event_cloud": (EVENTS, {"n_groups": 64}),
    "poisson": (EVENTS, {}),
    "svc": ("kitti/training/velodyne/000001.bin", {}),
}


def rotating_bar(path: Path, size=(240, 180), duration_us=100_000, seed=0) -> Path:
    """SYNTHETIC events of a bar rotating about the sensor centre (one turn per 200 ms)
    plus 2 % background noise, written as an evpipe h5 file."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    cx, cy = w / 2, h / 2
    prev = None
    parts = []
    for t in range(0, duration_us, 500):
        a = 2 * np.pi * t / 200_000
        dist = np.abs((xx - cx) * np.sin(a) - (yy - cy) * np.cos(a))
        along = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
        bar = (dist < 6) & (np.abs(along) < 0.4 * h)
        if prev is not None:
            for pol, mask in ((1, bar & ~prev), (0, prev & ~bar)):
                ys, xs = np.nonzero(mask)
                parts.append(make_events(t + rng.integers(0, 500, len(xs)), xs, ys,
                                         np.full(len(xs), pol)))
        prev = bar
    n = sum(len(p) for p in parts) // 50
    parts.append(make_events(rng.integers(0, duration_us, n), rng.integers(0, w, n),
                             rng.integers(0, h, n), rng.integers(0, 2, n)))
    ev = np.concatenate(parts)
    write_events(path, ev[np.argsort(ev["t"], kind="stable")], "h5", size)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real-data", type=Path, default=None,
                    help="render from the real sample files in this folder instead")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="output folder")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="evpipe-examples-"))
    synthetic = {"events": rotating_bar(tmp / "rotating_bar.h5"),
                 "points": sample_root() / "training" / "velodyne" / "000000.bin"}
    failed = 0
    for name, (rel, params) in EXAMPLES.items():
        if name not in ENCODINGS:
            print(f"{name:<18} skipped: not registered")
            continue
        if args.real_data is not None:
            src = args.real_data / rel
        else:
            src = synthetic["points" if name == "svc" else "events"]
        try:
            out = view(src, args.out / f"{name}.png", name, params)
        except EvpipeError as e:
            print(f"{name:<18} failed: {e}")
            failed += 1
            continue
        w, h = png_size(out)
        print(f"{name:<18} {out}  {w}x{h}  from {src}")
    missing = sorted(set(ENCODINGS.names()) - set(EXAMPLES))
    if missing:
        print(f"no example input for: {', '.join(missing)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
