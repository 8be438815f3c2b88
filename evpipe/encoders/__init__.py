"""Spike encoders: pure functions on NumPy arrays plus a registry by name."""

from .base import ENCODINGS, Encoding, encode_record, manifest_params, params_dict, sample_rng
from .event_cloud import EventCloud, EventCloudParams, event_cloud
from .frames import FramesParams, to_frames
from .poisson import PoissonParams, poisson
from .stacked_histogram import StackedHistogramParams, to_stacked_histogram
from .svc import SVCParams, SVCResult, spike_counts, svc, svc_with_point_map, voxel_labels
from .time_surface import TimeSurfaceParams, to_time_surface
from .voxel_grid import VoxelGridParams, to_voxel_grid

__all__ = ["ENCODINGS", "Encoding", "EventCloud", "EventCloudParams", "FramesParams",
           "PoissonParams", "SVCParams", "SVCResult", "StackedHistogramParams",
           "TimeSurfaceParams", "VoxelGridParams", "encode_record", "event_cloud",
           "manifest_params", "params_dict", "poisson", "sample_rng", "spike_counts", "svc",
           "svc_with_point_map", "voxel_labels",
           "to_frames", "to_stacked_histogram", "to_time_surface", "to_voxel_grid"]
