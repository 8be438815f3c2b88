"""Shard format v1: one HDF5 file holding n records.

Layout of `shard-NNNNN.h5`:
- `/meta/id`          vlen UTF-8 [n], sample ids;
- `/data/<field>`     ragged fields concatenated along axis 0, fixed fields as [n, ...],
                      scalar and string fields as [n]; a structured field (events: t, x,
                      y, p) is a group holding one such dataset per column,
                      `/data/<field>/<column>`;
- `/index/<field>`    int64 [n + 1] offsets into `/data/<field>` for ragged fields;
- root attributes     `format`, `version`, `n`, `schema` (JSON: field -> kind, dtype,
                      tail shape), `encoding` (JSON: name + parameters), `dataset`, `split`.

Array datasets are chunked in ~64 KiB (one record per chunk when a record is larger) and
compressed with Blosc(LZ4, byte shuffle, level 5) from `hdf5plugin` when that at least
halves a trial of their first megabyte (decided per dataset, so random bits such as event
coordinates stay raw and cost no decoding); chosen by tools/bench_loading.py and
tools/bench_shards.py for random-read speed first. Fixed fields of 1-byte items with one
record per chunk (stacked histograms, Poisson spikes) whose first record the zero-run
encoder (zero_runs.py) halves, to within 10 % of Blosc's size, get their chunks from it
instead: the same Blosc/LZ4 format written pre-compressed, 1.4-1.6x faster than c-blosc on
mostly-zero bytes. Readers need `import hdf5plugin`.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from dataclasses import dataclass

import h5py
import hdf5plugin
import numpy as np

from ..errors import ShardError
from . import zero_runs

FORMAT = "evpipe-shard"
VERSION = 1
CHUNK_BYTES = 1 << 16
# Random reads of ~64 KiB chunks gain nothing from HDF5's chunk cache (measured).
READ_CACHE_BYTES = 0
TRIAL_BYTES = 1 << 20
WORTH_COMPRESSING = 0.5
# The zero-run encoder is used where its trial is at most this much larger than Blosc's.
ZERO_RUNS_SLACK = 1.1


def compression() -> dict:
    """h5py dataset keywords for the shard codec."""
    return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))


@dataclass(frozen=True)
class FieldSpec:
    """How one record field is stored: `ragged` (concatenated + index), `fixed` ([n, ...]),
    `scalar` (number per record) or `str` (string per record). `dtype` is a NumPy type
    string, or a list of (name, type) pairs for structured arrays such as events."""

    kind: str
    dtype: str | tuple
    tail: tuple[int, ...] = ()

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype if isinstance(self.dtype, str) else list(self.dtype))

    def to_json(self) -> dict:
        dtype = self.dtype if isinstance(self.dtype, str) else [list(f) for f in self.dtype]
        return {"kind": self.kind, "dtype": dtype, "tail": list(self.tail)}

    @staticmethod
    def from_json(d: dict) -> "FieldSpec":
        dtype = d["dtype"] if isinstance(d["dtype"], str) else tuple(tuple(f) for f in d["dtype"])
        return FieldSpec(d["kind"], dtype, tuple(d["tail"]))


def _dtype_spec(dtype: np.dtype) -> str | tuple:
    return dtype.str if dtype.names is None else tuple(tuple(f) for f in dtype.descr)


def infer_schema(record: dict, fixed: frozenset[str]) -> dict[str, FieldSpec]:
    """Schema from a first record, in field-name order (so a resumed writer that reloads it
    from the manifest writes the same bytes): arrays are ragged along axis 0 unless
    named in `fixed`."""
    schema = {}
    for name, value in sorted(record.items()):
        if name == "id":
            continue
        if isinstance(value, str):
            schema[name] = FieldSpec("str", "str")
        elif isinstance(value, (int, float, bool, np.integer, np.floating, np.bool_)):
            schema[name] = FieldSpec("scalar", _dtype_spec(np.asarray(value).dtype))
        elif isinstance(value, np.ndarray):
            if name in fixed:
                schema[name] = FieldSpec("fixed", _dtype_spec(value.dtype), tuple(value.shape))
            else:
                if value.ndim == 0:
                    raise ShardError(f"field {name!r} is a 0-d array; store it as a scalar")
                schema[name] = FieldSpec("ragged", _dtype_spec(value.dtype), tuple(value.shape[1:]))
        else:
            raise ShardError(f"field {name!r} has unsupported type {type(value).__name__}")
    return schema


FLUSH_BYTES = 8 << 20


def _choose_codec(data: np.ndarray, per_record: bool = False) -> str | None:
    """Codec of a new dataset from a trial of `data`'s first TRIAL_BYTES (at least one
    row): "zero_runs" (only for `per_record` fields: 1-byte items, a chunk per record),
    "blosc" (h5py's filter) or None (raw). Blosc's size comes from an in-memory HDF5 file
    with the shard's chunking."""
    rows = max(1, min(len(data), TRIAL_BYTES // max(1, data[:1].nbytes)))
    trial = data[:rows]
    if trial.nbytes == 0:
        return None
    tail = trial.shape[1:]
    chunk_rows = _chunk_rows(tail, trial.dtype.itemsize)
    with h5py.File(f"trial-{id(trial)}", "w", driver="core", backing_store=False) as f:
        ds = f.create_dataset("d", data=trial, chunks=(min(rows, chunk_rows), *tail),
                              **compression())
        blosc = ds.id.get_storage_size()
    if per_record:
        zr = sum(len(zero_runs.encode(row)) for row in trial)
        if zr <= WORTH_COMPRESSING * trial.nbytes and zr <= ZERO_RUNS_SLACK * blosc:
            return "zero_runs"
    return "blosc" if blosc <= WORTH_COMPRESSING * trial.nbytes else None


def _zero_runs_fit(dtype: np.dtype, tail: tuple[int, ...]) -> bool:
    """Whether rows of `dtype` [*tail] can be zero-run chunks: 1-byte numbers, 1..MAX_CHUNK
    bytes a row."""
    return (dtype.kind in "biu" and dtype.itemsize == 1
            and 0 < int(np.prod(tail, dtype=np.int64)) <= zero_runs.MAX_CHUNK)


@dataclass(frozen=True)
class _Chunks:
    """Records of a dataset of `dtype` [n, *tail] already encoded as zero-run chunks."""

    dtype: np.dtype
    tail: tuple[int, ...]
    chunks: list


def _chunk_rows(tail: tuple[int, ...], itemsize: int) -> int:
    row = max(1, int(np.prod(tail, dtype=np.int64)) * itemsize)
    return max(1, CHUNK_BYTES // row)


def fsync_path(path) -> None:
    """fsync a file or a directory (after a rename into it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardFileWriter:
    """Stream records into a new shard file.

    Arrays are appended in batches of about FLUSH_BYTES, so memory stays bounded whatever
    the shard size; ids, scalars and offsets are kept until `close()`. The schema comes
    from the first record unless given. Output bytes depend only on the records.

    Batches are compressed and written by one background thread (h5py releases the GIL
    while its filters run), so encoding the next batch overlaps writing this one; at most
    one batch waits for it. Records of fields taking zero-run chunks are encoded in
    append() instead, while still in cache, and the thread writes the chunks as they are.
    """

    def __init__(self, path: str, attrs: dict, schema: dict[str, FieldSpec] | None = None,
                 fixed=frozenset()):
        self.path = path
        self.schema = schema
        self.fixed = frozenset(fixed)
        self._attrs = attrs
        # No chunk cache: every chunk goes to the file when written, so the layout (and the
        # bytes) depend only on the records, not on cache state (seen differ in Dask workers).
        self._f = h5py.File(path, "w", libver="v110", rdcc_nbytes=0)
        self._ids: list[str] = []
        self._small: dict[str, list] = {}
        self._pending: dict[str, list] = {}
        self._pending_bytes = 0
        self._lengths: dict[str, list] = {}
        self._created = False
        self._batches: queue.Queue = queue.Queue(maxsize=1)
        self._failed: BaseException | None = None
        self._aborted = False
        # Fixed fields of 1-byte items with a chunk per record, whose codec is chosen on
        # their first record; those that take zero-run chunks are encoded in append().
        self._per_record: set[str] = set()
        self._codecs: dict[str, str | None] = {}
        self._scratch: np.ndarray | None = None
        self._thread = threading.Thread(target=self._write_batches, name="evpipe-shard-writer",
                                        daemon=True)
        self._thread.start()

    def _write_batches(self) -> None:
        """Writer thread: append each queued batch [(path, data)] until None; after a
        failure or an abort it only drains the queue, so the producer never blocks."""
        while (batch := self._batches.get()) is not None:
            if self._failed is None and not self._aborted:
                try:
                    for path, data in batch:
                        self._append_data(path, data)
                except BaseException as e:
                    self._failed = e

    def _end_writer(self) -> None:
        """Wait until the writer thread has taken every queued batch and ended."""
        if self._thread.is_alive():
            self._batches.put(None)
            self._thread.join()

    def __len__(self) -> int:
        return len(self._ids)

    def _create(self) -> None:
        for name, spec in self.schema.items():
            if spec.kind in ("ragged", "fixed"):
                self._pending[name] = []
                self._lengths[name] = []
            else:
                self._small[name] = []
            if spec.kind == "fixed" and _zero_runs_fit(spec.np_dtype, spec.tail) and \
                    _chunk_rows(spec.tail, 1) == 1:
                self._per_record.add(name)
        self._created = True

    def _append_data(self, path: str, data: np.ndarray | _Chunks) -> None:
        """Append `data` along axis 0 to dataset `path` (an array, or records encoded as
        zero-run chunks), creating it on first use with the codec chosen on its first
        record (fields in _per_record) or its first batch (`_choose_codec`)."""
        ds = self._f.get(path)
        if ds is None:
            dtype, tail = data.dtype, data.tail if isinstance(data, _Chunks) else data.shape[1:]
            codec = self._codecs[path] if path in self._codecs else _choose_codec(data)
            ds = self._f.create_dataset(
                path, shape=(0, *tail), maxshape=(None, *tail), dtype=dtype,
                chunks=(_chunk_rows(tail, dtype.itemsize), *tail),
                **(compression() if codec else {}))
        start = ds.shape[0]
        if not isinstance(data, _Chunks):
            ds.resize(start + len(data), axis=0)
            ds[start:] = data
            return
        ds.resize(start + len(data.chunks), axis=0)
        origin = (0,) * (ds.ndim - 1)
        for k, chunk in enumerate(data.chunks):
            ds.id.write_direct_chunk((start + k, *origin), chunk)

    def _encode_record(self, name: str, v: np.ndarray) -> np.ndarray:
        """A record of a field in _per_record: its zero-run chunk (uint8 bytes) when that is
        the field's codec (chosen on its first record), else `v`. Encoding here, right after
        the encoder wrote `v`, reads it from cache and needs no batch copy."""
        path = f"data/{name}"
        if path not in self._codecs:
            self._codecs[path] = _choose_codec(v[None], per_record=True)
        if self._codecs[path] != "zero_runs":
            return v
        if self._scratch is None or len(self._scratch) < zero_runs.bound(v.nbytes):
            self._scratch = np.empty(zero_runs.bound(v.nbytes), np.uint8)
        return zero_runs.encode(v, self._scratch).copy()

    def append(self, record: dict) -> None:
        if self.schema is None:
            self.schema = infer_schema(record, self.fixed)
        if not self._created:
            self._create()
        rid = str(record.get("id"))
        if set(record) - {"id"} != set(self.schema):
            raise ShardError(f"fields {sorted(set(record) - {'id'})} differ from the shard's "
                             f"{sorted(self.schema)}", sample_id=rid)
        for name, spec in self.schema.items():
            value = record[name]
            if spec.kind == "str":
                self._small[name].append(str(value))
                continue
            if spec.kind == "scalar":
                self._small[name].append(value)
                continue
            v = np.asarray(value)
            got = v.shape[1:] if spec.kind == "ragged" else v.shape
            if got != spec.tail or v.dtype != spec.np_dtype or (spec.kind == "ragged" and v.ndim == 0):
                raise ShardError(f"field {name!r} is {v.dtype}{list(v.shape)}, schema says "
                                 f"{spec.dtype}{list(spec.tail)} ({spec.kind})", sample_id=rid)
            if name in self._per_record:
                v = self._encode_record(name, v)
            self._pending[name].append(v)
            self._lengths[name].append(len(v) if spec.kind == "ragged" else 1)
            self._pending_bytes += v.nbytes
        self._ids.append(rid)
        if self._pending_bytes >= FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._failed is not None:
            raise self._failed
        batch = []
        for name, arrays in self._pending.items():
            if not arrays:
                continue
            spec = self.schema[name]
            if self._codecs.get(f"data/{name}") == "zero_runs":
                batch.append((f"data/{name}", _Chunks(spec.np_dtype, spec.tail, list(arrays))))
                arrays.clear()
                continue
            data = np.concatenate(arrays) if spec.kind == "ragged" else np.stack(arrays)
            if data.dtype.names is None:
                batch.append((f"data/{name}", data))
            else:
                batch += [(f"data/{name}/{col}", np.ascontiguousarray(data[col]))
                          for col in data.dtype.names]
            arrays.clear()
        self._pending_bytes = 0
        if batch:
            self._batches.put(batch)

    def close(self) -> int:
        """Finish the file (flush, fsync) and return its record count."""
        self._flush()
        self._end_writer()
        if self._failed is not None:
            raise self._failed
        f = self._f
        n = len(self._ids)
        schema = self.schema or {}
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        f.attrs["n"] = n
        f.attrs["schema"] = json.dumps({k: v.to_json() for k, v in schema.items()},
                                       sort_keys=True)
        for key, value in self._attrs.items():
            f.attrs[key] = (value if isinstance(value, (str, int, float))
                            else json.dumps(value, sort_keys=True))
        f.create_dataset("meta/id", data=np.array(self._ids, dtype=object),
                         dtype=h5py.string_dtype())
        for name, spec in schema.items():
            if spec.kind in ("ragged", "fixed") and f"data/{name}" not in f:
                self._create_empty(name, spec)
            if spec.kind == "str":
                f.create_dataset(f"data/{name}", data=np.array(self._small[name], dtype=object),
                                 dtype=h5py.string_dtype())
            elif spec.kind == "scalar":
                f.create_dataset(f"data/{name}", data=np.array(self._small[name], dtype=spec.np_dtype))
            elif spec.kind == "ragged":
                index = np.zeros(n + 1, dtype=np.int64)
                np.cumsum(self._lengths[name], out=index[1:])
                f.create_dataset(f"index/{name}", data=index)
        f.close()
        fsync_path(self.path)
        return n

    def _create_empty(self, name: str, spec: FieldSpec) -> None:
        """Datasets of a field that no record filled (a shard of skipped samples)."""
        dtype = spec.np_dtype
        cols = [(f"data/{name}", dtype)] if dtype.names is None else \
            [(f"data/{name}/{c}", dtype[c]) for c in dtype.names]
        for path, dt in cols:
            self._f.create_dataset(path, shape=(0, *spec.tail), dtype=dt)

    def abort(self) -> None:
        """Close and delete the unfinished file."""
        self._aborted = True
        self._end_writer()
        try:
            self._f.close()
        finally:
            os.unlink(self.path)


def write_shard_file(path: str, records: list[dict], attrs: dict,
                     schema: dict[str, FieldSpec] | None = None, fixed=frozenset()) -> dict:
    """Write `records` to a new file at `path`; returns the schema used."""
    w = ShardFileWriter(path, attrs, schema, fixed)
    try:
        for r in records:
            w.append(r)
        w.close()
    except BaseException:
        w.abort()
        raise
    return w.schema or {}


class ShardFile:
    """Read-only random access to one shard; indexes are loaded once at open."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._f = h5py.File(path, "r", rdcc_nbytes=READ_CACHE_BYTES)
        except OSError as e:
            raise ShardError(f"cannot open shard: {e}", path=path) from None
        try:
            if self._f.attrs.get("format") != FORMAT:
                raise ShardError("not an evpipe shard (format attribute)", path=path)
            if int(self._f.attrs["version"]) != VERSION:
                raise ShardError(f"shard version {self._f.attrs['version']} unsupported",
                                 path=path)
            self.n = int(self._f.attrs["n"])
            self.schema = {k: FieldSpec.from_json(v)
                           for k, v in json.loads(self._f.attrs["schema"]).items()}
            self.ids = [s.decode() if isinstance(s, bytes) else s for s in self._f["meta/id"][:]]
            self.index = {k: self._f[f"index/{k}"][:] for k, s in self.schema.items()
                          if s.kind == "ragged"}
            self._data = {k: self._f[f"data/{k}"] for k in self.schema}
            self._small = {k: self._data[k][:] for k, s in self.schema.items()
                           if s.kind in ("scalar", "str")}
            self._columns = {k: [(c, self._data[k][c]) for c in s.np_dtype.names]
                             for k, s in self.schema.items()
                             if s.kind in ("ragged", "fixed") and s.np_dtype.names}
        except ShardError:
            self._f.close()
            raise
        except (KeyError, ValueError, OSError) as e:
            self._f.close()
            raise ShardError(f"corrupt shard: {e}", path=path) from None

    @property
    def attrs(self) -> dict:
        return dict(self._f.attrs)

    def read(self, i: int, fields=None) -> dict:
        """Record i as a dict of NumPy arrays / scalars / strings, with its `id`."""
        if not 0 <= i < self.n:
            raise IndexError(i)
        out = {"id": self.ids[i]}
        for name in (fields or self.schema):
            spec = self.schema[name]
            if spec.kind in ("ragged", "fixed"):
                sel = (slice(self.index[name][i], self.index[name][i + 1])
                       if spec.kind == "ragged" else i)
                if name in self._columns:
                    out[name] = self._read_columns(name, spec, sel)
                else:
                    out[name] = self._data[name][sel]
            elif spec.kind == "str":
                v = self._small[name][i]
                out[name] = v.decode() if isinstance(v, bytes) else v
            else:
                out[name] = self._small[name][i].item()
        return out

    def _read_columns(self, name: str, spec: FieldSpec, sel) -> np.ndarray:
        cols = [(c, ds[sel]) for c, ds in self._columns[name]]
        out = np.empty(cols[0][1].shape, spec.np_dtype)
        for c, v in cols:
            out[c] = v
        return out

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
