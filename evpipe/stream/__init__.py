"""Streaming inference: live sources -> ring buffer -> windows -> encoder -> model -> sinks.

`run_stream(uri, ...)` is the Python API (callbacks per window and for the summary);
`serve(file, ...)` publishes a recording as a live stream. The dv-processing parts need
the `stream` extra (`pip install 'evpipe[stream]'`).
"""

from .engine import StreamConfig, WindowResult, make_encoder, record_digest, run_stream
from .server import serve
from .sinks import JsonLinesSink
from .sources import Source, SourceLost, open_source
from .windows import Window, Windower, WindowSpec

__all__ = ["JsonLinesSink", "Source", "SourceLost", "StreamConfig", "Window", "WindowResult",
           "WindowSpec", "Windower", "make_encoder", "open_source", "record_digest",
           "run_stream", "serve"]
