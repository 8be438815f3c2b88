"""File formats: event cameras, spike cameras, point clouds.

`read_events(path)` / `open_events(path)` read every event format (detected by content,
then extension); `write_events(path, events, format, sensor_size)` writes dat, evt2, h5.
"""

from .base import (FORMATS, WRITERS, EventReader, EvpipeWarning, detect_format, open_events,
                   read_events, write_events)
from .labels import read_gen1_boxes, read_gesture_labels
from .spikecam import iter_spike_frames, read_spike_frames, write_spike_frames

__all__ = ["FORMATS", "WRITERS", "EventReader", "EvpipeWarning", "detect_format",
           "iter_spike_frames", "open_events", "read_events", "read_gen1_boxes",
           "read_gesture_labels", "read_spike_frames", "write_events", "write_spike_frames"]
