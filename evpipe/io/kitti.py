"""KITTI 3D object benchmark files: Velodyne scans, label_2, calib, image sizes, splits.

Layout and field meanings: KITTI object devkit readme; box conversion as OpenPCDet
(`pcdet/utils/box_utils.py boxes3d_kitti_camera_to_lidar`); FOV crop as OpenPCDet
`KittiDataset.get_fov_flag`.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError, FormatError

log = logging.getLogger(__name__)

KITTI_CLASSES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram",
                 "Misc", "DontCare")
SPLITS = ("train", "val", "trainval", "test")


def read_velodyne(path: str | os.PathLike) -> np.ndarray:
    """Headerless little-endian float32 scan -> float32 [N, 4] (x, y, z, reflectance), metres."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise DatasetError("scan file is missing", path=path) from None
    if size % 16:
        raise FormatError(f"size {size} B is not a multiple of 16 B (4 float32 per point); "
                          f"file truncated?", path=path, offset=size - size % 16)
    return np.fromfile(path, dtype="<f4").reshape(-1, 4)


def write_velodyne(path: str | os.PathLike, points: np.ndarray) -> None:
    """Write float32 [N, 4] points as a KITTI .bin scan."""
    np.ascontiguousarray(points, dtype="<f4").reshape(-1, 4).tofile(path)


@dataclass
class KittiCalib:
    """Object-benchmark calibration: P0-P3 [3, 4], R0_rect [3, 3], Tr_velo_to_cam and
    Tr_imu_to_velo [3, 4] (float64)."""

    P0: np.ndarray
    P1: np.ndarray
    P2: np.ndarray
    P3: np.ndarray
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray
    Tr_imu_to_velo: np.ndarray

    def velo_to_rect(self) -> np.ndarray:
        """4x4 transform from the Velodyne frame to rectified camera-0 coordinates."""
        r0 = np.eye(4)
        r0[:3, :3] = self.R0_rect
        tr = np.eye(4)
        tr[:3, :4] = self.Tr_velo_to_cam
        return r0 @ tr

    def velo_to_image(self) -> np.ndarray:
        """3x4 projection P2 @ R0_rect @ Tr_velo_to_cam (left colour camera)."""
        return self.P2 @ self.velo_to_rect()


_CALIB_SHAPES = {"P0": (3, 4), "P1": (3, 4), "P2": (3, 4), "P3": (3, 4), "R0_rect": (3, 3),
                 "Tr_velo_to_cam": (3, 4), "Tr_imu_to_velo": (3, 4)}


def read_calib(path: str | os.PathLike) -> KittiCalib:
    """Parse `KEY: v v v ...` lines; blank lines are skipped, missing keys are an error."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DatasetError("calibration file is missing", path=path) from None
    values: dict[str, np.ndarray] = {}
    offset = 0
    for line in raw.splitlines(keepends=True):
        text = line.decode("ascii", "replace").strip()
        if text:
            key, sep, rest = text.partition(":")
            if not sep:
                raise FormatError(f"calibration line without ':': {text[:40]!r}", path=path,
                                  offset=offset)
            key = key.strip()
            try:
                vec = np.array(rest.split(), dtype=np.float64)
            except ValueError:
                raise FormatError(f"non-numeric value in {key}", path=path, offset=offset) from None
            shape = _CALIB_SHAPES.get(key)
            if shape is not None:
                if vec.size != shape[0] * shape[1]:
                    raise FormatError(f"{key} has {vec.size} values, expected "
                                      f"{shape[0] * shape[1]}", path=path, offset=offset)
                values[key] = vec.reshape(shape)
        offset += len(line)
    missing = [k for k in _CALIB_SHAPES if k not in values]
    if missing:
        raise FormatError(f"calibration lacks {', '.join(missing)}", path=path)
    return KittiCalib(**values)


@dataclass
class KittiLabels:
    """Objects of one label_2 file; every array has K rows.

    `dimensions` are (h, w, l) metres; `location` is the bottom centre in rectified
    camera coordinates; `boxes_lidar` float32 [K, 7] is (x, y, z_centre, l, w, h, yaw)
    in the Velodyne frame (NaN rows for DontCare), present when a calib was given.
    """

    type: np.ndarray          # str [K]
    truncated: np.ndarray     # float32 [K], 0..1
    occluded: np.ndarray      # int8 [K], 0 visible .. 3 unknown
    alpha: np.ndarray         # float32 [K], rad
    bbox: np.ndarray          # float32 [K, 4] left, top, right, bottom (pixels)
    dimensions: np.ndarray    # float32 [K, 3] h, w, l
    location: np.ndarray      # float32 [K, 3] x, y, z camera
    rotation_y: np.ndarray    # float32 [K], rad
    score: np.ndarray         # float32 [K], NaN in ground-truth files
    dontcare: np.ndarray      # bool [K]
    boxes_lidar: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.type)


def read_labels(path: str | os.PathLike, calib: KittiCalib | None = None) -> KittiLabels:
    """Parse a label_2 file (15 fields per line, 16 with a score)."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DatasetError("label file is missing", path=path) from None
    types, nums, offset = [], [], 0
    for lineno, line in enumerate(raw.splitlines(keepends=True), 1):
        fields = line.decode("ascii", "replace").split()
        if fields:
            if len(fields) not in (15, 16):
                raise FormatError(f"line {lineno}: expected 15 fields, got {len(fields)}",
                                  path=path, offset=offset)
            try:
                row = [float(v) for v in fields[1:]]
            except ValueError:
                raise FormatError(f"line {lineno}: non-numeric field", path=path,
                                  offset=offset) from None
            if len(row) == 14:
                row.append(np.nan)
            if not np.all(np.isfinite(row[:14])):
                raise FormatError(f"line {lineno}: non-finite value", path=path, offset=offset)
            types.append(fields[0])
            nums.append(row)
        offset += len(line)
    a = np.array(nums, dtype=np.float32).reshape(-1, 15)
    labels = KittiLabels(
        type=np.array(types, dtype=str), truncated=a[:, 0].copy(),
        occluded=a[:, 1].astype(np.int8), alpha=a[:, 2].copy(), bbox=a[:, 3:7].copy(),
        dimensions=a[:, 7:10].copy(), location=a[:, 10:13].copy(), rotation_y=a[:, 13].copy(),
        score=a[:, 14].copy(), dontcare=np.array([t == "DontCare" for t in types], dtype=bool))
    if calib is not None:
        labels.boxes_lidar = boxes_camera_to_lidar(labels, calib)
    return labels


