"""`evpipe view` and the renderers in evpipe.view."""

import shutil

import numpy as np
import pytest
from matplotlib.image import imread

from evpipe import view as V
from evpipe.cli import main
from evpipe.encoders import ENCODINGS
from evpipe.errors import ConfigError
from evpipe.events import make_events
from evpipe.io import read_events
from evpipe.io.kitti import png_size
from tests.helpers import run_cli

H, W = 24, 32
EVENT_ENCODINGS = ("events", "frames", "voxel_grid", "stacked_histogram", "time_surface",
                   "event_cloud", "poisson")


def check_png(path, min_w=300, min_h=150):
    """A valid PNG of sensible size whose pixels are not all one colour; returns RGB."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = png_size(path)
    assert min_w <= w <= 4000 and min_h <= h <= 4000
    rgb = imread(path)[..., :3]
    assert rgb.shape[:2] == (h, w)
    assert rgb.std() > 0.02
    return rgb


def red_box_pixels(rgb):
    """Pixels of the box colour #ff3b30 (absent from viridis and from the axes)."""
    r, g, b = (rgb[..., i] * 255 for i in range(3))
    return int(np.count_nonzero((r > 230) & (abs(g - 59) < 25) & (abs(b - 48) < 25)))


def polarity_pixels(rgb):
    """(reddish, bluish) pixel counts: ON and OFF marks of the events picture."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (int(np.count_nonzero((r > 0.6) & (b < 0.5) & (g < 0.5))),
            int(np.count_nonzero((b > 0.6) & (r < 0.5))))


def synthetic_events(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 40_000, n))
    x = (W / 2 + 8 * np.cos(t / 6000) + rng.normal(0, 1.5, n)).clip(0, W - 1)
    y = (H / 2 + 8 * np.sin(t / 6000) + rng.normal(0, 1.5, n)).clip(0, H - 1)
    return make_events(t, x.astype(np.uint16), y.astype(np.uint16), rng.integers(0, 2, n))


def synthetic_records():
    """One record per encoding, with the array shapes of DESIGN.md."""
    rng = np.random.default_rng(1)
    blob = np.zeros((H, W))
    blob[6:18, 8:24] = 1
    counts = rng.poisson(3 * blob, (5, 2, H, W)).astype(np.uint16)
    pts = rng.random((2, 256, 3)).astype(np.float32)
    pts[..., 2].sort()
    coords = np.stack([rng.integers(0, 40, 500), rng.integers(0, 1600, 500),
                       rng.integers(0, 1408, 500)], 1).astype(np.int32)
    return {
        "events": ({"events": synthetic_events()}, {}),
        "frames": ({"frames": counts}, {}),
        "voxel_grid": ({"voxel_grid": counts[:, 1].astype(np.float32) - counts[:, 0]}, {}),
        "stacked_histogram": ({"stacked_histogram": counts.transpose(1, 0, 2, 3)
                               .reshape(10, H, W).clip(0, 10).astype(np.uint8)}, {}),
        "time_surface": ({"time_surface": np.exp(-rng.random((3, 2, H, W)) * 4)
                          .astype(np.float32) * blob.astype(np.float32)}, {}),
        "event_cloud": ({"points": pts, "centroids": pts[:, :32],
                         "groups": rng.random((2, 32, 8, 6)).astype(np.float32),
                         "windows": np.array([[0, 10], [5, 15]])}, {}),
        "poisson": ({"spikes": (rng.random((16, 2, H, W)) < 0.4 * blob).astype(np.uint8)}, {}),
        "svc": ({"coords": coords, "spikes": rng.integers(0, 5, (500, 4)).astype(np.uint8),
                 "boxes": np.array([[20, 5, -1, 4, 1.8, 1.5, 0.3]], np.float32)},
                {"voxel_size": [0.05, 0.05, 0.1], "point_range": [0, -40, -3, 70.4, 40, 1]}),
    }


# -- renderers on synthetic arrays -------------------------------------------------------

@pytest.mark.parametrize("encoding", sorted(synthetic_records()))
def test_render_record_synthetic(encoding, tmp_path):
    record, params = synthetic_records()[encoding]
    fig = V.render_record(encoding, record, params, title="synthetic")
    rgb = check_png(V.save_figure(fig, tmp_path / f"{encoding}.png"))
    if encoding == "events":
        on, off = polarity_pixels(rgb)
        assert on > 50 and off > 50
    if encoding == "svc":
        assert red_box_pixels(rgb) > 20


def test_renderers_differ_with_content(tmp_path):
    # The picture shows the data: an empty bin stack and a full one give other pixels.
    counts = synthetic_records()["frames"][0]["frames"]
    full = check_png(V.save_figure(V.render_frames(counts), tmp_path / "a.png"))
    sparse = counts.copy()
    sparse[:, :, :, W // 2:] = 0
    half = imread(V.save_figure(V.render_frames(sparse), tmp_path / "b.png"))[..., :3]
    assert full.shape == half.shape and np.abs(full - half).sum() > 100


def test_frames_from_spike_camera_and_many_bins(tmp_path):
    spikes = np.random.default_rng(2).integers(0, 3, (4, 1, H, W)).astype(np.uint16)
    check_png(V.save_figure(V.render_frames(spikes), tmp_path / "s.png"))
    many = np.random.default_rng(3).integers(0, 3, (40, 2, H, W))
    fig = V.render_frames(many)
    assert "10 of 40 bins shown" in fig.texts[0].get_text()


def test_svc_count_colouring_and_feats_only_record(tmp_path):
    record, params = synthetic_records()["svc"]
    feats = np.random.default_rng(4).random((len(record["coords"]), 4)).astype(np.float32)
    rec = {"coords": record["coords"], "feats": feats}
    check_png(V.save_figure(V.render_record("svc", rec, params, color_by="count"),
                            tmp_path / "c.png"))
    with pytest.raises(ConfigError, match="color_by"):
        V.render_svc(record["coords"], params["voxel_size"], params["point_range"],
                     color_by="speed")


def test_pool_keeps_sums_and_maxima():
    a = np.arange(2 * 5 * 7, dtype=np.float64).reshape(2, 5, 7)
    s = V._pool(a, 3, "sum")
    assert s.shape == (2, 2, 3) and s.sum() == a.sum()
    assert V._pool(a, 3, "max")[1, -1, -1] == a[1].max()
    assert V._pool(a, 1, "sum") is a


@pytest.mark.parametrize("call, match", [
    (lambda: V.render_frames(np.zeros((3, 3, H, W))), r"\[n_bins, 2 or 1, H, W\]"),
    (lambda: V.render_voxel_grid(np.zeros((H, W))), r"\[n_bins, H, W\]"),
    (lambda: V.render_stacked_histogram(np.zeros((3, H, W), np.uint8)), "even"),
    (lambda: V.render_time_surface(np.zeros((2, 1, H, W))), r"\[K, 2, H, W\]"),
    (lambda: V.render_event_cloud(np.zeros((0, 16, 3))), "no window"),
    (lambda: V.render_event_cloud(np.zeros((2, 16, 3)), window=2), "out of range"),
    (lambda: V.render_poisson(np.zeros(5)), r"\[T, \.\.\.\]"),
    (lambda: V.render_events(np.zeros(3)), "fields t, x, y, p"),
    (lambda: V.render_record("gac", {}), "no renderer"),
    (lambda: V.render_record("frames", {"id": "s", "spikes": np.zeros((2, 2, 2, 2))}),
     "frames record has no 'frames' field"),
])
def test_bad_arrays_raise_config_errors(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


# -- event windows -----------------------------------------------------------------------

def test_read_window_matches_whole_file_slices(data_dir):
    path = data_dir / "aedat4" / "tonic_sample.aedat4"
    every = read_events(path)
    t0 = int(every["t"][0])
    ev, size, first = V.read_window(path)
    assert first == t0 and tuple(size) == (320, 240)
    expect = every[(every["t"] >= t0) & (every["t"] < t0 + 50_000)]
    np.testing.assert_array_equal(ev, expect)
    ev, _, _ = V.read_window(path, t_start_us=100_000, window_us=20_000)
    lo = t0 + 100_000
    np.testing.assert_array_equal(ev, every[(every["t"] >= lo) & (every["t"] < lo + 20_000)])
    ev, _, _ = V.read_window(path, t_start_us=100_000, n_events=777)
    np.testing.assert_array_equal(ev, every[every["t"] >= lo][:777])


def test_read_window_errors(data_dir):
    path = data_dir / "prophesee_dat" / "NCARS_obj_004397_td.dat"
    with pytest.raises(ConfigError, match="no events in the window"):
        V.read_window(path, t_start_us=10_000_000)
    with pytest.raises(ConfigError, match="not both"):
        V.read_window(path, window_us=10, n_events=10)
    with pytest.raises(ConfigError, match=">= 1"):
        V.read_window(path, n_events=0)


# -- the command, in process (every registered event encoding) and in subprocesses ----------

@pytest.mark.parametrize("encoding", EVENT_ENCODINGS)
def test_cli_event_file_each_encoding(encoding, data_dir, tmp_path, capsys):
    if encoding not in ENCODINGS:
        pytest.skip(f"encoding {encoding!r} is not registered")
    out = tmp_path / f"{encoding}.png"
    assert main(["view", str(data_dir / "aedat4" / "tonic_sample.aedat4"), "--encoding",
                 encoding, "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    rgb = check_png(out)
    if encoding == "events":
        on, off = polarity_pixels(rgb)
        assert on > 100 and off > 100


def test_cli_encoding_parameters_and_window(data_dir, tmp_path, capsys):
    if "frames" not in ENCODINGS:
        pytest.skip("encoding 'frames' is not registered")
    out = tmp_path / "f.png"
    assert main(["view", str(data_dir / "prophesee_evt2" / "evt2_sample.raw"), "--encoding",
                 "frames", "--n-bins", "4", "--t-start-us", "10000", "--n-events", "20000",
                 "--out", str(out)]) == 0
    check_png(out)


def test_cli_kitti_scan_draws_label_boxes(kitti_dir, tmp_path):
    scan = kitti_dir / "training" / "velodyne" / "000001.bin"
    out = tmp_path / "svc.png"
    proc = run_cli("view", scan, "--encoding", "svc", "--out", out,
                   env={"EVPIPE_CACHE": str(tmp_path / "cache")}, check=True)
    assert proc.stdout.strip() == str(out)
    with_boxes = red_box_pixels(check_png(out, 600, 500))
    # The same scan without label_2/calib next to it: no boxes.
    alone = tmp_path / "lone" / "velodyne" / "000001.bin"
    alone.parent.mkdir(parents=True)
    shutil.copy(scan, alone)
    V.view(alone, tmp_path / "alone.png")
    assert with_boxes > 100 and red_box_pixels(check_png(tmp_path / "alone.png")) == 0


def test_cli_events_file_subprocess(data_dir, tmp_path):
    out = tmp_path / "ev.png"
    run_cli("view", data_dir / "aedat4" / "tonic_sample.aedat4", "--window-us", "30000",
            "--out", out, env={"EVPIPE_CACHE": str(tmp_path / "cache")}, check=True)
    check_png(out)


def test_cli_converted_shard_set(tmp_path, _isolated_cache, capsys):
    # Subprocesses share the session's temporary cache, so the synthetic sample is built once.
    env = {"EVPIPE_CACHE": str(_isolated_cache)}
    shards = tmp_path / "kitti-svc"
    run_cli("convert", "kitti", "--to", "svc", "--out", shards, "-q", env=env, check=True)
    out = tmp_path / "set.png"
    run_cli("view", shards, "--sample", "1", "--out", out, env=env, check=True)
    assert red_box_pixels(check_png(out, 600, 500)) > 50
    counts = tmp_path / "file.png"
    assert main(["view", str(shards / "shard-00000.h5"), "--color-by", "count",
                 "--out", str(counts)]) == 0
    check_png(counts, 600, 500)
    capsys.readouterr()
    assert main(["view", str(shards), "--sample", "6", "--out", str(tmp_path / "x.png")]) == 1
    assert capsys.readouterr().err == (f"evpipe: error: {shards}: sample 6 out of range: the "
                                       "shard set has 6 samples\n")
    with pytest.raises(ConfigError, match="only sets of raw 'events'"):
        V.view(shards, tmp_path / "f.png", "frames")


@pytest.mark.parametrize("args, message", [
    (["missing.aedat4"], "file not found"),
    (["{aedat4}", "--encoding", "svc"], "encoding 'svc' takes points, and this input holds"),
    (["{scan}", "--window-us", "1000"], "apply to event files only"),
    (["{scan}", "--encoding", "frames"], "encoding 'frames' takes events or spikes"),
    (["{aedat4}", "--t-start-us", "99000000"], "no events in the window"),
    (["{aedat4}", "--encoding", "events", "--n-bins", "3"], "--n-bins does not apply"),
    (["{aedat4}", "--n-bins", "3"], "encoding parameters need --encoding"),
    (["{empty}"], "not a shard set"),
    (["{aedat4}", "--out", "{tmp}/x.jpg"], "output must end in .png, .svg, .pdf"),
])
def test_cli_errors_are_one_line(args, message, data_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    fill = {"aedat4": data_dir / "aedat4" / "tonic_sample.aedat4", "tmp": tmp_path,
            "scan": data_dir / "kitti" / "training" / "velodyne" / "000001.bin",
            "empty": tmp_path / "empty"}
    argv = [a.format(**fill) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "x.png")]
    assert main(["view", *argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("evpipe: error: ") and message in err
    assert not (tmp_path / "x.png").exists()


def test_view_window_options_refused_for_shards(tmp_path):
    from evpipe.shards import ShardWriter
    out = tmp_path / "raw"
    with ShardWriter(out, dataset="test", split="train",
                     encoding={"name": "events", "params": {}}) as w:
        w.add({"id": "s0", "events": synthetic_events()})
    with pytest.raises(ConfigError, match="apply to event files only"):
        V.view(out, tmp_path / "a.png", window_us=1000)
    check_png(V.view(out, tmp_path / "raw.png"))
    if "frames" in ENCODINGS:
        # A set of raw events can be drawn as another event encoding.
        check_png(V.view(out, tmp_path / "frames.png", "frames", {"n_bins": 3}))
    with pytest.raises(ConfigError, match="encoding 'svc' takes points"):
        V.view(out, tmp_path / "b.png", "svc")
    with pytest.raises(ConfigError, match="apply when encoding on the fly"):
        V.view(out, tmp_path / "c.png", params={"n_bins": 3})
