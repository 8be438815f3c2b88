"""`events`: raw events stored as they are, for on-the-fly transforms at training time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..events import EVENT_DTYPE
from .base import ENCODINGS, Encoding


@dataclass(frozen=True)
class RawEventsParams:
    """No parameters: the record keeps `events` (EVENT_DTYPE [N])."""

    def encode(self, events: np.ndarray, sensor_size=None, sample_id=None) -> dict:
        return {"events": np.ascontiguousarray(events, dtype=EVENT_DTYPE)}

    def stats(self, record: dict) -> dict:
        return {"events": len(record["events"])}


ENCODINGS.register("events")(Encoding(
    "events", RawEventsParams, inputs=("events",),
    summary="raw events (t, x, y, p) as recorded, for on-the-fly transforms"))
