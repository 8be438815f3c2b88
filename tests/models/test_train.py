"""`evpipe train` / `evpipe eval` end to end on generated datasets: dataset tree ->
`evpipe convert` -> shards -> training through the command line -> accuracy on the test
split measured by `evpipe eval`; checkpoints, resume, predictor and errors.

Sizes are picked so every model learns its task within seconds on two CPU cores:
- shapes (box, sphere, cylinder, cone; 40 train / 20 test each) as ModelNet40 text files,
  SVC with 0.1 voxels (20^3 grid), E3DSNN-T as published;
- moving-dot N-MNIST recordings (left, right, up, circle; 60 / 20 each):
  * event clouds of 256 points, 32 groups of 16, signed ("shift") offsets; SpikePoint
    with widths 32 64 / 128 and T = 4. Training uses the rate code's expectation
    (`--coding expected`): Bernoulli spikes at T = 4 need several times more epochs to
    reach the same accuracy on 240 recordings;
  * frames of 4 time bins; GACResNet with widths 8 16 32.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import evpipe.models.train as train_mod
from evpipe.encoders import ENCODINGS
from evpipe.io import read_events
from evpipe.loaders.nmnist import SENSOR as NMNIST_SENSOR
from evpipe.models.train import MODELS, load_checkpoint, load_predictor
from evpipe.shards import ShardDataset, read_manifest
from evpipe.shards.collate import collate_for
from tests.loaders.event_datasets import cli
from tests.models.synthetic import (MOTION_CLASSES, SHAPE_CLASSES, write_motion_tree,
                                    write_shapes_tree)

CPU = ("--device", "cpu", "--threads", "1", "-q")


@pytest.fixture(autouse=True, scope="module")
def restore_threads():
    """`--threads` sets torch's thread count for the process; put it back afterwards."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def run_ok(*args) -> str:
    rc, out, err = cli(*args)
    assert rc == 0, err
    return out


def convert(dataset, encoding, root, out, *args):
    rc, _, err = cli("convert", dataset, "--to", encoding, "--root", root, "--out", out,
                     "-q", *args)
    assert rc == 0, err
    return out


def evaluate(shards, checkpoint, tmp_path) -> dict:
    """`evpipe eval --json` metrics."""
    report = tmp_path / "eval.json"
    run_ok("eval", "--shards", shards, "--checkpoint", checkpoint, "--json", report, *CPU)
    return json.loads(report.read_text())


# -- data and training runs (shared by the tests of this module) ----------------------------

@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shapes")
    root = write_shapes_tree(tmp / "modelnet40", n_train=40, n_test=20, seed=0)
    return {split: convert("modelnet40", "svc", root, tmp / f"svc-{split}", "--split", split,
                           "--voxel-size", 0.1, 0.1, 0.1) for split in ("train", "test")}


@pytest.fixture(scope="module")
def motion_root(tmp_path_factory):
    return write_motion_tree(tmp_path_factory.mktemp("nmnist"), n_train=60, n_test=20, seed=1)


