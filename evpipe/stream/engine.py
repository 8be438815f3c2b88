"""The streaming pipeline: source thread -> ring buffer -> windowing thread -> window queue
-> encoder -> model -> callbacks (in the caller's thread).

`run_stream(source, ...)` runs it until the source ends, `max_seconds` pass or Ctrl-C,
and returns the summary dict. Accounting, with tumbling windows: `events` (every event
received from the source) = `window_events` (events in the windows handed to
`on_window`) + `dropped_events` (ring overflow, out-of-order drops, events around a gap,
windows dropped by the overload policy, and whatever was still queued at Ctrl-C).
Latency of a window = prediction (or encoding) finished - arrival of its last event;
the percentiles cover complete windows (a partial one waited for its session to end).
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..encoders.base import ENCODINGS
from ..errors import ConfigError, EvpipeError, StreamError
from ..events import as_sensor_size, empty_events
from .kernels import warm_up
from .metrics import LatencyHistogram
from .ring import Chunk, End, Gap, Reset, RingBuffer, WindowQueue, check_policy
from .sources import ENDED, Source, SourceLost, open_source
from .windows import ORDER_POLICIES, Window, Windower, WindowSpec

_JOIN_S = 10.0
_MAX_GAPS = 100  # gaps listed in the summary (all are counted)


@dataclass(frozen=True)
class StreamConfig:
    """Pipeline options.

    overload: "drop-oldest" (drop the oldest queued windows / chunks, counted) or "block"
    (stall the source; with dv:// the stall moves the loss into dv-processing, uncounted).
    out_of_order: "drop" or "clamp" events whose time is below the latest seen.
    buffer_events: ring capacity (events); max_pending: windows waiting for the model.
    reconnect: tries per outage (0 = the stream ends when the source goes away);
    backoff_s: first retry delay, doubled per try up to max_backoff_s.
    connect_timeout_s: how long the first connection is retried (the sender may start
    after the receiver).
    max_seconds: stop after this long (None = until the source ends).
    report_seconds: period of the progress line passed to `log` (0 = none).
    """

    overload: str = "drop-oldest"
    out_of_order: str = "drop"
    buffer_events: int = 4_000_000
    max_pending: int = 4
    reconnect: int = 5
    backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    connect_timeout_s: float = 10.0
    max_seconds: float | None = None
    report_seconds: float = 5.0

    def __post_init__(self):
        check_policy(self.overload)
        if self.out_of_order not in ORDER_POLICIES:
            raise ConfigError(f"out-of-order policy must be one of {', '.join(ORDER_POLICIES)}"
                              f", got {self.out_of_order!r}")
        for name, lo in (("buffer_events", 1), ("max_pending", 1), ("reconnect", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
        for name in ("backoff_s", "max_backoff_s", "connect_timeout_s", "report_seconds"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ConfigError(f"max_seconds must be > 0, got {self.max_seconds!r}")


@dataclass
class WindowResult:
    """What `on_window` receives: the window's bounds (us), its events (EVENT_DTYPE), the
    encoded record (the encoder's fields), the model's prediction (None without a
    model), the sensor time of its last event (us), its arrival and completion as Unix
    times (s) and the latency between them (ms)."""

    window: int
    t_start_us: int
    t_end_us: int
    n_events: int
    t_last_us: int
    arrival_s: float
    done_s: float
    latency_ms: float
    partial: bool
    events: np.ndarray = field(repr=False)
    record: dict = field(repr=False)
    prediction: dict | None = None

    def to_json(self, digest: bool = False) -> dict:
        """The JSON-lines object of this window (`sha256` of the record with `digest`)."""
        out = {"window": self.window, "t_start_us": self.t_start_us,
               "t_end_us": self.t_end_us, "n_events": self.n_events,
               "t_last_us": self.t_last_us, "arrival_s": round(self.arrival_s, 6),
               "done_s": round(self.done_s, 6), "latency_ms": round(self.latency_ms, 3),
               "partial": self.partial}
        if digest:
            out["sha256"] = record_digest(self.record)
        if self.prediction is not None:
            out["prediction"] = self.prediction
        return out


def record_digest(record: dict) -> str:
    """SHA-256 over a record's fields in name order: name, dtype, shape and bytes of each
    array (other values by repr)."""
    h = hashlib.sha256()
    for k in sorted(record):
        v = record[k]
        h.update(k.encode())
        if isinstance(v, np.ndarray):
            h.update(f"{v.dtype.str}{v.shape}".encode())
            h.update(np.ascontiguousarray(v).view(np.uint8).tobytes())
        else:
            h.update(repr(v).encode())
    return h.hexdigest()


def make_encoder(encoding: str, params: dict | None):
    """Parameters object of a registered encoding that reads events; ConfigError else."""
    enc = ENCODINGS.get(encoding)
    if "events" not in enc.inputs:
        raise ConfigError(f"encoding {encoding!r} does not read events (it reads "
                          f"{', '.join(enc.inputs)}); event encodings: " + ", ".join(
                              n for n in ENCODINGS.names() if "events" in ENCODINGS.get(n).inputs))
    return enc.make(**(params or {}))


class _Stream:
    def __init__(self, source: Source, params, windows: WindowSpec, model, on_window,
                 config: StreamConfig, log):
        self.source, self.params, self.model = source, params, model
        self.on_window, self.cfg, self.log = on_window, config, log or (lambda msg: None)
        self.ring = RingBuffer(config.buffer_events, config.overload)
        self.queue = WindowQueue(config.max_pending, config.overload)
        self.windower = Windower(windows, config.out_of_order)
        self.stop = threading.Event()    # stop reading the source, then drain
        self.abort = threading.Event()   # stop everything now
        self.error: BaseException | None = None
        self.ended: str | None = None    # why the stream stopped (summary "ended")
        self.received = 0
        self.discarded = 0               # received but never windowed (Ctrl-C, stop)
        self.reconnects = 0
        self.gaps: list[dict] = []
        self.n_gaps = 0
        self.windows = 0
        self.window_events = 0
        self.latency = LatencyHistogram()
        self.interval = LatencyHistogram()

    # -- source thread ---------------------------------------------------------------------
    def _source_loop(self) -> None:
        src, cfg = self.source, self.cfg
        end = End("stopped")
        connected, ever, tries = False, False, 0
        lost_at, t_before, pending_gap = None, None, None
        first_deadline = time.monotonic() + cfg.connect_timeout_s
        try:
            while not self.stop.is_set():
                if not connected:
                    try:
                        src.open()
                    except SourceLost as e:
                        delay = min(cfg.backoff_s * 2 ** tries, cfg.max_backoff_s)
                        if not src.retriable or (ever and tries >= cfg.reconnect) or (
                                not ever and time.monotonic() + delay > first_deadline):
                            raise self._gave_up(e, ever, tries) from None
                        tries += 1
                        self.log(f"{src.uri}: {e.message}; retry "
                                 + (f"{tries}/{cfg.reconnect}" if ever else f"{tries}")
                                 + f" in {delay:.2g} s")
                        self.stop.wait(delay)
                        continue
                    connected = True
                    if ever:
                        lost = time.monotonic() - lost_at
                        self.reconnects += 1
                        pending_gap = {"lost_s": round(lost, 3), "t_before_us": t_before,
                                       "t_after_us": None}
                        self.n_gaps += 1
                        if len(self.gaps) < _MAX_GAPS:
                            self.gaps.append(pending_gap)
                        self.log(f"{src.uri}: reconnected after {lost:.2f} s ({tries} "
                                 f"tr{'y' if tries == 1 else 'ies'}); windows restart")
                        self.ring.put_marker(Reset(lost))
                    ever, tries = True, 0
                try:
                    events = src.read(0.1)
                except SourceLost as e:
                    src.close()
                    connected, lost_at = False, time.monotonic()
                    if not src.retriable or cfg.reconnect == 0:
                        end = End(f"source closed: {e.message}")
                        self.log(f"{src.uri}: {e.message}; stream ends")
                        return
                    self.log(f"{src.uri}: {e.message}; reconnecting")
                    continue
                if events is None:
                    continue
                if events is ENDED:
                    end = End("end of stream")
                    return
                if not len(events):
                    continue
                self.received += len(events)
                t_before = int(events["t"][-1])
                if pending_gap is not None:
                    pending_gap["t_after_us"] = int(events["t"][0])
                    self.log(f"{src.uri}: gap of {pending_gap['lost_s']:.2f} s; sensor time "
                             f"{pending_gap['t_before_us']} -> {pending_gap['t_after_us']} us")
                    pending_gap = None
                if not self.ring.put(Chunk(events, time.monotonic()), self.abort):
                    self.discarded += len(events)
                    return
        except BaseException as e:
            self.error = self.error or e
            end = End(f"error: {e}")
            self.abort.set()
        finally:
            src.close()
            self.ring.put_marker(end)

    def _gave_up(self, e: SourceLost, ever: bool, tries: int) -> StreamError:
        if not ever:
            return StreamError(e.message + (f" (gave up after {tries} retries)" if tries else ""),
                               path=self.source.uri)
        return StreamError(f"source went away and {tries} reconnect attempt"
                           f"{'' if tries == 1 else 's'} failed ({e.message})",
                           path=self.source.uri)

    # -- windowing thread ------------------------------------------------------------------
    def _window_loop(self) -> None:
        w = self.windower
        reason = "stopped"
        try:
            while True:
                item = self.ring.get(0.1)
                if item is None:
                    if self.abort.is_set():
                        return
                    continue
                if isinstance(item, Chunk):
                    done = w.push(item.events, item.arrival)
                elif isinstance(item, Gap):
                    w.gap(item.t_last)
                    continue
                elif isinstance(item, Reset):
                    done = w.reset()
                else:
                    reason = item.reason
                    done = w.flush()
                for k, win in enumerate(done):
                    if not self.queue.put(win, self.abort):
                        self.discarded += sum(x.n_events for x in done[k:])
                        return
                if isinstance(item, End):
                    return
        except BaseException as e:
            self.error = self.error or e
            self.abort.set()
        finally:
            self.queue.put_end(End(reason))

    # -- caller's thread -------------------------------------------------------------------
    def _warm_up(self) -> None:
        """Run the stream's and the encoder's Numba kernels once so they are compiled or
        loaded (a few hundred ms, GIL held) before events arrive."""
        warm_up()
        try:
            self.params.encode(empty_events(2), sensor_size=(1, 1), sample_id="warm-up")
        except EvpipeError:
            pass

    def run(self) -> dict:
        cfg = self.cfg
        self._warm_up()
        self.t_start = time.monotonic()
        self.wall_offset = time.time() - self.t_start
        threads = [threading.Thread(target=self._source_loop, name="evpipe-source", daemon=True),
                   threading.Thread(target=self._window_loop, name="evpipe-window", daemon=True)]
        for th in threads:
            th.start()
        next_report = self.t_start + cfg.report_seconds if cfg.report_seconds else None
        self._last_report = (self.t_start, 0)
        try:
            while True:
                now = time.monotonic()
                if cfg.max_seconds and now - self.t_start >= cfg.max_seconds and \
                        not self.stop.is_set():
                    self.ended = "max-seconds"
                    self.stop.set()
                if next_report and now >= next_report:
                    self.log(self._progress(now))
                    next_report += cfg.report_seconds
                item = self.queue.get(0.1)
                if item is None:
                    continue
                if isinstance(item, End):
                    self.ended = self.ended or item.reason
                    break
                self._process(item)
        except KeyboardInterrupt:
            self.ended = "interrupted"
            self.abort.set()
            raise
        except BaseException as e:
            self.error = self.error or e
            self.abort.set()
        finally:
            self.stop.set()
            self._join(threads)
        if self.error is not None:
            raise self.error
        return self.summary()

    def _process(self, w: Window) -> None:
        record = self.params.encode(w.events, sensor_size=self.source.sensor_size,
                                    sample_id=str(w.index))
        prediction = None
        if self.model is not None:
            try:
                prediction = self.model({"id": str(w.index), **record})
            except Exception as e:
                raise StreamError(f"model failed on window {w.index}: {type(e).__name__}: {e}",
                                  path=self.source.uri) from e
        done = time.monotonic()
        ms = (done - w.arrival) * 1e3
        if not w.partial:  # a partial window waited for its session to end
            self.latency.add(ms)
            self.interval.add(ms)
        self.windows += 1
        self.window_events += w.n_events
        if self.on_window is not None:
            self.on_window(WindowResult(
                w.index, w.t_start_us, w.t_end_us, w.n_events, int(w.events["t"][-1]),
                w.arrival + self.wall_offset, done + self.wall_offset, ms, w.partial,
                w.events, record, prediction))

    def _join(self, threads) -> None:
        deadline = time.monotonic() + _JOIN_S
        for th in threads:
            th.join(max(deadline - time.monotonic(), 0.0))
        stuck = [th.name for th in threads if th.is_alive()]
        if stuck:
            self.abort.set()
            self.error = self.error or StreamError(
                f"thread {', '.join(stuck)} did not stop within {_JOIN_S:g} s",
                path=self.source.uri)
            return
        # whatever is still queued was received but will never be windowed
        wins, events = self.queue.discard()
        self.discarded += events + self.ring.pending_events() + self.windower.buffered_events()

    # -- reporting -------------------------------------------------------------------------
    def dropped_events(self) -> int:
        return (self.ring.dropped_events + self.windower.dropped_events
                + self.queue.dropped_events + self.discarded)

    def _progress(self, now: float) -> str:
        t0, n0 = self._last_report
        rate = (self.received - n0) / max(now - t0, 1e-9)
        self._last_report = (now, self.received)
        p50, p99 = self.interval.percentile(50), self.interval.percentile(99)
        self.interval.reset()
        lat = "no windows" if p50 is None else f"latency p50 {p50:.1f} ms p99 {p99:.1f} ms"
        return (f"{now - self.t_start:.1f} s | {rate / 1e6:.2f} Mev/s | {self.received} events, "
                f"{self.windows} windows | dropped {self.dropped_events()} events "
                f"({self.queue.dropped_windows} windows) | {lat} | buffer "
                f"{100 * self.ring.pending_events() // self.ring.capacity} %")

    def summary(self) -> dict:
        seconds = time.monotonic() - self.t_start
        p50, p99 = self.latency.percentile(50), self.latency.percentile(99)
        rnd = (lambda v: None if v is None else round(v, 3))
        return {"events": self.received, "windows": self.windows,
                "window_events": self.window_events, "dropped_events": self.dropped_events(),
                "dropped_windows": self.queue.dropped_windows,
                "out_of_order": self.windower.out_of_order, "clamped": self.windower.clamped,
                "malformed_packets": self.source.malformed_packets,
                "reconnects": self.reconnects, "gaps": self.gaps, "n_gaps": self.n_gaps,
                "seconds": round(seconds, 3),
                "events_per_s": round(self.received / max(seconds, 1e-9), 1),
                "p50_latency_ms": rnd(p50), "p99_latency_ms": rnd(p99),
                "max_latency_ms": rnd(self.latency.max_ms if self.latency.count else None),
                "buffer_peak_events": self.ring.peak, "ended": self.ended or "stopped"}


def run_stream(source, *, encoding: str = "frames", params: dict | None = None,
               windows: WindowSpec | None = None, model=None, on_window=None,
               on_summary=None, config: StreamConfig | None = None, sensor_size=None,
               log=None) -> dict:
    """Stream `source` (a URI or a `Source`) through windows -> `encoding` (registered
    name, `params` for it) -> `model` (any callable record -> JSON-able dict, or None)
    and call `on_window(WindowResult)` per window, in this thread.

    Returns the summary dict (see the module docstring); `on_summary(summary)` is also
    called when the stream stops with an error or Ctrl-C (KeyboardInterrupt is re-raised).
    `log(message)` receives progress and reconnect reports (default: none).
    """
    params_obj = make_encoder(encoding, params)
    windows = windows or WindowSpec(window_us=50_000)
    config = config or StreamConfig()
    if isinstance(source, str):
        source = open_source(source, sensor_size)
    elif sensor_size is not None:
        source.size_override = as_sensor_size(sensor_size)
    stream = _Stream(source, params_obj, windows, model, on_window, config, log)
    try:
        summary = stream.run()
    except BaseException as e:
        if on_summary is not None and hasattr(stream, "t_start"):
            summary = stream.summary()
            if not isinstance(e, KeyboardInterrupt):
                summary["ended"] = f"error: {e}"
            on_summary(summary)
        raise
    if on_summary is not None:
        on_summary(summary)
    return summary
