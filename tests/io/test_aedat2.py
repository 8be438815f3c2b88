"""AEDAT 2.0 / 1.0 (jAER) reader. No real file is available: files are written by
tests/io/aedat_fixtures.py from known events, and the layout is cross-checked with tonic
1.7.0's independent parser (tonic.io) where its definitions agree with jAER's."""

import tracemalloc
import warnings

import numpy as np
import pytest
import tonic.io

from evpipe.errors import ConfigError, EvpipeError, FormatError
from evpipe.io import EvpipeWarning, detect_format, open_events, read_events
from evpipe.io.aedat2 import Aedat2Reader
from evpipe.io.base import HEADER_LIMIT
from tests.io.aedat_fixtures import (GEOMETRY, aedat2_header, random_events, write_aedat2,
                                     write_aedat31)

CHIPS = ["DVS128", "DAVIS240C", "DAVIS346B", "DAVIS640"]


def _tonic_header_2(monkeypatch):
    """tonic 1.7.0's read_dvs_128 / read_dvs_ibm unpack 2 of the 3 values that
    read_aedat_header_from_file returns (ValueError); give them the first two."""
    orig = tonic.io.read_aedat_header_from_file
    monkeypatch.setattr(tonic.io, "read_aedat_header_from_file", lambda f: orig(f)[:2])


def _raw_records(path, data_offset):
    return np.fromfile(path, [("a", ">u4"), ("t", ">u4")], offset=data_offset)


def assert_events_equal(a, b):
    for f in "txyp":
        np.testing.assert_array_equal(a[f].astype(np.int64), b[f].astype(np.int64), err_msg=f)


@pytest.mark.parametrize("chip", CHIPS)
def test_roundtrip_with_imu_aps_special(chip, tmp_path):
    w, h = GEOMETRY[chip]
    ev = random_events(5000, w, h, seed=1)
    davis = chip != "DVS128"
    path = write_aedat2(tmp_path / "a.aedat", ev, chip, imu_words=7 * 20 if davis else 0,
                        aps_words=30 if davis else 0, special_words=12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EvpipeWarning)  # whole IMU samples: no warning
        with open_events(path) as r:
            assert r.format == "aedat2" and r.sensor_size == (w, h)
            assert r.metadata["version"] == "2.0" and r.metadata["chip_source"] == "header"
            out = r.read()
            assert r.metadata["counts"] == {
                "polarity": 5000, "special": 12, "aps": 30 if davis else 0,
                "imu": 140 if davis else 0, "outside_sensor": 0}
    np.testing.assert_array_equal(out, ev)


@pytest.mark.parametrize("chip", CHIPS)
def test_raw_fields_equal_tonic_parser(chip, tmp_path):
    """tonic's header/record parser (get_aer_events_from_file) + the formats.md §5 masks
    equal evpipe with flips off; the default output is the flipped image."""
    w, h = GEOMETRY[chip]
    ev = random_events(3000, w, h, seed=2)
    path = write_aedat2(tmp_path / "a.aedat", ev, chip)
    version, start, _ = tonic.io.read_aedat_header_from_file(str(path))
    a = tonic.io.get_aer_events_from_file(str(path), version, start)
    a, t = a["address"].astype(np.int64), a["timeStamp"]
    if chip == "DVS128":
        x, y, p = (a >> 1) & 0x7F, (a >> 8) & 0x7F, 1 - (a & 1)
    else:
        x, y, p = (a >> 12) & 0x3FF, (a >> 22) & 0x1FF, (a >> 11) & 1
    raw = Aedat2Reader(path, flip_x=False, flip_y=False).read()
    for f, ref in zip("txyp", (t, x, y, p)):
        np.testing.assert_array_equal(raw[f].astype(np.int64), ref)
    out = read_events(path)
    np.testing.assert_array_equal(out["x"], w - 1 - raw["x"])
    np.testing.assert_array_equal(out["y"], h - 1 - raw["y"])
    np.testing.assert_array_equal(out["p"], raw["p"])


def test_davis346_equals_tonic(tmp_path):
    """tonic's read_davis_346 flips x and y like jAER's display: equal to evpipe's default
    on polarity events; it also decodes IMU/APS/special words as events (garbage)."""
    ev = random_events(4000, 346, 260, seed=3)
    path = write_aedat2(tmp_path / "a.aedat", ev, "DAVIS346B")
    shape, _, ref = tonic.io.read_davis_346(str(path))
    assert shape == (346, 260)
    assert_events_equal(read_events(path), ref)

    mixed = write_aedat2(tmp_path / "m.aedat", ev, "DAVIS346B", imu_words=70, aps_words=25,
                         special_words=5)
    _, _, ref = tonic.io.read_davis_346(str(mixed))
    out = read_events(mixed)
    assert len(ref) == len(ev) + 100 and len(out) == len(ev)
    with open_events(mixed) as r:
        a = _raw_records(mixed, r.data_offset)["a"]
    polarity = (a & 0x80000400) == 0
    assert_events_equal(out, ref[polarity])


