"""evpipe: raw neuromorphic and 3D sensor data -> spike encodings for SNNs."""

__version__ = "0.1.0"
