"""`evpipe convert spikecam` on folders of the real spike-REDS `.dat` sample (301 frames of
400x250) and cuts of it."""

import shutil

import numpy as np
import pytest

from evpipe.errors import ConfigError, DatasetError, FormatError
from evpipe.io import read_spike_frames
from evpipe.loaders import DATASETS
from evpipe.shards import read_manifest
from tests.loaders.event_datasets import cli, cli_error, convert, encoder

FRAME_BYTES = 400 * 250 // 8


@pytest.fixture(scope="module")
def sample(data_dir):
    return data_dir / "spike_dat" / "spikeREDS_200_part1_key_id151.dat"


@pytest.fixture(scope="module")
def tree(sample, tmp_path_factory):
    """Class folders: balloon/a.dat (all 301 frames), car/b.dat (frames 0-99),
    car/night/c.dat (frames 100-139; deeper folders keep the first-level class)."""
    root = tmp_path_factory.mktemp("spikecam")
    data = sample.read_bytes()
    (root / "balloon").mkdir()
    (root / "car" / "night").mkdir(parents=True)
    shutil.copy(sample, root / "balloon" / "a.dat")
    (root / "car" / "b.dat").write_bytes(data[:100 * FRAME_BYTES])
    (root / "car" / "night" / "c.dat").write_bytes(data[100 * FRAME_BYTES:140 * FRAME_BYTES])
    return root


@pytest.mark.parametrize("encoding", ["frames", "poisson"])
def test_convert_every_encoding(tree, sample, tmp_path, encoding):
    ds = convert("spikecam", encoding, tree, tmp_path / "o", "--split", "all",
                 "--clip-frames", "128")
    assert [(r["id"], r["label"], r["frame_start"]) for r in ds] == [
        ("balloon/a_0", 0, 0), ("balloon/a_1", 0, 128), ("balloon/a_2", 0, 256),
        ("car/b_0", 1, 0), ("car/night/c_0", 1, 0)]
    assert read_manifest(tmp_path / "o")["loader"]["classes"] == ["balloon", "car"]
    frames = read_spike_frames(sample)
    p = encoder("spikecam", encoding)
    for rec, clip in ((ds[0], frames[:128]), (ds[2], frames[256:]), (ds[4], frames[100:140])):
        ref = p.encode(clip, sample_id=rec["id"])
        for name, value in ref.items():
            np.testing.assert_array_equal(rec[name], value)


def test_whole_files_without_labels(sample, tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    shutil.copy(sample, root / "x.dat")
    loader = DATASETS.get("spikecam")(root, "all")
    assert loader.items() == [("x.dat", None)]
    (rec,) = loader.records(loader.items()[0])
    assert set(rec) == {"id", "spikes", "frame_start"} and rec["id"] == "x"
    np.testing.assert_array_equal(rec["spikes"], read_spike_frames(sample))
    with pytest.raises(DatasetError, match="class_folders is on but .dat files lie directly"):
        DATASETS.get("spikecam")(root, "all", class_folders=True).items()


def test_train_test_splits_share_class_indices(sample, tmp_path):
    root = tmp_path / "s"
    for rel in ("train/cat/1.dat", "train/dog/2.dat", "test/dog/3.dat"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample, root / rel)
    assert DATASETS.get("spikecam")(root, "test").items() == [("test/dog/3.dat", 1)]
    loader = DATASETS.get("spikecam")(root, "train", class_folders=False)
    assert loader.items() == [("train/cat/1.dat", None), ("train/dog/2.dat", None)]
    assert loader.item_id(loader.items()[1]) == "dog/2"
    err = cli_error("convert", "spikecam", "--to", "frames", "--root", sample.parent,
                    "--split", "train", "--out", tmp_path / "o")
    assert "split folder train/ (use --split all" in err
    # Without --split the dataset's first split, "all", takes the flat folder.
    rc, out, err = cli("convert", "spikecam", "--to", "frames", "--root", sample.parent,
                       "--out", tmp_path / "o2", "-q")
    assert rc == 0, err


@pytest.mark.filterwarnings("ignore:.*not a whole 12500-byte frame:evpipe.io.EvpipeWarning")
def test_bad_inputs(tree, tmp_path):
    root = tmp_path / "t"
    shutil.copytree(tree, root)
    (root / "car" / "empty.dat").write_bytes(b"\0" * 100)
    with pytest.raises(FormatError, match="no whole 400x250 frame"):
        list(DATASETS.get("spikecam")(root, "all").records(("car/empty.dat", 1)))
    rc, _, err = cli("convert", "spikecam", "--to", "frames", "--root", root, "--split", "all",
                     "--out", tmp_path / "o", "--skip-bad", "-q")
    assert rc == 0, err
    m = read_manifest(tmp_path / "o")
    assert [s["id"] for s in m["skipped"]] == ["car/empty"] and m["total_samples"] == 3
    with pytest.raises(ConfigError, match="multiple of 8"):
        DATASETS.get("spikecam")(root, "all", width=3, height=3)
    assert "no split 'val'" in cli_error("convert", "spikecam", "--to", "frames", "--root",
                                         root, "--split", "val", "--out", tmp_path / "v")
