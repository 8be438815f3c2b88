"""SemanticKITTI: `sequences/XX/velodyne/*.bin` + `sequences/XX/labels/*.label`.

Labels are uint32 per point: semantic id = label & 0xFFFF, instance = label >> 16
(PRBonn/semantic-kitti-api auxiliary/laserscan.py). `LEARNING_MAP` is that repo's
config/semantic-kitti.yaml; train ids 1..19 become classes 0..18 and 0 becomes -1 (ignore),
as Pointcept/E-3DSNN use them.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import DatasetError, FormatError

LEARNING_MAP = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8,
    40: 9, 44: 10, 48: 11, 49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17,
    80: 18, 81: 19, 99: 0, 252: 1, 253: 7, 254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}
CLASSES = ("car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist",
           "motorcyclist", "road", "parking", "sidewalk", "other-ground", "building", "fence",
           "vegetation", "trunk", "terrain", "pole", "traffic-sign")
IGNORE = -1
SPLITS = {"train": ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10"),
          "val": ("08",),
          "test": tuple(f"{i:02d}" for i in range(11, 22))}


def _lut() -> np.ndarray:
    # Semantic ids are 16-bit after masking: a full 65536 table maps unknown ids to ignore.
    lut = np.full(1 << 16, IGNORE, dtype=np.int16)
    for raw, train_id in LEARNING_MAP.items():
        lut[raw] = train_id - 1 if train_id else IGNORE
    return lut


_LUT = _lut()


def read_labels(path: str | os.PathLike, n_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(semantic int16 [N] in 0..18 or -1, instance uint16 [N]) from a .label file."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise DatasetError("label file is missing", path=path) from None
    if size % 4:
        raise FormatError(f"size {size} B is not a multiple of 4 B (uint32 per point)",
                          path=path, offset=size - size % 4)
    raw = np.fromfile(path, dtype="<u4")
    if n_points is not None and raw.size != n_points:
        raise FormatError(f"{raw.size} labels for {n_points} points", path=path)
    return _LUT[raw & 0xFFFF], (raw >> 16).astype(np.uint16)
