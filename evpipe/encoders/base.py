"""Encoding registry: name -> parameters dataclass, accepted inputs, storage hints."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ConfigError
from ..registry import Registry

ENCODINGS: Registry["Encoding"] = Registry("encoding", modules=("evpipe.encoders.svc",))

# Raw-record field that carries each input kind; it is replaced by the encoded fields.
INPUT_FIELD = {"points": "points", "events": "events", "spikes": "spikes"}


@dataclass(frozen=True)
class Encoding:
    """A registered encoding.

    `params` is a frozen dataclass whose constructor validates values (ConfigError) and
    whose `encode(x)` maps one input array to record fields; `inputs` lists accepted
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
    out = {k: v for k, v in raw.items() if k != field}
    out.update(params.encode(raw[field]))
    return out


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
