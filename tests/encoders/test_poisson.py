import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evpipe.encoders.base import ENCODINGS, encode_record, sample_rng
from evpipe.encoders.poisson import PoissonParams, count_image, poisson
from evpipe.errors import ConfigError, EvpipeError
from evpipe.events import make_events
from evpipe.io import read_events, read_spike_frames

U64 = np.uint64


def splitmix_words(key, n_words):
    """Words 0..n_words-1 of the SplitMix64 stream seeded with `key` (NumPy uint64)."""
    z = key + (np.arange(n_words, dtype=U64) + U64(1)) * U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    return z ^ (z >> U64(31))


def numpy_poisson(x, T, seed, gain=1.0, offset=0.0):
    """The documented definition, written out: q = round(clamp(gain x + offset) * 65536),
    element g of the flat [T, *x.shape] output fires when lane g % 4 of SplitMix64 word
    g // 4 (16 bits, low lanes first) is below q."""
    key = np.random.default_rng(seed).integers(0, 1 << 64, dtype=np.uint64)
    p = np.clip(gain * np.asarray(x, np.float64).reshape(-1) + offset, 0, 1)
    q = np.floor(p * 65536 + 0.5).astype(np.int64)
    g = np.arange(T * q.size, dtype=np.int64)
    words = splitmix_words(key, (len(g) + 3) // 4)
    u = (words[g >> 2] >> (U64(16) * (g & 3).astype(U64))) & U64(0xFFFF)
    return (u.astype(np.int64) < q[g % q.size]).astype(np.uint8).reshape((T,) + np.shape(x))


@pytest.mark.parametrize("shape,T", [((7,), 5), ((3, 5), 2), ((64, 2, 9, 11), 3),
                                     ((70001,), 3), ((4, 4), 1), ((), 9), ((2, 3), 40000)])
def test_equals_numpy_definition(shape, T):
    x = np.random.default_rng(1).uniform(-0.2, 1.2, shape).astype(np.float32)
    s = poisson(x, T, seed=7)
    assert s.shape == (T,) + shape and s.dtype == np.uint8
    np.testing.assert_array_equal(s, numpy_poisson(x, T, 7))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-2, 3, allow_nan=False), max_size=50), st.integers(1, 20),
       st.integers(0, 2**32), st.floats(-2, 2), st.floats(-1, 1))
def test_random_inputs_match_numpy(values, T, seed, gain, offset):
    x = np.array(values, np.float64)
    np.testing.assert_array_equal(poisson(x, T, seed, gain, offset),
                                  numpy_poisson(x, T, seed, gain, offset))


@pytest.mark.parametrize("p", [1e-3, 0.05, 0.25, 0.5, 0.77, 0.999])
def test_rate_within_four_standard_errors(p):
    n_elem, T = 20000, 64
    s = poisson(np.full(n_elem, p, np.float32), T, seed=int(p * 1e6))
    n = s.size
    se = np.sqrt(p * (1 - p) / n)
    assert abs(s.mean() - p) < 4 * se
    # Each step and each element has the same rate (one chunk of the stream is not biased).
    per_step = s.mean(axis=1)
    assert np.all(np.abs(per_step - p) < 6 * np.sqrt(p * (1 - p) / n_elem))


def test_neighbouring_draws_are_independent():
    # Lanes of one 64-bit word and consecutive time steps must not be correlated:
    # P(s_i = 1 and s_j = 1) = p^2 within 4 standard errors.
    p = 0.5
    s = poisson(np.full((4096, 8), p), 64, seed=3).astype(np.float64)
    for a, b in [(s[..., :-1], s[..., 1:]), (s[:-1], s[1:]), (s[..., 0::4], s[..., 3::4])]:
        both = (a * b).mean()
        se = np.sqrt(p * p * (1 - p * p) / a.size)
        assert abs(both - p * p) < 4 * se


def test_gain_offset_and_clamp():
    x = np.array([-1.0, 0.0, 0.2, 0.5, 1.0, 3.0])
    s = poisson(np.repeat(x, 2000), 50, seed=0).reshape(50, 6, 2000)
    rate = s.mean(axis=(0, 2))
    assert rate[0] == 0 and rate[1] == 0 and rate[4] == 1 and rate[5] == 1
    assert abs(rate[2] - 0.2) < 0.01 and abs(rate[3] - 0.5) < 0.01
    g = poisson(np.full(100000, 0.3), 4, seed=1, gain=2.0, offset=-0.1)
    assert abs(g.mean() - 0.5) < 4 * np.sqrt(0.25 / g.size)
    c = poisson(np.zeros(1000), 3, seed=1, gain=0.0, offset=1.5)
    assert c.all()
    never = poisson(np.ones(1000), 3, seed=1, offset=-1.0)
    assert not never.any()


def test_seeds():
    x = np.random.default_rng(0).random((3, 32, 32))
    a = poisson(x, 8, seed=11)
    np.testing.assert_array_equal(a, poisson(x, 8, seed=11))
    np.testing.assert_array_equal(a, poisson(x, 8, seed=np.random.default_rng(11)))
    assert not np.array_equal(a, poisson(x, 8, seed=12))
    rng = np.random.default_rng(11)
    first, second = poisson(x, 8, rng), poisson(x, 8, rng)
    np.testing.assert_array_equal(first, a)
    assert not np.array_equal(first, second)
    assert not np.array_equal(poisson(x, 8), poisson(x, 8))  # fresh entropy


def test_thread_count_does_not_change_spikes():
    import numba
    x = np.random.default_rng(2).random((5, 70000))
    n = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = poisson(x, 3, seed=4)
    finally:
        numba.set_num_threads(n)
    np.testing.assert_array_equal(one, poisson(x, 3, seed=4))


