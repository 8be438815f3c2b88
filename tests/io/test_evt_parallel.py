"""Parallel whole-file decoding of EVT 2.0 / 3.0 (`read()` on all Numba threads): events,
metadata counters and warnings equal the serial decoder's (chunked iteration) wherever the
segment boundaries fall, down to one word per segment: inside vector triples, between an
ERC counter word and the words it skips, before the first TIME_HIGH, across time loops."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import get_num_threads

from evpipe.events import EVENT_DTYPE, SensorSize, make_events
from evpipe.io import EvpipeWarning, open_events, read_events
from evpipe.io.evt import Evt2Reader, write_evt2, write_evt3

COUNTERS = ("dropped_events", "unknown_words", "words_before_time_high")
REAL = ["prophesee_evt2/evt2_sample.raw", "prophesee_evt2/evt2_sparklers_old.raw",
        "prophesee_evt3/evt3_sample.raw", "prophesee_evt3/evt3_pedestrians_small.raw"]


def decode(path, segments=None):
    """(events, counters, warnings) of the serial decoder (segments None: chunked
    iteration) or of read() on `segments` parallel segments."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always", EvpipeWarning)
        with open_events(path) as r:
            if segments is None:
                ev = np.concatenate([np.empty(0, EVENT_DTYPE), *r.iter_chunks()])
            else:
                r.parallel_min_words, r.parallel_segments = 0, segments
                ev = r.read()
            counters = tuple(r.metadata[k] for k in COUNTERS)
    return ev, counters, [str(w.message) for w in rec]


def assert_parallel_equals_serial(path, segment_counts):
    ev, counters, warned = decode(path)
    for segments in segment_counts:
        got, got_counters, got_warned = decode(path, segments)
        assert got.dtype == EVENT_DTYPE
        assert len(got) == len(ev) and (got == ev).all(), segments
        assert (got_counters, got_warned) == (counters, warned), segments
    return ev, counters


def raw_file(path: Path, words, version: str, size=(1280, 720), pad="") -> Path:
    """A RAW file of `words`; `pad` lengthens the header (to misalign the data)."""
    dtype = "<u4" if version == "2.0" else "<u2"
    fmt = "EVT2" if version == "2.0" else "EVT3"
    w, h = size
    header = f"% evt {version}\n% format {fmt};height={h};width={w}\n{pad}% end\n".encode()
    path.write_bytes(header + np.asarray(words, dtype).tobytes())
    return path


def n_words(path) -> int:
    with open_events(path) as r:
        return r.n_words


# -- real files ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", REAL)
def test_real_files(data_dir, name):
    """Up to one segment per word; evt2_sparklers_old.raw has its data at offset 166,
    unaligned for 32-bit words."""
    path = data_dir / name
    assert_parallel_equals_serial(path, [2, 3, 7, 64, 4099, n_words(path)])


@pytest.mark.parametrize("name", REAL[1:3])
def test_real_files_tiled(tmp_path, data_dir, name):
    """Data repeated 3 times: time jumps back at each seam; default settings (one segment
    per Numba thread) use the parallel path when there are several threads."""
    with open_events(data_dir / name) as r:
        start, end = r.data_offset, r.data_offset + r.n_words * r.word_bytes
    raw = (data_dir / name).read_bytes()
    path = tmp_path / "tiled.raw"
    path.write_bytes(raw[:start] + raw[start:end] * 3)
    ev, _ = assert_parallel_equals_serial(path, [2, 5, 1000])
    assert (read_events(path) == ev).all()


