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


def event_stats(reader) -> dict:
    """Streaming statistics of an event file: count, time range (us), ON count, coordinate
    maxima and the number of backward timestamp steps."""
    n = on = back = 0
    t_min = t_max = last = None
    x_max = y_max = -1
    for b in reader.iter_chunks():
        t = b["t"]
        n += len(b)
        on += int(np.count_nonzero(b["p"] == 1))
        back += int(np.count_nonzero(np.diff(t) < 0)) + (last is not None and int(t[0]) < last)
        last = int(t[-1])
        t_min = int(t.min()) if t_min is None else min(t_min, int(t.min()))
        t_max = int(t.max()) if t_max is None else max(t_max, int(t.max()))
        x_max = max(x_max, int(b["x"].max()))
        y_max = max(y_max, int(b["y"].max()))
    return {"events": n, "on": on, "t_min": t_min, "t_max": t_max, "x_max": x_max,
            "y_max": y_max, "backward_steps": back}


def event_info_lines(path: Path) -> list[str]:
    from .io import open_events
    with open_events(path) as r:
        s = event_stats(r)
        lines = [f"event file   {path}",
                 f"format       {r.format}",
                 f"sensor size  {r.sensor_size.width}x{r.sensor_size.height}"
                 + (f" ({r.metadata['geometry']})" if "geometry" in r.metadata else "")]
    n = s["events"]
    lines.append(f"events       {n}")
    if n:
        dur = s["t_max"] - s["t_min"]
        lines += [f"time         {s['t_min']} .. {s['t_max']} us ({dur / 1e6:.6f} s)",
                  f"rate         {n / max(dur, 1) :.3f} Mev/s",
                  f"polarity     {s['on']} ON ({100 * s['on'] / n:.1f} %), {n - s['on']} OFF",
                  f"x, y max     {s['x_max']}, {s['y_max']}",
                  f"monotonic    {'yes' if not s['backward_steps'] else 'no, ' + str(s['backward_steps']) + ' backward steps'}"]
    return lines


def _is_shard_file(path: Path) -> bool:
    import h5py
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == "evpipe-shard"
    except OSError:
        return False


def info_lines(path) -> list[str]:
    """`evpipe info`: a shard set, a shard file or any event file."""
    path = Path(path)
    if path.is_dir() or (path.suffix in (".h5", ".hdf5") and _is_shard_file(path)):
        return shard_info_lines(path)
    return event_info_lines(path)
