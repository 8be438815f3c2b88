"""evpipe's tcp:// framing: exact round trips, malformed packets skipped and counted."""

import struct

import numpy as np
import pytest

from evpipe.errors import StreamError
from evpipe.events import EVENT_DTYPE
from evpipe.io import read_events
from evpipe.stream.protocol import (MAX_PACKET_EVENTS, PacketDecoder, end_packet,
                                    packet_header, parse_stream_header, stream_header)


@pytest.fixture(scope="module")
def events(data_dir):
    return read_events(data_dir / "prophesee_evt3" / "evt3_pedestrians_small.raw")


def wire(events, sizes, crc=False):
    """Packets of `sizes` events each over `events`, then the end packet."""
    out, s = [], 0
    for n in sizes:
        part = np.ascontiguousarray(events[s:s + n])
        out += [packet_header(part, crc), part.view(np.uint8).tobytes()]
        s += n
    return b"".join(out) + end_packet()


def feed_in_pieces(dec, data, seed):
    """Feed `data` in random-sized pieces; concatenated events."""
    rng = np.random.default_rng(seed)
    parts, pos = [], 0
    while pos < len(data):
        n = int(rng.integers(1, 5000))
        parts.append(dec.feed(data[pos:pos + n]))
        pos += n
    return np.concatenate(parts) if parts else np.empty(0, EVENT_DTYPE)


def test_header_round_trip_and_layout():
    h = stream_header(1280, 720)
    assert len(h) == 32 and h[:4] == b"EVPS"
    assert struct.unpack_from("<HHIIHH", h, 4) == (1, 32, 1280, 720, 13, 1)
    assert parse_stream_header(h, "x") == (1280, 720, 32)


@pytest.mark.parametrize("patch, match", [
    ((0, b"EVPX"), "not an evpipe event stream"),
    ((4, struct.pack("<H", 2)), "unsupported stream: version 2"),
    ((16, struct.pack("<H", 16)), "record 16 B"),
    ((8, struct.pack("<I", 0)), "sensor size 0x720"),
])
def test_bad_headers_are_stream_errors(patch, match):
    h = bytearray(stream_header(1280, 720))
    h[patch[0]:patch[0] + len(patch[1])] = patch[1]
    with pytest.raises(StreamError, match=match):
        parse_stream_header(bytes(h), "tcp://x:1")


@pytest.mark.parametrize("crc", [False, True])
def test_real_events_round_trip_in_any_pieces(events, crc):
    data = wire(events, [1, 999, 2000, 2000], crc)
    dec = PacketDecoder(1280, 720)
    got = feed_in_pieces(dec, data, seed=1)
    assert dec.ended and dec.malformed == 0 and dec.skipped_bytes == 0
    assert got.tobytes() == events.tobytes()


def test_malformed_packets_are_skipped_and_counted(events):
    good = wire(events[:100], [50, 50])[:-16]      # two packets, no end packet
    bad_crc = bytearray(wire(events[100:200], [100], crc=True)[:-16])
    bad_crc[-1] ^= 0xFF
    outside = events[200:210].copy()
    outside["x"][3] = 1280                          # one event off the sensor
    bad_pol = events[210:220].copy()
    bad_pol["p"][0] = 2
    garbage = b"\x00EVPK\xff\xff" + bytes(range(200))  # a false magic inside garbage
    absurd = struct.pack("<4sHHII", b"EVPK", 1, 0, MAX_PACKET_EVENTS + 1, 0)
    data = (good + bytes(bad_crc) + wire(outside, [10])[:-16] + wire(bad_pol, [10])[:-16]
            + garbage + absurd + wire(events[220:300], [80]))
    dec = PacketDecoder(1280, 720)
    got = feed_in_pieces(dec, data, seed=2)
    assert got.tobytes() == np.concatenate([events[:100], events[220:300]]).tobytes()
    # crc, sensor, polarity, and one run of bad bytes: the garbage (its false magic
    # included) and the absurd header right after it
    assert dec.malformed == 4 and dec.ended
    assert dec.skipped_bytes >= len(garbage)


def test_absurd_count_allocates_nothing():
    dec = PacketDecoder(64, 64)
    before = len(dec.buf)
    dec.feed(struct.pack("<4sHHII", b"EVPK", 1, 0, 0xFFFFFFFF, 0) + b"\0" * 64)
    assert dec.malformed == 1 and len(dec.buf) == before


def test_packet_larger_than_the_buffer(events):
    big = np.resize(events, 600_000)  # 7.8 MB payload, more than the 4 MB buffer
    dec = PacketDecoder(1280, 720)
    got = feed_in_pieces(dec, wire(big, [len(big)]), seed=3)
    assert got.tobytes() == big.tobytes() and dec.ended


def test_send_parts_survives_partial_sends():
    """`evpipe serve`'s batched sendmsg resumes after the kernel takes part of a batch."""
    import socket
    import threading

    from evpipe.stream.server import _send_parts
    rng = np.random.default_rng(0)
    parts = [bytes([k]) * int(n) for k, n in enumerate(rng.integers(1, 300_000, 40))]
    parts.append(np.arange(500_000, dtype=np.uint8))
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    a.settimeout(10)  # as serve's client sockets: sendmsg may then take part of a batch
    got = bytearray()

    def drain():
        while chunk := b.recv(1 << 16):
            got.extend(chunk)
    reader = threading.Thread(target=drain)
    reader.start()
    with a:
        _send_parts(a, parts)
        a.shutdown(socket.SHUT_WR)
    reader.join(30)
    b.close()
    assert bytes(got) == b"".join(bytes(p) for p in parts)