def test_dvs128_documented_differences_with_tonic(tmp_path, monkeypatch):
    """tonic's read_dvs_128 takes x from bits 8-14 and y from bits 1-7 (jAER DVS128.java:
    x = bits 1-7, y = bits 8-14), reads bit 0 = 1 as ON (jAER: ON events have raw
    polarity 0) and keeps special (bit 15) words as events."""
    _tonic_header_2(monkeypatch)
    ev = random_events(3000, 128, 128, seed=4)
    path = write_aedat2(tmp_path / "a.aedat", ev, "DVS128", special_words=7)
    _, ref = tonic.io.read_dvs_128(str(path))
    assert len(ref) == 3007
    with open_events(path) as r:
        a = _raw_records(path, r.data_offset)["a"]
    ref = ref[(a & 0x8000) == 0]
    raw = Aedat2Reader(path, flip_x=False, flip_y=False).read()
    np.testing.assert_array_equal(raw["t"], ref["t"])
    np.testing.assert_array_equal(raw["x"], ref["y"])
    np.testing.assert_array_equal(raw["y"], ref["x"])
    np.testing.assert_array_equal(raw["p"], 1 - ref["p"])


def test_aedat1_six_byte_records(tmp_path):
    ev = random_events(2000, 128, 128, seed=5)
    for version in ("1.0", None):  # with and without the version line
        path = write_aedat2(tmp_path / f"v{version}.aedat", ev, "DVS128", version=version,
                            special_words=3)
        assert detect_format(path) == "aedat2"
        with open_events(path) as r:
            assert r.metadata["version"] == "1.0" and r.record_bytes == 6
            np.testing.assert_array_equal(r.read(), ev)
    with pytest.raises(FormatError, match="16-bit addresses"):
        Aedat2Reader(path, chip="DAVIS346")


def test_timestamps_unwrap(tmp_path):
    """int32 µs clock: crossing 2^31 is not a wrap (read unsigned); a drop of more than
    2^31 is (+2^32); a small drop (timestamp reset/jitter) is kept as is."""
    ev = random_events(6000, 128, 128, seed=6, t0=(1 << 31) - 30000, max_dt=20)
    ev["t"][3000:] += (1 << 32) - int(ev["t"][3000]) + 5  # continue just past 2^32
    ev["t"][5000:] -= 1000  # a backwards step, not a wrap
    path = write_aedat2(tmp_path / "a.aedat", ev)
    out = read_events(path)
    np.testing.assert_array_equal(out["t"], ev["t"])
    assert out["t"].max() > 1 << 32


def test_imu_partial_sample_and_partial_record_warn(tmp_path):
    ev = random_events(1000, 240, 180, seed=7)
    path = write_aedat2(tmp_path / "a.aedat", ev, "DAVIS240C", imu_words=7 * 3 + 4,
                        tail=b"\x80\x00\x0c")
    with pytest.warns(EvpipeWarning) as rec:
        out = read_events(path)
    msgs = [str(w.message) for w in rec]
    assert any("25 IMU words" in m for m in msgs)
    assert any("3 trailing bytes" in m and f"offset {path.stat().st_size - 3}" in m
               for m in msgs)
    np.testing.assert_array_equal(out, ev)


def test_header_detection_and_limits(tmp_path):
    ev = random_events(500, 240, 180, seed=8)
    big = write_aedat2(tmp_path / "big.aedat", ev, "DAVIS240C", header_bytes=175_268)
    with open_events(big) as r:
        assert r.data_offset > 175_268 and len(r.metadata["header"]) > 2000
        np.testing.assert_array_equal(r.read(), ev)
    huge = write_aedat2(tmp_path / "huge.aedat", ev, "DAVIS240C",
                        header_bytes=HEADER_LIMIT + 10)
    with pytest.raises(FormatError, match="header longer") as e:
        read_events(huge)
    assert str(huge) in str(e.value)
    cut = tmp_path / "cut.aedat"
    cut.write_bytes(aedat2_header("DVS128")[:-7])
    with pytest.raises(FormatError, match="without newline"):
        read_events(cut)
    empty = tmp_path / "empty.aedat"
    empty.write_bytes(aedat2_header("DVS128"))
    assert len(read_events(empty)) == 0


def test_first_data_byte_is_hash(tmp_path):
    """A first record starting with 0x23 ('#') fools '#'-line parsing; jAER's
    '#End Of ASCII Header' line marks the data start anyway."""
    ev = random_events(100, 346, 260, seed=9)
    ev["y"][0] = 259 - 140  # raw y 140: address byte 0 is 140 >> 2 = 0x23
    path = write_aedat2(tmp_path / "a.aedat", ev, "DAVIS346B")
    with open_events(path) as r:
        assert r.read_bytes_at(r.data_offset, 1) == b"#"
        np.testing.assert_array_equal(r.read(), ev)


