"""Benchmark: random-order loading of raw-event samples for training, evpipe shards vs
tonic's DiskCachedDataset vs one plain HDF5 file with offsets, plus bytes on disk.

Samples: `--samples` (2,000) recordings of ~`--events` (18k..22k) events on a 304x240
sensor, generated from (seed, index): t in us with 0..10 us steps, uniform x, y, p;
label = index % 10. Every store holds the same samples; every read returns the sample's
events (EVENT_DTYPE [N]) and label, and is checked against the generator first.

Stores:
- evpipe: `ShardWriter` (encoding `events`, 256 samples per shard) read through
  `ShardDataset[i]`, with the shard format as it is (columns per event field, Blosc
  only where it halves a column, 64 KiB chunks).
- tonic 1.7 `DiskCachedDataset` (one HDF5 file per sample, num_copies=1), `compress=True`
  (lzf, the default) and `compress=False`; read from the cache alone (`dataset=None`).
- one HDF5 file: all events in one contiguous uncompressed dataset + int64 offsets,
  sliced with plain h5py (`d[lo:hi]`), for reference.

Reads: one pass over a random permutation of all samples per store, single process, warm
page cache (files were just written); `--repeat` interleaved rounds, best rate reported.
Usage: python tools/bench_loading.py [--samples 2000] [--events 20000] [--repeat 3]
       [--workdir DIR]   (prints a Markdown table; without --workdir files are deleted)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import tonic

from evpipe.events import EVENT_DTYPE, SensorSize
from evpipe.shards import ShardDataset, ShardWriter

SENSOR = SensorSize(304, 240)


class Synthetic:
    """tonic-style dataset: item i -> (events EVENT_DTYPE [~n], label), from (seed, i)."""

    def __init__(self, n_samples: int, n_events: int, seed: int = 0):
        self.n_samples, self.n_events, self.seed = n_samples, n_events, seed

    def __len__(self) -> int:
        return self.n_samples

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, i])
        n = int(rng.integers(self.n_events * 9 // 10, self.n_events * 11 // 10 + 1))
        ev = np.empty(n, EVENT_DTYPE)
        ev["t"] = np.cumsum(rng.integers(0, 11, n))
        ev["x"] = rng.integers(0, SENSOR.width, n)
        ev["y"] = rng.integers(0, SENSOR.height, n)
        ev["p"] = rng.integers(0, 2, n)
        return ev, i % 10


def disk_bytes(path: Path) -> int:
    """Size of a file, or of all files under a directory."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_evpipe(path: Path, data: Synthetic) -> None:
    with ShardWriter(path, dataset="synthetic", split="train",
                     encoding={"name": "events", "params": {}}, key="bench") as w:
        for i in range(len(data)):
            ev, label = data[i]
            w.add({"id": str(i), "events": ev, "label": label})


def write_tonic(path: Path, data: Synthetic, compress: bool) -> None:
    cache = tonic.DiskCachedDataset(data, cache_path=str(path), compress=compress)
    for i in range(len(data)):
        cache[i]


