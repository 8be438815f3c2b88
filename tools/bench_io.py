"""Benchmark: full decode of generated 20M-event files into an Events array, evpipe vs the
native decoders measured in the same process, plus peak RSS of chunked reading of a
200M-event DAT file.

Usage: python tools/bench_io.py [--events 20000000] [--repeat 3] [--rss-events 200000000]
       [--only dat,evt2,...] [--workdir DIR]
Prints Markdown tables (the README carries them).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

from evpipe.events import EVENT_DTYPE, SensorSize
from evpipe.io import read_events, write_events

from benchlib import timed

REPO = Path(__file__).resolve().parents[1]


def synthetic_events(n: int, size: SensorSize, seed: int = 0) -> np.ndarray:
    """n events at ~20 Mev/s (steps of 0..99 ns rounded to us), uniform x/y/p."""
    rng = np.random.default_rng(seed)
    ev = np.empty(n, EVENT_DTYPE)
    ev["t"] = 1_000_000 + np.cumsum(rng.random(n) < 0.05)
    ev["x"] = rng.integers(0, size.width, n)
    ev["y"] = rng.integers(0, size.height, n)
    ev["p"] = rng.integers(0, 2, n)
    return ev


def single_thread(fn):
    """`fn` run with one Numba thread (evpipe's whole-file reads use all by default)."""
    def run():
        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            return fn()
        finally:
            numba.set_num_threads(threads)
    return run


def _expelliarmus(encoding):
    from expelliarmus import Wizard
    w = Wizard(encoding=encoding)
    return lambda path: w.read(path)


def _faery(path):
    import faery
    return np.concatenate([p for track, p in faery.aedat.Decoder(str(path))
                           if track.data_type == "events"])


def _aedat(path):
    import aedat
    parts = [p["events"] for p in aedat.Decoder(str(path)) if "events" in p]
    return np.concatenate(parts)


def _dv(path):
    import dv_processing as dv
    rec = dv.io.MonoCameraRecording(str(path))
    parts = []
    while True:
        batch = rec.getNextEventBatch()
        if batch is None:
            break
        parts.append(batch.numpy())
    return np.concatenate(parts)


def make_file(fmt: str, path: Path, ev: np.ndarray, size: SensorSize) -> None:
    if fmt in ("dat", "evt2", "h5"):
        write_events(path, ev, fmt, size)
    elif fmt == "evt3":
        from evpipe.io.evt import write_evt3
        write_evt3(path, ev, size)
    elif fmt == "aedat4":
        import faery  # faery's encoder: LZ4 packets of 4096 events, as DV writes them
        arr = np.empty(len(ev), dtype=faery.EVENTS_DTYPE)
        arr["t"], arr["x"], arr["y"], arr["on"] = ev["t"], ev["x"], ev["y"], ev["p"] == 1
        faery.events_stream_from_array(arr, dimensions=size).to_file(str(path))
    else:
        raise ValueError(fmt)


PEERS = {
    "dat": {"expelliarmus": _expelliarmus("dat")},
    "evt2": {"expelliarmus": _expelliarmus("evt2")},
    "evt3": {"expelliarmus": _expelliarmus("evt3")},
    "aedat4": {"faery": _faery, "aedat": _aedat, "dv-processing": _dv},
    "h5": {},
}
SUFFIX = {"dat": ".dat", "evt2": ".raw", "evt3": ".raw", "aedat4": ".aedat4", "h5": ".h5"}


def bench_decode(formats, n: int, repeat: int, workdir: Path) -> None:
    size = SensorSize(1280, 720)
    ev = synthetic_events(n, size)
    print(f"| format ({n / 1e6:.0f}M events) | file MB | evpipe Mev/s | evpipe 1 thread "
          "| peer | peer Mev/s | evpipe / peer |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for fmt in formats:
        path = workdir / f"bench{SUFFIX[fmt]}"
        make_file(fmt, path, ev, size)
        mb = path.stat().st_size / 1e6
        assert len(read_events(path, fmt)) == n, fmt
        fns = {"evpipe": lambda: read_events(path, fmt),
               "evpipe-1": single_thread(lambda: read_events(path, fmt))}
        for name, fn in PEERS[fmt].items():
            assert len(fn(path)) == n, (fmt, name)
            fns[name] = lambda fn=fn: fn(path)
        best = timed(fns, repeat, stat=min, warm_up=False)
        rate = {k: n / v / 1e6 for k, v in best.items()}
        head = f"| {fmt} | {mb:.0f} | {rate['evpipe']:.0f} | {rate['evpipe-1']:.0f}"
        if not PEERS[fmt]:
            print(f"{head} | - | - | - |")
        for name in PEERS[fmt]:
            print(f"{head} | {name} | {rate[name]:.0f} | {best[name] / best['evpipe']:.2f}x |")
        path.unlink()
    print(f"\n(best of {repeat} interleaved rounds, file in the page cache, one process; "
          f"{numba.get_num_threads()} Numba threads unless noted)\n")


def write_big_dat(path: Path, n: int, size: SensorSize, block: int = 10_000_000) -> None:
    """A DAT file of n events written block by block (bounded memory)."""
    from evpipe.io.dat import dat_header, dat_records
    with open(path, "wb") as out:
        out.write(dat_header(size))
        for start in range(0, n, block):
            ev = synthetic_events(min(block, n - start), size, seed=start)
            ev["t"] += start // 20
            out.write(dat_records(ev))


def bench_rss(n: int, workdir: Path) -> None:
    size = SensorSize(304, 240)
    path = workdir / "big.dat"
    write_big_dat(path, n, size)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec from the parent.
    code = ("import sys; from evpipe.io import open_events\n"
            "r = open_events(sys.argv[1]); n = 0\n"
            "for c in r.iter_chunks(n_events=1_000_000): n += len(c)\n"
            "hwm = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
            "print(n, hwm)")
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, str(path)], check=True, text=True,
                         capture_output=True).stdout.split()
    wall = time.perf_counter() - t
    count, rss_kb = int(out[0]), int(out[1])
    assert count == n
    print(f"| chunked read (1M-event chunks) of a {n / 1e6:.0f}M-event DAT file "
          f"({path.stat().st_size / 1e9:.1f} GB) | peak RSS {rss_kb / 1024:.0f} MB "
          f"| {wall:.1f} s |")
    path.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=20_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rss-events", type=int, default=200_000_000)
    ap.add_argument("--only", default="dat,evt2,evt3,aedat4,h5")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        bench_decode(args.only.split(","), args.events, args.repeat, Path(tmp))
        if args.rss_events:
            bench_rss(args.rss_events, Path(tmp))


if __name__ == "__main__":
    main()
