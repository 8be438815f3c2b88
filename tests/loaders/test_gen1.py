"""`evpipe convert gen1`: label-timestamp windows, RVT's box filters, one pass per recording.

Tree: train/ holds a DAT written by evpipe (304x240, timestamps that jitter backwards as
Gen1's do) with v1 (original release) boxes; val/ holds the real N-CARS DAT sample with
v2 (toolbox BBOX_DTYPE) boxes.
"""

import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evpipe.errors import ConfigError, DatasetError, FormatError
from evpipe.events import EVENT_DTYPE
from evpipe.io import read_events, write_events
from evpipe.io.dat import DatReader
from evpipe.io.labels import BOX_DTYPE
from evpipe.loaders import DATASETS
from evpipe.loaders import gen1 as gen1_module
from evpipe.loaders.gen1 import filter_boxes, label_windows
from evpipe.shards import read_manifest
from tests.loaders.event_datasets import (EVENT_ENCODINGS, assert_encoded, cli, cli_error,
                                          convert, encoder)

SIZE = (304, 240)
TRAIN = "17-04-06_09-57-37_0_1000000"
VAL = "17-04-13_19-17-27_0_100000"
V1 = np.dtype([("ts", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"),
               ("class_id", "u1"), ("confidence", "<f4"), ("track_id", "<u4")])
V2 = np.dtype([("t", "<i8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"),
               ("class_id", "<u4"), ("track_id", "<u4"), ("class_confidence", "<f4")])
# (t, x, y, w, h, class, track) -> what becomes of it on the train split
TRAIN_BOXES = [
    (250_000, -10, 200, 50, 60, 1, 2),   # clipped to (0, 200, 40, 39)
    (100_000, 10, 20, 40, 30, 0, 1),     # kept (rows need not be time-sorted)
    (250_000, 10, 50, 280, 100, 0, 3),   # w 280 > 273: dropped on train only
    (250_000, 50, 50, 8, 40, 0, 4),      # side 8 < 10: dropped (kept without box_filter)
    (500_000, 300, 100, 20, 20, 1, 5),   # clipped to w 3: dropped; t 500 000 gives no sample
    (500_000, 400, 10, 20, 20, 0, 8),    # outside the frame: zero area after clipping
    (750_000, 150, 100, 30, 25, 0, 6),   # kept
    (1_010_000, 60, 60, 25, 25, 1, 7),   # kept; its window runs past the last event
]
VAL_BOXES = [(30_000, 5, 5, 40, 40, 0, 1), (60_000, 10, 10, 280, 40, 1, 2),
             (99_990, 0, 0, 30, 30, 0, 3)]


def boxes(rows, dtype):
    a = np.zeros(len(rows), dtype)
    for i, (t, x, y, w, h, c, k) in enumerate(rows):
        a[i] = (t, x, y, w, h, c, 1.0, k) if dtype == V1 else (t, x, y, w, h, c, k, 1.0)
    return a


def train_events():
    rng = np.random.default_rng(5)
    n = 20_000
    ev = np.empty(n, EVENT_DTYPE)
    ev["t"] = np.sort(rng.integers(0, 1_000_000, n))
    jitter = rng.random(n) < 0.05
    ev["t"][jitter] = np.maximum(ev["t"][jitter] - rng.integers(1, 60, jitter.sum()), 0)
    ev["x"] = rng.integers(0, SIZE[0], n)
    ev["y"] = rng.integers(0, SIZE[1], n)
    ev["p"] = rng.integers(0, 2, n)
    assert (np.diff(ev["t"]) < 0).any()
    return ev


@pytest.fixture(scope="module")
def tree(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("gen1")
    (root / "train").mkdir()
    (root / "val").mkdir()
    write_events(root / "train" / f"{TRAIN}_td.dat", train_events(), "dat", SIZE)
    np.save(root / "train" / f"{TRAIN}_bbox.npy", boxes(TRAIN_BOXES, V1))
    shutil.copy(data_dir / "prophesee_dat" / "NCARS_obj_004397_td.dat",
                root / "val" / f"{VAL}_td.dat")
    np.save(root / "val" / f"{VAL}_bbox.npy", boxes(VAL_BOXES, V2))
    return root


def direct_window(td, t_label, window_us=50_000):
    """The window sliced from the whole recording, as RVT does."""
    ev = read_events(td)
    ev["t"] = np.maximum.accumulate(ev["t"])
    lo = np.searchsorted(ev["t"], t_label - window_us, side="left")
    hi = np.searchsorted(ev["t"], t_label, side="right")
    return ev[lo:hi]


@pytest.mark.parametrize("encoding", EVENT_ENCODINGS)
def test_convert_every_encoding(tree, tmp_path, encoding):
    ds = convert("gen1", encoding, tree, tmp_path / "o")
    labels = [100_000, 250_000, 750_000, 1_010_000]
    assert [r["id"] for r in ds] == [f"{TRAIN}_{t}" for t in labels]
    assert [r["t_label"] for r in ds] == labels
    np.testing.assert_array_equal(ds[1]["boxes"], np.array([[0, 200, 40, 39]], np.float32))
    assert [r["box_cls"].tolist() for r in ds] == [[0], [1], [0], [1]]
    assert [r["track_id"].tolist() for r in ds] == [[1], [2], [6], [7]]
    assert ds[0]["boxes"].dtype == np.float32 and ds[0]["box_cls"].dtype == np.int8
    p = encoder("gen1", encoding)
    for rec in ds:
        assert_encoded(rec, direct_window(tree / "train" / f"{TRAIN}_td.dat", rec["t_label"]),
                       p, SIZE)
    if encoding == "stacked_histogram":
        assert read_manifest(tmp_path / "o")["encoding"]["params"]["n_bins"] == 10
        assert ds[0]["stacked_histogram"].shape == (20, 240, 304)


def test_real_events_v2_boxes_val_split(tree):
    loader = DATASETS.get("gen1")(tree, "val")
    recs = list(loader.records(loader.items()[0]))
    assert [r["t_label"] for r in recs] == [30_000, 60_000, 99_990]
    # the 280 px wide box is dropped on train only
    np.testing.assert_array_equal(recs[1]["boxes"], np.array([[10, 10, 280, 40]], np.float32))
    td = tree / "val" / f"{VAL}_td.dat"
    for r in recs:
        np.testing.assert_array_equal(r["events"], direct_window(td, r["t_label"]))
    assert len(recs[0]["events"]) > 0 and recs[0]["events"]["t"].min() == 0


def test_loader_options(tree, tmp_path):
    rc, _, err = cli("convert", "gen1", "--to", "events", "--root", tree, "--out",
                     tmp_path / "o", "--no-box-filter", "--label-window-us", "20000", "-q")
    assert rc == 0, err
    m = read_manifest(tmp_path / "o")
    assert m["loader"] == {"label_window_us": 20_000, "box_filter": False}
    loader = DATASETS.get("gen1")(tree, "train", label_window_us=20_000, box_filter=False)
    recs = list(loader.records(TRAIN))
    assert recs[1]["track_id"].tolist() == [2, 4]
    td = tree / "train" / f"{TRAIN}_td.dat"
    for r in recs:
        np.testing.assert_array_equal(r["events"], direct_window(td, r["t_label"], 20_000))
    with pytest.raises(ConfigError, match="label_window_us must be an int >= 1"):
        DATASETS.get("gen1")(tree, "train", label_window_us=0)


def test_box_filters_as_rvt():
    b = read_like(TRAIN_BOXES)
    train = filter_boxes(b, train=True)
    assert train["track_id"].tolist() == [2, 1, 6, 7]
    assert [train[f][0] for f in ("x", "y", "w", "h")] == [0, 200, 40, 39]
    assert filter_boxes(b, train=False)["track_id"].tolist() == [2, 1, 3, 6, 7]
    assert filter_boxes(b, train=True, psee_filter=False)["track_id"].tolist() == [2, 1, 4, 6, 7]
    # the diagonal test: 20 x 20 (28.3 px) fails, 22 x 21 (30.4 px) passes
    d = read_like([(0, 0, 0, 20, 20, 0, 1), (0, 0, 0, 22, 21, 0, 2)])
    assert filter_boxes(d, train=True)["track_id"].tolist() == [2]
    # 273 px wide is kept on train (RVT: w <= 9 * 304 // 10), 273.5 is not
    h = read_like([(0, 1, 1, 273, 50, 0, 1), (0, 1, 1, 273.5, 50, 0, 2)])
    assert filter_boxes(h, train=True)["track_id"].tolist() == [1]


def read_like(rows):
    """Boxes as `read_gen1_boxes` returns them (BOX_DTYPE)."""
    a = boxes(rows, V2)
    out = np.empty(len(a), BOX_DTYPE)
    for f in out.dtype.names:
        out[f] = a[f]
    return out


def test_records_read_the_recording_once(tree, monkeypatch):
    opened, pulled = [], []
    real_open = gen1_module.open_events

    def counting_open(*args, **kwargs):
        reader = real_open(*args, **kwargs)
        opened.append(args[0])
        chunks = reader.iter_chunks

        def iter_chunks(*a, **k):
            for c in chunks(*a, **k):
                pulled.append(len(c))
                yield c
        reader.iter_chunks = iter_chunks
        reader.read = reader.read_time_range = None  # never the whole file, never seeks
        return reader

    monkeypatch.setattr(gen1_module, "open_events", counting_open)
    monkeypatch.setattr(DatReader, "block_bytes", 8 * 700)  # many blocks
    loader = DATASETS.get("gen1")(tree, "train")
    recs = list(loader.records(TRAIN))
    assert len(opened) == 1 and len(pulled) > 20
    assert sum(pulled) == 20_000  # each event decoded once (the last label is past the end)
    td = tree / "train" / f"{TRAIN}_td.dat"
    for r in recs:
        np.testing.assert_array_equal(r["events"], direct_window(td, r["t_label"]))


def test_windows_stop_after_the_last_label():
    ev = train_events()
    chunks = [ev[a:a + 500].copy() for a in range(0, len(ev), 500)]
    pulled = []

    def source():
        for c in chunks:
            pulled.append(c)
            yield c

    t_labels = np.array([40, 100_000, 100_001, 300_000], np.int64)
    got = list(label_windows(source(), t_labels, 50_000))
    assert len(pulled) < len(chunks) // 2
    t = np.maximum.accumulate(ev["t"])
    for tl, w in zip(t_labels, got):
        lo, hi = np.searchsorted(t, tl - 50_000), np.searchsorted(t, tl, side="right")
        np.testing.assert_array_equal(w["t"], t[lo:hi])
        np.testing.assert_array_equal(w["x"], ev["x"][lo:hi])


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(0, 2_000), max_size=12), window=st.integers(1, 400_000),
       labels=st.lists(st.integers(-60_000, 1_100_000), min_size=1, max_size=25, unique=True))
