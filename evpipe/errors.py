"""Exceptions raised for bad input. Every one names where the problem is."""

from __future__ import annotations

import os


class EvpipeError(Exception):
    """Base class: a failure caused by input (file, config, packet, sample).

    `path`, `offset` (bytes into the file) and `sample_id` locate the problem;
    `str(err)` is one line that names them.
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None,
                 offset: int | None = None, sample_id: str | None = None):
        self.message = message
        self.path = None if path is None else os.fspath(path)
        self.offset = offset
        self.sample_id = sample_id
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path)
        if self.offset is not None:
            where.append(f"offset {self.offset}")
        if self.sample_id is not None:
            where.append(f"sample {self.sample_id}")
        return f"{': '.join([', '.join(where), self.message]) if where else self.message}"

    def __reduce__(self):
        # Exceptions cross process boundaries (worker pools) with their location intact.
        return (_rebuild, (type(self), self.message, self.path, self.offset, self.sample_id))


def _rebuild(cls, message, path, offset, sample_id):
    return cls(message, path=path, offset=offset, sample_id=sample_id)


class FormatError(EvpipeError):
    """A file's bytes do not follow its format (bad header, truncated record, bad value)."""


class ConfigError(EvpipeError):
    """A parameter or option is out of range or inconsistent."""


class DatasetError(EvpipeError):
    """A dataset tree is missing files or does not follow the expected layout."""


class ShardError(EvpipeError):
    """A shard set is incomplete, corrupt, or was built with other parameters."""


class StreamError(EvpipeError):
    """A live source failed: connection, protocol or packet problem."""
