"""ShardSampler under real torch.distributed: 2 ranks (gloo) x DataLoader with 2 workers."""

import json
import time

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, get_worker_info

from evpipe.errors import ConfigError
from evpipe.shards import ShardDataset, ShardSampler, ShardWriter

WORLD = 2
SEED = 7
EPOCHS = (0, 1, 0)  # the repeated epoch must give the same order again
N = 45  # odd and over uneven shards: ranks get 22 and 23 samples
TIMEOUT_S = 60


class TagWorker:
    """Wrap a collate: add the DataLoader worker id that built the batch."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, records):
        batch = self.collate(records)
        batch["worker"] = get_worker_info().id
        return batch


def _rank(rank: int, path: str, rendezvous: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=WORLD)
    try:
        ds = ShardDataset(path)
        sampler = ShardSampler(ds, seed=SEED)  # rank and world size from the process group
        loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=2,
                            persistent_workers=True, collate_fn=TagWorker(ds.collate_fn()))
        mine = []
        for epoch in EPOCHS:
            sampler.set_epoch(epoch)
            ids, workers = [], set()
            for batch in loader:
                assert batch["frames"].shape[1] == len(batch["id"])  # time-first [T, B, ...]
                ids += batch["id"]
                workers.add(batch["worker"])
            mine.append({"ids": ids, "workers": sorted(workers)})
        gathered = [None] * WORLD
        dist.all_gather_object(gathered, mine)
        if rank == 0:
            with open(out, "w") as f:
                json.dump(gathered, f)
    finally:
        dist.destroy_process_group()


def test_two_ranks_two_workers_each_sample_once(tmp_path):
    ids = [f"s{i:03d}" for i in range(N)]
    with ShardWriter(tmp_path / "s", dataset="toy", split="train",
                     encoding={"name": "frames", "params": {"n_bins": 2}}, key="k",
                     samples_per_shard=4, fixed=("frames",)) as w:
        for i, rid in enumerate(ids):
            w.add({"id": rid, "label": i % 10,
                   "frames": np.full((2, 1, 3, 3), i, np.uint16)})
    out = tmp_path / "seen.json"
    ctx = mp.spawn(_rank, args=(str(tmp_path / "s"), str(tmp_path / "rdv"), str(out)),
                   nprocs=WORLD, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            raise AssertionError(f"ranks still running after {TIMEOUT_S} s")
    seen = json.loads(out.read_text())  # seen[rank][pass] = {"ids": [...], "workers": [...]}

    ds = ShardDataset(tmp_path / "s")
    orders = []
    for p, epoch in enumerate(EPOCHS):
        per_rank = [seen[r][p]["ids"] for r in range(WORLD)]
        everything = per_rank[0] + per_rank[1]
        assert len(everything) == len(set(everything)) == N  # no duplicates across ranks
        assert set(everything) == set(ids)  # union is the dataset
        assert [len(x) for x in per_rank] == [22, 23]
        for r in range(WORLD):
            assert seen[r][p]["workers"] == [0, 1]  # both workers served batches
            expect = ShardSampler(ds, num_replicas=WORLD, rank=r, seed=SEED)
            expect.set_epoch(epoch)
            assert per_rank[r] == [ids[i] for i in expect]  # the sampler's order, in order
        orders.append(everything)
    assert orders[0] != orders[1]  # a new order each epoch
    assert orders[2] == orders[0]  # same (seed, epoch), same order


@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_interleave_mixes_shards_each_sample_once(replicas):
    class Fake:
        shard_sizes = [10] * 7
    starts = np.cumsum([0] + Fake.shard_sizes)

    def order(epoch, interleave):
        parts = []
        for rank in range(replicas):
            s = ShardSampler(Fake(), replicas, rank, seed=5, interleave=interleave)
            s.set_epoch(epoch)
            parts.append(list(s))
        return parts

    for epoch in range(2):
        parts = order(epoch, 3)
        seen = [i for p in parts for i in p]
        assert sorted(seen) == list(range(70))
        shard = np.searchsorted(starts, seen, side="right") - 1
        groups = [set(shard[g:g + 30]) for g in (0, 30, 60)]  # shards 3 + 3 + 1
        assert [len(g) for g in groups] == [3, 3, 1] and set.union(*groups) == set(range(7))
        assert len(set(shard[:10])) > 1  # rows of the group's shards are mixed
    assert order(0, 3) != order(1, 3) and order(1, 3) == order(1, 3)
    default = ShardSampler(Fake(), replicas, 0, seed=5)
    assert list(default) == list(ShardSampler(Fake(), replicas, 0, seed=5, interleave=1))
    with pytest.raises(ConfigError, match="interleave"):
        ShardSampler(Fake(), interleave=0)
