"""Benchmark: shard codecs on SVC records of the real KITTI scans (size, write time,
random-read time per sample), the shard format's choice against fixed alternatives.

Usage: python tools/bench_shards.py [--data ../shared/data/kitti] [--records 60]
Prints a Markdown table (the README carries it).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import hdf5plugin
import numpy as np

from evpipe.encoders import SVCParams
from evpipe.io.kitti import read_velodyne
from evpipe.shards import ShardFile
from evpipe.shards import format as shard_format

CODECS = {
    "evpipe (Blosc LZ4 + shuffle where it halves a trial, else raw)": None,
    "Blosc LZ4 + shuffle everywhere": dict(hdf5plugin.Blosc(cname="lz4", clevel=5,
                                                             shuffle=hdf5plugin.Blosc.SHUFFLE)),
    "none": {},
    "lzf": dict(compression="lzf"),
    "gzip 1": dict(compression="gzip", compression_opts=1),
    "zstd 1": dict(hdf5plugin.Zstd(clevel=1)),
}


@contextlib.contextmanager
def codec(kw):
    """Make every array dataset use `kw` (None: the format's own choice)."""
    old = shard_format.compression, shard_format._choose_codec
    if kw is not None:
        shard_format.compression = lambda: kw
        shard_format._choose_codec = lambda data, per_record=False: "blosc"
    try:
        yield
    finally:
        shard_format.compression, shard_format._choose_codec = old


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti")
    ap.add_argument("--records", type=int, default=60)
    args = ap.parse_args()
    params = SVCParams()
    base = []
    for i in range(3):
        rec = params.encode(read_velodyne(args.data / "training" / "velodyne" / f"{i:06d}.bin"))
        base.append(rec)
    records = [dict(base[k % 3], id=str(k)) for k in range(args.records)]
    raw = sum(v.nbytes for r in records for v in r.values() if isinstance(v, np.ndarray))
    order = np.random.default_rng(0).permutation(args.records)
    print(f"{args.records} SVC records of the 3 real KITTI scans (full scans, ~40k voxels), "
          f"{raw / 2**20:.1f} MiB raw; random order, best of 3\n")
    print("| codec | size MiB | write s | random read ms/sample |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in CODECS.items():
            path = str(Path(tmp) / "s.h5")
            with codec(kw):
                t = time.perf_counter()
                shard_format.write_shard_file(path, records, {})
                write = time.perf_counter() - t
            best = float("inf")
            with ShardFile(path) as f:
                for _ in range(3):
                    t = time.perf_counter()
                    for i in order:
                        f.read(int(i))
                    best = min(best, (time.perf_counter() - t) / len(order))
            size = Path(path).stat().st_size / 2**20
            print(f"| {name} | {size:.1f} | {write:.2f} | {best * 1e3:.2f} |")


if __name__ == "__main__":
    main()
