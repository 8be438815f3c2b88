import logging
import shutil

import numpy as np
import pytest

from evpipe.errors import DatasetError, EvpipeError, FormatError
from evpipe.io import kitti, semantickitti
from tests.helpers import copy_kitti

FRAMES = ("000000", "000001", "000002")


def paths(root, fid):
    t = root / "training"
    return (t / "velodyne" / f"{fid}.bin", t / "calib" / f"{fid}.txt",
            t / "label_2" / f"{fid}.txt", t / "image_2" / f"{fid}.png")


@pytest.mark.parametrize("fid,n", list(zip(FRAMES, (115384, 120268, 126891))))
def test_velodyne_point_counts(kitti_dir, fid, n):
    pts = kitti.read_velodyne(paths(kitti_dir, fid)[0])
    assert pts.dtype == np.float32 and pts.shape == (n, 4)
    assert 0 <= pts[:, 3].min() and pts[:, 3].max() <= 0.99 + 1e-6


def test_truncated_velodyne_is_format_error(kitti_dir, tmp_path):
    bad = tmp_path / "000000.bin"
    bad.write_bytes(paths(kitti_dir, "000000")[0].read_bytes()[:1000 * 16 + 7])
    with pytest.raises(FormatError) as e:
        kitti.read_velodyne(bad)
    assert e.value.path == str(bad) and e.value.offset == 16000
    assert "000000.bin" in str(e.value) and "multiple of 16" in str(e.value)


def test_missing_scan_is_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="missing"):
        kitti.read_velodyne(tmp_path / "nope.bin")


def test_calib_all_keys_and_trailing_blank_lines(kitti_dir):
    path = paths(kitti_dir, "000000")[1]
    assert path.read_text().endswith("\n\n")
    c = kitti.read_calib(path)
    for key in ("P0", "P1", "P2", "P3", "Tr_velo_to_cam", "Tr_imu_to_velo"):
        assert getattr(c, key).shape == (3, 4)
    assert c.R0_rect.shape == (3, 3)
    assert c.P2[0, 0] == pytest.approx(707.0493)
    assert c.Tr_imu_to_velo[0, 3] == pytest.approx(-0.8086759)


def test_calib_missing_and_malformed(kitti_dir, tmp_path):
    with pytest.raises(DatasetError, match="calibration file is missing"):
        kitti.read_calib(tmp_path / "000000.txt")
    text = paths(kitti_dir, "000000")[1].read_text().splitlines()
    short = tmp_path / "short.txt"
    short.write_text("\n".join([text[0], text[1], text[2] + " 1.0"] + text[3:]))
    with pytest.raises(FormatError, match="P2 has 13 values") as e:
        kitti.read_calib(short)
    assert e.value.offset == len(text[0]) + len(text[1]) + 2
    lacking = tmp_path / "lacking.txt"
    lacking.write_text("\n".join(text[:4]))
    with pytest.raises(FormatError, match="lacks R0_rect"):
        kitti.read_calib(lacking)


def test_labels_frame_000001(kitti_dir):
    _, calib, label, _ = paths(kitti_dir, "000001")
    lab = kitti.read_labels(label, kitti.read_calib(calib))
    assert list(lab.type) == ["Truck", "Car", "Cyclist"] + ["DontCare"] * 4
    assert lab.dontcare.tolist() == [False] * 3 + [True] * 4
    # Truck line: 0.00 0 -1.57 599.41 156.40 629.75 189.25 2.85 2.63 12.34 0.47 1.49 69.44 -1.56
    assert lab.truncated[0] == 0 and lab.occluded[2] == 3
    np.testing.assert_allclose(lab.bbox[0], [599.41, 156.40, 629.75, 189.25], rtol=1e-6)
    np.testing.assert_allclose(lab.dimensions[0], [2.85, 2.63, 12.34], rtol=1e-6)  # h, w, l
    np.testing.assert_allclose(lab.location[0], [0.47, 1.49, 69.44], rtol=1e-6)
    assert lab.rotation_y[0] == pytest.approx(-1.56) and lab.alpha[0] == pytest.approx(-1.57)
    assert np.isnan(lab.score).all()
    b = lab.boxes_lidar
    assert b.shape == (7, 7) and np.isnan(b[3:]).all()
    # LiDAR box: l, w, h reordered, centre raised by h/2, yaw = -ry - pi/2.
    np.testing.assert_allclose(b[0, 3:6], [12.34, 2.63, 2.85], rtol=1e-6)
    assert b[0, 6] == pytest.approx(1.56 - np.pi / 2, abs=1e-6)
    assert b[0, 0] == pytest.approx(69.44 + 0.27, abs=0.1)  # forward distance ~ camera z
    rect = kitti.read_calib(calib).velo_to_rect()
    bottom = rect @ np.r_[b[0, :2], b[0, 2] - 2.85 / 2, 1.0]
    np.testing.assert_allclose(bottom[:3], lab.location[0], atol=1e-4)


