"""AEDAT 4.0 reader: the real DVXplorer sample (PROVENANCE.md), files written by
dv-processing from known events, agreement with faery, dv-processing and aedat, and
hostile input (truncation, byte flips, absurd sizes)."""

from __future__ import annotations

import signal
import struct
import tracemalloc
import warnings
from contextlib import contextmanager

import numpy as np
import pytest

from evpipe.errors import EvpipeError, FormatError
from evpipe.events import EVENT_DTYPE, SensorSize
from evpipe.io import EvpipeWarning, detect_format, open_events, read_events
from evpipe.io.aedat4 import Aedat4Reader

lz4_frame = pytest.importorskip("lz4.frame")
T0 = 1_700_000_000_000_000  # us, absolute like DV recordings
CODEC = {"LZ4": "lz4", "LZ4_HIGH": "lz4", "ZSTD": "zstd", "ZSTD_HIGH": "zstd", "NONE": "none",
         "streams": "zstd"}
PEER_DTYPE = {"faery": ("t", "x", "y", "on"), "aedat": ("t", "x", "y", "on"),
              "dv": ("timestamp", "x", "y", "polarity")}


@pytest.fixture(scope="module")
def sample(data_dir):
    return data_dir / "aedat4" / "tonic_sample.aedat4"


def known_events(n: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """Monotonic events (EVENT_DTYPE) spread over n * 7 us on average."""
    rng = np.random.default_rng(seed)
    ev = np.empty(n, EVENT_DTYPE)
    ev["t"] = T0 + np.cumsum(rng.integers(0, 15, n))
    ev["x"] = rng.integers(0, width, n)
    ev["y"] = rng.integers(0, height, n)
    ev["p"] = rng.integers(0, 2, n)
    return ev


def write_dv(path, events, compression="LZ4", size=(346, 260), imu=False, triggers=False,
             frames=False, second_stream=None, batch=3000):
    """Write `events` with dv-processing's MonoCameraWriter (packets of at most 10000
    events), interleaving IMU / trigger / frame packets when asked."""
    dv = pytest.importorskip("dv_processing")
    cfg = dv.io.MonoCameraWriter.Config("DVXplorer_test", getattr(dv.CompressionType, compression))
    cfg.addEventStream(size)
    if second_stream is not None:
        cfg.addEventStream((32, 24), "events2")
    if imu:
        cfg.addImuStream()
    if triggers:
        cfg.addTriggerStream()
    if frames:
        cfg.addFrameStream(size)
    writer = dv.io.MonoCameraWriter(str(path), cfg)
    writer.setPackagingCount(1)
    if second_stream is not None:
        other = dv.EventStore()
        for t, x, y, p in zip(*(second_stream[k].tolist() for k in "txyp")):
            other.push_back(t, x, y, bool(p))
        writer.writeEvents(other, "events2")
    for s in range(0, len(events), batch):
        part = events[s:s + batch]
        store = dv.EventStore()
        for t, x, y, p in zip(*(part[k].tolist() for k in "txyp")):
            store.push_back(t, x, y, bool(p))
        writer.writeEvents(store)
        t = int(part["t"][0])
        if imu:
            writer.writeImu(dv.data.generate.levelImuMeasurement(t))
        if triggers:
            writer.writeTrigger(dv.Trigger(t, dv.TriggerType.EXTERNAL_SIGNAL_RISING_EDGE))
        if frames:
            writer.writeFrame(dv.Frame(t, np.full((size[1], size[0]), s % 251, np.uint8)))
    del writer  # closing writes the data table and the final IOHeader
    return path


def peer_events(name: str, path) -> np.ndarray:
    """Events of the first event stream decoded by a peer library, as EVENT_DTYPE."""
    if name == "faery":
        faery = pytest.importorskip("faery")
        first = min(t.id for t in faery.aedat.Decoder(str(path)).tracks()
                    if t.data_type == "events")
        parts = [p for track, p in faery.aedat.Decoder(str(path)) if track.id == first]
    elif name == "aedat":
        aedat = pytest.importorskip("aedat")
        dec = aedat.Decoder(str(path))
        first = min(k for k, v in dec.id_to_stream().items() if v["type"] == "events")
        parts = [p["events"] for p in dec if p["stream_id"] == first and "events" in p]
    else:
        dv = pytest.importorskip("dv_processing")
        rec = dv.io.MonoCameraRecording(str(path))
        parts = []
        while (batch := rec.getNextEventBatch()) is not None:
            parts.append(batch.numpy())
    src = np.concatenate(parts)
    out = np.empty(len(src), EVENT_DTYPE)
    for k, field in zip("txyp", PEER_DTYPE[name]):
        out[k] = src[field]
    return out


def strip_table(src, dst):
    """Copy of `src` without its data table and with dataTablePosition = -1, as a
    recording cut short (DV writes the table when it closes the file)."""
    data = bytearray(src.read_bytes())
    with Aedat4Reader(src) as r:
        pos = r.data_end
    header = bytes(data[18:18 + struct.unpack_from("<i", data, 14)[0]])
    assert header.count(struct.pack("<q", pos)) == 1
    i = 18 + header.index(struct.pack("<q", pos))
    data[i:i + 8] = struct.pack("<q", -1)
    dst.write_bytes(bytes(data[:pos]))
    return dst


@contextmanager
def no_crash(seconds=20):
    """Fail on warnings other than EvpipeWarning and on running `seconds` (a hang);
    yields the list of warnings."""
    def on_alarm(*_):
        raise AssertionError(f"decoding took more than {seconds} s (hang?)")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
        assert all(issubclass(w.category, EvpipeWarning) for w in caught), \
            [str(w.message) for w in caught]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def decode_all(path):
    """(events or None, error) from read(), iter_chunks() and read_time_range(). The time
    range trusts the data table's timestamps, so a corrupt table may leave events out."""
    try:
        with open_events(path, format="aedat4") as r:
            ev = r.read()
            assert ev.dtype == EVENT_DTYPE
            chunks = list(r.iter_chunks(n_events=5000))
            assert np.array_equal(np.concatenate(chunks) if chunks else ev[:0], ev)
            if len(ev):
                mid = int(np.median(ev["t"]))
                part = r.read_time_range(mid, mid + 50_000)
                want = ev[(ev["t"] >= mid) & (ev["t"] < mid + 50_000)]
                assert np.isin(part, want).all() and len(part) <= len(want)
            return ev, None
    except EvpipeError as e:
        return None, e


# -- the real sample ------------------------------------------------------------------------
def test_sample_matches_provenance(sample):
    assert detect_format(sample) == "aedat4"
    with open_events(sample) as r:
        assert r.format == "aedat4" and r.sensor_size == SensorSize(320, 240)
        assert r.metadata["compression"] == "lz4" and r.metadata["data_table"]
        assert {k: s["type"] for k, s in r.metadata["streams"].items()} == \
            {0: "EVTS", 2: "IMUS", 3: "TRIG"}
        assert r.metadata["streams"][0]["source"] == "DVXplorer_DXB00010"
        table = r._table
        assert len(table) == 118 and (table["stream"] == 0).sum() == 59
        assert (table["stream"] == 2).sum() == 59
        assert table[0].tolist()[:4] == (2342, 0, 7949, 918)
        ev = r.read()
    assert r.metadata["n_events"] == len(ev) == 111_954
    assert ev["t"][0] == 1_605_537_493_718_345 and ev["t"][-1] == 1_605_537_494_308_262
    assert ev["x"].min() == 0 and ev["x"].max() == 319
    assert ev["y"].min() == 0 and ev["y"].max() == 239
    assert (ev["p"] == 1).sum() == 55_023 and set(np.unique(ev["p"])) == {0, 1}
    assert (np.diff(ev["t"]) >= 0).all()


@pytest.mark.parametrize("peer", ["faery", "aedat", "dv"])
def test_sample_equals_peer(sample, peer):
    assert np.array_equal(read_events(sample), peer_events(peer, sample))


def test_detection_by_content_not_extension(sample, tmp_path):
    other = tmp_path / "recording.bin"
    other.write_bytes(sample.read_bytes())
    assert detect_format(other) == "aedat4"
    assert len(read_events(other)) == 111_954


def test_chunks_and_time_ranges(sample):
    with open_events(sample) as r:
        ev = r.read()
        for n in (1, 918, 10_000, 200_000):
            chunks = list(r.iter_chunks(n_events=n))
            assert all(len(c) == n for c in chunks[:-1])
            assert np.array_equal(np.concatenate(chunks), ev)
        windows = list(r.iter_chunks(dt_us=50_000))
        assert len(windows) == 12 and np.array_equal(np.concatenate(windows), ev)
        table = r._table
        for t0, t1 in [(0, 1 << 62), (ev["t"][1000], ev["t"][1000] + 1),
                       (ev["t"][5000], ev["t"][90_000]), (ev["t"][-1] + 1, ev["t"][-1] + 9),
                       (ev["t"][70_000], ev["t"][3])]:
            want = ev[(ev["t"] >= t0) & (ev["t"] < t1)]
            r._table = table
            assert np.array_equal(r.read_time_range(t0, t1), want)
            r._table = None  # the streaming path gives the same
            assert np.array_equal(r.read_time_range(t0, t1), want)


def test_time_range_reads_only_the_packets_it_needs(sample, tmp_path):
    """A corrupt packet outside the range is never decompressed."""
    with open_events(sample) as r:
        ev, last = r.read(), r._event_rows()[-1]
    data = bytearray(sample.read_bytes())
    data[last["offset"] + 20:last["offset"] + 60] = bytes(40)
    bad = tmp_path / "bad_tail.aedat4"
    bad.write_bytes(bytes(data))
    with open_events(bad) as r:
        t0, t1 = int(ev["t"][0]), int(ev["t"][50_000])
        assert np.array_equal(r.read_time_range(t0, t1), ev[(ev["t"] >= t0) & (ev["t"] < t1)])
        with pytest.raises(FormatError) as e:
            r.read()
    assert e.value.offset == last["offset"]


def test_threads_and_groups_do_not_change_the_result(sample):
    ref = read_events(sample)
    for threads, group in [(1, 1 << 30), (4, 1), (3, 50_000)]:
        with open_events(sample) as r:
            r.threads, r.group_bytes = threads, group
            assert np.array_equal(r.read(), ref)


def test_sample_without_table_scans_packets(sample, tmp_path):
    path = strip_table(sample, tmp_path / "no_table.aedat4")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_events(path) as r:
            assert not r.metadata["data_table"] and "n_events" not in r.metadata
            ev = r.read()
    assert np.array_equal(ev, read_events(sample))


@pytest.mark.parametrize("peer", ["faery", "aedat"])
def test_sample_without_table_equals_peer(sample, tmp_path, peer):
    path = strip_table(sample, tmp_path / "no_table.aedat4")
    assert np.array_equal(peer_events(peer, path), read_events(sample))


# -- files written by dv-processing ---------------------------------------------------------
@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """{name: (path, events)} for dv-processing files from known events."""
    root = tmp_path_factory.mktemp("aedat4")
    ev = known_events(25_000, 346, 260)
    out = {}
    for comp in ("LZ4", "LZ4_HIGH", "ZSTD", "ZSTD_HIGH", "NONE"):
        # ZSTD with 10000-event packets: frames then carry a 4-byte content size
        batch = 10_000 if comp == "ZSTD" else 3000
        out[comp] = (write_dv(root / f"{comp}.aedat4", ev, comp, batch=batch), ev)
    out["streams"] = (write_dv(root / "streams.aedat4", ev, "ZSTD", imu=True, triggers=True,
                               frames=True), ev)
    return out


@pytest.mark.parametrize("name", ["LZ4", "LZ4_HIGH", "ZSTD", "ZSTD_HIGH", "NONE", "streams"])
def test_dv_written_files_read_exactly(written, name):
    path, ev = written[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_events(path) as r:
            assert r.sensor_size == SensorSize(346, 260)
            assert r.metadata["compression"] == CODEC[name]
            assert r.metadata["n_events"] == len(ev)
            assert np.array_equal(r.read(), ev)
            assert np.array_equal(np.concatenate(list(r.iter_chunks(n_events=7777))), ev)
            t0, t1 = int(ev["t"][3000]), int(ev["t"][21_000])
            assert np.array_equal(r.read_time_range(t0, t1),
                                  ev[(ev["t"] >= t0) & (ev["t"] < t1)])


@pytest.mark.parametrize("peer", ["faery", "aedat", "dv"])
@pytest.mark.parametrize("name", ["LZ4", "ZSTD", "NONE", "streams"])
def test_dv_written_files_equal_peers(written, name, peer):
    path, ev = written[name]
    assert np.array_equal(peer_events(peer, path), ev)


def test_other_streams_are_not_decompressed(written, tmp_path):
    path, ev = written["streams"]
    with Aedat4Reader(path) as r:
        types = {k: s["type"] for k, s in r.metadata["streams"].items()}
        assert sorted(types.values()) == ["EVTS", "FRME", "IMUS", "TRIG"]
        rows = r._table[r._table["stream"] != r.stream]
    data = bytearray(path.read_bytes())
    for off, size in rows[["offset", "size"]].tolist():
        data[off:off + size] = b"\xff" * size  # garbage, but the headers stay valid
    bad = tmp_path / "garbage_streams.aedat4"
    bad.write_bytes(bytes(data))
    assert np.array_equal(read_events(bad), ev)
    stripped = strip_table(bad, tmp_path / "garbage_streams_no_table.aedat4")
    assert np.array_equal(read_events(stripped), ev)


@pytest.mark.parametrize("name", ["LZ4", "ZSTD", "NONE", "streams"])
def test_dv_written_files_without_table(written, name, tmp_path):
    path, ev = written[name]
    stripped = strip_table(path, tmp_path / f"{name}_no_table.aedat4")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_events(stripped) as r:
            assert np.array_equal(r.read(), ev)
            assert np.array_equal(np.concatenate(list(r.iter_chunks(dt_us=20_000))), ev)


def test_two_event_streams(tmp_path):
    ev = known_events(12_000, 346, 260)
    ev2 = known_events(3_000, 32, 24, seed=1)
    ev2["t"] = np.sort(np.random.default_rng(2).integers(ev["t"][0], ev["t"][-1], len(ev2)))
    path = write_dv(tmp_path / "two.aedat4", ev, second_stream=ev2)
    with pytest.warns(EvpipeWarning, match=r"EVTS streams \[0, 1\]: reading stream 0"):
        r = Aedat4Reader(path)
    with r:
        assert np.array_equal(r.read(), ev)
    with Aedat4Reader(path, stream_id=1) as r:
        assert r.sensor_size == SensorSize(32, 24)
        assert np.array_equal(r.read(), ev2)
        assert np.array_equal(np.concatenate(list(r.iter_chunks())), ev2)
    with pytest.raises(FormatError, match="stream 7 is not an EVTS stream"):
        Aedat4Reader(path, stream_id=7)


def test_file_without_event_stream(tmp_path):
    dv = pytest.importorskip("dv_processing")
    cfg = dv.io.MonoCameraWriter.Config("imu_only", dv.CompressionType.LZ4)
    cfg.addImuStream()
    writer = dv.io.MonoCameraWriter(str(tmp_path / "imu.aedat4"), cfg)
    writer.setPackagingCount(1)
    for k in range(5):
        writer.writeImu(dv.data.generate.levelImuMeasurement(T0 + k))
    del writer
    with pytest.warns(EvpipeWarning, match="no EVTS stream"):
        r = open_events(tmp_path / "imu.aedat4")
    with r:
        assert r.sensor_size is None and r.read().dtype == EVENT_DTYPE
        assert len(r.read()) == 0 and list(r.iter_chunks()) == []
        assert len(r.read_time_range(0, 1 << 62)) == 0


# -- hostile input --------------------------------------------------------------------------
@pytest.fixture
def source(request, sample):
    """The real sample, or a dv-processing file of `written` by name."""
    if request.param == "sample":
        return sample
    return request.getfixturevalue("written")[request.param][0]


@pytest.mark.parametrize("source", ["sample", "streams"], indirect=True)
def test_truncation_gives_a_clean_prefix_or_error(source, tmp_path):
    data = source.read_bytes()
    full = read_events(source)
    with Aedat4Reader(source) as r:
        marks, data_start = r._table["offset"].tolist(), r.data_start
    cuts = set(range(0, 40)) | set(np.linspace(40, len(data) - 1, 60).astype(int).tolist())
    for off in marks[:6] + marks[-3:]:
        cuts |= {off - 9, off - 8, off - 4, off, off + 1, off + 100}
    cuts |= {len(data) - 1, len(data) - 10, len(data) - 1000}
    for cut in sorted(c for c in cuts if 0 <= c < len(data)):
        path = tmp_path / "cut.aedat4"
        path.write_bytes(data[:cut])
        with no_crash():
            ev, err = decode_all(path)
        if err is None:
            assert np.array_equal(ev, full[:len(ev)]), cut
        else:  # only a cut IOHeader is an error; a cut packet or table is a warning
            assert isinstance(err, FormatError) and err.path == str(path), cut
            assert err.offset is not None and cut < data_start, (cut, err)


@pytest.mark.parametrize("source", ["sample", "ZSTD", "NONE"], indirect=True)
def test_random_byte_flips_never_crash(source, tmp_path):
    rng = np.random.default_rng(1234)
    data = np.frombuffer(source.read_bytes(), np.uint8)
    tracemalloc.start()
    try:
        for i in range(30):
            bad = data.copy()
            where = rng.integers(0, len(bad), rng.integers(1, 9))
            if i % 3 == 0:  # hit the header and the first packets harder
                where = rng.integers(0, min(len(bad), 5000), len(where))
            bad[where] ^= rng.integers(1, 256, len(where), dtype=np.uint8)
            path = tmp_path / "flip.aedat4"
            path.write_bytes(bad.tobytes())
            tracemalloc.reset_peak()
            with no_crash():
                ev, err = decode_all(path)
            assert tracemalloc.get_traced_memory()[1] < 64 << 20
            if err is not None:
                assert err.path == str(path)
    finally:
        tracemalloc.stop()


def header_field(data: bytes, value: int, fmt: str) -> int:
    """File offset of the unique IOHeader field holding `value`."""
    n = struct.unpack_from("<i", data, 14)[0]
    pattern = struct.pack(fmt, value)
    assert data[18:18 + n].count(pattern) == 1
    return 18 + data[18:18 + n].index(pattern)


def patched(tmp_path, data: bytes, at: int, raw: bytes, name="patched.aedat4"):
    out = bytearray(data)
    out[at:at + len(raw)] = raw
    path = tmp_path / name
    path.write_bytes(bytes(out))
    return path


def test_bad_headers_are_format_errors(sample, tmp_path):
    data = sample.read_bytes()
    cases = [
        (0, b"#!AER-DAT3.1\r\n", 0, "not an AEDAT 4.0 file"),
        (14, struct.pack("<i", 0x7FFF_FFFF), 14, "IOHeader length"),
        (14, struct.pack("<i", -5), 14, "IOHeader length"),
        (header_field(data, 1, "<i"), struct.pack("<i", 9), header_field(data, 1, "<i"),
         "unknown compression 9"),
        (18, struct.pack("<I", 1 << 30), 18, "outside the header"),
        (data.index(b"<dv"), b"<dv <<", 18, "infoNode is not valid XML"),
    ]
    for at, raw, offset, match in cases:
        path = patched(tmp_path, data, at, raw)
        with pytest.raises(FormatError, match=match) as e:
            read_events(path, format="aedat4")
        assert e.value.offset == offset and e.value.path == str(path)


def test_table_problems_fall_back_to_scanning(sample, tmp_path):
    data = sample.read_bytes()
    full = read_events(sample)
    with Aedat4Reader(sample) as r:
        table_pos, first = r.data_end, r._table[0]
    at = header_field(data, table_pos, "<q")
    table = lz4_frame.decompress(data[table_pos:])
    claim = table.replace(struct.pack("<q", int(first["n"])), struct.pack("<q", 1 << 40), 1)
    moved = table.replace(struct.pack("<q", int(first["offset"])),
                          struct.pack("<q", int(first["offset"]) + 16), 1)
    cases = [
        (patched(tmp_path, data, at, struct.pack("<q", len(data) + 5), "a"), "outside the data"),
        (patched(tmp_path, data, at, struct.pack("<q", 1 << 62), "b"), "outside the data"),
        (patched(tmp_path, data, table_pos, b"\x00" * 64, "c"), "data table is not a valid LZ4"),
        (patched(tmp_path, data[:table_pos] + lz4_frame.compress(claim), 0, b"", "d"),
         "data table claims 1099511627776 events"),
        (patched(tmp_path, data[:table_pos] + lz4_frame.compress(moved), 0, b"", "e"),
         "data table entry 0 does not match the packet layout"),
    ]
    for path, match in cases:
        with no_crash() as caught:
            with open_events(path) as r:
                assert not r.metadata["data_table"]
                assert np.array_equal(r.read(), full)
        assert any(match in str(w.message) for w in caught), (match, caught)


def test_table_disagreeing_with_packets_warns_and_scans(sample, tmp_path):
    """The table's size matches the layout but not the packet header (stream id swapped)."""
    data = sample.read_bytes()
    full = read_events(sample)
    with Aedat4Reader(sample) as r:
        rows = r._table
    evts = rows[rows["stream"] == 0]
    off = int(evts[3]["offset"])
    path = patched(tmp_path, data, off - 8, struct.pack("<i", 2))  # now an IMUS packet
    want = full[~np.isin(np.arange(len(full)),
                         np.arange(evts["n"][:3].sum(), evts["n"][:4].sum()))]
    for method in ("read", "chunks"):
        with pytest.warns(EvpipeWarning, match="data table disagrees with the packet") as rec:
            with open_events(path) as r:
                got = r.read() if method == "read" else np.concatenate(list(r.iter_chunks()))
        assert np.array_equal(got, want)
        assert any(f"offset {off - 8}" in str(w.message) for w in rec)


def test_absurd_packet_sizes(sample, tmp_path):
    data = sample.read_bytes()
    with Aedat4Reader(sample) as r:
        first = r.data_start
    stripped = strip_table(sample, tmp_path / "no_table.aedat4").read_bytes()
    for size in (0x7FFF_FFFF, -8):
        path = patched(tmp_path, stripped, first + 4, struct.pack("<i", size))
        with pytest.warns(EvpipeWarning, match=f"offset {first}: packet header claims {size} "
                                               "bytes"):
            assert len(read_events(path)) == 0
    # With the table in place the broken header is caught against the table.
    path = patched(tmp_path, data, first + 4, struct.pack("<i", 0x7FFF_FFFF))
    with pytest.warns(EvpipeWarning):
        assert len(read_events(path)) == 0


def lz4_claiming(frame: bytes, size: int) -> bytes:
    """`frame` (no content size) with an 8-byte content-size field claiming `size` and a
    valid header checksum (LZ4 frame format: FLG bit 3, field after BD)."""
    assert not frame[4] & 0x08
    out = bytearray(frame[:6] + struct.pack("<Q", size) + frame[6:])
    out[4] |= 0x08
    for hc in range(256):
        out[14] = hc
        try:
            lz4_frame.get_frame_info(bytes(out))
            return bytes(out)
        except RuntimeError:
            continue
    raise AssertionError("no header checksum fits")


@pytest.mark.parametrize("source,table", [("sample", False), ("ZSTD", False), ("ZSTD", True)],
                         indirect=["source"])
def test_huge_decompressed_size_claims_allocate_nothing(source, tmp_path, table):
    src, codec = source, "lz4" if source.name == "tonic_sample.aedat4" else "zstd"
    if not table:
        src = strip_table(src, tmp_path / "no_table.aedat4")
    data = src.read_bytes()
    with Aedat4Reader(src) as r:
        off, stream = r.data_start + 8, r.stream
    sid, size = struct.unpack_from("<ii", data, off - 8)
    assert sid == stream
    body = data[off:off + size]
    if codec == "lz4":  # DV writes LZ4 frames without a content size: add one
        bad = lz4_claiming(body, 1 << 40)
    else:
        assert body[4] == 0xA0  # single segment, 4-byte content size at byte 5
        bad = body[:5] + struct.pack("<I", 0xFFFF_FFFF) + body[9:]
    path = tmp_path / "claim.aedat4"
    path.write_bytes(data[:off - 4] + struct.pack("<i", len(bad)) + bad + data[off + size:])
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match="frame claims") as e:
            read_events(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert e.value.offset == off and peak < 16 << 20


def test_bad_event_payloads(written, tmp_path):
    path, ev = written["NONE"]
    data = path.read_bytes()
    with Aedat4Reader(path) as r:
        off = int(r._event_rows()[0]["offset"])
    assert data[off + 8:off + 12] == b"EVTS"
    bad = patched(tmp_path, data, off + 8, b"IMUS")
    with pytest.raises(FormatError, match="wrong FlatBuffer identifier") as e:
        read_events(bad)
    assert e.value.offset == off
    bad = patched(tmp_path, data, off + 4, struct.pack("<I", 1 << 31))
    with pytest.raises(FormatError, match="outside the buffer"):
        read_events(bad)
    # x = -3: kept as its 16 bits, with a warning about the sensor size
    start = off + data[off:off + 64].index(struct.pack("<q", int(ev["t"][0])))
    bad = patched(tmp_path, data, start + 8, struct.pack("<h", -3))
    with pytest.warns(EvpipeWarning, match="events outside the 346x260 sensor"):
        got = read_events(bad)
    assert got["x"][0] == 65533 and np.array_equal(got[1:], ev[1:])
