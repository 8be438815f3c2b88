import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evpipe.errors import FormatError
from evpipe.events import EVENT_DTYPE, make_events
from evpipe.io import detect_format, open_events, read_events, write_events
from evpipe.io.h5events import FORMAT, MIN_INDEX_BINS, time_index

I64 = (-(2**63), 2**63 - 1)


def random_events(n, seed=0, t_max=10**7, sort=True):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, t_max, n)
    return make_events(np.sort(t) if sort else t, rng.integers(0, 640, n),
                       rng.integers(0, 480, n), rng.integers(0, 2, n))


def test_layout_readable_with_plain_h5py(tmp_path):
    ev = random_events(1000)
    path = tmp_path / "a.h5"
    write_events(path, ev, "h5", (640, 480))
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == FORMAT and f.attrs["version"] == 1
        assert (f.attrs["width"], f.attrs["height"], f.attrs["n_events"]) == (640, 480, 1000)
        assert f.attrs["index_dt_us"] == 1000 and bool(f.attrs["monotonic"])
        for name in "txyp":
            assert f[f"events/{name}"].dtype == EVENT_DTYPE[name]
            plist = f[f"events/{name}"].id.get_create_plist()
            assert plist.get_filter(0)[0] == 32001  # Blosc (hdf5plugin)
            np.testing.assert_array_equal(f[f"events/{name}"][:], ev[name])
        idx = f["index/t_to_idx"][:]
    t0 = ev["t"][0]  # Prophesee ms_to_idx: first event with t >= t0 + k ms
    for k in (0, 1, 17, len(idx) - 2):
        assert idx[k] == np.searchsorted(ev["t"], t0 + 1000 * k)
    assert idx[-1] == 1000
    with open_events(path) as r:
        assert r.format == "h5" and r.sensor_size == (640, 480) and r.metadata["monotonic"]


def test_detection(tmp_path):
    path = tmp_path / "noext"
    write_events(path, random_events(5), "h5", (640, 480))
    assert detect_format(path) == "h5"
    np.testing.assert_array_equal(read_events(path), random_events(5))


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single(tmp_path, n):
    ev = make_events([-(2**40)] * n, [3] * n, [4] * n, [1] * n)
    write_events(tmp_path / "e.h5", ev, "h5", (10, 10))
    with open_events(tmp_path / "e.h5") as r:
        back = r.read()
        assert back.dtype == EVENT_DTYPE and len(back) == n
        np.testing.assert_array_equal(back, ev)
        assert [len(c) for c in r.iter_chunks()] == [n] * n
        assert len(r.read_time_range(*I64)) == n


def test_chunks_and_time_range_seek(tmp_path):
    ev = random_events(300_000, t_max=3 * 10**7)
    path = tmp_path / "big.h5"
    write_events(path, ev, "h5", (640, 480))
    with open_events(path) as r:
        r.block_events = 100_000  # rounded to whole HDF5 chunks (65 536 events)
        blocks = list(r.iter_chunks())
        by_time = list(r.iter_chunks(dt_us=1_000_000))
        read = r._field
        fetched = []
        r._field = lambda name, a, b: fetched.append((a, b)) or read(name, a, b)
        part = r.read_time_range(12_345_678, 12_400_000)
    first, last = np.searchsorted(ev["t"], [12_345_678, 12_400_000])
    assert [len(b) for b in blocks] == [65536] * 4 + [300_000 - 4 * 65536]
    np.testing.assert_array_equal(np.concatenate(blocks), ev)
    np.testing.assert_array_equal(np.concatenate(by_time), ev)
    np.testing.assert_array_equal(
        part, ev[(ev["t"] >= 12_345_678) & (ev["t"] < 12_400_000)])
    assert len(part) == last - first > 100
    # Reads stay within the 1 ms bins around the range (~10 events per ms here).
    assert first - 30 <= min(a for a, _ in fetched) and max(b for _, b in fetched) <= last + 30


def test_time_range_edges(tmp_path):
    ev = make_events([5, 5, 1000, 1999, 2000, 2000, 7001], range(7), [0] * 7, [1] * 7)
    write_events(tmp_path / "e.h5", ev, "h5", (10, 10))
    with open_events(tmp_path / "e.h5") as r:
        for lo, hi in [(0, 5), (5, 6), (5, 2000), (1000, 2001), (2000, 2000), (3000, 7000),
                       (7001, 7002), (-10, 10**6), (8000, 9000), (I64[0], I64[1]), (10, 0)]:
            np.testing.assert_array_equal(r.read_time_range(lo, hi),
                                          ev[(ev["t"] >= lo) & (ev["t"] < hi)])