@pytest.fixture(scope="module")
def clouds(motion_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clouds")
    return {split: convert("nmnist", "event_cloud", motion_root, tmp / split, "--split", split,
                           "--n-points", 256, "--n-groups", 32, "--k", 16, "--mode", "shift")
            for split in ("train", "test")}


@pytest.fixture(scope="module")
def frames(motion_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("frames")
    return {split: convert("nmnist", "frames", motion_root, tmp / split, "--split", split,
                           "--n-bins", 4) for split in ("train", "test")}


@pytest.fixture(scope="module")
def e3dsnn_run(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("e3dsnn")
    stdout = run_ok("train", "--shards", shapes["train"], "--val", shapes["test"], "--model",
                    "e3dsnn", "--epochs", 14, "--batch-size", 8, "--out", out, *CPU)
    return out, stdout


@pytest.fixture(scope="module")
def spikepoint_run(clouds, tmp_path_factory):
    out = tmp_path_factory.mktemp("spikepoint")
    run_ok("train", "--shards", clouds["train"], "--val", clouds["test"], "--model",
           "spikepoint", "--epochs", 12, "--timesteps", 4, "--local-channels", 32, 64,
           "--global-channels", 128, "--coding", "expected", "--out", out, *CPU)
    return out


@pytest.fixture(scope="module")
def gac_run(frames, tmp_path_factory):
    out = tmp_path_factory.mktemp("gac")
    run_ok("train", "--shards", frames["train"], "--val", frames["test"], "--model",
           "gac-resnet", "--epochs", 10, "--channels", 8, 16, 32, "--workers", 1,
           "--out", out, *CPU)
    return out


# -- learning ---------------------------------------------------------------------------

def assert_learned(metrics: dict, names, n_test: int) -> None:
    assert metrics["samples"] == n_test
    assert set(metrics["per_class"]) == set(names)
    assert metrics["accuracy"] >= 0.9, metrics
    assert all(m["accuracy"] >= 0.7 for m in metrics["per_class"].values()), metrics


def test_e3dsnn_learns_shapes(shapes, e3dsnn_run, tmp_path):
    out, stdout = e3dsnn_run
    assert stdout.count("epoch ") == 14 and "val acc" in stdout
    metrics = evaluate(shapes["test"], out / "last.pt", tmp_path)
    assert_learned(metrics, SHAPE_CLASSES.values(), 80)
    assert metrics["model"] == "e3dsnn" and metrics["epoch"] == 14


def test_spikepoint_learns_motions(clouds, spikepoint_run, tmp_path):
    metrics = evaluate(clouds["test"], spikepoint_run / "last.pt", tmp_path)
    assert_learned(metrics, [str(d) for d in range(len(MOTION_CLASSES))], 80)
    assert metrics["items"] == 80 and "window_accuracy" in metrics  # one window per recording


def test_gac_resnet_learns_motion_frames(frames, gac_run, tmp_path):
    metrics = evaluate(frames["test"], gac_run / "last.pt", tmp_path)
    assert_learned(metrics, [str(d) for d in range(len(MOTION_CLASSES))], 80)


# -- checkpoints ---------------------------------------------------------------------------

def _plain(value) -> bool:
    """Only tensors and plain Python values, nested in dicts / lists / tuples."""
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or type(value) in (bool, int, float, str, torch.Tensor)


def test_checkpoint_is_plain_and_reloads_to_the_same_outputs(shapes, e3dsnn_run, tmp_path):
    out, _ = e3dsnn_run
    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert _plain(ckpt)
    assert ckpt["format"] == "evpipe-checkpoint" and ckpt["epoch"] == 14
    assert ckpt["model"] == "e3dsnn" and ckpt["model_kwargs"]["in_channels"] == 6
    assert ckpt["encoding"] == read_manifest(shapes["train"])["encoding"]
    assert ckpt["classes"][9] == "cone" and ckpt["num_classes"] == 40
    # The validation metrics computed in memory at the last epoch equal a fresh evaluation
    # of the saved weights (batch composition aside, same outputs).
    metrics = evaluate(shapes["test"], out / "last.pt", tmp_path)
    assert metrics["accuracy"] == ckpt["metrics"]["val"]["accuracy"]
    assert metrics["loss"] == pytest.approx(ckpt["metrics"]["val"]["loss"], rel=1e-5)
    # best.pt holds the best validation accuracy of the log.
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, 15))
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    assert best["metrics"]["val"]["accuracy"] == max(r["val_accuracy"] for r in log)
    # Two loads give identical outputs on a batch.
    ds = ShardDataset(shapes["test"])
    batch = collate_for(ds.encoding)([ds[i] for i in range(6)])
    logits = [MODELS["e3dsnn"].logits(load_checkpoint(out / "last.pt")[0], batch, "cpu", None)
              for _ in range(2)]
    assert logits[0].shape == (6, 40)
    assert torch.equal(logits[0], logits[1])


def test_gradients_reach_input_features_through_spconv(shapes, e3dsnn_run):
    model, _ = load_checkpoint(e3dsnn_run[0] / "last.pt")
    model.train()
    ds = ShardDataset(shapes["train"])
    batch = collate_for(ds.encoding)([ds[i] for i in (0, 50, 100, 150)])
    feats = batch["feats"].requires_grad_(True)
    logits = MODELS["e3dsnn"].logits(model, batch, "cpu", None)
    torch.nn.functional.cross_entropy(logits, batch["label"]).backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
    assert (feats.grad.abs().sum(1) > 0).float().mean() > 0.5


def test_predictor_matches_eval_and_takes_encoder_output(clouds, frames, motion_root,
                                                         spikepoint_run, gac_run, tmp_path):
    for shards, run_dir in ((clouds["test"], spikepoint_run), (frames["test"], gac_run)):
        predictor = load_predictor(run_dir / "last.pt")
        assert predictor.encoding == read_manifest(shards)["encoding"]
        assert predictor.classes[:4] == ["0", "1", "2", "3"]
        fields = [f for f in read_manifest(shards)["schema"] if f not in ("id", "label")]
        records = [{f: r[f] for f in fields} for r in ShardDataset(shards)]
        predictions = [predictor(r)["class"] for r in records]
        labels = [r["label"] for r in ShardDataset(shards)]
        accuracy = np.mean(np.array(predictions) == np.array(labels))
        assert accuracy == evaluate(shards, run_dir / "last.pt", tmp_path)["accuracy"]
        one = predictor(records[0])
        json.dumps(one)
        assert len(one["scores"]) == 10 and sum(one["scores"]) == pytest.approx(1.0, abs=1e-5)
        assert one["label"] == str(one["class"])
        # The streaming path: the encoder's output on the raw events, no shards involved.
        params = ENCODINGS.get(predictor.encoding["name"]).make(
            **predictor.encoding["params"])
        events = read_events(motion_root / "Test" / "0" / "00000.bin")
        encoded = params.encode(events, sensor_size=NMNIST_SENSOR, sample_id="0/00000")
        assert predictor(encoded)["class"] == predictions[0]


def test_predictor_without_windows(spikepoint_run):
    predictor = load_predictor(spikepoint_run / "last.pt")
    p = predictor.encoding["params"]
    m, k, n = p["n_groups"], p["k"], p["n_points"]
    empty = {"points": np.zeros((0, n, 3), np.float32), "windows": np.zeros((0, 2), np.int64),
             "groups": np.zeros((0, m, k, 6), np.float32),
             "centroids": np.zeros((0, m, 3), np.float32)}
    assert predictor(empty) == {"class": None, "label": None, "scores": []}


# -- resume --------------------------------------------------------------------------------

def test_resume_ends_with_the_weights_of_an_uninterrupted_run(clouds, frames, tmp_path,
                                                              monkeypatch):
    """Bernoulli rate coding, so the RNG states must travel in the checkpoint too."""
    args = ("train", "--shards", clouds["train"], "--model", "spikepoint", "--epochs", 3,
            "--timesteps", 2, "--local-channels", 8, "--global-channels", 16,
            "--batch-size", 48, *CPU)
    run_ok(*args, "--out", tmp_path / "whole")

    save = train_mod._save_atomic

    def killed_after_epoch_2(obj, path):
        save(obj, path)
        if obj["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_save_atomic", killed_after_epoch_2)
    rc, _, err = cli(*args, "--out", tmp_path / "cut")
    assert rc == 130 and "interrupted" in err
    monkeypatch.undo()
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["epoch"] == 2
    stdout = run_ok("train", "--shards", clouds["train"], "--resume",
                    tmp_path / "cut" / "last.pt", *CPU)
    assert stdout.startswith("epoch 3/3")

    whole = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert cut["epoch"] == whole["epoch"] == 3
    for name, tensor in whole["state_dict"].items():
        assert torch.equal(tensor, cut["state_dict"][name]), name
    assert whole["optimizer"]["state"][0]["step"] == cut["optimizer"]["state"][0]["step"]
    logs = [[json.loads(line)["train_loss"] for line in (tmp_path / d / "log.jsonl")
             .read_text().splitlines()] for d in ("whole", "cut")]
    assert logs[0] == logs[1] and len(logs[0]) == 3

    # A finished run has nothing left to do; changed settings or other shards are refused.
    assert "nothing to do" in run_ok("train", "--shards", clouds["train"], "--resume",
                                     tmp_path / "whole" / "last.pt", *CPU)
    rc, _, err = cli("train", "--shards", clouds["train"], "--resume",
                     tmp_path / "whole" / "last.pt", "--lr", 0.1, *CPU)
    assert rc == 1 and "--lr 0.1 (checkpoint: 0.005)" in err
    rc, _, err = cli("train", "--shards", clouds["test"], "--resume",
                     tmp_path / "whole" / "last.pt", "--model", "e3dsnn", *CPU)
    assert rc == 1 and "checkpoint holds spikepoint" in err
    rc, _, err = cli("train", "--shards", frames["train"], "--resume",
                     tmp_path / "whole" / "last.pt", *CPU)
    assert rc == 1 and "model 'spikepoint' cannot read 'frames' shards" in err


# -- command line and errors ---------------------------------------------------------------

def test_incompatible_model_and_encoding(clouds, frames, e3dsnn_run):
    rc, _, err = cli("train", "--shards", clouds["train"], "--model", "e3dsnn", *CPU)
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert ("model 'e3dsnn' cannot read 'event_cloud' shards; valid model <- encoding pairs: "
            "e3dsnn <- svc; spikepoint <- event_cloud; gac-resnet <- frames or poisson") in err
    rc, _, err = cli("train", "--shards", frames["train"], "--model", "gac-resnet",
                     "--variant", "S", *CPU)
    assert rc == 1 and "--variant does not apply to model 'gac-resnet'" in err
    rc, _, err = cli("eval", "--shards", frames["test"], "--checkpoint",
                     e3dsnn_run[0] / "last.pt", *CPU)
    assert rc == 1 and "cannot read 'frames' shards" in err


def test_eval_command_line(shapes, e3dsnn_run, tmp_path):
    """The real command line in a fresh interpreter: result lines and --json."""
    report = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, "-m", "evpipe.cli", "eval", "--shards",
                           str(shapes["test"]), "--checkpoint", str(e3dsnn_run[0] / "best.pt"),
                           "--json", str(report), *CPU], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    metrics = json.loads(report.read_text())
    assert lines[0] == (f"{shapes['test']}: loss {metrics['loss']:.4f}, accuracy "
                        f"{100 * metrics['accuracy']:.2f}% of 80 samples")
    assert sorted(line.split()[0] for line in lines[1:]) == sorted(SHAPE_CLASSES.values())
    assert metrics["checkpoint"].endswith("best.pt")
    bad = subprocess.run([sys.executable, "-m", "evpipe.cli", "eval", "--shards",
                          str(tmp_path), "--checkpoint", str(report), *CPU],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith("evpipe: error: ")
    assert "not a loadable checkpoint" in bad.stderr


def test_stream_runs_a_trained_checkpoint(motion_root, gac_run, tmp_path):
    """`evpipe stream --model` on a replayed recording: one window holding the whole file,
    predicted as the predictor predicts the offline encoding of the same events."""
    path = motion_root / "Test" / "0" / "00000.bin"
    events = read_events(path)
    span = int(events["t"][-1] - events["t"][0]) + 1
    out = tmp_path / "stream.jsonl"
    rc, _, err = cli("stream", f"replay:{path}?speed=0", "--model", gac_run / "last.pt",
                     "--window-us", span, "--out", out, "-q")
    assert rc == 0, err
    *windows, summary = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["summary"]["events"] == len(events) and len(windows) == 1
    assert windows[0]["n_events"] == len(events)
    predictor = load_predictor(gac_run / "last.pt")
    params = ENCODINGS.get("frames").make(**predictor.encoding["params"])
    offline = predictor(params.encode(events, sensor_size=NMNIST_SENSOR, sample_id="0"))
    assert windows[0]["prediction"]["class"] == offline["class"]
    assert windows[0]["prediction"]["scores"] == pytest.approx(offline["scores"], abs=1e-6)