def test_pedestrian_of_000000_holds_376_points(kitti_dir):
    velo, calib, label, _ = paths(kitti_dir, "000000")
    pts, c = kitti.read_velodyne(velo), kitti.read_calib(calib)
    lab = kitti.read_labels(label, c)
    assert list(lab.type) == ["Pedestrian"]
    assert kitti.points_in_camera_boxes(pts, lab, c).sum() == 376
    # The same box in the LiDAR frame agrees up to points on its faces.
    assert abs(int(kitti.points_in_boxes(pts, lab.boxes_lidar).sum()) - 376) <= 2


@pytest.mark.parametrize("bad,why", [
    ("Car 0.00 0 -1.57 599.41 156.40 629.75 189.25 2.85 2.63 12.34 0.47 1.49\n", "expected 15 fields"),
    ("Car 0.00 0 -1.57 599.41 156.40 629.75 189.25 2.85 x 12.34 0.47 1.49 69.44 -1.56\n", "non-numeric"),
    ("Car 0.00 0 nan 599.41 156.40 629.75 189.25 2.85 2.6 12.34 0.47 1.49 69.44 -1.56\n", "non-finite"),
])
def test_malformed_label_line(tmp_path, bad, why):
    path = tmp_path / "000009.txt"
    good = "Pedestrian 0.00 0 -0.20 712.40 143.00 810.73 307.92 1.89 0.48 1.20 1.84 1.47 8.41 0.01\n"
    path.write_text(good + bad)
    with pytest.raises(FormatError, match=why) as e:
        kitti.read_labels(path)
    assert e.value.offset == len(good) and "line 2" in str(e.value)


def test_png_sizes_differ_per_frame(kitti_dir, tmp_path):
    sizes = [kitti.png_size(paths(kitti_dir, f)[3]) for f in FRAMES]
    assert sizes == [(1224, 370), (1242, 375), (1242, 375)]
    (tmp_path / "x.png").write_bytes(b"GIF89a" + bytes(30))
    with pytest.raises(FormatError, match="not a PNG"):
        kitti.png_size(tmp_path / "x.png")


@pytest.mark.parametrize("fid,n", list(zip(FRAMES, (20285, 18630, 20210))))
def test_fov_crop(kitti_dir, fid, n):
    velo, calib, _, img = paths(kitti_dir, fid)
    pts = kitti.read_velodyne(velo)
    mask = kitti.fov_mask(pts, kitti.read_calib(calib), kitti.png_size(img))
    assert mask.sum() == n
    assert (pts[mask, 0] > 0).all()  # everything kept is in front of the car


def test_split_without_imagesets_uses_all_frames(kitti_dir, tmp_path, caplog):
    root = copy_kitti(kitti_dir, tmp_path / "k")
    with caplog.at_level(logging.WARNING):
        assert kitti.read_split(root, "train") == list(FRAMES)
    assert "no ImageSets/train.txt" in caplog.text
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "val.txt").write_text("000002\n000001\n")
    assert kitti.read_split(root, "val") == ["000002", "000001"]
    with pytest.raises(DatasetError, match="unknown KITTI split"):
        kitti.read_split(root, "dev")
    shutil.rmtree(root / "training")
    with pytest.raises(DatasetError, match="no ImageSets/train.txt and no training/velodyne"):
        kitti.read_split(root, "train")


def test_semantickitti_labels(data_dir):
    seq = data_dir / "semantickitti" / "sequences" / "00"
    pts = kitti.read_velodyne(seq / "velodyne" / "000000.bin")
    sem, inst = semantickitti.read_labels(seq / "labels" / "000000.label", len(pts))
    raw = np.fromfile(seq / "labels" / "000000.label", "<u4")
    counts = dict(zip(*np.unique(raw & 0xFFFF, return_counts=True)))
    assert {int(k): int(v) for k, v in counts.items()} == {0: 2, 50: 25, 52: 1, 70: 17, 71: 3, 80: 2}
    # learning_map: 0, 52 -> ignore; 50 building(13) 70 vegetation(15) 71 trunk(16) 80 pole(18).
    expect = {0: -1, 52: -1, 50: 12, 70: 14, 71: 15, 80: 17}
    for r, s in zip(raw & 0xFFFF, sem):
        assert s == expect[int(r)]
    assert sem.dtype == np.int16 and (inst == 0).all()
    assert semantickitti.CLASSES[12] == "building"


def test_semantickitti_upper_bits_and_bad_sizes(tmp_path):
    lab = tmp_path / "a.label"
    np.array([(7 << 16) | 10, (1 << 16) | 252, 0xFFFF], "<u4").tofile(lab)
    sem, inst = semantickitti.read_labels(lab)
    assert sem.tolist() == [0, 0, -1] and inst.tolist() == [7, 1, 0]  # car, moving-car, unknown
    with pytest.raises(FormatError, match="3 labels for 4 points"):
        semantickitti.read_labels(lab, 4)
    lab.write_bytes(b"\x00" * 10)
    with pytest.raises(EvpipeError, match="multiple of 4"):
        semantickitti.read_labels(lab)
