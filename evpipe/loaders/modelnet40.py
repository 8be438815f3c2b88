"""ModelNet40 (Wu et al., CVPR 2015): 40 CAD object classes, one label per shape, in the
three layouts of formats.md §12, detected from the files (or named with `--layout`):

- `normal_resampled` (PointNet++'s modelnet40_normal_resampled, E-3DSNN's input):
  `<class>/<class>_NNNN.txt`, 10 000 lines `x,y,z,nx,ny,nz`; `modelnet40_{train,test}.txt`
  list the shape ids; 9 843 / 2 468 shapes.
- `hdf5` (PointNet's modelnet40_ply_hdf5_2048): `ply_data_{train,test}K.h5` with `data`
  float32 (S, 2048, 3), `label` (S, 1) or (S,), optional `normal`; `{train,test}_files.txt`
  list the files; 9 840 / 2 468 shapes.
- `off` (the original ModelNet40 meshes): `<class>/{train,test}/<class>_NNNN.off`, parsed
  here (CRLF, trailing spaces, fused `OFF<nV> <nF> <nE>` headers, polygons split into
  triangles as a fan) and sampled like normal_resampled: 10 000 area-uniform points with the
  sampled triangle's normal, by Open3D seeded from the shape id.

Every layout then goes through the E-3DSNN recipe (algorithms.md §1.2(e), Pointcept
`ModelNetDataset` + `NormalizeCoord`): at most `num_points` points (default 8192) by
farthest point sampling from point 0 (pointops' start) or the first ones, then xyz
centred on their mean and divided by the largest norm (unit sphere); normals unchanged.
Pitfall: Pointcept hands pointops' FPS the [N, 6] xyz+normal array, whose CUDA kernel
reads rows of 3 floats (`xyz[k * 3 + i]`, sampling_cuda_kernel.cu), so its "FPS" runs on
scrambled coordinates; here FPS uses xyz. Indices are kept in file order.

Up axis: the PointNet-derived layouts are y-up (PointNet/PointNet++ rotate about y), the
meshes z-up. `up_axis` (default y) rotates every layout to one convention with the cyclic
permutation (x, y, z) -> (y, z, x) for z-up -> y-up (O-CNN/OctFormer `--align_y`), applied
to normals too. Whether that also matches the heading of the PointNet files is unverified.
"""

from __future__ import annotations

import logging
import re
import threading
import zlib
from pathlib import Path

import numpy as np
from numba import njit

from ..encoders.event_cloud import farthest_point_sample
from ..errors import ConfigError, DatasetError, FormatError
from .base import DATASETS, Loader

log = logging.getLogger(__name__)

CLASSES = ("airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car",
           "chair", "cone", "cup", "curtain", "desk", "door", "dresser", "flower_pot",
           "glass_box", "guitar", "keyboard", "lamp", "laptop", "mantel", "monitor",
           "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink", "sofa",
           "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox")
SPLITS = ("train", "test")
LAYOUTS = ("normal_resampled", "hdf5", "off")
NATIVE_UP = {"normal_resampled": "y", "hdf5": "y", "off": "z"}
# Folder names of the layouts inside a root that holds the unpacked archives.
LAYOUT_DIRS = {"normal_resampled": "modelnet40_normal_resampled",
               "hdf5": "modelnet40_ply_hdf5_2048", "off": "ModelNet40"}
MESH_POINTS = 10_000
SAMPLINGS = ("fps", "first")

_O3D_LOCK = threading.Lock()


def _token_offset(data: bytes, index: int, start: int = 0) -> int:
    """Byte offset of the index-th whitespace-separated token of data[start:]."""
    for i, m in enumerate(re.finditer(rb"\S+", data[start:])):
        if i == index:
            return start + m.start()
    return len(data)


@njit(cache=True, nogil=True)
def _triangulate(t, n_faces, n_vertices):
    """Fan-triangulate n_faces polygons `k i1 .. ik` from the int64 token stream t.

    Returns (triangles int64 [T, 3], bad token index, reason): reason 0 ok, 1 the stream
    ends inside the faces, 2 a polygon with fewer than 3 vertices, 3 an index outside
    0..n_vertices-1, 4 values left after the last face.
    """
    empty = np.empty((0, 3), np.int64)
    p = 0
    n_tri = 0
    for _ in range(n_faces):
        if p >= t.size:
            return empty, p, 1
        k = t[p]
        if k < 3:
            return empty, p, 2
        if k > t.size - p - 1:
            return empty, p, 1
        for j in range(p + 1, p + 1 + k):
            if t[j] < 0 or t[j] >= n_vertices:
                return empty, j, 3
        n_tri += k - 2
        p += 1 + k
    if p != t.size:
        return empty, p, 4
    tri = np.empty((n_tri, 3), np.int64)
    p = 0
    n = 0
    for _ in range(n_faces):
        k = t[p]
        for j in range(1, k - 1):
            tri[n, 0] = t[p + 1]
            tri[n, 1] = t[p + 1 + j]
            tri[n, 2] = t[p + 2 + j]
            n += 1
        p += 1 + k
    return tri, -1, 0


