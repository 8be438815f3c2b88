"""`ShardSampler`: DistributedSampler semantics with shard-local reads."""

from __future__ import annotations

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

from ..errors import ConfigError


class ShardSampler(Sampler[int]):
    """Split a `ShardDataset` across DDP ranks, each sample exactly once per epoch.

    The epoch order comes from (seed, epoch) only, so every rank computes the same one
    (give all ranks the same `seed`): shards are shuffled, then rows within each group of
    `interleave` consecutive shards, and the concatenated order is cut into
    `num_replicas` contiguous blocks, so a rank reads runs of a few shards instead of
    every shard. `interleave=1` reads one shard at a time; raise it when shards hold
    correlated records (written in class or sequence order) so that batches mix them.
    Block sizes differ by at most one; `drop_last=True` trims every rank to the same
    length (DDP needs equal batch counts) at the cost of up to num_replicas - 1 samples
    per epoch, a different few each epoch.

    Pass it as `sampler=` of a DataLoader: the main process hands the indices out to the
    workers, so with any `num_workers` each index is read once, in this order, and
    `set_epoch(e)` (call it before each epoch) also works with `persistent_workers`.
    """

    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 interleave: int = 1):
        if num_replicas is None:
            num_replicas = (dist.get_world_size()
                            if dist.is_available() and dist.is_initialized() else 1)
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ConfigError(f"rank {rank} is outside 0..{num_replicas - 1}")
        if isinstance(interleave, bool) or not isinstance(interleave, int) or interleave < 1:
            raise ConfigError(f"interleave must be an int >= 1, got {interleave!r}")
        sizes = getattr(dataset, "shard_sizes", None)
        self.sizes = list(sizes) if sizes is not None else [len(dataset)]
        self.num_replicas, self.rank = num_replicas, rank
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.interleave = interleave
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
        shards = rng.permutation(len(self.sizes))
        parts = [rng.permutation(np.concatenate([np.arange(starts[s], starts[s + 1])
                                                 for s in shards[g:g + self.interleave]]))
                 for g in range(0, len(shards), self.interleave)]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def __iter__(self):
        lo, hi = self._bounds()
        return iter(self._order()[lo:hi].tolist())

    def __len__(self) -> int:
        lo, hi = self._bounds()
        return hi - lo
