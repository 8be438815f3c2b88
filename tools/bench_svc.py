"""Benchmark: evpipe SVC voxelisation vs spconv's CPU PointToVoxel + MeanVFE, and the
throughput of the whole `evpipe convert kitti --to svc` command.

Usage: python tools/bench_svc.py [--data ../shared/data/kitti] [--repeat 30] [--frames 60]
Prints Markdown tables (the README carries them).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from spconv.pytorch.utils import PointToVoxel

from evpipe.encoders import svc
from evpipe.io.kitti import read_velodyne

from benchlib import kitti_tree, timed

RANGE = [0, -40, -3, 70.4, 40, 1]
VOXEL = [0.05, 0.05, 0.1]


def bench_voxelize(data: Path, repeat: int) -> None:
    torch.set_num_threads(1)
    gen = PointToVoxel(VOXEL, RANGE, 4, 150000, 5)

    def spconv_mean(p):
        vox, idx, num = gen(torch.from_numpy(p))
        return vox.sum(dim=1) / torch.clamp_min(num.view(-1, 1), 1.0).type_as(vox)

    print("| scan | points | voxels | spconv PointToVoxel + mean (ms) | evpipe svc (ms) | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    ratios = []
    for fid in ("000000", "000001", "000002"):
        pts = read_velodyne(data / "training" / "velodyne" / f"{fid}.bin")
        r = svc(pts)
        assert np.array_equal(r.feats, spconv_mean(pts).numpy()), "results differ"
        t = timed({"ref": lambda: spconv_mean(pts), "ev": lambda: svc(pts)}, repeat)
        t_ref, t_ev = t["ref"], t["ev"]
        ratios.append(t_ref / t_ev)
        print(f"| {fid} | {len(pts)} | {len(r.coords)} | {t_ref * 1e3:.2f} | {t_ev * 1e3:.2f} "
              f"| {t_ref / t_ev:.1f}x |")
    print(f"\ngeometric mean speed-up: {np.exp(np.mean(np.log(ratios))):.2f}x "
          f"(median of {repeat} interleaved runs, one thread, same process)\n")


def bench_convert(data: Path, frames: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = kitti_tree(data, Path(tmp) / "kitti", frames)
        print(f"| `evpipe convert kitti --to svc` ({frames} real scans) | workers | wall s "
              "| scans/s |")
        print("|---|---:|---:|---:|")
        for fov in (True, False):
            for workers in (1, 2):
                out = Path(tmp) / f"out-{fov}-{workers}"
                cmd = [sys.executable, "-m", "evpipe.cli", "convert", "kitti", "--to", "svc",
                       "--root", str(root), "--out", str(out), "--workers", str(workers), "-q",
                       "--fov" if fov else "--no-fov"]
                t = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                wall = time.perf_counter() - t
                label = "camera FOV (default)" if fov else "full scan (--no-fov)"
                print(f"| {label} | {workers} | {wall:.2f} | {frames / wall:.1f} |")
        print("\n(wall time of the whole command, interpreter start-up included)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti")
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--frames", type=int, default=60)
    args = ap.parse_args()
    bench_voxelize(args.data, args.repeat)
    bench_convert(args.data, args.frames)


if __name__ == "__main__":
    main()
