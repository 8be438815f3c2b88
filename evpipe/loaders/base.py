"""Dataset loader registry and the interface every loader follows."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

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
