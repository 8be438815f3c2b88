"""`evpipe convert nmnist` on a small Train/Test tree of copies of the real N-MNIST sample."""

import shutil

import numpy as np
import pytest

from evpipe.errors import DatasetError
from evpipe.io import read_events
from evpipe.loaders import DATASETS
from evpipe.shards import ShardDataset, read_manifest
from tests.loaders.event_datasets import (EVENT_ENCODINGS, assert_encoded, cli, cli_error,
                                          convert, encoder)

SIZE = (34, 34)
# (split folder, digit, file) -> first N records of the real sample (None: all of it)
FILES = {("Train", "3", "00012.bin"): None, ("Train", "3", "00040.bin"): 2000,
         ("Train", "7", "00003.bin"): 3000, ("Test", "5", "00001.bin"): None}


@pytest.fixture(scope="module")
def tree(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("nmnist")
    data = (data_dir / "nmnist_bin" / "tonic_sample_nmnist.bin").read_bytes()
    for split in ("Train", "Test"):
        for d in range(10):
            (root / split / str(d)).mkdir(parents=True)
    for (split, digit, name), n in FILES.items():
        (root / split / digit / name).write_bytes(data if n is None else data[:5 * n])
    return root


@pytest.mark.parametrize("encoding", EVENT_ENCODINGS)
def test_convert_every_encoding(tree, tmp_path, encoding):
    ds = convert("nmnist", encoding, tree, tmp_path / "o")
    assert [r["id"] for r in ds] == ["3/00012", "3/00040", "7/00003"]
    assert [r["label"] for r in ds] == [3, 3, 7]
    params = encoder("nmnist", encoding)
    for rec in ds:
        digit, stem = rec["id"].split("/")
        events = read_events(tree / "Train" / digit / f"{stem}.bin")
        assert_encoded(rec, events, params, SIZE)
    assert read_manifest(tmp_path / "o")["loader"] == {"first_saccade_only": False}


def test_test_split_and_first_saccade(tree, tmp_path):
    assert cli("convert", "nmnist", "--to", "events", "--root", tree, "--out", tmp_path / "o",
               "--split", "test", "--first-saccade-only", "-q")[0] == 0
    ds = ShardDataset(tmp_path / "o")
    assert [(r["id"], r["label"]) for r in ds] == [("5/00001", 5)]
    full = read_events(tree / "Test" / "5" / "00001.bin")
    np.testing.assert_array_equal(ds[0]["events"], full[full["t"] < 100_000])
    assert 0 < len(ds[0]["events"]) < len(full)


def test_layout_errors(tree, tmp_path):
    assert "N-MNIST root not found" in cli_error("convert", "nmnist", "--to", "events",
                                                 "--root", tmp_path / "nope", "--out",
                                                 tmp_path / "o")
    assert "no split 'val'" in cli_error("convert", "nmnist", "--to", "events", "--root",
                                         tree, "--split", "val", "--out", tmp_path / "o")
    partial = tmp_path / "partial"
    shutil.copytree(tree, partial)
    shutil.rmtree(partial / "Train" / "4")
    with pytest.raises(DatasetError, match="class folder '4' not found.*Train/<digit 0-9>"):
        DATASETS.get("nmnist")(partial, "train").items()
    shutil.rmtree(partial / "Test")
    with pytest.raises(DatasetError, match="split folder Test/ not found"):
        DATASETS.get("nmnist")(partial, "test").items()


@pytest.mark.filterwarnings("ignore:.*outside the sensor size:evpipe.io.EvpipeWarning")
def test_bad_file_is_skipped(tree, tmp_path):
    root = tmp_path / "t"
    shutil.copytree(tree, root)
    (root / "Train" / "1" / "00007.bin").write_bytes(bytes([200, 5, 0, 0, 10]))
    err = cli_error("convert", "nmnist", "--to", "frames", "--root", root, "--out",
                    tmp_path / "a")
    assert "00007.bin" in err and "outside the 34x34 sensor" in err
    assert cli("convert", "nmnist", "--to", "frames", "--root", root, "--out", tmp_path / "b",
               "--skip-bad", "-q")[0] == 0
    assert len(ShardDataset(tmp_path / "b")) == 3
    assert [s["id"] for s in read_manifest(tmp_path / "b")["skipped"]] == ["1/00007"]
