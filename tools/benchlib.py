"""Helpers shared by the benchmark scripts in tools/ (not a package: scripts run from here
have this folder on sys.path)."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path


def timed(fns: dict, repeat: int, stat=statistics.median, warm_up: bool = True) -> dict:
    """`stat` (median, or e.g. min) of each function's seconds over `repeat` rounds; each
    round calls every function once, interleaved, so machine noise hits all of them
    alike. `warm_up` calls each once first, untimed."""
    if warm_up:
        for fn in fns.values():
            fn()
    times: dict = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: stat(v) for k, v in times.items()}


def kitti_tree(data: Path, root: Path, n: int) -> Path:
    """A KITTI training tree of n frames at `root`, symlinked round-robin to the frames
    000000..000002 of the real tree `data`, with ImageSets/train.txt listing all n."""
    for sub, ext in (("velodyne", "bin"), ("label_2", "txt"), ("calib", "txt"),
                     ("image_2", "png")):
        (root / "training" / sub).mkdir(parents=True)
        for i in range(n):
            os.symlink((data / "training" / sub / f"{i % 3:06d}.{ext}").resolve(),
                       root / "training" / sub / f"{i:06d}.{ext}")
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "train.txt").write_text("".join(f"{i:06d}\n" for i in range(n)))
    return root
