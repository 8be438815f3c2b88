"""Where window results go: JSON lines (stdout or a file)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from ..errors import StreamError


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"{type(v).__name__} is not JSON serialisable")


class JsonLinesSink:
    """One JSON object per line per window (`WindowResult.to_json`), then one summary line
    `{"summary": {...}}`; to `path`, or stdout when None. Lines are flushed as written."""

    def __init__(self, path=None, digest: bool = False):
        self.digest = digest
        self.path = path
        self.f = sys.stdout if path is None else open(path, "w", encoding="utf-8")

    def _write(self, obj: dict) -> None:
        try:
            self.f.write(json.dumps(obj, separators=(",", ":"), default=_plain) + "\n")
            self.f.flush()
        except BrokenPipeError:
            # the reader went away (e.g. `| head`): later writes go nowhere
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.f.fileno())
            raise StreamError("output closed by its reader (broken pipe)") from None

    def window(self, result) -> None:
        self._write(result.to_json(self.digest))

    def summary(self, summary: dict) -> None:
        self._write({"summary": summary})

    def close(self) -> None:
        if self.path is not None:
            self.f.close()
