"""`evpipe convert ncars` on a small tree of the two real N-CARS DAT samples."""

import shutil

import pytest

from evpipe.errors import DatasetError
from evpipe.io import open_events
from evpipe.loaders import DATASETS
from tests.loaders.event_datasets import (EVENT_ENCODINGS, assert_encoded, cli_error, convert,
                                          encoder)

SIZE = (120, 100)
REAL = {"car": "NCARS_obj_004397_td.dat", "background": "tonic_sample_ncars.dat"}


def read(path):
    with open_events(path, "dat", sensor_size=SIZE) as r:
        return r.read()


@pytest.fixture(scope="module")
def tree(data_dir, tmp_path_factory):
    """n-cars_train/{cars,background}/ and, as the zip's inner folder,
    n-cars_test/test/{cars,background}/."""
    root = tmp_path_factory.mktemp("ncars")
    src = data_dir / "prophesee_dat"
    for sub in ("n-cars_train", "n-cars_test/test"):
        for folder in ("cars", "background"):
            (root / sub / folder).mkdir(parents=True)
    shutil.copy(src / REAL["car"], root / "n-cars_train/cars/obj_004397_td.dat")
    shutil.copy(src / REAL["car"], root / "n-cars_train/cars/obj_004400_td.dat")
    shutil.copy(src / REAL["background"], root / "n-cars_train/background/obj_000123_td.dat")
    shutil.copy(src / REAL["background"], root / "n-cars_test/test/background/obj_000007_td.dat")
    return root


@pytest.mark.parametrize("encoding", EVENT_ENCODINGS)
def test_convert_every_encoding(tree, tmp_path, encoding):
    ds = convert("ncars", encoding, tree, tmp_path / "o")
    assert [(r["id"], r["label"]) for r in ds] == [
        ("background/obj_000123", 0), ("cars/obj_004397", 1), ("cars/obj_004400", 1)]
    params = encoder("ncars", encoding)
    for rec in ds:
        folder, stem = rec["id"].split("/")
        assert_encoded(rec, read(tree / "n-cars_train" / folder / f"{stem}_td.dat"), params,
                       SIZE)


def test_test_split_in_inner_folder(tree):
    loader = DATASETS.get("ncars")(tree, "test")
    assert loader.items() == [("n-cars_test/test/background/obj_000007_td.dat", 0)]
    (rec,) = loader.records(loader.items()[0])
    assert rec["id"] == "background/obj_000007" and len(rec["events"]) == 2009


def test_layout_errors(tree, tmp_path):
    err = cli_error("convert", "ncars", "--to", "events", "--root", tmp_path / "none",
                    "--out", tmp_path / "o")
    assert "N-CARS root not found" in err and "n-cars_train/{cars,background}" in err
    partial = tmp_path / "p"
    shutil.copytree(tree, partial)
    shutil.rmtree(partial / "n-cars_train" / "background")
    with pytest.raises(DatasetError, match="no n-cars_train/ folder with cars/ and background/"):
        DATASETS.get("ncars")(partial, "train").items()
