import numpy as np
import pytest
import tonic.functional as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from evpipe.encoders import ENCODINGS
from evpipe.encoders.time_surface import TimeSurfaceParams, to_time_surface
from evpipe.errors import ConfigError
from evpipe.events import EVENT_DTYPE, SensorSize, make_events

from .test_frames import REAL_FILES, random_events, read_real, streams


def reference(ev, size, dt, tau, include_incomplete=False):
    """tonic's definition in NumPy float64: K = max(1, floor or ceil(span / dt)) slices
    [t0 + k dt, t0 + (k+1) dt), memory of the latest timestamp per (p, y, x) from -inf,
    TS_k = exp(-(t0 + (k+1) dt - M) / tau)."""
    if len(ev) == 0:
        return np.zeros((0, 2, size.height, size.width))
    t = ev["t"]
    t0, span = t[0], t[-1] - t[0]
    n_slices = max(-(-span // dt) if include_incomplete else span // dt, 1)
    memory = np.full((2, size.height, size.width), -np.inf)
    out = []
    for k in range(n_slices):
        m = (t >= t0 + k * dt) & (t < t0 + (k + 1) * dt)
        np.maximum.at(memory, (ev["p"][m].astype(int), ev["y"][m], ev["x"][m]), t[m])
        out.append(np.exp(-(t0 + (k + 1) * dt - memory) / tau))
    return np.array(out).reshape(n_slices, 2, size.height, size.width)


def assert_close(ours, ref):
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(REAL_FILES))
@pytest.mark.parametrize("dt,tau", [(5_000, 5_000), (20_000, 50_000), (50_000, 30_000)])
@pytest.mark.parametrize("include_incomplete", [False, True])
def test_real_files_match_tonic_and_reference(data_dir, name, dt, tau, include_incomplete):
    ev, size = read_real(data_dir, name)
    ts = to_time_surface(ev, size, dt, tau, include_incomplete)
    assert ts.dtype == np.float32 and ts.shape[1:] == (2, size.height, size.width)
    assert_close(ts, reference(ev, size, dt, tau, include_incomplete))
    assert len(ts) >= 1 and ((0 <= ts) & (ts <= 1)).all()
    theirs = tf.to_timesurface_numpy(ev.copy(), (*size, 2), dt, tau,
                                     include_incomplete=include_incomplete)
    assert_close(ts, theirs)


@settings(max_examples=80, deadline=None)
@given(streams, st.sampled_from([1, 3, 50, 1000]), st.sampled_from([0.5, 10.0, 1e4]),
       st.booleans())
def test_random_streams_match_reference(stream, dt, tau, include_incomplete):
    n, w, h, span, seed = stream
    ev = random_events(n, w, h, span, seed)
    size = SensorSize(w, h)
    if span // dt > 5000:
        dt = span // 5000
    assert_close(to_time_surface(ev, size, dt, tau, include_incomplete),
                 reference(ev, size, dt, tau, include_incomplete))


def test_slices_and_values():
    # t0 = 100, dt = 10: slices [100, 110), [110, 120); t = 120 (t_last) is not shown.
    ev = make_events([100, 105, 112, 120], [0, 1, 0, 1], [0, 0, 0, 0], [1, 1, 0, 1])
    ts = to_time_surface(ev, (2, 1), 10, 4.0)
    assert ts.shape == (2, 2, 1, 2)
    np.testing.assert_allclose(ts[0, 1, 0], np.exp([-10 / 4, -5 / 4]), rtol=1e-6)
    assert not ts[0, 0].any()
    np.testing.assert_allclose(ts[1, 1, 0], np.exp([-20 / 4, -15 / 4]), rtol=1e-6)
    np.testing.assert_allclose(ts[1, 0, 0], [np.exp(-8 / 4), 0], rtol=1e-6)
    # include_incomplete adds nothing when the span is a whole number of slices...
    assert len(to_time_surface(ev, (2, 1), 10, 4.0, include_incomplete=True)) == 2
    # ...and one partial slice otherwise.
    assert len(to_time_surface(ev, (2, 1), 7, 4.0)) == 2
    assert len(to_time_surface(ev, (2, 1), 7, 4.0, include_incomplete=True)) == 3


def test_long_decay_reaches_zero_not_nan():
    ev = make_events([0, 1, 30_000], [0, 1, 2], [0, 0, 1], [0, 1, 1])
    size = SensorSize(3, 2)
    ts = to_time_surface(ev, size, 10, 1.0)
    assert ts.shape == (3000, 2, 2, 3) and np.isfinite(ts).all()
    assert_close(ts, reference(ev, size, 10, 1.0))
    assert ts[0, 0, 0, 0] > 0 and not ts[-1].any()


def test_edge_cases():
    size = SensorSize(4, 3)
    assert to_time_surface(np.zeros(0, EVENT_DTYPE), size, 10, 5.0).shape == (0, 2, 3, 4)
    # Spans shorter than dt (one event, one timestamp) still give one slice, as tonic.
    one = make_events([7], [3], [2], [1])
    for include_incomplete in (False, True):
        ts = to_time_surface(one, size, 10, 5.0, include_incomplete)
        assert ts.shape == (1, 2, 3, 4) and np.count_nonzero(ts) == 1
        np.testing.assert_allclose(ts[0, 1, 2, 3], np.exp(-2), rtol=1e-6)
        np.testing.assert_allclose(ts, tf.to_timesurface_numpy(
            one.copy(), (4, 3, 2), 10, 5.0, include_incomplete=include_incomplete), atol=1e-7)
    same_t = make_events([9] * 4, [0, 1, 1, 3], [0] * 4, [0, 1, 1, 1])
    ts = to_time_surface(same_t, size, 10, 5.0)
    assert len(ts) == 1 and np.count_nonzero(ts) == 3
    short = make_events([0, 4], [0, 1], [0, 0], [0, 1])
    ts = to_time_surface(short, size, 10, 5.0)
    np.testing.assert_allclose(ts[0, :, 0, :2], [[np.exp(-2), 0], [0, np.exp(-6 / 5)]],
                               rtol=1e-6)


@pytest.mark.parametrize("where", [10, 199])
@pytest.mark.parametrize("field,value,msg", [
    ("x", 4, "outside the 4x3 sensor"), ("y", 3, "outside the 4x3 sensor"),
    ("p", 2, "polarity must be 0 or 1"),
])
def test_events_outside_the_sensor_are_rejected(where, field, value, msg):
    """Also after the last complete slice (event 199), where nothing is written."""
    ev = random_events(200, 4, 3, 1000, 1)
    ev["t"][-1] = ev["t"][-2] + 1
    ev[field][where] = value
    with pytest.raises(ConfigError, match=f"event {where} .*{msg}"):
        to_time_surface(ev, (4, 3), 100, 50.0)


def test_unsorted_events_are_rejected():
    ev = random_events(200, 4, 3, 1000, 1)
    ev["t"][50] = ev["t"][49] - 1
    with pytest.raises(ConfigError, match="event 50 .*timestamps must be non-decreasing"):
        to_time_surface(ev, (4, 3), 100, 50.0)
    with pytest.raises(ConfigError, match="event 1 .*non-decreasing"):
        to_time_surface(ev[::-1], (4, 3), 100, 50.0)


def test_output_size_is_capped():
    ev = make_events([0, 2**40], [0, 0], [0, 0], [0, 1])
    with pytest.raises(ConfigError, match="raise dt_us"):
        to_time_surface(ev, (4, 3), 1, 5.0)
    with pytest.raises(ConfigError, match="events span"):
        to_time_surface(make_events([-(2**62), 2**62], [0, 0], [0, 0], [0, 1]), (4, 3), 1, 5.0)


@pytest.mark.parametrize("kwargs,msg", [
    ({"dt_us": 0}, r"dt_us must be in 1\.\.\d+, got 0"),
    ({"dt_us": 1.5}, "dt_us must be an integer"),
    ({"tau_us": 0}, "tau_us must be a number > 0"),
    ({"tau_us": -3.0}, "tau_us must be a number > 0"),
    ({"tau_us": float("nan")}, "tau_us must be a number > 0"),
    ({"tau_us": float("inf")}, "tau_us must be a number > 0"),
    ({"tau_us": "fast"}, "tau_us must be a number > 0"),
    ({"include_incomplete": "no"}, "include_incomplete must be true or false"),
])
def test_bad_parameters(kwargs, msg):
    with pytest.raises(ConfigError, match=msg):
        TimeSurfaceParams(**kwargs)
    if "include_incomplete" not in kwargs:
        args = {"dt_us": 10, "tau_us": 5.0} | kwargs
        with pytest.raises(ConfigError, match=msg):
            to_time_surface(np.zeros(0, EVENT_DTYPE), (2, 2), **args)


def test_registered_encoding(data_dir):
    enc = ENCODINGS.get("time_surface")
    assert enc.inputs == ("events",) and enc.fixed == ()  # K varies: stored ragged
    params = enc.make(dt_us=20_000, tau_us=10_000)
    assert params.tau_us == 10_000.0 and isinstance(params.tau_us, float)
    ev, size = read_real(data_dir, "aedat4")
    out = params.encode(ev, sensor_size=size)
    np.testing.assert_array_equal(out["time_surface"], to_time_surface(ev, size, 20_000, 10_000))
    assert params.stats(out) == {"slices": 29}
