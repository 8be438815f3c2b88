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


def _cmd_convert(args, owners) -> int:
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
    out = args.out or Path("shards") / f"{args.dataset}{'-sample' if sample else ''}-{args.to}-{args.split}"
    loader_options = {k: getattr(args, f"opt_{k}") for k in getattr(loader_cls, "cli_options", {})
                      if getattr(args, f"opt_{k}", None) is not None}
    summary = convert(args.dataset, args.to, root=root, out=out, split=args.split,
                      params=_collect_params(args, owners, args.to),
                      loader_options=loader_options, workers=args.workers, limit=args.limit,
                      skip_bad=args.skip_bad, samples_per_shard=args.samples_per_shard,
                      progress=not args.quiet)
    if summary.already_complete:
        print("already complete: nothing to do", file=sys.stderr)
    print("\n".join(summary.lines()))
    return 0


def _cmd_info(args) -> int:
    from .info import info_lines
    print("\n".join(info_lines(args.path)))
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    from .encoders import ENCODINGS
    from .loaders import DATASETS
    p = argparse.ArgumentParser(prog="evpipe", description=__doc__)
    p.add_argument("--version", action="version", version=f"evpipe {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="convert a dataset into HDF5 shards of one encoding")
    c.add_argument("dataset", choices=DATASETS.names())
    c.add_argument("--to", required=True, choices=ENCODINGS.names(), help="encoding")
    c.add_argument("--root", help="local copy of the dataset (default: bundled sample, if any)")
    c.add_argument("--split", default="train", help="split name; " + "; ".join(
        f"{n}: {', '.join(DATASETS.get(n).splits)}" for n in DATASETS.names()))
    c.add_argument("--out", help="output folder (default: shards/<dataset>-<encoding>-<split>)")
    c.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    c.add_argument("--limit", type=int, help="convert only the first N samples")
    c.add_argument("--skip-bad", action="store_true",
                   help="skip unreadable samples (listed in the manifest) instead of stopping")
    c.add_argument("--samples-per-shard", type=int, default=256)
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    loader_group = c.add_argument_group("dataset options")
    seen = set()
    for name in DATASETS.names():
        for opt, (typ, help_) in getattr(DATASETS.get(name), "cli_options", {}).items():
            if opt not in seen:
                seen.add(opt)
                kw = {"action": argparse.BooleanOptionalAction} if typ is bool else {"type": typ}
                loader_group.add_argument(_flag(opt), dest=f"opt_{opt}", default=None,
                                          help=f"({name}) {help_}", **kw)
    owners = _add_param_flags(c, ENCODINGS, "encoding")

    i = sub.add_parser("info", help="summarise a shard set, a shard file or an event file")
    i.add_argument("path")
    return p, owners


def main(argv=None) -> int:
    parser, owners = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "convert":
            return _cmd_convert(args, owners)
        if args.command == "info":
            return _cmd_info(args)
    except EvpipeError as e:
        print(f"evpipe: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("evpipe: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
