"""Benchmark: conversion throughput with 1 and 2 local workers and on a 2-worker Dask
LocalCluster (same input, so the cluster path's overhead shows), and peak RSS of
converting one 200M-event recording with every event encoding.

Usage: python tools/bench_scale.py [--scans 600] [--events 200000000] [--skip-rss] [--skip-throughput]
       [--data ../shared/data/kitti] [--workdir DIR]
Prints Markdown tables (the README carries them).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gen1 import make_recording  # noqa: E402  (tools/ is not a package)
from benchlib import kitti_tree  # noqa: E402

from evpipe.convert import convert  # noqa: E402
from evpipe.shards import read_manifest  # noqa: E402

ENCODINGS = ("events", "frames", "voxel_grid", "stacked_histogram", "time_surface",
             "event_cloud", "poisson")


def bench_throughput(data: Path, scans: int, work: Path) -> None:
    from dask.distributed import Client, LocalCluster
    root = kitti_tree(data, work / "kitti", scans)
    common = dict(root=root, samples_per_shard=32, progress=False)
    rows = []
    for label, kw in (("local, 1 worker", {"workers": 1}), ("local, 2 workers", {"workers": 2})):
        t = time.perf_counter()
        convert("kitti", "svc", out=work / label.replace(" ", ""), **common, **kw)
        rows.append((label, time.perf_counter() - t))
    t = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, host="127.0.0.1") as cluster, Client(cluster) as c:
        started = time.perf_counter()
        convert("kitti", "svc", out=work / "dask", scheduler=c, **common)
        done = time.perf_counter()
    rows.append(("Dask LocalCluster, 2 workers (cluster running)", done - started))
    rows.append(("Dask LocalCluster, 2 workers (incl. cluster start)", done - t))
    same = ([s["sha256"] for s in read_manifest(work / "dask")["shards"]]
            == [s["sha256"] for s in read_manifest(work / "local,1worker")["shards"]])
    print(f"| `convert kitti --to svc`, {scans} real scans (FOV crop) | s | scans/s |")
    print("|---|---:|---:|")
    for label, sec in rows:
        print(f"| {label} | {sec:.2f} | {scans / sec:.0f} |")
    print(f"\n(in-process API calls, 32 scans per shard; Dask shards byte-identical to the "
          f"local ones: {same})\n")


def peak_rss(args: list[str]) -> tuple[float, int]:
    """(wall s, VmHWM kB) of `evpipe ARGS` in a fresh interpreter."""
    code = ("import atexit, runpy, sys\n"
            "atexit.register(lambda: print('HWM', open('/proc/self/status').read()"
            ".split('VmHWM:')[1].split()[0], file=sys.stderr))\n"
            "runpy.run_module('evpipe.cli', run_name='__main__')")
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return time.perf_counter() - t, int(proc.stderr.rsplit("HWM", 1)[1].split()[0])


def bench_rss(events: int, work: Path) -> None:
    rate = 333_000.0
    root = work / "gen1"
    td = make_recording(root, events / rate, rate, label_every_us=1_000_000)
    print(f"| one {events / 1e6:.0f}M-event recording ({td.stat().st_size / 1e9:.1f} GB DAT, "
          f"{events / rate:.0f} s, a label every 1 s) | samples | wall s | peak RSS MB |")
    print("|---|---:|---:|---:|")
    for enc in ENCODINGS:
        out = work / f"out-{enc}"
        wall, hwm = peak_rss(["convert", "gen1", "--to", enc, "--root", str(root), "--out",
                              str(out), "-q"])
        samples = read_manifest(out)["total_samples"]
        print(f"| `--to {enc}` | {samples} | {wall:.1f} | {hwm / 1024:.0f} |")
        subprocess.run(["rm", "-rf", str(out)], check=True)
    print("\n(each conversion in a fresh process, VmHWM; the recording is read once, in "
          "blocks, with a rolling 50 ms window)\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti")
    ap.add_argument("--scans", type=int, default=600)
    ap.add_argument("--events", type=int, default=200_000_000)
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        if not args.skip_throughput:
            bench_throughput(args.data, args.scans, Path(tmp))
        if not args.skip_rss:
            bench_rss(args.events, Path(tmp))


if __name__ == "__main__":
    main()
