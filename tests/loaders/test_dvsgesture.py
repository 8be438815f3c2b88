"""`evpipe convert dvsgesture` on a DvsGesture tree of AEDAT 3.1 recordings written by
tests/io/aedat_fixtures.py (no real recording is available) with the real labels CSV."""

import logging
import shutil

import numpy as np
import pytest

from evpipe.errors import FormatError
from evpipe.io import read_gesture_labels
from evpipe.loaders import DATASETS
from evpipe.loaders.dvsgesture import _cut_trials
from evpipe.shards import ShardDataset, read_manifest
from tests.io.aedat_fixtures import random_events, write_aedat31
from tests.loaders.event_datasets import (EVENT_ENCODINGS, assert_encoded, cli, cli_error,
                                          convert, encoder)

SIZE = (128, 128)
# Recordings -> seed. Events cover the CSV's 53 036 986..177 991 967 us sparsely: one
# every ~3 ms from 50 s to ~180 s.
RECORDINGS = {"user01_natural": 1, "user24_led": 2}
# Long trials (~6 s) would give big time surfaces and many event clouds at the encoder
# defaults; these keep the stored sizes and the run time small.
PARAMS = {"time_surface": {"dt_us": 1_000_000, "tau_us": 200_000.0},
          "event_cloud": {"n_groups": 16, "k": 8}}


def recording_events(name):
    return random_events(40_000, *SIZE, seed=RECORDINGS[name], t0=50_000_000, max_dt=6_500)


@pytest.fixture(scope="module")
def csv(data_dir):
    return data_dir / "aedat31" / "user01_natural_labels.csv"


@pytest.fixture(scope="module")
def tree(csv, tmp_path_factory):
    root = tmp_path_factory.mktemp("gesture")
    d = root / "DvsGesture"
    d.mkdir()
    for name in RECORDINGS:
        write_aedat31(d / f"{name}.aedat", recording_events(name), packet_events=5000)
        shutil.copy(csv, d / f"{name}_labels.csv")
    (d / "trials_to_train.txt").write_text("user01_natural.aedat\n\n")
    (d / "trials_to_test.txt").write_text("user24_led.aedat\r\n")
    return root


def trial(name, rows, i):
    ev = recording_events(name)
    return ev[(ev["t"] >= rows["start_us"][i]) & (ev["t"] < rows["end_us"][i])]


@pytest.mark.parametrize("encoding", EVENT_ENCODINGS)
def test_convert_every_encoding(tree, csv, tmp_path, encoding):
    params = PARAMS.get(encoding, {})
    ds = convert("dvsgesture", encoding, tree, tmp_path / "o", params=params)
    rows = read_gesture_labels(csv)
    assert [r["id"] for r in ds] == [f"user01_natural_{i}" for i in range(12)]
    assert [r["label"] for r in ds] == (rows["class"] - 1).tolist()
    assert ds[3]["label"] == 4 and ds[4]["label"] == 3  # CSV rows are not class-ordered
    assert [r["label"] for r in ds].count(7) == 2  # class 8 is labelled twice
    rec = ds[5]
    assert (rec["user"], rec["lighting"]) == (1, "natural")
    assert (rec["t_start_us"], rec["t_end_us"]) == (111008687, 120907694)
    p = encoder("dvsgesture", encoding, **params)
    for i in (0, 5, 11):
        assert_encoded(ds[i], trial("user01_natural", rows, i), p, SIZE)
    if encoding == "event_cloud":
        m = read_manifest(tmp_path / "o")["encoding"]["params"]
        assert (m["window_us"], m["stride_us"], m["n_points"]) == (500_000, 250_000, 1024)
        assert len(ds[0]["windows"]) > 10


def test_test_split_and_drop_other(tree, csv, tmp_path):
    rc, _, err = cli("convert", "dvsgesture", "--to", "events", "--root", tree / "DvsGesture",
                     "--split", "test", "--drop-other", "--out", tmp_path / "o", "-q")
    assert rc == 0, err
    ds = ShardDataset(tmp_path / "o")
    assert [r["id"] for r in ds] == [f"user24_led_{i}" for i in range(11)]
    assert 10 not in [r["label"] for r in ds]
    rows = read_gesture_labels(csv)
    np.testing.assert_array_equal(ds[10]["events"], trial("user24_led", rows, 10))


def test_split_by_user_without_trials_files(tree, tmp_path, caplog):
    root = tmp_path / "g"
    shutil.copytree(tree / "DvsGesture", root)
    for f in root.glob("trials_to_*.txt"):
        f.unlink()
    with caplog.at_level(logging.WARNING):
        assert DATASETS.get("dvsgesture")(root, "train").items() == ["user01_natural"]
        assert DATASETS.get("dvsgesture")(root, "test").items() == ["user24_led"]
    assert "no trials_to_train.txt; using users 1-23" in caplog.text
    assert "no trials_to_test.txt; using users 24-29" in caplog.text


def test_trials_cut_in_one_pass_any_row_order():
    """Overlapping and unordered rows; a trial may span many chunks; reading stops after
    the last trial."""
    ev = random_events(5000, *SIZE, seed=3, max_dt=10)
    chunks = [ev[a:a + 300] for a in range(0, len(ev), 300)]
    t = ev["t"]
    starts = np.array([t[2000], t[100], t[1500], t[10]], np.int64)
    ends = np.array([t[2600], t[1700], t[1600], t[11]], np.int64)
    pulled = []

    def source():
        for c in chunks:
            pulled.append(c)
            yield c

    got = list(_cut_trials(source(), starts, ends, [0, 1, 3]))
    assert [i for i, _ in got] == [0, 1, 3]
    for i, events in got:
        np.testing.assert_array_equal(events, ev[(t >= starts[i]) & (t < ends[i])])
    assert len(pulled) < len(chunks)


def test_bad_inputs(tree, tmp_path):
    root = tmp_path / "g"
    shutil.copytree(tree / "DvsGesture", root)
    (root / "user01_natural_labels.csv").write_text(
        "class,startTime_usec,endTime_usec\n1,53036986,59508469\n12,64889467,73697045\n")
    err = cli_error("convert", "dvsgesture", "--to", "events", "--root", root, "--out",
                    tmp_path / "a")
    assert "user01_natural_labels.csv" in err and "class 12 is outside 1..11" in err
    rc, _, _ = cli("convert", "dvsgesture", "--to", "events", "--root", root, "--out",
                   tmp_path / "b", "--skip-bad", "-q")
    assert rc == 0
    assert [s["id"] for s in read_manifest(tmp_path / "b")["skipped"]] == ["user01_natural"]
    (root / "user01_natural_labels.csv").write_text(
        "class,startTime_usec,endTime_usec\n1,1000,2000\n")
    loader = DATASETS.get("dvsgesture")(root, "train")
    with pytest.raises(FormatError, match="labels row 0 .* holds no events"):
        list(loader.records("user01_natural"))
    (root / "trials_to_train.txt").write_text("user01_natural.aedat\nnotes.txt\n")
    err = cli_error("convert", "dvsgesture", "--to", "events", "--root", root, "--out",
                    tmp_path / "c")
    assert "trials_to_train.txt" in err and "line 2: 'notes.txt'" in err
    assert "DVS128 Gesture root not found" in cli_error(
        "convert", "dvsgesture", "--to", "events", "--root", tmp_path / "x", "--out",
        tmp_path / "d")
