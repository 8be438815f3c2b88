"""The pipeline through the Python API: models, overload, accounting, stopping."""

import io
import json
import time

import numpy as np
import pytest

from evpipe.errors import ConfigError, StreamError
from evpipe.events import slice_by_time
from evpipe.io import read_events
from evpipe.stream import JsonLinesSink, StreamConfig, WindowSpec, run_stream

AEDAT4 = "aedat4/tonic_sample.aedat4"   # 111 954 events over 0.59 s, 320x240
QUIET = dict(report_seconds=0)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


def test_model_slower_than_the_stream_drops_windows_counted_memory_flat(data_dir):
    samples = []
    t0 = time.monotonic()

    def slow_model(record):
        time.sleep(0.03)                  # 6x the 5 ms windows
        return {"class": int(record["frames"].sum() % 7)}

    s = run_stream(f"replay:{data_dir / AEDAT4}?speed=3&repeat=20",   # 3.9 s, 0.57 Mev/s
                   params={"n_bins": 10}, windows=WindowSpec(window_us=5_000),
                   model=slow_model,
                   on_window=lambda r: samples.append((time.monotonic() - t0, rss_mb())),
                   config=StreamConfig(max_pending=2, **QUIET))
    assert s["events"] == 20 * 111_954
    assert s["dropped_windows"] > s["windows"] > 50
    assert s["events"] == s["window_events"] + s["dropped_events"]
    # flat: the peak of the last quarter exceeds the second quarter's by less than a leak
    # of the dropped events alone would add in a second (0.57 Mev/s x 13 B = 7 MB/s);
    # allocator returns to the OS may lower RSS in between
    end = samples[-1][0]
    second = [r for t, r in samples if end / 4 < t <= end / 2]
    last = [r for t, r in samples if t > 3 * end / 4]
    assert max(last) - max(second) < 8, samples


def test_block_policy_slows_the_source_instead_of_dropping(data_dir):
    def model(record):
        time.sleep(0.002)
        return {"n": int(record["frames"].sum())}

    results = []
    s = run_stream(f"replay:{data_dir / AEDAT4}?speed=0", windows=WindowSpec(window_us=2_000),
                   model=model, on_window=results.append,
                   config=StreamConfig(overload="block", max_pending=1, buffer_events=5_000,
                                       **QUIET))
    assert s["dropped_events"] == 0 and s["window_events"] == s["events"] == 111_954
    assert all(r.prediction == {"n": r.n_events} for r in results)


def test_window_results_match_the_file(data_dir):
    events = read_events(data_dir / AEDAT4)
    results = []
    s = run_stream(f"replay:{data_dir / AEDAT4}?speed=0", encoding="events",
                   windows=WindowSpec(window_events=10_000), on_window=results.append,
                   config=StreamConfig(overload="block", **QUIET))
    assert s["windows"] == 12 and s["events"] == len(events)
    assert np.concatenate([r.record["events"] for r in results]).tobytes() == events.tobytes()
    r = results[0]
    assert r.t_last_us == events["t"][9_999] and r.done_s >= r.arrival_s
    assert r.latency_ms == pytest.approx((r.done_s - r.arrival_s) * 1e3, abs=1e-3)
    assert [r.partial for r in results] == [False] * 11 + [True]


def test_json_lines_follow_the_design(data_dir):
    out = io.StringIO()
    sink = JsonLinesSink(digest=True)
    sink.f = out
    run_stream(f"replay:{data_dir / AEDAT4}?speed=0", windows=WindowSpec(window_us=100_000),
               model=lambda rec: {"class": 1, "scores": np.array([0.25, 0.75])},
               on_window=sink.window, on_summary=sink.summary,
               config=StreamConfig(overload="block", **QUIET))
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    for w in lines[:-1]:
        assert {"window", "t_start_us", "t_end_us", "n_events", "latency_ms",
                "prediction", "t_last_us", "arrival_s", "done_s", "sha256"} <= set(w)
        assert w["prediction"] == {"class": 1, "scores": [0.25, 0.75]}
    summary = lines[-1]["summary"]
    assert {"events", "windows", "dropped_events", "p50_latency_ms",
            "p99_latency_ms"} <= set(summary)
    assert summary["events"] == 111_954 and summary["windows"] == len(lines) - 1 == 6