def test_chip_selection(tmp_path):
    ev = random_events(300, 128, 128, seed=10)
    path = write_aedat2(tmp_path / "n.aedat", ev, None)
    with open_events(path) as r:
        assert r.metadata["chip"] == "DVS128" and "assumed" in r.metadata["chip_source"]
        np.testing.assert_array_equal(r.read(), ev)
    davis = write_aedat2(tmp_path / "d.aedat", ev, "DAVIS240C")
    with Aedat2Reader(davis, chip="eu.seebetter.ini.chips.davis.Davis346B") as r:
        assert r.sensor_size == (346, 260) and r.metadata["chip_source"] == "chip argument"
    odd = write_aedat2(tmp_path / "o.aedat", ev, "org.example.Retina99")
    with pytest.raises(FormatError, match="unknown AEChip class 'org.example.Retina99'"):
        read_events(odd)
    assert len(Aedat2Reader(odd, chip="DVS128").read()) == 300
    with pytest.raises(ConfigError, match="unknown chip"):
        Aedat2Reader(odd, chip="Retina99")


def test_addresses_outside_sensor_dropped(tmp_path):
    ev = random_events(200, 240, 180, seed=11)
    path = write_aedat2(tmp_path / "a.aedat", ev, "DAVIS240C")
    data = bytearray(path.read_bytes())
    with open_events(path) as r:
        off = r.data_offset
    data[off:off + 4] = int((300 << 12) | (10 << 22)).to_bytes(4, "big")  # raw x 300 >= 240
    path.write_bytes(bytes(data))
    with pytest.warns(EvpipeWarning, match="1 events with addresses outside the 240x180"):
        out = read_events(path)
    np.testing.assert_array_equal(out, ev[1:])


@pytest.mark.parametrize("block_bytes", [8, 8 * 7, 8 * 1000, 5])
def test_chunks_concatenate_to_read(block_bytes, tmp_path):
    ev = random_events(20_000, 346, 260, seed=12, max_dt=100)
    path = write_aedat2(tmp_path / "a.aedat", ev, "DAVIS346B", imu_words=77, aps_words=50)
    with open_events(path) as r:
        r.block_bytes = block_bytes
        whole = r.read()
        np.testing.assert_array_equal(whole, ev)
        np.testing.assert_array_equal(np.concatenate(list(r.iter_chunks())), whole)
        chunks = list(r.iter_chunks(n_events=997))
        assert {len(c) for c in chunks[:-1]} == {997}
        np.testing.assert_array_equal(np.concatenate(chunks), whole)
        windows = list(r.iter_chunks(dt_us=10_000))
        np.testing.assert_array_equal(np.concatenate(windows), whole)
        t0 = whole["t"][0]
        for k, win in enumerate(windows):
            assert ((win["t"] - t0) // 10_000 == k).all()


def test_detection_by_content(tmp_path):
    ev = random_events(100, 128, 128, seed=13)
    a2 = write_aedat2(tmp_path / "x.aedat", ev)
    a3 = write_aedat31(tmp_path / "y.aedat", ev)
    assert detect_format(a2) == "aedat2" and detect_format(a3) == "aedat3"
    assert Aedat2Reader.sniff(b"#!AER-DAT4.0\r\n") == 0
    assert Aedat2Reader.sniff(b"#!AER-DAT3.1\r\n") == 0
    assert Aedat2Reader.sniff(b"% Data file containing") == 0
    with pytest.raises(FormatError, match="'3.1' is not AEDAT 1.0/2.0"):
        open_events(a3, "aedat2")


def _mutants(data: bytes, header_end: int, rng):
    n = len(data)
    for cut in sorted({*range(0, min(n, header_end + 40)), *rng.integers(0, n, 60).tolist()}):
        yield data[:cut]
    for _ in range(60):
        buf = bytearray(data)
        for pos in rng.integers(0, n, int(rng.integers(1, 12))):
            buf[pos] ^= int(rng.integers(1, 256))
        yield bytes(buf)


def test_hostile_input_errors_or_partial_reads(tmp_path):
    ev = random_events(3000, 346, 260, seed=14)
    src = write_aedat2(tmp_path / "src.aedat", ev, "DAVIS346B", imu_words=40, aps_words=9)
    data = src.read_bytes()
    with open_events(src) as r:
        header_end = r.data_offset
    target = tmp_path / "m.aedat"
    rng = np.random.default_rng(0)
    outcomes = set()
    tracemalloc.start()
    try:
        for blob in _mutants(data, header_end, rng):
            target.write_bytes(blob)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", EvpipeWarning)
                    with open_events(target, "aedat2") as r:
                        out = r.read()
                        n = sum(len(c) for c in r.iter_chunks(n_events=500))
                assert n == len(out) <= len(blob) // 8
                assert (out["x"] < 346).all() and (out["y"] < 260).all()
                outcomes.add("read")
            except EvpipeError as e:
                assert str(target) in str(e)
                outcomes.add(type(e).__name__)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20
    assert "read" in outcomes and "FormatError" in outcomes