def test_dtypes_and_inputs():
    x = np.array([[0.0, 1.0], [1.0, 0.0]])
    b = poisson(x, 3, seed=0, dtype=bool)
    assert b.dtype == bool and b.shape == (3, 2, 2)
    np.testing.assert_array_equal(b, poisson(x, 3, seed=0).astype(bool))
    np.testing.assert_array_equal(poisson(x.astype(np.uint8), 3, seed=0), poisson(x, 3, seed=0))
    np.testing.assert_array_equal(poisson(x.astype(np.float16), 3, seed=0), poisson(x, 3, seed=0))
    assert poisson(np.zeros((0, 4)), 5, seed=0).shape == (5, 0, 4)
    assert poisson([0.5, 0.5], 2, seed=0).shape == (2, 2)


@pytest.mark.parametrize("kwargs,msg", [
    ({"T": 0}, "T must"), ({"T": 2.0}, "T must"), ({"T": True}, "T must"),
    ({"gain": np.nan}, "finite"), ({"offset": np.inf}, "finite"),
    ({"dtype": np.float32}, "dtype"), ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"),
    ({"x": np.array([0.1, np.nan])}, "NaN at flat index 1"),
    ({"x": np.array(["a"])}, "numeric"),
])
def test_bad_arguments(kwargs, msg):
    args = {"x": np.zeros(3), "T": 2} | kwargs
    with pytest.raises(ConfigError, match=msg):
        poisson(**args)


# -- the registered encoding --------------------------------------------------------------

def test_encoding_on_real_events(data_dir):
    ev = read_events(data_dir / "aedat4" / "tonic_sample.aedat4")
    spec = ENCODINGS.get("poisson")
    assert spec.inputs == ("events", "spikes") and spec.fixed == ("spikes",)
    params = spec.make(steps=16, seed=3)
    rec = encode_record(params, "events", {"id": "a", "events": ev, "sensor_size": (320, 240),
                                           "label": 2})
    assert set(rec) == {"id", "label", "spikes"}
    s = rec["spikes"]
    assert s.shape == (16, 2, 240, 320) and s.dtype == np.uint8
    counts = np.zeros((2, 240, 320), np.int64)
    np.add.at(counts, (ev["p"].astype(int), ev["y"].astype(int), ev["x"].astype(int)), 1)
    np.testing.assert_array_equal(count_image(ev, (320, 240)), counts)
    expected = poisson(counts / counts.max(), 16, sample_rng(3, "a"))
    np.testing.assert_array_equal(s, expected)
    assert not s[:, counts == 0].any()
    assert params.stats(rec) == {"spikes": int(s.sum())}
    again = encode_record(params, "events", {"id": "a", "events": ev, "sensor_size": (320, 240)})
    np.testing.assert_array_equal(again["spikes"], s)
    other = encode_record(params, "events", {"id": "b", "events": ev, "sensor_size": (320, 240)})
    assert not np.array_equal(other["spikes"], s)
    scaled = spec.make(steps=4, scale=2.0).encode(ev, (320, 240), "a")["spikes"]
    np.testing.assert_array_equal(scaled, poisson(counts / 2.0, 4, sample_rng(0, "a")))


def test_encoding_on_spike_camera_frames(data_dir):
    frames = read_spike_frames(data_dir / "spike_dat" / "spikeREDS_200_part1_key_id151.dat")[:40]
    params = PoissonParams(steps=8, seed=1)
    rec = encode_record(params, "spikes", {"id": "s0", "spikes": frames})
    s = rec["spikes"]
    assert s.shape == (8, 1, 250, 400) and s.dtype == np.uint8
    rate = frames.mean(axis=0)
    np.testing.assert_array_equal(s, poisson(rate[None], 8, sample_rng(1, "s0")))
    assert not s[:, 0, rate == 0].any() and s[:, 0, rate == 1].all()
    # Over many steps the coded rate follows the camera's rate: every pixel within 6 and
    # the whole image within 4 standard errors (100k pixels x 400 steps).
    steps = 400
    long = PoissonParams(steps=steps).encode(frames, sample_id="s0")["spikes"].mean(axis=(0, 1))
    var = rate * (1 - rate)
    assert np.all(np.abs(long - rate) <= 6 * np.sqrt(var / steps) + 1e-12)
    assert abs(long.mean() - rate.mean()) < 4 * np.sqrt(var.sum() / steps) / rate.size


@pytest.mark.parametrize("events,size,msg", [
    (make_events([0, 1], [3, 4], [0, 0], [0, 1]), (4, 4), "outside"),
    (make_events([0, 1], [3, 2], [0, 9], [0, 1]), (4, 4), "outside"),
    (make_events([0, 1], [3, 2], [0, 1], [0, 2]), (4, 4), "polarities"),
    (make_events([0, 1], [3, 2], [0, 1], [0, 1]), None, "sensor_size"),
    (np.zeros((2, 3, 3), np.float32), None, "expected events or spike frames"),
])
def test_encoding_rejects_bad_input(events, size, msg):
    with pytest.raises(EvpipeError, match=msg):
        PoissonParams().encode(events, size, "x")


def test_encoding_empty_events_and_params():
    s = PoissonParams(steps=3).encode(make_events([], [], [], []), (5, 4), "e")["spikes"]
    assert s.shape == (3, 2, 4, 5) and not s.any()
    for kwargs in ({"steps": 0}, {"scale": 0.0}, {"seed": -1}, {"gain": np.inf}):
        with pytest.raises(ConfigError):
            PoissonParams(**kwargs)
    with pytest.raises(ConfigError, match="no parameter"):
        ENCODINGS.get("poisson").make(T=3)
