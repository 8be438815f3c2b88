import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evpipe.encoders.base import ENCODINGS, encode_record, sample_rng
from evpipe.encoders.event_cloud import EventCloudParams, event_cloud
from evpipe.errors import ConfigError, EvpipeError
from evpipe.events import make_events
from evpipe.io import read_events


def sq(p, c):
    d = p - c
    return d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2]


def numpy_event_cloud(ev, size, window_us=500_000, stride_us=250_000, min_events=100,
                      n_points=1024, n_groups=512, k=24, mode="abs", std_scope="window",
                      seed=0):
    """EventMamba's steps written out plainly (uti.get_window_index, shuffle_downsample,
    normaliztion; modules.furthest_point_sample, knn_point, LocalGrouper "anchor")."""
    rng = np.random.default_rng(seed)
    W, H = size
    t = ev["t"].astype(np.int64)
    starts, ends = [], []
    if len(t):
        if window_us is None:
            starts, ends = [t[0]], [t[-1] + 1]
        else:
            s = t[0]
            while s + window_us < t[-1]:
                starts.append(s)
                s += stride_us
            ends = [s + window_us for s in starts]
    out = {"windows": [], "points": [], "centroid_index": [], "neighbor_index": [],
           "centroids": [], "groups": []}
    for s, e in zip(starts, ends):
        members = np.flatnonzero((t >= s) & (t < e))
        n = len(members)
        if n <= min_events:
            continue
        idx = (rng.choice(n, n_points, replace=False, shuffle=False) if n >= n_points
               else rng.integers(0, n, n_points))
        w = ev[members[np.sort(idx)]]
        tw = w["t"]
        pts = np.stack([w["x"] / np.float64(W), w["y"] / np.float64(H),
                        (tw - tw.min()) / (np.float64(tw.max() - tw.min()) + 1e-6)], 1)
        pts = pts.astype(np.float32)
        out["windows"].append((s, e))
        out["points"].append(pts)
        if n_groups is None:
            continue
        far = int(rng.integers(0, n_points))
        p = pts.astype(np.float64)
        dist = np.full(n_points, np.inf)
        cent = []
        for _ in range(n_groups):
            cent.append(far)
            dist = np.minimum(dist, sq(p, p[far]))
            far = int(np.argmax(dist))
        cent = np.sort(cent)
        nbrs = np.array([np.sort(np.lexsort((np.arange(n_points), sq(p, p[c])))[:k])
                         for c in cent])
        off = p[nbrs] - p[cent][:, None, :]
        axes = (0, 1) if std_scope == "axis" else None
        sigma = off.std(axis=axes, ddof=1) if off.size // (1 if axes is None else 3) > 1 else 0.0
        g = off / (sigma + 1e-5)
        if mode == "abs":
            feats = np.abs(g)
        elif mode == "shift":
            peak = np.abs(g).max(axis=axes)
            feats = np.where(peak > 0, 0.5 + g / (2 * np.where(peak > 0, peak, 1)), 0.5)
        else:
            feats = np.concatenate([np.maximum(g, 0), np.maximum(-g, 0)], axis=-1)
        cen = np.broadcast_to(p[cent][:, None, :], (n_groups, k, 3))
        out["groups"].append(np.clip(np.concatenate([feats, cen], -1), 0, 1).astype(np.float32))
        out["centroids"].append(pts[cent])
        out["centroid_index"].append(cent)
        out["neighbor_index"].append(nbrs)
    c = 9 if mode == "split" else 6
    n_groups = n_groups or 0
    empty = {"windows": (0, 2), "points": (0, n_points, 3), "centroid_index": (0, n_groups),
             "neighbor_index": (0, n_groups, k), "centroids": (0, n_groups, 3),
             "groups": (0, n_groups, k, c)}
    return {name: np.array(v) if v else np.zeros(empty[name]) for name, v in out.items()}


def assert_matches(r, ref, grouped=True):
    np.testing.assert_array_equal(r.windows, ref["windows"].reshape(-1, 2))
    assert r.windows.dtype == np.int64 and r.points.dtype == np.float32
    np.testing.assert_allclose(r.points, ref["points"].reshape(r.points.shape), rtol=0, atol=1e-6)
    if not grouped:
        assert r.groups is None and r.centroids is None
        return
    for name in ("centroid_index", "neighbor_index"):
        got = getattr(r, name)
        np.testing.assert_array_equal(got, ref[name].reshape(got.shape))
    np.testing.assert_array_equal(r.centroids, ref["centroids"].reshape(r.centroids.shape))
    np.testing.assert_allclose(r.groups, ref["groups"].reshape(r.groups.shape), rtol=0, atol=1e-6)
    assert r.groups.dtype == np.float32 and r.centroid_index.dtype == np.int32
    assert np.all((r.groups >= 0) & (r.groups <= 1))


@pytest.mark.parametrize("mode,std_scope", [("abs", "window"), ("shift", "window"),
                                            ("split", "window"), ("abs", "axis"),
                                            ("shift", "axis")])
