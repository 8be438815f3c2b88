"""Render one picture per registered encoding from the real sample files, for the README.

    python tools/render_examples.py [--data ../shared/data] [--out docs/images]

Writes <out>/<encoding>.png with `evpipe.view.view` (what `evpipe view` runs) and prints
one line per picture; encodings that are not registered are listed as skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from evpipe.encoders import ENCODINGS
from evpipe.errors import EvpipeError
from evpipe.io.kitti import png_size
from evpipe.view import view

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EVPIPE_TEST_DATA", REPO.parent / "shared" / "data"))
EVENTS = "aedat4/tonic_sample.aedat4"   # 320x240 recording from tonic's test data
# encoding -> (input under the data folder, encoding parameters); event files show their
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA,
                    help="real sample files (default ../shared/data or $EVPIPE_TEST_DATA)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="output folder")
    args = ap.parse_args(argv)
    failed = 0
    for name, (rel, params) in EXAMPLES.items():
        if name not in ENCODINGS:
            print(f"{name:<18} skipped: not registered")
            continue
        try:
            out = view(args.data / rel, args.out / f"{name}.png", name, params)
        except EvpipeError as e:
            print(f"{name:<18} failed: {e}")
            failed += 1
            continue
        w, h = png_size(out)
        print(f"{name:<18} {out}  {w}x{h}  from {rel}")
    missing = sorted(set(ENCODINGS.names()) - set(EXAMPLES))
    if missing:
        print(f"no example input for: {', '.join(missing)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
