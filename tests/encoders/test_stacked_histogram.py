import hashlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evpipe.encoders import ENCODINGS
from evpipe.encoders.stacked_histogram import StackedHistogramParams, to_stacked_histogram
from evpipe.errors import ConfigError
from evpipe.events import EVENT_DTYPE, SensorSize, make_events

from .test_frames import REAL_FILES, random_events, read_real, streams


def reference(ev, size, n_bins, cutoff):
    """The RVT definition in exact NumPy integers: b = min(B-1, B (t - t0) // max(D, 1))
    with t0/t_last = min/max, counts clipped, channel p*B + b."""
    out = np.zeros((2, n_bins, size.height, size.width), np.int64)
    if len(ev):
        t = ev["t"]
        b = np.minimum(n_bins - 1, n_bins * (t - t.min()) // max(t.max() - t.min(), 1))
        np.add.at(out, (ev["p"].astype(int), b, ev["y"], ev["x"]), 1)
    return np.minimum(out, cutoff).reshape(2 * n_bins, size.height, size.width)


def rvt_construct(ev, size, n_bins, cutoff, fastmode=False):
    """RVT StackedHistogram.construct (data/utils/representations.py) transcribed in torch:
    float32 time normalisation, uint8 (fastmode) or int16 accumulation, then the clip."""
    dtype = torch.uint8 if fastmode else torch.int16
    rep = torch.zeros((2, n_bins, size.height, size.width), dtype=dtype)
    if len(ev):
        x, y, pol, time = (torch.from_numpy(ev[k].astype(np.int64)) for k in "xypt")
        t0, t1 = time[0], time[-1]
        t_norm = (time - t0) / max(t1 - t0, 1) * n_bins
        t_idx = torch.clamp(t_norm.floor(), max=n_bins - 1)
        idx = x + size.width * y + size.height * size.width * t_idx.long() + \
            n_bins * size.height * size.width * pol
        rep.put_(idx, torch.ones_like(idx, dtype=dtype), accumulate=True)
        rep = torch.clamp(rep, min=0, max=cutoff)
    return rep.to(torch.uint8).reshape(2 * n_bins, size.height, size.width).numpy()


def gen1_windows(ev, n=6, window_us=50_000):
    """RVT's Gen1 windows: the 50 ms up to each of `n` timestamps (searchsorted left/right)."""
    t = ev["t"]
    for t_end in np.linspace(t[0] + window_us // 2, t[-1], n).astype(np.int64):
        lo = np.searchsorted(t, t_end - window_us, side="left")
        hi = np.searchsorted(t, t_end, side="right")
        yield ev[lo:hi]


@pytest.mark.parametrize("name", sorted(REAL_FILES))
@pytest.mark.parametrize("n_bins,cutoff", [(10, 10), (1, 255), (5, 3)])
def test_real_gen1_windows_match_reference_and_rvt(data_dir, name, n_bins, cutoff):
    ev, size = read_real(data_dir, name)
    for win in gen1_windows(ev):
        h = to_stacked_histogram(win, size, n_bins, cutoff)
        assert h.shape == (2 * n_bins, size.height, size.width) and h.dtype == np.uint8
        np.testing.assert_array_equal(h, reference(win, size, n_bins, cutoff))
        np.testing.assert_array_equal(h, rvt_construct(win, size, n_bins, cutoff))
        np.testing.assert_array_equal(h, rvt_construct(win, size, n_bins, cutoff, True))


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_whole_real_files_match_reference(data_dir, name):
    ev, size = read_real(data_dir, name)
    np.testing.assert_array_equal(to_stacked_histogram(ev, size), reference(ev, size, 10, 10))


@settings(max_examples=80, deadline=None)
@given(streams, st.integers(1, 12), st.integers(1, 255), st.booleans())
def test_random_streams_match_reference(stream, n_bins, cutoff, ordered):
    n, w, h, span, seed = stream
    ev = random_events(n, w, h, span, seed, ordered)
    size = SensorSize(w, h)
    out = to_stacked_histogram(ev, size, n_bins, cutoff)
    np.testing.assert_array_equal(out, reference(ev, size, n_bins, cutoff))
    if ordered:
        np.testing.assert_array_equal(out, rvt_construct(ev, size, n_bins, cutoff))


def test_layout_is_polarity_major():
    # t0 = 0, t_last = 100, B = 4: t = 30 -> bin 1, t = 100 -> bin 3 (clamped from 4).
    ev = make_events([0, 30, 100], [0, 1, 2], [0, 0, 1], [1, 0, 1])
    h = to_stacked_histogram(ev, (3, 2), n_bins=4)
    assert h[4 + 0, 0, 0] == 1 and h[1, 0, 1] == 1 and h[4 + 3, 1, 2] == 1 and h.sum() == 3


def test_integer_bins_where_rvt_float32_rounds_up():
    """Documented difference: RVT divides in float32; over a 17 s window an event just
    below the bin-18 boundary lands in bin 18 there, in bin 17 here (exact)."""
    span, n_bins, u = 17_012_484, 21, 14_582_129
    assert n_bins * u // span == 17 and (n_bins * u) / span < 18
    ev = make_events([0, u, span], [0, 1, 0], [0, 0, 0], [0, 0, 0])
    size = SensorSize(2, 1)
    assert to_stacked_histogram(ev, size, n_bins)[17, 0, 1] == 1
    assert rvt_construct(ev, size, n_bins, 10)[18, 0, 1] == 1


def test_counts_clip_without_wrapping():
    """RVT's fastmode adds in uint8, so 260 events wrap to 4 before the clip; here 10."""
    ev = make_events(np.arange(260), [0] * 260, [0] * 260, [1] * 260)
    size = SensorSize(1, 1)
    assert to_stacked_histogram(ev, size, 1, 10)[1, 0, 0] == 10
    assert to_stacked_histogram(ev, size, 1, 255)[1, 0, 0] == 255
    assert rvt_construct(ev, size, 1, 10, fastmode=True)[1, 0, 0] == 4


def test_edge_cases():
    size = SensorSize(4, 3)
    empty = to_stacked_histogram(np.zeros(0, EVENT_DTYPE), size)
    assert empty.shape == (20, 3, 4) and not empty.any()
    one = to_stacked_histogram(make_events([7], [3], [2], [1]), size)
    assert one[10, 2, 3] == 1 and one.sum() == 1  # span 0 counts as 1: bin 0
    same_t = make_events([9] * 4, [0, 1, 1, 3], [0] * 4, [0, 1, 1, 1])
    h = to_stacked_histogram(same_t, size, 3)
    assert h[0, 0].tolist() == [1, 0, 0, 0] and h[3, 0].tolist() == [0, 2, 0, 1]
    assert h.sum() == 4
    # Unsorted input: t0/t_last are min/max, same histogram as sorted.
    ev = random_events(200, 4, 3, 10**5, 3, ordered=False)
    np.testing.assert_array_equal(to_stacked_histogram(ev, size),
                                  to_stacked_histogram(np.sort(ev, order="t"), size))


@pytest.mark.parametrize("field,value,msg", [
    ("x", 4, "outside the 4x3 sensor"), ("y", 3, "outside the 4x3 sensor"),
    ("p", -1, "polarity must be 0 or 1"),
])
def test_events_outside_the_sensor_are_rejected(field, value, msg):
    ev = random_events(50, 4, 3, 1000, 1)
    ev[field][17] = value
    with pytest.raises(ConfigError, match=f"event 17 .*{msg}"):
        to_stacked_histogram(ev, (4, 3))


@pytest.mark.parametrize("kwargs,msg", [
    ({"n_bins": 0}, r"n_bins must be in 1\.\.4096, got 0"),
    ({"cutoff": 0}, r"cutoff must be in 1\.\.255, got 0"),
    ({"cutoff": 256}, r"cutoff must be in 1\.\.255, got 256"),
    ({"n_bins": "10"}, "n_bins must be an integer"),
])
def test_bad_parameters(kwargs, msg):
    with pytest.raises(ConfigError, match=msg):
        StackedHistogramParams(**kwargs)
    with pytest.raises(ConfigError, match=msg):
        to_stacked_histogram(np.zeros(0, EVENT_DTYPE), (2, 2), **kwargs)


def test_registered_encoding(data_dir):
    enc = ENCODINGS.get("stacked_histogram")
    assert enc.inputs == ("events",) and enc.fixed == ("stacked_histogram",)
    assert StackedHistogramParams() == StackedHistogramParams(n_bins=10, cutoff=10)
    ev, size = read_real(data_dir, "ncars_dat")
    out = enc.make().encode(ev, sensor_size=size)
    np.testing.assert_array_equal(out["stacked_histogram"], to_stacked_histogram(ev, size))


def test_golden_digest(data_dir):
    """Bit-exact regression guard on a real file."""
    ev, size = read_real(data_dir, "ncars_dat")
    digest = hashlib.sha256(to_stacked_histogram(ev, size).tobytes()).hexdigest()[:16]
    assert digest == GOLDEN


GOLDEN = "1b58a45c97330b72"
