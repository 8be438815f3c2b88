"""Scale-out and reliability: Dask cluster conversion equals the local one, killed runs
resume to the same bytes, verify-shards finds damage and a rerun repairs it, changed
parameters are refused."""

import json
import random
import signal
import subprocess
import sys
import time

import pytest

from evpipe.convert import convert
from evpipe.shards import read_manifest
from tests.helpers import copy_kitti, run_cli
from tests.test_cli_convert import many_frames, shard_hashes


def hashes(path):
    return [(s["file"], s["sha256"], s["samples"]) for s in read_manifest(path)["shards"]]


@pytest.fixture(scope="module")
def nmnist_tree(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("nmnist")
    data = (data_dir / "nmnist_bin" / "tonic_sample_nmnist.bin").read_bytes()
    for split in ("Train", "Test"):
        for d in range(10):
            (root / split / str(d)).mkdir(parents=True)
    for k in range(6):
        (root / "Train" / str(k % 3) / f"{k:05d}.bin").write_bytes(data[:5 * (1000 + 500 * k)])
    return root


def test_dask_cluster_equals_local_pool(kitti_dir, nmnist_tree, tmp_path):
    from dask.distributed import Client, LocalCluster
    kitti = copy_kitti(kitti_dir, tmp_path / "kitti")
    jobs = [("kitti", "svc", kitti, {}), ("nmnist", "frames", nmnist_tree, {"n_bins": 4}),
            ("nmnist", "event_cloud", nmnist_tree, {"n_groups": 16, "k": 4})]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, host="127.0.0.1") as cluster, \
            Client(cluster) as client:
        for name, enc, root, params in jobs:
            local = tmp_path / f"{name}-{enc}-local"
            dist = tmp_path / f"{name}-{enc}-dask"
            common = dict(root=root, params=params, samples_per_shard=1, progress=False)
            convert(name, enc, out=local, workers=1, **common)
            summary = convert(name, enc, out=dist, scheduler=client, **common)
            assert summary.new_samples == read_manifest(local)["total_samples"] > 1
            assert hashes(dist) == hashes(local)
        # The CLI path through the scheduler's address.
        proc = run_cli("convert", "nmnist", "--to", "frames", "--n-bins", "4", "--root",
                       nmnist_tree, "--out", tmp_path / "cli", "--samples-per-shard", "1",
                       "--scheduler", cluster.scheduler_address, "-q", check=True)
        assert "samples      6" in proc.stdout
        assert hashes(tmp_path / "cli") == hashes(tmp_path / "nmnist-frames-local")


def test_unreachable_scheduler(nmnist_tree, tmp_path):
    proc = run_cli("convert", "nmnist", "--to", "frames", "--root", nmnist_tree, "--out",
                   tmp_path / "o", "--scheduler", "tcp://127.0.0.1:9", "-q", timeout=120)
    assert proc.returncode == 1 and "cannot reach the Dask scheduler" in proc.stderr


def test_kill_at_random_points_then_resume(kitti_dir, tmp_path):
    root = many_frames(kitti_dir, tmp_path / "kitti", 24)
    args = ["convert", "kitti", "--to", "svc", "--root", str(root), "--no-fov",
            "--samples-per-shard", "2", "-q"]
    run_cli(*args, "--out", tmp_path / "full", check=True)
    rng = random.Random(7)
    for k in range(3):
        out = tmp_path / f"killed-{k}"
        proc = subprocess.Popen([sys.executable, "-m", "evpipe.cli", *args, "--out", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.8, 3.0))  # start-up takes ~1 s; shards land every ~50 ms
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (out / "manifest.json").exists():
            kept = len(json.loads((out / "manifest.json").read_text())["shards"])
        else:
            kept = 0
        run_cli(*args, "--out", out, check=True)
        assert shard_hashes(out) == shard_hashes(tmp_path / "full"), f"kill {k} after {kept}"
        assert run_cli("verify-shards", out, check=True).stdout.rstrip().endswith("intact")


def test_verify_shards_names_a_corrupt_shard_and_rerun_repairs(kitti_dir, tmp_path):
    root = copy_kitti(kitti_dir, tmp_path / "kitti")
    args = ["convert", "kitti", "--to", "svc", "--root", root, "--samples-per-shard", "1", "-q"]
    out = tmp_path / "o"
    run_cli(*args, "--out", out, check=True)
    good = shard_hashes(out)
    ok = run_cli("verify-shards", out, check=True)
    assert "3 shard(s), 3 samples: intact" in ok.stdout
    shard = out / "shard-00001.h5"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x5A
    shard.write_bytes(bytes(data))
    bad = run_cli("verify-shards", out)
    assert bad.returncode == 1
    assert "shard-00001.h5: SHA-256 differs from the manifest" in bad.stdout
    assert "bad shards: shard-00001.h5" in bad.stdout
    # Truncate another one: it no longer decodes.
    other = out / "shard-00002.h5"
    other.write_bytes(other.read_bytes()[:200])
    bad = run_cli("verify-shards", out)
    assert "shard-00002.h5: does not decode" in bad.stdout
    assert "bad shards: shard-00001.h5, shard-00002.h5" in bad.stdout
    # The same command again keeps shard 0, redoes the damaged ones: same bytes as before.
    proc = run_cli(*args, "--out", out, check=True)
    assert "1 shards kept from an earlier run" in proc.stdout
    assert shard_hashes(out) == good
    assert run_cli("verify-shards", out).returncode == 0


def test_changed_parameters_are_refused(kitti_dir, tmp_path):
    root = copy_kitti(kitti_dir, tmp_path / "kitti")
    out = tmp_path / "o"
    run_cli("convert", "kitti", "--to", "svc", "--root", root, "--out", out, "-q", check=True)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for extra in (["--voxel-size", "0.1", "0.1", "0.2"], ["--no-fov"], ["--limit", "2"]):
        proc = run_cli("convert", "kitti", "--to", "svc", "--root", root, "--out", out, "-q",
                       *extra)
        assert proc.returncode == 1 and "refusing to mix" in proc.stderr
    # A changed source file (size or mtime) is a different input too.
    scan = root / "training" / "velodyne" / "000002.bin"
    scan.write_bytes(scan.read_bytes()[:-16])
    proc = run_cli("convert", "kitti", "--to", "svc", "--root", root, "--out", out, "-q")
    assert proc.returncode == 1 and "refusing to mix" in proc.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
