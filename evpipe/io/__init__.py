"""File formats: event cameras, spike cameras, point clouds.

`read_events(path)` / `open_events(path)` read every event format (detected by content,
then extension); `write_events(path, events, format, sensor_size)` writes dat, evt2, h5.
"""

from .base import (FORMATS, WRITERS, EventReader, EvpipeWarning, detect_format, open_events,
                   read_events, write_events)

__all__ = ["FORMATS", "WRITERS", "EventReader", "EvpipeWarning", "detect_format",
           "open_events", "read_events", "write_events"]
