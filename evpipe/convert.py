"""Dataset conversion: loader -> encoder -> shard writer, serially or on a process pool.

Tasks are one source item each (a scan, a recording window...); the driver commits
results in source order, so the shards are identical whatever the number of workers.
Shard k always covers source items [k*S, (k+1)*S), which makes a killed conversion
resumable: finished shards are kept and the rest is redone.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import dataclasses
import hashlib
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from . import __version__
from .encoders import ENCODINGS, encode_record, manifest_params, params_dict
from .errors import ConfigError, EvpipeError
from .loaders import DATASETS
from .shards.format import VERSION, FieldSpec, ShardFileWriter
from .shards.writer import ShardWriter, sha256_file


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to rebuild the loader and encoder (picklable)."""

    dataset: str
    root: str
    split: str
    loader_options: dict
    encoding: str
    params: dict

    def build(self):
        loader = DATASETS.get(self.dataset)(self.root, self.split, **self.loader_options)
        params = ENCODINGS.get(self.encoding).make(**self.params)
        return loader, params


_worker_state: dict = {}


def job_module(job: Job) -> str:
    """Module defining the job's loader (imported by workers ahead of time)."""
    return DATASETS.get(job.dataset).__module__


def _init_worker(job: Job, progress) -> None:
    _worker_state["built"] = job.build()
    _worker_state["progress"] = progress


