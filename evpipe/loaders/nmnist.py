"""N-MNIST (Orchard et al., "Converting static image datasets to spiking neuromorphic
datasets using saccades", Front. Neurosci. 2015): ATIS recordings of MNIST digits seen
through three ~100 ms saccades, 34x34 pixels, one `.bin` file per sample.

Layout (Train.zip / Test.zip extracted, as tonic's `NMNIST` and SpikingJelly read it):
`Train/<digit>/<n>.bin`, `Test/<digit>/<n>.bin` for digits 0-9 (lower-case `train/`,
`test/` also accepted). The sub-folder name is the label.

Also home of the helpers the other folder-per-class loaders (N-CARS) use.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from ..events import SensorSize
from .base import DATASETS, Loader, class_files, read_in_sensor, require_dir, sample_id

SENSOR = SensorSize(34, 34)  # tonic NMNIST.sensor_size
FIRST_SACCADE_US = 100_000  # tonic NMNIST first_saccade_only keeps t < 1e5
CLASSES = tuple(str(d) for d in range(10))
LAYOUT = "Train/<digit 0-9>/*.bin and Test/<digit 0-9>/*.bin"


@DATASETS.register("nmnist")
class NmnistLoader(Loader):
    """Records: `id` `<digit>/<file stem>` (e.g. "3/00012"), `events` EVENT_DTYPE [N]
    (t in us from the recording start, 34x34), `label` int (the digit), `sensor_size`.
    `first_saccade_only` keeps t < 100 ms, as tonic's `NMNIST(first_saccade_only=True)`.
    N-Caltech101 (same `.bin` format, a different size per sample) is not read here."""

    name = "nmnist"
    kind = "events"
    splits = ("train", "test")
    classes = CLASSES
    sensor_size = SENSOR
    # N-MNIST samples last ~300 ms, shorter than the Gesture recipe's 500 ms windows:
    # one event cloud per sample.
    default_params = {"event_cloud": {"window_us": 0}}
    cli_options = {"first_saccade_only": (
        bool, "keep only the first saccade, t < 100 ms (tonic first_saccade_only)")}

    def __init__(self, root, split: str = "train", first_saccade_only: bool = False):
        super().__init__(root, split, first_saccade_only=bool(first_saccade_only))

    def _split_dir(self) -> Path:
        require_dir(self.root, "N-MNIST root", LAYOUT)
        for name in (self.split.capitalize(), self.split):
            if (self.root / name).is_dir():
                return self.root / name
        raise DatasetError(f"split folder {self.split.capitalize()}/ not found; expected "
                           f"layout: {LAYOUT}", path=self.root)

    def items(self) -> list[tuple[str, int]]:
        return class_files(self._split_dir(), {c: int(c) for c in CLASSES}, ".bin", self.root,
                           LAYOUT)

    def item_id(self, item) -> str:
        return sample_id(item[0])

    def source_files(self, item) -> list[Path]:
        return [self.root / item[0]]

    def load(self, item) -> dict:
        rel, label = item
        path = self.root / rel
        events = read_in_sensor(path, "nmnist", SENSOR)
        if self.options["first_saccade_only"]:
            events = events[events["t"] < FIRST_SACCADE_US]
        return {"id": sample_id(rel), "events": events, "sensor_size": SENSOR, "label": label}
