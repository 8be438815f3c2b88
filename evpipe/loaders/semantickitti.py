"""SemanticKITTI: `sequences/XX/velodyne/NNNNNN.bin` + `sequences/XX/labels/NNNNNN.label`
(formats.md §11), split by sequence: train 00-07, 09, 10; val 08; test 11-21 (no labels).

Recipe (E-3DSNN's Pointcept configs, algorithms.md §1.3 and §6.3): coordinates are clipped
(`PointClip`, np.clip: no point is dropped) to the box (-35.2, -35.2, -4, 35.2, 35.2, 2) m
and voxelised at 0.05 m with features (x, y, z, remission). Pointcept's grid is unbounded,
so points clipped onto an upper face get a cell layer of their own; svc's grid is
half-open (spconv), so the upper faces are lowered to the largest float32 whose cell is
still inside the grid (a few ulps, < 1e-5 m) and the clipped points join the last layer.

Segmentation targets live on svc's voxels: `voxel_labels` gives each voxel the majority
label of ALL its points (-1 ignored unless every point is -1; ties go to the smaller class
id), in svc's voxel order (first appearance in the scan). svc only ever sees the points,
so the loader repeats svc's cell arithmetic (`voxelize_labels`) with the same geometry:
the recipe box and `label_voxel_size`, which must equal svc's (isotropic) voxel size. A
loader does not see the encoder's parameters, so svc's --point-range must stay the box
and --max-voxels unset (with a cap, voxel_labels[:len(coords)] still aligns). Instance
ids are not kept.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from ..encoders.svc import grid_shape
from ..errors import ConfigError, DatasetError
from ..io.kitti import read_velodyne
from ..io.semantickitti import CLASSES, IGNORE, SPLITS, read_labels
from .base import DATASETS, Loader

log = logging.getLogger(__name__)

POINT_CLIP = (-35.2, -35.2, -4.0, 35.2, 35.2, 2.0)
VOXEL_SIZE = 0.05


def clip_bounds(voxel_size, point_range) -> tuple[np.ndarray, np.ndarray]:
    """float32 [3] lower and upper clip bounds (x, y, z): the box's lower corner, and per
    axis the largest float32 <= the box's upper face whose svc cell
    floor((u - min) / size) (float32) is still inside the grid."""
    lo = np.array(point_range[:3], np.float32)
    vs = np.array(voxel_size, np.float32)
    grid = grid_shape(voxel_size, point_range)[::-1]
    hi = np.empty(3, np.float32)
    for a in range(3):
        u = np.float32(min(point_range[3 + a], point_range[a] + grid[a] * float(vs[a])))
        while np.floor((u - lo[a]) / vs[a]) >= grid[a]:
            u = np.nextafter(u, np.float32(-np.inf))
        hi[a] = u
    return lo, hi


def voxelize_labels(points: np.ndarray, labels: np.ndarray, voxel_size, point_range,
                    n_classes: int = len(CLASSES)) -> tuple[np.ndarray, np.ndarray]:
    """(voxel_labels int8 [M], point_voxel int32 [N]) for the voxels that
    `svc(points, voxel_size, point_range)` forms (max_voxels unset).

    A point's cell is floor((p - min) / size) in float32 as svc computes it; points outside
    the grid or NaN get point_voxel -1. Voxels are numbered in order of first appearance.
    `labels` int [N] in 0..n_classes-1 or -1 (ignore); a voxel's label is the most frequent
    label of all its points, -1 when all are -1, the smaller id on ties.
    """
    pts = np.asarray(points, np.float32)
    lo = np.array(point_range[:3], np.float32)
    vs = np.array(voxel_size, np.float32)
    grid = np.array(grid_shape(voxel_size, point_range)[::-1])
    with np.errstate(invalid="ignore"):
        cell = np.floor((pts[:, :3] - lo) / vs)
        inside = np.all((cell >= 0) & (cell < grid), axis=1)
    c = cell[inside].astype(np.int64)
    keys = (c[:, 2] << 42) | (c[:, 1] << 21) | c[:, 0]
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
    voxel = rank[inverse]
    point_voxel = np.full(len(pts), -1, np.int32)
    point_voxel[inside] = voxel
    lab = np.asarray(labels)[inside].astype(np.int64)
    known = lab >= 0
    counts = np.bincount(voxel[known] * n_classes + lab[known],
                         minlength=len(uniq) * n_classes).reshape(len(uniq), n_classes)
    voxel_labels = counts.argmax(axis=1).astype(np.int8)
    voxel_labels[counts.sum(axis=1) == 0] = IGNORE
    return voxel_labels, point_voxel


@DATASETS.register("semantickitti")
class SemanticKittiLoader(Loader):
    """Records: `id` "XX/NNNNNN", `points` float32 [N, 4] (x, y, z, remission; metres,
    clipped to `POINT_CLIP`) and, for train/val, `voxel_labels` int8 [M] (index into
    `CLASSES`, -1 ignore) aligned with svc's voxels. With `point_labels`: `point_voxel`
    int32 [N] (each point's svc voxel, -1 if svc drops it) and, for train/val, `labels`
    int8 [N] per point (learning_map train ids - 1, -1 ignore)."""

    name = "semantickitti"
    kind = "points"
    splits = tuple(SPLITS)
    classes = CLASSES
    # max_points_per_voxel 32: at 0.05 m, HDL-64 scans of the KITTI samples have a 99th
    # percentile of 4-5 points per voxel; 32 averages every point of all voxels except a
    # few clipped boundary ones, matching the majority label over all points.
    default_params = {"svc": {"voxel_size": (VOXEL_SIZE,) * 3, "point_range": POINT_CLIP,
                              "max_points_per_voxel": 32}}
    cli_options = {
        "label_voxel_size": (float, "voxel edge (m) of voxel_labels; must equal the svc "
                                    f"--voxel-size (isotropic; default {VOXEL_SIZE})"),
        "point_labels": (bool, "also store per-point labels and each point's voxel index "
                               "(point-level evaluation; default off)")}

    def __init__(self, root, split: str = "train", label_voxel_size: float = VOXEL_SIZE,
                 point_labels: bool = False):
        size = float(label_voxel_size)
        if not (math.isfinite(size) and size > 0):
            raise ConfigError(f"--label-voxel-size must be a positive number of metres, "
                              f"got {label_voxel_size}")
        self.voxel_size = (size,) * 3
        if max(grid_shape(self.voxel_size, POINT_CLIP)) >= 1 << 21:
            raise ConfigError(f"--label-voxel-size {size} m gives more than 2^21 - 1 voxels "
                              "per axis")
        super().__init__(root, split, label_voxel_size=size, point_labels=bool(point_labels))
        self.labelled = split != "test"
        self.clip_lo, self.clip_hi = clip_bounds(self.voxel_size, POINT_CLIP)

    def items(self) -> list[str]:
        seq_dir = self.root / "sequences"
        if not seq_dir.is_dir():
            raise DatasetError("no sequences/ folder (expected sequences/XX/velodyne/"
                               "NNNNNN.bin and sequences/XX/labels/NNNNNN.label)",
                               path=self.root)
        wanted = SPLITS[self.split]
        present = [s for s in wanted if (seq_dir / s / "velodyne").is_dir()]
        if not present:
            raise DatasetError(f"none of the {self.split} sequences ({', '.join(wanted)}) "
                               "has a velodyne/ folder", path=seq_dir)
        missing = [s for s in wanted if s not in present]
        if missing:
            log.warning("%s: %s split: sequences %s not found; skipped", seq_dir, self.split,
                        ", ".join(missing))
        if self.labelled:
            for s in present:
                if not (seq_dir / s / "labels").is_dir():
                    raise DatasetError(f"sequence {s} has no labels/ folder (needed for the "
                                       f"{self.split} split)", path=seq_dir / s)
        return [f"{s}/{p.stem}" for s in present
                for p in sorted((seq_dir / s / "velodyne").glob("*.bin"))]

    def _paths(self, item: str) -> dict[str, Path]:
        seq, frame = item.split("/")
        base = self.root / "sequences" / seq
        paths = {"velodyne": base / "velodyne" / f"{frame}.bin"}
        if self.labelled:
            paths["labels"] = base / "labels" / f"{frame}.label"
        return paths

    def source_files(self, item: str) -> list[Path]:
        return list(self._paths(item).values())

    def load(self, item: str) -> dict:
        paths = self._paths(item)
        points = read_velodyne(paths["velodyne"])
        np.clip(points[:, :3], self.clip_lo, self.clip_hi, out=points[:, :3])
        record = {"id": item, "points": points}
        if not (self.labelled or self.options["point_labels"]):
            return record
        if self.labelled:
            if not paths["labels"].is_file():
                raise DatasetError("label file is missing", path=paths["labels"])
            labels, _ = read_labels(paths["labels"], n_points=len(points))
        else:
            labels = np.full(len(points), IGNORE, np.int8)
        voxel_labels, point_voxel = voxelize_labels(points, labels, self.voxel_size, POINT_CLIP)
        if self.labelled:
            record["voxel_labels"] = voxel_labels
        if self.options["point_labels"]:
            record["point_voxel"] = point_voxel
            if self.labelled:
                record["labels"] = labels.astype(np.int8)
        return record