def test_max_seconds_stops_and_drains(data_dir):
    t0 = time.monotonic()
    s = run_stream(f"replay:{data_dir / AEDAT4}?repeat=50", windows=WindowSpec(window_us=10_000),
                   config=StreamConfig(max_seconds=1.0, **QUIET))
    assert time.monotonic() - t0 < 5
    assert s["ended"] == "max-seconds" and 0 < s["events"] < 50 * 111_954
    assert s["events"] == s["window_events"] + s["dropped_events"]


def test_out_of_order_events_in_a_file_are_counted(data_dir, tmp_path):
    from evpipe.io import write_events
    events = read_events(data_dir / AEDAT4)[:20_000]
    events["t"][1000:1010] -= 50_000
    path = tmp_path / "disordered.h5"
    write_events(path, events, "h5", (320, 240))
    for policy, dropped in (("drop", 10), ("clamp", 0)):
        s = run_stream(f"replay:{path}?speed=0", windows=WindowSpec(window_us=5_000),
                       config=StreamConfig(out_of_order=policy, overload="block", **QUIET))
        assert s["out_of_order"] == 10 and s["dropped_events"] == dropped
        assert s["window_events"] == 20_000 - dropped


def test_model_errors_and_bad_options_are_evpipe_errors(data_dir):
    def broken(record):
        raise ValueError("shape mismatch")

    with pytest.raises(StreamError, match="model failed on window 0: ValueError: shape"):
        run_stream(f"replay:{data_dir / AEDAT4}?speed=0", model=broken,
                   config=StreamConfig(overload="block", **QUIET))
    with pytest.raises(ConfigError, match="does not read events"):
        run_stream("replay:x", encoding="svc")
    with pytest.raises(ConfigError, match="overload policy"):
        StreamConfig(overload="drop-newest")
    with pytest.raises(ConfigError, match="n_bins"):
        run_stream("replay:x", params={"n_bins": 0})


def test_window_contents_equal_offline_frames_with_sliding_windows(data_dir):
    from evpipe.encoders import to_frames
    events = read_events(data_dir / AEDAT4)
    results = []
    run_stream(f"replay:{data_dir / AEDAT4}?speed=0", params={"n_bins": 4},
               windows=WindowSpec(window_us=50_000, stride_us=20_000),
               on_window=results.append, config=StreamConfig(overload="block", **QUIET))
    assert len(results) == 30
    for r in results:
        part = slice_by_time(events, r.t_start_us, r.t_end_us)
        assert np.array_equal(r.record["frames"], to_frames(part, (320, 240), 4))


def test_ring_overflow_drops_whole_windows_around_the_gap(data_dir, monkeypatch):
    from evpipe.stream.windows import Windower
    path = data_dir / "prophesee_evt2" / "evt2_sample.raw"     # 539 481 events in 50 ms
    events = read_events(path)
    push = Windower.push

    def slow_push(self, events, arrival):                      # windowing falls behind
        time.sleep(0.002)
        return push(self, events, arrival)

    monkeypatch.setattr(Windower, "push", slow_push)
    results = []
    s = run_stream(f"replay:{path}?speed=0", encoding="events",
                   windows=WindowSpec(window_us=1_000), on_window=results.append,
                   config=StreamConfig(buffer_events=20_000, max_pending=1_000, **QUIET))
    assert s["events"] == len(events)
    assert s["dropped_events"] > 0 and s["dropped_windows"] == 0
    assert s["events"] == s["window_events"] + s["dropped_events"]
    for r in results:           # what is emitted is whole: equal to the file's slice
        assert r.events.tobytes() == slice_by_time(events, r.t_start_us, r.t_end_us).tobytes()
