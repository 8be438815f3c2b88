"""The package installs as declared: every subpackage listed, a non-editable wheel works."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_package_is_listed():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "evpipe").rglob("__init__.py")}
    assert found | {"evpipe.datasets"} == listed


def test_wheel_installs_and_converts_the_sample(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path / "wheel"), str(REPO)], check=True, capture_output=True)
    wheel = next((tmp_path / "wheel").glob("evpipe-*.whl"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import evpipe, evpipe.datasets; "
            "assert evpipe.__file__.startswith(sys.argv[1]), evpipe.__file__; "
            "assert evpipe.datasets.card('kitti')['sample']['synthetic']; "
            "from evpipe.cli import main; "
            "sys.exit(main(['convert', 'kitti', '--to', 'svc', '--out', 'o', '-q']))")
    env = dict(os.environ, EVPIPE_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-c", code, str(target)], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "samples      6" in proc.stdout
    assert (tmp_path / "o" / "manifest.json").is_file()


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    block = readme.split("2. Install the test extra")[1].split("```sh")[1].split("```")[0].strip()
    command = block.removeprefix(". .venv/bin/activate && ")
    assert command in (REPO / ".ci" / "run").read_text().splitlines()
