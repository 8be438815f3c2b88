"""Test helpers shared by several test modules."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def copy_kitti(src: Path, dst: Path, ids=None) -> Path:
    """Copy a KITTI training tree (optionally only `ids`) to `dst`."""
    for sub in ("velodyne", "label_2", "calib", "image_2"):
        (dst / "training" / sub).mkdir(parents=True, exist_ok=True)
        for f in sorted((src / "training" / sub).iterdir()):
            if ids is None or f.stem in ids:
                shutil.copy(f, dst / "training" / sub / f.name)
    return dst


def run_cli(*args, env=None, cwd=None, check=False, timeout=300):
    """Run `python -m evpipe.cli ARGS` in a subprocess; returns CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "evpipe.cli", *map(str, args)],
                          capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"evpipe {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc
