"""Benchmark: evpipe spike encoders against their references, same process, same inputs.

1. `poisson` vs `torch.bernoulli` (snnTorch `spikegen.rate` is `torch.bernoulli` on the
   input repeated T times) and `torch.rand(...) < p` (SpikingJelly `PoissonEncoder`), for
   x float32 [64, 2, 128, 128] and T = 16 (output [16, 64, 2, 128, 128]); with the
   default thread count and with one thread for everyone.
2. `event_cloud` on one 0.5 s window of ~100k events (DVS128 Gesture recipe: 1024 points,
   512 FPS groups of 24 neighbours) vs EventMamba's own steps (dataprocess/uti.py
   shuffle_downsample + normaliztion, models/modules.py furthest_point_sample,
   square_distance, argsort kNN, "anchor" std) in CPU torch, one thread each: a uniform
   synthetic 128x128 window and the first 0.5 s of the real tonic_sample.aedat4 (320x240).

Usage: python tools/bench_spikes.py [--data ../shared/data] [--repeat 10]
Prints Markdown tables (median of `--repeat` interleaved runs after one warm-up call).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numba
import numpy as np
import torch

from evpipe.encoders.event_cloud import event_cloud
from evpipe.encoders.poisson import poisson
from evpipe.events import make_events
from evpipe.io import read_events

from benchlib import timed


def bench_poisson(repeat: int) -> None:
    x = np.random.default_rng(0).random((64, 2, 128, 128), dtype=np.float32)
    steps = 16
    xt = torch.from_numpy(x)
    p = xt.unsqueeze(0).repeat(steps, 1, 1, 1, 1)
    gen = torch.Generator().manual_seed(0)
    fns = {"evpipe poisson (uint8)": lambda: poisson(x, steps, seed=0),
           "torch.bernoulli (float32)": lambda: torch.bernoulli(p, generator=gen),
           "torch.rand < p (bool)": lambda: torch.rand(p.shape, generator=gen) < p}
    n_elem = steps * x.size
    print(f"| rate coding, output [{steps}, 64, 2, 128, 128] ({n_elem / 1e6:.1f}M) | threads "
          "| ms | Melem/s | vs torch.bernoulli |")
    print("|---|---:|---:|---:|---:|")
    default = (numba.get_num_threads(), torch.get_num_threads())
    for threads in sorted({max(default), 1}, reverse=True):
        numba.set_num_threads(min(threads, default[0]))
        torch.set_num_threads(threads)
        t = timed(fns, repeat)
        ref = t["torch.bernoulli (float32)"]
        for name, sec in t.items():
            print(f"| {name} | {threads} | {sec * 1e3:.1f} | {n_elem / sec / 1e6:.0f} "
                  f"| {ref / sec:.1f}x |")
    numba.set_num_threads(default[0])
    torch.set_num_threads(default[1])
    s = poisson(x, steps, seed=0)
    print(f"\nspike rate {s.mean():.5f} vs mean p {x.mean():.5f}\n")


def eventmamba_torch(t, x, y, width, height, n_points=1024, groups=512, k=24):
    """EventMamba's preprocessing + first LocalGrouper ("anchor", no affine) on CPU torch."""
    idx = np.arange(len(t))
    np.random.shuffle(idx)
    idx = np.sort(idx[:n_points])
    ev = np.stack([t[idx], x[idx], y[idx]], 1).astype(np.float32)
    ev[:, 0] = (ev[:, 0] - ev[:, 0].min()) / (ev[:, 0].max() - ev[:, 0].min() + 1e-6)
    ev[:, 1] /= width
    ev[:, 2] /= height
    xyz = torch.from_numpy(ev)[None]
    dist = torch.full((1, n_points), 1e10)
    far = torch.randint(0, n_points, (1,))
    cent = torch.zeros(1, groups, dtype=torch.long)
    for i in range(groups):
        cent[:, i] = far
        dist = torch.minimum(dist, ((xyz - xyz[:, far]) ** 2).sum(-1))
        far = dist.max(-1)[1]
    cent = cent.sort(dim=1)[0]
    new_xyz = xyz[0, cent[0]][None]
    d2 = (-2 * new_xyz @ xyz.transpose(1, 2) + (new_xyz ** 2).sum(-1)[..., None]
          + (xyz ** 2).sum(-1)[:, None])
    nb = d2.argsort()[:, :, :k].sort(dim=-1)[0]
    off = xyz[0, nb[0]][None] - new_xyz[:, :, None]
    g = off / (off.reshape(1, -1).std(dim=-1) + 1e-5)
    return torch.cat([g.abs(), new_xyz[:, :, None].expand(-1, -1, k, -1)], -1)


def bench_event_cloud(data: Path, repeat: int) -> None:
    rng = np.random.default_rng(0)
    n = 100_000
    t = np.sort(rng.integers(0, 500_000, n))
    t[0], t[-1] = 0, 500_001  # one window [0, 0.5 s) and a last event that closes it
    synth = make_events(t, rng.integers(0, 128, n), rng.integers(0, 128, n),
                        rng.integers(0, 2, n))
    real = read_events(data / "aedat4" / "tonic_sample.aedat4")
    cases = [("synthetic uniform", synth, (128, 128)), ("tonic_sample.aedat4", real, (320, 240))]
    print("| window | events in window | evpipe sampling + normalisation (ms) "
          "| evpipe + FPS/kNN grouping (ms) | EventMamba steps, CPU torch (ms) | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for name, ev, size in cases:
        r = event_cloud(ev, size, seed=0)
        assert len(r.windows) == 1
        lo, hi = np.searchsorted(ev["t"], r.windows[0])
        w = ev[lo:hi]
        wt, wx, wy = w["t"], w["x"], w["y"]
        tm = timed({"points": lambda: event_cloud(ev, size, n_groups=None, seed=0),
                    "groups": lambda: event_cloud(ev, size, seed=0),
                    "ref": lambda: eventmamba_torch(wt, wx, wy, *size)}, repeat)
        print(f"| {name} {size[0]}x{size[1]} | {hi - lo} | {tm['points'] * 1e3:.2f} "
              f"| {tm['groups'] * 1e3:.2f} | {tm['ref'] * 1e3:.1f} "
              f"| {tm['ref'] / tm['groups']:.0f}x |")
    torch.set_num_threads(threads)
    print("\n(one thread each; evpipe times the whole call, validation of all events "
          "included; the reference starts from the window's events)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    bench_poisson(args.repeat)
    bench_event_cloud(args.data, args.repeat)


if __name__ == "__main__":
    main()
