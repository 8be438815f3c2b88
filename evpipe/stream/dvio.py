"""dv-processing glue: import check, EventStore <-> NumPy conversion.

NumPy -> `dv.EventStore`: dv-processing 2.0.4's Python API builds an EventStore only
event by event (`push_back`, about 1-2 Mev/s) and has no constructor from arrays. The
fast route here writes the events as uncompressed AEDAT 4 packets (NumPy, no per-event
Python) to a temporary file and reads them back with `dv.io.MonoCameraRecording`, which
returns one EventStore per packet; tools/bench_stream.py measures both routes.
"""

from __future__ import annotations

import os
import struct
import tempfile

import numpy as np

from ..errors import ConfigError, StreamError
from ..events import EVENT_DTYPE, SensorSize, as_sensor_size

# Layout of `dv.EventStore.numpy()` / dv::Event: int64 timestamp, int16 x, int16 y,
# uint8 polarity, 3 padding bytes.
DV_DTYPE = np.dtype({"names": ["timestamp", "x", "y", "polarity"],
                     "formats": ["<i8", "<i2", "<i2", "u1"], "offsets": [0, 8, 10, 12],
                     "itemsize": 16})
DV_MAX_COORD = 32767  # dv::Event coordinates are int16
_SHM = "/dev/shm"


def import_dv(what: str = "dv://"):
    """The `dv_processing` module, or StreamError saying how to install it."""
    try:
        import dv_processing
    except ImportError:
        raise StreamError(f"{what} needs dv-processing: pip install 'evpipe[stream]' "
                          "(or pip install 'dv-processing>=2.0,<3')") from None
    return dv_processing


def from_dv(arr: np.ndarray) -> np.ndarray:
    """EVENT_DTYPE copy of a dv-processing event array (fields timestamp, x, y, polarity)."""
    out = np.empty(len(arr), EVENT_DTYPE)
    out["t"] = arr["timestamp"]
    out["x"] = arr["x"]
    out["y"] = arr["y"]
    out["p"] = arr["polarity"]
    return out


def check_dv_size(size: SensorSize) -> None:
    if size.width > DV_MAX_COORD + 1 or size.height > DV_MAX_COORD + 1:
        raise ConfigError(f"dv-processing carries coordinates up to {DV_MAX_COORD}; the "
                          f"sensor is {size.width}x{size.height}")


def _io_header(size: SensorSize, source: str) -> bytes:
    """AEDAT 4 version line + IOHeader FlatBuffer: no compression, no data table, one
    EVTS stream (id 0) of the given size; the layout dv-processing 2.0.4 itself writes."""
    xml = (f'<dv version="2.0">\n<node name="outInfo" path="/outInfo/">\n'
           f'<node name="0" path="/outInfo/0/">\n'
           f'<attr key="compression" type="string">NONE</attr>\n'
           f'<attr key="originalModuleName" type="string">evpipe</attr>\n'
           f'<attr key="originalOutputName" type="string">events</attr>\n'
           f'<attr key="typeDescription" type="string">Array of events.</attr>\n'
           f'<attr key="typeIdentifier" type="string">EVTS</attr>\n'
           f'<node name="info" path="/outInfo/0/info/">\n'
           f'<attr key="sizeX" type="int">{size.width}</attr>\n'
           f'<attr key="sizeY" type="int">{size.height}</attr>\n'
           f'<attr key="source" type="string">{source}</attr>\n'
           f'</node>\n</node>\n</node>\n</dv>\n').encode()
    string = struct.pack("<I", len(xml)) + xml + b"\0"
    string += b"\0" * (-len(string) % 4)
    # root offset, file identifier, 6 pad bytes, vtable (size 10, table 20, compression
    # @4, dataTablePosition @12, infoNode @8), table (vtable soffset, compression = 0
    # NONE, infoNode offset, dataTablePosition = -1)
    flat = (struct.pack("<I4s6x", 24, b"IOHE") + struct.pack("<5H", 10, 20, 4, 12, 8)
            + struct.pack("<iiIq", 10, 0, 12, -1) + string)
    return b"#!AER-DAT4.0\r\n" + struct.pack("<I", len(flat)) + flat


def _packet_header(n: int) -> bytes:
    """PacketHeader (stream 0, size) + size-prefixed EventPacket FlatBuffer up to its
    vector of n 16-byte dv::Event structs (as dv-processing writes it)."""
    return (struct.pack("<ii", 0, 32 + 16 * n)
            + struct.pack("<II4s2x3HiII", 28 + 16 * n, 16, b"EVTS", 6, 8, 4, 6, 4, n))


def to_event_stores(events: np.ndarray, bounds, size, dv=None) -> list:
    """One `dv.EventStore` per non-empty packet events[bounds[i]:bounds[i+1]] (EVENT_DTYPE,
    t in us; `size` the sensor's (width, height)), through an uncompressed AEDAT 4 file in /dev/shm (or the temp folder), deleted
    before returning."""
    dv = dv or import_dv()
    size = as_sensor_size(size)
    bounds = np.asarray(bounds, np.int64)
    rec = np.zeros(len(events), DV_DTYPE)
    rec["timestamp"] = events["t"]
    rec["x"] = events["x"]
    rec["y"] = events["y"]
    rec["polarity"] = events["p"]
    fd, path = tempfile.mkstemp(suffix=".aedat4", prefix="evpipe-",
                                dir=_SHM if os.path.isdir(_SHM) else None)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_io_header(size, "evpipe"))
            for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
                if e > s:
                    f.write(_packet_header(e - s))
                    f.write(rec[s:e].view(np.uint8))
        rec = None
        reader = dv.io.MonoCameraRecording(path)
        stores = []
        while (store := reader.getNextEventBatch()) is not None:
            stores.append(store)
        del reader
    finally:
        os.unlink(path)
    got = sum(len(s) for s in stores)
    if got != bounds[-1] - bounds[0]:
        raise StreamError(f"dv-processing read back {got} of {bounds[-1] - bounds[0]} events "
                          "from the AEDAT 4 conversion file")
    return stores


def to_event_store_push_back(events: np.ndarray, dv=None):
    """`dv.EventStore` built event by event with `push_back` (the slow, documented route;
    kept for the benchmark)."""
    dv = dv or import_dv()
    store = dv.EventStore()
    for t, x, y, p in zip(events["t"].tolist(), events["x"].tolist(), events["y"].tolist(),
                          (events["p"] > 0).tolist()):
        store.push_back(t, x, y, p)
    return store