def restore_malloc_reuse() -> None:
    """Undo Dask's nanny default `MALLOC_TRIM_THRESHOLD_=65536` in this process.

    That variable switches off glibc's dynamic mmap threshold, so every NumPy array over
    128 KiB is a fresh mmap that page-faults on first touch: `convert kitti --to svc` on a
    2-worker LocalCluster ran 3.6x slower than a local worker (measured here). Fixed
    thresholds (mmap 32 MiB, trim 64 MiB) let freed blocks be reused again."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 32 << 20)   # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 << 20)   # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass                         # not glibc: nothing to undo


def run_shard_on_worker(job: Job, task: ShardTask) -> dict:
    """`run_shard` on a Dask worker: the loader and encoder are built once per worker
    process and job."""
    key = json.dumps(dataclasses.asdict(job), sort_keys=True)
    built = _worker_state.get(key)
    if built is None:
        restore_malloc_reuse()
        built = _worker_state[key] = job.build()
    return run_shard(task, built, progress=lambda n: None)


@dataclass(frozen=True)
class ShardTask:
    """Convert source items [lo, hi) into the shard file `tmp` (picklable)."""

    index: int
    lo: int
    hi: int
    items: list
    tmp: str
    attrs: dict
    schema: dict | None
    fixed: tuple
    skip_bad: bool


def run_shard(task: ShardTask, built=None, progress=None) -> dict:
    """Load, encode and write one shard; returns what the driver commits.

    An input error stops the shard (the file is removed) unless `skip_bad`, in which case
    the source item is listed in `skipped` (with the number of its records written before
    the error, for items that give several). `progress(n)` is called per source item.
    """
    loader, params = built or _worker_state["built"]
    if progress is None:
        queue = _worker_state.get("progress")
        progress = queue.put if queue is not None else (lambda n: None)
    schema = None if task.schema is None else {k: FieldSpec.from_json(v)
                                               for k, v in task.schema.items()}
    writer = ShardFileWriter(task.tmp, task.attrs, schema, task.fixed)
    skipped, stats = [], {}
    try:
        for item in task.items:
            written = 0
            try:
                for raw in loader.records(item):
                    record = encode_record(params, loader.kind, raw)
                    writer.append(record)
                    written += 1
                    for k, v in _record_stats(params, record).items():
                        stats[k] = stats.get(k, 0) + v
            except EvpipeError as e:
                if e.sample_id is None:
                    e.sample_id = loader.item_id(item)
                if not task.skip_bad:
                    raise
                skipped.append({"id": loader.item_id(item), "error": str(e)}
                               | ({"records_kept": written} if written else {}))
            progress(1)
        n = writer.close()
    except BaseException:
        writer.abort()
        raise
    return {"index": task.index, "sources": (task.lo, task.hi), "samples": n,
            "schema": {k: v.to_json() for k, v in (writer.schema or {}).items()},
            "skipped": skipped, "stats": stats, "sha256": sha256_file(task.tmp)}


def conversion_key(job: Job, loader, items: list, samples_per_shard: int) -> str:
    """SHA-256 over the source listing (path, size, mtime), the encoding and its
    parameters, the loader options, the shard size and the shard format version."""
    h = hashlib.sha256()
    h.update(json.dumps({"dataset": job.dataset, "split": job.split,
                         "loader": job.loader_options, "encoding": job.encoding,
                         "params": job.params, "format": VERSION,
                         "samples_per_shard": samples_per_shard}, sort_keys=True).encode())
    for item in items:
        for path in loader.source_files(item):
            try:
                st = os.stat(path)
                h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except FileNotFoundError:
                h.update(f"{path}\0missing\n".encode())
    return h.hexdigest()


@dataclass
class Summary:
    out: str
    samples: int = 0
    new_samples: int = 0
    skipped: list = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0
    stats: dict = field(default_factory=dict)
    resumed_shards: int = 0
    already_complete: bool = False

    def lines(self) -> list[str]:
        rate = self.new_samples / self.seconds if self.seconds > 0 else 0.0
        out = [f"samples      {self.samples} ({self.new_samples} converted now"
               + (f", {self.resumed_shards} shards kept from an earlier run" if self.resumed_shards else "")
               + ")"]
        for k, v in self.stats.items():
            out.append(f"mean {k:<8}{v / max(self.samples, 1):.1f} per sample")
        out += [f"bytes        {self.bytes} ({self.bytes / 2**20:.1f} MiB)",
                f"seconds      {self.seconds:.2f}",
                f"samples/s    {rate:.1f}",
                f"skipped      {len(self.skipped)}",
                f"output       {self.out}"]
        return out


def _record_stats(params, record: dict) -> dict:
    return params.stats(record) if hasattr(params, "stats") else {}


def convert(dataset: str, encoding: str, *, root: str | os.PathLike, out: str | os.PathLike,
            split: str = "train", params: dict | None = None, loader_options: dict | None = None,
            workers: int = 1, limit: int | None = None, skip_bad: bool = False,
            samples_per_shard: int = 256, progress: bool = True,
            scheduler: str | None = None) -> Summary:
    """Convert `dataset` at `root` into shards of `encoding` under `out`; see module doc.

    `scheduler`: address of a Dask distributed scheduler (tcp://host:port) or a
    `dask.distributed.Client`; shards are then converted on its workers, which need evpipe
    installed and `root` and `out` at the same paths. Otherwise `workers` local processes.
    """
    t0 = time.perf_counter()
    loader_cls = DATASETS.get(dataset)
    spec = ENCODINGS.get(encoding)
    if loader_cls.kind not in spec.inputs:
        valid = [n for n in ENCODINGS.names() if loader_cls.kind in ENCODINGS.get(n).inputs]
        raise ConfigError(f"dataset {dataset!r} gives {loader_cls.kind}, which encoding "
                          f"{encoding!r} does not take; valid for {dataset}: {', '.join(valid)}")
    if split not in loader_cls.splits:
        raise ConfigError(f"dataset {dataset!r} has no split {split!r}; valid: "
                          f"{', '.join(loader_cls.splits)}")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    encoder = spec.make(**{**loader_cls.default_params.get(encoding, {}), **(params or {})})
    job = Job(dataset, str(Path(root).resolve()), split, dict(loader_options or {}), encoding,
              params_dict(encoder))
    loader = loader_cls(job.root, split, **job.loader_options)
    items = loader.items()
    if limit is not None:
        items = items[:limit]
    writer = ShardWriter(
        out, dataset=dataset, split=split, key=conversion_key(job, loader, items, samples_per_shard),
        encoding={"name": encoding, "params": manifest_params(encoder)},
        samples_per_shard=samples_per_shard, fixed=spec.fixed,
        extra={"loader": loader.describe(), "source_items": len(items),
               "samples_per_shard": samples_per_shard, "evpipe_version": __version__})
    summary = Summary(out=str(out), resumed_shards=len(writer.manifest["shards"]))
    if not writer.complete:
        _run(job, loader, encoder, items, writer, workers, skip_bad, progress, summary,
             scheduler)
        writer.close()
    else:
        summary.already_complete = True
    m = writer.manifest
    summary.samples = m["total_samples"]
    summary.skipped = m["skipped"]
    summary.bytes = sum(s["bytes"] for s in m["shards"])
    for s in m["shards"]:
        for k, v in s.get("stats", {}).items():
            summary.stats[k] = summary.stats.get(k, 0) + v
    summary.seconds = time.perf_counter() - t0
    return summary


def _run(job, loader, encoder, items, writer, workers, skip_bad, progress, summary,
         scheduler=None) -> None:
    start, per = writer.done_sources, writer.samples_per_shard
    tasks = [ShardTask(writer.next_index + k, lo, min(lo + per, len(items)),
                       items[lo:lo + per], str(writer.tmp_path(writer.next_index + k)),
                       writer.shard_attrs, writer.manifest["schema"],
                       tuple(sorted(writer.fixed)), skip_bad)
             for k, lo in enumerate(range(start, len(items), per))]
    bar = tqdm(total=len(items), initial=start, unit="sample", disable=not progress,
               file=sys.stderr, dynamic_ncols=True, desc=f"{job.dataset}->{job.encoding}")

    def commit(info: dict) -> None:
        writer.commit(info["index"], info["sources"], info["samples"], info["schema"],
                      info["skipped"], info["stats"], info["sha256"])
        summary.new_samples += info["samples"]
        for s in info["skipped"]:
            bar.write(f"skipped {s['id']}: {s['error']}")

    try:
        if scheduler is not None:
            _run_dask(job, tasks, scheduler, bar, commit)
        elif workers == 1:
            for task in tasks:
                commit(run_shard(task, (loader, encoder), bar.update))
        else:
            _run_pool(job, tasks, workers, bar, commit)
    finally:
        bar.close()
        for task in tasks:
            Path(task.tmp).unlink(missing_ok=True)


def _run_pool(job, tasks, workers, bar, commit) -> None:
    """Shards on a process pool, at most `workers` in flight, committed in order."""
    # forkserver: workers fork from a clean server process that has imported evpipe
    # once, so they start fast and never inherit the driver's open HDF5 handles.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["evpipe.convert", job_module(job)])
    queue = ctx.SimpleQueue()
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(job, queue))
    todo = collections.deque(tasks)
    running, done = {}, {}
    next_index = tasks[0].index if tasks else 0
    try:
        while todo or running:
            while todo and len(running) < workers:
                task = todo.popleft()
                running[pool.submit(run_shard, task)] = task.index
            finished, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
            while not queue.empty():
                bar.update(queue.get())
            for fut in finished:
                index = running.pop(fut)
                done[index] = fut.result()
            while next_index in done:
                commit(done.pop(next_index))
                next_index += 1
        while not queue.empty():
            bar.update(queue.get())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_dask(job, tasks, scheduler, bar, commit) -> None:
    """Shards as Dask tasks (per source range, so any worker can redo one), at most two
    per worker thread in flight, committed in order by this driver."""
    try:
        from dask.distributed import Client, wait as dask_wait
    except ImportError:
        raise ConfigError("--scheduler needs dask.distributed: pip install 'evpipe[dask]'") from None
    own = not isinstance(scheduler, Client)
    try:
        client = Client(scheduler, timeout="30s") if own else scheduler
    except OSError as e:
        raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
    limit = max(2, 2 * sum(client.nthreads().values()))
    todo = collections.deque(tasks)
    running, done = {}, {}
    next_index = tasks[0].index if tasks else 0
    try:
        while todo or running:
            while todo and len(running) < limit:
                task = todo.popleft()
                fut = client.submit(run_shard_on_worker, job, task, pure=False)
                running[fut] = task
            finished = dask_wait(list(running), return_when="FIRST_COMPLETED").done
            for fut in finished:
                task = running.pop(fut)
                done[task.index] = fut.result()
                bar.update(task.hi - task.lo)
            while next_index in done:
                commit(done.pop(next_index))
                next_index += 1
    finally:
        for fut in running:
            fut.cancel()
        if own:
            client.close()
