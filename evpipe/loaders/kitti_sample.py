"""SYNTHETIC KITTI-layout sample, generated deterministically for `evpipe convert kitti`
without `--root`.

Each frame is a Velodyne HDL-64E-like scan (64 lasers, +2.0 to -24.9 deg elevation,
0.2 deg azimuth steps, sensor 1.73 m above a flat ground) ray-cast against the ground,
a few buildings and box-shaped cars, pedestrians and cyclists, with matching label_2
lines, a calib file (the values of a real KITTI drive, 2011_09_26) and a PNG whose size
alternates between 1242x375 and 1224x370 as real frames do. It is NOT sensor data.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from ..io.kitti import KittiCalib, write_velodyne

SAMPLE_VERSION = 1
SPLIT_FRAMES = {"train": 6, "val": 2, "test": 2}
LIDAR_HEIGHT = 1.73
MAX_RANGE = 80.0
_CALIB = KittiCalib(
    P0=np.array([[721.5377, 0, 609.5593, 0], [0, 721.5377, 172.854, 0], [0, 0, 1, 0]]),
    P1=np.array([[721.5377, 0, 609.5593, -387.5744], [0, 721.5377, 172.854, 0], [0, 0, 1, 0]]),
    P2=np.array([[721.5377, 0, 609.5593, 44.85728], [0, 721.5377, 172.854, 0.2163791],
                 [0, 0, 1, 0.002745884]]),
    P3=np.array([[721.5377, 0, 609.5593, -339.5242], [0, 721.5377, 172.854, 2.199936],
                 [0, 0, 1, 0.002729905]]),
    R0_rect=np.array([[0.9999239, 0.00983776, -0.007445048], [-0.009869795, 0.9999421, -0.004278459],
                      [0.007402527, 0.004351614, 0.9999631]]),
    Tr_velo_to_cam=np.array([[0.007533745, -0.9999714, -0.000616602, -0.004069766],
                             [0.01480249, 0.0007280733, -0.9998902, -0.07631618],
                             [0.9998621, 0.00752379, 0.01480755, -0.2717806]]),
    Tr_imu_to_velo=np.array([[0.9999976, 0.0007553071, -0.002035826, -0.8086759],
                             [-0.0007854027, 0.9998898, -0.01482298, 0.3195559],
                             [0.002024406, 0.01482454, 0.9998881, -0.7997231]]))
# (type, (l, w, h) mean, reflectance)
_OBJECTS = (("Car", (3.9, 1.6, 1.5), 0.55), ("Pedestrian", (0.8, 0.6, 1.75), 0.3),
            ("Cyclist", (1.76, 0.6, 1.73), 0.4))


def cache_dir() -> Path:
    """`$EVPIPE_CACHE`, else `$XDG_CACHE_HOME/evpipe`, else `~/.cache/evpipe`."""
    if os.environ.get("EVPIPE_CACHE"):
        return Path(os.environ["EVPIPE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "evpipe"


def sample_root() -> Path:
    """Path of the synthetic sample, generated on first use (atomically)."""
    root = cache_dir() / f"kitti-synthetic-v{SAMPLE_VERSION}"
    if not (root / "SYNTHETIC.txt").is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".kitti-synthetic-", dir=root.parent))
        try:
            make_kitti_sample(tmp)
            try:
                os.rename(tmp, root)
            except OSError:
                if not (root / "SYNTHETIC.txt").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _ray_box(origin_z, dirs, box):
    """Distance along unit `dirs` [R, 3] from (0, 0, origin_z) to a yawed box, inf if missed."""
    cx, cy, cz, l, w, h, yaw = box
    c, s = np.cos(yaw), np.sin(yaw)
    o = np.array([-cx * c - cy * s, cx * s - cy * c, origin_z - cz])
    d = np.stack([dirs[:, 0] * c + dirs[:, 1] * s, -dirs[:, 0] * s + dirs[:, 1] * c, dirs[:, 2]], 1)
    half = np.array([l, w, h]) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-half - o) / d
        t2 = (half - o) / d
    tmin = np.nanmax(np.minimum(t1, t2), axis=1)
    tmax = np.nanmin(np.maximum(t1, t2), axis=1)
    hit = (tmax >= tmin) & (tmin > 0)
    return np.where(hit, tmin, np.inf)


def _scan(rng: np.random.Generator, boxes: list, reflect: list) -> np.ndarray:
    elev = np.deg2rad(np.linspace(2.0, -24.9, 64))
    azim = np.deg2rad(np.arange(0, 360, 0.2))
    el, az = np.meshgrid(elev, azim, indexing="ij")
    dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)
    with np.errstate(divide="ignore"):
        ground = np.where(dirs[:, 2] < 0, -LIDAR_HEIGHT / dirs[:, 2], np.inf)
    dist, refl = ground, np.full(len(dirs), 0.25)
    for box, r in zip(boxes, reflect):
        d = _ray_box(0.0, dirs, box)
        closer = d < dist
        dist = np.where(closer, d, dist)
        refl = np.where(closer, r, refl)
    keep = dist < MAX_RANGE
    dist = dist[keep] + rng.normal(0, 0.02, keep.sum())
    pts = dirs[keep] * dist[:, None]
    refl = np.clip(refl[keep] + rng.normal(0, 0.05, keep.sum()), 0, 0.99)
    return np.concatenate([pts, refl[:, None]], 1).astype(np.float32)


def _frame_objects(rng: np.random.Generator) -> tuple[list, list, list, list]:
    """Object boxes (LiDAR frame), their types and reflectances, plus static buildings."""
    boxes, types, refl = [], [], []
    for _ in range(rng.integers(3, 7)):
        kind, (l, w, h), r = _OBJECTS[rng.choice(3, p=[0.7, 0.15, 0.15])]
        for _attempt in range(20):
            x = rng.uniform(6, 45)
            y = rng.uniform(-0.45, 0.45) * x
            if all(np.hypot(x - b[0], y - b[1]) > 6 for b in boxes):
                break
        scale = rng.uniform(0.9, 1.1)
        bl, bw, bh = l * scale, w * scale, h * scale
        boxes.append((x, y, -LIDAR_HEIGHT + bh / 2, bl, bw, bh, rng.uniform(-np.pi, np.pi)))
        types.append(kind)
        refl.append(r)
    buildings = [(rng.uniform(20, 60), side * rng.uniform(18, 25), 3.0, rng.uniform(10, 30), 6.0,
                  9.5, rng.uniform(-0.1, 0.1)) for side in (-1, 1)]
    return boxes, types, refl, buildings


def _label_lines(boxes, types, calib: KittiCalib, image_size) -> list[str]:
    rect = calib.velo_to_rect()
    lines = []
    for (x, y, z, l, w, h, yaw), kind in zip(boxes, types):
        bottom = rect @ np.array([x, y, z - h / 2, 1.0])
        ry = float(np.arctan2(np.sin(-yaw - np.pi / 2), np.cos(-yaw - np.pi / 2)))
        alpha = float(-np.arctan2(-y, x) + ry)
        alpha = float(np.arctan2(np.sin(alpha), np.cos(alpha)))
        cs, sn = np.cos(yaw), np.sin(yaw)
        corners = np.array([[sx * l / 2, sy * w / 2, sz * h / 2] for sx in (-1, 1)
                            for sy in (-1, 1) for sz in (-1, 1)])
        corners = corners @ np.array([[cs, sn, 0], [-sn, cs, 0], [0, 0, 1]]) + (x, y, z)
        uvw = calib.velo_to_image() @ np.c_[corners, np.ones(8)].T
        u, v = uvw[0] / uvw[2], uvw[1] / uvw[2]
        full = (u.max() - u.min()) * (v.max() - v.min())
        u1, v1 = np.clip([u.min(), v.min()], 0, None)
        u2, v2 = min(u.max(), image_size[0] - 1), min(v.max(), image_size[1] - 1)
        inside = max(u2 - u1, 0) * max(v2 - v1, 0)
        trunc = float(np.clip(1 - inside / full, 0, 1)) if full > 0 else 1.0
        lines.append(f"{kind} {trunc:.2f} 0 {alpha:.2f} {u1:.2f} {v1:.2f} {u2:.2f} {v2:.2f} "
                     f"{h:.2f} {w:.2f} {l:.2f} {bottom[0]:.2f} {bottom[1]:.2f} {bottom[2]:.2f} "
                     f"{ry:.2f}")
    lines.append("DontCare -1 -1 -10 500.00 170.00 560.00 190.00 -1 -1 -1 -1000 -1000 -1000 -10")
    return lines


def _write_png(path: Path, gray: np.ndarray) -> None:
    """8-bit greyscale PNG, written with zlib only."""
    h, w = gray.shape
    raw = b"".join(b"\x00" + gray[r].tobytes() for r in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(
            ">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def _depth_image(points: np.ndarray, calib: KittiCalib, size) -> np.ndarray:
    w, h = size
    img = np.zeros((h, w), np.uint8)
    uvw = calib.velo_to_image() @ np.c_[points[:, :3], np.ones(len(points))].T
    ok = uvw[2] > 0.1
    u = (uvw[0, ok] / uvw[2, ok]).astype(int)
    v = (uvw[1, ok] / uvw[2, ok]).astype(int)
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    img[v[inside], u[inside]] = np.clip(255 - 3 * uvw[2, ok][inside], 40, 255).astype(np.uint8)
    return img


def _write_calib(path: Path, calib: KittiCalib) -> None:
    rows = []
    for key in ("P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo"):
        rows.append(f"{key}: " + " ".join(f"{v:.12e}" for v in getattr(calib, key).ravel()))
    path.write_text("\n".join(rows) + "\n\n")


def make_kitti_sample(root: str | os.PathLike, seed: int = 0) -> Path:
    """Write the synthetic sample (train 6, val 2, test 2 frames) under `root`."""
    root = Path(root)
    ids = {"train": [], "val": [], "test": []}
    n = 0
    for split, count in SPLIT_FRAMES.items():
        sub = root / ("testing" if split == "test" else "training")
        for d in ("velodyne", "calib", "image_2") + (() if split == "test" else ("label_2",)):
            (sub / d).mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            fid = f"{len(list((sub / 'velodyne').iterdir())):06d}"
            rng = np.random.default_rng([seed, n])
            boxes, types, refl, buildings = _frame_objects(rng)
            points = _scan(rng, boxes + buildings, refl + [0.15] * len(buildings))
            size = (1242, 375) if n % 2 == 0 else (1224, 370)
            write_velodyne(sub / "velodyne" / f"{fid}.bin", points)
            _write_calib(sub / "calib" / f"{fid}.txt", _CALIB)
            _write_png(sub / "image_2" / f"{fid}.png", _depth_image(points, _CALIB, size))
            if split != "test":
                (sub / "label_2" / f"{fid}.txt").write_text(
                    "\n".join(_label_lines(boxes, types, _CALIB, size)) + "\n")
            ids[split].append(fid)
            n += 1
    (root / "ImageSets").mkdir(exist_ok=True)
    for split in ("train", "val", "test"):
        (root / "ImageSets" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids[split]))
    (root / "ImageSets" / "trainval.txt").write_text(
        "".join(f"{i}\n" for i in ids["train"] + ids["val"]))
    (root / "SYNTHETIC.txt").write_text(
        "SYNTHETIC KITTI-layout sample generated by evpipe (evpipe/loaders/kitti_sample.py).\n"
        "Ray-cast HDL-64E-like scans of box-shaped objects; not sensor data.\n")
    return root
