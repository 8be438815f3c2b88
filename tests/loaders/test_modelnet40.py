"""`evpipe convert modelnet40 --to svc` for the three layouts, on trees built from the real
meshes airplane_0001.off / airplane_0006.off (and a small hand-written quad mesh), and the
OFF parser's pitfalls."""

import shutil

import h5py
import numpy as np
import pytest

from evpipe.encoders import ENCODINGS
from evpipe.encoders.event_cloud import farthest_point_sample as farthest_points
from evpipe.errors import ConfigError, DatasetError, FormatError
from evpipe.loaders import DATASETS
from evpipe.loaders.modelnet40 import (CLASSES, normalize_unit_sphere, parse_off, read_off,
                                       read_resampled, sample_mesh)
from evpipe.shards import ShardDataset, read_manifest
from tests.helpers import run_cli

# A unit cube with the pitfalls of real ModelNet files: fused header, CRLF, trailing
# spaces, quad faces.
CUBE = (b"OFF8 6 0\r\n"
        + b"".join(b"%d %d %d \r\n" % (x, y, z) for z in (0, 1) for y in (0, 1) for x in (0, 1))
        + b"4 0 2 3 1 \r\n4 4 5 7 6 \r\n4 0 1 5 4 \r\n4 2 6 7 3 \r\n4 0 4 6 2 \r\n4 1 3 7 5 \r\n")
SHAPES = {"train": ["airplane_0001", "bathtub_0001"], "test": ["airplane_0006"]}


def loader(root, split="train", **options):
    return DATASETS.get("modelnet40")(root, split, **options)


def convert(root, out, *args) -> ShardDataset:
    run_cli("convert", "modelnet40", "--to", "svc", "--root", root, "--out", out, "-q", *args,
            check=True)
    return ShardDataset(out)


def assert_svc(stored: dict, points: np.ndarray) -> None:
    """The stored svc fields equal the encoder's on `points`, with this dataset's defaults."""
    params = ENCODINGS.get("svc").make(**DATASETS.get("modelnet40").default_params["svc"])
    for name, value in params.encode(points).items():
        np.testing.assert_array_equal(stored[name], value, err_msg=name)


def shard_hashes(path):
    return [s["sha256"] for s in read_manifest(path)["shards"]]


@pytest.fixture(scope="module")
def meshes(data_dir, tmp_path_factory):
    """ModelNet40/{airplane,bathtub}/{train,test}/*.off under a parent folder."""
    root = tmp_path_factory.mktemp("modelnet_off")
    for split, ids in SHAPES.items():
        for sid in ids:
            folder = root / "ModelNet40" / sid.rsplit("_", 1)[0] / split
            folder.mkdir(parents=True, exist_ok=True)
            if sid.startswith("bathtub"):
                (folder / f"{sid}.off").write_bytes(CUBE)
            else:
                shutil.copy(data_dir / "modelnet" / f"{sid}.off", folder / f"{sid}.off")
    return root


@pytest.fixture(scope="module")
def clouds(meshes):
    """Shape id -> float32 [10000, 6] points with normals sampled from its mesh."""
    out = {}
    for split, ids in SHAPES.items():
        for sid in ids:
            v, t = read_off(meshes / "ModelNet40" / sid.rsplit("_", 1)[0] / split / f"{sid}.off")
            out[sid] = sample_mesh(v, t, 10_000, seed=len(out))
    return out


