"""`ShardDataset`: a map-style torch Dataset over a shard set.

Files are opened read-only and lazily in the process that reads them, so the dataset can
be handed to DataLoader workers (fork or spawn) without sharing HDF5 handles.
"""

from __future__ import annotations

import bisect
import json
import os
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ..errors import ShardError
from .format import ShardFile
from .writer import read_manifest

# Open shard files per process (each keeps its indexes in memory); older ones are closed.
MAX_OPEN_SHARDS = 32


class ShardDataset(Dataset):
    """Records of a shard set (directory with manifest.json) or of a single shard file.

    Items are dicts of NumPy arrays / numbers / strings with an `id`. `fields` limits
    which fields are read. An incomplete set (conversion still running or killed) is
    refused unless `allow_incomplete`.
    """

    def __init__(self, path: str | os.PathLike, fields=None, allow_incomplete: bool = False):
        path = Path(path)
        self.fields = None if fields is None else list(fields)
        if path.is_dir():
            self.manifest = read_manifest(path)
            if not self.manifest["complete"] and not allow_incomplete:
                raise ShardError("shard set is incomplete (conversion unfinished); rerun the "
                                 "conversion to finish it", path=path)
            self.files = [str(path / s["file"]) for s in self.manifest["shards"]]
            sizes = [s["samples"] for s in self.manifest["shards"]]
        else:
            with ShardFile(str(path)) as f:
                sizes = [f.n]
                attrs = f.attrs
            self.files = [str(path)]
            self.manifest = {"encoding": _json_attr(attrs.get("encoding")),
                             "dataset": attrs.get("dataset"), "split": attrs.get("split"),
                             "shards": [{"file": path.name, "samples": sizes[0]}],
                             "total_samples": sizes[0]}
        self.shard_sizes = sizes
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._open: dict[int, ShardFile] = {}
        self._pid = os.getpid()

    @property
    def encoding(self) -> dict:
        return self.manifest.get("encoding") or {}

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(shard number, row in shard) of a global index."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        s = bisect.bisect_right(self._starts, index) - 1
        return s, index - int(self._starts[s])

    def _shard(self, s: int) -> ShardFile:
        if os.getpid() != self._pid:
            # Forked worker: never touch the parent's handles, open our own.
            self._open = {}
            self._pid = os.getpid()
        f = self._open.pop(s, None)
        if f is None:
            if len(self._open) >= MAX_OPEN_SHARDS:
                self._open.pop(next(iter(self._open))).close()  # least recently used
            f = ShardFile(self.files[s])
        self._open[s] = f  # most recently used last
        return f

    def __getitem__(self, index: int) -> dict:
        s, row = self.locate(int(index))
        return self._shard(s).read(row, self.fields)

    def collate_fn(self):
        """The collate function that fits this set's encoding."""
        from .collate import collate_for
        return collate_for(self.encoding)

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_open"] = {}
        return state


def _json_attr(value):
    if value is None:
        return None
    return json.loads(value) if isinstance(value, (str, bytes)) else value