def write_offsets(path: Path, data: Synthetic, layout: dict) -> None:
    """One file: every sample's events in the datasets of `layout` (name -> (dtype,
    chunk bytes or None for contiguous, h5py filter keywords)), the event fields named as
    the dtype's fields, or by the dataset's name for a plain dtype; `/offsets` int64
    [n+1] and `/labels`."""
    samples = [data[i] for i in range(len(data))]
    offsets = np.zeros(len(samples) + 1, np.int64)
    np.cumsum([len(ev) for ev, _ in samples], out=offsets[1:])
    with h5py.File(path, "w", libver="v110") as f:
        for name, (dtype, chunk, comp) in layout.items():
            column = np.empty(offsets[-1], dtype)
            for (ev, _), lo in zip(samples, offsets):
                for field in dtype.names or (name,):
                    (column[field] if dtype.names else column)[lo:lo + len(ev)] = ev[field]
            chunks = (chunk // dtype.itemsize,) if chunk else None
            f.create_dataset(name, data=column, chunks=chunks, **comp)
        f.create_dataset("offsets", data=offsets)
        f.create_dataset("labels", data=np.array([lab for _, lab in samples], np.int64))


def open_h5_offsets(path: Path):
    f = h5py.File(path, "r")
    d, offsets, labels = f["events"], f["offsets"][:], f["labels"][:]

    def read(i):
        return d[offsets[i]:offsets[i + 1]], int(labels[i])
    return read


def evpipe_reader(path: Path):
    ds = ShardDataset(path)

    def read(i):
        r = ds[i]
        return r["events"], r["label"]
    return read


def build(work: Path, data: Synthetic) -> dict:
    """Write every store; name -> (reader i -> (events, label), bytes on disk)."""
    write_evpipe(work / "evpipe", data)
    write_tonic(work / "tonic-lzf", data, compress=True)
    write_tonic(work / "tonic-raw", data, compress=False)
    write_offsets(work / "offsets.h5", data, {"events": (EVENT_DTYPE, None, {})})
    lzf = tonic.DiskCachedDataset(None, cache_path=str(work / "tonic-lzf"))
    raw = tonic.DiskCachedDataset(None, cache_path=str(work / "tonic-raw"))
    return {
        "evpipe ShardDataset": (evpipe_reader(work / "evpipe"), disk_bytes(work / "evpipe")),
        "tonic DiskCachedDataset, lzf (default)":
            (lzf.__getitem__, disk_bytes(work / "tonic-lzf")),
        "tonic DiskCachedDataset, uncompressed":
            (raw.__getitem__, disk_bytes(work / "tonic-raw")),
        "one HDF5 + offsets, uncompressed, h5py d[lo:hi] (reference)":
            (open_h5_offsets(work / "offsets.h5"), disk_bytes(work / "offsets.h5")),
    }


def check(stores: dict, data: Synthetic) -> None:
    for i in (0, 1, len(data) // 2, len(data) - 1):
        ev, label = data[i]
        for name, (read, _) in stores.items():
            got, got_label = read(i)
            if got.dtype != EVENT_DTYPE or not np.array_equal(got, ev) or got_label != label:
                raise AssertionError(f"{name}: sample {i} differs from the generator")


def rates(stores: dict, order: np.ndarray, repeat: int) -> dict:
    """Best samples/s per store over `repeat` rounds of reading every sample in `order`;
    stores are interleaved within each round."""
    best = dict.fromkeys(stores, 0.0)
    for _ in range(repeat):
        for name, (read, _) in stores.items():
            t = time.perf_counter()
            for i in order:
                read(int(i))
            best[name] = max(best[name], len(order) / (time.perf_counter() - t))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    data = Synthetic(args.samples, args.events, args.seed)
    with contextlib.ExitStack() as stack:
        work = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        stores = build(work, data)
        check(stores, data)
        order = np.random.default_rng([args.seed, 1]).permutation(len(data))
        best = rates(stores, order, args.repeat)
    raw_bytes = sum(len(data[i][0]) for i in range(len(data))) * EVENT_DTYPE.itemsize
    tonic_rate = max(best["tonic DiskCachedDataset, lzf (default)"],
                     best["tonic DiskCachedDataset, uncompressed"])
    tonic_bytes = stores["tonic DiskCachedDataset, lzf (default)"][1]
    print(f"{len(data)} samples, {raw_bytes / len(data) / 1e3:.0f} kB of events each "
          f"({raw_bytes / 1e6:.0f} MB), random order, 1 process, warm page cache, best of "
          f"{args.repeat}; tonic {tonic.__version__}, h5py {h5py.__version__}, "
          f"{os.cpu_count()} CPUs\n")
    print("| store | samples/s | vs tonic's faster | MB on disk | bytes vs tonic lzf |")
    print("|---|---:|---:|---:|---:|")
    for name, (_, size) in stores.items():
        print(f"| {name} | {best[name]:,.0f} "
              f"| {best[name] / tonic_rate:.1f}x | {size / 1e6:.0f} | {size / tonic_bytes:.2f} |")
    name = next(iter(stores))
    speed, size = best[name] / tonic_rate, stores[name][1] / tonic_bytes
    verdict = "met" if speed >= 5 and size <= 1 else "NOT met"
    print(f"\nrequirement, evpipe >= 5x tonic's faster setting with no more bytes than tonic "
          f"lzf: {speed:.1f}x, {size:.2f} of the bytes: {verdict}")


if __name__ == "__main__":
    main()
