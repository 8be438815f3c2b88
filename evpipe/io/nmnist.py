"""N-MNIST / N-Caltech101 `.bin` (ATIS recordings of saccades, Orchard et al. 2015).

No header. 5 bytes per event: `b0` = x, `b1` = y, bit 7 of `b2` = polarity (1 = ON,
Orchard's Read_Ndataset.m "1 means off, 2 means on" after its +1), and
`t = ((b2 & 0x7F) << 16) | (b3 << 8) | b4`, a 23-bit timestamp in us with its bytes in
big-endian order (formats.md §8; tonic `io.read_mnist_file`; spikingjelly `load_ATIS_bin`).

Overflow markers: a record with y == 240 is not a pixel event. tonic and eventvision
drop it and add 2**13 us to every later timestamp; evpipe does the same, so its output
equals tonic's event for event. The constant is unverified: a 23-bit counter would wrap
at 2**23 (formats.md §8), and Orchard's own MATLAB reader ignores markers altogether.
No known sample contains a marker (N-MNIST samples last ~300 ms), so a file that does
gets an `EvpipeWarning` naming the count.

Geometry is not stored: `sensor_size` defaults to 34x34 (N-MNIST, tonic
`NMNIST.sensor_size`); N-Caltech101 images vary in size, so pass
`open_events(path, sensor_size=(W, H))`. Events outside the sensor size give a warning.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..events import EVENT_DTYPE, SensorSize
from .base import FORMATS, EventReader

RECORD_BYTES = 5
OVERFLOW_Y = 240
OVERFLOW_STEP_US = 1 << 13  # tonic / eventvision `time_increment`
NMNIST_SIZE = SensorSize(34, 34)


@njit(cache=True, nogil=True)
def _decode(buf, out, state):
    """buf uint8 [5n] -> out[:k] (EVENT_DTYPE); returns k, the records that are not
    overflow markers. Records beyond `len(out)` are left alone.

    state int64 [4] = (time offset us, markers seen, max x, max y), carried across blocks.
    """
    n = min(buf.shape[0] // 5, out.shape[0])
    offset = state[0]
    k = 0
    for i in range(n):
        j = 5 * i
        y = np.int64(buf[j + 1])
        if y == OVERFLOW_Y:
            offset += OVERFLOW_STEP_US
            state[1] += 1
            continue
        x = np.int64(buf[j])
        b2 = np.int64(buf[j + 2])
        e = out[k]
        e.t = offset + (((b2 & 0x7F) << 16) | (np.int64(buf[j + 3]) << 8) | np.int64(buf[j + 4]))
        e.x = x
        e.y = y
        e.p = b2 >> 7
        if x > state[2]:
            state[2] = x
        if y > state[3]:
            state[3] = y
        k += 1
    state[0] = offset
    return k


@FORMATS.register("nmnist")
class NmnistReader(EventReader):
    """N-MNIST / N-Caltech101 `.bin` events. Detected by extension only (no header);
    `metadata["geometry"]` says whether the size was given or assumed."""

    format = "nmnist"
    extensions = (".bin",)

    def __init__(self, path, sensor_size=None):
        super().__init__(path, sensor_size=sensor_size)
        if sensor_size is not None:
            self.metadata["geometry"] = "given"

    def _open(self) -> None:
        self.sensor_size = NMNIST_SIZE
        self.n_records = self.file_size // RECORD_BYTES
        self.metadata = {
            "geometry": "assumed 34x34 (N-MNIST); pass sensor_size for N-Caltech101",
            "overflow_policy": f"y == {OVERFLOW_Y} markers dropped, +{OVERFLOW_STEP_US} us "
                               "to later timestamps per marker (tonic/eventvision)",
        }

    def _blocks(self):
        return self.byte_blocks(0, RECORD_BYTES * self.n_records, align=RECORD_BYTES)

    def _finish(self, state: np.ndarray) -> None:
        """Warnings due after a full pass: markers, out-of-sensor events, a partial tail."""
        if state[1]:
            self.warn(f"{state[1]} overflow markers (y == {OVERFLOW_Y}) dropped and "
                      f"{OVERFLOW_STEP_US} us added per marker to later timestamps, as "
                      "tonic does; that constant is unverified (formats.md §8)")
        w, h = self.sensor_size
        if state[2] >= w or state[3] >= h:
            self.warn(f"events reach x={state[2]}, y={state[3]}, outside the sensor size "
                      f"{w}x{h}; pass sensor_size=(W, H) (N-Caltech101 sizes vary)")
        extra = self.file_size % RECORD_BYTES
        if extra:
            self.warn(f"{extra} trailing bytes are not a whole {RECORD_BYTES}-byte event; "
                      "ignored", offset=self.file_size - extra)

    def _decode(self):
        state = np.zeros(4, np.int64)
        for _, buf in self._blocks():
            out = np.empty(len(buf) // RECORD_BYTES, EVENT_DTYPE)
            yield out[:_decode(buf, out, state)]
        self._finish(state)

    def read(self) -> np.ndarray:
        out = np.empty(self.n_records, EVENT_DTYPE)
        state = np.zeros(4, np.int64)
        i = 0
        for _, buf in self._blocks():
            i += _decode(buf, out[i:], state)
        self._finish(state)
        return out[:i]
