"""`evpipe verify-shards DIR`: prove a shard set intact.

Recomputes every shard's SHA-256 and size against the manifest, checks the sample counts,
that every `/index/<field>` starts at 0, never decreases and ends at the length of its
data, and that every sample decodes. Returns one problem line per fault.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import EvpipeError
from .format import ShardFile
from .writer import read_manifest, sha256_file


def _index_problems(f: ShardFile) -> list[str]:
    out = []
    for name, index in f.index.items():
        data = f._data[name]
        length = (data[next(iter(data))].shape[0] if hasattr(data, "keys") else data.shape[0])
        if len(index) != f.n + 1:
            out.append(f"index/{name} has {len(index)} entries for {f.n} samples")
        elif index[0] != 0 or (np.diff(index) < 0).any() or index[-1] != length:
            out.append(f"index/{name} is not 0..{length} non-decreasing "
                       f"(starts {index[0]}, ends {index[-1]})")
    return out


def verify_shards(path: str | os.PathLike, decode: bool = True) -> tuple[list[str], dict]:
    """(problems, manifest) for the shard set at `path`; no problems means intact."""
    root = Path(path)
    manifest = read_manifest(root)
    problems = []
    if not manifest.get("complete"):
        problems.append("manifest: conversion not complete (rerun it to finish)")
    total = 0
    for info in manifest["shards"]:
        name, file = info["file"], root / info["file"]
        if not file.is_file():
            problems.append(f"{name}: missing")
            continue
        if file.stat().st_size != info["bytes"]:
            problems.append(f"{name}: {file.stat().st_size} bytes, manifest says {info['bytes']}")
        if sha256_file(file) != info["sha256"]:
            problems.append(f"{name}: SHA-256 differs from the manifest")
        try:
            with ShardFile(str(file)) as f:
                if f.n != info["samples"]:
                    problems.append(f"{name}: {f.n} samples, manifest says {info['samples']}")
                if len(f.ids) != f.n:
                    problems.append(f"{name}: {len(f.ids)} ids for {f.n} samples")
                problems += [f"{name}: {p}" for p in _index_problems(f)]
                if decode:
                    for i in range(f.n):
                        f.read(i)
                total += f.n
        except (EvpipeError, OSError, ValueError, KeyError, IndexError) as e:
            problems.append(f"{name}: does not decode: {e}")
    if manifest.get("complete") and total != manifest["total_samples"] and not problems:
        problems.append(f"manifest: total_samples {manifest['total_samples']}, shards hold "
                        f"{total}")
    listed = {s["file"] for s in manifest["shards"]}
    for extra in sorted(p.name for p in root.glob("shard-*.h5") if p.name not in listed):
        problems.append(f"{extra}: not listed in the manifest")
    return problems, manifest
