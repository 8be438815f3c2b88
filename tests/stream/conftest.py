"""Helpers for the streaming tests: free loopback ports and bounded subprocesses."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_sigint() -> None:
    """Ctrl-C as at a terminal even when the tests run in a background job (shells start
    those with SIGINT ignored, and Python then never raises KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Proc:
    """`python -m evpipe.cli ARGS` with stdout/stderr in files; killed at teardown."""

    def __init__(self, tmp_path: Path, name: str, *args):
        self.out = tmp_path / f"{name}.out"
        self.err = tmp_path / f"{name}.err"
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            self.p = subprocess.Popen([sys.executable, "-m", "evpipe.cli",
                                       *map(str, args)], stdout=o, stderr=e, cwd=REPO,
                                      env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                      preexec_fn=_default_sigint)

    def wait(self, timeout: float) -> int:
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.p.args[3:]} still running after {timeout} s; "
                                 f"stderr:\n{self.stderr()}") from None

    def interrupt(self) -> None:
        self.p.send_signal(signal.SIGINT)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout().splitlines() if line.strip()]


@pytest.fixture
def cli(tmp_path):
    """Start CLI subprocesses: `cli("name", *args)`; all are killed at teardown."""
    procs: list[Proc] = []

    def start(name: str, *args) -> Proc:
        p = Proc(tmp_path, name, *args)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()
