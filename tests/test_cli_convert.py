"""`evpipe convert kitti --to svc` and `evpipe info`, end to end through the CLI."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from evpipe.encoders import spike_counts, svc
from evpipe.io import kitti
from evpipe.shards import ShardDataset, read_manifest, sha256_file
from tests.helpers import copy_kitti, run_cli


def shard_hashes(path):
    return [s["sha256"] for s in read_manifest(path)["shards"]]


def test_embedded_sample_end_to_end(tmp_path):
    out = tmp_path / "o"
    proc = run_cli("convert", "kitti", "--to", "svc", "--out", out, check=True)
    assert "SYNTHETIC" in proc.stderr
    assert "samples      6 (6 converted now)" in proc.stdout
    for key in ("mean voxels", "bytes", "seconds", "samples/s"):
        assert key in proc.stdout
    m = read_manifest(out)
    assert m["complete"] and m["total_samples"] == 6 and m["dataset"] == "kitti"
    assert m["encoding"]["params"]["spatial_shape"] == [40, 1600, 1408]
    assert m["loader"] == {"fov": True}
    ds = ShardDataset(out)
    root = kitti_sample_root()
    for rec in ds:
        labels = kitti.read_labels(root / "training" / "label_2" / f"{rec['id']}.txt")
        assert len(rec["boxes"]) == (~labels.dontcare).sum() > 0
        assert rec["n_dontcare"] == 1
        assert rec["spikes"].max() <= 4 and rec["coords"].shape[0] == rec["feats"].shape[0]
    info = run_cli("info", out, check=True).stdout
    assert "encoding     svc" in info and "coords      int32 [" in info and "samples      6" in info
    # The second run finds the set complete.
    again = run_cli("convert", "kitti", "--to", "svc", "--out", out, check=True)
    assert "already complete" in again.stderr
    test = run_cli("convert", "kitti", "--to", "svc", "--split", "test", "--out", tmp_path / "t",
                   check=True)
    assert "samples      2" in test.stdout
    assert "boxes" not in ShardDataset(tmp_path / "t")[0]


def kitti_sample_root():
    from evpipe.loaders.kitti_sample import sample_root
    return sample_root()


def test_real_kitti_records_match_library_calls(kitti_dir, tmp_path):
    root = copy_kitti(kitti_dir, tmp_path / "kitti")
    out = tmp_path / "o"
    proc = run_cli("convert", "kitti", "--to", "svc", "--root", root, "--out", out, "--no-fov",
                   "--samples-per-shard", "2", check=True)
    assert "no ImageSets/train.txt" in proc.stderr
    ds = ShardDataset(out)
    assert [r["id"] for r in ds] == ["000000", "000001", "000002"]
    for rec in ds:
        pts = kitti.read_velodyne(root / "training" / "velodyne" / f"{rec['id']}.bin")
        ref = svc(pts)
        np.testing.assert_array_equal(rec["coords"], ref.coords)
        np.testing.assert_array_equal(rec["feats"], ref.feats)
        np.testing.assert_array_equal(rec["spikes"], spike_counts(ref.feats))
        np.testing.assert_array_equal(rec["n_points"], ref.n_points)
        calib = kitti.read_calib(root / "training" / "calib" / f"{rec['id']}.txt")
        lab = kitti.read_labels(root / "training" / "label_2" / f"{rec['id']}.txt", calib)
        np.testing.assert_array_equal(rec["boxes"], lab.boxes_lidar[~lab.dontcare])
    assert ds[1]["box_cls"].tolist() == [2, 0, 5]  # Truck, Car, Cyclist
    assert ds[1]["n_dontcare"] == 4
    # FOV crop on (default): fewer voxels, the voxelised points are the FOV ones.
    fov = tmp_path / "fov"
    run_cli("convert", "kitti", "--to", "svc", "--root", root, "--out", fov, "--workers", "2",
            "--voxel-size", "0.1", "0.1", "0.2", "--store", "feats", check=True)
    rec = ShardDataset(fov)[0]
    assert "spikes" not in rec
    pts = kitti.read_velodyne(root / "training" / "velodyne" / "000000.bin")
    calib = kitti.read_calib(root / "training" / "calib" / "000000.txt")
    sel = pts[kitti.fov_mask(pts, calib, (1224, 370))]
    ref = svc(sel, (0.1, 0.1, 0.2))
    np.testing.assert_array_equal(rec["feats"], ref.feats)
    assert read_manifest(fov)["encoding"]["params"]["spatial_shape"] == [20, 800, 704]


def test_workers_give_identical_shards(kitti_dir, tmp_path):
    root = copy_kitti(kitti_dir, tmp_path / "kitti")
    for w in (1, 2):
        run_cli("convert", "kitti", "--to", "svc", "--root", root, "--out", tmp_path / f"w{w}",
                "--workers", w, "--samples-per-shard", "2", "-q", check=True)
    assert shard_hashes(tmp_path / "w1") == shard_hashes(tmp_path / "w2")


def many_frames(kitti_dir, root, n):
    """A KITTI tree of n frames linked to the three real ones."""
    for sub, ext in (("velodyne", "bin"), ("label_2", "txt"), ("calib", "txt"), ("image_2", "png")):
        (root / "training" / sub).mkdir(parents=True)
        for i in range(n):
            os.symlink(kitti_dir / "training" / sub / f"{i % 3:06d}.{ext}",
                       root / "training" / sub / f"{i:06d}.{ext}")
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "train.txt").write_text("".join(f"{i:06d}\n" for i in range(n)))
    return root


def test_killed_conversion_resumes_to_the_same_set(kitti_dir, tmp_path):
    root = many_frames(kitti_dir, tmp_path / "kitti", 36)
    args = ["convert", "kitti", "--to", "svc", "--root", str(root), "--no-fov",
            "--samples-per-shard", "3", "-q"]
    run_cli(*args, "--out", tmp_path / "full", check=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "evpipe.cli", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            shards = len(json.loads((out / "manifest.json").read_text())["shards"])
        except (FileNotFoundError, json.JSONDecodeError):
            shards = 0
        if shards >= 2:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    m = read_manifest(out)
    assert not m["complete"] and 2 <= len(m["shards"]) < 12
    with pytest.raises(Exception, match="incomplete"):
        ShardDataset(out)
    resumed = run_cli(*args, "--out", out, check=True)
    assert "shards kept from an earlier run" in resumed.stdout
    assert shard_hashes(out) == shard_hashes(tmp_path / "full")
    assert read_manifest(out)["total_samples"] == 36
    assert not list(out.glob("*.tmp"))
    for s in read_manifest(out)["shards"]:
        assert sha256_file(out / s["file"]) == s["sha256"]


def break_file(root, kind):
    t = root / "training"
    if kind == "truncated":
        p = t / "velodyne" / "000001.bin"
        p.write_bytes(p.read_bytes()[:-5])
        return p, "multiple of 16"
    if kind == "label":
        p = t / "label_2" / "000001.txt"
        p.write_text(p.read_text() + "Car 0.0 0 1.0 1 2 3\n")
        return p, "line 8: expected 15 fields"
    p = t / "calib" / "000001.txt"
    p.unlink()
    return p, "calibration file is missing"


@pytest.mark.parametrize("kind", ["truncated", "label", "calib"])
def test_bad_input_stops_cleanly_or_is_skipped(kitti_dir, tmp_path, kind):
    root = copy_kitti(kitti_dir, tmp_path / "kitti")
    path, why = break_file(root, kind)
    out = tmp_path / "o"
    proc = run_cli("convert", "kitti", "--to", "svc", "--root", root, "--out", out, "-q")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and "no ImageSets" in lines[0]  # the split notice, then the error
    assert lines[1].startswith("evpipe: error: ") and str(path) in lines[1] and why in lines[1]
    assert not list(out.glob("shard-*")) and not list(out.glob("*.tmp"))
    # With one sample per shard, the shard finished before the bad sample is kept.
    proc = run_cli("convert", "kitti", "--to", "svc", "--root", root, "--out", tmp_path / "o1",
                   "--samples-per-shard", "1", "-q")
    assert proc.returncode == 1
    assert [s["samples"] for s in read_manifest(tmp_path / "o1")["shards"]] == [1]
    skip = run_cli("convert", "kitti", "--to", "svc", "--root", root, "--out", tmp_path / "s",
                   "--skip-bad", "-q", check=True)
    assert "skipped      1" in skip.stdout
    m = read_manifest(tmp_path / "s")
    assert m["complete"] and m["total_samples"] == 2
    assert [s["id"] for s in m["skipped"]] == ["000001"] and why in m["skipped"][0]["error"]
    assert [r["id"] for r in ShardDataset(tmp_path / "s")] == ["000000", "000002"]


def test_cli_usage_errors(tmp_path):
    proc = run_cli("convert", "kitti", "--to", "svc", "--split", "dev", "--out", tmp_path / "x")
    assert proc.returncode == 1 and "no split 'dev'" in proc.stderr
    proc = run_cli("convert", "kitti", "--to", "svc", "--voxel-size", "0", "1", "1", "--out",
                   tmp_path / "y")
    assert proc.returncode == 1 and "voxel_size" in proc.stderr
    proc = run_cli("convert", "kitti", "--to", "svc", "--root", tmp_path / "missing", "--out",
                   tmp_path / "z")
    assert proc.returncode == 1 and "no ImageSets/train.txt and no training/velodyne" in proc.stderr
    proc = run_cli("info", tmp_path)
    assert proc.returncode == 1 and "no manifest.json" in proc.stderr