def test_default_read_uses_threads(tmp_path, monkeypatch):
    """read() of at least parallel_min_words words goes parallel with > 1 Numba thread."""
    calls = []
    real = Evt2Reader._read_parallel
    monkeypatch.setattr(Evt2Reader, "_read_parallel",
                        lambda self, *a: calls.append(1) or real(self, *a))
    n = Evt2Reader.parallel_min_words
    ev = make_events(np.arange(n) // 3, np.arange(n) % 640, np.arange(n) % 480, np.arange(n) % 2)
    write_evt2(tmp_path / "x.raw", ev, SensorSize(640, 480))
    assert (read_events(tmp_path / "x.raw") == ev).all()
    assert len(calls) == (get_num_threads() > 1)
    write_evt2(tmp_path / "x.raw", ev[:n // 2], SensorSize(640, 480))
    assert (read_events(tmp_path / "x.raw") == ev[:n // 2]).all()
    assert len(calls) == (get_num_threads() > 1)


# -- hand-built streams with every boundary ------------------------------------------------

def evt3(kind, content):
    return (kind << 12) | content


ERC = evt3(0xE, 0x014)
TRIPLE = [evt3(0x3, 0x800 | 1200), evt3(0x4, 0xA05), evt3(0x4, 0xFFF), evt3(0x5, 0x81)]
EVT3_WORDS = ([evt3(0x0, 7), evt3(0x2, 5), evt3(0x8, 100), evt3(0x2, 6)]  # before TIME_HIGH
              + [evt3(0x0, 3), evt3(0x6, 17), evt3(0x2, 1), evt3(0x2, 0x800 | 2)] + TRIPLE
              + [ERC, evt3(0x0, 9), evt3(0x3, 4), evt3(0x2, 3),      # skipped: a row, base, event
                 evt3(0x2, 4), evt3(0x4, 0x00F), evt3(0x5, 0x3)]      # row 3, base 1232 (out)
              + [ERC, ERC, ERC, ERC, evt3(0x2, 8)]                    # ERC skips ERC words
              + [evt3(0x8, 4000), evt3(0x6, 5), evt3(0x0, 700)] + TRIPLE
              + [evt3(0x8, 10), evt3(0x2, 9),                         # time loop
                 evt3(0x8, 10), evt3(0x2, 10), evt3(0x6, 3), evt3(0x8, 11), evt3(0x2, 11),
                 evt3(0x6, 20), evt3(0x8, 11), evt3(0x2, 14)]          # same TIME_HIGH: low 20
              + [evt3(0x1, 0), evt3(0x2, 12), evt3(0x4, 0x1), evt3(0x0, 800), evt3(0x2, 1),
                 evt3(0x0, 1), evt3(0xE, 0x016), evt3(0xF, 0), evt3(0xF, 0), evt3(0x7, 0)]
              + TRIPLE[1:] + [evt3(0xA, 1), evt3(0x9, 0), evt3(0xD, 0), evt3(0x2, 13), ERC])


def test_evt3_every_boundary(tmp_path):
    """Every segment count up to one per word on a stream with vector triples, ERC words
    (also skipping ERC words), loops, type-1 rows and a trailing ERC word."""
    path = raw_file(tmp_path / "x.raw", EVT3_WORDS, "3.0", (1220, 720))
    ev, counters = assert_parallel_equals_serial(path, range(2, len(EVT3_WORDS) + 2))
    assert len(ev) == 33 and counters == (40, 2, 2)
    assert ev[ev["x"] == 14]["t"].tolist() == [(1 << 24) + (11 << 12) + 20]


def test_evt2_every_boundary(tmp_path):
    top = (1 << 28) - 1
    th = [top - 5, top, 3, 2, top - 100, 157, 7, top, 0, 0, 1]  # 2 loops; steps back, one
    # (top - 100 -> 157) just short of a loop
    words = [1 << 28, 0xA << 28]
    for k, v in enumerate(th):
        words += [(0x8 << 28) | v, (1 << 28) | (k << 22) | (k << 11) | k, (0x2 << 28),
                  (1 << 28) | (700 << 11), 0xE << 28]
    path = raw_file(tmp_path / "x.raw", words, "2.0", (640, 480))
    ev, counters = assert_parallel_equals_serial(path, range(2, len(words) + 2))
    assert len(ev) == len(th) and counters == (len(th), len(th), 2)
    assert (ev["t"] >> 34).tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize("version", ["2.0", "3.0"])
@pytest.mark.parametrize("words", [[], [5, 6], [0x8 << 28], [5, 0x8 << 28]])
def test_streams_without_events(tmp_path, version, words):
    if version == "3.0":
        words = [w >> 16 for w in words]
    path = raw_file(tmp_path / "x.raw", words, version)
    ev, _ = assert_parallel_equals_serial(path, [2, 3])
    assert len(ev) == 0


@pytest.mark.parametrize("version,pad", [("2.0", "% ab\n"), ("2.0", "% abc\n"), ("3.0", "% ab\n")])
def test_unaligned_data(tmp_path, version, pad):
    """Data at an offset that is not a multiple of the word size."""
    ev = make_events(np.arange(5000) // 7, np.arange(5000) % 1280, np.arange(5000) % 720,
                     np.arange(5000) % 2)
    good = tmp_path / "good.raw"
    (write_evt2 if version == "2.0" else write_evt3)(good, ev, SensorSize(1280, 720))
    raw = good.read_bytes()
    path = tmp_path / "x.raw"
    path.write_bytes(raw.replace(b"% end\n", pad.encode() + b"% end\n"))
    with open_events(path) as r:
        assert r.data_offset % r.word_bytes
    got, _ = assert_parallel_equals_serial(path, [2, 7])
    assert (got == ev).all()


# -- generated word streams ----------------------------------------------------------------

def _evt2_words(rng, n, size, lead):
    """n random EVT2 words: CD events in and out of the sensor, TIME_HIGH walks with steps
    back and loops, other types; `lead` words before the first TIME_HIGH."""
    w, h = size
    words = []
    th = int(rng.integers(0, 1 << 28))
    for k in range(n):
        r = rng.random()
        if k == lead or (k > lead and r < 0.15):
            th = int(rng.choice([th, th + 1, th - 1, (1 << 28) - 1, 0, th + 300,
                                 rng.integers(0, 1 << 28)])) % (1 << 28)
            words.append((0x8 << 28) | th)
        elif r < 0.85:
            x = int(rng.integers(0, w + 2)) if rng.random() < 0.9 else int(rng.integers(0, 2048))
            y = int(rng.integers(0, h + 2)) if rng.random() < 0.9 else int(rng.integers(0, 2048))
            words.append((int(rng.integers(0, 2)) << 28) | (int(rng.integers(0, 64)) << 22)
                         | (min(x, 2047) << 11) | min(y, 2047))
        else:
            words.append((int(rng.choice([2, 3, 7, 9, 0xA, 0xB, 0xC, 0xD, 0xE, 0xF])) << 28)
                         | int(rng.integers(0, 1 << 28)))
    return words


def _evt3_words(rng, n, size, lead):
    """Random EVT3 tokens: rows in and out of the sensor (system-type bit too), events,
    vector words alone and as VECT_BASE_X + 12/12/8 triples near the right edge, TIME_LOW,
    TIME_HIGH with repeats, steps back and loops, type-1 rows, ERC counter words (followed
    by any words, ERC words included) and other types; `lead` words before the first
    TIME_HIGH."""
    w, h = size
    words = []
    high = int(rng.integers(0, 4096))
    while len(words) < n:
        r = rng.random()
        if len(words) == lead or (len(words) > lead and r < 0.08):
            high = int(rng.choice([high, high + 1, high - 3, (high + 2100) % 4096,
                                   rng.integers(0, 4096)])) % 4096
            words.append(evt3(0x8, high))
        elif r < 0.25:
            words.append(evt3(0x0, min(int(rng.integers(0, h + 3)), 2047)
                              | (0x800 if rng.random() < 0.05 else 0)))
        elif r < 0.5:
            words.append(evt3(0x2, min(int(rng.integers(0, w + 3)), 2047)
                              | (int(rng.integers(0, 2)) << 11)))
        elif r < 0.62:
            bx = min(max(w - int(rng.integers(0, 40)), 0), 2047)
            words += [evt3(0x3, (int(rng.integers(0, 2)) << 11) | bx),
                      evt3(0x4, int(rng.integers(0, 4096))), evt3(0x4, int(rng.integers(0, 4096))),
                      evt3(0x5, int(rng.integers(0, 256)))]
        elif r < 0.72:
            kind = int(rng.choice([0x3, 0x4, 0x5]))
            words.append(evt3(kind, int(rng.integers(0, 4096))))
        elif r < 0.8:
            words.append(evt3(0x6, int(rng.integers(0, 4096))))
        elif r < 0.86:
            words.append(evt3(0xE, int(rng.choice([0x014, 0x016]))))
        else:
            words.append(evt3(int(rng.choice([0x1, 0x7, 0x9, 0xA, 0xB, 0xC, 0xD, 0xE, 0xF])),
                              int(rng.integers(0, 4096))))
    return words[:n]


@st.composite
def word_streams(draw, version):
    size = (draw(st.sampled_from([1, 8, 40, 640, 1280, 2048])),
            draw(st.sampled_from([1, 8, 480, 720, 2048])))
    n = draw(st.integers(0, 400))
    lead = draw(st.integers(0, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    words = (_evt2_words if version == "2.0" else _evt3_words)(rng, n, size, lead)
    return words, size, draw(st.lists(st.integers(2, 500), min_size=1, max_size=3))


@pytest.mark.parametrize("version", ["2.0", "3.0"])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_generated_streams(version, data):
    words, size, segment_counts = data.draw(word_streams(version))
    with tempfile.TemporaryDirectory() as d:
        path = raw_file(Path(d) / "x.raw", words, version, size)
        assert_parallel_equals_serial(path, segment_counts + [max(2, len(words))])


@st.composite
def event_arrays(draw):
    """Events with time loops, backward steps within a loop and runs on one row (EVT3
    vectors)."""
    w = draw(st.integers(1, 2048))
    h = draw(st.integers(1, 2048))
    n = draw(st.integers(0, 400))
    t0 = draw(st.integers(0, 1 << 40))
    step = draw(st.sampled_from([1, 100, 1 << 12, 1 << 23, 1 << 34]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    t = t0 + np.cumsum(rng.integers(0, step + 1, n))
    if draw(st.booleans()):  # steps back, within the 2^24-us loop
        t = np.maximum(t - rng.integers(0, 5000, n), t - t % (1 << 24))
    x = np.minimum(rng.integers(0, w, n) // 8 * 8 + np.arange(n) % 8, w - 1)
    return make_events(t, x, rng.integers(0, h, n) // 16, rng.integers(0, 2, n)), SensorSize(w, h)


@pytest.mark.parametrize("writer", [write_evt2, write_evt3], ids=["evt2", "evt3"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=event_arrays(), segments=st.integers(2, 300))
def test_written_streams(writer, data, segments):
    ev, size = data
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.raw"
        writer(path, ev, size)
        got, counters = assert_parallel_equals_serial(path, [segments, max(2, n_words(path))])
    assert (got == ev).all() and counters == (0, 0, 0)