def test_non_monotonic_time_range(tmp_path):
    ev = random_events(50_000, seed=3, sort=False)
    path = tmp_path / "u.h5"
    write_events(path, ev, "h5", (640, 480))
    with open_events(path) as r:
        assert not r.metadata["monotonic"]
        for lo, hi in [(0, 10**5), (4 * 10**6, 4_000_500), (9_999_000, 10**7)]:
            np.testing.assert_array_equal(r.read_time_range(lo, hi),
                                          ev[(ev["t"] >= lo) & (ev["t"] < hi)])


def test_index_size_is_bounded():
    t = np.array([I64[0], 0, I64[1]], np.int64)
    t0, dt, idx = time_index(t)
    assert t0 == I64[0] and len(idx) <= MIN_INDEX_BINS + 1 and dt > 1000
    assert idx[0] == 0 and idx[-1] == 3 and (np.diff(idx) >= 0).all()


events_strategy = st.integers(0, 40).flatmap(lambda n: st.tuples(
    st.lists(st.integers(*I64), min_size=n, max_size=n),
    st.lists(st.integers(0, 639), min_size=n, max_size=n),
    st.lists(st.integers(0, 479), min_size=n, max_size=n),
    st.lists(st.integers(0, 1), min_size=n, max_size=n),
    st.booleans()))


@settings(max_examples=60, deadline=None)
@given(events_strategy, st.integers(*I64), st.integers(0, 2**40))
def test_write_read_round_trip(tmp_path_factory, spec, lo, width):
    t, x, y, p, sort = spec
    ev = make_events(np.sort(np.array(t, np.int64)) if sort else t, x, y, p)
    path = tmp_path_factory.mktemp("rt") / "x.h5"
    write_events(path, ev, "h5", (640, 480))
    with open_events(path) as r:
        back = r.read()
        hi = min(lo + width, I64[1])
        part = r.read_time_range(lo, hi)
    assert back.dtype == EVENT_DTYPE
    np.testing.assert_array_equal(back, ev)
    np.testing.assert_array_equal(part, ev[(ev["t"] >= lo) & (ev["t"] < hi)])


def test_rejects_other_hdf5(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["events/t"] = np.arange(3)
        f.attrs["format"] = "evpipe-shard"
    assert detect_format(path) == "h5"
    with pytest.raises(FormatError, match="not an evpipe event file.*'evpipe-shard'") as e:
        read_events(path)
    assert e.value.path == str(path)
    with h5py.File(path, "w") as f:
        f["x"] = 1
    with pytest.raises(FormatError, match="format' is None"):
        read_events(path)


def test_rejects_broken_files(tmp_path):
    good = tmp_path / "g.h5"
    write_events(good, random_events(100), "h5", (640, 480))
    path = tmp_path / "b.h5"
    cases = [
        (lambda f: f.attrs.__setitem__("version", 2), "version 2"),
        (lambda f: f.attrs.__setitem__("width", 0), "geometry"),
        (lambda f: f.attrs.__delitem__("n_events"), "'n_events' missing"),
        (lambda f: f.attrs.__setitem__("n_events", 10**15), "does not fit"),
        (lambda f: f.__delitem__("events/y"), "/events/y is missing"),
        (lambda f: f.__delitem__("index/t_to_idx"), "t_to_idx"),
        (lambda f: f.attrs.__setitem__("index_dt_us", 0), "index_dt_us 0"),
    ]
    for edit, message in cases:
        path.write_bytes(good.read_bytes())
        with h5py.File(path, "r+") as f:
            edit(f)
        with pytest.raises(FormatError, match=message):
            read_events(path)
    path.write_bytes(good.read_bytes())
    with h5py.File(path, "r+") as f:
        del f["events/x"]
        f["events/x"] = np.arange(100, dtype=np.int32)
    with pytest.raises(FormatError, match="/events/x is int32"):
        read_events(path)
    with h5py.File(path, "r+") as f:
        del f["events/x"]
        f["events/x"] = np.full(100, 700, np.uint16)
    with pytest.raises(FormatError, match="event 0 .*x=700.*640x480"):
        read_events(path)


def test_corrupt_bytes_raise_format_error(tmp_path):
    good = tmp_path / "g.h5"
    write_events(good, random_events(20_000), "h5", (640, 480))
    data = good.read_bytes()
    path = tmp_path / "c.h5"
    for cut in (0, 7, 100, 2000, len(data) // 2, len(data) - 10):
        path.write_bytes(data[:cut])
        with pytest.raises(FormatError):
            read_events(path)
    rng = np.random.default_rng(1)
    for _ in range(30):
        bad = np.frombuffer(data, np.uint8).copy()
        pos = rng.integers(0, len(bad), 20)
        bad[pos] ^= rng.integers(1, 256, 20).astype(np.uint8)
        path.write_bytes(bad.tobytes())
        try:
            ev = read_events(path)
        except FormatError:
            continue
        assert ev.dtype == EVENT_DTYPE and len(ev) == 20_000
