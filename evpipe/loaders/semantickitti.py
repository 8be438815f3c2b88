"""SemanticKITTI: `sequences/XX/velodyne/NNNNNN.bin` + `sequences/XX/labels/NNNNNN.label`
(formats.md §11), split by sequence: train 00-07, 09, 10; val 08; test 11-21 (no labels).

Recipe (E-3DSNN's Pointcept configs, algorithms.md §1.3 and §6.3): coordinates are clipped
(`PointClip`, np.clip: no point is dropped) to the box (-35.2, -35.2, -4, 35.2, 35.2, 2) m
and voxelised at 0.05 m with features (x, y, z, remission). Pointcept's grid is unbounded,
so points clipped onto an upper face get a cell layer of their own; svc's grid is
half-open (spconv), so the upper faces are lowered to the largest float32 whose cell is
still inside the grid (a few ulps, < 1e-5 m) and the clipped points join the last layer.

Segmentation targets: records carry per-point `point_labels`, which the svc encoder turns
into `voxel_labels` (each voxel's majority label over ALL its points, -1 ignored unless
every point is -1, ties to the smaller class id), aligned with its voxels whatever the
geometry. Instance ids are not kept.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..encoders.svc import grid_shape
from ..errors import DatasetError
from ..io.kitti import read_velodyne
from ..io.semantickitti import CLASSES, SPLITS, read_labels
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


@DATASETS.register("semantickitti")
class SemanticKittiLoader(Loader):
    """Records: `id` "XX/NNNNNN", `points` float32 [N, 4] (x, y, z, remission; metres,
    clipped to `POINT_CLIP`) and, for train/val, `point_labels` int8 [N] (index into
    `CLASSES`, -1 ignore; svc stores them as `voxel_labels` [M]). With the `point_labels`
    option the per-point labels are also stored as `labels` (for point-level evaluation
    together with svc's --point-map, which stores each point's voxel)."""

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
        "point_labels": (bool, "also store per-point labels (point-level evaluation, with "
                               "svc's --point-map; default off)")}

    def __init__(self, root, split: str = "train", point_labels: bool = False):
        super().__init__(root, split, point_labels=bool(point_labels))
        self.labelled = split != "test"
        # Upper faces lowered for the recipe's voxel size (a few float32 ulps).
        self.clip_lo, self.clip_hi = clip_bounds((VOXEL_SIZE,) * 3, POINT_CLIP)

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
        if self.labelled:
            labels, _ = read_labels(paths["labels"], n_points=len(points))
            record["point_labels"] = labels.astype(np.int8)
            if self.options["point_labels"]:
                record["labels"] = record["point_labels"]
        return record
