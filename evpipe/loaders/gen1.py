"""Prophesee Gen1 Automotive Detection dataset (de Tournemire et al., "A Large Scale
Event-based Detection Dataset for Automotive", arXiv 2001.08499, 2020): 60 s ATIS
recordings, 304x240, boxes of cars (class 0) and pedestrians (class 1) at ~4 Hz.

Layout (formats.md §1.4): `train/`, `val/`, `test/` holding `<name>_td.dat` +
`<name>_bbox.npy` pairs (either bbox dtype, formats.md §1.5).

Samples follow RVT's Gen1 preprocessing (uzh-rpg/RVT scripts/genx/preprocess_dataset.py,
algorithms.md §5.4): one sample per label timestamp (all boxes sharing one `t`), holding
the events with t_label - window <= t <= t_label (RVT: searchsorted left / right), on
timestamps made non-decreasing with a running maximum first (RVT `H5Reader._correct_time`;
Gen1 timestamps jitter backwards, formats.md §1.3). Boxes go through RVT's `apply_filters`
for Gen1 (filter_gen1.yaml), in its order: `crop_to_fov_filter`, then
`prophesee_bbox_filter` (diagonal >= 30 px and both sides >= 10 px: RVT's "corrected values
from supplementary mat", formats.md §1.5; with `box_filter` off, RVT's
`conservative_bbox_filter`, sides >= 5 px), then on the train split only
`remove_faulty_huge_bbox_filter` (w <= 9 * 304 // 10 = 273 px). Label timestamps left
without boxes give no sample. Unlike RVT, every remaining label timestamp is a sample (RVT
also drops timestamps off its 250 ms grid, for its recurrent sequences).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DatasetError, FormatError
from ..events import SensorSize, empty_events
from ..io import open_events, read_gen1_boxes
from ..io.base import concat_events
from ..io.kernels import clamp_disorder, search_time
from .base import DATASETS, Loader, check_in_sensor, require_dir

SENSOR = SensorSize(304, 240)
CLASSES = ("car", "pedestrian")
WINDOW_US = 50_000
MIN_DIAG, MIN_SIDE = 30, 10          # RVT prophesee_bbox_filter, Gen1
CONSERVATIVE_MIN_SIDE = 5            # RVT conservative_bbox_filter
LAYOUT = "{train,val,test}/<name>_td.dat + <name>_bbox.npy"


def filter_boxes(boxes: np.ndarray, train: bool, psee_filter: bool = True,
                 size: SensorSize = SENSOR) -> np.ndarray:
    """RVT's Gen1 `apply_filters` on boxes (BOX_DTYPE [n], `read_gen1_boxes`): clip to
    [0, W-1] x [0, H-1] and drop zero-area boxes; keep diagonal >= 30 and sides >= 10 px
    (`psee_filter`) or sides >= 5 px; on the train split drop w > 9 * W // 10. Float32
    arithmetic as RVT's; returns a new array."""
    b = boxes.copy()
    x1 = np.clip(b["x"], 0, size.width - 1)
    y1 = np.clip(b["y"], 0, size.height - 1)
    x2 = np.clip(b["x"] + b["w"], 0, size.width - 1)
    y2 = np.clip(b["y"] + b["h"], 0, size.height - 1)
    b["x"], b["y"], b["w"], b["h"] = x1, y1, x2 - x1, y2 - y1
    b = b[(b["w"] > 0) & (b["h"] > 0)]
    w, h = b["w"], b["h"]
    if psee_filter:
        keep = (w ** 2 + h ** 2 >= MIN_DIAG ** 2) & (w >= MIN_SIDE) & (h >= MIN_SIDE)
    else:
        keep = (w >= CONSERVATIVE_MIN_SIDE) & (h >= CONSERVATIVE_MIN_SIDE)
    b = b[keep]
    if train:
        b = b[b["w"] <= (9 * size.width) // 10]
    return b


def label_windows(chunks: Iterator[np.ndarray], t_labels: np.ndarray, window_us: int
                  ) -> Iterator[np.ndarray]:
    """For each of the sorted `t_labels` (int64 us), the events with
    t_label - window_us <= t <= t_label, from one pass over event `chunks` in file order
    (distinct arrays, as the readers yield: windows are views of them).

    Times are replaced by their running maximum (in place) before slicing, as RVT does.
    A window inside one chunk is a view of it; one spanning chunks is a copy of its events.
    Memory: two chunks plus one window. Reading stops once the last window is complete
    (an event after its end has been seen).
    """
    k, n = 0, len(t_labels)
    if not n:
        return
    tail = empty_events()  # events of earlier chunks at or after the current window's start
    carry = np.iinfo(np.int64).min
    for chunk in chunks:
        if not len(chunk):
            continue
        t = chunk["t"]
        clamp_disorder(t, carry)
        carry = int(t[-1])
        while k < n and t_labels[k] < carry:
            yield _window(tail, chunk, t_labels[k], window_us)
            k += 1
        if k == n:
            return
        tail = _since(tail, chunk, t_labels[k] - window_us)
    for tl in t_labels[k:]:
        yield _window(tail, empty_events(), tl, window_us)


def _since(tail: np.ndarray, chunk: np.ndarray, start) -> np.ndarray:
    """Events with t >= start of `tail` followed by `chunk` (both time-sorted, tail's times
    <= chunk's): a view of `chunk`, or a copy when some of `tail` is included. Times are
    searched in place (a strided field: np.searchsorted would copy it)."""
    s = search_time(chunk["t"], start, False)
    head = tail[search_time(tail["t"], start, False):] if s == 0 else tail[:0]
    return concat_events([head, chunk]) if len(head) else chunk[s:]


def _window(tail: np.ndarray, chunk: np.ndarray, t_label, window_us: int) -> np.ndarray:
    """Events with t_label - window_us <= t <= t_label of `tail` followed by `chunk`."""
    return _since(tail, chunk[:search_time(chunk["t"], t_label, True)], t_label - window_us)


@DATASETS.register("gen1")
class Gen1Loader(Loader):
    """One item per recording; `records(item)` reads the recording once, in decoder blocks,
    and yields one record per label timestamp (see the module docstring).

    Records: `id` `<name>_<t_label>`, `events` EVENT_DTYPE [N] (t in us, running maximum
    applied, 304x240), `boxes` float32 [K, 4] (x, y of the top-left corner, w, h; px,
    clipped to the frame), `box_cls` int8 [K] (0 car, 1 pedestrian), `track_id` uint32
    [K], `t_label` int (us), `sensor_size`.
    """

    name = "gen1"
    kind = "events"
    splits = ("train", "val", "test")
    classes = CLASSES
    sensor_size = SENSOR
    default_params = {
        "stacked_histogram": {"n_bins": 10, "cutoff": 10},  # RVT Gen1
        "event_cloud": {"window_us": 0},  # the loader's window is the sample: one cloud
    }
    cli_options = {
        "label_window_us": (int, f"events before each label timestamp, us (default "
                                 f"{WINDOW_US}: RVT's 50 ms)"),
        "box_filter": (bool, "RVT's Prophesee box filter: diagonal >= 30 px, sides >= 10 px "
                             "(default on; off: sides >= 5 px)"),
    }

    def __init__(self, root, split: str = "train", label_window_us: int = WINDOW_US,
                 box_filter: bool = True):
        if isinstance(label_window_us, bool) or not isinstance(label_window_us, int) \
                or label_window_us < 1:
            raise ConfigError(f"label_window_us must be an int >= 1, got {label_window_us!r}")
        super().__init__(root, split, label_window_us=label_window_us,
                         box_filter=bool(box_filter))

    def items(self) -> list[str]:
        """Recording names (`<name>` of `<name>_td.dat`) of the split, sorted."""
        require_dir(self.root, "Gen1 root", LAYOUT)
        split_dir = require_dir(self.root / self.split, f"split folder {self.split}/", LAYOUT)
        names = sorted(p.name[:-len("_td.dat")] for p in split_dir.glob("*_td.dat"))
        if not names:
            raise DatasetError(f"no *_td.dat recordings; expected layout: {LAYOUT}",
                               path=split_dir)
        return names

    def _paths(self, name: str) -> tuple[Path, Path]:
        d = self.root / self.split
        return d / f"{name}_td.dat", d / f"{name}_bbox.npy"

    def source_files(self, name: str) -> list[Path]:
        return list(self._paths(name))

    def records(self, name: str) -> Iterator[dict]:
        td, bbox = self._paths(name)
        boxes = read_gen1_boxes(bbox)
        bad = np.flatnonzero(boxes["class_id"] >= len(CLASSES))
        if len(bad):
            raise FormatError(f"box {bad[0]}: class_id {boxes['class_id'][bad[0]]} is not "
                              f"0 (car) or 1 (pedestrian)", path=bbox)
        boxes = filter_boxes(boxes, self.split == "train", self.options["box_filter"])
        boxes = boxes[np.argsort(boxes["t"], kind="stable")]
        t_labels, starts = np.unique(boxes["t"], return_index=True)
        ends = np.append(starts[1:], len(boxes))
        with open_events(td, "dat", sensor_size=SENSOR) as reader:
            windows = label_windows(reader.iter_chunks(), t_labels,
                                    self.options["label_window_us"])
            for t_label, a, b, events in zip(t_labels, starts, ends, windows):
                frame = boxes[a:b]
                yield {"id": f"{name}_{t_label}", "events": check_in_sensor(events, SENSOR, td),
                       "sensor_size": SENSOR,
                       "boxes": np.stack([frame["x"], frame["y"], frame["w"], frame["h"]], 1),
                       "box_cls": frame["class_id"].astype(np.int8),
                       "track_id": frame["track_id"], "t_label": int(t_label)}
