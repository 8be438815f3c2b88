"""`evpipe serve` and `evpipe stream`: `add_parsers(subparsers)` adds both to the `evpipe`
command."""

from __future__ import annotations

import sys

from ..errors import ConfigError


def _log(prefix: str, quiet: bool):
    if quiet:
        return None
    return lambda msg: print(f"evpipe {prefix}: {msg}", file=sys.stderr, flush=True)


def cmd_serve(args) -> int:
    """`evpipe serve`: publish a recording; exit status 0 when it was sent."""
    from .server import serve
    serve(args.file, protocol=args.protocol, host=args.host, port=args.port, speed=args.speed,
          repeat=args.repeat, format=args.format, packet_us=args.packet_us,
          packet_events=args.packet_events, clients=args.clients, wait_s=args.wait,
          crc=args.crc, log=_log("serve", args.quiet))
    return 0


def _model_and_encoding(args, owners) -> tuple:
    """(predictor or None, encoding name, encoding params) from --model / --encoding and
    the encoding parameter flags."""
    from ..cli import _collect_params
    from ..encoders.base import ENCODINGS
    given = {f: names for f, names in owners.items() if hasattr(args, f"param_{f}")}
    if args.model is None:
        encoding = args.encoding or "frames"
        return None, encoding, _collect_params(args, given, encoding)
    try:
        from ..models.train import load_predictor
    except ImportError as e:
        raise ConfigError(f"--model needs evpipe.models.train.load_predictor ({e})") from None
    predictor = load_predictor(args.model, device=args.device)
    name = predictor.encoding["name"]
    if args.encoding and args.encoding != name:
        raise ConfigError(f"the model was trained on encoding {name!r}, not {args.encoding!r}",
                          path=args.model)
    fields = set(ENCODINGS.get(name).params.__dataclass_fields__)
    params = {k: tuple(v) if isinstance(v, list) else v
              for k, v in predictor.encoding["params"].items() if k in fields}
    for k, v in _collect_params(args, given, name).items():
        if params.get(k) != v:
            raise ConfigError(f"--{k.replace('_', '-')} {v!r} differs from the model's "
                              f"{params.get(k)!r}", path=args.model)
    return predictor, name, params


def cmd_stream(args) -> int:
    """`evpipe stream`: windows -> encoder -> model -> JSON lines; the summary line is
    written also on errors and Ctrl-C. Exit status 0 when the stream ended normally."""
    from .engine import StreamConfig, run_stream
    from .sinks import JsonLinesSink
    from .windows import WindowSpec
    if args.window_events is None and args.window_us is None:
        args.window_us = 50_000
    windows = WindowSpec(window_us=args.window_us, window_events=args.window_events,
                         stride_us=args.stride_us)
    config = StreamConfig(overload=args.overload, out_of_order=args.out_of_order,
                          buffer_events=args.buffer_events, max_pending=args.max_pending,
                          reconnect=args.reconnect, backoff_s=args.backoff,
                          connect_timeout_s=args.connect_timeout,
                          max_seconds=args.max_seconds,
                          report_seconds=0 if args.quiet else args.report_seconds)
    model, encoding, params = _model_and_encoding(args, args.stream_owners)
    log = _log("stream", args.quiet)
    sink = JsonLinesSink(args.out, digest=args.digest)

    def summary(s: dict) -> None:
        sink.summary(s)
        if log:
            log(_summary_line(s))

    try:
        run_stream(args.source, encoding=encoding, params=params, windows=windows,
                   model=model, on_window=sink.window, on_summary=summary, config=config,
                   sensor_size=args.sensor_size, log=log)
    finally:
        sink.close()
    return 0


def _summary_line(s: dict) -> str:
    def ms(v):
        return "-" if v is None else f"{v:.1f} ms"
    return (f"{s['ended']}: {s['events']} events in {s['seconds']:.1f} s "
            f"({s['events_per_s'] / 1e6:.2f} Mev/s), {s['windows']} windows, dropped "
            f"{s['dropped_events']} events ({s['dropped_windows']} windows), "
            f"{s['malformed_packets']} malformed packets, {s['out_of_order']} out of order, "
            f"{s['reconnects']} reconnects; latency p50 {ms(s['p50_latency_ms'])} "
            f"p99 {ms(s['p99_latency_ms'])}")


