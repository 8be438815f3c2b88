"""Benchmark: evpipe's spiking models on CPU, fed with encodings of the real sample files.

- E3DSNN-T on KITTI-size SVC input: the scans under ../shared/data/kitti through
  `KittiLoader` (camera field of view, as `evpipe convert kitti` does), `SVCParams` (KITTI
  grid (40, 1600, 1408), 4 mean features x, y, z, intensity), `SparseVoxelCollate` and
  `to_sparse_tensor`.
- SpikePoint at its default T = 16 on event-cloud groups [B, M, K, 6] with the
  `EventCloudParams` defaults (M = 512 groups of K = 24) of the aedat4 sample's windows.
- GACResNet at its default T = 4 on N-MNIST frames [B, 4, 2, 34, 34] (`to_frames`).
Batches cycle over the available samples. Times are medians over --repeat runs of one
batch: a training-mode forward, forward + backward (cross-entropy, no optimiser step), and
inference (eval mode, no autograd). Then the activity / energy table of E3DSNN-T on one
KITTI scan (`activity_report`): untrained weights with BN statistics taken from that scan,
so the firing rates show the cost structure, not a trained model's activity.

Usage: python tools/bench_models.py [--repeat 5] [--batch 4] [--threads 1]
Prints Markdown (the README carries the tables).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from evpipe.encoders import EventCloudParams, SVCParams, to_frames
from evpipe.encoders.svc import grid_shape
from evpipe.io import open_events
from evpipe.loaders.kitti import KittiLoader
from evpipe.models import E3DSNN, GACResNet, SpikePoint, activity_report, format_report
from evpipe.shards.collate import SparseVoxelCollate, to_sparse_tensor

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def median_s(fn, repeat: int) -> float:
    """Median wall seconds of `fn()` over `repeat` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cycle(items: list, n: int) -> list:
    return [items[i % len(items)] for i in range(n)]


def kitti_batches(data: Path, batch: int):
    """(batch SparseConvTensor, one-scan SparseConvTensor, mean voxels per scan)."""
    loader = KittiLoader(data / "kitti", "train")
    params = SVCParams(store="feats")
    records = [params.encode(loader.load(fid)["points"]) for fid in loader.items()]
    collate = SparseVoxelCollate(grid_shape(params.voxel_size, params.point_range))
    voxels = float(np.mean([len(r["coords"]) for r in records]))
    return (to_sparse_tensor(collate(cycle(records, batch))),
            to_sparse_tensor(collate(records[:1])), voxels)


def event_cloud_groups(data: Path, batch: int) -> torch.Tensor:
    """float32 [batch, M, K, 6] groups of the aedat4 sample's windows."""
    with open_events(data / "aedat4" / "tonic_sample.aedat4") as reader:
        events, size = reader.read(), reader.sensor_size
    groups = EventCloudParams().encode(events, size, sample_id="bench")["groups"]
    return torch.from_numpy(np.stack(cycle(list(groups), batch)))


def nmnist_frames(data: Path, batch: int, n_bins: int) -> torch.Tensor:
    """float32 [batch, n_bins, 2, 34, 34] event counts of the N-MNIST sample."""
    with open_events(data / "nmnist_bin" / "tonic_sample_nmnist.bin") as reader:
        frames = to_frames(reader.read(), reader.sensor_size, n_bins)
    return torch.from_numpy(frames.astype(np.float32)).unsqueeze(0).expand(batch, -1, -1, -1,
                                                                            -1).contiguous()


def time_model(model: nn.Module, inputs: tuple, batch: int, repeat: int, **kw) -> dict:
    """ms per batch for a training forward, forward + backward and inference."""
    target = torch.zeros(batch, dtype=torch.long)

    def forward():
        return model(*inputs, **kw)

    def train_step():
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(forward(), target).backward()

    def infer():
        with torch.no_grad():
            forward()

    model.train()
    fwd, step = median_s(forward, repeat), median_s(train_step, repeat)
    model.eval()
    inf = median_s(infer, repeat)
    model.train()
    return {"fwd": fwd * 1e3, "step": step * 1e3, "infer": inf * 1e3,
            "samples_s": batch / inf}


def calibrate_bn(model: nn.Module, inputs: tuple) -> None:
    """BN running statistics := those of `inputs` (one training-mode pass, momentum 1)."""
    saved = {m: m.momentum for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    for m in saved:
        m.momentum = 1.0
    with torch.no_grad():
        model(*inputs)
    for m, momentum in saved.items():
        m.momentum = momentum


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA, help="the shared sample files")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per measurement")
    ap.add_argument("--batch", type=int, default=4, help="samples per batch")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    kitti, one_scan, voxels = kitti_batches(args.data, args.batch)
    groups = event_cloud_groups(args.data, args.batch)
    gac_model = GACResNet(2, 10)
    frames = nmnist_frames(args.data, args.batch, gac_model.T)
    e3d = E3DSNN(kitti.features.shape[1], len(KittiLoader.classes), variant="T")
    spikepoint = SpikePoint(in_channels=groups.shape[-1], num_classes=10)
    runs = [
        ("E3DSNN-T", f"KITTI SVC, {voxels:,.0f} voxels x 4 per scan", e3d, (kitti,), {}),
        ("SpikePoint (T = 16)", "groups [B, {}, {}, {}]".format(*groups.shape[1:]),
         spikepoint, (groups,), {"generator": torch.Generator().manual_seed(0)}),
        (f"GACResNet (T = {gac_model.T})", "N-MNIST frames [B, {}, {}, {}, {}]".format(
            *frames.shape[1:]), gac_model, (frames,), {}),
    ]
    print(f"CPU, torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, "
          f"median of {args.repeat} runs\n")
    print("| model | input | params | train forward ms/batch | forward + backward ms/batch "
          "| inference ms/batch | inference samples/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, what, model, inputs, kw in runs:
        r = time_model(model, inputs, args.batch, args.repeat, **kw)
        params = sum(p.numel() for p in model.parameters())
        print(f"| {name} | {what} | {params:,} | {r['fwd']:.1f} | {r['step']:.1f} "
              f"| {r['infer']:.1f} | {r['samples_s']:.2f} |")

    calibrate_bn(e3d, (one_scan,))
    print(f"\nE3DSNN-T activity and energy, one KITTI scan ({one_scan.features.shape[0]:,} "
          "voxels; untrained weights, BN statistics from this scan):\n")
    print("```")
    print(format_report(activity_report(e3d, one_scan)))
    print("```")


if __name__ == "__main__":
    main()