def boxes_camera_to_lidar(labels: KittiLabels, calib: KittiCalib) -> np.ndarray:
    """float32 [K, 7] (x, y, z_centre, l, w, h, yaw) in the Velodyne frame; DontCare rows NaN.

    yaw = -rotation_y - pi/2 and z is raised by h/2 from the bottom centre (OpenPCDet).
    """
    loc = labels.location.astype(np.float64)
    hom = np.concatenate([loc, np.ones((len(loc), 1))], axis=1)
    xyz = (np.linalg.inv(calib.velo_to_rect()) @ hom.T).T[:, :3]
    h, w, l = (labels.dimensions[:, i].astype(np.float64) for i in range(3))
    boxes = np.stack([xyz[:, 0], xyz[:, 1], xyz[:, 2] + h / 2, l, w, h,
                      -labels.rotation_y.astype(np.float64) - np.pi / 2], axis=1)
    boxes[labels.dontcare] = np.nan
    return boxes.astype(np.float32)


def points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """bool [K, N]: point n lies inside box k (boxes [K, 7] x, y, z_centre, l, w, h, yaw)."""
    xyz = points[:, :3].astype(np.float64)
    out = np.zeros((len(boxes), len(xyz)), dtype=bool)
    for k, (cx, cy, cz, l, w, h, yaw) in enumerate(boxes.astype(np.float64)):
        if not np.isfinite(cx):
            continue
        d = xyz - (cx, cy, cz)
        c, s = np.cos(yaw), np.sin(yaw)
        lx = d[:, 0] * c + d[:, 1] * s
        ly = -d[:, 0] * s + d[:, 1] * c
        out[k] = (np.abs(lx) <= l / 2) & (np.abs(ly) <= w / 2) & (np.abs(d[:, 2]) <= h / 2)
    return out


def png_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, reading 24 bytes only."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except FileNotFoundError:
        raise DatasetError("image file is missing", path=path) from None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise FormatError("not a PNG file (bad signature or IHDR)", path=path, offset=0)
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def fov_mask(points: np.ndarray, calib: KittiCalib, image_size: tuple[int, int]) -> np.ndarray:
    """bool [N]: the point projects through P2·R0_rect·Tr_velo_to_cam with depth >= 0 to
    pixel (u, v) inside the (width, height) image: 0 <= u < width, 0 <= v < height."""
    m = calib.velo_to_image()
    x, y, z = (points[:, i].astype(np.float64) for i in range(3))
    # Element-wise rather than a matmul: no BLAS threads inside worker processes.
    u, v, depth = (m[k, 0] * x + m[k, 1] * y + m[k, 2] * z + m[k, 3] for k in range(3))
    with np.errstate(divide="ignore", invalid="ignore"):
        u = u / depth
        v = v / depth
    w, h = image_size
    return (depth >= 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)


def points_in_camera_boxes(points: np.ndarray, labels: KittiLabels,
                           calib: KittiCalib) -> np.ndarray:
    """bool [K, N]: Velodyne point n lies in object k's box as the devkit defines it, in
    rectified camera coordinates (bottom centre, y down, rotation_y about camera Y)."""
    hom = np.concatenate([points[:, :3].astype(np.float64), np.ones((len(points), 1))], axis=1)
    rect = (calib.velo_to_rect() @ hom.T).T[:, :3]
    out = np.zeros((len(labels), len(points)), dtype=bool)
    for k in np.flatnonzero(~labels.dontcare):
        h, w, l = labels.dimensions[k].astype(np.float64)
        d = rect - labels.location[k].astype(np.float64)
        c, s = np.cos(labels.rotation_y[k]), np.sin(labels.rotation_y[k])
        lx = c * d[:, 0] - s * d[:, 2]
        lz = s * d[:, 0] + c * d[:, 2]
        out[k] = (np.abs(lx) <= l / 2) & (np.abs(lz) <= w / 2) & (d[:, 1] <= 0) & (d[:, 1] >= -h)
    return out


def read_split(root: str | os.PathLike, split: str) -> list[str]:
    """Frame ids of `split` from ImageSets/<split>.txt; without ImageSets, every frame found
    under training/velodyne (testing/velodyne for `test`), with a notice."""
    if split not in SPLITS:
        raise DatasetError(f"unknown KITTI split {split!r}; valid: {', '.join(SPLITS)}")
    root = Path(root)
    listing = root / "ImageSets" / f"{split}.txt"
    if listing.is_file():
        ids = [s.strip() for s in listing.read_text().split()]
        return [s for s in ids if s]
    sub = "testing" if split == "test" else "training"
    velo = root / sub / "velodyne"
    if not velo.is_dir():
        raise DatasetError(f"no ImageSets/{split}.txt and no {sub}/velodyne folder", path=root)
    ids = sorted(p.stem for p in velo.glob("*.bin"))
    log.warning("%s: no ImageSets/%s.txt; using all %d frames under %s/velodyne",
                root, split, len(ids), sub)
    return ids