def add_parsers(subparsers) -> None:
    """Add the `serve` and `stream` subcommands; each sets `func(args) -> exit status`."""
    from ..cli import _add_param_flags
    from ..encoders.base import ENCODINGS
    from ..io.base import FORMATS
    from .engine import StreamConfig
    from .playback import PACKET_EVENTS, PACKET_US
    from .ring import POLICIES
    from .server import PROTOCOLS
    from .windows import ORDER_POLICIES

    s = subparsers.add_parser("serve", help="publish an event file as a live stream "
                                            "(dv-processing network stream or evpipe tcp://)")
    s.add_argument("file", help="event file (any format evpipe reads)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                                                      "127.0.0.1, this machine only)")
    s.add_argument("--port", type=int, default=7777, help="TCP port (default 7777)")
    s.add_argument("--speed", type=float, default=1.0, metavar="S",
                   help="playback speed x real time; 0 = as fast as clients read (default 1)")
    s.add_argument("--protocol", choices=PROTOCOLS, default="dv",
                   help="dv: dv-processing network stream (default); tcp: evpipe's framed "
                        "protocol, for higher rates")
    s.add_argument("--format", choices=FORMATS.names(), help="file format (default: detected)")
    s.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="play the recording N times, time shifted to keep increasing")
    s.add_argument("--packet-us", type=int, default=PACKET_US, metavar="N",
                   help=f"packet span limit, us (default {PACKET_US})")
    s.add_argument("--packet-events", type=int, default=PACKET_EVENTS, metavar="N",
                   help=f"packet size limit, events (default {PACKET_EVENTS})")
    s.add_argument("--clients", type=int, default=1, metavar="N",
                   help="clients to wait for before playing (default 1; 0 = start at once)")
    s.add_argument("--wait", type=float, default=600.0, metavar="S",
                   help="seconds to wait for them (default 600)")
    s.add_argument("--crc", action="store_true", help="tcp: CRC-32 in every packet")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    s.set_defaults(func=cmd_serve)

    defaults = StreamConfig()
    # "resolve": the stream's own --window-us / --stride-us take over event_cloud's
    # parameter flags of the same name (as in `evpipe view`).
    st = subparsers.add_parser("stream", conflict_handler="resolve",
                               help="streaming inference: windows of a live source -> "
                                    "encoder -> model -> JSON lines")
    owners = _add_param_flags(st, ENCODINGS, "encoding")
    st.add_argument("source", help="dv://HOST:PORT, dv:///SOCKET, tcp://HOST:PORT, "
                                   "replay:FILE[?speed=S&repeat=N], camera:[SERIAL], "
                                   "metavision:[SERIAL]")
    st.add_argument("--encoding", choices=[n for n in ENCODINGS.names()
                                           if "events" in ENCODINGS.get(n).inputs],
                    help="encoding (default: the model's, else frames)")
    size = st.add_mutually_exclusive_group()
    size.add_argument("--window-us", type=int, metavar="N",
                      help="time windows of N us (default 50000)")
    size.add_argument("--window-events", type=int, metavar="N", help="windows of N events")
    st.add_argument("--stride-us", type=int, metavar="N",
                    help="sliding time windows starting every N us (<= --window-us)")
    st.add_argument("--model", metavar="CKPT", help="checkpoint from `evpipe train` "
                                                    "(default: emit encodings only)")
    st.add_argument("--device", default="cpu", help="model device (default cpu)")
    st.add_argument("--out", metavar="FILE", help="JSON lines file (default stdout)")
    st.add_argument("--reconnect", type=int, default=defaults.reconnect, metavar="N",
                    help=f"reconnect tries per outage (default {defaults.reconnect}; 0 = end "
                         "when the source goes away)")
    st.add_argument("--backoff", type=float, default=defaults.backoff_s, metavar="S",
                    help=f"first retry delay, doubled per try (default {defaults.backoff_s})")
    st.add_argument("--connect-timeout", type=float, default=defaults.connect_timeout_s,
                    metavar="S", help="keep trying the first connection this long (default "
                                      f"{defaults.connect_timeout_s:g})")
    st.add_argument("--max-seconds", type=float, metavar="S", help="stop after S seconds")
    st.add_argument("--overload", choices=POLICIES, default=defaults.overload,
                    help="when the model falls behind: drop the oldest windows (counted; "
                         "default) or block the source")
    st.add_argument("--out-of-order", choices=ORDER_POLICIES, default=defaults.out_of_order,
                    help="events older than the latest: drop (default) or clamp their time")
    st.add_argument("--buffer-events", type=int, default=defaults.buffer_events, metavar="N",
                    help=f"ring buffer capacity (default {defaults.buffer_events})")
    st.add_argument("--max-pending", type=int, default=defaults.max_pending, metavar="N",
                    help=f"windows waiting for the model (default {defaults.max_pending})")
    st.add_argument("--sensor-size", type=int, nargs=2, metavar=("W", "H"),
                    help="sensor size, when the source does not give it")
    st.add_argument("--report-seconds", type=float, default=defaults.report_seconds,
                    metavar="S", help="progress line period on stderr (default "
                                      f"{defaults.report_seconds:g})")
    st.add_argument("--digest", action="store_true",
                    help="add each window's record SHA-256 (`sha256`) to its line")
    st.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    st.set_defaults(func=cmd_stream, stream_owners=owners)
