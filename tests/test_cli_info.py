"""`evpipe info` on event files (streamed statistics)."""

from tests.helpers import run_cli


def test_info_event_file(data_dir):
    out = run_cli("info", data_dir / "prophesee_dat" / "NCARS_obj_004397_td.dat", check=True).stdout
    assert "format       dat" in out
    assert "sensor size  304x240 (assumed" in out
    assert "events       4407" in out
    assert "time         0 .. 99937 us" in out
    assert "polarity     1671 ON (37.9 %), 2736 OFF" in out
    assert "x, y max     53, 60" in out and "monotonic    yes" in out


def test_info_bad_file(tmp_path):
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"% Data file containing EventCD events.\n" + bytes([14, 8]))
    proc = run_cli("info", bad)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"evpipe: error: {bad}, offset 39: event type 14 is not a CD event type (0 or 12)"
