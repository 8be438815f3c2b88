"""Prophesee RAW EVT 2.0 / EVT 3.0: real files (PROVENANCE.md numbers, golden digests,
faery and expelliarmus), decoder semantics on hand-built word streams, block/chunk
invariance, writer round trips and hostile input."""

from __future__ import annotations

import hashlib
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evpipe.errors import ConfigError, EvpipeError, FormatError
from evpipe.events import EVENT_DTYPE, SensorSize, make_events
from evpipe.io import EvpipeWarning, detect_format, open_events, read_events, write_events

pytestmark = pytest.mark.filterwarnings("error::evpipe.io.EvpipeWarning")  # unless expected

# (path, format, events, t min, t max, x range, y range, ON events, sensor, golden digests)
REAL = {
    "evt2_sample": ("prophesee_evt2/evt2_sample.raw", "evt2", 539481, 1317888, 1367888,
                    (60, 599), (18, 475), 367855, (640, 480),
                    {"t": "64fec5ce1b270d80", "x": "02dc735a94fdf0bd",
                     "y": "f6e0390bc6cb7a40", "p": "47f9cd2ed9562c78"}),
    "evt2_sparklers": ("prophesee_evt2/evt2_sparklers_old.raw", "evt2", 521252, 913716224,
                       913812095, (0, 639), (0, 479), 185861, (640, 480),
                       {"t": "ecac3caf317a6737", "x": "dde6627c570eeaf1",
                        "y": "4af0861c7c00428b", "p": "04394c7572ccb8f5"}),
    "evt3_sample": ("prophesee_evt3/evt3_sample.raw", "evt3", 219596, 11718656, 11727457,
                    (0, 1279), (0, 719), 115532, (1280, 720),
                    {"t": "41a62d1aeed53a5b", "x": "1014ebcc18dcc912",
                     "y": "81f935a5e5fb7398", "p": "a8c5419384b9b052"}),
    "evt3_pedestrians": ("prophesee_evt3/evt3_pedestrians_small.raw", "evt3", 5000, 5840504,
                         5885714, (11, 1279), (22, 698), 2894, (1280, 720),
                         {"t": "39da2eeeb1ecb285", "x": "44ce7eb86cd10829",
                          "y": "0b70c386de65eda5", "p": "09ba9f6814f2bf38"}),
}


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


