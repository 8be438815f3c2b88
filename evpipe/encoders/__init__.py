"""Spike encoders: pure functions on NumPy arrays plus a registry by name."""

from .base import ENCODINGS, Encoding, encode_record, manifest_params, params_dict, sample_rng
from .event_cloud import EventCloud, EventCloudParams, event_cloud
from .poisson import PoissonParams, poisson
from .svc import SVCParams, SVCResult, spike_counts, svc

__all__ = ["ENCODINGS", "Encoding", "EventCloud", "EventCloudParams", "PoissonParams",
           "SVCParams", "SVCResult", "encode_record", "event_cloud", "manifest_params",
           "params_dict", "poisson", "sample_rng", "spike_counts", "svc"]
