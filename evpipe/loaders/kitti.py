"""KITTI 3D object benchmark: `training/{velodyne,label_2,calib,image_2}`, `testing/...`,
`ImageSets/{train,val,trainval,test}.txt` (OpenPCDet layout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import FormatError
from ..io.kitti import (KITTI_CLASSES, SPLITS, fov_mask, png_size, read_calib, read_labels,
                        read_split, read_velodyne)
from .base import DATASETS, Loader
from .kitti_sample import sample_root

OBJECT_CLASSES = KITTI_CLASSES[:-1]


@DATASETS.register("kitti")
class KittiLoader(Loader):
    """Records: `id`, `points` float32 [N, 4] (camera field of view only when `fov`), and for
    labelled splits `boxes` float32 [K, 7] (x, y, z_centre, l, w, h, yaw; LiDAR frame),
    `box_cls` int8 [K] (index into `OBJECT_CLASSES`), `truncation` float32 [K],
    `occlusion` int8 [K] and `n_dontcare`. DontCare regions are counted, not boxed."""

    name = "kitti"
    kind = "points"
    splits = SPLITS
    classes = OBJECT_CLASSES
    cli_options = {"fov": (bool, "keep only points inside the left camera's field of view "
                                 "(default: on, as OpenPCDet's KITTI config)")}
    sample_root = staticmethod(sample_root)

    def __init__(self, root, split: str = "train", fov: bool = True):
        super().__init__(root, split, fov=bool(fov))
        self.sub = self.root / ("testing" if split == "test" else "training")
        self.labelled = split != "test"

    def items(self) -> list[str]:
        return read_split(self.root, self.split)

    def _paths(self, fid: str) -> dict[str, Path]:
        p = {"velodyne": self.sub / "velodyne" / f"{fid}.bin",
             "calib": self.sub / "calib" / f"{fid}.txt",
             "image": self.sub / "image_2" / f"{fid}.png"}
        if self.labelled:
            p["label"] = self.sub / "label_2" / f"{fid}.txt"
        return p

    def source_files(self, fid: str) -> list[Path]:
        paths = self._paths(fid)
        if not self.options["fov"]:
            paths.pop("image")
        return list(paths.values())

    def load(self, fid: str) -> dict:
        paths = self._paths(fid)
        points = read_velodyne(paths["velodyne"])
        calib = read_calib(paths["calib"])
        if self.options["fov"]:
            points = points[fov_mask(points, calib, png_size(paths["image"]))]
        record = {"id": fid, "points": points}
        if self.labelled:
            labels = read_labels(paths["label"], calib)
            keep = ~labels.dontcare
            unknown = sorted(set(labels.type[keep]) - set(OBJECT_CLASSES))
            if unknown:
                raise FormatError(f"unknown object type {unknown[0]!r}", path=paths["label"])
            record.update(
                boxes=labels.boxes_lidar[keep],
                box_cls=np.array([OBJECT_CLASSES.index(t) for t in labels.type[keep]], np.int8),
                truncation=labels.truncated[keep], occlusion=labels.occluded[keep],
                n_dontcare=int(labels.dontcare.sum()))
        return record
