"""PKU spike camera (Vidar) `.dat`: headerless bit-packed binary frames.

A file is a concatenation of frames of H*W bits (H*W/8 bytes) in raster order, LSB
first: pixel k = row * W + col is bit k % 8 of byte k // 8; 1 = spike. Stored frames
are upside down, so rows are flipped on reading and on writing, as SpikeCV does
(`load_dat.py` `get_spike_matrix(flipud=True)`, `save_dat.py` `SpikeToRaw(filpud=True)`;
formats.md §9). Geometry is not stored: 400x250 is the SPS10 / recVidarReal2019 size.
SpikeCV's writer asserts H*W % 8 == 0 and its reader assumes it, so other sizes are a
`ConfigError`. Decoding uses `np.unpackbits(bitorder="little")` plus a flipped copy,
in steps of `DECODE_BYTES`: ~0.7-1.2 GB/s of file here, against ~0.15 GB/s for a Numba
kernel that writes the flipped frame directly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from ..errors import ConfigError, FormatError
from .base import warn

DECODE_BYTES = 8 << 20  # decoded bytes per unpack step (measured: whole-file steps are slower)


def _frame_bytes(width: int, height: int) -> int:
    if not (isinstance(width, (int, np.integer)) and isinstance(height, (int, np.integer))
            and width > 0 and height > 0):
        raise ConfigError(f"spike frame size must be positive integers, got {width}x{height}")
    if (width * height) % 8:
        raise ConfigError(f"spike frame size {width}x{height}: H*W must be a multiple of 8 "
                          "(frames are whole bytes, as SpikeCV assumes)")
    return width * height // 8


def _open_file(path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise FormatError("file not found", path=path) from None
    except IsADirectoryError:
        raise FormatError("is a directory, not a spike file", path=path) from None


def _decode_into(f, out: np.ndarray) -> None:
    """Read len(out) frames from `f` and unpack them into out uint8 [t, H, W] (flipped)."""
    t, h, w = out.shape
    fb = h * w // 8
    step = max(1, DECODE_BYTES // (h * w))
    for a in range(0, t, step):
        b = min(t, a + step)
        data = f.read((b - a) * fb)
        if len(data) != (b - a) * fb:
            raise FormatError("file shrank while being read", path=f.name, offset=f.tell())
        raw = np.frombuffer(data, np.uint8).reshape(b - a, fb)
        bits = np.unpackbits(raw, axis=1, bitorder="little").reshape(b - a, h, w)
        out[a:b] = bits[:, ::-1]


def _count_frames(f, path, fb: int) -> int:
    size = os.fstat(f.fileno()).st_size
    extra = size % fb
    if extra:
        warn(f"{extra} trailing bytes are not a whole {fb}-byte frame; ignored", path,
             size - extra)
    return size // fb


def read_spike_frames(path: str | os.PathLike, width: int = 400, height: int = 250
                      ) -> np.ndarray:
    """All frames of a spike `.dat` as uint8 [T, H, W] of 0/1, T = file size // (H*W/8);
    a partial trailing frame is dropped with an `EvpipeWarning`."""
    fb = _frame_bytes(width, height)
    with _open_file(path) as f:
        out = np.empty((_count_frames(f, path, fb), height, width), np.uint8)
        _decode_into(f, out)
    return out


def iter_spike_frames(path: str | os.PathLike, width: int = 400, height: int = 250,
                      frames_per_chunk: int = 256) -> Iterator[np.ndarray]:
    """Consecutive uint8 [t, H, W] chunks of `frames_per_chunk` frames (the last may be
    shorter); memory stays at one chunk (256 frames of 400x250 = 25.6 MB)."""
    fb = _frame_bytes(width, height)
    if frames_per_chunk < 1:
        raise ConfigError(f"frames_per_chunk must be >= 1, got {frames_per_chunk}")
    with _open_file(path) as f:
        n = _count_frames(f, path, fb)
        for a in range(0, n, frames_per_chunk):
            out = np.empty((min(frames_per_chunk, n - a), height, width), np.uint8)
            _decode_into(f, out)
            yield out


def write_spike_frames(path: str | os.PathLike, frames: np.ndarray) -> None:
    """Write frames [T, H, W] of 0/1 (bool or integer) as a spike `.dat`, flipped and
    bit-packed as `read_spike_frames` expects (SpikeCV `SpikeToRaw(filpud=True)`)."""
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ConfigError(f"spike frames must be [T, H, W], got shape {frames.shape}")
    t, h, w = frames.shape
    _frame_bytes(w, h)
    if frames.dtype != np.bool_:
        if not np.issubdtype(frames.dtype, np.integer):
            raise ConfigError(f"spike frames must be bool or integer 0/1, got {frames.dtype}")
        if t and (frames.min() < 0 or frames.max() > 1):
            raise ConfigError("spike frames must hold only 0 and 1")
    step = max(1, DECODE_BYTES // (h * w))
    with open(path, "wb") as f:
        for a in range(0, t, step):
            chunk = frames[a:a + step, ::-1].reshape(-1, h * w)
            f.write(np.packbits(chunk, axis=1, bitorder="little").tobytes())
