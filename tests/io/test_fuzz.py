"""Hostile input for every event format: truncations, byte flips and absurd size fields
end in an EvpipeError naming the file, or a clean (partial) read — never a crash, hang or
multi-GB allocation. Each format runs in its own subprocess (tests/io/fuzz_worker.py)."""

import subprocess
import sys
from pathlib import Path

import pytest

from evpipe.io import write_events
from tests.conftest import REPO
from tests.io import aedat_fixtures as fx

CASES = 160
TIMEOUT_S = 240


def _aedat2(path):
    ev = fx.random_events(3000, 346, 260, seed=1)
    fx.write_aedat2(path, ev, "DAVIS346B", imu_words=70)


def _aedat3(path):
    ev = fx.random_events(3000, 128, 128, seed=2)
    fx.write_aedat31(path, ev, extra_packets=[(1, fx.imu6_packet(ev["t"][:5]))],
                     packet_events=500)


def _h5(path):
    write_events(path, fx.random_events(3000, 304, 240, seed=3), "h5", (304, 240))


# (format, real file under ../shared/data or a function writing a generated one, whether
# some mutants must be rejected: headerless formats read any bytes as events, and the
# RAW decoders skip unknown words)
TARGETS = [
    ("dat", "prophesee_dat/NCARS_obj_004397_td.dat", True),
    ("nmnist", "nmnist_bin/tonic_sample_nmnist.bin", False),
    ("evt2", "prophesee_evt2/evt2_sparklers_old.raw", False),
    ("evt3", "prophesee_evt3/evt3_pedestrians_small.raw", False),
    ("aedat4", "aedat4/tonic_sample.aedat4", True),
    ("aedat2", _aedat2, True),
    ("aedat3", _aedat3, True),
    ("h5", _h5, True),
]


@pytest.mark.parametrize("fmt,source,rejects", TARGETS, ids=[t[0] for t in TARGETS])
def test_fuzz_format(fmt, source, rejects, data_dir, tmp_path):
    if callable(source):
        src = tmp_path / f"source.{fmt}"
        source(src)
    else:
        src = data_dir / source
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
    assert any(not o.startswith("read") for o in outcomes) == rejects
