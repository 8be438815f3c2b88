import warnings

import numpy as np
import pytest
from expelliarmus import Wizard
from hypothesis import given, settings
from hypothesis import strategies as st

from evpipe.errors import ConfigError, FormatError
from evpipe.events import EVENT_DTYPE, make_events
from evpipe.io import EvpipeWarning, detect_format, open_events, read_events, write_events

NCARS = "prophesee_dat/NCARS_obj_004397_td.dat"
TONIC = "prophesee_dat/tonic_sample_ncars.dat"


def test_ncars_sample_values(data_dir):
    with open_events(data_dir / NCARS) as r:
        assert r.format == "dat" and r.metadata["event_type"] == "Event2d"
        assert r.metadata["type_name"] == "N9Chronocam7Event2dE"
        assert "assumed 304x240" in r.metadata["geometry"] and r.sensor_size == (304, 240)
        ev = r.read()
    assert ev.dtype == EVENT_DTYPE and len(ev) == 4407
    assert (ev["t"].min(), ev["t"].max()) == (0, 99937)
    assert (ev["x"].min(), ev["x"].max(), ev["y"].min(), ev["y"].max()) == (0, 53, 1, 60)
    assert (ev["p"] == 0).sum() == 2736 and (ev["p"] == 1).sum() == 1671
    assert (np.diff(ev["t"]) >= 0).all()
    other = read_events(data_dir / TONIC)
    assert len(other) == 2009 and other["t"].max() == 99952
    assert (other["x"].max(), other["y"].max()) == (77, 41)


def test_equals_expelliarmus(data_dir):
    ref = np.load(data_dir / "prophesee_dat" / "NCARS_obj_004397_td.expelliarmus_decoded.npy")
    ev = read_events(data_dir / NCARS)
    for f in ref.dtype.names:
        np.testing.assert_array_equal(ev[f].astype(np.int64), ref[f].astype(np.int64))
    for name in (NCARS, TONIC):
        live = Wizard(encoding="dat").read(data_dir / name)
        ev = read_events(data_dir / name)
        for f in "txyp":
            np.testing.assert_array_equal(ev[f].astype(np.int64), live[f].astype(np.int64))


def test_detection(data_dir, tmp_path):
    assert detect_format(data_dir / NCARS) == "dat"
    legacy = tmp_path / "legacy.dat"  # no header at all: type 0 / size 8 assumed
    body = (data_dir / NCARS).read_bytes()
    legacy.write_bytes(body[body.index(b"\n% Date") + 1:].split(b"\n", 1)[1][2:])
    assert detect_format(legacy) == "dat"
    np.testing.assert_array_equal(read_events(legacy), read_events(data_dir / NCARS))
    (tmp_path / "x.xyz").write_bytes(b"\0" * 9)
    with pytest.raises(FormatError, match="unknown event format"):
        detect_format(tmp_path / "x.xyz")


def test_chunks_concatenate_to_read(data_dir):
    with open_events(data_dir / NCARS) as r:
        r.block_bytes = 8 * 97  # blocks split the file into many decoder calls
        whole = r.read()
        by_count = list(r.iter_chunks(n_events=1000))
        by_time = list(r.iter_chunks(dt_us=10_000))
        blocks = list(r.iter_chunks())
    assert [len(c) for c in by_count] == [1000] * 4 + [407]
    np.testing.assert_array_equal(np.concatenate(by_count), whole)
    np.testing.assert_array_equal(np.concatenate(by_time), whole)
    assert len(blocks) == 46 and max(len(b) for b in blocks) == 97
    assert len(by_time) == 10
    for k, c in enumerate(by_time):
        assert ((c["t"] >= k * 10_000) & (c["t"] < (k + 1) * 10_000)).all()
    with open_events(data_dir / NCARS) as r:
        part = r.read_time_range(5000, 7000)
    assert len(part) > 0
    np.testing.assert_array_equal(part, whole[(whole["t"] >= 5000) & (whole["t"] < 7000)])


