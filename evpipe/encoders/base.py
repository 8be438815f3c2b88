"""Encoding registry: name -> parameters dataclass, accepted inputs, storage hints."""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..registry import Registry

ENCODINGS: Registry["Encoding"] = Registry("encoding", modules=(
    "evpipe.encoders.svc", "evpipe.encoders.frames", "evpipe.encoders.voxel_grid",
    "evpipe.encoders.stacked_histogram", "evpipe.encoders.time_surface",
    "evpipe.encoders.event_cloud", "evpipe.encoders.poisson", "evpipe.encoders.raw"))

# Raw-record field that carries each input kind; it is replaced by the encoded fields.
INPUT_FIELD = {"points": "points", "events": "events", "spikes": "spikes"}
# Raw-record fields passed to `encode` as keywords and not stored: the sensor geometry
# (W, H) of event records, per-point labels of segmentation point clouds (the encoder
# turns them into labels of what it outputs, e.g. svc's voxel_labels).
CONTEXT_FIELDS = ("sensor_size", "point_labels")


@dataclass(frozen=True)
class Encoding:
    """A registered encoding.

    `params` is a frozen dataclass whose constructor validates values (ConfigError) and
    whose `encode(x, sensor_size=None, sample_id=None)` maps one input array to record
    fields (random encoders seed from (params.seed, sample_id), so a sample's output does
    not depend on the order or process it is converted in); `inputs` lists accepted
    input kinds; `fixed` names fields stored with a fixed shape.
    """

    name: str
    params: type
    inputs: tuple[str, ...]
    fixed: tuple[str, ...] = ()
    summary: str = ""

    def make(self, **kwargs):
        names = {f.name for f in dataclasses.fields(self.params)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ConfigError(f"encoding {self.name!r} has no parameter "
                              f"{', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return self.params(**kwargs)


def encode_record(params, kind: str, raw: dict) -> dict:
    """Record with the input field of `kind` replaced by `params.encode(...)`'s fields."""
    field = INPUT_FIELD[kind]
    context = {k: raw[k] for k in CONTEXT_FIELDS if k in raw}
    out = {k: v for k, v in raw.items() if k != field and k not in CONTEXT_FIELDS}
    out.update(params.encode(raw[field], sample_id=str(raw["id"]), **context))
    return out


def as_generator(seed) -> np.random.Generator:
    """A Generator from an int (or SeedSequence), a Generator (used as is), or None (fresh
    OS entropy: not reproducible)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, float)):
        raise ConfigError(f"seed must be an int, a numpy Generator or None, got {seed!r}")
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"seed must be a non-negative int, a numpy Generator or None, "
                          f"got {seed!r} ({e})") from None


def sample_rng(seed: int, sample_id: str | None) -> np.random.Generator:
    """Generator for one sample: from (seed, CRC-32 of the sample id), so equal inputs and
    seed give equal bytes in any process and order."""
    key = [int(seed)] + ([zlib.crc32(sample_id.encode())] if sample_id is not None else [])
    return np.random.default_rng(key)


def params_dict(params) -> dict:
    """JSON-ready constructor arguments of a parameters dataclass."""
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(params).items()}


def manifest_params(params) -> dict:
    """`params_dict` plus derived values a reader needs (`extra_params()`)."""
    d = params_dict(params)
    if hasattr(params, "extra_params"):
        d.update(params.extra_params())
    return d