def test_real_aedat4_matches_numpy(data_dir, mode, std_scope):
    ev = read_events(data_dir / "aedat4" / "tonic_sample.aedat4")
    kw = dict(window_us=100_000, stride_us=50_000, n_points=512, n_groups=128, k=16,
              mode=mode, std_scope=std_scope)
    r = event_cloud(ev, (320, 240), seed=5, **kw)
    ref = numpy_event_cloud(ev, (320, 240), seed=5, **kw)
    assert len(r.windows) == 10
    assert_matches(r, ref)
    assert r.groups.shape == (10, 128, 16, 9 if mode == "split" else 6)
    # Points keep time order and span the window's normalised time.
    assert np.all(np.diff(r.points[..., 2], axis=1) >= 0)
    assert np.all(r.points[:, 0, 2] == 0) and np.all(r.points[:, -1, 2] > 0.99)


def test_real_aedat4_gesture_defaults(data_dir):
    # 0.59 s at the DVS128 Gesture recipe: one 0.5 s window of ~95k events.
    ev = read_events(data_dir / "aedat4" / "tonic_sample.aedat4")
    r = event_cloud(ev, (320, 240), seed=1)
    assert_matches(r, numpy_event_cloud(ev, (320, 240), seed=1))
    assert r.points.shape == (1, 1024, 3) and r.groups.shape == (1, 512, 24, 6)
    assert r.windows[0, 1] - r.windows[0, 0] == 500_000
    # Each group holds its centroid (distance 0 comes first among distinct points).
    for i, c in enumerate(r.centroid_index[0]):
        assert c in r.neighbor_index[0, i]


def test_real_evt3_with_replacement(data_dir):
    ev = read_events(data_dir / "prophesee_evt3" / "evt3_pedestrians_small.raw")
    kw = dict(window_us=10_000, stride_us=5_000, min_events=50, n_points=2048, n_groups=64,
              k=32, mode="split")
    r = event_cloud(ev, (1280, 720), seed=2, **kw)
    assert_matches(r, numpy_event_cloud(ev, (1280, 720), seed=2, **kw))
    counts = [np.count_nonzero((ev["t"] >= s) & (ev["t"] < e)) for s, e in r.windows]
    assert len(r.windows) >= 5 and max(counts) < 2048  # N above every window's count


@st.composite
def streams(draw):
    n = draw(st.integers(0, 300))
    dt = draw(st.lists(st.integers(0, 40), min_size=n, max_size=n))
    x = draw(st.lists(st.integers(0, 15), min_size=n, max_size=n))
    y = draw(st.lists(st.integers(0, 11), min_size=n, max_size=n))
    return make_events(np.cumsum(np.array(dt, np.int64)) + 1000, x, y, np.zeros(n, np.int8))


@settings(max_examples=80, deadline=None)
@given(streams(), st.sampled_from([None, 200, 500]), st.integers(20, 300), st.integers(0, 30),
       st.integers(1, 64), st.data())
def test_random_streams_match_numpy(ev, window_us, stride_us, min_events, n_points, data):
    n_groups = data.draw(st.one_of(st.none(), st.integers(1, n_points)))
    k = data.draw(st.integers(1, n_points))
    mode = data.draw(st.sampled_from(["abs", "shift", "split"]))
    std_scope = data.draw(st.sampled_from(["window", "axis"]))
    kw = dict(window_us=window_us, stride_us=stride_us, min_events=min_events,
              n_points=n_points, n_groups=n_groups, k=k, mode=mode, std_scope=std_scope)
    r = event_cloud(ev, (16, 12), seed=9, **kw)
    assert_matches(r, numpy_event_cloud(ev, (16, 12), seed=9, **kw), grouped=n_groups is not None)


def test_deterministic_per_seed():
    rng = np.random.default_rng(0)
    n = 20000
    ev = make_events(np.sort(rng.integers(0, 900_000, n)), rng.integers(0, 128, n),
                     rng.integers(0, 128, n), rng.integers(0, 2, n))
    a = event_cloud(ev, (128, 128), seed=3)
    b = event_cloud(ev, (128, 128), seed=np.random.default_rng(3))
    for x, y in zip(a, b):
        assert x.tobytes() == y.tobytes()
    c = event_cloud(ev, (128, 128), seed=4)
    np.testing.assert_array_equal(a.windows, c.windows)
    assert not np.array_equal(a.points, c.points) and not np.array_equal(a.groups, c.groups)
    assert len(a.windows) == 2


