"""N-CARS (Sironi et al., "HATS: Histograms of Averaged Time Surfaces for Robust
Event-Based Object Classification", CVPR 2018): 100 ms ATIS crops of cars and
background, one Prophesee DAT file per sample, at most 120x100 pixels (tonic NCARS
`sensor_size = (120, 100)`). The DAT headers carry no geometry (formats.md §1.1), so
120x100 is given to the reader.

Layout (n-cars_train.zip / n-cars_test.zip of Prophesee_Dataset_n_cars.zip extracted):
`n-cars_<split>/{cars,background}/obj_<n>_td.dat`; `n-cars_<split>/<split>/...` (the zip's
own inner folder) and `<split>/...` are also accepted. Label 1 = car, 0 = background
(tonic `class_dict`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from ..events import SensorSize
from .base import DATASETS, Loader, class_files, read_in_sensor, require_dir, sample_id

SENSOR = SensorSize(120, 100)
CLASSES = ("background", "car")
FOLDERS = {"background": 0, "cars": 1}
LAYOUT = "n-cars_train/{cars,background}/*.dat and n-cars_test/{cars,background}/*.dat"


@DATASETS.register("ncars")
class NcarsLoader(Loader):
    """Records: `id` `<cars|background>/<file stem without _td>` (e.g. "cars/obj_004397"),
    `events` EVENT_DTYPE [N] (t in us from the sample start), `label` int (1 car,
    0 background), `sensor_size` (120, 100)."""

    name = "ncars"
    kind = "events"
    splits = ("train", "test")
    classes = CLASSES
    sensor_size = SENSOR
    # 100 ms samples: one event cloud per sample rather than the Gesture recipe's
    # 500 ms windows.
    default_params = {"event_cloud": {"window_us": 0}}

    def __init__(self, root, split: str = "train"):
        super().__init__(root, split)

    def _split_dir(self) -> Path:
        require_dir(self.root, "N-CARS root", LAYOUT)
        s = self.split
        for cand in (f"n-cars_{s}", f"n-cars_{s}/{s}", s):
            d = self.root / cand
            if all((d / f).is_dir() for f in FOLDERS):
                return d
        raise DatasetError(f"no n-cars_{s}/ folder with cars/ and background/ sub-folders; "
                           f"expected layout: {LAYOUT}", path=self.root)

    def items(self) -> list[tuple[str, int]]:
        return class_files(self._split_dir(), FOLDERS, ".dat", self.root, LAYOUT)

    def item_id(self, item) -> str:
        return _id(item[0])

    def source_files(self, item) -> list[Path]:
        return [self.root / item[0]]

    def load(self, item) -> dict:
        rel, label = item
        path = self.root / rel
        events = read_in_sensor(path, "dat", SENSOR)
        return {"id": _id(rel), "events": events, "sensor_size": SENSOR, "label": label}


def _id(rel: str) -> str:
    sid = sample_id(rel)
    return sid[:-3] if sid.endswith("_td") else sid
