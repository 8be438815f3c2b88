"""AEDAT 3.1 (cAER, DVS128 Gesture) reader. No real file is available: files are written
by tests/io/aedat_fixtures.py from known events and cross-checked with tonic 1.7.0's
read_dvs_ibm, which agrees with libcaer on polarity-only files with valid events and no
TS overflow, and reads every packet as polarity events otherwise."""

import struct
import tracemalloc
import warnings

import numpy as np
import pytest
import tonic.io

from evpipe.errors import EvpipeError, FormatError
from evpipe.io import EvpipeWarning, detect_format, open_events, read_events
from evpipe.io.aedat3 import Aedat3Reader
from evpipe.io.base import HEADER_LIMIT
from tests.io.aedat_fixtures import (aedat31_header, caer_packet, imu6_packet,
                                     polarity_packet, random_events, special_packet,
                                     write_aedat2, write_aedat31)


@pytest.fixture
def tonic_ibm(monkeypatch):
    """tonic 1.7.0's read_dvs_ibm unpacks 2 of the 3 values read_aedat_header_from_file
    returns (ValueError): give it the first two."""
    orig = tonic.io.read_aedat_header_from_file
    monkeypatch.setattr(tonic.io, "read_aedat_header_from_file", lambda f: orig(f)[:2])
    return lambda path: tonic.io.read_dvs_ibm(str(path))[1]


def assert_events_equal(a, b):
    assert len(a) == len(b)
    for f in "txyp":
        np.testing.assert_array_equal(a[f].astype(np.int64), b[f].astype(np.int64), err_msg=f)


def test_roundtrip_and_metadata(tmp_path):
    ev = random_events(10_000, 128, 128, seed=1)
    path = write_aedat31(tmp_path / "user01_natural.aedat", ev, packet_events=777)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EvpipeWarning)
        with open_events(path) as r:
            assert r.format == "aedat3" and r.sensor_size == (128, 128)
            assert r.metadata["sources"] == {1: "DVS128"}
            assert r.metadata["geometry"] == "source device DVS128"
            assert r.metadata["start_time"].startswith("2017-05-01")
            out = r.read()
            assert r.metadata["counts"] == {"packets": 13, "polarity_packets": 13,
                                            "invalid_events": 0, "outside_sensor": 0}
    np.testing.assert_array_equal(out, ev)


def test_polarity_only_equals_tonic(tmp_path, tonic_ibm):
    ev = random_events(20_000, 128, 128, seed=2, max_dt=200)
    path = write_aedat31(tmp_path / "a.aedat", ev, packet_events=3000)
    assert_events_equal(read_events(path), tonic_ibm(path))


def test_special_packet_skipped_tonic_reads_it_as_events(tmp_path, tonic_ibm):
    """A SPECIAL packet (8-byte events) is skipped by evpipe; tonic decodes its events as
    polarity events: exactly those extra rows are the difference."""
    ev = random_events(5000, 128, 128, seed=3)
    t_special = ev["t"][2000] + np.arange(4)
    special = special_packet(t_special, code=2)
    path = write_aedat31(tmp_path / "a.aedat", ev, packet_events=1000,
                         extra_packets=[(2, special)])
    ours = read_events(path)
    np.testing.assert_array_equal(ours, ev)
    ref = tonic_ibm(path)
    assert len(ref) == 5004
    extra = ref[2000:2004]  # special data = code << 1 | 1 read with polarity masks
    data = 2 << 1 | 1
    np.testing.assert_array_equal(extra["t"], t_special)
    assert (extra["x"] == data >> 17).all() and (extra["y"] == (data >> 2) & 0x1FFF).all()
    assert (extra["p"] == (data >> 1) & 1).all()
    assert_events_equal(ours, np.concatenate([ref[:2000], ref[2004:]]))