@pytest.fixture(scope="module")
def decoded(data_dir):
    """name -> (path, events) for every real RAW file, decoded once."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", EvpipeWarning)
        return {name: (data_dir / spec[0], read_events(data_dir / spec[0]))
                for name, spec in REAL.items()}


# -- hand-built streams --------------------------------------------------------------------

def evt2_cd(x, y, p=1, lsb=0):
    return (p << 28) | (lsb << 22) | (x << 11) | y


def evt2_th(v):
    return (0x8 << 28) | v


def evt3(kind, content):
    return (kind << 12) | content


def addr_y(y):
    return evt3(0x0, y)


def addr_x(x, p=1):
    return evt3(0x2, (p << 11) | x)


def base_x(x, p=1):
    return evt3(0x3, (p << 11) | x)


def time_high(v):
    return evt3(0x8, v)


def time_low(v):
    return evt3(0x6, v)


def raw_file(path: Path, words, version: str, geometry=(640, 480), tail=b"") -> Path:
    dtype = "<u4" if version == "2.0" else "<u2"
    fmt = "EVT2" if version == "2.0" else "EVT3"
    w, h = geometry
    header = f"% evt {version}\n% format {fmt};height={h};width={w}\n% end\n".encode()
    path.write_bytes(header + np.asarray(words, dtype).tobytes() + tail)
    return path


def faery_events(path, size=(1280, 720)) -> np.ndarray:
    faery = pytest.importorskip("faery")
    return np.concatenate(list(faery.events_stream_from_file(path, dimensions_fallback=size)))


def decode(path, **kw):
    """(events, metadata) of a whole-file read."""
    with open_events(path, **kw) as r:
        ev = r.read()
        return ev, r.metadata


# -- real files ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", REAL)
def test_real_file_matches_provenance(decoded, name):
    _, fmt, n, t0, t1, xr, yr, n_on, size, digests = REAL[name]
    path, ev = decoded[name]
    assert detect_format(path) == fmt
    with open_events(path) as r:
        assert r.format == fmt
        assert r.sensor_size == SensorSize(*size)
        assert r.metadata["geometry"].startswith("plugin_name")
    assert ev.dtype == EVENT_DTYPE
    assert len(ev) == n
    assert (ev["t"].min(), ev["t"].max()) == (t0, t1)
    assert (ev["x"].min(), ev["x"].max()) == xr
    assert (ev["y"].min(), ev["y"].max()) == yr
    assert np.count_nonzero(ev["p"] == 1) == n_on
    assert np.isin(ev["p"], (0, 1)).all()
    assert (np.diff(ev["t"]) >= 0).all()
    assert {k: _digest(ev[k]) for k in "txyp"} == digests


def test_real_metadata(decoded):
    path, _ = decoded["evt2_sparklers"]
    with open_events(path) as r:
        r.read()
        md = r.metadata
    assert md["encoding"] == "EVT 2.0"
    assert md["fields"]["plugin_name"] == "hal_plugin_gen3_fx3"
    assert md["fields"]["system_ID"] == "21"
    assert (md["dropped_events"], md["unknown_words"], md["words_before_time_high"]) == (0, 0, 0)
    assert np.count_nonzero(decoded["evt2_sparklers"][1]["p"] == 0) == 335391


@pytest.mark.parametrize("name", ["evt2_sample", "evt2_sparklers", "evt3_pedestrians"])
def test_equals_faery(decoded, name):
    path, ev = decoded[name]
    ref = faery_events(path, REAL[name][8])
    assert len(ref) == len(ev)
    assert (ref["t"].astype(np.int64) == ev["t"]).all()
    assert (ref["x"] == ev["x"]).all() and (ref["y"] == ev["y"]).all()
    assert (ref["on"] == (ev["p"] == 1)).all()


def test_evt3_sample_differs_from_faery_only_by_time_low_clamping(decoded):
    """faery clamps non-monotonic TIME_LOW words; OpenEB (and evpipe) keep the raw value:
    1455 events come out 1..11 us earlier than faery's, x/y/p equal (formats.md 4)."""
    path, ev = decoded["evt3_sample"]
    ref = faery_events(path)
    assert len(ref) == len(ev)
    assert (ref["x"] == ev["x"]).all() and (ref["y"] == ev["y"]).all()
    assert (ref["on"] == (ev["p"] == 1)).all()
    d = ref["t"].astype(np.int64) - ev["t"]
    assert np.count_nonzero(d) == 1455
    assert d[d != 0].min() == 1 and d.max() == 11 and d.min() == 0


@pytest.mark.parametrize("name", list(REAL))
def test_expelliarmus(decoded, name):
    """EVT2: all fields equal. EVT3: x/y/p equal; expelliarmus' t double-counts TIME_HIGH
    changes, so it is ahead by multiples of 4096 us (formats.md 4, pitfall 1)."""
    expelliarmus = pytest.importorskip("expelliarmus")
    path, ev = decoded[name]
    ref = expelliarmus.Wizard(encoding=REAL[name][1], fpath=path).read()
    assert len(ref) == len(ev)
    for k in "xyp":
        assert (ref[k].astype(np.int64) == ev[k]).all()
    d = ref["t"] - ev["t"]
    if REAL[name][1] == "evt2":
        assert (d == 0).all()
    else:
        assert (d % 4096 == 0).all() and (d >= 0).all() and d.max() > 0


