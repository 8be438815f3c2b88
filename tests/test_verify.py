"""`evpipe verify` on fake KITTI trees and temporary cards."""

from __future__ import annotations

import hashlib

import pytest

from evpipe import cli, verify as verify_mod
from evpipe.errors import DatasetError
from evpipe.verify import component_regex, match_layout, verify
from tests.helpers import copy_kitti, run_cli

KITTI_LAYOUT = ["training/velodyne/NNNNNN.bin", "training/label_2/NNNNNN.txt",
                "training/calib/NNNNNN.txt", "training/image_2/NNNNNN.png"]


def lines(findings, status=None):
    return [f.line() for f in findings if status is None or f.status == status]


@pytest.mark.parametrize("component, name, match", [
    ("NNNNNN.bin", "000123.bin", True),
    ("NNNNNN.bin", "00123.bin", False),
    ("NNNNNN.bin", "00012a.bin", False),
    ("XX", "08", True),
    ("userNN_*.aedat", "user07_led.aedat", True),
    ("userNN_*.aedat", "user07_led.txt", False),
    ("file?.txt", "file1.txt", True),
])
def test_component_regex(component, name, match):
    assert bool(component_regex(component).fullmatch(name)) == match


def test_literal_components_have_no_regex():
    assert component_regex("ImageSets") is None and component_regex("NMNIST") is None


def test_match_layout_walks_placeholder_folders(tmp_path):
    for seq in ("00", "08"):
        (tmp_path / "sequences" / seq / "velodyne").mkdir(parents=True)
        (tmp_path / "sequences" / seq / "velodyne" / "000000.bin").write_bytes(b"")
    (tmp_path / "sequences" / "notes").mkdir()
    assert match_layout(tmp_path, "sequences/XX/velodyne/NNNNNN.bin") == (2, "")
    assert match_layout(tmp_path, "sequences/XX/labels/NNNNNN.label") == (
        0, "no folder labels in sequences/XX")
    assert match_layout(tmp_path, "sequences/XX/calib.txt") == (
        0, "no file calib.txt in sequences/XX")
    assert match_layout(tmp_path, "poses/XX.txt") == (0, "no folder poses in the root")


def test_fake_kitti_against_the_kitti_card(kitti_dir, tmp_path):
    root = copy_kitti(kitti_dir, tmp_path / "kitti")
    proc = run_cli("verify", "kitti", "--root", root, "-q")
    assert proc.returncode == 1
    out = proc.stdout.splitlines()
    for entry in KITTI_LAYOUT:
        assert f"ok       layout {entry}: 3 files" in out
    assert "missing  layout testing/velodyne/NNNNNN.bin: no folder testing in the root" in out
    assert "missing  layout ImageSets/train.txt: no folder ImageSets in the root" in out
    assert "wrong    split train: 3 items, card says 3712" in out
    assert "wrong    split trainval: 3 items, card says 7481" in out
    assert any(line.startswith("wrong    split test: loader failed:") and "testing/velodyne" in line
               for line in out)
    assert ("note     archives: not in the root, not checked: data_object_velodyne.zip, "
            "data_object_label_2.zip, data_object_calib.zip, data_object_image_2.zip") in out
    assert out[-1] == f"kitti at {root}: 11 problems"


def test_empty_folder_everything_missing(tmp_path):
    findings = verify("kitti", tmp_path)
    layout = [f for f in findings if f.what.startswith("layout")]
    assert len(layout) == 11 and all(f.status == "missing" for f in layout)
    splits = [f for f in findings if f.what.startswith("split")]
    assert [f.what for f in splits] == ["split train", "split val", "split trainval", "split test"]
    assert all(f.status == "wrong" and "loader failed" in f.detail for f in splits)
    proc = run_cli("verify", "kitti", "--root", tmp_path)
    assert proc.returncode == 1 and proc.stdout.splitlines()[-1].endswith(": 15 problems")


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        verify("kitti", tmp_path / "nope")
    proc = run_cli("verify", "kitti", "--root", tmp_path / "nope")
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"evpipe: error: {tmp_path / 'nope'}: not a folder"


@pytest.fixture
def kitti_tree(kitti_dir, tmp_path):
    root = copy_kitti(kitti_dir, tmp_path / "kitti")
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "train.txt").write_text("000000\n000001\n")
    (root / "ImageSets" / "val.txt").write_text("000002\n")
    return root


def small_card(root, **extra):
    archive = root / "labels.zip"
    archive.write_bytes(b"archive bytes")
    card = {"layout": KITTI_LAYOUT + ["ImageSets/train.txt"], "splits": {"train": 2, "val": 1},
            "downloads": [{"file": "labels.zip", "bytes": 13,
                           "sha256": hashlib.sha256(b"archive bytes").hexdigest()},
                          {"file": "velodyne.zip"}]}
    card.update(extra)
    return card


def test_complete_copy_passes_and_exit_zero(kitti_tree, monkeypatch, capsys):
    card = small_card(kitti_tree)
    monkeypatch.setattr(verify_mod, "load_card", lambda name: card)
    assert cli.main(["verify", "kitti", "--root", str(kitti_tree), "--deep", "-q"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "ok       split train: 2 items" in out and "ok       split val: 1 items" in out
    assert "ok       archive labels.zip: sha256 ok" in out
    assert "note     archives: not in the root, not checked: velodyne.zip" in out
    assert "ok       decode train: 2 of 2 items decode" in out
    assert out[-1] == f"kitti at {kitti_tree}: no problems found"


def test_wrong_archive_and_missing_sources(kitti_tree):
    card = small_card(kitti_tree)
    (kitti_tree / "labels.zip").write_bytes(b"archive byteZ")
    (kitti_tree / "velodyne.zip.part").write_bytes(b"half")
    (kitti_tree / "ImageSets" / "train.txt").write_text("000000\n000001\n000007\n")
    out = lines(verify("kitti", kitti_tree, card=card))
    assert any(line.startswith("wrong    archive labels.zip: sha256 mismatch") for line in out)
    assert ("note     archive velodyne.zip: partial download present (rerun evpipe download "
            "to resume)") in out
    assert "wrong    split train: 3 items, card says 2" in out
    missing = [line for line in out if line.startswith("missing  split train:")]
    assert len(missing) == 1 and "1 of 3 items lack source files" in missing[0]
    assert str(kitti_tree / "training" / "velodyne" / "000007.bin") in missing[0]


def test_deep_reports_undecodable_samples_once(kitti_tree):
    card = small_card(kitti_tree, splits={"train": 2, "trainval": None})
    (kitti_tree / "ImageSets" / "trainval.txt").write_text("000000\n000001\n000002\n")
    scan = kitti_tree / "training" / "velodyne" / "000001.bin"
    scan.write_bytes(scan.read_bytes()[:-3])
    findings = verify("kitti", kitti_tree, deep=True, card=card)
    bad = [f for f in findings if f.what.startswith("sample")]
    assert len(bad) == 1 and bad[0].what == "sample 000001 (train)"
    assert "not a multiple of 16 B" in bad[0].detail
    out = lines(findings)
    assert "note     split trainval: 3 items (card gives no count)" in out
    assert "wrong    decode train: 1 of 2 items decode" in out
    assert ("ok       decode trainval: 1 of 1 items decode (2 already checked in another split)"
            in out)


def test_card_without_optional_keys(tmp_path):
    out = lines(verify("kitti", tmp_path, card={"splits": {}}), "note")
    assert "note     layout: card gives no layout" in out
    assert "note     archives: card lists no downloads" in out
