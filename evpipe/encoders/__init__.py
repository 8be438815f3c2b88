"""Spike encoders: pure functions on NumPy arrays plus a registry by name."""

from .base import ENCODINGS, Encoding, encode_record, manifest_params, params_dict, sample_rng
from .svc import SVCParams, SVCResult, spike_counts, svc

__all__ = ["ENCODINGS", "Encoding", "SVCParams", "SVCResult", "encode_record",
           "manifest_params", "params_dict", "sample_rng", "spike_counts", "svc"]
