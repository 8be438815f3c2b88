"""`evpipe view`: pictures of event windows, point clouds and their spike encodings.

One `render_<encoding>` function per encoding takes the encoding's arrays (shapes as in
DESIGN.md) and returns a `matplotlib.figure.Figure` drawn with the Agg canvas: no pyplot,
no display, no change to the caller's matplotlib backend. `render_record` picks the right
renderer for a record; `view` reads an event file, a KITTI scan or a shard sample, encodes
on the fly when needed and writes the picture (what the CLI runs).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize, PowerNorm, TwoSlopeNorm
from matplotlib.figure import Figure

from .errors import ConfigError, DatasetError, FormatError
from .events import EVENT_DTYPE, SensorSize, as_sensor_size

DEFAULT_WINDOW_US = 50_000
DPI = 110
MAX_PANELS = 10
PANEL_PX = 200
MAX_SCATTER = 20_000
BEV_MAX_CELLS = 800
ON_RGB = np.array([0.85, 0.12, 0.10])
OFF_RGB = np.array([0.10, 0.32, 0.90])
# Record field holding each encoding's array (as the encoders in evpipe.encoders name it).
FIELDS = {"events": "events", "frames": "frames", "voxel_grid": "voxel_grid",
          "stacked_histogram": "stacked_histogram", "time_surface": "time_surface",
          "poisson": "spikes", "event_cloud": "points", "svc": "coords"}
SAVE_SUFFIXES = (".png", ".svg", ".pdf")


# -- figure helpers ----------------------------------------------------------------------

def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _out_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix.lower() not in SAVE_SUFFIXES:
        raise ConfigError(f"output must end in {', '.join(SAVE_SUFFIXES)}, got {path.name!r}")
    return path


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write `fig` to `path` (.png, .svg or .pdf by suffix), creating parent folders."""
    path = _out_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _robust_max(a: np.ndarray, q: float = 99.0) -> float:
    """q-th percentile of the nonzero |values| (1.0 when all are zero): one hot pixel does
    not wash out a panel."""
    nz = np.abs(a[a != 0])
    return float(np.percentile(nz, q)) if nz.size else 1.0


def _panel_indices(n: int, limit: int = MAX_PANELS) -> np.ndarray:
    """At most `limit` indices evenly spread over range(n), first and last included."""
    return np.unique(np.linspace(0, n - 1, min(n, limit)).round().astype(int))


