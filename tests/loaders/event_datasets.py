"""Helpers of the event-dataset loader tests: CLI conversion and direct encoder calls."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

import numpy as np

from evpipe.cli import main
from evpipe.encoders import ENCODINGS
from evpipe.loaders import DATASETS
from evpipe.shards import ShardDataset
from tests.helpers import run_cli

EVENT_ENCODINGS = ("events", "frames", "voxel_grid", "stacked_histogram", "time_surface",
                   "event_cloud", "poisson")


def convert(dataset: str, encoding: str, root, out, *args, params=None) -> ShardDataset:
    """`evpipe convert DATASET --to ENCODING --root ROOT --out OUT -q ARGS`, plus one flag
    per encoding parameter in `params` (must succeed)."""
    flags = [a for k, v in (params or {}).items() for a in (f"--{k.replace('_', '-')}", v)]
    run_cli("convert", dataset, "--to", encoding, "--root", root, "--out", out, "-q", *args,
            *flags, check=True)
    return ShardDataset(out)


def encoder(dataset: str, encoding: str, **overrides):
    """The encoding's parameters as the CLI builds them for `dataset`."""
    defaults = DATASETS.get(dataset).default_params.get(encoding, {})
    return ENCODINGS.get(encoding).make(**{**defaults, **overrides})


def assert_encoded(stored: dict, x, params, sensor_size=None) -> None:
    """Every field `params.encode(x)` gives equals the stored record's."""
    ref = params.encode(x, sensor_size=sensor_size, sample_id=stored["id"])
    assert ref
    for name, value in ref.items():
        np.testing.assert_array_equal(stored[name], value, err_msg=name)


def cli(*args) -> tuple[int, str, str]:
    """`evpipe ARGS` run in this process (quicker than `run_cli` for checks that do not
    need a fresh interpreter): (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def cli_error(*args) -> str:
    """stderr of an `evpipe` command that must fail with exit status 1."""
    rc, _, err = cli(*args)
    assert rc == 1, err
    return err
