"""`evpipe info`: human-readable summaries of shard sets and shard files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .shards import ShardDataset


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {list(value.shape)}"
    return f"{type(value).__name__} {value!r}"


def shard_info_lines(path: Path) -> list[str]:
    ds = ShardDataset(path, allow_incomplete=True)
    m = ds.manifest
    enc = m.get("encoding") or {}
    lines = [f"shard set    {path}",
             f"dataset      {m.get('dataset')} / split {m.get('split')}",
             f"encoding     {enc.get('name')}",
             f"parameters   {json.dumps(enc.get('params', {}), sort_keys=True)}",
             f"samples      {len(ds)} in {len(ds.files)} shard(s)"]
    if "complete" in m:
        lines.append(f"complete     {m['complete']}")
        lines.append(f"bytes        {sum(s['bytes'] for s in m['shards'])}")
        lines.append(f"skipped      {len(m.get('skipped', []))}")
        lines.append(f"evpipe       {m.get('evpipe_version')}")
    if len(ds):
        rec = ds[0]
        lines.append(f"sample 0     id {rec['id']}")
        for k, v in rec.items():
            if k != "id":
                lines.append(f"  {k:<12}{_describe(v)}")
    ds.close()
    return lines


def info_lines(path) -> list[str]:
    return shard_info_lines(Path(path))
