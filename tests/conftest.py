"""Shared fixtures: the real sample files in ../shared/data and an isolated cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EVPIPE_TEST_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """../shared/data; missing data fails under CI=true and skips elsewhere."""
    if not DATA.is_dir():
        msg = f"real sample files not found at {DATA} (set EVPIPE_TEST_DATA)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    return DATA


@pytest.fixture(scope="session")
def kitti_dir(data_dir) -> Path:
    return data_dir / "kitti"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Generated samples go to a per-session cache, never the user's."""
    cache = tmp_path_factory.mktemp("evpipe-cache")
    old = os.environ.get("EVPIPE_CACHE")
    os.environ["EVPIPE_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("EVPIPE_CACHE", None)
    else:
        os.environ["EVPIPE_CACHE"] = old