def test_imu6_packet_skipped_tonic_misparses_it(tmp_path, tonic_ibm):
    """tonic reads capacity * 8 bytes of a 36-byte-per-event IMU6 packet and parses the
    rest as packet headers. Here the rest is zeros (capacity 0), so tonic gains exactly
    one garbage event (the IMU info word and timestamp); evpipe skips the packet."""
    ev = random_events(3000, 128, 128, seed=4)
    imu = imu6_packet(np.array([ev["t"][1500]]), values=np.zeros((1, 7)))
    path = write_aedat31(tmp_path / "a.aedat", ev, packet_events=500,
                         extra_packets=[(3, imu), (99, imu6_packet(ev["t"][-3:]))])
    with open_events(path) as r:
        np.testing.assert_array_equal(r.read(), ev)
        assert r.metadata["counts"]["packets"] == 8
    ref = tonic_ibm(path)[:3001]
    np.testing.assert_array_equal(ref["t"][1500], ev["t"][1500])
    assert (ref["x"][1500], ref["y"][1500], ref["p"][1500]) == (0, 0, False)
    assert_events_equal(ev, np.delete(ref, 1500))


def test_valid_mark_honoured(tmp_path, tonic_ibm):
    ev = random_events(8000, 128, 128, seed=5)
    valid = np.random.default_rng(5).random(len(ev)) > 0.2
    path = write_aedat31(tmp_path / "a.aedat", ev, valid=valid, packet_events=1000)
    with open_events(path) as r:
        np.testing.assert_array_equal(r.read(), ev[valid])
        assert r.metadata["counts"]["invalid_events"] == (~valid).sum()
    assert_events_equal(ev, tonic_ibm(path))  # tonic keeps invalid events


def test_unused_capacity_slots_skipped(tmp_path):
    """Only the first eventNumber of eventCapacity slots hold events (libcaer common.h)."""
    ev = random_events(300, 128, 128, seed=6)
    junk = polarity_packet(random_events(100, 128, 128, seed=60))[28:]  # valid-looking
    body = polarity_packet(ev[:200])[28:] + junk
    pkt = caer_packet(1, body, event_size=8, capacity=300, number=200)
    path = tmp_path / "a.aedat"
    path.write_bytes(aedat31_header() + pkt + polarity_packet(ev[200:], capacity=150))
    np.testing.assert_array_equal(read_events(path), ev)


def test_ts_overflow(tmp_path, tonic_ibm):
    """t = eventTSOverflow << 31 | timestamp: crossing 2^31 and far beyond (overflow 5);
    tonic ignores eventTSOverflow (its t is the 31-bit timestamp)."""
    ev = random_events(6000, 128, 128, seed=7, t0=(1 << 31) - 20_000, max_dt=20)
    ev["t"][4000:] += (5 << 31) - (1 << 31)
    path = write_aedat31(tmp_path / "a.aedat", ev, packet_events=1000)
    out = read_events(path)
    np.testing.assert_array_equal(out, ev)
    assert set(np.unique(out["t"] >> 31)) == {0, 1, 5}
    np.testing.assert_array_equal(tonic_ibm(path)["t"], ev["t"] & 0x7FFFFFFF)


