"""Hostile input for every event format: truncations, byte flips and absurd size fields
end in an EvpipeError naming the file, or a clean (partial) read — never a crash, hang or
multi-GB allocation. Each format runs in its own subprocess (tests/io/fuzz_worker.py)."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

CASES = 160
TIMEOUT_S = 240

# (format, file under ../shared/data, or None for a file the test generates)
TARGETS = [
    ("dat", "prophesee_dat/NCARS_obj_004397_td.dat"),
]


@pytest.mark.parametrize("fmt,rel", TARGETS, ids=[t[0] for t in TARGETS])
def test_fuzz_format(fmt, rel, data_dir, tmp_path):
    src = data_dir / rel
    proc = subprocess.run([sys.executable, "-m", "tests.io.fuzz_worker", fmt, str(src), "1234",
                           str(CASES), str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    lines = proc.stdout.splitlines()
    last_case = next((ln for ln in reversed(lines) if ln.startswith("case ")), "no case started")
    assert proc.returncode == 0, (f"{fmt}: worker exited {proc.returncode} during {last_case}\n"
                                  + "\n".join(lines[-5:]) + proc.stderr[-3000:])
    outcomes = [ln.split(" ", 2)[2] for ln in lines if ln.startswith("ok ")]
    assert len(outcomes) == CASES
    # Both branches are exercised: some mutants read, some are rejected.
    assert any(o.startswith("read") for o in outcomes)
    assert any(not o.startswith("read") for o in outcomes)
