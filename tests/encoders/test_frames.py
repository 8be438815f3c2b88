import hashlib

import numpy as np
import pytest
import tonic.functional as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from evpipe.encoders import ENCODINGS, encode_record
from evpipe.encoders.frames import FramesParams, to_frames
from evpipe.errors import ConfigError
from evpipe.events import EVENT_DTYPE, SensorSize, make_events
from evpipe.io import read_events, read_spike_frames

# Real event files (../shared/data) and their sensors, shared by the event-tensor tests.
REAL_FILES = {
    "ncars_dat": ("prophesee_dat/NCARS_obj_004397_td.dat", SensorSize(304, 240)),
    "evt3": ("prophesee_evt3/evt3_pedestrians_small.raw", SensorSize(1280, 720)),
    "aedat4": ("aedat4/tonic_sample.aedat4", SensorSize(320, 240)),
    "nmnist": ("nmnist_bin/tonic_sample_nmnist.bin", SensorSize(34, 34)),
}


def read_real(data_dir, name):
    path, size = REAL_FILES[name]
    return read_events(data_dir / path), size


def random_events(n, width, height, span, seed, ordered=True):
    """n events on a width x height sensor, t in [1000, 1000 + span], ties likely."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, span + 1, n) + 1000
    return make_events(np.sort(t) if ordered else t, rng.integers(0, width, n),
                       rng.integers(0, height, n), rng.integers(0, 2, n))


# (n, width, height, span, seed) of a random stream.
streams = st.tuples(st.integers(0, 300), st.integers(1, 9), st.integers(1, 9),
                    st.sampled_from([0, 1, 7, 100, 10**6]), st.integers(0, 2**32 - 1))


def sj_reference(ev, size, n_bins, split_by):
    """SpikingJelly integrate_events_by_fixed_frames_number in NumPy (int64 counts), with
    empty bins allowed and t_first/t_last = min/max."""
    out = np.zeros((n_bins, 2, size.height, size.width), np.int64)
    n = len(ev)
    if n == 0:
        return out
    if split_by == "number":
        di = n // n_bins
        j_l = np.arange(n_bins) * di
        j_r = j_l + di
        j_r[-1] = n
        masks = [(np.arange(n) >= lo) & (np.arange(n) < hi) for lo, hi in zip(j_l, j_r)]
    else:
        t = ev["t"]
        t0 = t.min()
        dt = (t.max() - t0) // n_bins
        masks = [(t >= t0 + j * dt) & ((t < t0 + (j + 1) * dt) | (j == n_bins - 1))
                 for j in range(n_bins)]
    for j, m in enumerate(masks):
        np.add.at(out[j], (ev["p"][m].astype(int), ev["y"][m], ev["x"][m]), 1)
    return out


@pytest.mark.parametrize("name", sorted(REAL_FILES))
@pytest.mark.parametrize("split_by", ["time", "number"])
@pytest.mark.parametrize("n_bins", [1, 3, 10])
def test_real_files_match_spikingjelly_reference(data_dir, name, split_by, n_bins):
    ev, size = read_real(data_dir, name)
    f = to_frames(ev, size, n_bins, split_by)
    assert f.shape == (n_bins, 2, size.height, size.width) and f.dtype == np.uint16
    np.testing.assert_array_equal(f, sj_reference(ev, size, n_bins, split_by))
    assert f.sum() == len(ev)


@pytest.mark.parametrize("name", sorted(REAL_FILES))
@pytest.mark.parametrize("n_bins", [2, 7, 10])
def test_tonic_time_bins_equal_except_the_dropped_tail(data_dir, name, n_bins):
    """tonic ToFrame(n_time_bins=M): same bins [t0 + j dT, t0 + (j+1) dT), but events at
    t >= t0 + M dT are dropped instead of counted in the last bin."""
    ev, size = read_real(data_dir, name)
    ours = to_frames(ev, size, n_bins, "time").astype(np.int64)
    theirs = tf.to_frame_numpy(ev.copy(), (*size, 2), n_time_bins=n_bins).astype(np.int64)
    dt = (ev["t"][-1] - ev["t"][0]) // n_bins
    tail = ev[ev["t"] >= ev["t"][0] + n_bins * dt]
    assert len(tail) >= 1  # the last event at least
    np.testing.assert_array_equal(ours[:-1], theirs[:-1])
    np.testing.assert_array_equal(ours[-1] - theirs[-1], to_frames(tail, size, 1)[0])


@pytest.mark.parametrize("name", sorted(REAL_FILES))
@pytest.mark.parametrize("n_bins", [3, 7, 10])
def test_tonic_event_bins_equal_except_the_dropped_rest(data_dir, name, n_bins):
    """tonic ToFrame(n_event_bins=M): floor(N/M) events per bin, the last N - M*floor(N/M)
    dropped instead of counted in the last bin."""
    ev, size = read_real(data_dir, name)
    ours = to_frames(ev, size, n_bins, "number").astype(np.int64)
    theirs = tf.to_frame_numpy(ev.copy(), (*size, 2), n_event_bins=n_bins).astype(np.int64)
    rest = ev[n_bins * (len(ev) // n_bins):]
    np.testing.assert_array_equal(ours[:-1], theirs[:-1])
    np.testing.assert_array_equal(ours[-1] - theirs[-1], to_frames(rest, size, 1)[0])
    if len(rest) == 0:
        np.testing.assert_array_equal(ours, theirs)


@settings(max_examples=80, deadline=None)
@given(streams, st.integers(1, 6), st.sampled_from(["time", "number"]), st.booleans())
def test_random_streams_match_reference(stream, n_bins, split_by, ordered):
    n, w, h, span, seed = stream
    ev = random_events(n, w, h, span, seed, ordered)
    size = SensorSize(w, h)
    f = to_frames(ev, size, n_bins, split_by)
    np.testing.assert_array_equal(f, sj_reference(ev, size, n_bins, split_by))
    if split_by == "time":  # bins from min/max: event order does not matter
        np.testing.assert_array_equal(f, to_frames(np.sort(ev, order="t"), size, n_bins))


def test_edge_cases():
    size = SensorSize(4, 3)
    same_t = make_events([9] * 4, [0, 1, 2, 3], [0] * 4, [0, 1, 0, 1])
    for split_by in ("time", "number"):
        empty = to_frames(np.zeros(0, EVENT_DTYPE), size, 5, split_by)
        assert empty.shape == (5, 2, 3, 4) and not empty.any()
        one = to_frames(make_events([7], [3], [2], [1]), size, 5, split_by)
        assert one[4, 1, 2, 3] == 1 and one.sum() == 1  # alone in the last bin
        assert to_frames(same_t, (4, 3), 2, split_by).sum() == 4
    # One timestamp: dT = 0, so every bin but the last is empty.
    assert to_frames(same_t, size, 3, "time")[2].sum() == 4
    # Fewer events than bins: floor(N/M) = 0 per bin, all in the last.
    assert to_frames(same_t, size, 6, "number")[5].sum() == 4
    # Exact bin edges: dT = 10; t = 9 -> bin 0, 10 -> bin 1, 30 (t_last) -> bin 2.
    ev = make_events([0, 9, 10, 29, 30], [0] * 5, [0] * 5, [1] * 5)
    assert to_frames(ev, size, 3, "time")[:, 1, 0, 0].tolist() == [2, 1, 2]


@pytest.mark.parametrize("split_by", ["time", "number"])
@pytest.mark.parametrize("field,value,msg", [
    ("x", 4, "outside the 4x3 sensor"), ("y", 3, "outside the 4x3 sensor"),
    ("p", 2, "polarity must be 0 or 1"), ("p", -1, "polarity must be 0 or 1"),
])
def test_events_outside_the_sensor_are_rejected(split_by, field, value, msg):
    ev = random_events(50, 4, 3, 1000, 1)
    ev[field][17] = value
    with pytest.raises(ConfigError, match=f"event 17 .*{msg}"):
        to_frames(ev, (4, 3), 4, split_by)


def test_foreign_layout_and_negative_coordinates():
    """tonic-style layouts (int64 x/y, bool p, other field order) are read by name."""
    dtype = np.dtype([("x", "<i8"), ("y", "<i8"), ("p", "?"), ("t", "<i8")])
    ev = np.zeros(3, dtype)
    ev["x"], ev["y"], ev["p"], ev["t"] = [0, 1, 2], [0, 1, 1], [True, False, True], [5, 6, 7]
    f = to_frames(ev, (3, 2), 1, "number")
    assert f[0, 1, 0, 0] == 1 and f[0, 0, 1, 1] == 1 and f[0, 1, 1, 2] == 1
    ev["x"][1] = -1
    with pytest.raises(ConfigError, match="event 1 .*outside"):
        to_frames(ev, (3, 2), 1)
    with pytest.raises(ConfigError, match="fields t, x, y, p"):
        to_frames(np.zeros(3, [("t", "<i8"), ("x", "<u2")]), (3, 2), 1)
    with pytest.raises(ConfigError, match="field t must be integer"):
        to_frames(np.zeros(3, [("t", "<f8"), ("x", "<u2"), ("y", "<u2"), ("p", "i1")]),
                  (3, 2), 1)
    with pytest.raises(ConfigError, match="sensor_size"):
        to_frames(ev, None, 1)


def test_counts_saturate_at_the_dtype_maximum():
    ev = make_events(np.arange(70000), [1] * 70000, [0] * 70000, [1] * 70000)
    assert to_frames(ev, (2, 1), 1, dtype="uint8")[0, 1, 0, 1] == 255
    assert to_frames(ev, (2, 1), 1)[0, 1, 0, 1] == 65535
    i32 = to_frames(ev, (2, 1), 1, dtype="int32")
    assert i32.dtype == np.int32 and i32[0, 1, 0, 1] == 70000


def spike_reference(s, n_bins):
    per = len(s) // n_bins
    edges = [j * per for j in range(n_bins)] + [len(s)]
    return np.stack([s[a:b].sum(axis=0, dtype=np.int64)[None] for a, b in zip(edges, edges[1:])])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 40), st.integers(1, 8), st.integers(1, 6), st.integers(1, 7),
       st.integers(0, 2**32 - 1))
def test_spike_frames_counts_per_bin(n_frames, h, w, n_bins, seed):
    s = (np.random.default_rng(seed).random((n_frames, h, w)) < 0.3).astype(np.uint8)
    for split_by in ("time", "number"):
        f = to_frames(s, None, n_bins, split_by)
        assert f.shape == (n_bins, 1, h, w) and f.dtype == np.uint16
        np.testing.assert_array_equal(f, spike_reference(s, n_bins))
    np.testing.assert_array_equal(to_frames(s.astype(bool), (w, h), n_bins), f)


def test_real_spike_camera_file(data_dir):
    s = read_spike_frames(data_dir / "spike_dat" / "spikeREDS_200_part1_key_id151.dat")
    f = to_frames(s, (400, 250), 8)
    assert f.shape == (8, 1, 250, 400)
    np.testing.assert_array_equal(f, spike_reference(s, 8))
    assert f.sum() == s.sum()


def test_bad_spike_frames():
    s = np.zeros((5, 2, 3), np.uint8)
    s[3, 1, 2] = 255
    with pytest.raises(ConfigError, match="spike frame 3 holds values other than 0 and 1"):
        to_frames(s, None, 2)
    with pytest.raises(ConfigError, match=r"spike frames are 3x2 \(WxH\), sensor_size says 2x3"):
        to_frames(np.zeros((5, 2, 3), np.uint8), (2, 3), 2)
    with pytest.raises(ConfigError, match="uint8 or bool"):
        to_frames(np.zeros((5, 2, 3), np.float32), None, 2)
    with pytest.raises(ConfigError, match="uint8 or bool"):
        to_frames(np.zeros((2, 3), np.uint8), None, 2)


@pytest.mark.parametrize("kwargs,msg", [
    ({"n_bins": 0}, r"n_bins must be in 1\.\.4096, got 0"),
    ({"n_bins": 2.5}, "n_bins must be an integer"),
    ({"split_by": "count"}, "split_by must be one of time, number"),
    ({"dtype": "float32"}, "dtype must be one of uint8, uint16, int32"),
])
def test_bad_parameters(kwargs, msg):
    with pytest.raises(ConfigError, match=msg):
        FramesParams(**kwargs)
    args = {"n_bins": 3, "split_by": "time", "dtype": "uint16"} | kwargs
    with pytest.raises(ConfigError, match=msg):
        to_frames(np.zeros(0, EVENT_DTYPE), (2, 2), **args)


def test_registered_encoding(data_dir):
    enc = ENCODINGS.get("frames")
    assert enc.inputs == ("events", "spikes") and enc.fixed == ("frames",)
    params = enc.make(n_bins=4, split_by="number")
    ev, size = read_real(data_dir, "ncars_dat")
    rec = encode_record(params, "events", {"id": "a", "events": ev, "sensor_size": size,
                                           "label": 1})
    assert set(rec) == {"id", "frames", "label"}
    np.testing.assert_array_equal(rec["frames"], to_frames(ev, size, 4, "number"))
    spikes = np.ones((6, 2, 3), np.uint8)
    rec = encode_record(params, "spikes", {"id": "b", "spikes": spikes})
    assert rec["frames"].shape == (4, 1, 2, 3) and rec["frames"][-1].max() == 3


def test_golden_digest(data_dir):
    """Bit-exact regression guard on a real file."""
    ev, size = read_real(data_dir, "ncars_dat")
    digest = hashlib.sha256(to_frames(ev, size, 10).tobytes()).hexdigest()[:16]
    assert digest == GOLDEN


GOLDEN = "85f75698194d0684"


def test_wide_index_scratch_gives_the_same_frames():
    """The uint64 index scratch (outputs of 2^32 cells or more) counts as the uint32 one."""
    from evpipe.encoders.frames import _frames_by_time, event_fields
    ev = random_events(5000, 40, 30, 10_000, 3, True)
    t, x, y, p = event_fields(ev)
    outs = []
    for dtype in (np.uint32, np.uint64):
        out = np.zeros((4, 2, 30, 40), np.uint16)
        status = _frames_by_time(t, x, y, p, int(t[0]), int(t[-1] - t[0]), 40, 30, out,
                                 65535, np.empty(len(t), dtype))
        assert status == -1
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], to_frames(ev, SensorSize(40, 30), 4))
