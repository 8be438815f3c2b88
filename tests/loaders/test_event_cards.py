"""The dataset cards of the event and spike datasets agree with their loaders."""

import pytest

from evpipe.datasets import card
from evpipe.loaders import DATASETS


@pytest.mark.parametrize("name", ["dvsgesture", "gen1", "ncars", "nmnist", "spikecam"])
def test_card_matches_loader(name):
    c, loader = card(name), DATASETS.get(name)
    assert c["name"] == name and c["modality"] == loader.kind
    assert tuple(c["splits"]) == loader.splits
    if name != "spikecam":
        assert c["classes"] == list(loader.classes)
        assert tuple(c["sensor_size"]) == tuple(loader.sensor_size)
    for d in c["downloads"]:
        assert d["file"] and ("md5" in d or "sha256" in d)
        assert all(u.startswith("https://") or u.startswith("http://") for u in d.get("urls", []))
    assert c["citation"] and c["licence"] and (c["downloads"] or c["manual"])
