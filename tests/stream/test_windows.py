"""Windowing of a live stream against offline slicing of the same real file."""

import threading

import numpy as np
import pytest

from evpipe.errors import ConfigError
from evpipe.events import slice_by_time
from evpipe.io import read_events
from evpipe.stream.ring import Chunk, End, Gap, Reset, RingBuffer, WindowQueue
from evpipe.stream.windows import Windower, WindowSpec


@pytest.fixture(scope="module")
def events(data_dir):
    return read_events(data_dir / "aedat4" / "tonic_sample.aedat4")  # 111 954 events, 0.59 s


def feed(windower, events, seed, end=True):
    """Push `events` in random chunks (1..3000 events); all windows, flushed at the end."""
    rng = np.random.default_rng(seed)
    out, s = [], 0
    while s < len(events):
        n = int(rng.integers(1, 3000))
        out += windower.push(events[s:s + n].copy(), arrival=float(s))
        s += n
    return out + (windower.flush() if end else [])


@pytest.mark.parametrize("window_us, n", [(1, 10_000), (997, None), (20_000, None),
                                          (10_000_000, None)])
def test_tumbling_time_windows_equal_offline_slices(events, window_us, n):
    events = events[:n]
    w = Windower(WindowSpec(window_us=window_us))
    wins = feed(w, events, seed=window_us)
    t0 = int(events["t"][0])
    assert sum(x.n_events for x in wins) == len(events) and w.dropped_events == 0
    for x in wins:
        assert (x.t_start_us - t0) % window_us == 0 and x.t_end_us - x.t_start_us == window_us
        assert x.events.tobytes() == slice_by_time(events, x.t_start_us, x.t_end_us).tobytes()
    assert [x.index for x in wins] == list(range(len(wins)))
    assert [x.partial for x in wins] == [False] * (len(wins) - 1) + [True]


@pytest.mark.parametrize("window_us, stride_us", [(20_000, 5_000), (3_000, 1_000),
                                                  (10_000, 10_000)])