@pytest.mark.parametrize("name", list(REAL))
def test_chunks_concatenate_to_read(decoded, name):
    path, ev = decoded[name]
    with open_events(path) as r:
        for chunks in (list(r.iter_chunks()), list(r.iter_chunks(n_events=7919)),
                       list(r.iter_chunks(dt_us=997))):
            assert (np.concatenate(chunks) == ev).all()
        by_count = list(r.iter_chunks(n_events=7919))
        assert all(len(c) == 7919 for c in by_count[:-1])
        t0 = ev["t"][0]
        for i, c in enumerate(r.iter_chunks(dt_us=997)):
            assert ((c["t"] - t0) // 997 == i).all()


@pytest.mark.parametrize("name,size,block_bytes,block_events", [
    ("evt2_sparklers", 80000, 4, 1), ("evt2_sparklers", None, 4096, 7),
    ("evt2_sample", None, 1 << 16, 1000), ("evt3_pedestrians", None, 2, 1),
    ("evt3_pedestrians", None, 6, 13), ("evt3_sample", 120000, 6, 12),
    ("evt3_sample", None, 4094, 25), ("evt3_sample", None, 1 << 16, 5000)])
def test_small_blocks_give_identical_events(tmp_path, decoded, name, size, block_bytes,
                                            block_events):
    """Decoder state (TIME_HIGH, row, vector base, polarity) carries across blocks that
    split vector sequences; output blocks stay within block_events (12 for EVT3 vectors).
    `size` cuts the file (at a word boundary) to keep one-word blocks quick."""
    path, ev = decoded[name]
    if size is not None:
        with open_events(path) as r:
            size -= (size - r.data_offset) % (4 if r.format == "evt2" else 2)
        raw = path.read_bytes()
        path = tmp_path / "cut.raw"
        path.write_bytes(raw[:size])
        ev = read_events(path)
        assert len(ev) > 1000
    with open_events(path) as r:
        r.block_bytes, r.block_events = block_bytes, block_events
        chunks = list(r.iter_chunks())
        assert max(len(c) for c in chunks) <= max(block_events, 12)
        assert (np.concatenate(chunks) == ev).all()
        assert (r.read() == ev).all()


def test_read_time_range(decoded):
    path, ev = decoded["evt3_sample"]
    with open_events(path) as r:
        part = r.read_time_range(11720000, 11721000)
    assert (part == ev[(ev["t"] >= 11720000) & (ev["t"] < 11721000)]).all() and len(part)


# -- header, detection, geometry -----------------------------------------------------------

@pytest.mark.parametrize("lines,fmt", [
    (["evt 2.0"], "evt2"), (["evt 3.0"], "evt3"), (["format EVT2"], "evt2"),
    (["format EVT3;height=720;width=1280"], "evt3"), (["system_ID 48"], "evt3"),
    (["system_ID 21"], "evt2"), (["plugin_name hal_plugin_gen3_fx3"], "evt2")])
def test_detection(tmp_path, lines, fmt):
    path = tmp_path / "x.raw"
    path.write_bytes("".join(f"% {line}\n" for line in lines).encode() + b"% end\n")
    assert detect_format(path) == fmt


def test_dat_files_stay_dat(data_dir):
    for path in sorted((data_dir / "prophesee_dat").glob("*.dat")):
        assert detect_format(path) == "dat"


def test_evt21_is_not_evt2(tmp_path):
    path = tmp_path / "x.raw"
    path.write_bytes(b"% evt 2.1\n% format EVT21;height=720;width=1280\n% end\n")
    with pytest.raises(FormatError, match="EVT 2.1"):
        open_events(path, "evt2")
    with pytest.raises(FormatError):
        open_events(path, "evt3")


@pytest.mark.parametrize("lines,size,source", [
    (["evt 3.0", "geometry 320x320"], (320, 320), "header geometry"),
    (["format EVT3;height=720;width=1280"], (1280, 720), "header format"),
    (["evt 2.0", "plugin_name hal_plugin_gen41_evk3"], (1280, 720), "plugin_name"),
    (["evt 2.0", "plugin_name hal_plugin_imx636_evk4"], (1280, 720), "plugin_name"),
    (["evt 2.0", "plugin_name hal_plugin_gen31_fx3"], (640, 480), "plugin_name"),
    (["evt 2.0", "system_ID 39"], (1280, 720), "system_ID"),
    (["evt 2.0", "system_ID 28"], (640, 480), "system_ID"),
    (["evt 2.0", "plugin_name some_new_camera"], (1280, 720), "assumed 1280x720")])
def test_geometry(tmp_path, lines, size, source):
    path = tmp_path / "x.raw"
    path.write_bytes("".join(f"% {line}\n" for line in lines).encode())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_events(path, detect_format(path)) as r:
            assert r.sensor_size == size
            assert r.metadata["geometry"].startswith(source)
            assert len(r.read()) == 0


@pytest.mark.parametrize("line", ["geometry 640by480", "geometry 0x480",
                                  "format EVT2;height=480;width=x", "evpipe_time_base_us 1.5",
                                  "evpipe_time_base_us 99999999999999999999"])
def test_bad_header_values(tmp_path, line):
    path = tmp_path / "x.raw"
    path.write_bytes(f"% evt 2.0\n% {line}\n% end\n".encode())
    with pytest.raises(FormatError):
        open_events(path, "evt2")


def test_end_line_lets_data_start_with_percent(tmp_path):
    """A first data word whose bytes are '% ' is data after '% end' (formats.md 2)."""
    word = int.from_bytes(b"% \x00\x80", "little")  # TIME_HIGH with '% ' as low bytes
    path = raw_file(tmp_path / "x.raw", [word, evt2_cd(3, 4, 1, 5)], "2.0")
    ev, _ = decode(path)
    assert ev.tolist() == [(((word & 0xFFFFFFF) << 6) + 5, 3, 4, 1)]


def test_sensor_size_override_drops_outside(tmp_path):
    path = raw_file(tmp_path / "x.raw", [evt2_th(0), evt2_cd(10, 5), evt2_cd(100, 5)], "2.0")
    with pytest.warns(EvpipeWarning, match="1 events outside the 50x50"):
        ev, md = decode(path, sensor_size=(50, 50))
    assert ev["x"].tolist() == [10] and md["dropped_events"] == 1


# -- EVT 2.0 semantics ---------------------------------------------------------------------

def test_evt2_words(tmp_path):
    words = [evt2_cd(1, 1), 0xA << 28, evt2_th(10),           # CD and trigger before TIME_HIGH
             evt2_cd(5, 6, 0, 7), evt2_cd(7, 8, 1, 63),
             (0xA << 28) | 1, 0xD << 28, 0xF << 28, 0xE << 28,   # skipped types
             evt2_th(9), evt2_cd(1, 2, 1, 3)]                    # small step back: no loop
    ev, md = decode(raw_file(tmp_path / "x.raw", words, "2.0"))
    assert ev.tolist() == [(10 * 64 + 7, 5, 6, 0), (10 * 64 + 63, 7, 8, 1), (9 * 64 + 3, 1, 2, 1)]
    assert md["words_before_time_high"] == 2
    assert (md["dropped_events"], md["unknown_words"]) == (0, 0)


def test_evt2_time_loop(tmp_path):
    """OpenEB: a TIME_HIGH lower than the base by >= MaxTimestamp - 10000 us adds 2^34."""
    top = (1 << 28) - 1
    words = [evt2_th(top), evt2_cd(1, 1, 1, 1), evt2_th(100), evt2_cd(2, 2, 1, 2),
             evt2_th(top - 200), evt2_cd(3, 3, 1, 3),   # back within the loop
             evt2_th(top), evt2_th(0), evt2_cd(4, 4, 0, 4)]
    ev, _ = decode(raw_file(tmp_path / "x.raw", words, "2.0"))
    assert ev["t"].tolist() == [(top << 6) + 1, (1 << 34) + 6402,
                                (1 << 34) + ((top - 200) << 6) + 3, (2 << 34) + 4]
    # from the top, TIME_HIGH 157 (10048 us) is a drop short of the threshold, 156 is a loop
    for value, loop in ((157, 0), (156, 1)):
        words = [evt2_th(top), evt2_th(value), evt2_cd(1, 1)]
        t = decode(raw_file(tmp_path / "y.raw", words, "2.0"))[0]["t"][0]
        assert t == (loop << 34) + (value << 6)


def test_evt2_unknown_and_outside(tmp_path):
    words = [evt2_th(1), 0x2 << 28, 0x9 << 28, evt2_cd(700, 1), evt2_cd(1, 500), evt2_cd(1, 1)]
    with pytest.warns(EvpipeWarning) as rec:
        ev, md = decode(raw_file(tmp_path / "x.raw", words, "2.0"))
    assert len(ev) == 1 and md["dropped_events"] == 2 and md["unknown_words"] == 2
    assert {str(w.message).split(": ", 1)[1] for w in rec} == {
        "2 events outside the 640x480 sensor (or without a valid row / vector base) dropped",
        "2 words of unknown type skipped"}


@pytest.mark.parametrize("version,tail", [("2.0", b"\x01\x02\x03"), ("3.0", b"\x01")])
def test_trailing_partial_word(tmp_path, version, tail):
    words = [evt2_th(1), evt2_cd(1, 1)] if version == "2.0" else [time_high(1), addr_y(1),
                                                                   addr_x(2)]
    path = raw_file(tmp_path / "x.raw", words, version, tail=tail)
    with pytest.warns(EvpipeWarning, match=f"{len(tail)} trailing bytes"):
        ev, _ = decode(path)
    assert len(ev) == 1
    with pytest.warns(EvpipeWarning, match="trailing bytes"):
        with open_events(path) as r:
            assert len(np.concatenate(list(r.iter_chunks()))) == 1


# -- EVT 3.0 semantics ---------------------------------------------------------------------

def test_evt3_words(tmp_path):
    words = [addr_y(3), addr_x(4),                            # before TIME_HIGH: skipped
             time_high(2), addr_x(1),                          # no row yet: dropped
             addr_y(5), time_low(7), addr_x(9, 0),
             base_x(100, 1), evt3(0x4, 0b100000000101), evt3(0x4, 1), evt3(0x5, 0x80),
             time_low(3),                                      # raw TIME_LOW, goes back
             addr_x(20, 1),
             time_high(2), addr_x(21),                         # same TIME_HIGH: low kept
             time_high(3), addr_x(22),                         # new TIME_HIGH: low = 0
             evt3(0xA, 0x101), evt3(0xD, 0), evt3(0x7, 0), evt3(0xF, 0),  # skipped
             evt3(0xE, 0x014), addr_x(1), addr_x(2), addr_x(3),  # ERC counter + 3 words
             evt3(0xE, 0x001), addr_x(23)]
    with pytest.warns(EvpipeWarning, match="1 events outside"):
        ev, md = decode(raw_file(tmp_path / "x.raw", words, "3.0", (1280, 720)))
    t = (2 << 12)
    assert ev.tolist() == [
        (t + 7, 9, 5, 0), (t + 7, 100, 5, 1), (t + 7, 102, 5, 1), (t + 7, 111, 5, 1),
        (t + 7, 112, 5, 1), (t + 7, 131, 5, 1), (t + 3, 20, 5, 1), (t + 3, 21, 5, 1),
        ((3 << 12), 22, 5, 1), ((3 << 12), 23, 5, 1)]
    assert md["words_before_time_high"] == 2
    assert md["dropped_events"] == 1


def test_evt3_loops(tmp_path):
    """OpenEB: loop += 1 only when TIME_HIGH drops by >= 2^11 (repeats are not loops)."""
    words = [time_high(4095), addr_y(1), addr_x(1), time_high(4095), time_high(0), addr_x(2),
             time_high(2047), time_high(1), addr_x(3),                    # drop 2046: back
             time_high(2049), time_high(1), addr_x(4)]                    # drop 2048: loop
    ev, _ = decode(raw_file(tmp_path / "x.raw", words, "3.0", (1280, 720)))
    assert ev["t"].tolist() == [4095 << 12, (1 << 24), (1 << 24) + (1 << 12),
                                (2 << 24) + (1 << 12)]


def test_evt3_invalid_rows_and_vectors(tmp_path):
    words = [time_high(1), addr_y(1), evt3(0x4, 0xFFF),          # vector before VECT_BASE_X
             base_x(1270), evt3(0x4, 0xFFF),                      # 1270..1281: 2 outside
             addr_y(800), addr_x(5), base_x(0), evt3(0x5, 0xFF),  # row outside the sensor
             addr_y(2), evt3(0x1, 0), addr_x(6),                  # type 1 clears the row
             addr_y(2 | 0x800), addr_x(7)]                        # bit 11 is not part of y
    with pytest.warns(EvpipeWarning) as rec:
        ev, md = decode(raw_file(tmp_path / "x.raw", words, "3.0", (1280, 720)))
    assert [str(w.message).split(": ", 1)[1].split(" ")[:2] for w in rec] == [
        ["24", "events"], ["1", "words"]]
    assert ev["x"].tolist() == list(range(1270, 1280)) + [7]
    assert ev["y"].tolist() == [1] * 10 + [2]
    assert md["dropped_events"] == 12 + 2 + 1 + 8 + 1 and md["unknown_words"] == 1


def test_evt3_erc_words_skipped_across_blocks(tmp_path):
    words = [time_high(1), addr_y(1), evt3(0xE, 0x016), addr_x(1), addr_x(2), addr_x(3),
             addr_x(4)]
    path = raw_file(tmp_path / "x.raw", words, "3.0", (1280, 720))
    for block_bytes in (2, 4, 6, 8, 1 << 20):
        with open_events(path) as r:
            r.block_bytes = block_bytes
            assert r.read()["x"].tolist() == [4]
            assert np.concatenate(list(r.iter_chunks()))["x"].tolist() == [4]


def test_evt3_vector_output_stays_bounded(tmp_path):
    """Every 2 words emit 12 events (6x the words): output blocks stay at block_events."""
    words = [time_high(1), addr_y(1)] + [base_x(0), evt3(0x4, 0xFFF)] * 5000
    path = raw_file(tmp_path / "x.raw", words, "3.0", (1280, 720))
    with open_events(path) as r:
        r.block_events = 100
        chunks = list(r.iter_chunks())
        assert max(len(c) for c in chunks) <= 100
        full = r.read()
    assert len(full) == 60000 and (np.concatenate(chunks) == full).all()
    assert (full["x"] == np.tile(np.arange(12), 5000)).all()


# -- writers -------------------------------------------------------------------------------

def _roundtrip(events, fmt, size):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.raw"
        write_events(path, events, fmt, size)
        assert detect_format(path) == fmt
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with open_events(path) as r:
                assert r.sensor_size == size and r.metadata["geometry"] == "header geometry"
                back = r.read()
                r.block_bytes, r.block_events = 64, 5
                chunks = list(r.iter_chunks())
    assert back.dtype == EVENT_DTYPE
    assert len(back) == len(events) and (back == events).all()
    if len(events):
        assert (np.concatenate(chunks) == events).all()


@st.composite
def event_arrays(draw, sorted_t=True, max_n=300):
    w = draw(st.integers(1, 2048))
    h = draw(st.integers(1, 2048))
    n = draw(st.integers(0, max_n))
    t0 = draw(st.integers(-(1 << 60), 1 << 60))
    if sorted_t:
        step = draw(st.sampled_from([1, 100, 1 << 12, 1 << 24, 1 << 34]))
        steps = draw(st.lists(st.integers(0, step), min_size=n, max_size=n))
        t = t0 + np.cumsum(np.array(steps, np.int64))
    else:  # anywhere within one 2^24-us loop that starts a 2^34-us one: both formats accept it
        t0 -= t0 % (1 << 34)
        t = t0 + np.array(draw(st.lists(st.integers(0, (1 << 24) - 1), min_size=n,
                                        max_size=n)), np.int64)
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    # short runs on one row make the EVT3 writer use vectors
    x = np.minimum(rng.integers(0, w, n) // 4 * 4 + np.arange(n) % 4, w - 1)
    ev = make_events(t, x, rng.integers(0, h, n) // 8, rng.integers(0, 2, n))
    return ev, SensorSize(w, h)


@pytest.mark.parametrize("fmt", ["evt2", "evt3"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=event_arrays())
def test_writer_roundtrip_sorted(fmt, data):
    _roundtrip(data[0], fmt, data[1])


@pytest.mark.parametrize("fmt", ["evt2", "evt3"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=event_arrays(sorted_t=False))
def test_writer_roundtrip_unsorted_within_a_loop(fmt, data):
    _roundtrip(data[0], fmt, data[1])


@pytest.mark.parametrize("fmt", ["evt2", "evt3"])
@pytest.mark.parametrize("t", [
    [], [0], [(1 << 34) + 5], [-7], [(1 << 62) + 3],
    [(1 << 34) - 5, (1 << 34) + 3],                  # across a loop, small gap
    [(1 << 34) - 5, (3 << 34) + 10**9],              # across loops, gaps beyond the threshold
    [5 << 34, (5 << 34) + (1 << 34) - 64, (5 << 34) + 1],  # backwards by almost a loop
    [100, 100, 100, 100, 100, 99, 4096 * 4095, 1],   # EVT3: back by > 2^11 TIME_HIGH units
])
def test_writer_roundtrip_edges(tmp_path, fmt, t):
    t = np.array(t, np.int64)
    n = len(t)
    ev = make_events(t, np.arange(n) % 640, np.arange(n) % 480, np.arange(n) % 2)
    if fmt == "evt3" and n and (np.diff((t - t.min() // (1 << 24) * (1 << 24)) >> 24) < 0).any():
        with pytest.raises(ConfigError, match="earlier 2\\^24-us time loop"):
            write_events(tmp_path / "x.raw", ev, fmt, (640, 480))
    else:
        _roundtrip(ev, fmt, SensorSize(640, 480))


def test_writer_vectors_and_headers(tmp_path):
    ev = make_events(np.full(40, 1000), np.r_[np.arange(100, 132), [5, 7, 9, 11, 13, 15, 17, 19]],
                     np.full(40, 3), np.ones(40, int))
    path = tmp_path / "v.raw"
    write_events(path, ev, "evt3", (640, 480))
    head = path.read_bytes()
    assert head.startswith(b"% evt 3.0\n% format EVT3;height=480;width=640\n% geometry 640x480\n"
                           b"% end\n")
    words = np.frombuffer(head[head.index(b"% end\n") + 6:], "<u2")
    assert (words >> 12).tolist() == [0x8, 0x6, 0x0, 0x3, 0x4, 0x4, 0x5, 0x3, 0x4, 0x4, 0x5]
    assert (read_events(path) == ev).all()
    write_events(path, make_events([(1 << 34) * 3 + 5], [1], [2], [0]), "evt2", (640, 480))
    assert b"% evpipe_time_base_us 51539607552\n% end\n" in path.read_bytes()


@pytest.mark.parametrize("fmt,period", [("evt2", 34), ("evt3", 24)])
def test_writer_refuses_going_back_a_loop(tmp_path, fmt, period):
    ev = make_events([(1 << period) + 1, (1 << period) - 1], [0, 0], [0, 0], [0, 0])
    with pytest.raises(ConfigError, match="earlier"):
        write_events(tmp_path / "x.raw", ev, fmt, (10, 10))
    ev = make_events([0, 1 << (period + 21)], [0, 0], [0, 0], [0, 0])
    with pytest.raises(ConfigError, match="time loops"):
        write_events(tmp_path / "x.raw", ev, fmt, (10, 10))
    with pytest.raises(ConfigError, match="11 bits"):
        write_events(tmp_path / "x.raw", ev[:1], fmt, (4096, 10))
    assert not (tmp_path / "x.raw").exists()


@pytest.mark.parametrize("fmt", ["evt2", "evt3"])
def test_written_files_read_by_faery_and_expelliarmus(tmp_path, fmt):
    """Independent decoders read evpipe's files the same (sorted, no time base)."""
    expelliarmus = pytest.importorskip("expelliarmus")
    rng = np.random.default_rng(3)
    groups = 4000
    sizes = rng.choice([1, 1, 2, 8, 32], groups)      # runs of 8 and 32 become vectors
    g = np.repeat(np.arange(groups), sizes)
    within = np.arange(len(g)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    x0, y0 = rng.integers(0, 1280 - 32, groups), rng.integers(0, 720, groups)
    ev = make_events(np.cumsum(rng.integers(0, 3, groups))[g], x0[g] + within, y0[g],
                     rng.integers(0, 2, groups)[g])
    path = tmp_path / "x.raw"
    write_events(path, ev, fmt, (1280, 720))
    ref = faery_events(path)
    assert (ref["t"].astype(np.int64) == ev["t"]).all() and (ref["x"] == ev["x"]).all()
    assert (ref["y"] == ev["y"]).all() and (ref["on"] == (ev["p"] == 1)).all()
    ref = expelliarmus.Wizard(encoding=fmt, fpath=path).read()
    for k in "xyp":
        assert (ref[k].astype(np.int64) == ev[k]).all()


# -- hostile input -------------------------------------------------------------------------

def _survives(path, fmt=None):
    """Reading ends in an EvpipeError or a clean, in-range result (warnings allowed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EvpipeWarning)
        try:
            with open_events(path, fmt) as r:
                ev = r.read()
                w, h = r.sensor_size
                chunks = list(r.iter_chunks(n_events=50000))
        except EvpipeError:
            return
    assert len(ev) == sum(len(c) for c in chunks)
    if r.format not in ("evt2", "evt3"):  # a damaged header may be detected as another format
        return
    assert ev.dtype == EVENT_DTYPE
    assert (ev["x"] < w).all() and (ev["y"] < h).all() and np.isin(ev["p"], (0, 1)).all()


@pytest.mark.parametrize("name", list(REAL))
def test_truncated_files(tmp_path, data_dir, name):
    raw = (data_dir / REAL[name][0]).read_bytes()
    rng = np.random.default_rng(0)
    cuts = list(range(0, 200, 7)) + sorted(rng.integers(200, len(raw), 25).tolist())
    for cut in cuts:
        path = tmp_path / f"cut{cut}.raw"
        path.write_bytes(raw[:cut])
        _survives(path)
        _survives(path, REAL[name][1])


@pytest.mark.parametrize("name", list(REAL))
def test_byte_flips(tmp_path, data_dir, name):
    raw = np.frombuffer((data_dir / REAL[name][0]).read_bytes(), np.uint8)
    rng = np.random.default_rng(1)
    for trial in range(12):
        bad = raw.copy()
        pos = rng.integers(0, len(raw) if trial % 3 else 200, 1 + trial * 40)
        bad[pos] = rng.integers(0, 256, len(pos))
        path = tmp_path / f"flip{trial}.raw"
        path.write_bytes(bad.tobytes())
        _survives(path, REAL[name][1])


@pytest.mark.parametrize("version", ["2.0", "3.0"])
def test_random_words(tmp_path, version):
    rng = np.random.default_rng(2)
    for trial in range(5):
        n = 1 << 16
        words = rng.integers(0, 1 << (32 if version == "2.0" else 16), n, dtype=np.uint64)
        path = raw_file(tmp_path / f"r{trial}.raw", words, version, (1280, 720))
        _survives(path)
