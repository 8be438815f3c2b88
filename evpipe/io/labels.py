"""Label files that come with event datasets.

- Gen1 Automotive `*_bbox.npy` (formats.md §1.5): two dtypes exist, the original
  `ts, x, y, w, h, class_id u1, confidence, track_id` and the Prophesee toolbox's
  `BBOX_DTYPE` `t, x, y, w, h, class_id u4, track_id, class_confidence`
  (prophesee-automotive-dataset-toolbox src/io/box_loading.py). Both are read by field
  name and returned as `BOX_DTYPE`, the toolbox dtype with `t` int64.
- DVS128 Gesture `*_labels.csv` (formats.md §6.1): header
  `class,startTime_usec,endTime_usec`, then one row per gesture in file order; classes are
  1-based and may repeat.
"""

from __future__ import annotations

import os
import re

import numpy as np

from ..errors import FormatError

BOX_DTYPE = np.dtype([("t", "<i8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"),
                      ("class_id", "<u4"), ("track_id", "<u4"), ("class_confidence", "<f4")])
# output field -> accepted input names (v2 toolbox name first, then the v1 name)
BOX_FIELDS = {"t": ("t", "ts"), "x": ("x",), "y": ("y",), "w": ("w",), "h": ("h",),
              "class_id": ("class_id",), "track_id": ("track_id",),
              "class_confidence": ("class_confidence", "confidence")}

GESTURE_DTYPE = np.dtype([("class", "<i4"), ("start_us", "<i8"), ("end_us", "<i8")])
GESTURE_HEADER = ("class", "startTime_usec", "endTime_usec")
GESTURE_MAX_BYTES = 1 << 24  # a labels CSV holds a few dozen rows
_INT = re.compile(r"[+-]?[0-9]+")


def _line_error(path, lineno: int, offset: int):
    return lambda msg: FormatError(f"line {lineno}: {msg}", path=path, offset=offset)


def read_gen1_boxes(path: str | os.PathLike) -> np.ndarray:
    """Boxes of a Gen1 `*_bbox.npy` as BOX_DTYPE [n]: `t` int64 us, `x, y` top-left corner
    and `w, h` float32 px, `class_id` uint32 (0 car, 1 pedestrian), `track_id` uint32,
    `class_confidence` float32. Never unpickles (`allow_pickle=False`) and maps the file
    rather than trusting its shape."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise FormatError("file not found", path=path) from None
    except (ValueError, OSError, EOFError) as e:
        raise FormatError(f"not a readable .npy array ({e})", path=path, offset=0) from None
    if isinstance(arr, np.lib.npyio.NpzFile):
        arr.close()
        raise FormatError("an .npz archive, expected a .npy structured array", path=path,
                          offset=0)
    names = arr.dtype.names
    if names is None or arr.ndim != 1:
        raise FormatError(f"expected a 1-D structured array of boxes, got {arr.dtype} with "
                          f"shape {arr.shape}", path=path, offset=0)
    out = np.empty(len(arr), BOX_DTYPE)
    for field, aliases in BOX_FIELDS.items():
        found = [a for a in aliases if a in names]
        if len(found) != 1:
            raise FormatError(f"box field {field!r} needs exactly one of {aliases}; the "
                              f"array has {names}", path=path, offset=0)
        src = arr[found[0]]
        want = BOX_DTYPE[field]
        kinds = "iu" if want.kind in "iu" else "iuf"
        if src.dtype.kind not in kinds or src.dtype.shape:
            raise FormatError(f"field {found[0]!r} has dtype {src.dtype}, expected "
                              f"{'an integer' if kinds == 'iu' else 'a number'}",
                              path=path, offset=0)
        if kinds == "iu" and len(src):
            info = np.iinfo(want)
            bad = np.flatnonzero((src < info.min) | (src > info.max))
            if len(bad):
                i = int(bad[0])
                raise FormatError(f"box {i}: {found[0]} = {src[i]} does not fit {want}",
                                  path=path, offset=arr.offset + i * arr.dtype.itemsize)
        out[field] = src
    return out


def read_gesture_labels(path: str | os.PathLike) -> np.ndarray:
    """Rows of a DVS128 Gesture `*_labels.csv` as GESTURE_DTYPE [n] in file order:
    `class` int32 (1-based, as in the file), `start_us` and `end_us` int64 us on the
    recording's clock."""
    try:
        with open(path, "rb") as f:
            data = f.read(GESTURE_MAX_BYTES + 1)
    except FileNotFoundError:
        raise FormatError("file not found", path=path) from None
    except IsADirectoryError:
        raise FormatError("is a directory, not a labels file", path=path) from None
    if len(data) > GESTURE_MAX_BYTES:
        raise FormatError(f"larger than {GESTURE_MAX_BYTES} bytes; not a labels CSV",
                          path=path, offset=0)
    rows = []
    pos = 3 if data.startswith(b"\xef\xbb\xbf") else 0  # UTF-8 byte-order mark
    header = True
    for lineno, line in enumerate(data[pos:].split(b"\n"), start=1):
        offset, pos = pos, pos + len(line) + 1
        text = line.decode("ascii", "replace").strip()
        if not text:
            continue
        error = _line_error(path, lineno, offset)
        fields = [s.strip() for s in text.split(",")]
        if header:
            if tuple(fields) != GESTURE_HEADER:
                raise error(f"header is {text!r}, expected {','.join(GESTURE_HEADER)!r}")
            header = False
            continue
        if len(fields) != 3:
            raise error(f"{len(fields)} fields, expected 3 (class,start,end)")
        if not all(_INT.fullmatch(s) for s in fields):
            raise error(f"non-integer value in {text!r}")
        cls, start, end = (int(s) for s in fields)
        if not 1 <= cls <= np.iinfo(np.int32).max:
            raise error(f"class {cls} is not a 1-based class number")
        if not -(2**63) <= start <= end < 2**63:
            raise error(f"end {end} us is before start {start} us" if end < start
                        else "time out of the int64 range")
        rows.append((cls, start, end))
    if header:
        raise FormatError(f"empty file, expected header {','.join(GESTURE_HEADER)!r}",
                          path=path, offset=0)
    return np.array(rows, GESTURE_DTYPE)