def test_sliding_windows_equal_offline_slices(events, window_us, stride_us):
    wins = feed(Windower(WindowSpec(window_us=window_us, stride_us=stride_us)), events, seed=7)
    t0, t_last = int(events["t"][0]), int(events["t"][-1])
    expected = []
    for k in range(0, (t_last - t0) // stride_us + 1):
        a = t0 + k * stride_us
        part = slice_by_time(events, a, a + window_us)
        if len(part):
            expected.append((a, part.tobytes()))
    assert [(x.t_start_us, x.events.tobytes()) for x in wins] == expected


def test_count_windows(events):
    wins = feed(Windower(WindowSpec(window_events=1000)), events, seed=3)
    assert [x.n_events for x in wins] == [1000] * 111 + [954]
    assert np.concatenate([x.events for x in wins]).tobytes() == events.tobytes()
    assert wins[0].t_start_us == events["t"][0] and wins[0].t_end_us == events["t"][999] + 1


def test_window_arrival_is_that_of_its_last_event(events):
    w = Windower(WindowSpec(window_us=10_000))
    t0 = int(events["t"][0])
    first = slice_by_time(events, t0, t0 + 10_000)
    assert w.push(first[:10].copy(), 1.0) == []
    assert w.push(first[10:].copy(), 2.0) == []
    (win,) = w.push(events[len(first):len(first) + 1].copy(), 3.0)
    assert win.arrival == 2.0 and win.n_events == len(first)


def test_empty_stretches_are_jumped_not_iterated(events):
    far = events[:10].copy()
    far["t"] += 10 ** 12   # 11.6 days later
    w = Windower(WindowSpec(window_us=1, stride_us=1))
    wins = w.push(events[:10].copy(), 0.0) + w.push(far, 1.0) + w.flush()
    assert sum(x.n_events for x in wins) == 20


@pytest.mark.parametrize("policy", ["drop", "clamp"])
def test_out_of_order_policies(events, policy):
    ev = events[:2000].copy()
    ev["t"][500:510] -= 5_000            # ten events from the past
    w = Windower(WindowSpec(window_us=2_000), out_of_order=policy)
    wins = feed(w, ev, seed=1)
    assert w.out_of_order == 10
    got = np.concatenate([x.events for x in wins])
    assert np.all(np.diff(got["t"]) >= 0)
    if policy == "drop":
        assert w.dropped_events == 10 and len(got) == 1990
    else:
        assert w.clamped == 10 and len(got) == 2000 and w.dropped_events == 0


def test_gap_drops_incomplete_windows_and_restarts_the_grid(events):
    w = Windower(WindowSpec(window_us=10_000))
    t0 = int(events["t"][0])
    a, lost, b = np.split(events, [5000, 9000])
    wins = feed(w, a, seed=1, end=False)
    held = w.buffered_events()
    w.gap(int(lost["t"][-1]))
    wins += feed(w, b, seed=2)
    # the window open at the gap is dropped, events up to the lost ones' time too
    assert sum(x.n_events for x in wins) + w.dropped_events + len(lost) == len(events)
    assert w.dropped_events >= held > 0
    after = [x for x in wins if x.t_start_us > lost["t"][-1]]
    assert (after[0].t_start_us - t0) % 10_000 != 0   # a new grid
    assert after[0].t_start_us == b["t"][b["t"] > lost["t"][-1]][0]
    for x in wins:
        assert x.events.tobytes() == slice_by_time(events, x.t_start_us, x.t_end_us).tobytes()


def test_reset_flushes_the_session_as_partial(events):
    w = Windower(WindowSpec(window_us=10_000))
    first = feed(w, events[:3000], seed=1, end=False)
    rest = w.reset()
    assert rest and all(x.partial for x in rest)
    again = feed(w, events[:3000], seed=1)     # the sender restarted: time goes back
    assert w.out_of_order == 0
    assert [x.events.tobytes() for x in first + rest] == [x.events.tobytes() for x in again]


@pytest.mark.parametrize("kwargs, match", [
    ({}, "one of the two"),
    ({"window_us": 5, "window_events": 5}, "one of the two"),
    ({"window_us": 0}, "window_us must be an integer >= 1"),
    ({"window_events": 2.5}, "window_events must be an integer"),
    ({"window_events": 5, "stride_us": 1}, "needs window_us"),
    ({"window_us": 5, "stride_us": 6}, "must not exceed"),
])
def test_bad_window_specs(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        WindowSpec(**kwargs)


def test_ring_drop_oldest_leaves_a_gap_marker(events):
    ring = RingBuffer(1000, "drop-oldest")
    stop = threading.Event()
    parts = np.split(events[:1500], 5)            # 300 events each
    ring.put(Chunk(parts[0], 0.0), stop)
    ring.put_marker(Reset(1.0))
    for p in parts[1:]:
        ring.put(Chunk(p, 0.0), stop)
    assert ring.dropped_events == 600 and ring.pending_events() == 900
    items = [ring.get(0.0) for _ in range(5)]
    assert isinstance(items[0], Gap) and items[0].t_last == parts[0]["t"].max()
    assert isinstance(items[1], Reset)
    assert isinstance(items[2], Gap) and items[2].t_last == parts[1]["t"].max()
    assert [len(c.events) for c in items[3:]] == [300, 300]


def test_ring_block_waits_and_honours_stop(events):
    ring = RingBuffer(100, "block")
    stop = threading.Event()
    assert ring.put(Chunk(events[:100], 0.0), stop)
    stop.set()
    assert not ring.put(Chunk(events[:10], 0.0), stop)    # full: gives up on stop
    assert ring.get(0.0) is not None and ring.get(0.01) is None
    big = Chunk(events[:500], 0.0)                          # larger than the ring
    assert ring.put(big, threading.Event()) and ring.pending_events() == 500


def test_window_queue_drops_oldest_whole_windows(events):
    w = Windower(WindowSpec(window_us=10_000))
    wins = feed(w, events[:20000], seed=1)
    q = WindowQueue(2, "drop-oldest")
    for x in wins:
        q.put(x, threading.Event())
    q.put_end(End("end of stream"))
    kept = [q.get(0.0) for _ in range(3)]
    assert [x.index for x in kept[:2]] == [wins[-2].index, wins[-1].index]
    assert isinstance(kept[2], End)
    assert q.dropped_windows == len(wins) - 2
    assert q.dropped_events == sum(x.n_events for x in wins[:-2])


def test_search_time_is_searchsorted_on_strided_times(events):
    from evpipe.io.kernels import search_time
    t = events["t"]  # a strided view of packed records
    rng = np.random.default_rng(0)
    probes = np.concatenate([t[rng.integers(0, len(t), 200)], rng.integers(t[0] - 5, t[-1] + 5, 200),
                             [t[0] - 1, t[0], t[-1], t[-1] + 1]])
    for v in probes:
        for side in ("left", "right"):
            assert search_time(t, int(v), side == "right") == np.searchsorted(t, v, side)
    assert search_time(t[:0], 5, False) == 0


def test_time_range_and_shift_time_on_strided_times(events):
    from evpipe.stream.kernels import shift_time, time_range
    ev = events[::-1].copy()  # unsorted order: min and max are not the ends
    ev["t"][5] = -7
    assert time_range(ev["t"]) == (ev["t"].min(), ev["t"].max())
    expect = ev["t"] + 123_456
    shift_time(ev["t"], 123_456)
    np.testing.assert_array_equal(ev["t"], expect)
