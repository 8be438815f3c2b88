"""DVS128 Gesture (Amir et al., "A Low Power, Fully Event-Based Gesture Recognition
System", CVPR 2017): 29 users x up to 5 lighting conditions, one AEDAT 3.1 recording per
(user, lighting) with a labels CSV that cuts it into gesture trials (formats.md §6.1).

Layout (DvsGesture.tar.gz extracted; the root may be `DvsGesture/` or the folder holding
it): `user<NN>_<lighting>.aedat`, `user<NN>_<lighting>_labels.csv`, `trials_to_train.txt`,
`trials_to_test.txt` (one recording file name per line). A sample is one CSV row: the
events with startTime_usec <= t < endTime_usec, as SpikingJelly's `DVS128Gesture`
(datasets/dvs128_gesture.py `split_aedat_files_to_np`) cuts them; label = class - 1
(0..10, 10 = "other gestures"). Without a trials file the split falls back to users 1-23
(train) / 24-29 (test), with a notice.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import DatasetError, FormatError
from ..events import SensorSize
from ..io import open_events, read_gesture_labels
from ..io.base import concat_events
from .base import DATASETS, Loader, require_dir

log = logging.getLogger(__name__)

SENSOR = SensorSize(128, 128)
CLASSES = ("hand clap", "right hand wave", "left hand wave", "right arm clockwise",
           "right arm counter-clockwise", "left arm clockwise", "left arm counter-clockwise",
           "arm roll", "air drums", "air guitar", "other gestures")
OTHER = len(CLASSES)  # 1-based class number of "other gestures"
LAST_TRAIN_USER = 23
RECORDING = re.compile(r"user(\d+)_(\w+)\.aedat")
LAYOUT = ("user<NN>_<lighting>.aedat + user<NN>_<lighting>_labels.csv, trials_to_train.txt, "
          "trials_to_test.txt (DvsGesture.tar.gz extracted)")


def _parse_name(name: str, where, lineno: int | None = None) -> tuple[int, str]:
    m = RECORDING.fullmatch(name)
    if not m:
        line = f"line {lineno}: " if lineno is not None else ""
        raise DatasetError(f"{line}{name!r} is not a user<NN>_<lighting>.aedat name",
                           path=where)
    return int(m.group(1)), m.group(2)


@DATASETS.register("dvsgesture")
class DvsGestureLoader(Loader):
    """One item per recording; `records(item)` yields one record per labelled trial,
    reading the recording once in decoder blocks (memory: the trials not yet complete).

    Records: `id` `user<NN>_<lighting>_<row>` (row = 0-based CSV row, kept when rows are
    dropped), `events` EVENT_DTYPE [N] (t in us on the recording's clock, 128x128),
    `label` int 0..10 (CSV class - 1), `user` int, `lighting` str, `t_start_us` and
    `t_end_us` int (the CSV row), `sensor_size`. `drop_other` leaves out class 11
    ("other gestures"), as EventMamba's Gesture preprocessing does (10 classes).
    """

    name = "dvsgesture"
    kind = "events"
    splits = ("train", "test")
    classes = CLASSES
    sensor_size = SENSOR
    default_params = {
        # SpikingJelly's usual Gesture frames: T = 16 equal-count bins (algorithms.md §5.2).
        "frames": {"n_bins": 16, "split_by": "number"},
        # SpikePoint / EventMamba Gesture recipe (algorithms.md §3.2; encoder defaults).
        "event_cloud": {"window_us": 500_000, "stride_us": 250_000, "min_events": 100,
                        "n_points": 1024},
    }
    cli_options = {"drop_other": (bool, "leave out class 11 \"other gestures\" (10 classes, "
                                        "as EventMamba / SpikePoint)")}

    def __init__(self, root, split: str = "train", drop_other: bool = False):
        super().__init__(root, split, drop_other=bool(drop_other))
        nested = self.root / "DvsGesture"
        self.dir = nested if nested.is_dir() and not any(self.root.glob("*.aedat")) else self.root

    def items(self) -> list[str]:
        """Recording names (`user<NN>_<lighting>`) of the split, in trials-file order."""
        require_dir(self.root, "DVS128 Gesture root", LAYOUT)
        listing = self.dir / f"trials_to_{self.split}.txt"
        if listing.is_file():
            names = []
            for lineno, line in enumerate(listing.read_text(errors="replace").splitlines(), 1):
                if line.strip():
                    _parse_name(line.strip(), listing, lineno)
                    names.append(line.strip()[:-len(".aedat")])
            if not names:
                raise DatasetError("no recordings listed", path=listing)
            return names
        found = sorted(self.dir.glob("user*.aedat"))
        if not found:
            raise DatasetError(f"no trials_to_{self.split}.txt and no user*.aedat recordings; "
                               f"expected layout: {LAYOUT}", path=self.dir)
        train = self.split == "train"
        names = [p.stem for p in found
                 if (_parse_name(p.name, p)[0] <= LAST_TRAIN_USER) == train]
        log.warning("%s: no trials_to_%s.txt; using users %s (%d recordings)", self.dir,
                    self.split, "1-23" if train else "24-29", len(names))
        return names

    def _paths(self, name: str) -> tuple[Path, Path]:
        return self.dir / f"{name}.aedat", self.dir / f"{name}_labels.csv"

    def source_files(self, name: str) -> list[Path]:
        return list(self._paths(name))

    def records(self, name: str) -> Iterator[dict]:
        aedat, csv = self._paths(name)
        user, lighting = _parse_name(f"{name}.aedat", aedat)
        rows = read_gesture_labels(csv)
        bad = np.flatnonzero(rows["class"] > OTHER)
        if len(bad):
            raise FormatError(f"row {bad[0]}: class {rows['class'][bad[0]]} is outside "
                              f"1..{OTHER}", path=csv)
        keep = [i for i in range(len(rows))
                if not (self.options["drop_other"] and rows["class"][i] == OTHER)]
        with open_events(aedat, "aedat3", sensor_size=SENSOR) as reader:
            for i, events in _cut_trials(reader.iter_chunks(), rows["start_us"],
                                         rows["end_us"], keep):
                if not len(events):
                    raise FormatError(f"labels row {i} ({rows['start_us'][i]}.."
                                      f"{rows['end_us'][i]} us) holds no events", path=aedat)
                yield {"id": f"{name}_{i}", "events": events, "sensor_size": SENSOR,
                       "label": int(rows["class"][i]) - 1, "user": user, "lighting": lighting,
                       "t_start_us": int(rows["start_us"][i]),
                       "t_end_us": int(rows["end_us"][i])}


def _cut_trials(chunks: Iterator[np.ndarray], starts: np.ndarray, ends: np.ndarray,
                rows: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(row, events with starts[row] <= t < ends[row]) for `rows`, in that order, from one
    pass over time-sorted event `chunks`. A trial is complete once an event at or after its
    end has been seen; reading stops after the last trial."""
    parts: dict[int, list[np.ndarray]] = {i: [] for i in rows}
    todo = list(rows)
    t_max = None
    for chunk in chunks:
        t = chunk["t"]
        lo, hi = int(t.min()), int(t.max())
        for i, acc in parts.items():
            if starts[i] <= hi and ends[i] > lo:
                sel = chunk[(t >= starts[i]) & (t < ends[i])]
                if len(sel):
                    acc.append(sel)
        t_max = hi if t_max is None else max(t_max, hi)
        while todo and ends[todo[0]] <= t_max:
            i = todo.pop(0)
            yield i, concat_events(parts.pop(i))
        if not todo:
            return
    for i in todo:
        yield i, concat_events(parts.pop(i))
