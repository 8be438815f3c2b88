import hashlib
import warnings

import matplotlib.image as mpimg
import numpy as np
import pytest

from evpipe.errors import ConfigError, FormatError
from evpipe.io import EvpipeWarning
from evpipe.io.spikecam import iter_spike_frames, read_spike_frames, write_spike_frames

SAMPLE = "spike_dat/spikeREDS_200_part1_key_id151.dat"
GT = "spike_dat/spikeREDS_200_part1_key_id151_gt.png"
SAMPLE_SHA256 = "3ff10d685c3e57749be3a1dd1d7e8b35199cb4882e3f71a5ef4660bc9a5f6ba9"  # decoded


def grey(path) -> np.ndarray:
    img = mpimg.imread(path).astype(np.float64)
    return img if img.ndim == 2 else img[..., :3] @ [0.299, 0.587, 0.114]


def corr(a, b) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_sample_matches_ground_truth(data_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frames = read_spike_frames(data_dir / SAMPLE)
    assert frames.dtype == np.uint8 and frames.shape == (301, 250, 400)
    assert set(np.unique(frames)) == {0, 1}
    assert hashlib.sha256(frames.tobytes()).hexdigest() == SAMPLE_SHA256
    assert frames.mean() == pytest.approx(0.288, abs=5e-4)
    rate, gt = frames.mean(axis=0), grey(data_dir / GT)
    assert gt.shape == rate.shape
    assert corr(rate, gt) > 0.9  # PROVENANCE: 0.932 with flipud + LSB-first
    assert corr(rate[::-1], gt) < 0.0  # unflipped orientation: -0.13


def test_lsb_first_and_flip_by_hand(data_dir):
    """SpikeCV's formulation: pixel k = row*W + col of the stored frame is bit k % 8 of
    byte k // 8 (`comparator = 1 << (k % 8)`), and the stored rows are upside down."""
    raw = np.frombuffer((data_dir / SAMPLE).read_bytes()[:3 * 12500], np.uint8)
    k = np.arange(3 * 250 * 400)
    stored = ((raw[k // 8] & (1 << (k % 8))) != 0).reshape(3, 250, 400)
    np.testing.assert_array_equal(read_spike_frames(data_dir / SAMPLE)[:3], stored[:, ::-1])


def test_chunked_equals_whole(data_dir):
    whole = read_spike_frames(data_dir / SAMPLE)
    chunks = list(iter_spike_frames(data_dir / SAMPLE, frames_per_chunk=64))
    assert [len(c) for c in chunks] == [64] * 4 + [45]
    np.testing.assert_array_equal(np.concatenate(chunks), whole)
    with pytest.raises(ConfigError, match="frames_per_chunk"):
        next(iter_spike_frames(data_dir / SAMPLE, frames_per_chunk=0))


@pytest.mark.parametrize("shape", [(0, 250, 400), (1, 8, 1), (7, 3, 8), (5, 250, 400),
                                   (3, 1000, 1000)])
def test_round_trip(tmp_path, shape):
    rng = np.random.default_rng(sum(shape))
    frames = (rng.random(shape) < 0.3).astype(np.uint8)
    path = tmp_path / "s.dat"
    write_spike_frames(path, frames)
    assert path.stat().st_size == frames.size // 8
    t, h, w = shape
    np.testing.assert_array_equal(read_spike_frames(path, width=w, height=h), frames)
    write_spike_frames(path, frames.astype(bool))
    back = list(iter_spike_frames(path, width=w, height=h, frames_per_chunk=2))
    np.testing.assert_array_equal(np.concatenate(back) if back else frames[:0], frames)


def test_geometry_must_be_whole_bytes(tmp_path, data_dir):
    with pytest.raises(ConfigError, match="multiple of 8"):
        read_spike_frames(data_dir / SAMPLE, width=401, height=250 - 1)
    with pytest.raises(ConfigError, match="positive"):
        read_spike_frames(data_dir / SAMPLE, width=0)
    with pytest.raises(ConfigError, match="multiple of 8"):
        write_spike_frames(tmp_path / "x.dat", np.zeros((1, 3, 3), np.uint8))
    with pytest.raises(ConfigError, match="only 0 and 1"):
        write_spike_frames(tmp_path / "x.dat", np.full((1, 2, 4), 2, np.uint8))
    with pytest.raises(ConfigError, match=r"\[T, H, W\]"):
        write_spike_frames(tmp_path / "x.dat", np.zeros((2, 4), np.uint8))


def test_truncated_file_warns(data_dir, tmp_path):
    data = (data_dir / SAMPLE).read_bytes()
    path = tmp_path / "t.dat"
    path.write_bytes(data[:-100])
    with pytest.warns(EvpipeWarning, match="12400 trailing bytes") as w:
        frames = read_spike_frames(path)
    assert frames.shape == (300, 250, 400) and "offset 3750000" in str(w[0].message)
    np.testing.assert_array_equal(frames, read_spike_frames(data_dir / SAMPLE)[:300])
    with pytest.warns(EvpipeWarning):
        assert sum(len(c) for c in iter_spike_frames(path, frames_per_chunk=100)) == 300
    path.write_bytes(data[:5])
    with pytest.warns(EvpipeWarning, match="5 trailing bytes"):
        assert read_spike_frames(path).shape == (0, 250, 400)


def test_missing_file(tmp_path):
    with pytest.raises(FormatError, match="file not found"):
        read_spike_frames(tmp_path / "none.dat")
    with pytest.raises(FormatError, match="directory"):
        read_spike_frames(tmp_path)
