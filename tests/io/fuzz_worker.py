"""Fuzz worker: `python -m tests.io.fuzz_worker FORMAT FILE SEED CASES WORKDIR`.

Runs CASES mutations of FILE through the FORMAT reader under a 3 GiB address-space
limit. Prints `case <k> <kind>` before each case and `ok <k> <outcome>` after it, so the
parent test can name the case that crashed the interpreter; exits 1 on the first
exception that is not an EvpipeError.
"""

from __future__ import annotations

import resource
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np


def mutations(data: bytes, rng: np.random.Generator, cases: int):
    """(kind, mutated bytes): truncations, byte flips and absurd 32-bit size fields."""
    n = len(data)
    head = min(n, 4096)
    for k in range(cases):
        kind = k % 4
        if kind == 0:
            cut = int(rng.integers(0, n)) if k % 8 else int(rng.integers(0, head))
            yield f"truncate@{cut}", data[:cut]
        elif kind == 1:
            buf = bytearray(data)
            for pos in rng.integers(0, n, size=int(rng.integers(1, 16))):
                buf[pos] ^= int(rng.integers(1, 256))
            yield "flip", bytes(buf)
        elif kind == 2:
            buf = bytearray(data)
            for pos in rng.integers(0, head, size=int(rng.integers(1, 6))):
                buf[pos] ^= int(rng.integers(1, 256))
            yield "flip-head", bytes(buf)
        else:
            buf = bytearray(data)
            pos = int(rng.integers(0, max(head - 4, 1)))
            buf[pos:pos + 4] = rng.choice([b"\xff\xff\xff\x7f", b"\xff\xff\xff\xff",
                                           b"\x00\x00\x00\x80", b"\xff\xff\x00\x00"])
            yield f"size@{pos}", bytes(buf[:n])


def run(fmt: str, path: Path, seed: int, cases: int, workdir: Path) -> int:
    from evpipe.errors import EvpipeError
    from evpipe.io import EvpipeWarning, open_events

    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    warnings.simplefilter("ignore", EvpipeWarning)
    data = path.read_bytes()
    rng = np.random.default_rng(seed)
    target = workdir / f"fuzz{path.suffix}"
    for k, (kind, blob) in enumerate(mutations(data, rng, cases)):
        print(f"case {k} {kind}", flush=True)
        target.write_bytes(blob)
        try:
            with open_events(target, fmt) as r:
                n = len(r.read())
                m = sum(len(c) for c in r.iter_chunks(n_events=4096))
            if n != m:
                print(f"FAIL {k} {kind}: read() gave {n} events, chunks {m}", flush=True)
                return 1
            outcome = f"read {n}"
        except EvpipeError as e:
            if str(target) not in str(e):
                print(f"FAIL {k} {kind}: error does not name the file: {e}", flush=True)
                return 1
            outcome = type(e).__name__
        except Exception:
            print(f"FAIL {k} {kind}:\n{traceback.format_exc()}", flush=True)
            return 1
        print(f"ok {k} {outcome}", flush=True)
    return 0


if __name__ == "__main__":
    fmt, file, seed, cases, workdir = sys.argv[1:6]
    sys.exit(run(fmt, Path(file), int(seed), int(cases), Path(workdir)))
