"""Dataset cards (installed as `evpipe.datasets`): one JSON file per dataset."""

from __future__ import annotations

import json
from importlib import resources


def card(name: str) -> dict:
    """The card of dataset `name` (classes, sensor, splits, layout, citation, licence)."""
    return json.loads(resources.files(__name__).joinpath(f"{name}.json").read_text())