def test_time_chunks_with_gaps_and_late_events(tmp_path):
    ev = make_events([100, 105, 350, 340, 1000], [1, 2, 3, 4, 5], [0] * 5, [1, 0, 1, 0, 1])
    write_events(tmp_path / "g.dat", ev, "dat", (10, 10))
    with open_events(tmp_path / "g.dat") as r:
        chunks = list(r.iter_chunks(dt_us=100))
    # windows [100,200) [200,300) [300,400) ... [1000,1100); 340 arrives late but in window 2.
    assert [c["t"].tolist() for c in chunks] == [[100, 105], [], [350, 340], [], [], [], [], [],
                                                 [], [1000]]
    with pytest.raises(ConfigError):
        next(open_events(tmp_path / "g.dat").iter_chunks(n_events=0))


def test_header_geometry_and_writer(tmp_path):
    ev = make_events([2**32 - 7, 2**32 - 2, 2**32 + 3, 2**32 + 9], [0, 639, 5, 6], [0, 479, 7, 8],
                     [0, 1, 1, 0])  # crosses a 32-bit wrap
    write_events(tmp_path / "a.dat", ev, "dat", (640, 480))
    with open_events(tmp_path / "a.dat") as r:
        assert r.sensor_size == (640, 480) and r.metadata["geometry"] == "header"
        np.testing.assert_array_equal(r.read(), ev)
    with pytest.raises(ConfigError, match="2\\^31"):
        write_events(tmp_path / "b.dat", make_events([0, 2**31], [0, 0], [0, 0], [0, 0]),
                     "dat", (10, 10))
    with pytest.raises(ConfigError, match="sensor size"):
        write_events(tmp_path / "c.dat", ev, "dat", (10, 10))
    assert not (tmp_path / "b.dat").exists() and not list(tmp_path.glob("*.tmp"))


events_strategy = st.integers(0, 60).flatmap(lambda n: st.tuples(
    st.integers(-(2**40), 2**40),
    st.lists(st.integers(0, 2**30), min_size=n, max_size=n),
    st.lists(st.integers(0, 639), min_size=n, max_size=n),
    st.lists(st.integers(0, 479), min_size=n, max_size=n),
    st.lists(st.integers(0, 1), min_size=n, max_size=n)))


@settings(max_examples=80, deadline=None)
@given(events_strategy, st.integers(1, 7))
def test_write_read_round_trip(tmp_path_factory, spec, runs):
    start, gaps, x, y, p = spec
    ev = make_events(start + np.cumsum(gaps, dtype=np.int64), x, y, p)
    path = tmp_path_factory.mktemp("rt") / "x.dat"
    write_events(path, ev, "dat", (640, 480))
    with open_events(path) as r:
        r.parallel_runs = runs  # read() in several runs whose 32-bit wraps are chained
        back = r.read()
        chunks = list(r.iter_chunks(n_events=7))
    assert back.dtype == EVENT_DTYPE
    np.testing.assert_array_equal(back, ev)
    if len(ev):
        np.testing.assert_array_equal(np.concatenate(chunks), ev)


def test_bad_headers(tmp_path):
    p = tmp_path / "bad.dat"
    p.write_bytes(b"% Data file containing EventCD events.\n% Version 2\n" + bytes([12, 16]) + b"\0" * 32)
    with pytest.raises(FormatError, match="event size 16") as e:
        read_events(p)
    assert e.value.offset == 52
    p.write_bytes(b"% Data file containing EventCD events.\n" + bytes([14, 8]) + b"\0" * 16)
    with pytest.raises(FormatError, match="event type 14"):
        read_events(p)
    p.write_bytes(b"% Data file containing EventCD events.\n")
    with pytest.raises(FormatError, match="type/size"):
        read_events(p)
    p.write_bytes(b"% " + b"x" * (2 << 20))
    with pytest.raises(FormatError, match="header longer than"):
        read_events(p)


def test_truncated_tail_warns(data_dir, tmp_path):
    data = (data_dir / NCARS).read_bytes()
    p = tmp_path / "t.dat"
    p.write_bytes(data[:-3])
    with pytest.warns(EvpipeWarning, match="5 trailing bytes") as w:
        ev = read_events(p)
    assert len(ev) == 4406 and str(p) in str(w[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_events(data_dir / NCARS)) == 4407
