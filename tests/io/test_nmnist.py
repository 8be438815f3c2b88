import warnings

import numpy as np
import pytest
import tonic

from evpipe.events import EVENT_DTYPE
from evpipe.io import EvpipeWarning, detect_format, open_events, read_events

SAMPLE = "nmnist_bin/tonic_sample_nmnist.bin"


def encode(x, y, p, t) -> bytes:
    """N-MNIST records (formats.md §8) from equally long sequences."""
    x, y, p, t = (np.asarray(v, np.int64) for v in (x, y, p, t))
    rec = np.stack([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF], axis=1)
    return rec.astype(np.uint8).tobytes()


def test_sample_values(data_dir):
    with open_events(data_dir / SAMPLE) as r:
        assert r.format == "nmnist" and r.sensor_size == (34, 34)
        assert "assumed 34x34" in r.metadata["geometry"]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ev = r.read()
    assert ev.dtype == EVENT_DTYPE and len(ev) == 4325
    assert (ev["x"].min(), ev["x"].max(), ev["y"].min(), ev["y"].max()) == (0, 33, 0, 33)
    assert (ev["t"].min(), ev["t"].max()) == (654, 311175)
    assert (ev["p"] == 1).sum() == 2145 and set(np.unique(ev["p"])) == {0, 1}
    assert (np.diff(ev["t"]) >= 0).all()


def test_equals_tonic(data_dir):
    ref = tonic.io.read_mnist_file(str(data_dir / SAMPLE), dtype=tonic.datasets.NMNIST.dtype)
    ev = read_events(data_dir / SAMPLE)
    for f in "txyp":  # tonic: int64 fields, p = bit 7 of byte 2 (1 = ON) like evpipe
        np.testing.assert_array_equal(ev[f].astype(np.int64), ref[f])


def test_overflow_markers_match_tonic(tmp_path):
    t = [10, 20, 30, 5, 15, 25, 8388607]
    y = [1, 240, 2, 240, 240, 3, 4]  # three markers; the last event has the largest 23-bit t
    path = tmp_path / "ovf.bin"
    path.write_bytes(encode([1, 9, 2, 9, 9, 3, 33], y, [1, 0, 0, 1, 1, 1, 0], t))
    with pytest.warns(EvpipeWarning, match="3 overflow markers"):
        ev = read_events(path)
    assert ev["t"].tolist() == [10, 30 + 8192, 25 + 3 * 8192, 8388607 + 3 * 8192]
    assert ev["y"].tolist() == [1, 2, 3, 4] and ev["p"].tolist() == [1, 0, 1, 0]
    ref = tonic.io.read_mnist_file(str(path), dtype=tonic.datasets.NMNIST.dtype)
    for f in "txyp":
        np.testing.assert_array_equal(ev[f].astype(np.int64), ref[f])
    with open_events(path) as r:  # the offset carries across decoder blocks
        r.block_bytes = 5 * 2
        with pytest.warns(EvpipeWarning):
            np.testing.assert_array_equal(np.concatenate(list(r.iter_chunks())), ev)


def test_chunks_concatenate_to_read(data_dir):
    with open_events(data_dir / SAMPLE) as r:
        r.block_bytes = 5 * 97 + 3  # rounded down to whole records
        whole = r.read()
        blocks = list(r.iter_chunks())
        by_count = list(r.iter_chunks(n_events=1000))
        by_time = list(r.iter_chunks(dt_us=50_000))
        part = r.read_time_range(100_000, 200_000)
    assert max(len(b) for b in blocks) == 97 and len(blocks) == -(-4325 // 97)
    assert [len(c) for c in by_count] == [1000] * 4 + [325]
    for chunks in (blocks, by_count, by_time):
        np.testing.assert_array_equal(np.concatenate(chunks), whole)
    assert len(by_time) == 7
    np.testing.assert_array_equal(
        part, whole[(whole["t"] >= 100_000) & (whole["t"] < 200_000)])


def test_detection_and_geometry_override(data_dir, tmp_path):
    assert detect_format(data_dir / SAMPLE) == "nmnist"
    path = tmp_path / "caltech.bin"
    path.write_bytes(encode([0, 200], [0, 150], [0, 1], [1, 2]))
    with pytest.warns(EvpipeWarning, match="x=200, y=150, outside the sensor size 34x34"):
        read_events(path)
    with open_events(path, sensor_size=(240, 180)) as r:
        assert r.sensor_size == (240, 180) and r.metadata["geometry"] == "given"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert r.read()["x"].tolist() == [0, 200]


@pytest.mark.parametrize("cut", [1, 2, 3, 4])
def test_truncated_tail_warns(data_dir, tmp_path, cut):
    data = (data_dir / SAMPLE).read_bytes()
    path = tmp_path / "t.bin"
    path.write_bytes(data[:-cut])
    with pytest.warns(EvpipeWarning, match=f"{5 - cut} trailing bytes") as w:
        ev = read_events(path)
    assert len(ev) == 4324 and f"offset {len(data) - 5}" in str(w[0].message)
    np.testing.assert_array_equal(ev, read_events(data_dir / SAMPLE)[:4324])


def test_empty_and_tiny_files(tmp_path):
    path = tmp_path / "e.bin"
    path.write_bytes(b"")
    assert len(read_events(path)) == 0
    path.write_bytes(b"\x01\x02")
    with pytest.warns(EvpipeWarning, match="2 trailing bytes"):
        assert len(read_events(path)) == 0


def test_hostile_bytes_never_crash(data_dir, tmp_path):
    """Any byte string decodes (every 5 bytes are a record); flips only change values."""
    rng = np.random.default_rng(0)
    data = np.frombuffer((data_dir / SAMPLE).read_bytes(), np.uint8).copy()
    path = tmp_path / "h.bin"
    for trial in range(20):
        bad = data.copy()
        pos = rng.integers(0, len(bad), 50)
        bad[pos] = rng.integers(0, 256, 50)
        blob = bad.tobytes() if trial % 2 else rng.bytes(int(rng.integers(0, 3000)))
        path.write_bytes(blob)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EvpipeWarning)
            ev = read_events(path)
        raw = np.frombuffer(blob[:len(blob) // 5 * 5], np.uint8).reshape(-1, 5)
        assert len(ev) == (raw[:, 1] != 240).sum()
        assert (ev["t"] >= 0).all() and ev["p"].min(initial=0) >= 0 and ev["p"].max(initial=0) <= 1