@pytest.mark.parametrize("block_bytes", [1, 29, 37, 64, 1000, 1 << 16])
def test_blocks_straddling_packets_and_chunks(block_bytes, tmp_path):
    ev = random_events(12_000, 128, 128, seed=8, max_dt=100)
    extra = [(k, imu6_packet(ev["t"][k * 700:k * 700 + 3], seed=k)) for k in range(0, 20, 3)]
    extra += [(5, special_packet(ev["t"][3500:3502])), (7, polarity_packet(ev[:0]))]
    path = write_aedat31(tmp_path / "a.aedat", ev, packet_events=700, extra_packets=extra)
    with open_events(path) as r:
        r.block_bytes = block_bytes
        whole = r.read()
        np.testing.assert_array_equal(whole, ev)
        np.testing.assert_array_equal(np.concatenate(list(r.iter_chunks())), whole)
        chunks = list(r.iter_chunks(n_events=1001))
        assert {len(c) for c in chunks[:-1]} == {1001}
        np.testing.assert_array_equal(np.concatenate(chunks), whole)
        windows = list(r.iter_chunks(dt_us=20_000))
        np.testing.assert_array_equal(np.concatenate(windows), whole)
        t0 = whole["t"][0]
        for k, win in enumerate(windows):
            assert ((win["t"] - t0) // 20_000 == k).all()


def test_geometry(tmp_path):
    ev = random_events(500, 346, 260, seed=9)
    davis = write_aedat31(tmp_path / "d.aedat", ev, source="DAVIS346B")
    with open_events(davis) as r:
        assert r.sensor_size == (346, 260)
        np.testing.assert_array_equal(r.read(), ev)
    sized = write_aedat31(tmp_path / "s.aedat", ev, source="Camera X",
                          header_lines=["#sizeX: 400", "#sizeY: 300"])
    with open_events(sized) as r:
        assert r.sensor_size == (400, 300) and r.metadata["geometry"] == "header sizeX/sizeY"
    unknown = write_aedat31(tmp_path / "u.aedat", ev, source="Camera X")
    with open_events(unknown) as r:
        assert r.sensor_size == (128, 128) and "assumed 128x128" in r.metadata["geometry"]
        with pytest.warns(EvpipeWarning, match="outside the 128x128 sensor"):
            out = r.read()
    inside = (ev["x"] < 128) & (ev["y"] < 128)
    np.testing.assert_array_equal(out, ev[inside])
    with open_events(unknown, sensor_size=(346, 260)) as r:
        np.testing.assert_array_equal(r.read(), ev)


def test_detection_and_header_errors(tmp_path):
    ev = random_events(50, 128, 128, seed=10)
    path = write_aedat31(tmp_path / "a.aedat", ev)
    assert detect_format(path) == "aedat3"
    assert Aedat3Reader.sniff(b"#!AER-DAT4.0\r\n") == 0
    assert Aedat3Reader.sniff(b"#!AER-DAT3.0\r\n") == 0
    assert Aedat3Reader.sniff(b"#!AER-DAT2.0\r\n") == 0
    a2 = write_aedat2(tmp_path / "b.aedat", ev)
    with pytest.raises(FormatError, match="not an AEDAT 3.1 file"):
        open_events(a2, "aedat3")
    no_end = tmp_path / "n.aedat"
    no_end.write_bytes(aedat31_header()[:-len(b"#!END-HEADER\r\n")] + b"\x01\x00" + b"\0" * 40)
    with pytest.raises(FormatError, match="#!END-HEADER"):
        read_events(no_end)
    huge = tmp_path / "h.aedat"
    huge.write_bytes(b"#!AER-DAT3.1\r\n" + b"#x\r\n" * (HEADER_LIMIT // 4 + 1))
    with pytest.raises(FormatError, match="header longer"):
        read_events(huge)
    empty = tmp_path / "e.aedat"
    empty.write_bytes(aedat31_header())
    with warnings.catch_warnings():
        warnings.simplefilter("error", EvpipeWarning)
        assert len(read_events(empty)) == 0


def _file_with(tmp_path, *packets):
    ev = random_events(400, 128, 128, seed=11)
    path = tmp_path / "h.aedat"
    head = aedat31_header() + polarity_packet(ev[:200])
    path.write_bytes(head + b"".join(packets) + polarity_packet(ev[200:]))
    return path, len(head), ev


@pytest.mark.parametrize("fields,match", [
    (dict(event_size=-8, capacity=10), "negative"),
    (dict(event_size=8, capacity=-1), "negative"),
    (dict(event_size=8, capacity=10, ts_overflow=-3), "negative"),
    (dict(event_size=8, capacity=10, number=11), "eventNumber > eventCapacity"),
    (dict(event_size=8, capacity=10, number=5, valid=6), "eventValid > eventNumber"),
    (dict(event_size=12, capacity=10), "eventSize != 8"),
    (dict(event_size=8, capacity=10, ts_offset=0), "eventTSOffset != 4"),
    (dict(etype=2, event_size=0, capacity=10), "eventSize 0"),
])
def test_bad_packet_header_names_offset(fields, match, tmp_path):
    fields = dict(fields)
    etype = fields.pop("etype", 1)
    path, off, _ = _file_with(tmp_path, caer_packet(etype, b"\0" * 80, **fields))
    with pytest.raises(FormatError, match=match) as e:
        read_events(path)
    assert e.value.offset == off and str(path) in str(e.value)


@pytest.mark.parametrize("etype,size,cap", [
    (1, 8, 0x7FFFFFFF),            # polarity, ~16 GiB declared
    (2, 0x7FFFFFFF, 0x7FFFFFFF),   # capacity * size ~2^62 (overflows int32/int64 products)
    (3, 36, 1 << 30),
])
def test_absurd_sizes_partial_read_bounded_memory(etype, size, cap, tmp_path):
    path, off, ev = _file_with(tmp_path, caer_packet(etype, b"", event_size=size, capacity=cap,
                                                     number=0 if etype != 1 else None))
    tracemalloc.start()
    try:
        with pytest.warns(EvpipeWarning) as rec:
            out = read_events(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20
    assert any(f"offset {off}: file ends inside a packet" in str(w.message) for w in rec)
    np.testing.assert_array_equal(out[:200], ev[:200])  # the rest: trailing bytes as events
    assert len(out) <= (path.stat().st_size - off) // 8 + 200


def test_truncation_keeps_whole_events(tmp_path):
    ev = random_events(2000, 128, 128, seed=12)
    path = write_aedat31(tmp_path / "a.aedat", ev, packet_events=500)
    data = path.read_bytes()
    with open_events(path) as r:
        start = r.data_offset
    cut = tmp_path / "c.aedat"
    packet = 28 + 8 * 500
    for n in (start + 10, start + 28 + 8 * 100 + 3, len(data) - 1, start + 2 * packet + 5):
        cut.write_bytes(data[:n])
        with pytest.warns(EvpipeWarning, match="file ends inside a packet"):
            out = read_events(cut)
        np.testing.assert_array_equal(out, ev[:len(out)])
        whole, rest = divmod(n - start, packet)
        assert len(out) == whole * 500 + max((rest - 28) // 8, 0)


def test_hostile_input_errors_or_partial_reads(tmp_path):
    ev = random_events(3000, 128, 128, seed=13)
    extra = [(1, imu6_packet(ev["t"][:5])), (3, special_packet(ev["t"][:2]))]
    src = write_aedat31(tmp_path / "src.aedat", ev, packet_events=400, extra_packets=extra)
    data = src.read_bytes()
    n = len(data)
    rng = np.random.default_rng(1)
    blobs = [data[:c] for c in sorted({*range(0, 300), *rng.integers(0, n, 80).tolist()})]
    for k in range(120):
        buf = bytearray(data)
        if k % 2:
            for pos in rng.integers(0, n, int(rng.integers(1, 12))):
                buf[pos] ^= int(rng.integers(1, 256))
        else:  # absurd 32-bit value somewhere in the first packets
            pos = int(rng.integers(0, 4000))
            buf[pos:pos + 4] = struct.pack("<I", int(rng.choice([0x7FFFFFFF, 0xFFFFFFFF,
                                                                  0x80000000, 0x0000FFFF])))
        blobs.append(bytes(buf))
    target = tmp_path / "m.aedat"
    outcomes = set()
    tracemalloc.start()
    try:
        for blob in blobs:
            target.write_bytes(blob)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", EvpipeWarning)
                    with open_events(target, "aedat3") as r:
                        r.block_bytes = 4096
                        out = r.read()
                        m = sum(len(c) for c in r.iter_chunks(n_events=700))
                assert m == len(out) <= len(blob) // 8
                assert (out["x"] < 128).all() and (out["y"] < 128).all()
                outcomes.add("read")
            except EvpipeError as e:
                assert str(target) in str(e)
                outcomes.add(type(e).__name__)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20
    assert outcomes == {"read", "FormatError"}