@pytest.fixture(scope="module")
def resampled(clouds, tmp_path_factory):
    """modelnet40_normal_resampled layout written from the sampled clouds as text."""
    root = tmp_path_factory.mktemp("modelnet_txt")
    for sid, pts in clouds.items():
        (root / sid.rsplit("_", 1)[0]).mkdir(exist_ok=True)
        lines = (",".join(f"{v:.6f}" for v in row) for row in pts.tolist())
        (root / sid.rsplit("_", 1)[0] / f"{sid}.txt").write_text("\n".join(lines) + "\n")
    for split, ids in SHAPES.items():
        (root / f"modelnet40_{split}.txt").write_text("".join(i + "\n" for i in ids))
    (root / "modelnet40_shape_names.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def write_h5(path, clouds, ids, labels, label_shape, normals=True):
    pts = np.stack([normalize_unit_sphere(clouds[i][:2048]) for i in ids])
    with h5py.File(path, "w") as f:
        f["data"] = pts[:, :, :3]
        f["label"] = np.array(labels, np.uint8 if label_shape == "(N,1)" else np.int64).reshape(
            (-1, 1) if label_shape == "(N,1)" else (-1,))
        if normals:
            f["normal"] = pts[:, :, 3:]
    return pts


@pytest.fixture(scope="module")
def hdf5(clouds, tmp_path_factory):
    """modelnet40_ply_hdf5_2048/ below a parent folder: train0 with labels (N, 1) uint8,
    train1 with labels (N,) int64 (the PointCLIP variant), test0; all with normals."""
    root = tmp_path_factory.mktemp("modelnet_h5")
    base = root / "modelnet40_ply_hdf5_2048"
    base.mkdir()
    write_h5(base / "ply_data_train0.h5", clouds, SHAPES["train"], [0, 1], "(N,1)")
    write_h5(base / "ply_data_train1.h5", clouds, ["airplane_0006"], [0], "(N,)")
    write_h5(base / "ply_data_test0.h5", clouds, ["airplane_0006"], [0], "(N,1)")
    for split, files in (("train", ["ply_data_train0.h5", "ply_data_train1.h5"]),
                         ("test", ["ply_data_test0.h5"])):
        (base / f"{split}_files.txt").write_text(
            "".join(f"data/modelnet40_ply_hdf5_2048/{f}\n" for f in files))
    (base / "shape_names.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def check_records(ds, root, ids, labels, n_points, **options):
    """ids and labels of the stored records; their svc equals svc of the loader's points."""
    assert [(r["id"], r["label"], r["class_name"]) for r in ds] == [
        (i, k, CLASSES[k]) for i, k in zip(ids, labels)]
    ld = loader(root, **options)
    for rec, item in zip(ds, ld.items()):
        points = ld.load(item)["points"]
        assert points.dtype == np.float32 and points.shape == (n_points, 6)
        np.testing.assert_allclose(np.linalg.norm(points[:, :3], axis=1).max(), 1, rtol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(points[:, 3:], axis=1), 1, rtol=1e-5)
        assert_svc(rec, points)


def test_off_meshes_end_to_end_and_deterministic(meshes, tmp_path):
    proc = run_cli("convert", "modelnet40", "--to", "svc", "--root", meshes, "--out",
                   tmp_path / "a", "-q", check=True)
    assert "38 of 40 classes have no train/ folder; skipped" in proc.stderr
    ds = ShardDataset(tmp_path / "a")
    check_records(ds, meshes, SHAPES["train"], [0, 1], 8192)
    m = read_manifest(tmp_path / "a")
    assert m["loader"]["detected_layout"] == "off"
    assert m["loader"]["mesh_sampler"].startswith("open3d ")
    assert m["encoding"]["params"]["spatial_shape"] == [202, 202, 202]
    # Mesh sampling is seeded from the shape id: a second conversion, on two processes,
    # writes the same bytes.
    convert(meshes, tmp_path / "b", "--workers", "2")
    assert shard_hashes(tmp_path / "a") == shard_hashes(tmp_path / "b")


def test_up_axis(meshes):
    y = loader(meshes).load("bathtub/train/bathtub_0001.off")["points"]
    z = loader(meshes, up_axis="z").load("bathtub/train/bathtub_0001.off")["points"]
    # z-up -> y-up is (x, y, z) -> (y, z, x), for the normals too.
    np.testing.assert_array_equal(y, z[:, [1, 2, 0, 4, 5, 3]])
    # The cube's bottom face (z = 0 in the file) lies at the lowest y after the rotation.
    bottom = z[:, 2] == z[:, 2].min()
    assert bottom.sum() > 500 and (y[bottom, 1] == y[:, 1].min()).all()


def test_normal_resampled_end_to_end(resampled, clouds, tmp_path):
    ds = convert(resampled, tmp_path / "o")
    check_records(ds, resampled, SHAPES["train"], [0, 1], 8192)
    test = convert(resampled, tmp_path / "t", "--split", "test", "--num-points", "1024")
    check_records(test, resampled, SHAPES["test"], [0], 1024, split="test", num_points=1024)
    # The loader's points: FPS rows of the file (kept in file order), then the unit sphere.
    path = resampled / "airplane" / "airplane_0001.txt"
    file_points = read_resampled(path)
    np.testing.assert_allclose(file_points, clouds["airplane_0001"], atol=5e-7)
    got = loader(resampled).load("airplane_0001")["points"]
    idx = farthest_points(file_points[:, :3], 8192)
    assert (np.diff(idx) > 0).all()
    np.testing.assert_array_equal(got, normalize_unit_sphere(file_points[idx]))
    first = loader(resampled, sampling="first", num_points=1000).load("airplane_0001")
    np.testing.assert_array_equal(first["points"], normalize_unit_sphere(file_points[:1000]))
    assert len(loader(resampled, num_points=0).load("airplane_0001")["points"]) == 10_000


def test_farthest_points_matches_brute_force():
    rng = np.random.default_rng(3)
    xyz = rng.normal(size=(300, 3)).astype(np.float32)
    chosen, dist = [0], np.full(300, np.inf)
    for _ in range(49):
        dist = np.minimum(dist, ((xyz - xyz[chosen[-1]]).astype(np.float64) ** 2).sum(axis=1))
        chosen.append(int(dist.argmax()))
    assert farthest_points(xyz, 50).tolist() == sorted(chosen)


def test_hdf5_both_label_shapes_end_to_end(hdf5, tmp_path):
    ds = convert(hdf5, tmp_path / "o")
    check_records(ds, hdf5, ["ply_data_train0/0000", "ply_data_train0/0001",
                             "ply_data_train1/0000"], [0, 1, 0], 2048)
    # Fewer points than --num-points: all 2048 are kept, in file order, re-normalised.
    with h5py.File(hdf5 / "modelnet40_ply_hdf5_2048" / "ply_data_train0.h5") as f:
        ref = np.concatenate([f["data"][1], f["normal"][1]], axis=1)
    assert ds[1]["feats"].shape[1] == 6
    got = loader(hdf5).load(("ply_data_train0.h5", 1))["points"]
    np.testing.assert_allclose(got, normalize_unit_sphere(ref), atol=1e-6)


def test_hdf5_without_normals_and_bad_files(clouds, tmp_path, caplog):
    base = tmp_path / "h5"
    base.mkdir()
    write_h5(base / "ply_data_train0.h5", clouds, ["bathtub_0001"], [1], "(N,)", normals=False)
    ld = loader(base)
    assert ld.items() == [("ply_data_train0.h5", 0)]
    assert "no train_files.txt; using ply_data_train0.h5" in caplog.text
    rec = ld.load(ld.items()[0])
    assert rec["points"].shape == (2048, 3) and rec["label"] == 1
    with h5py.File(base / "ply_data_train0.h5", "a") as f:
        f["label"][0] = 40
    with pytest.raises(FormatError, match="label 40 outside 0..39"):
        ld.load(("ply_data_train0.h5", 0))
    with h5py.File(base / "ply_data_train0.h5", "a") as f:
        del f["label"]
    with pytest.raises(FormatError, match="no 'label' dataset"):
        loader(base).items()
    (base / "ply_data_train0.h5").write_bytes(b"not hdf5")
    with pytest.raises(FormatError, match="not a readable HDF5 file") as e:
        loader(base).items()
    assert e.value.path.endswith("ply_data_train0.h5")


def test_layout_detection_and_options(resampled, tmp_path):
    proc = run_cli("convert", "modelnet40", "--to", "svc", "--root", tmp_path, "--out",
                   tmp_path / "o")
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"evpipe: error: {tmp_path}: no ModelNet40 layout found")
    with pytest.raises(DatasetError, match="no ModelNet40 hdf5 layout found"):
        loader(resampled, layout="hdf5")
    assert loader(resampled, layout="normal_resampled").layout == "normal_resampled"
    for bad in ({"layout": "ply"}, {"num_points": -1}, {"sampling": "random"},
                {"up_axis": "x"}):
        with pytest.raises(ConfigError):
            loader(resampled, **bad)


def test_bad_point_file_names_file_line_and_offset(resampled, tmp_path):
    root = tmp_path / "r"
    shutil.copytree(resampled, root)
    path = root / "bathtub" / "bathtub_0001.txt"
    lines = path.read_bytes().split(b"\n")
    lines[2] = b"0.1,0.2,zero,0,0,1"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(FormatError, match="line 3: expected 6 comma-separated") as e:
        read_resampled(path)
    assert e.value.offset == len(lines[0]) + len(lines[1]) + 2
    proc = run_cli("convert", "modelnet40", "--to", "svc", "--root", root, "--out",
                   tmp_path / "o", "-q")
    assert proc.returncode == 1 and str(path) in proc.stderr and "line 3" in proc.stderr
    lines[2] = b"0.1,0.2,0.3,0,0"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(FormatError, match="line 3"):
        read_resampled(path)
    (root / "modelnet40_shape_names.txt").write_text("\n".join(reversed(CLASSES)))
    with pytest.raises(DatasetError, match="shape names differ"):
        loader(root).items()
    (root / "modelnet40_train.txt").write_text("airplane_0001\nsubmarine_0001\n")
    with pytest.raises(DatasetError, match="'submarine_0001' names no ModelNet40 class"):
        loader(root).items()


def test_off_parser_handles_real_file_pitfalls(data_dir):
    raw = (data_dir / "modelnet" / "airplane_0001.off").read_bytes()
    assert raw.startswith(b"OFF\r\n") and b" \r\n" in raw  # CRLF, trailing spaces
    v, t = parse_off(raw)
    assert v.shape == (27817, 3) and t.shape == (54303, 3) and t.max() == 27816
    np.testing.assert_allclose([v[:, 2].min(), v[:, 2].max()], [0.42, 116.6], atol=0.05)  # z up
    # The same file with the fused header some ModelNet files have, and LF endings.
    fused = raw.replace(b"OFF\r\n", b"OFF", 1).replace(b"\r\n", b"\n")
    v2, t2 = parse_off(fused)
    np.testing.assert_array_equal(v, v2)
    np.testing.assert_array_equal(t, t2)


def test_off_parser_polygons_and_comments():
    v, t = parse_off(CUBE)
    assert v.shape == (8, 3) and t.shape == (12, 3)
    assert t[:2].tolist() == [[0, 2, 3], [0, 3, 1]]  # quad 0 2 3 1 split as PyG does
    pent = b"OFF\n# a comment\n5 1 0\n0 0 0\n1 0 0\n2 1 0\n1 2 0\n0 1 0 # apex\n5 0 1 2 3 4\n"
    v, t = parse_off(pent)
    assert t.tolist() == [[0, 1, 2], [0, 2, 3], [0, 3, 4]]


@pytest.mark.parametrize("data,why,at", [
    (b"COFF\n3 1 0\n", "must start with 'OFF'", 0),
    (b"OFF\n3 x 0\n", "bad count line", 4),
    (b"OFF\n4 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", "header says 4 vertices", 4),
    (b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n", "vertex index out of range", 34),
    (b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n2 0 1 2\n", "fewer than 3 vertices", 28),
    (b"OFF\n3 1 0\n0 0 0\n1 zero 0\n0 1 0\n3 0 1 2\n", "non-numeric vertex", 18),
    (b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2.5\n", "non-integer face value", 34),
    (b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n3 0 1 2\n", "after the last face", 36),
    (b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n4 0 1 2\n", "ends inside the faces", 28),
    (b"OFF\n3 1 0\n0 0 0\n1 0 inf\n0 1 0\n3 0 1 2\n", "non-finite", 20),
])
def test_off_parser_errors(data, why, at):
    """The offset is the first byte of the offending value (or line)."""
    with pytest.raises(FormatError, match=why) as e:
        parse_off(data, "x.off")
    assert e.value.offset == at and e.value.path == "x.off"


def test_degenerate_mesh_names_the_file(meshes, tmp_path):
    root = tmp_path / "m"
    (root / "ModelNet40" / "bed" / "train").mkdir(parents=True)
    flat = b"OFF\n3 1 0\n0 0 0\n1 0 0\n2 0 0\n3 0 1 2\n"
    (root / "ModelNet40" / "bed" / "train" / "bed_0001.off").write_bytes(flat)
    with pytest.raises(FormatError, match="no surface area") as e:
        loader(root).load("bed/train/bed_0001.off")
    assert e.value.path.endswith("bed_0001.off")
