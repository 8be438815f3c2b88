"""`ShardSampler`: DistributedSampler semantics with shard-local reads."""

from __future__ import annotations

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

from ..errors import ConfigError


class ShardSampler(Sampler[int]):
    """Split a `ShardDataset` across DDP ranks, each sample exactly once per epoch.

    The epoch order comes from (seed, epoch): shards are shuffled, then rows within each
    shard, and the concatenated order is cut into `num_replicas` contiguous blocks, so a
    rank reads whole runs of one shard instead of every shard. Block sizes differ by at
    most one; `drop_last=True` trims every rank to the same length (DDP needs equal
    batch counts) at the cost of up to num_replicas - 1 samples per epoch.
    Call `set_epoch(e)` before each epoch.
    """

    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ConfigError(f"rank {rank} is outside 0..{num_replicas - 1}")
        sizes = getattr(dataset, "shard_sizes", None)
        self.sizes = list(sizes) if sizes is not None else [len(dataset)]
        self.num_replicas, self.rank = num_replicas, rank
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _bounds(self) -> tuple[int, int]:
        n, r = sum(self.sizes), self.num_replicas
        if self.drop_last:
            per = n // r
            return self.rank * per, (self.rank + 1) * per
        return self.rank * n // r, (self.rank + 1) * n // r

    def _order(self) -> np.ndarray:
        starts = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        if not self.shuffle:
            return np.arange(starts[-1], dtype=np.int64)
        rng = np.random.default_rng([self.seed, self.epoch])
        parts = [starts[s] + rng.permutation(self.sizes[s]) for s in rng.permutation(len(self.sizes))]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def __iter__(self):
        lo, hi = self._bounds()
        return iter(self._order()[lo:hi].tolist())

    def __len__(self) -> int:
        lo, hi = self._bounds()
        return hi - lo
