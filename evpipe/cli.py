"""The `evpipe` command."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path

from . import __version__
from .errors import ConfigError, EvpipeError


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _field_type(cls, f: dataclasses.Field):
    """The field's type with Optional stripped (`int | None` -> int)."""
    hint = typing.get_type_hints(cls)[f.name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _add_param_flags(parser: argparse.ArgumentParser, registry, what: str) -> dict[str, set]:
    """One flag per dataclass field over all registered entries; returns flag -> owners."""
    owners: dict[str, set] = {}
    group = parser.add_argument_group(f"{what} parameters (each applies to the {what}s named)")
    seen: dict[str, argparse.Action] = {}
    for name in registry.names():
        cls = registry.get(name).params
        for f in dataclasses.fields(cls):
            owners.setdefault(f.name, set()).add(name)
            if f.name in seen:
                continue
            typ = _field_type(cls, f)
            kw: dict = {"dest": f"param_{f.name}", "default": None}
            default = f.default
            if typing.get_origin(typ) is tuple or isinstance(default, tuple):
                kw.update(nargs=len(default) if isinstance(default, tuple) else "+", type=float,
                          metavar="V")
            elif typ is bool:
                kw["action"] = argparse.BooleanOptionalAction
            else:
                kw["type"] = typ if typ in (int, float, str) else str
            if "nargs" not in kw and "action" not in kw:
                kw["metavar"] = {int: "N", float: "X"}.get(kw["type"], "NAME")
            seen[f.name] = group.add_argument(_flag(f.name), help=f.metadata.get("help", ""), **kw)
    for fname, action in seen.items():
        action.help = f"{action.help} ({', '.join(sorted(owners[fname]))})".strip()
    return owners


def _collect_params(args, owners: dict[str, set], encoding: str) -> dict:
    params = {}
    for fname, names in owners.items():
        value = getattr(args, f"param_{fname}")
        if value is None:
            continue
        if encoding not in names:
            raise ConfigError(f"{_flag(fname)} does not apply to encoding {encoding!r} "
                              f"(it belongs to {', '.join(sorted(names))})")
        params[fname] = tuple(value) if isinstance(value, list) else value
    return params


def _cmd_convert(args) -> int:
    from .convert import convert
    from .loaders import DATASETS
    loader_cls = DATASETS.get(args.dataset)
    root = args.root
    sample = False
    if root is None:
        if not hasattr(loader_cls, "sample_root"):
            raise ConfigError(f"--root is required for {args.dataset!r} (no bundled sample); "
                              f"datasets with a bundled sample: "
                              + ", ".join(n for n in DATASETS.names()
                                          if hasattr(DATASETS.get(n), "sample_root")))
        root = loader_cls.sample_root()
        sample = True
        print(f"no --root given: converting the bundled SYNTHETIC {args.dataset} sample at {root}",
              file=sys.stderr)
    split = args.split or loader_cls.splits[0]
    out = args.out or Path("shards") / f"{args.dataset}{'-sample' if sample else ''}-{args.to}-{split}"
    loader_options = {}
    for name, owner_names in args.loader_owners.items():
        value = getattr(args, f"opt_{name}")
        if value is None:
            continue
        if args.dataset not in owner_names:
            raise ConfigError(f"{_flag(name)} does not apply to dataset {args.dataset!r} "
                              f"(it belongs to {', '.join(sorted(owner_names))})")
        loader_options[name] = value
    summary = convert(args.dataset, args.to, root=root, out=out, split=split,
                      params=_collect_params(args, args.param_owners, args.to),
                      loader_options=loader_options, workers=args.workers, limit=args.limit,
                      skip_bad=args.skip_bad, samples_per_shard=args.samples_per_shard,
                      progress=not args.quiet, scheduler=args.scheduler)
    if summary.already_complete:
        print("already complete: nothing to do", file=sys.stderr)
    print("\n".join(summary.lines()))
    return 0


def _cmd_verify_shards(args) -> int:
    from .shards.verify import verify_shards
    problems, manifest = verify_shards(args.path, decode=not args.quick)
    for line in problems:
        print(line)
    n = len(manifest["shards"])
    bad = sorted({line.split(":")[0] for line in problems if line.startswith("shard-")})
    print(f"{args.path}: {n} shard(s), {manifest['total_samples']} samples: "
          + ("intact" if not problems else f"{len(problems)} problem(s); bad shards: "
             + (", ".join(bad) or "none")))
    return 1 if problems else 0


def _cmd_info(args) -> int:
    from .info import info_lines
    print("\n".join(info_lines(args.path)))
    return 0


def _cmd_view(args) -> int:
    from .view import view
    # Flags the view's own options took over (e.g. --window-us) have no param_ attribute.
    owners = {f: names for f, names in args.view_owners.items() if hasattr(args, f"param_{f}")}
    params = _collect_params(args, owners, args.encoding) if args.encoding else {}
    if not args.encoding and any(getattr(args, f"param_{f}") is not None for f in owners):
        raise ConfigError("encoding parameters need --encoding")
    out = view(args.input, args.out, args.encoding, params, sample=args.sample,
               t_start_us=args.t_start_us, window_us=args.window_us, n_events=args.n_events,
               color_by=args.color_by)
    print(out)
    return 0


def _cmd_download(args) -> int:
    from tqdm import tqdm

    from .download import DownloadError, ManualDownload, download_dataset

    def log(msg: str) -> None:
        tqdm.write(f"evpipe: {msg}", file=sys.stderr)

    try:
        results = download_dataset(args.dataset, args.root, only=args.only,
                                   mirrors=args.mirror or (), timeout=args.timeout,
                                   retries=args.retries, progress=not args.quiet, log=log)
    except DownloadError as e:
        for r in e.results:
            print(r.line())
        if isinstance(e, ManualDownload):
            print(e.instructions)
        raise
    for r in results:
        print(r.line())
    return 0


def _cmd_verify(args) -> int:
    from .verify import verify
    findings = verify(args.dataset, args.root, deep=args.deep, progress=not args.quiet)
    print("\n".join(f.line() for f in findings))
    problems = sum(f.problem for f in findings)
    print(f"{args.dataset} at {args.root}: "
          + (f"{problems} problem{'s' * (problems != 1)}" if problems else "no problems found"))
    return 1 if problems else 0


def build_parser() -> argparse.ArgumentParser:
    from .download import card_names
    from .encoders import ENCODINGS
    from .loaders import DATASETS
    from .stream.cli import add_parsers as add_stream_parsers
    from .train_cli import add_parsers as add_train_parsers
    p = argparse.ArgumentParser(prog="evpipe", description=__doc__)
    p.add_argument("--version", action="version", version=f"evpipe {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="convert a dataset into HDF5 shards of one encoding")
    c.add_argument("dataset", choices=DATASETS.names())
    c.add_argument("--to", required=True, choices=ENCODINGS.names(), help="encoding")
    c.add_argument("--root", help="local copy of the dataset (default: bundled sample, if any)")
    c.add_argument("--split", help="split name (default: the dataset's first); " + "; ".join(
        f"{n}: {', '.join(DATASETS.get(n).splits)}" for n in DATASETS.names()))
    c.add_argument("--out", help="output folder (default: shards/<dataset>-<encoding>-<split>)")
    c.add_argument("--workers", type=int, default=1, help="local processes (default 1)")
    c.add_argument("--scheduler", metavar="ADDR",
                   help="run the shards on a Dask cluster (tcp://host:port); workers need "
                        "evpipe and the same paths to --root and --out")
    c.add_argument("--limit", type=int, help="convert only the first N samples")
    c.add_argument("--skip-bad", action="store_true",
                   help="skip unreadable samples (listed in the manifest) instead of stopping")
    c.add_argument("--samples-per-shard", type=int, default=256)
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    loader_group = c.add_argument_group("dataset options (each applies to the datasets named)")
    loader_owners: dict[str, set] = {}
    for name in DATASETS.names():
        for opt, (typ, help_) in DATASETS.get(name).cli_options.items():
            if opt not in loader_owners:
                kw = ({"action": argparse.BooleanOptionalAction} if typ is bool else
                      {"type": typ, "metavar": {int: "N", float: "X"}.get(typ, "NAME")})
                loader_group.add_argument(_flag(opt), dest=f"opt_{opt}", default=None,
                                          help=help_, **kw)
            loader_owners.setdefault(opt, set()).add(name)
    for action in loader_group._group_actions:
        names = loader_owners[action.dest.removeprefix("opt_")]
        action.help = f"{action.help} ({', '.join(sorted(names))})"
    c.set_defaults(func=_cmd_convert, loader_owners=loader_owners,
                   param_owners=_add_param_flags(c, ENCODINGS, "encoding"))

    i = sub.add_parser("info", help="summarise a shard set, a shard file or an event file")
    i.add_argument("path")
    i.set_defaults(func=_cmd_info)

    vs = sub.add_parser("verify-shards", help="check a shard set: checksums, indexes, "
                                              "counts, every sample decodes")
    vs.add_argument("path")
    vs.add_argument("--quick", action="store_true", help="skip decoding every sample")
    vs.set_defaults(func=_cmd_verify_shards)

    # "resolve": the view's own flags, added after the encoding parameters, take over
    # parameter flags of the same name (event_cloud's --window-us: here the window is picked
    # from the file and drawn as one cloud).
    v = sub.add_parser("view", conflict_handler="resolve",
                       help="draw an event window, a KITTI scan or a stored sample as a PNG")
    view_owners = _add_param_flags(v, ENCODINGS, "encoding")
    v.add_argument("input", help="event file, KITTI velodyne .bin scan, shard set folder or "
                                 "shard .h5 file")
    v.add_argument("--encoding", choices=ENCODINGS.names(),
                   help="encoding to draw (default: a shard set's own; events for event "
                        "files; svc for scans)")
    v.add_argument("--out", required=True, help="picture to write (.png, .svg or .pdf)")
    v.add_argument("--sample", type=int, default=0, help="shard sample number (default 0)")
    w = v.add_argument_group("event file window (default: the first 50 ms)")
    w.add_argument("--t-start-us", type=int, metavar="N",
                   help="window start, microseconds after the first event (default 0)")
    size = w.add_mutually_exclusive_group()
    size.add_argument("--window-us", type=int, metavar="N", help="window length, microseconds")
    size.add_argument("--n-events", type=int, metavar="N", help="window length, events")
    v.add_argument("--color-by", choices=("height", "count"), default="height",
                   help="svc bird's-eye view colour: voxel height or spike count")
    v.set_defaults(func=_cmd_view, view_owners=view_owners)

    cards = card_names()
    d = sub.add_parser("download", help="fetch a dataset's public files into a folder "
                                        "(resumable, checksum-verified, several mirrors)")
    d.add_argument("dataset", choices=cards)
    d.add_argument("--root", required=True, help="folder to download into")
    d.add_argument("--only", nargs="+", metavar="FILE", help="only these files of the card")
    d.add_argument("--mirror", action="append", metavar="URL",
                   help="base URL holding the files (URL/<file>), tried before the card's; "
                        "repeatable")
    d.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds to wait for a connection or data (default 30)")
    d.add_argument("--retries", type=int, default=3, metavar="N",
                   help="resumes per mirror after a dropped connection (default 3)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=_cmd_download)

    y = sub.add_parser("verify", help="check a local copy of a dataset against its card")
    y.add_argument("dataset", choices=cards)
    y.add_argument("--root", required=True, help="the local copy")
    y.add_argument("--deep", action="store_true",
                   help="also decode every sample through the loader")
    y.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    y.set_defaults(func=_cmd_verify)

    add_train_parsers(sub)
    add_stream_parsers(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EvpipeError as e:
        print(f"evpipe: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("evpipe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
