"""`evpipe convert semantickitti --to svc` on a tree built from the real 50-point scan, and
the voxel labels' alignment with svc."""

import shutil
from collections import Counter

import numpy as np
import pytest

from evpipe.encoders import ENCODINGS, svc, svc_with_point_map, voxel_labels
from evpipe.errors import DatasetError, FormatError
from evpipe.io.kitti import read_velodyne
from evpipe.io.semantickitti import read_labels
from evpipe.loaders import DATASETS
from evpipe.loaders.semantickitti import POINT_CLIP, clip_bounds
from evpipe.shards import ShardDataset, read_manifest
from tests.helpers import run_cli

SCAN = "sequences/00/velodyne/000000.bin"
LABEL = "sequences/00/labels/000000.label"


def convert(root, out, *args) -> ShardDataset:
    run_cli("convert", "semantickitti", "--to", "svc", "--root", root, "--out", out, "-q",
            *args, check=True)
    return ShardDataset(out)


def assert_svc(stored: dict, points: np.ndarray, **overrides) -> None:
    """The stored svc fields equal the encoder's on `points`, with this dataset's defaults."""
    cls = DATASETS.get("semantickitti")
    params = ENCODINGS.get("svc").make(**{**cls.default_params["svc"], **overrides})
    for name, value in params.encode(points).items():
        np.testing.assert_array_equal(stored[name], value, err_msg=name)


def voxelize_labels(points, labels, voxel_size, point_range):
    """svc's voxel_labels and point map for `points` (the code under test)."""
    r, pv = svc_with_point_map(points, voxel_size, point_range)
    return voxel_labels(pv, labels, len(r.coords)), pv


@pytest.fixture(scope="module")
def tree(data_dir, tmp_path_factory):
    """Sequence 00 (the real scan), 08 (the same scan as validation) and 11 (its points
    only, as the unlabelled test split)."""
    root = tmp_path_factory.mktemp("semantickitti")
    for seq, labelled in (("00", True), ("08", True), ("11", False)):
        for sub, src in (("velodyne", SCAN), ("labels", LABEL))[:1 + labelled]:
            (root / "sequences" / seq / sub).mkdir(parents=True)
            shutil.copy(data_dir / "semantickitti" / src,
                        root / "sequences" / seq / sub / (src.rsplit("/", 1)[1]))
    return root


def majority(labels: np.ndarray) -> int:
    """Reference vote: most frequent label >= 0, smallest on ties, -1 if none."""
    counts = Counter(int(v) for v in labels if v >= 0)
    if not counts:
        return -1
    best = max(counts.values())
    return min(k for k, v in counts.items() if v == best)