def _check(a, ndim: int, what: str, shape: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != ndim or a.size == 0:
        raise ConfigError(f"{what} must be {shape}, got shape {list(a.shape)}")
    return a


def _pool(a: np.ndarray, f: int, reduce: str) -> np.ndarray:
    """Sum or max over f x f pixel blocks of the last two axes (zero-padded)."""
    if f == 1:
        return a
    h, w = a.shape[-2:]
    pad = [(0, 0)] * (a.ndim - 2) + [(0, -h % f), (0, -w % f)]
    b = np.pad(a, pad)
    b = b.reshape(*a.shape[:-2], b.shape[-2] // f, f, b.shape[-1] // f, f)
    return b.sum(axis=(-3, -1)) if reduce == "sum" else b.max(axis=(-3, -1))


def _image_rows(rows: list[tuple[str, np.ndarray, str]], col_labels: list[str], title: str,
                cbar_label: str, reduce: str, scale: str = "linear",
                vmax: float | None = None) -> Figure:
    """Grid of images: one row per (label, [P, H, W] stack, colormap), one colorbar per
    row. Images wider than PANEL_PX are reduced over pixel blocks first (`reduce` "sum" or
    "max") so that single-pixel events stay visible; the colour range is shared by all
    panels: [0, vmax] (default: 99th percentile of nonzero values), linear or "sqrt"
    (counts: single events stay visible next to hot pixels), or "symmetric" [-vmax, vmax]
    around a white 0."""
    h, w = rows[0][1].shape[1:]
    f = max(1, math.ceil(w / PANEL_PX))
    stacks = [_pool(stack, f, reduce) for _, stack, _ in rows]
    top = vmax if vmax is not None else _robust_max(np.stack(stacks))
    norm = {"linear": Normalize(0.0, top), "sqrt": PowerNorm(0.5, 0.0, top),
            "symmetric": TwoSlopeNorm(0.0, -top, top)}[scale]
    n_cols = len(col_labels)
    panel_w = 1.7
    panel_h = min(max(panel_w * h / w, 0.8), 3.5)
    fig = _figure(n_cols * panel_w + 1.3, len(rows) * panel_h + 0.8)
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    for r, ((label, _, cmap), stack) in enumerate(zip(rows, stacks)):
        for c in range(n_cols):
            ax = axes[r, c]
            im = ax.imshow(stack[c], cmap=cmap, norm=norm, interpolation="nearest",
                           extent=(-0.5, w - 0.5, h - 0.5, -0.5))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col_labels[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
        fig.colorbar(im, ax=axes[r, :], shrink=0.9,
                     label=cbar_label + (f" / {f}x{f} px" if f > 1 and reduce == "sum" else ""))
    fig.suptitle(title, fontsize=10)
    return fig


def _bins_title(name: str, shape, shown: np.ndarray, n: int, unit: str, title: str | None) -> str:
    head = f"{name} {list(shape)}"
    if len(shown) < n:
        head += f", {len(shown)} of {n} {unit}s shown"
    return f"{title}\n{head}" if title else head


# -- event-camera encodings --------------------------------------------------------------

def render_events(events: np.ndarray, sensor_size=None, title: str | None = None) -> Figure:
    """Raw events (EVENT_DTYPE [N], t in us): x-y image (ON red, OFF blue, shade = count)
    and an x-t scatter (t in ms from the first event). `sensor_size` (W, H) defaults to the
    coordinate maxima + 1."""
    ev = np.asarray(events)
    if ev.dtype.names is None or not {"t", "x", "y", "p"} <= set(ev.dtype.names) or not len(ev):
        raise ConfigError(f"events must be a non-empty array with fields t, x, y, p; got "
                          f"{ev.dtype} [{len(ev)}]")
    size = (SensorSize(int(ev["x"].max()) + 1, int(ev["y"].max()) + 1) if sensor_size is None
            else as_sensor_size(sensor_size))
    ev = ev[(ev["x"] < size.width) & (ev["y"] < size.height)]
    if not len(ev):
        raise ConfigError(f"no event lies inside the sensor ({size.width}x{size.height})")
    on = ev["p"] > 0
    counts = np.zeros((2, size.height, size.width))
    np.add.at(counts, (on.astype(np.intp), ev["y"].astype(np.intp), ev["x"].astype(np.intp)), 1)
    total = counts.sum(axis=0)
    # Shade: log count against the 99th percentile; hue: the pixel's ON fraction.
    shade = np.clip(np.log1p(total) / np.log1p(_robust_max(total)), 0, 1)[..., None]
    frac_on = (counts[1] / np.maximum(total, 1))[..., None]
    img = 1 - shade * (1 - (frac_on * ON_RGB + (1 - frac_on) * OFF_RGB))

    aspect = size.width / size.height
    fig = _figure(4.2 * aspect + 4.8, 4.4)
    ax_xy, ax_xt = fig.subplots(1, 2, width_ratios=[aspect, 1.2])
    ax_xy.imshow(img, interpolation="nearest")
    ax_xy.set_xlabel("x (pixel)")
    ax_xy.set_ylabel("y (pixel)")
    ax_xy.set_title("x-y: ON red, OFF blue", fontsize=9)
    pick = np.arange(len(ev))
    if len(ev) > MAX_SCATTER:
        pick = np.sort(np.random.default_rng(0).choice(len(ev), MAX_SCATTER, replace=False))
    sub = ev[pick]
    t_ms = (sub["t"] - ev["t"].min()) / 1e3
    colors = np.where((sub["p"] > 0)[:, None], ON_RGB, OFF_RGB)
    ax_xt.scatter(t_ms, sub["x"], c=colors, s=1.0, linewidths=0, rasterized=True)
    ax_xt.set_xlabel("t (ms)")
    ax_xt.set_ylabel("x (pixel)")
    ax_xt.set_ylim(0, size.width)
    ax_xt.set_title("x-t" + (f" ({MAX_SCATTER} sampled)" if len(ev) > MAX_SCATTER else ""),
                    fontsize=9)
    head = (f"events: {len(ev)} ({int(on.sum())} ON), {size.width}x{size.height}, "
            f"{(ev['t'].max() - ev['t'].min()) / 1e3:.1f} ms")
    fig.suptitle(f"{title}\n{head}" if title else head, fontsize=10)
    return fig


def render_frames(frames: np.ndarray, title: str | None = None) -> Figure:
    """Event frames [n_bins, 2, H, W] (counts; channel 0 OFF, 1 ON): one column per bin,
    rows ON and OFF. Spike-camera frames [n_bins, 1, H, W] give one row of spike counts."""
    a = _check(frames, 4, "frames", "[n_bins, 2 or 1, H, W]").astype(np.float32)
    if a.shape[1] not in (1, 2):
        raise ConfigError(f"frames must be [n_bins, 2 or 1, H, W], got shape {list(a.shape)}")
    idx = _panel_indices(len(a))
    rows = ([("ON", a[idx, 1], "Reds"), ("OFF", a[idx, 0], "Blues")] if a.shape[1] == 2
            else [("spikes", a[idx, 0], "Greys")])
    return _image_rows(rows, [f"bin {i}" for i in idx],
                       _bins_title("frames", a.shape, idx, len(a), "bin", title),
                       "events" if a.shape[1] == 2 else "spikes", "sum", "sqrt")


def render_voxel_grid(grid: np.ndarray, title: str | None = None) -> Figure:
    """Voxel grid float32 [n_bins, H, W] (signed polarity sums): one signed image per bin,
    diverging colormap (red positive / ON, blue negative / OFF)."""
    a = _check(grid, 3, "voxel_grid", "[n_bins, H, W]").astype(np.float32)
    idx = _panel_indices(len(a))
    return _image_rows([("value", a[idx], "RdBu_r")], [f"bin {i}" for i in idx],
                       _bins_title("voxel_grid", a.shape, idx, len(a), "bin", title), "value",
                       "sum", "symmetric")


def render_stacked_histogram(hist: np.ndarray, title: str | None = None) -> Figure:
    """Stacked histogram uint8 [2*n_bins, H, W], channel = p * n_bins + bin (RVT layout):
    one column per bin, rows ON and OFF."""
    a = _check(hist, 3, "stacked_histogram", "[2*n_bins, H, W]")
    if len(a) % 2:
        raise ConfigError(f"stacked_histogram needs an even channel count, got {len(a)}")
    a = a.astype(np.float32).reshape(2, len(a) // 2, *a.shape[1:])
    idx = _panel_indices(a.shape[1])
    rows = [("ON", a[1, idx], "Reds"), ("OFF", a[0, idx], "Blues")]
    return _image_rows(rows, [f"bin {i}" for i in idx],
                       _bins_title("stacked_histogram", hist.shape, idx, a.shape[1], "bin",
                                   title), "events", "sum", "sqrt")


def render_time_surface(surfaces: np.ndarray, title: str | None = None) -> Figure:
    """Time surfaces float32 [K, 2, H, W] in [0, 1]: one column per slice, rows ON and OFF."""
    a = _check(surfaces, 4, "time_surface", "[K, 2, H, W]").astype(np.float32)
    if a.shape[1] != 2:
        raise ConfigError(f"time_surface must be [K, 2, H, W], got shape {list(a.shape)}")
    idx = _panel_indices(len(a))
    rows = [("ON", a[idx, 1], "viridis"), ("OFF", a[idx, 0], "viridis")]
    return _image_rows(rows, [f"slice {i}" for i in idx],
                       _bins_title("time_surface", a.shape, idx, len(a), "slice", title),
                       "exp(-dt / tau)", "max", vmax=max(float(a.max()), 1e-6))


def render_event_cloud(points: np.ndarray, centroids: np.ndarray | None = None, window: int = 0,
                       title: str | None = None) -> Figure:
    """SpikePoint event cloud: 3-D scatter of window `window` of points float32 [W, N, 3]
    (or [N, 3]) as (x', y', t') in [0, 1], coloured by t', with centroids [W, M, 3] (or
    [M, 3]) as larger markers."""
    p = np.asarray(points, np.float32)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[-1] != 3:
        raise ConfigError(f"event_cloud points must be [W, N, 3], got shape "
                          f"{list(np.shape(points))}")
    if p.size == 0:
        raise ConfigError("event_cloud holds no window (each needs more than min_events events)")
    if not 0 <= window < len(p):
        raise ConfigError(f"window {window} out of range: the record has {len(p)} windows")
    pts = p[window]
    fig = _figure(6.4, 5.6)
    ax = fig.add_subplot(projection="3d")
    ax.scatter(pts[:, 0], pts[:, 2], pts[:, 1], c=pts[:, 2], cmap="viridis", s=4,
               linewidths=0, depthshade=False, label=f"{len(pts)} points")
    head = f"event_cloud window {window} of {len(p)}: {len(pts)} points"
    if centroids is not None:
        c = np.asarray(centroids, np.float32)
        c = c[window] if c.ndim == 3 else c
        ax.scatter(c[:, 0], c[:, 2], c[:, 1], color="red", s=12, marker="^", alpha=0.75,
                   linewidths=0, depthshade=False, label=f"{len(c)} centroids")
        head += f", {len(c)} centroids"
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xlabel("x'")
    ax.set_ylabel("t'")
    ax.set_zlabel("y'")
    ax.invert_zaxis()
    fig.suptitle(f"{title}\n{head}" if title else head, fontsize=10)
    return fig


def render_poisson(spikes: np.ndarray, n_neurons: int = 64, title: str | None = None) -> Figure:
    """Rate-coded spikes [T, ...] (0/1): raster of up to `n_neurons` active neurons
    (fixed random sample) over T, and the rate image mean over T (leading axes averaged
    down to 2-D; a 1-D rate is folded into rows; square-root colour scale)."""
    s = np.asarray(spikes)
    if s.ndim < 2 or s.size == 0:
        raise ConfigError(f"poisson spikes must be [T, ...], got shape {list(s.shape)}")
    flat = s.reshape(len(s), -1).astype(np.float32)
    active = np.flatnonzero(flat.any(axis=0))
    pool = active if len(active) else np.arange(flat.shape[1])
    pick = np.sort(np.random.default_rng(0).choice(pool, min(n_neurons, len(pool)),
                                                   replace=False))
    rate = s.astype(np.float32).mean(axis=0)
    if rate.ndim == 1:
        cols = math.ceil(math.sqrt(rate.size))
        rate = np.pad(rate, (0, cols * cols - rate.size), constant_values=np.nan)
        rate = rate.reshape(cols, cols)
    elif rate.ndim > 2:
        rate = rate.reshape(-1, *rate.shape[-2:]).mean(axis=0)
    fig = _figure(10.0, 4.4)
    ax_r, ax_i = fig.subplots(1, 2)
    ax_r.imshow(flat[:, pick].T, cmap="Greys", vmin=0, vmax=1, aspect="auto",
                interpolation="nearest", extent=(-0.5, len(s) - 0.5, len(pick) - 0.5, -0.5))
    ax_r.set_xlabel("timestep")
    ax_r.set_ylabel("neuron (sample)")
    ax_r.set_title(f"raster: {len(pick)} of {len(active)} active neurons", fontsize=9)
    im = ax_i.imshow(rate, cmap="magma", interpolation="nearest",
                     norm=PowerNorm(0.5, 0.0, _robust_max(np.nan_to_num(rate))))
    ax_i.set_title("rate (mean over T)", fontsize=9)
    fig.colorbar(im, ax=ax_i, shrink=0.9, label="spikes / step")
    head = f"poisson {list(s.shape)}, mean rate {float(flat.mean()):.3f}"
    fig.suptitle(f"{title}\n{head}" if title else head, fontsize=10)
    return fig


# -- point clouds ------------------------------------------------------------------------

def render_svc(coords: np.ndarray, voxel_size, point_range, spatial_shape=None,
               spikes: np.ndarray | None = None, boxes: np.ndarray | None = None,
               box_labels=None, color_by: str = "height", title: str | None = None) -> Figure:
    """Bird's-eye view of SVC voxels: coords int32 [M, 3] (z, y, x) on the grid given by
    `voxel_size` (x, y, z metres) and `point_range` (x_min, y_min, z_min, x_max, y_max,
    z_max); axes in metres (LiDAR frame, x forward, y left). Colour: "height" (highest
    occupied voxel centre, m) or "count" (spikes [M, C] summed per column, log scale). Boxes float32
    [K, 7] (x, y, z_centre, l, w, h, yaw) are drawn with their heading and `box_labels`."""
    from .encoders.svc import grid_shape
    c = np.asarray(coords)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ConfigError(f"svc coords must be [M, 3] (z, y, x), got shape {list(c.shape)}")
    if color_by not in ("height", "count"):
        raise ConfigError(f"color_by must be height or count, got {color_by!r}")
    if color_by == "count" and spikes is None:
        raise ConfigError("color_by='count' needs spikes")
    vs = np.asarray(voxel_size, np.float64)
    pr = np.asarray(point_range, np.float64)
    shape = tuple(spatial_shape) if spatial_shape is not None else grid_shape(vs, pr)
    f = max(1, math.ceil(max(shape[1], shape[2]) / BEV_MAX_CELLS))
    ny, nx = math.ceil(shape[1] / f), math.ceil(shape[2] / f)
    cy, cx = c[:, 1].astype(np.intp) // f, c[:, 2].astype(np.intp) // f
    ok = (cy >= 0) & (cy < ny) & (cx >= 0) & (cx < nx)
    bev = np.full((ny, nx), np.nan)
    if color_by == "height":
        z = pr[2] + (c[:, 0] + 0.5) * vs[2]
        fill = np.full((ny, nx), -np.inf)
        np.maximum.at(fill, (cy[ok], cx[ok]), z[ok])
        cmap, label = "viridis", "height of highest voxel (m)"
    else:
        s = np.asarray(spikes).reshape(len(c), -1).sum(axis=1).astype(np.float64)
        fill = np.zeros((ny, nx))
        np.add.at(fill, (cy[ok], cx[ok]), s[ok])
        fill[fill == 0] = -np.inf
        cmap, label = "inferno", "spikes per column (log scale)"
    occupied = np.isfinite(fill)
    bev[occupied] = fill[occupied]
    x1 = pr[0] + nx * f * vs[0]
    y1 = pr[1] + ny * f * vs[1]
    fig = _figure(9.0, 7.4 * (y1 - pr[1]) / (x1 - pr[0]) + 1.0)
    ax = fig.subplots()
    ax.set_facecolor("black")
    top = float(np.nanmax(bev)) if occupied.any() else 1.0
    norm = (Normalize(pr[2], max(top, pr[2] + 1e-6)) if color_by == "height"
            else LogNorm(1.0, max(top, 2.0)))
    im = ax.imshow(bev, origin="lower", extent=(pr[0], x1, pr[1], y1), cmap=cmap, norm=norm,
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.85, label=label)
    n_boxes = 0
    if boxes is not None:
        b = np.asarray(boxes, np.float64).reshape(-1, 7)
        labels = list(box_labels) if box_labels is not None else [None] * len(b)
        for box, name in zip(b, labels):
            if not np.all(np.isfinite(box)):
                continue
            n_boxes += 1
            x, y, _, l, w, _, yaw = box
            ca, sa = math.cos(yaw), math.sin(yaw)
            lx = np.array([l, l, -l, -l, l]) / 2
            ly = np.array([w, -w, -w, w, w]) / 2
            ax.plot(x + lx * ca - ly * sa, y + lx * sa + ly * ca, color="#ff3b30", lw=1.2)
            ax.plot([x, x + l / 2 * ca], [y, y + l / 2 * sa], color="#ff3b30", lw=1.2)
            if name:
                ax.text(x, y + w / 2 + 0.8, str(name), color="white", fontsize=7,
                        ha="center", va="bottom", clip_on=True)
    ax.set_xlim(pr[0], x1)
    ax.set_ylim(pr[1], y1)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m, forward)")
    ax.set_ylabel("y (m, left)")
    head = (f"svc bird's-eye view: {len(c)} voxels, grid (z, y, x) {list(shape)}"
            f"{f', shown at {f}x{f} cells' if f > 1 else ''}, {n_boxes} boxes")
    ax.set_title(f"{title}\n{head}" if title else head, fontsize=10)
    return fig


# -- records -----------------------------------------------------------------------------

def _field(record: dict, encoding: str) -> np.ndarray:
    """The record's main array for `encoding` (FIELDS)."""
    name = FIELDS[encoding]
    if name not in record:
        raise ConfigError(f"{encoding} record has no {name!r} field (fields: "
                          f"{', '.join(sorted(record))})", sample_id=record.get("id"))
    return record[name]


def render_record(encoding: str, record: dict, params: dict | None = None, *,
                  sensor_size=None, color_by: str = "height", box_labels=None,
                  title: str | None = None) -> Figure:
    """Figure for one record of `encoding` (its fields as the encoder or a shard returns
    them). `params` are the encoding parameters (svc needs voxel_size and point_range);
    `sensor_size` (W, H) places raw events."""
    if encoding not in FIELDS:
        raise ConfigError(f"no renderer for encoding {encoding!r}; renderable: "
                          f"{', '.join(sorted(FIELDS))}")
    params = params or {}
    data = _field(record, encoding)
    if encoding == "events":
        return render_events(data, sensor_size, title)
    if encoding == "svc":
        from .encoders.svc import KITTI_POINT_RANGE, KITTI_VOXEL_SIZE, spike_counts
        pr = params.get("point_range", KITTI_POINT_RANGE)
        spikes = record.get("spikes")
        if spikes is None and color_by == "count":
            spikes = spike_counts(record["feats"], pr, params.get("levels", 4))
        return render_svc(data, params.get("voxel_size", KITTI_VOXEL_SIZE), pr,
                          params.get("spatial_shape"), spikes=spikes, boxes=record.get("boxes"),
                          box_labels=box_labels, color_by=color_by, title=title)
    if encoding == "event_cloud":
        return render_event_cloud(data, record.get("centroids"), title=title)
    return {"frames": render_frames, "voxel_grid": render_voxel_grid,
            "stacked_histogram": render_stacked_histogram, "time_surface": render_time_surface,
            "poisson": render_poisson}[encoding](data, title=title)


# -- inputs ------------------------------------------------------------------------------

def read_window(path: str | os.PathLike, t_start_us: int = 0, window_us: int | None = None,
                n_events: int | None = None) -> tuple[np.ndarray, SensorSize, int]:
    """Events of one window of an event file, streamed chunk by chunk.

    The window starts `t_start_us` microseconds after the file's first event and spans
    `window_us` microseconds or `n_events` events (default: 50 ms). Returns (events,
    sensor size, first event's timestamp in us).
    """
    from .io import open_events
    from .io.base import concat_events
    if window_us is not None and n_events is not None:
        raise ConfigError("give window_us or n_events, not both")
    if window_us is None and n_events is None:
        window_us = DEFAULT_WINDOW_US
    if t_start_us < 0:
        raise ConfigError(f"t_start_us must be >= 0, got {t_start_us}")
    if (window_us is not None and window_us < 1) or (n_events is not None and n_events < 1):
        raise ConfigError("window_us and n_events must be >= 1")
    parts, have, t_first = [], 0, None
    with open_events(path) as r:
        size = r.sensor_size
        for b in r.iter_chunks():
            if t_first is None:
                t_first = int(b["t"][0])
                lo = t_first + t_start_us
                hi = None if window_us is None else lo + window_us
            t = b["t"]
            if hi is not None:
                parts.append(b[(t >= lo) & (t < hi)])
                if int(t[-1]) >= hi:
                    break
            else:
                parts.append(b[t >= lo][:n_events - have])
                have += len(parts[-1])
                if have >= n_events:
                    break
    events = concat_events(parts) if parts else np.empty(0, EVENT_DTYPE)
    if not len(events):
        raise ConfigError(f"no events in the window starting {t_start_us} us after the first "
                          "event", path=path)
    return events, size, t_first


def _window_label(events: np.ndarray, t_first: int) -> str:
    t0 = (int(events["t"].min()) - t_first) / 1e3
    t1 = (int(events["t"].max()) - t_first) / 1e3
    return f"{t0:.1f}-{t1:.1f} ms after the first event, {len(events)} events"


def _encode(name: str, params: dict, x, sensor_size, sample_id: str):
    """(record fields, manifest-style params) of `x` encoded with `name`."""
    from .encoders import ENCODINGS, manifest_params
    enc = ENCODINGS.get(name)
    try:
        p = enc.make(**params)
    except TypeError as e:
        raise ConfigError(f"encoding {name!r}: {e}") from None
    return p.encode(x, sensor_size=sensor_size, sample_id=sample_id), manifest_params(p)


def _window_defaults(name: str, params: dict, events: np.ndarray) -> dict:
    """`params` plus what makes one window of events draw well, unless given: event_cloud
    makes the whole window one cloud (window_us None); time_surface cuts it into 5 slices."""
    p = dict(params)
    if name == "event_cloud":
        p.setdefault("window_us", None)
    elif name == "time_surface" and "dt_us" not in p:
        p["dt_us"] = max(1, int(events["t"].max() - events["t"].min()) // 5)
    return p


def _kitti_boxes(scan: Path):
    """(boxes [K, 7] LiDAR frame, class names) from ../label_2 and ../calib next to a KITTI
    scan, or (None, None) when either file is absent."""
    from .io.kitti import read_calib, read_labels
    label = scan.parent.parent / "label_2" / f"{scan.stem}.txt"
    calib = scan.parent.parent / "calib" / f"{scan.stem}.txt"
    if not (label.is_file() and calib.is_file()):
        return None, None
    lab = read_labels(label, read_calib(calib))
    keep = ~lab.dontcare
    return lab.boxes_lidar[keep], list(lab.type[keep])


def _is_shards(path: Path) -> bool:
    """A shard set folder or an evpipe shard .h5 file."""
    if path.is_dir():
        return True
    if path.suffix.lower() not in (".h5", ".hdf5"):
        return False
    from .info import _is_shard_file
    return _is_shard_file(path)


def _is_points_file(path: Path, encoding: str | None) -> bool:
    """A KITTI-style .bin scan: in a `velodyne` folder, or a .bin named with a
    points-only encoding (N-MNIST event files are .bin too)."""
    if path.suffix.lower() != ".bin":
        return False
    if path.parent.name == "velodyne":
        return True
    if encoding is None:
        return False
    from .encoders import ENCODINGS
    return "events" not in ENCODINGS.get(encoding).inputs


def _check_takes(encoding: str, kind: str, path: Path) -> None:
    from .encoders import ENCODINGS
    inputs = ENCODINGS.get(encoding).inputs
    if kind not in inputs:
        raise ConfigError(f"encoding {encoding!r} takes {' or '.join(inputs)}, and this input "
                          f"holds {kind}", path=path)


def view(source: str | os.PathLike, out: str | os.PathLike, encoding: str | None = None,
         params: dict | None = None, *, sample: int = 0, t_start_us: int | None = None,
         window_us: int | None = None, n_events: int | None = None,
         color_by: str = "height") -> Path:
    """Render `source` and write the picture to `out`; returns `out`.

    `source` is an event file (a window of it, see `read_window`, encoded with `encoding`,
    default "events"), a KITTI Velodyne .bin scan (encoded with "svc"; boxes drawn when
    ../label_2 and ../calib hold the frame) or a shard set folder / shard .h5 file (record
    number `sample`, drawn as its stored encoding; a set of raw "events" can also be drawn
    as another event encoding). `params` are encoding parameters for on-the-fly encoding;
    unless given, event_cloud takes the window as one cloud and time_surface cuts it into
    5 slices (`_window_defaults`).
    """
    from .encoders import ENCODINGS
    path = Path(source)
    params = dict(params or {})
    if not path.exists():
        raise FormatError("file not found", path=path)
    _out_path(out)
    if encoding is not None:
        ENCODINGS.get(encoding)
    shards = _is_shards(path)
    points = not shards and _is_points_file(path, encoding)
    if (shards or points) and (t_start_us, window_us, n_events) != (None, None, None):
        raise ConfigError("--t-start-us, --window-us and --n-events apply to event files only",
                          path=path)
    if shards:
        fig = _view_shard(path, encoding, params, sample, color_by)
    elif points:
        from .io.kitti import read_velodyne
        name = encoding or "svc"
        _check_takes(name, "points", path)
        record, full = _encode(name, params, read_velodyne(path), None, path.stem)
        boxes, labels = _kitti_boxes(path)
        if boxes is not None:
            record["boxes"] = boxes
        fig = render_record(name, record, full, color_by=color_by, box_labels=labels,
                            title=path.name)
    else:
        name = encoding or "events"
        _check_takes(name, "events", path)
        events, size, t_first = read_window(path, t_start_us or 0, window_us, n_events)
        record, full = _encode(name, _window_defaults(name, params, events), events, size,
                               path.stem)
        fig = render_record(name, record, full, sensor_size=size, color_by=color_by,
                            title=f"{path.name}: {_window_label(events, t_first)}")
    return save_figure(fig, out)


def _view_shard(path: Path, encoding: str | None, params: dict, sample: int,
                color_by: str) -> Figure:
    from .shards import ShardDataset
    ds = ShardDataset(path, allow_incomplete=True)
    try:
        if not 0 <= sample < len(ds):
            raise ConfigError(f"sample {sample} out of range: the shard set has {len(ds)} "
                              "samples", path=path)
        record = ds[sample]
        stored = ds.encoding.get("name")
        stored_params = ds.encoding.get("params") or {}
        dataset = ds.manifest.get("dataset")
    finally:
        ds.close()
    title = f"{path.name} sample {sample} (id {record['id']})"
    if encoding is None or encoding == stored:
        if params:
            raise ConfigError("encoding parameters apply when encoding on the fly; this shard "
                              f"set stores {stored!r} already", path=path)
        labels = None
        if "box_cls" in record and dataset:
            from .loaders import DATASETS
            if dataset in DATASETS:
                classes = getattr(DATASETS.get(dataset), "classes", ())
                labels = [classes[i] if 0 <= i < len(classes) else str(i)
                          for i in record["box_cls"].tolist()]
        return render_record(stored, record, stored_params, color_by=color_by,
                             box_labels=labels, title=title)
    if stored != "events":
        raise ConfigError(f"this shard set stores {stored!r}; only sets of raw 'events' can be "
                          f"drawn as another encoding ({encoding!r} asked)", path=path)
    _check_takes(encoding, "events", path)
    events = record["events"]
    if not len(events):
        raise DatasetError("the sample holds no events", path=path, sample_id=record["id"])
    size = SensorSize(int(events["x"].max()) + 1, int(events["y"].max()) + 1)
    fields, full = _encode(encoding, _window_defaults(encoding, params, events), events, size,
                           str(record["id"]))
    return render_record(encoding, fields, full, sensor_size=size, color_by=color_by,
                         title=title)
