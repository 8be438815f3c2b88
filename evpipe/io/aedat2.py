"""jAER AEDAT 2.0 (and 1.0) event files (formats.md §5; docs.inivation.com AEDAT 1.0/2.0).

Header: '#' text lines (CRLF), the first `#!AER-DAT2.0`; data starts after jAER's
`#End Of ASCII Header` line or else at the first line not starting with '#' (a file
without a version line is AEDAT 1.0). Records are BIG-endian: int32 address + int32
timestamp (8 bytes; AEDAT 1.0: int16 address + int32 timestamp, 6 bytes).

Addresses are decoded as jAER's own extractors do (SensorsINI/jaer
`ch/unizh/ini/jaer/chip/retina/DVS128.java` Extractor,
`eu/seebetter/ini/chips/davis/DavisBaseCamera.java` DavisEventExtractor):
- DVS128: special when bit 15 or bit 31 is set; x = (a>>1)&0x7F, y = (a>>8)&0x7F and
  ON when bit 0 is **0** (jAER: "The ON events have raw polarity 0"; libcaer dvs128.c:
  "Invert polarity bit. Hardware is like this."; uzh-rpg/rpg_dvs_ros agrees. iniVation's
  AEDAT 1.0 page, PyAedatTools and tonic say bit 0 = 1 is ON.)
- DAVIS: bit 31 set = APS sample (bit 11 clear) or IMU word (bit 11 set, 7 words per IMU6
  sample), bit 10 set = special; otherwise a polarity event with x = (a>>12)&0x3FF,
  y = (a>>22)&0x1FF, ON when bit 11 is set.
jAER shows x mirrored (`x = sizeX-1-rawX` in both extractors) with y pointing up (origin
bottom-left); libcaer dvs128.c likewise flips x ("To correct for flipped camera") and y
("To convert to CG format"). evpipe's (0, 0) is the top-left pixel, so by default
x = W-1-rawX and y = H-1-rawY: the image jAER displays (tonic's `read_davis_346` does
the same).
`flip_x=False, flip_y=False` give the raw address fields. Events whose raw address lies
outside the sensor are dropped and counted (a warning names how many).

Timestamps are 32-bit µs; they are read unsigned and unwrapped into int64: a drop of
more than 2^31 µs is a wrap (+2^32); smaller drops (timestamp resets, jitter) are kept.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np
from numba import njit

from ..errors import ConfigError
from ..events import EVENT_DTYPE, SensorSize
from .base import FORMATS, HEADER_LIMIT, EventReader
from .kernels import unwrap32

DVS128, DAVIS = 0, 1  # address layouts
IMU_WORDS = 7  # words per IMU6 sample (ax, ay, az, temp, gx, gy, gz)
END_OF_HEADER = b"#end of ascii header"  # jAER's last header line (lower-cased)


class Chip(NamedTuple):
    """A jAER AEChip class family: address layout and sensor geometry."""

    name: str
    layout: int
    width: int
    height: int


# AEChip class (last dotted component) -> chip; jAER eu.seebetter.ini.chips.davis.*,
# ch.unizh.ini.jaer.chip.retina.DVS128 / Tmpdiff128. Also used for cAER source names.
CHIPS = (
    (r"dvs128|tmpdiff128|edvs", Chip("DVS128", DVS128, 128, 128)),
    (r"davis240\w*|dvs240", Chip("DAVIS240", DAVIS, 240, 180)),
    (r"davis346\w*", Chip("DAVIS346", DAVIS, 346, 260)),
    (r"davis(rgbw)?640\w*", Chip("DAVIS640", DAVIS, 640, 480)),
    (r"davis128\w*", Chip("DAVIS128", DAVIS, 128, 128)),
    (r"davis208\w*", Chip("DAVIS208", DAVIS, 208, 192)),
)


def find_chip(name: str) -> Chip | None:
    """Chip for a jAER AEChip class or device name ('eu.seebetter.ini.chips.davis.DAVIS240C',
    'DAVIS346B', 'DVS128', ...), or None when unknown."""
    last = name.strip().rsplit(".", 1)[-1].lower()
    for pattern, chip in CHIPS:
        if re.fullmatch(pattern, last):
            return chip
    return None


def parse_hash_header(reader: EventReader, end_line: bytes | None = None
                      ) -> tuple[list[str], int]:
    """'#' text header of AEDAT files: lines up to and including `end_line` (compared
    lower-cased, without line ending) or up to the first line not starting with '#'.
    Returns (lines without '#' and line ending, data offset)."""
    head = reader.read_bytes_at(0, HEADER_LIMIT + 1)
    lines, pos = [], 0
    while head.startswith(b"#", pos):
        nl = head.find(b"\n", pos)
        if nl < 0:
            if len(head) > HEADER_LIMIT:
                raise reader.error(f"header longer than {HEADER_LIMIT} bytes", offset=pos)
            raise reader.error("header line without newline (truncated file?)", offset=pos)
        raw = head[pos:nl].rstrip(b"\r")
        lines.append(raw[1:].decode("latin-1"))
        pos = nl + 1
        if end_line is not None and raw.lower() == end_line:
            break
    return lines, pos


@njit(cache=True, nogil=True)
def _decode(buf, rec, layout, width, height, flip_x, flip_y, out, state, counts):
    """buf uint8 [n*rec] BE records (rec 8: u32 address, u32 ts; rec 6: u16, u32) -> out.

    Returns the number of polarity events written. state int64 [3] = (time base incl.
    wraps, last raw ts, started); counts int64 [5] += (polarity, special, APS, IMU,
    outside the sensor).
    """
    base = state[0]
    last = state[1]
    k = 0
    for i in range(buf.shape[0] // rec):
        j = i * rec
        if rec == 8:
            a = ((np.uint32(buf[j]) << 24) | (np.uint32(buf[j + 1]) << 16)
                 | (np.uint32(buf[j + 2]) << 8) | np.uint32(buf[j + 3]))
            j += 4
        else:
            a = (np.uint32(buf[j]) << 8) | np.uint32(buf[j + 1])
            j += 2
        ts = np.int64((np.uint32(buf[j]) << 24) | (np.uint32(buf[j + 1]) << 16)
                      | (np.uint32(buf[j + 2]) << 8) | np.uint32(buf[j + 3]))
        if state[2]:
            base = unwrap32(ts, last, base)
        state[2] = 1
        last = ts
        if layout == DVS128:
            if a & 0x80008000:
                counts[1] += 1
                continue
            x = (a >> 1) & 0x7F
            y = (a >> 8) & 0x7F
            p = 1 - (a & 1)
        else:
            if a & 0x80000000:
                if a & 0x800:
                    counts[3] += 1
                else:
                    counts[2] += 1
                continue
            if a & 0x400:
                counts[1] += 1
                continue
            x = (a >> 12) & 0x3FF
            y = (a >> 22) & 0x1FF
            p = (a >> 11) & 1
        if x >= width or y >= height:
            counts[4] += 1
            continue
        e = out[k]
        e.t = base + ts
        e.x = width - 1 - x if flip_x else x
        e.y = height - 1 - y if flip_y else y
        e.p = p
        k += 1
    counts[0] += k
    state[0] = base
    state[1] = last
    return k


@FORMATS.register("aedat2")
class Aedat2Reader(EventReader):
    """jAER AEDAT 2.0 / 1.0 polarity events (APS, IMU and special words are skipped).

    `chip` overrides the AEChip class named in the header ('DVS128', 'DAVIS240',
    'DAVIS346', 'DAVIS640', 'DAVIS128', 'DAVIS208' or a jAER class name); without either,
    DVS128 is assumed (noted in `metadata["chip_source"]`). `flip_x` / `flip_y` (default
    True) mirror the raw addresses into the image jAER displays, origin top-left.
    `metadata["counts"]` holds word counts by kind after a full pass.
    """

    format = "aedat2"
    extensions = (".aedat",)

    def __init__(self, path, sensor_size=None, *, chip: str | None = None,
                 flip_x: bool = True, flip_y: bool = True):
        self._chip_override = chip
        self.flip_x = bool(flip_x)
        self.flip_y = bool(flip_y)
        super().__init__(path, sensor_size=sensor_size)

    @classmethod
    def sniff(cls, head: bytes) -> int:
        if head.startswith((b"#!AER-DAT2.", b"#!AER-DAT1.")):
            return 2
        if head.startswith(b"#") and not head.startswith(b"#!AER-DAT"):
            return 1  # '#' header without version line: AEDAT 1.0
        return 0

    def _open(self) -> None:
        lines, pos = parse_hash_header(self, END_OF_HEADER)
        version = "1.0"
        if lines and lines[0].startswith("!AER-DAT"):
            version = lines[0][len("!AER-DAT"):].strip()
        if version not in ("1.0", "2.0"):
            raise self.error(f"AEDAT version {version!r} is not AEDAT 1.0/2.0", offset=0)
        meta = {"version": version, "header": lines}
        found = (re.match(r"\s*AEChip:\s*(\S+)", ln) for ln in lines)
        aechip = next((m.group(1) for m in found if m), None)
        if self._chip_override is not None:
            chip = find_chip(self._chip_override)
            if chip is None:
                raise ConfigError(f"unknown chip {self._chip_override!r}; known: "
                                  + ", ".join(c.name for _, c in CHIPS), path=self.path)
            meta["chip_source"] = "chip argument"
        elif aechip is not None:
            chip = find_chip(aechip)
            if chip is None:
                raise self.error(f"unknown AEChip class {aechip!r}: pass chip= (one of "
                                 + ", ".join(c.name for _, c in CHIPS) + ")", offset=0)
            meta["chip_source"] = "header"
        else:
            chip = CHIPS[0][1]
            meta["chip_source"] = "assumed DVS128: no AEChip line in the header"
        self.record_bytes = 6 if version == "1.0" else 8
        if self.record_bytes == 6 and chip.layout != DVS128:
            raise self.error(f"AEDAT 1.0 has 16-bit addresses; chip {chip.name} needs 32",
                             offset=0)
        meta["aechip"] = aechip
        meta["chip"] = chip.name
        self.chip = chip
        self.sensor_size = SensorSize(chip.width, chip.height)
        self.data_offset = pos
        self.n_records = (self.file_size - pos) // self.record_bytes
        self.metadata = meta

    def _blocks(self, out: np.ndarray | None = None):
        """Decoded blocks, written into consecutive slices of `out` when given."""
        rec = self.record_bytes
        state = np.zeros(3, np.int64)
        counts = np.zeros(5, np.int64)
        w, h = self.sensor_size
        end = self.data_offset + rec * self.n_records
        i = 0
        for _, buf in self.byte_blocks(self.data_offset, end, align=rec):
            dst = np.empty(len(buf) // rec, EVENT_DTYPE) if out is None else out[i:]
            k = _decode(buf, rec, self.chip.layout, w, h, self.flip_x, self.flip_y, dst,
                        state, counts)
            i += k
            yield dst[:k]
        self._finish(counts)

    def _decode(self):
        return self._blocks()

    def read(self) -> np.ndarray:
        out = np.empty(self.n_records, EVENT_DTYPE)
        n = sum(len(b) for b in self._blocks(out))
        return out[:n] if 2 * n > len(out) else out[:n].copy()

    def _finish(self, counts: np.ndarray) -> None:
        names = ("polarity", "special", "aps", "imu", "outside_sensor")
        self.metadata["counts"] = dict(zip(names, map(int, counts)))
        if counts[3] % IMU_WORDS:
            self.warn(f"{counts[3]} IMU words is not a whole number of {IMU_WORDS}-word "
                      "IMU samples: the last sample is incomplete")
        if counts[4]:
            w, h = self.sensor_size
            self.warn(f"{counts[4]} events with addresses outside the {w}x{h} sensor dropped")
        extra = (self.file_size - self.data_offset) % self.record_bytes
        if extra:
            self.warn(f"{extra} trailing bytes are not a whole {self.record_bytes}-byte "
                      "record; ignored", offset=self.file_size - extra)
