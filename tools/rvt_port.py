"""A straight NumPy port of RVT's Gen1 preprocessing, the peer of tools/bench_gen1.py.

Follows uzh-rpg/RVT (scripts/genx/preprocess_dataset.py + data/utils/representations.py
StackedHistogram.construct): the whole recording in RAM, decoded with NumPy as the
Prophesee toolbox does (src/io/dat_events_tools.py), a running max to repair
non-monotonic time, searchsorted per label timestamp, int64 copies of the window's fields,
then the histogram clipped to the cutoff, with np.bincount (the faster port) or np.add.at
on uint8 (the literal analogue of torch's put_(accumulate=True)). Each histogram is
dropped, or (`write`) appended to HDF5 as RVT's H5Writer does: one chunk per histogram,
Blosc zstd level 1 with byte shuffle, the dataset resized per histogram. NumPy and h5py
only, so its process pays no evpipe or Numba start-up.

Usage: python tools/rvt_port.py TD_DAT BBOX_NPY {bincount,add_at,write} OUT_H5
Prints: windows, seconds since the interpreter started running this file, peak RSS kB.
"""

import time

T0 = time.perf_counter()

import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import numpy as np  # noqa: E402

WIDTH, HEIGHT = 304, 240
WINDOW_US = 50_000
BINS, CUTOFF = 10, 10


def rvt_histogram(x, y, p, t, add_at: bool) -> np.ndarray:
    """RVT StackedHistogram.construct in NumPy on one window's int64 x, y, p and sorted t:
    uint8 [2*BINS, H, W]. Counts with np.bincount, or with `add_at` the literal form:
    uint8 zeros + np.add.at (torch put_(accumulate=True)), then the clip."""
    cells = 2 * BINS * HEIGHT * WIDTH
    if not len(t):
        return np.zeros((2 * BINS, HEIGHT, WIDTH), np.uint8)
    tn = (t - t[0]) / max(int(t[-1] - t[0]), 1) * BINS
    ti = np.minimum(np.floor(tn).astype(np.int64), BINS - 1)
    idx = x + WIDTH * y + WIDTH * HEIGHT * ti + WIDTH * HEIGHT * BINS * p
    if add_at:
        rep = np.zeros(cells, np.uint8)
        np.add.at(rep, idx, 1)
    else:
        rep = np.bincount(idx, minlength=cells)
    return np.minimum(rep, CUTOFF).astype(np.uint8, copy=False).reshape(2 * BINS, HEIGHT, WIDTH)


def window_fields(ev, lo: int, hi: int, t: np.ndarray):
    """int64 x, y, p of events [lo, hi) (`ev` indexed by field name) and their (corrected)
    times t[lo:hi], as RVT's H5Reader.get_event_slice."""
    return (*(ev[k][lo:hi].astype(np.int64) for k in "xyp"), t[lo:hi])


def label_bounds(t: np.ndarray, bbox) -> Iterator[tuple[int, int]]:
    """[lo, hi) of the events with t_label - WINDOW_US <= t <= t_label in the sorted `t`,
    for each distinct label timestamp of the `bbox` .npy file, as RVT's searchsorted."""
    for t_end in np.unique(np.load(bbox)["t"]):
        yield (np.searchsorted(t, t_end - WINDOW_US, side="left"),
               np.searchsorted(t, t_end, side="right"))


def read_dat_numpy(path) -> dict[str, np.ndarray]:
    """t (int64 us), x, y, p (int16) of a DAT file as the Prophesee toolbox decodes it:
    skip the '%' header lines and the event type/size bytes, np.fromfile the 8-byte
    records, mask the fields out of the second word."""
    with open(path, "rb") as f:
        while f.peek(1)[:1] == b"%":
            f.readline()
        f.read(2)
        raw = np.fromfile(f, dtype=[("t", "<u4"), ("w", "<i4")])
    w = raw["w"]
    return {"t": raw["t"].astype(np.int64), "x": (w & 0x3FFF).astype(np.int16),
            "y": ((w >> 14) & 0x3FFF).astype(np.int16), "p": ((w >> 28) & 1).astype(np.int16)}


def main(td: str, bbox: str, kind: str, out: str) -> None:
    ev = read_dat_numpy(td)
    t = np.maximum.accumulate(ev["t"])  # RVT _correct_time
    writer = None
    if kind == "write":
        import h5py
        import hdf5plugin
        f = h5py.File(out, "w")
        shape = (2 * BINS, HEIGHT, WIDTH)
        writer = f.create_dataset("data", shape=(1, *shape), chunks=(1, *shape),
                                  maxshape=(None, *shape), dtype="uint8",
                                  **hdf5plugin.Blosc(cname="zstd", clevel=1,
                                                     shuffle=hdf5plugin.Blosc.SHUFFLE))
    n = 0
    for lo, hi in label_bounds(t, bbox):
        rep = rvt_histogram(*window_fields(ev, lo, hi, t), kind == "add_at")
        if writer is not None:
            writer.resize(n + 1, axis=0)
            writer[n:n + 1] = rep
        n += 1
    if writer is not None:
        f.close()
    hwm = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
    print(n, time.perf_counter() - T0, hwm)


if __name__ == "__main__":
    main(*sys.argv[1:5])
