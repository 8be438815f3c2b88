"""Dataset loader registry and the interface every loader follows."""

from __future__ import annotations

import os
from pathlib import Path

from ..registry import Registry

DATASETS: Registry[type["Loader"]] = Registry("dataset", modules=("evpipe.loaders.kitti",))


class Loader:
    """Walks a local copy of a dataset and yields raw records.

    `items()` lists picklable source descriptors in a fixed order (one per sample);
    `load(item)` reads one into a raw record: a dict with `id`, the input array under the
    loader's `kind` ("points", "events" or "spikes") and label fields. `source_files(item)`
    names the files a record comes from, for cache keys.
    """

    name = ""
    kind = ""
    splits: tuple[str, ...] = ()

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

    def source_files(self, item) -> list[Path]:
        raise NotImplementedError

    def describe(self) -> dict:
        """Options recorded in the manifest (JSON-ready)."""
        return dict(self.options)
