"""`add_parsers` wiring and `--model`: the predictor's encoding is used and checked."""

import argparse
import json
import sys
import types

import numpy as np
import pytest

from evpipe.errors import ConfigError
from evpipe.stream.cli import add_parsers

AEDAT4 = "aedat4/tonic_sample.aedat4"


def parse(*argv):
    p = argparse.ArgumentParser(prog="evpipe")
    add_parsers(p.add_subparsers(dest="command", required=True))
    return p.parse_args([str(a) for a in argv])


class FakePredictor:
    """The interface of evpipe.models.train.Predictor."""

    def __init__(self):
        self.encoding = {"name": "frames", "params": {"n_bins": 3, "split_by": "time",
                                                      "dtype": "uint16", "derived": 7}}
        self.records = []

    def __call__(self, record):
        self.records.append(record)
        return {"class": int(record["frames"].sum() % 3), "label": None, "scores": [1.0]}


@pytest.fixture
def predictor(monkeypatch):
    fake = FakePredictor()
    module = types.ModuleType("evpipe.models.train")
    module.load_predictor = lambda path, device="cpu": fake
    monkeypatch.setitem(sys.modules, "evpipe.models.train", module)
    return fake


def test_both_commands_set_func():
    assert parse("serve", "x.raw").func.__name__ == "cmd_serve"
    args = parse("stream", "tcp://127.0.0.1:1")
    assert args.func.__name__ == "cmd_stream" and args.reconnect == 5
    assert args.overload == "drop-oldest" and args.out_of_order == "drop"


def test_model_uses_its_own_encoding(data_dir, tmp_path, predictor):
    out = tmp_path / "out.jsonl"
    args = parse("stream", f"replay:{data_dir / AEDAT4}?speed=0", "--model", "m.pt",
                 "--window-us", 100_000, "--out", out, "--overload", "block", "-q")
    assert args.func(args) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 7 and lines[-1]["summary"]["windows"] == 6
    assert all(line["prediction"]["scores"] == [1.0] for line in lines[:-1])
    rec = predictor.records[0]
    assert rec["frames"].shape == (3, 2, 240, 320) and rec["frames"].dtype == np.uint16
    assert rec["id"] == "0"


@pytest.mark.parametrize("extra, match", [
    (("--encoding", "voxel_grid"), "trained on encoding 'frames', not 'voxel_grid'"),
    (("--n-bins", 4), "--n-bins 4 differs from the model's 3"),
])
def test_model_encoding_conflicts(predictor, extra, match):
    args = parse("stream", "replay:x.raw", "--model", "m.pt", *extra)
    with pytest.raises(ConfigError, match=match):
        args.func(args)
