"""Dataset loader registry and the interface every loader follows."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DatasetError, FormatError
from ..events import SensorSize
from ..io import open_events
from ..registry import Registry

DATASETS: Registry[type["Loader"]] = Registry("dataset", modules=(
    "evpipe.loaders.kitti", "evpipe.loaders.semantickitti", "evpipe.loaders.modelnet40",
    "evpipe.loaders.gen1", "evpipe.loaders.dvsgesture", "evpipe.loaders.nmnist",
    "evpipe.loaders.ncars", "evpipe.loaders.spikecam"))


class Loader:
    """Walks a local copy of a dataset and yields raw records.

    `items()` lists picklable source descriptors in a fixed order; `records(item)` yields
    the raw records of one item (one for a scan or a trial; many for a long recording cut
    into windows, streamed in bounded memory): dicts with `id`, the input array under the
    loader's `kind` ("points", "events" or "spikes"), label fields and, for events,
    `sensor_size`. Single-record loaders implement `load(item)` instead.
    `source_files(item)` names the files an item comes from, for cache keys.
    """

    name = ""
    kind = ""
    splits: tuple[str, ...] = ()
    # Encoding parameters this dataset's recipe uses unless the user overrides them,
    # e.g. {"svc": {"voxel_size": (0.01, 0.01, 0.01), ...}}.
    default_params: dict[str, dict] = {}
    # CLI options of the loader: name -> (type, help); values reach __init__ as keywords.
    cli_options: dict[str, tuple] = {}

    def __init__(self, root: str | os.PathLike, split: str, **options):
        if self.splits and split not in self.splits:
            raise ConfigError(f"dataset {self.name!r} has no split {split!r}; valid: "
                              f"{', '.join(self.splits)}")
        self.root = Path(root)
        self.split = split
        self.options = options

    def items(self) -> list:
        raise NotImplementedError

    def item_id(self, item) -> str:
        return str(item)

    def load(self, item) -> dict:
        raise NotImplementedError

    def records(self, item) -> Iterator[dict]:
        yield self.load(item)

    def source_files(self, item) -> list[Path]:
        raise NotImplementedError

    def describe(self) -> dict:
        """Options recorded in the manifest (JSON-ready)."""
        return dict(self.options)


def require_dir(path: Path, what: str, layout: str) -> Path:
    """`path` if it is a folder, else a DatasetError naming `what` and the `layout`."""
    if not path.is_dir():
        raise DatasetError(f"{what} not found; expected layout: {layout}", path=path)
    return path


def class_files(split_dir: Path, folders: dict[str, int], suffix: str, root: Path,
                layout: str) -> list[tuple[str, int]]:
    """(path relative to `root`, label) of every `*suffix` file in the class sub-folders
    `folders` (name -> label) of `split_dir`, sorted by folder then file name; a missing
    class folder or a split without files is a DatasetError."""
    items = []
    for name, label in folders.items():
        sub = require_dir(split_dir / name, f"class folder {name!r}", layout)
        items += [(p.relative_to(root).as_posix(), label)
                  for p in sorted(sub.iterdir()) if p.suffix == suffix and p.is_file()]
    if not items:
        raise DatasetError(f"no {suffix} files in the class folders; expected layout: {layout}",
                           path=split_dir)
    return items


def check_in_sensor(events: np.ndarray, size: SensorSize, path) -> np.ndarray:
    """`events`, or a FormatError naming `path` when one lies outside `size`."""
    if len(events) and (int(events["x"].max()) >= size.width
                        or int(events["y"].max()) >= size.height):
        raise FormatError(f"events reach x={events['x'].max()}, y={events['y'].max()}, "
                          f"outside the {size.width}x{size.height} sensor", path=path)
    return events


def read_in_sensor(path: Path, fmt: str, size: SensorSize) -> np.ndarray:
    """All events of the `fmt` file `path` read with geometry `size`, checked to lie in it
    (check_in_sensor)."""
    with open_events(path, fmt, sensor_size=size) as reader:
        return check_in_sensor(reader.read(), size, path)


def sample_id(rel: str) -> str:
    """`<class folder>/<file stem>` of a relative sample path."""
    p = Path(rel)
    return f"{p.parent.name}/{p.stem}"
