"""Shard sets: a directory with `manifest.json` and `shard-NNNNN.h5` files.

Each shard is written to `*.tmp`, fsynced and renamed; the manifest is rewritten the
same way after every shard, so a killed conversion leaves finished shards listed with
their SHA-256 and no partial file. Reopening the directory with the same `key` keeps the
shards that still verify and continues after them; another key is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .. import __version__
from ..errors import ShardError
from .format import FORMAT, VERSION, FieldSpec, ShardFileWriter, fsync_path, write_shard_file

MANIFEST = "manifest.json"
SET_FORMAT = "evpipe-shards"


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def read_manifest(out_dir: str | os.PathLike) -> dict:
    path = Path(out_dir) / MANIFEST
    try:
        m = json.loads(path.read_text())
    except FileNotFoundError:
        raise ShardError("no manifest.json: not a shard set", path=out_dir) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ShardError(f"manifest is not valid JSON: {e}", path=path) from None
    if m.get("format") != SET_FORMAT or m.get("version") != VERSION:
        raise ShardError(f"not an evpipe shard set v{VERSION} (format={m.get('format')!r}, "
                         f"version={m.get('version')!r})", path=path)
    return m


class ShardWriter:
    """Write records into a shard set.

    `key` identifies the inputs and parameters; an existing set with the same key is
    resumed (`done_sources` tells where to continue), one with another key is refused.
    Arrays are stored ragged along axis 0 unless named in `fixed`.
    """

    def __init__(self, out_dir: str | os.PathLike, *, dataset: str, split: str,
                 encoding: dict, key: str | None = None, samples_per_shard: int = 256,
                 fixed=(), extra: dict | None = None):
        if samples_per_shard < 1:
            raise ShardError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        self.dir = Path(out_dir)
        self.samples_per_shard = samples_per_shard
        self.fixed = frozenset(fixed)
        self._open: ShardFileWriter | None = None
        self.dir.mkdir(parents=True, exist_ok=True)
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink()
        if (self.dir / MANIFEST).exists():
            self.manifest = read_manifest(self.dir)
            if self.manifest.get("key") != key:
                raise ShardError(
                    "this folder holds shards built from other inputs or parameters "
                    f"(key {str(self.manifest.get('key'))[:12]}, now {str(key)[:12]}); "
                    "refusing to mix them: choose another --out or delete the folder",
                    path=self.dir)
            self._keep_valid_shards()
        else:
            stray = sorted(p.name for p in self.dir.iterdir())
            if stray:
                raise ShardError(f"folder is not empty and has no manifest ({stray[0]}, ...); "
                                 "refusing to write into it", path=self.dir)
            self.manifest = {
                "format": SET_FORMAT, "version": VERSION, "shard_format": FORMAT,
                "dataset": dataset, "split": split, "encoding": encoding,
                "evpipe_version": __version__, "key": key, "complete": False,
                "shards": [], "total_samples": 0, "skipped": [], "schema": None,
                **(extra or {})}
            self._save()
        schema = self.manifest.get("schema")
        self.schema = None if schema is None else {k: FieldSpec.from_json(v)
                                                   for k, v in schema.items()}

    def _keep_valid_shards(self) -> None:
        """Keep the prefix of listed shards whose bytes still match; drop the rest."""
        listed, kept = self.manifest["shards"], []
        for info in listed:
            path = self.dir / info["file"]
            if (path.is_file() and path.stat().st_size == info["bytes"]
                    and sha256_file(path) == info["sha256"]):
                kept.append(info)
            else:
                break
        names = {i["file"] for i in kept}
        for p in self.dir.glob("shard-*.h5"):
            if p.name not in names:
                p.unlink()
        self.manifest["shards"] = kept
        self.manifest["total_samples"] = sum(i["samples"] for i in kept)
        self.manifest["skipped"] = [s for i in kept for s in i.get("skipped", [])]
        self.manifest["complete"] = self.manifest["complete"] and len(kept) == len(listed)
        self._save()

    @property
    def complete(self) -> bool:
        return bool(self.manifest["complete"])

    @property
    def done_sources(self) -> int:
        """Number of source items covered by the finished shards."""
        shards = self.manifest["shards"]
        return shards[-1]["sources"][1] if shards else 0

    def _save(self) -> None:
        write_json_atomic(self.dir / MANIFEST, self.manifest)

    @property
    def shard_attrs(self) -> dict:
        """Root attributes every shard repeats (self-describing files)."""
        return {"encoding": self.manifest["encoding"], "dataset": self.manifest["dataset"],
                "split": self.manifest["split"]}

    def shard_path(self, index: int) -> Path:
        return self.dir / f"shard-{index:05d}.h5"

    def tmp_path(self, index: int) -> Path:
        return self.dir / f"shard-{index:05d}.h5.tmp"

    @property
    def next_index(self) -> int:
        return len(self.manifest["shards"])

    def commit(self, index: int, sources: tuple[int, int], samples: int, schema: dict,
               skipped=(), stats: dict | None = None, sha256: str | None = None) -> dict:
        """Rename the finished `tmp_path(index)` into place and record it in the manifest.

        Shards are committed in order: `index` must be the next one and `sources` must
        start where the previous shard ended.
        """
        tmp = self.tmp_path(index)
        self._check_next(index, sources)
        if schema:
            if self.schema is None:
                self.schema = {k: FieldSpec.from_json(v) for k, v in schema.items()}
                self.manifest["schema"] = {k: v.to_json() for k, v in self.schema.items()}
            elif schema != self.manifest["schema"]:
                raise ShardError(f"shard fields {schema} differ from the set's "
                                 f"{self.manifest['schema']}", path=tmp)
        path = self.shard_path(index)
        os.replace(tmp, path)
        fsync_path(self.dir)
        info = {"file": path.name, "samples": int(samples), "bytes": path.stat().st_size,
                "sha256": sha256 or sha256_file(path),
                "sources": [int(sources[0]), int(sources[1])], "skipped": list(skipped),
                "stats": dict(stats or {})}
        self.manifest["shards"].append(info)
        self.manifest["total_samples"] += int(samples)
        self.manifest["skipped"].extend(skipped)
        self._save()
        return info

    def _check_next(self, index: int, sources: tuple[int, int]) -> None:
        if self.complete:
            raise ShardError("shard set is already complete", path=self.dir)
        if index != self.next_index or sources[0] != self.done_sources:
            raise ShardError(f"shard {index} for sources {sources[0]}.. committed out of order "
                             f"(expected shard {self.next_index} at {self.done_sources})",
                             path=self.dir)

    def write_shard(self, records: list[dict], sources: tuple[int, int],
                    skipped: list[dict] = (), stats: dict | None = None) -> dict:
        """Write one shard for source items [sources[0], sources[1]) and commit it, with
        the ids that were skipped and summed per-record `stats` (e.g. voxel counts)."""
        index = self.next_index
        self._check_next(index, sources)
        schema = write_shard_file(str(self.tmp_path(index)), records, self.shard_attrs,
                                  self.schema, self.fixed)
        return self.commit(index, sources, len(records),
                           {k: v.to_json() for k, v in schema.items()}, skipped, stats)

    def add(self, record: dict) -> None:
        """Stream one record into the current shard; a shard is committed every
        `samples_per_shard` records."""
        if self._open is None:
            self._open = ShardFileWriter(str(self.tmp_path(self.next_index)), self.shard_attrs,
                                         self.schema, self.fixed)
        self._open.append(record)
        if len(self._open) >= self.samples_per_shard:
            self.flush()

    def flush(self) -> None:
        """Commit the shard `add()` is filling, if any."""
        if self._open is not None:
            w, self._open = self._open, None
            n = w.close()
            start = self.done_sources
            self.commit(self.next_index, (start, start + n), n,
                        {k: v.to_json() for k, v in (w.schema or {}).items()})

    def close(self, **extra) -> dict:
        """Commit what `add()` buffered, mark the set complete and return the manifest."""
        self.flush()
        self.manifest.update(extra)
        self.manifest["complete"] = True
        self._save()
        return self.manifest

    def abort(self) -> None:
        """Drop the shard `add()` is filling; committed shards stay."""
        if self._open is not None:
            w, self._open = self._open, None
            w.abort()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