def assert_aligned(points, labels, voxel_size, point_range=POINT_CLIP):
    """svc's point map and voxel labels against an independent recomputation: each kept
    point's float32 cell is its voxel's coords, counts match n_points, and each voxel's
    label is the majority of the points mapped to it."""
    vl, pv = voxelize_labels(points, labels, voxel_size, point_range)
    ref = svc(points, voxel_size, point_range, max_points_per_voxel=len(points) + 1)
    assert len(vl) == len(ref.coords)
    lo = np.array(point_range[:3], np.float32)
    size = np.array(voxel_size, np.float32)
    kept = pv >= 0
    cells = np.floor((points[kept, :3] - lo) / size).astype(np.int32)[:, ::-1]
    np.testing.assert_array_equal(cells, ref.coords[pv[kept]])
    np.testing.assert_array_equal(np.bincount(pv[kept], minlength=len(vl)), ref.n_points)
    assert vl.tolist() == [majority(labels[pv == v]) for v in range(len(vl))]
    # With a voxel cap, svc keeps the first voxels: voxel_labels[:cap] still aligns.
    cap = svc(points, voxel_size, point_range, max_voxels=max(len(vl) // 2, 1))
    np.testing.assert_array_equal(cap.coords, ref.coords[:len(cap.coords)])
    return vl, pv


def test_voxel_labels_align_with_svc_on_the_real_scan(data_dir):
    points = read_velodyne(data_dir / "semantickitti" / SCAN)
    labels, _ = read_labels(data_dir / "semantickitti" / LABEL, len(points))
    lo, hi = clip_bounds((0.05,) * 3, POINT_CLIP)
    clipped = points.copy()
    np.clip(clipped[:, :3], lo, hi, out=clipped[:, :3])
    beyond = ((points[:, :3] < POINT_CLIP[:3]) | (points[:, :3] >= POINT_CLIP[3:])).any(axis=1)
    assert beyond.sum() == 4
    for voxel in (0.05, 0.5, 4.0):
        vl, pv = assert_aligned(points, labels, (voxel,) * 3)
        np.testing.assert_array_equal(pv < 0, beyond)  # svc drops points beyond the box
    # Clipped onto the box, every point keeps a voxel; at 4 m several share one.
    vl, pv = assert_aligned(clipped, labels, (4.0,) * 3)
    assert (pv >= 0).all() and len(vl) == 35


@pytest.mark.parametrize("voxel", [0.05, 0.1, 0.3, 1.7])
def test_voxel_labels_align_with_svc_on_random_clouds(voxel):
    rng = np.random.default_rng(int(voxel * 100))
    lo, hi = clip_bounds((voxel,) * 3, POINT_CLIP)
    for _ in range(20):
        n = int(rng.integers(0, 2000))
        points = np.concatenate([rng.uniform(-40, 40, (n, 2)), rng.uniform(-6, 4, (n, 1)),
                                 rng.uniform(0, 1, (n, 1))], axis=1).astype(np.float32)
        points[rng.integers(0, max(n, 1), 3 if n else 0)] = np.nan
        # Values on and just inside the faces, where float32 rounding decides the cell.
        points[:n // 10, :3] = rng.choice(np.concatenate([lo, hi]), (n // 10, 3))
        labels = rng.integers(-1, 19, n)
        labels[: n // 3] = rng.integers(-1, 2, n // 3)  # many ties and ignored points
        assert_aligned(points, labels, (voxel,) * 3)
        clipped = points.copy()
        np.clip(clipped[:, :3], lo, hi, out=clipped[:, :3])
        _, pv = assert_aligned(clipped, labels, (voxel,) * 3)
        assert ((pv < 0) == np.isnan(points[:, 0])).all()  # clipping loses only NaNs


def test_majority_rules():
    points = np.array([[0.01, 0.01, 0.01, 0]] * 4 + [[1.01, 0.01, 0.01, 0]] * 3
                      + [[2.01, 0.01, 0.01, 0]] * 2, np.float32)
    labels = np.array([-1, -1, 7, 3, 5, 3, 5, -1, -1])
    vl, pv = voxelize_labels(points, labels, (1.0,) * 3, POINT_CLIP)
    # Voxel 0: two -1 lose to single labels, the 7-3 tie goes to 3; voxel 1: 5 wins 2-1;
    # voxel 2: only -1.
    assert vl.tolist() == [3, 5, -1] and vl.dtype == np.int8
    assert pv.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2]


def test_clip_bounds_keep_clipped_points_in_the_grid():
    lo, hi = clip_bounds((0.05,) * 3, POINT_CLIP)
    np.testing.assert_array_equal(lo, np.float32([-35.2, -35.2, -4]))
    top = np.float32([35.2, 35.2, 2])
    assert (hi < top).all() and (top - hi < 1e-5).all()
    r = svc(np.array([[*hi, 0.5], [*lo, 0.5]], np.float32), (0.05,) * 3, POINT_CLIP)
    assert r.coords.tolist() == [[119, 1407, 1407], [0, 0, 0]]


def loaded(root, split, **options):
    loader = DATASETS.get("semantickitti")(root, split, **options)
    return [loader.load(item) for item in loader.items()]


def test_convert_end_to_end(tree, tmp_path):
    proc = run_cli("convert", "semantickitti", "--to", "svc", "--root", tree, "--out",
                   tmp_path / "train", "-q", check=True)
    assert "sequences 01, 02, 03, 04, 05, 06, 07, 09, 10 not found; skipped" in proc.stderr
    m = read_manifest(tmp_path / "train")
    assert m["encoding"]["params"]["spatial_shape"] == [120, 1408, 1408]
    assert m["encoding"]["params"]["max_points_per_voxel"] == 32
    assert m["loader"] == {"point_labels": False}
    raw_points = read_velodyne(tree / SCAN)
    labels, _ = read_labels(tree / LABEL, len(raw_points))
    for split, seq in (("train", "00"), ("val", "08"), ("test", "11")):
        ds = convert(tree, tmp_path / f"{split}-2", "--split", split)
        assert [r["id"] for r in ds] == [f"{seq}/000000"]
        rec, raw = ds[0], loaded(tree, split)[0]
        assert_svc(rec, raw["points"])
        # The loader's points are the scan with coordinates clipped, not filtered.
        assert len(raw["points"]) == 50 and (raw["points"][:, 3] == raw_points[:, 3]).all()
        lo, hi = clip_bounds((0.05,) * 3, POINT_CLIP)
        np.testing.assert_array_equal(raw["points"][:, :3], np.clip(raw_points[:, :3], lo, hi))
        assert (raw["points"][:, :3] != raw_points[:, :3]).any(axis=1).sum() == 4
        if split == "test":
            assert set(rec) == {"id", "coords", "feats", "spikes", "n_points"}
            continue
        assert rec["voxel_labels"].dtype == np.int8
        np.testing.assert_array_equal(raw["point_labels"], labels)
        vl, _ = assert_aligned(raw["points"], labels, (0.05,) * 3)
        np.testing.assert_array_equal(rec["voxel_labels"], vl)
        assert sorted(set(vl.tolist())) == [-1, 12, 14, 15, 17]  # building, vegetation, ...
    # Same input, same bytes.
    assert ([s["sha256"] for s in read_manifest(tmp_path / "train")["shards"]]
            == [s["sha256"] for s in read_manifest(tmp_path / "train-2")["shards"]])


def test_point_labels_and_other_voxel_size(tree, tmp_path):
    # Labels follow svc's voxels whatever the geometry: no loader option to keep in step.
    ds = convert(tree, tmp_path / "o", "--split", "val", "--point-labels", "--point-map",
                 "--voxel-size", "0.4", "0.4", "0.4")
    rec = ds[0]
    labels, _ = read_labels(tree / LABEL)
    np.testing.assert_array_equal(rec["labels"], labels)
    raw = loaded(tree, "val", point_labels=True)[0]
    assert_svc(rec, raw["points"], voxel_size=(0.4,) * 3, point_map=True)
    vl, pv = assert_aligned(raw["points"], labels, (0.4,) * 3)
    np.testing.assert_array_equal(rec["point_voxel"], pv)
    np.testing.assert_array_equal(rec["voxel_labels"], vl)
    assert len(vl) < 50 and (pv >= 0).all()
    test = loaded(tree, "test", point_labels=True)[0]
    assert set(test) == {"id", "points"}


def test_layout_errors(tree, tmp_path):
    proc = run_cli("convert", "semantickitti", "--to", "svc", "--root", tmp_path, "--out",
                   tmp_path / "o")
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"evpipe: error: {tmp_path}: no sequences/ folder")
    loader = DATASETS.get("semantickitti")
    (tmp_path / "sequences").mkdir()
    with pytest.raises(DatasetError, match="none of the val sequences"):
        loader(tmp_path, "val").items()
    root = tmp_path / "t"
    shutil.copytree(tree, root)
    shutil.rmtree(root / "sequences/08/labels")
    with pytest.raises(DatasetError, match="sequence 08 has no labels/ folder"):
        loader(root, "val").items()
    (root / "sequences/08/labels").mkdir()
    with pytest.raises(DatasetError, match="label file is missing") as e:
        loader(root, "val").load("08/000000")
    assert e.value.path.endswith("08/labels/000000.label")
    (root / "sequences/08/labels/000000.label").write_bytes(b"\0" * 4 * 49)
    with pytest.raises(FormatError, match="49 labels for 50 points"):
        loader(root, "val").load("08/000000")