def test_windows_equal_searchsorted_for_any_chunking(cuts, window, labels):
    """Windows from chunks of any sizes (empty ones, single events, windows spanning many
    chunks, labels before the first or after the last event) equal RVT's searchsorted on
    the whole recording."""
    ev = train_events()[:2_000]
    bounds = [0, *sorted(cuts), len(ev)]
    chunks = [ev[a:b].copy() for a, b in zip(bounds, bounds[1:])]
    t_labels = np.array(sorted(labels), np.int64)
    got = list(label_windows(iter(chunks), t_labels, window))
    assert len(got) == len(t_labels)
    t = np.maximum.accumulate(ev["t"])
    for tl, w in zip(t_labels, got):
        lo, hi = np.searchsorted(t, tl - window), np.searchsorted(t, tl, side="right")
        np.testing.assert_array_equal(w["t"], t[lo:hi])
        np.testing.assert_array_equal(w[["x", "y", "p"]], ev[["x", "y", "p"]][lo:hi])


def test_bad_inputs(tree, tmp_path):
    root = tmp_path / "g"
    shutil.copytree(tree, root)
    bad = boxes([(100_000, 10, 20, 40, 30, 3, 1)], V2)
    np.save(root / "train" / f"{TRAIN}_bbox.npy", bad)
    err = cli_error("convert", "gen1", "--to", "events", "--root", root, "--out", tmp_path / "a")
    assert f"{TRAIN}_bbox.npy" in err and "class_id 3 is not 0 (car) or 1 (pedestrian)" in err
    (root / "train" / f"{TRAIN}_bbox.npy").unlink()
    shutil.copy(root / "val" / f"{VAL}_td.dat", root / "train" / "x_td.dat")
    np.save(root / "train" / "x_bbox.npy", boxes(VAL_BOXES, V1))
    rc, _, _ = cli("convert", "gen1", "--to", "events", "--root", root, "--out", tmp_path / "b",
                   "--skip-bad", "-q")
    assert rc == 0
    m = read_manifest(tmp_path / "b")
    assert [s["id"] for s in m["skipped"]] == [TRAIN]
    assert "file not found" in m["skipped"][0]["error"]
    assert m["total_samples"] == 2  # x: the 280 px box is dropped on train
    shutil.rmtree(root / "val")
    with pytest.raises(DatasetError, match="split folder val/ not found"):
        DATASETS.get("gen1")(root, "val").items()
    with pytest.raises(FormatError):
        list(DATASETS.get("gen1")(root, "train").records(TRAIN))