_FACE_ERRORS = {1: "file ends inside the faces", 2: "face with fewer than 3 vertices",
                3: "vertex index out of range", 4: "unexpected values after the last face"}


def parse_off(data: bytes, path=None) -> tuple[np.ndarray, np.ndarray]:
    """(vertices float64 [V, 3], triangles int64 [T, 3]) from the bytes of an OFF file.

    Line 1 is `OFF`, then `nV nF [nE]`, nV lines `x y z`, nF lines `k i1 .. ik` (0-based).
    Accepts CRLF, trailing spaces, `#` comments and the fused header `OFF<nV> <nF> <nE>`
    (pytorch_geometric `io/off.py`); polygons become k - 2 triangles (a fan; quads split as
    PyG does). Raises FormatError with the byte offset of the first bad value.
    """
    if b"#" in data:
        data = re.sub(rb"#[^\r\n]*", lambda m: b" " * len(m.group()), data)
    m = re.match(rb"\s*OFF(?![^\s\d])", data)
    if m is None:
        raise FormatError("not an OFF file: it must start with 'OFF'", path=path, offset=0)
    pos, counts = m.end(), []
    while True:  # the counts follow `OFF` on its line (fused) or on the next non-blank one
        line_end = data.find(b"\n", pos)
        line_end = len(data) if line_end < 0 else line_end
        counts = data[pos:line_end].split()
        if counts or line_end == len(data):
            break
        pos = line_end + 1
    try:
        n_vertices, n_faces = int(counts[0]), int(counts[1])
    except (IndexError, ValueError):
        raise FormatError("bad count line: expected 'nV nF nE'", path=path,
                          offset=pos) from None
    if n_vertices < 0 or n_faces < 0:
        raise FormatError(f"negative count in header ({n_vertices} vertices, {n_faces} faces)",
                          path=path, offset=pos)
    body = line_end + 1
    tokens = data[body:].split()
    if 3 * n_vertices + 4 * n_faces > len(tokens):
        raise FormatError(f"header says {n_vertices} vertices and {n_faces} faces but the file "
                          f"holds only {len(tokens)} values", path=path, offset=pos)
    try:
        vertices = np.array(tokens[:3 * n_vertices], dtype=np.float64).reshape(-1, 3)
    except ValueError:
        bad = _first_bad(tokens[:3 * n_vertices], float)
        raise FormatError(f"non-numeric vertex coordinate {tokens[bad][:20]!r}", path=path,
                          offset=_token_offset(data, bad, body)) from None
    if not np.isfinite(vertices).all():
        bad = int(np.flatnonzero(~np.isfinite(vertices.ravel()))[0])
        raise FormatError("non-finite vertex coordinate", path=path,
                          offset=_token_offset(data, bad, body))
    face_tokens = tokens[3 * n_vertices:]
    try:
        t = np.array(face_tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        bad = _first_bad(face_tokens, _int64)
        raise FormatError(f"non-integer face value {face_tokens[bad][:20]!r}", path=path,
                          offset=_token_offset(data, 3 * n_vertices + bad, body)) from None
    triangles, bad, reason = _triangulate(t, n_faces, n_vertices)
    if reason:
        raise FormatError(_FACE_ERRORS[reason], path=path,
                          offset=_token_offset(data, 3 * n_vertices + bad, body))
    return vertices, triangles


def _int64(s: bytes) -> int:
    v = int(s)
    if not -(1 << 63) <= v < 1 << 63:
        raise ValueError(s)
    return v


def _first_bad(tokens: list[bytes], conv) -> int:
    """Index of the first token that `conv` (float or _int64) rejects."""
    for i, s in enumerate(tokens):
        try:
            conv(s)
        except ValueError:
            return i
    return len(tokens)


def read_off(path) -> tuple[np.ndarray, np.ndarray]:
    """`parse_off` of a file; DatasetError if it is missing."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DatasetError("mesh file is missing", path=path) from None
    return parse_off(data, path)


def sample_mesh(vertices: np.ndarray, triangles: np.ndarray, n: int, seed: int) -> np.ndarray:
    """float32 [n, 6] (x, y, z, nx, ny, nz): n points uniform over the surface area
    (Open3D `sample_points_uniformly`), each with its triangle's unit normal (winding order
    as stored; ModelNet's is not consistent).

    Deterministic: Open3D's generator is process-global, so it is seeded with `seed`
    (0..2^31-1: Open3D takes an int32) right before the call, under a lock (checked with
    Open3D 0.20: same seed, same bytes, across processes; other Open3D versions may draw
    other points). Raises FormatError (no path) for a mesh without surface area.
    """
    import open3d as o3d
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices),
                                     o3d.utility.Vector3iVector(triangles.astype(np.int32)))
    if len(triangles) == 0 or not mesh.get_surface_area() > 0:
        raise FormatError("mesh has no surface area")
    with _O3D_LOCK:
        o3d.utility.random.seed(seed)
        cloud = mesh.sample_points_uniformly(n, use_triangle_normal=True)
    return np.concatenate([np.asarray(cloud.points), np.asarray(cloud.normals)],
                          axis=1).astype(np.float32)


def read_resampled(path) -> np.ndarray:
    """float32 [N, 6] from a modelnet40_normal_resampled .txt (`x,y,z,nx,ny,nz` per line),
    parsed as float64 and rounded once (as Pointcept's np.loadtxt(...).astype(float32))."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DatasetError("point file is missing", path=path) from None
    lines = data.split(b"\n")
    rows = [line.replace(b",", b" ").split() for line in lines]
    bad = next((i for i, row in enumerate(rows) if row and len(row) != 6), None)
    if bad is None:
        try:
            values = np.array([v for row in rows for v in row], dtype=np.float64)
        except ValueError:
            bad = next(i for i, row in enumerate(rows) if _first_bad(row, float) < len(row))
        else:
            finite = np.isfinite(values.reshape(-1, 6)).all(axis=1)
            if not finite.all():
                filled = [i for i, row in enumerate(rows) if row]
                bad = filled[int(np.flatnonzero(~finite)[0])]
    if bad is not None:
        offset = sum(len(line) + 1 for line in lines[:bad])
        raise FormatError(f"line {bad + 1}: expected 6 comma-separated numbers "
                          "(x,y,z,nx,ny,nz)", path=path, offset=offset)
    return values.reshape(-1, 6).astype(np.float32)


def normalize_unit_sphere(points: np.ndarray) -> np.ndarray:
    """float32 copy of points [N, C>=3] with xyz centred on their mean and divided by the
    largest norm (PointNet++ `pc_normalize`, Pointcept `NormalizeCoord`; float64 inside);
    other columns unchanged. Raises FormatError (no path) when all points coincide."""
    xyz = points[:, :3].astype(np.float64)
    xyz -= xyz.mean(axis=0)
    scale = np.sqrt((xyz * xyz).sum(axis=1)).max() if len(xyz) else 0.0
    if not scale > 0:
        raise FormatError("degenerate shape: all points coincide")
    out = points.astype(np.float32)
    out[:, :3] = xyz / scale
    return out


def to_up_axis(points: np.ndarray, src: str, dst: str) -> np.ndarray:
    """points [N, C] with xyz (and normals in columns 3-5) rotated from up-axis `src` to
    `dst` ("y" or "z"): z-up -> y-up is (x, y, z) -> (y, z, x), y-up -> z-up its inverse."""
    if src == dst:
        return points
    perm = [1, 2, 0] if (src, dst) == ("z", "y") else [2, 0, 1]
    out = points.copy()
    out[:, :3] = points[:, perm]
    if points.shape[1] >= 6:
        out[:, 3:6] = points[:, [3 + p for p in perm]]
    return out


def detect_layout(root: Path, layout: str = "auto") -> tuple[str, Path]:
    """(layout, folder) of the ModelNet40 copy at root, or in the archive's folder below it."""
    layouts = LAYOUTS if layout == "auto" else (layout,)
    for name in layouts:
        for base in (root, root / LAYOUT_DIRS[name]):
            if _looks_like(name, base):
                return name, base
    expect = {"normal_resampled": "modelnet40_train.txt / modelnet40_test.txt",
              "hdf5": "ply_data_*.h5", "off": "<class>/{train,test}/*.off"}
    raise DatasetError("no ModelNet40 " + (f"{layout} layout" if layout != "auto" else "layout")
                       + " found: expected " + " or ".join(expect[n] for n in layouts)
                       + " here or in " + " or ".join(LAYOUT_DIRS[n] + "/" for n in layouts),
                       path=root)


def _looks_like(layout: str, base: Path) -> bool:
    if layout == "normal_resampled":
        return any((base / f"modelnet40_{s}.txt").is_file() for s in SPLITS)
    if layout == "hdf5":
        return any(base.glob("ply_data_*.h5"))
    return any((base / c / s).is_dir() for c in CLASSES for s in SPLITS)


@DATASETS.register("modelnet40")
class ModelNet40Loader(Loader):
    """Records: `id` (shape id such as "airplane_0001"; HDF5: "ply_data_test0/0042"),
    `points` float32 [N, 6] (x, y, z in the unit sphere, unit normals; [N, 3] for HDF5
    files without `normal`), N = min(num_points, points available), `label` int (index
    into `CLASSES`) and `class_name` str."""

    name = "modelnet40"
    kind = "points"
    splits = SPLITS
    classes = CLASSES
    # Unit sphere plus one 0.01 voxel each side: svc's grid is half-open, so a point at
    # exactly +1 (or 1 + 1 ulp after float32 rounding) would otherwise be dropped.
    # max_points_per_voxel 8: FPS keeps points apart; of 8192 FPS points of the sample
    # meshes at most 5 share a 0.01 voxel, so every point counts in its voxel's mean.
    default_params = {"svc": {"voxel_size": (0.01, 0.01, 0.01),
                              "point_range": (-1.01, -1.01, -1.01, 1.01, 1.01, 1.01),
                              "max_points_per_voxel": 8,
                              # normals: spikes 0..D over [-1, 1]
                              "feature_range": (-1.0, 1.0)}}
    cli_options = {
        "layout": (str, "auto (default), normal_resampled, hdf5 or off"),
        "num_points": (int, "points per shape, at most (default 8192 as E-3DSNN; 0: all)"),
        "sampling": (str, "how num_points are chosen: fps (default; Pointcept "
                          "uniform_sampling) or first (PointNet++ default)"),
        "up_axis": (str, "up axis of the output: y (default; PointNet layouts) or z (meshes); "
                         "the other layouts are rotated to it")}

    def __init__(self, root, split: str = "train", layout: str = "auto",
                 num_points: int = 8192, sampling: str = "fps", up_axis: str = "y"):
        if layout not in ("auto",) + LAYOUTS:
            raise ConfigError(f"--layout must be auto or one of {', '.join(LAYOUTS)}, "
                              f"got {layout!r}")
        if int(num_points) < 0:
            raise ConfigError(f"--num-points must be >= 0, got {num_points}")
        if sampling not in SAMPLINGS:
            raise ConfigError(f"--sampling must be fps or first, got {sampling!r}")
        if up_axis not in ("y", "z"):
            raise ConfigError(f"--up-axis must be y or z, got {up_axis!r}")
        super().__init__(root, split, layout=layout, num_points=int(num_points),
                         sampling=sampling, up_axis=up_axis)
        self.layout, self.base = detect_layout(self.root, layout)

    def describe(self) -> dict:
        d = dict(self.options, detected_layout=self.layout)
        if self.layout == "off":
            import open3d as o3d
            d["mesh_sampler"] = f"open3d {o3d.__version__} sample_points_uniformly"
        return d

    # -- listing ------------------------------------------------------------------------

    def items(self) -> list:
        return {"normal_resampled": self._resampled_items, "hdf5": self._hdf5_items,
                "off": self._off_items}[self.layout]()

    def _resampled_items(self) -> list[str]:
        listing = self.base / f"modelnet40_{self.split}.txt"
        if not listing.is_file():
            raise DatasetError(f"modelnet40_{self.split}.txt is missing", path=self.base)
        ids = listing.read_text().split()
        for sid in ids:
            if _class_of(sid) not in CLASSES:
                raise DatasetError(f"shape id {sid!r} names no ModelNet40 class", path=listing)
        self._check_shape_names(self.base / "modelnet40_shape_names.txt")
        return ids

    def _hdf5_items(self) -> list[tuple[str, int]]:
        import h5py
        listing = self.base / f"{self.split}_files.txt"
        if listing.is_file():
            names = [Path(s).name for s in listing.read_text().split()]
        else:
            names = sorted(p.name for p in self.base.glob(f"ply_data_{self.split}*.h5"))
            if not names:
                raise DatasetError(f"no {self.split}_files.txt and no ply_data_{self.split}*.h5",
                                   path=self.base)
            log.warning("%s: no %s_files.txt; using %s", self.base, self.split, ", ".join(names))
        self._check_shape_names(self.base / "shape_names.txt")
        items = []
        for name in names:
            path = self.base / name
            if not path.is_file():
                raise DatasetError(f"{name} (listed in {self.split}_files.txt) is missing",
                                   path=path)
            try:
                with h5py.File(path, "r") as f:
                    n = _check_h5(f, path)
            except OSError as e:
                raise FormatError(f"not a readable HDF5 file ({e})", path=path) from None
            items += [(name, i) for i in range(n)]
        return items

    def _off_items(self) -> list[str]:
        items, missing = [], []
        for c in CLASSES:
            folder = self.base / c / self.split
            if folder.is_dir():
                items += [f"{c}/{self.split}/{p.name}" for p in sorted(folder.glob("*.off"))]
            else:
                missing.append(c)
        if missing:
            log.warning("%s: %d of 40 classes have no %s/ folder; skipped: %s", self.base,
                        len(missing), self.split, ", ".join(missing))
        return items

    def _check_shape_names(self, path: Path) -> None:
        """Labels index `CLASSES`: the file's first 40 names must be those."""
        if path.is_file() and tuple(path.read_text().split()[:40]) != CLASSES:
            raise DatasetError("shape names differ from ModelNet40's 40 alphabetical classes",
                               path=path)

    # -- loading ------------------------------------------------------------------------

    def item_id(self, item) -> str:
        if self.layout == "hdf5":
            return f"{Path(item[0]).stem}/{item[1]:04d}"
        if self.layout == "off":
            return Path(item).name[:-4]
        return item

    def source_files(self, item) -> list[Path]:
        if self.layout == "hdf5":
            return [self.base / item[0]]
        if self.layout == "off":
            return [self.base / item]
        return [self.base / _class_of(item) / f"{item}.txt"]

    def load(self, item) -> dict:
        sid = self.item_id(item)
        path = self.source_files(item)[0]
        if self.layout == "hdf5":
            points, label = self._read_h5(path, item[1])
        else:
            cls = _class_of(sid) if self.layout == "normal_resampled" else item.split("/")[0]
            label = CLASSES.index(cls)
            if self.layout == "off":
                vertices, triangles = read_off(path)
                try:
                    points = sample_mesh(vertices, triangles, MESH_POINTS,
                                         zlib.crc32(sid.encode()) & 0x7FFFFFFF)
                except FormatError as e:
                    raise FormatError(e.message, path=path) from None
            else:
                points = read_resampled(path)
        n = self.options["num_points"]
        if 0 < n < len(points):
            if self.options["sampling"] == "fps":
                points = points[farthest_point_sample(points[:, :3], n)]
            else:
                points = points[:n]
        try:
            points = normalize_unit_sphere(points)
        except FormatError as e:
            raise FormatError(e.message, path=path) from None
        points = to_up_axis(points, NATIVE_UP[self.layout], self.options["up_axis"])
        return {"id": sid, "points": points, "label": label, "class_name": CLASSES[label]}

    def _read_h5(self, path: Path, index: int) -> tuple[np.ndarray, int]:
        import h5py
        try:
            with h5py.File(path, "r") as f:
                _check_h5(f, path)
                label = int(np.asarray(f["label"][index]).reshape(-1)[0])
                points = np.asarray(f["data"][index], np.float32)
                if "normal" in f:
                    points = np.concatenate([points, np.asarray(f["normal"][index],
                                                                np.float32)], axis=1)
        except FileNotFoundError:
            raise DatasetError("HDF5 file is missing", path=path) from None
        except OSError as e:
            raise FormatError(f"not a readable HDF5 file ({e})", path=path) from None
        if not 0 <= label < len(CLASSES):
            raise FormatError(f"label {label} outside 0..39", path=path)
        if not np.isfinite(points).all():
            raise FormatError("non-finite coordinate", path=path)
        return points, label


def _class_of(shape_id: str) -> str:
    """"night_stand_0001" -> "night_stand" (Pointcept: all but the last `_` field)."""
    return shape_id.rsplit("_", 1)[0]


def _check_h5(f, path: Path) -> int:
    """Number of shapes in an open PointNet HDF5 file, after checking its datasets."""
    for key in ("data", "label"):
        if key not in f:
            raise FormatError(f"no '{key}' dataset", path=path)
    data, label = f["data"], f["label"]
    if data.ndim != 3 or data.shape[2] != 3:
        raise FormatError(f"'data' has shape {data.shape}, expected (S, P, 3)", path=path)
    if label.shape not in ((data.shape[0],), (data.shape[0], 1)):
        raise FormatError(f"'label' has shape {label.shape}, expected ({data.shape[0]},) or "
                          f"({data.shape[0]}, 1)", path=path)
    if "normal" in f and f["normal"].shape != data.shape:
        raise FormatError(f"'normal' has shape {f['normal'].shape}, expected {data.shape}",
                          path=path)
    return data.shape[0]
