"""Writers of spec-conformant AEDAT 1.0/2.0 (jAER) and 3.1 (cAER) files for tests.

No real AEDAT 2.0 or 3.1 file is available (../shared/data/PROVENANCE.md), so tests build
them here from known events. Events are EVENT_DTYPE in evpipe's convention (what the
readers return); the writers encode them as jAER / libcaer do (specs/formats.md §5-6):

- `write_aedat2(path, events, chip="DVS128", imu_words=0, ...)`: jAER 8-byte BE records
  (AEDAT 1.0, 6-byte records, with `version="1.0"`), optionally interleaving IMU, APS and
  special words that readers must skip.
- `write_aedat31(path, events, extra_packets=..., ...)`: cAER packets; `polarity_packet`,
  `special_packet`, `imu6_packet` and `caer_packet` build single packets (also hostile ones)
  for `extra_packets` or for hand-assembled files (`aedat31_header` + packets).
- `random_events(n, width, height)`: sorted random events to feed them.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from evpipe.events import EVENT_DTYPE

JAER_CLASSES = {
    "DVS128": "ch.unizh.ini.jaer.chip.retina.DVS128",
    "DAVIS240C": "eu.seebetter.ini.chips.davis.DAVIS240C",
    "DAVIS346B": "eu.seebetter.ini.chips.davis.Davis346B",
    "DAVIS640": "eu.seebetter.ini.chips.davis.Davis640",
}
GEOMETRY = {"DVS128": (128, 128), "DAVIS240C": (240, 180), "DAVIS346B": (346, 260),
            "DAVIS640": (640, 480)}


def random_events(n: int, width: int, height: int, seed: int = 0, t0: int = 0,
                  max_dt: int = 20) -> np.ndarray:
    """`n` events, t non-decreasing from `t0` in steps of 0..max_dt µs, uniform x/y/p."""
    rng = np.random.default_rng(seed)
    ev = np.empty(n, EVENT_DTYPE)
    ev["t"] = t0 + np.cumsum(rng.integers(0, max_dt + 1, n))
    ev["x"] = rng.integers(0, width, n)
    ev["y"] = rng.integers(0, height, n)
    ev["p"] = rng.integers(0, 2, n)
    return ev


# -- AEDAT 1.0 / 2.0 (jAER) ------------------------------------------------------------------

def aedat2_addresses(events: np.ndarray, chip: str = "DVS128", flip_x: bool = True,
                     flip_y: bool = True) -> np.ndarray:
    """uint32 jAER addresses of polarity events (inverse of evpipe's default decoding:
    raw x = W-1-x, raw y = H-1-y; DVS128 ON = bit 0 clear, DAVIS ON = bit 11 set)."""
    w, h = GEOMETRY[chip]
    x = events["x"].astype(np.uint32)
    y = events["y"].astype(np.uint32)
    p = events["p"].astype(np.uint32)
    if flip_x:
        x = w - 1 - x
    if flip_y:
        y = h - 1 - y
    if chip == "DVS128":
        return (y << 8) | (x << 1) | (1 - p)
    return (y << 22) | (x << 12) | (p << 11)


def _other_words(kind: str, n: int, chip: str, rng) -> np.ndarray:
    """n non-polarity jAER words: 'special', 'aps' or 'imu' (DAVIS layouts; for DVS128,
    'aps' and 'imu' are bit-31 words, which DVS128 readers skip as special)."""
    if kind == "special":
        if chip == "DVS128":
            return (0x8000 | rng.integers(0, 0x8000, n)).astype(np.uint32)
        return (0x400 | (rng.integers(0, 1 << 21, n) << 11) & 0x7FFFF800).astype(np.uint32)
    if kind == "aps":
        return (0x80000000 | (rng.integers(0, 1 << 20, n) << 12) & 0x7FFFF000
                | rng.integers(0, 0x800, n)).astype(np.uint32)
    code = np.arange(n) % 7  # IMU sample type 0..6 in bits 28-30, value in bits 12-27
    return (0x80000C00 | (code << 28) | (rng.integers(0, 1 << 16, n) << 12)).astype(np.uint32)


def aedat2_header(chip: str | None = "DVS128", version: str = "2.0", lines=(),
                  header_bytes: int = 0, end_line: bool = True) -> bytes:
    """jAER-style header: version line (none for version=None), info lines, AEChip line,
    `lines`, XML preference lines up to `header_bytes`, '#End Of ASCII Header'."""
    out = [f"#!AER-DAT{version}"] if version else []
    out += ["# This is a raw AE data file - do not edit",
            "# Data format is int32 address, int32 timestamp (8 bytes total), "
            "repeated for each event",
            "# Timestamps tick is 1 us"]
    if chip is not None:
        out.append(f"# AEChip: {JAER_CLASSES.get(chip, chip)}")
    out += list(lines)
    text = "".join(s + "\r\n" for s in out)
    k = 0
    while len(text) < header_bytes:
        text += f'#    <entry key="DAVIS240C.IPot.Bias{k}.BitValue" value="{k}"/>\r\n'
        k += 1
    if end_line:
        text += "#End Of ASCII Header\r\n"
    return text.encode("latin-1")


def write_aedat2(path, events: np.ndarray, chip: str | None = "DVS128", *,
                 imu_words: int = 0, aps_words: int = 0, special_words: int = 0,
                 version: str | None = "2.0", header_lines=(), header_bytes: int = 0,
                 end_line: bool = True, flip_x: bool = True, flip_y: bool = True,
                 tail: bytes = b"", seed: int = 0) -> Path:
    """Write `events` as a jAER AEDAT file and return `path`.

    t must start in [0, 2^32) µs with steps below 2^31 (stored modulo 2^32, as jAER's
    int32 clock). `imu_words` IMU words go in whole 7-word samples at random places, the
    remainder (imu_words % 7) as a partial sample at the end; `aps_words` and
    `special_words` single words at random places, each with the timestamp of the next
    event. `version="1.0"` writes 6-byte records (DVS128 only), `version=None` the same
    without a version line (AEDAT 1.0 by default). `tail` is appended as is (e.g. a
    partial record). `chip=None`: no AEChip line; chip names outside GEOMETRY (e.g. a
    full jAER class name) get DVS128 addresses.
    """
    layout_chip = chip if chip in GEOMETRY else "DVS128"
    rng = np.random.default_rng(seed)
    addr = aedat2_addresses(events, layout_chip, flip_x, flip_y)
    ts = (events["t"] & 0xFFFFFFFF).astype(np.uint32)
    n = len(events)
    groups = [_other_words("aps", 1, layout_chip, rng) for _ in range(aps_words)]
    groups += [_other_words("special", 1, layout_chip, rng) for _ in range(special_words)]
    groups += [_other_words("imu", 7, layout_chip, rng) for _ in range(imu_words // 7)]
    where = np.sort(rng.integers(0, n + 1, len(groups)))
    order = rng.permutation(len(groups))
    a_parts, t_parts, prev = [], [], 0
    for pos, g in zip(where, order):
        a_parts.append(addr[prev:pos])
        t_parts.append(ts[prev:pos])
        a_parts.append(groups[g])
        t_parts.append(np.full(len(groups[g]), ts[min(pos, n - 1)] if n else 0, np.uint32))
        prev = pos
    a_parts.append(addr[prev:])
    t_parts.append(ts[prev:])
    partial = _other_words("imu", imu_words % 7, layout_chip, rng)
    a_parts.append(partial)
    t_parts.append(np.full(len(partial), ts[-1] if n else 0, np.uint32))
    a = np.concatenate(a_parts)
    t = np.concatenate(t_parts)
    if version in ("1.0", None):
        rec = np.empty(len(a), [("a", ">u2"), ("t", ">u4")])
    else:
        rec = np.empty(len(a), [("a", ">u4"), ("t", ">u4")])
    rec["a"] = a
    rec["t"] = t
    path = Path(path)
    path.write_bytes(aedat2_header(chip, version, header_lines, header_bytes, end_line)
                     + rec.tobytes() + tail)
    return path


# -- AEDAT 3.1 (cAER / libcaer) ---------------------------------------------------------------

POLARITY, SPECIAL, IMU6 = 1, 0, 3


def aedat31_header(source: str = "DVS128", lines=()) -> bytes:
    """cAER 3.1 header: version, format, source, start time, `lines`, end line."""
    out = ["#!AER-DAT3.1", "#Format: RAW", f"#Source 1: {source}",
           "#Start-Time: 2017-05-01 12:00:00 (TZ+0000)", *lines, "#!END-HEADER"]
    return "".join(s + "\r\n" for s in out).encode("latin-1")


def caer_packet(etype: int, body: bytes, *, event_size: int, capacity: int,
                number: int | None = None, valid: int | None = None, ts_overflow: int = 0,
                ts_offset: int = 4, source: int = 1) -> bytes:
    """28-byte libcaer packet header (common.h) + `body`, fields as given (no checks, so
    hostile packets can be built)."""
    number = capacity if number is None else number
    valid = number if valid is None else valid
    return struct.pack("<hhiiiiii", etype, source, event_size, ts_offset, ts_overflow,
                       capacity, number, valid) + body


def polarity_packet(events: np.ndarray, *, valid=None, capacity: int | None = None,
                    source: int = 1) -> bytes:
    """Polarity packet (libcaer polarity.h): data = x<<17 | y<<2 | p<<1 | valid, ts =
    t & 0x7FFFFFFF, eventTSOverflow = t >> 31 of the first event (all must share it).
    `valid` (bool per event) clears valid marks; `capacity` > len adds zeroed slots."""
    n = len(events)
    ovf = int(events["t"][0]) >> 31 if n else 0
    assert n == 0 or (events["t"] >> 31 == ovf).all(), "events span a TS overflow"
    cap = n if capacity is None else capacity
    rec = np.zeros(cap, [("data", "<u4"), ("ts", "<i4")])
    v = np.ones(n, np.uint32) if valid is None else np.asarray(valid, np.uint32)
    rec["data"][:n] = ((events["x"].astype(np.uint32) << 17)
                       | (events["y"].astype(np.uint32) << 2)
                       | (events["p"].astype(np.uint32) << 1) | v)
    rec["ts"][:n] = events["t"] & 0x7FFFFFFF
    return caer_packet(POLARITY, rec.tobytes(), event_size=8, capacity=cap, number=n,
                       valid=int(v.sum()), ts_overflow=ovf, source=source)


def special_packet(t: np.ndarray, code: int = 1, source: int = 1) -> bytes:
    """SPECIAL packet (8-byte events: data = code<<1 | valid, int32 ts)."""
    rec = np.zeros(len(t), [("data", "<u4"), ("ts", "<i4")])
    rec["data"] = (code << 1) | 1
    rec["ts"] = np.asarray(t) & 0x7FFFFFFF
    return caer_packet(SPECIAL, rec.tobytes(), event_size=8, capacity=len(t), source=source)


def imu6_packet(t: np.ndarray, values=None, seed: int = 0, source: int = 1) -> bytes:
    """IMU6 packet (36-byte events: uint32 info (valid mark), int32 ts, 7 float32: accel
    xyz, gyro xyz, temperature; libcaer imu6.h); `values` [n, 7], default random."""
    rng = np.random.default_rng(seed)
    rec = np.zeros(len(t), [("info", "<u4"), ("ts", "<i4"), ("v", "<f4", 7)])
    rec["info"] = 1
    rec["ts"] = np.asarray(t) & 0x7FFFFFFF
    rec["v"] = rng.normal(size=(len(t), 7)) if values is None else values
    return caer_packet(IMU6, rec.tobytes(), event_size=36, capacity=len(t), source=source)


def write_aedat31(path, events: np.ndarray, *, extra_packets=(), packet_events: int = 4096,
                  valid=None, source: str = "DVS128", header_lines=(), tail: bytes = b""
                  ) -> Path:
    """Write `events` as cAER AEDAT 3.1 polarity packets of up to `packet_events` events
    (split where t >> 31 changes) and return `path`. `extra_packets`: (k, packet bytes)
    pairs, each inserted before polarity packet k (k past the end: appended). `valid`:
    bool per event (False clears the valid mark). `tail` is appended as is."""
    t = events["t"]
    cuts = set(range(packet_events, len(events), packet_events))
    cuts |= set((np.flatnonzero(np.diff(t >> 31)) + 1).tolist())
    bounds = [0, *sorted(cuts), len(events)] if len(events) else [0, 0]
    v = np.ones(len(events), bool) if valid is None else np.asarray(valid, bool)
    packets = [polarity_packet(events[a:b], valid=v[a:b]) for a, b in zip(bounds, bounds[1:])
               if b > a]
    extra = sorted(extra_packets, key=lambda kp: kp[0])
    parts = [aedat31_header(source, header_lines)]
    for k, pkt in enumerate(packets):
        parts += [p for i, p in extra if i == k]
        parts.append(pkt)
    parts += [p for i, p in extra if i >= len(packets)]
    path = Path(path)
    path.write_bytes(b"".join(parts) + tail)
    return path
