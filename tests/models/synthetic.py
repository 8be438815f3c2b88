"""Procedurally generated dataset trees for the learning tests, in the layouts the
loaders read, so they go through `evpipe convert` like real data.

- `write_shapes_tree`: ModelNet40 `modelnet40_normal_resampled` text layout
  (`<class>/<class>_NNNN.txt` with `x,y,z,nx,ny,nz` lines, `modelnet40_{train,test}.txt`,
  `modelnet40_shape_names.txt`) of four primitive solids sampled on their surfaces, with
  random rotation and scale. The loader labels shapes by ModelNet40 folder name, so the
  primitives are stored under ModelNet40 class names (`SHAPE_CLASSES`).
- `write_motion_tree`: N-MNIST `.bin` layout (`Train/<digit>/*.bin`, `Test/<digit>/*.bin`,
  34x34 sensor, 5-byte records) of a blob moving left, right, up or in a circle, with
  background noise, random start, speed and size.

Everything is drawn from `numpy.random.default_rng(seed)`: equal seeds give equal bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# primitive -> ModelNet40 folder it is stored under (labels come from the folder name).
SHAPE_CLASSES = {"box": "glass_box", "sphere": "bowl", "cylinder": "bottle", "cone": "cone"}
MOTION_CLASSES = ("left", "right", "up", "circle")  # stored under digits 0, 1, 2, 3
SENSOR = 34


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform random rotation matrix [3, 3] (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _box(rng, n):
    """Points and outward normals [n, 3] on a box with half-sizes in [0.6, 1]."""
    half = rng.uniform(0.6, 1.0, 3)
    areas = np.array([half[1] * half[2], half[0] * half[2], half[0] * half[1]]).repeat(2)
    face = rng.choice(6, n, p=areas / areas.sum())
    axis, sign = face // 2, np.where(face % 2, 1.0, -1.0)
    p = rng.uniform(-1, 1, (n, 3)) * half
    p[np.arange(n), axis] = sign * half[axis]
    normals = np.zeros((n, 3))
    normals[np.arange(n), axis] = sign
    return p, normals


def _sphere(rng, n):
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v, v.copy()


def _cylinder(rng, n):
    """Closed cylinder along z, radius 1, half-height in [0.7, 1.4]."""
    h = rng.uniform(0.7, 1.4)
    side, cap = 2 * np.pi * 2 * h, 2 * np.pi
    on_side = rng.random(n) < side / (side + cap)
    a = rng.uniform(0, 2 * np.pi, n)
    r = np.where(on_side, 1.0, np.sqrt(rng.random(n)))
    z = np.where(on_side, rng.uniform(-h, h, n), np.where(rng.random(n) < 0.5, -h, h))
    p = np.stack([r * np.cos(a), r * np.sin(a), z], 1)
    normals = np.where(on_side[:, None], np.stack([np.cos(a), np.sin(a), 0 * a], 1),
                       np.stack([0 * a, 0 * a, np.sign(z)], 1))
    return p, normals


def _cone(rng, n):
    """Closed cone along z: base radius 1 at z = 0, apex at height in [1.2, 2.2]."""
    h = rng.uniform(1.2, 2.2)
    slant = np.hypot(1.0, h)
    side, base = np.pi * slant, np.pi
    on_side = rng.random(n) < side / (side + base)
    a = rng.uniform(0, 2 * np.pi, n)
    u = np.sqrt(rng.random(n))  # area-uniform radius fraction
    z = np.where(on_side, h * (1 - u), 0.0)
    p = np.stack([u * np.cos(a), u * np.sin(a), z], 1)
    side_n = np.stack([h * np.cos(a), h * np.sin(a), np.ones(n)], 1) / slant
    normals = np.where(on_side[:, None], side_n, np.array([0.0, 0.0, -1.0]))
    return p, normals


_SHAPES = {"box": _box, "sphere": _sphere, "cylinder": _cylinder, "cone": _cone}


def shape_points(kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """float64 [n, 6] (x, y, z, nx, ny, nz): `n` surface points of primitive `kind` with
    unit normals, randomly rotated, scaled by U[0.5, 2] and shifted by U[-1, 1] per axis."""
    p, normals = _SHAPES[kind](rng, n)
    rot = _random_rotation(rng)
    return np.concatenate([(p @ rot.T) * rng.uniform(0.5, 2.0) + rng.uniform(-1, 1, 3),
                           normals @ rot.T], 1)


def write_shapes_tree(root, n_train: int, n_test: int, n_points: int = 1024,
                      seed: int = 0) -> Path:
    """modelnet40_normal_resampled tree at `root` with `n_train` / `n_test` shapes per
    primitive of `SHAPE_CLASSES`; returns root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    splits = {"train": [], "test": []}
    for kind, folder in SHAPE_CLASSES.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n_train + n_test):
            sid = f"{folder}_{i + 1:04d}"
            np.savetxt(root / folder / f"{sid}.txt", shape_points(kind, rng, n_points),
                       fmt="%.6f", delimiter=",")
            splits["train" if i < n_train else "test"].append(sid)
    for split, ids in splits.items():
        (root / f"modelnet40_{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def nmnist_bytes(events: np.ndarray) -> bytes:
    """N-MNIST `.bin` records (formats.md §8) of int64 columns [N, 4] (t us, x, y, p)."""
    t, x, y, p = events.T
    rec = np.stack([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF], axis=1)
    return rec.astype(np.uint8).tobytes()


def motion_events(kind: str, rng: np.random.Generator, duration_us: int = 300_000,
                  rate_per_ms: float = 10.0, noise: float = 0.1,
                  sigma=(0.6, 1.2)) -> np.ndarray:
    """int64 [N, 4] (t us, x, y, p) sorted by t: a bright Gaussian blob (sigma U[*sigma]
    px) moving as `kind` over `duration_us` on the 34x34 sensor, `rate_per_ms` events per
    ms. Lines cover 12-20 px from a random start; circles have radius 6-10 px, a random
    phase and direction. As a DVS sees it, the event rate at offset d from the centre is
    proportional to |dI/dt| = I(d) |d . v| / sigma^2: along the velocity the offset is
    Rayleigh distributed with a random sign, the polarity (1 = ON ahead of the blob, 0 =
    OFF behind it), across it Gaussian. A fraction `noise` of extra events is uniform in
    space, time and polarity."""
    n = int(rate_per_ms * duration_us / 1000)
    t = np.sort(rng.integers(0, duration_us, n))
    s = t / duration_us
    if kind == "circle":
        radius, phase = rng.uniform(6, 10), rng.uniform(0, 2 * np.pi)
        turn = rng.choice([-1.0, 1.0]) * 2 * np.pi
        cx, cy = rng.uniform(3 + radius, SENSOR - 4 - radius, 2)
        ang = phase + turn * s
        centre = np.stack([cx + radius * np.cos(ang), cy + radius * np.sin(ang)], 1)
        ahead = np.stack([-np.sin(ang), np.cos(ang)], 1) * np.sign(turn)
    else:
        direction = np.array({"left": (-1.0, 0.0), "right": (1.0, 0.0),
                              "up": (0.0, -1.0)}[kind])
        length = rng.uniform(12, 20)
        lo = np.where(direction < 0, 3 + length, 3)
        hi = np.where(direction > 0, SENSOR - 4 - length, SENSOR - 4)
        centre = rng.uniform(lo, hi) + np.outer(s, direction) * length
        ahead = np.broadcast_to(direction, centre.shape)
    sd = rng.uniform(*sigma)
    p = rng.integers(0, 2, n)
    along = (2 * p - 1) * sd * np.sqrt(-2 * np.log1p(-rng.random(n)))
    across = rng.normal(0, sd, n)
    side = np.stack([-ahead[:, 1], ahead[:, 0]], 1)
    xy = np.rint(centre + along[:, None] * ahead + across[:, None] * side)
    xy = np.clip(xy, 0, SENSOR - 1).astype(np.int64)
    m = int(noise * n)
    events = np.concatenate([np.stack([t, xy[:, 0], xy[:, 1], p], 1),
                             np.stack([rng.integers(0, duration_us, m),
                                       rng.integers(0, SENSOR, m), rng.integers(0, SENSOR, m),
                                       rng.integers(0, 2, m)], 1)])
    return events[np.argsort(events[:, 0], kind="stable")]


def write_motion_tree(root, n_train: int, n_test: int, seed: int = 0, **motion) -> Path:
    """N-MNIST tree at `root` with `n_train` / `n_test` recordings per class of
    `MOTION_CLASSES` (digit folders 0-3; 4-9 exist and are empty), `motion` passed to
    `motion_events`; returns root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in (("Train", n_train), ("Test", n_test)):
        for digit in range(10):
            (root / split / str(digit)).mkdir(parents=True, exist_ok=True)
        for digit, kind in enumerate(MOTION_CLASSES):
            for i in range(n):
                (root / split / str(digit) / f"{i:05d}.bin").write_bytes(
                    nmnist_bytes(motion_events(kind, rng, **motion)))
    return root