def test_edge_cases():
    size = (8, 8)
    empty = event_cloud(make_events([], [], [], []), size, seed=0)
    assert empty.points.shape == (0, 1024, 3) and empty.windows.shape == (0, 2)
    assert empty.groups.shape == (0, 512, 24, 6) and empty.neighbor_index.shape == (0, 512, 24)
    one = make_events([5], [3], [4], [1])
    assert len(event_cloud(one, size, seed=0).windows) == 0
    # The whole input as one window: a single event sampled N times.
    r = event_cloud(one, size, window_us=None, min_events=0, n_points=16, n_groups=4, k=3,
                    mode="shift", seed=0)
    np.testing.assert_array_equal(r.windows, [[5, 6]])
    np.testing.assert_array_equal(r.points[0], np.tile([3 / 8, 4 / 8, 0], (16, 1)))
    assert np.all(r.groups[..., :3] == 0.5) and np.all(r.groups[..., 3:] == r.points[0, 0])
    # All events at one timestamp: no sliding window fits (EventMamba needs start + L < t_last).
    same = make_events(np.full(500, 7), np.arange(500) % 8, np.arange(500) // 8 % 8, 0)
    assert len(event_cloud(same, size, seed=0).windows) == 0
    whole = event_cloud(same, size, window_us=None, n_points=64, n_groups=8, k=4, seed=0)
    assert np.all(whole.points[0, :, 2] == 0)
    # Windows with too few events are dropped: 200 events, a gap, 50 events.
    t = np.concatenate([np.arange(200) * 1000, 2_000_000 + np.arange(50) * 1000, [4_000_000]])
    ev = make_events(t, t % 8, t // 7 % 8, 0)
    r = event_cloud(ev, size, window_us=500_000, stride_us=500_000, seed=0)
    np.testing.assert_array_equal(r.windows, [[0, 500_000]])


@pytest.mark.parametrize("x,y,t,msg", [
    ([1, 8], [0, 0], [0, 1], "event 1 .*x outside 0..7"),
    ([1, 2], [0, 9], [0, 1], "event 1 .*y outside 0..7"),
    ([1, 2, 3], [0, 0, 0], [0, 5, 4], "event 2 .*time earlier"),
])
def test_bad_events_rejected_before_any_draw(x, y, t, msg):
    rng = np.random.default_rng(1)
    state = rng.bit_generator.state
    with pytest.raises(EvpipeError, match=msg):
        event_cloud(make_events(t, x, y, [0] * len(t)), (8, 8), window_us=None, min_events=0,
                    n_points=4, n_groups=2, k=2, seed=rng)
    assert rng.bit_generator.state == state


@pytest.mark.parametrize("kwargs,msg", [
    ({"n_groups": 2000}, "n_groups"), ({"k": 0}, "k must"), ({"k": 1025}, "k must"),
    ({"mode": "relu"}, "mode"), ({"std_scope": "group"}, "std_scope"),
    ({"window_us": -1}, "window_us"), ({"n_groups": -1}, "n_groups"), ({"stride_us": -1}, "stride_us"),
    ({"min_events": -1}, "min_events"), ({"n_points": 0}, "n_points"),
    ({"seed": -3}, "seed"), ({"sensor_size": (0, 5)}, "sensor_size"),
    ({"events": np.zeros(3)}, "fields t, x, y"), ({"stride_us": 1}, "windows"),
])
def test_bad_parameters(kwargs, msg):
    args = {"events": make_events([0, 10**7], [0, 1], [0, 1], [0, 1]), "sensor_size": (4, 4)}
    args |= kwargs
    with pytest.raises(ConfigError, match=msg):
        event_cloud(**args)


def test_encoding_record_and_stats(data_dir):
    ev = read_events(data_dir / "aedat4" / "tonic_sample.aedat4")
    spec = ENCODINGS.get("event_cloud")
    assert spec.inputs == ("events",) and spec.fixed == ()
    params = spec.make(window_us=200_000, stride_us=100_000, seed=7)
    rec = encode_record(params, "events", {"id": "u1", "events": ev, "sensor_size": (320, 240),
                                           "label": 4})
    assert set(rec) == {"id", "label", "points", "windows", "groups", "centroids"}
    r = event_cloud(ev, (320, 240), 200_000, 100_000, seed=sample_rng(7, "u1"))
    for name in ("points", "windows", "groups", "centroids"):
        assert rec[name].tobytes() == getattr(r, name).tobytes()
    assert params.stats(rec) == {"windows": 4}
    other = params.encode(ev, (320, 240), "u2")
    assert not np.array_equal(other["points"], rec["points"])
    flat = EventCloudParams(n_groups=0).encode(ev, (320, 240), "u1")
    assert set(flat) == {"points", "windows"}
    np.testing.assert_array_equal(flat["points"], EventCloudParams(n_groups=None).encode(
        ev, (320, 240), "u1")["points"])
    whole = EventCloudParams(window_us=0).encode(ev, (320, 240), "u1")["windows"]
    np.testing.assert_array_equal(whole, [[ev["t"][0], ev["t"][-1] + 1]])
    with pytest.raises(ConfigError, match="sensor_size"):
        params.encode(ev, None, "u1")
    for kwargs in ({"mode": "x"}, {"seed": -1}, {"n_groups": 2000}, {"k": 0}):
        with pytest.raises(ConfigError):
            EventCloudParams(**kwargs)
