"""`evpipe verify`: check a local copy of a dataset against its card.

Card keys read (datasets/<name>.json), all optional:

- `"layout"`: list of paths relative to the root that a complete copy holds, e.g.
  `"training/velodyne/NNNNNN.bin"`, `"sequences/XX/calib.txt"`, `"ImageSets/train.txt"`.
  In a path component, a run of two or more `N` or `X` (not next to another capital)
  stands for that many digits, and `*`/`?` are shell wildcards within the component; an
  entry is satisfied when at least one file matches it.
- `"splits"`: `{split: count}`; the count is compared with the number of items the
  registered loader lists (`DATASETS.get(name)(root, split).items()`). A non-integer value
  (e.g. SemanticKITTI's list of sequences) only opens the split.
- `"downloads"` (see `evpipe.download`): archives present in the root are checked
  against their `"bytes"`, `"md5"` and `"sha256"`.

`--deep` also decodes every item of every split through the loader (`records(item)`).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from .download import FileSpec, check_file, load_card
from .errors import ConfigError, DatasetError, EvpipeError
from .loaders import DATASETS

MAX_EXAMPLES = 3
_TOKEN = re.compile(r"(?<![A-Z])(?:N{2,}|X{2,})(?![A-Z])|[*?]")


@dataclass(frozen=True)
class Finding:
    """One checked thing: status "ok", "note", "missing" or "wrong"."""

    status: str
    what: str
    detail: str

    @property
    def problem(self) -> bool:
        return self.status in ("missing", "wrong")

    def line(self) -> str:
        return f"{self.status:<8} {self.what}: {self.detail}"


def component_regex(component: str) -> re.Pattern | None:
    """Regex for one layout path component; None when it has no placeholder."""
    out, pos = [], 0
    for m in _TOKEN.finditer(component):
        tok = m.group()
        out += [re.escape(component[pos:m.start()]),
                {"*": ".*", "?": "."}.get(tok, rf"\d{{{len(tok)}}}")]
        pos = m.end()
    if not out:
        return None
    return re.compile("".join(out) + re.escape(component[pos:]), re.DOTALL)


def match_layout(root: str | os.PathLike, pattern: str) -> tuple[int, str]:
    """(number of files under `root` matching layout `pattern`, "" or what is missing)."""
    parts = PurePosixPath(pattern).parts
    found = [Path(root)]
    for i, comp in enumerate(parts):
        last = i == len(parts) - 1
        rx = component_regex(comp)
        nxt = []
        for d in found:
            if rx is None:
                p = d / comp
                if p.is_file() if last else p.is_dir():
                    nxt.append(p)
                continue
            with os.scandir(d) as it:
                nxt += [Path(e.path) for e in it if rx.fullmatch(e.name)
                        and (e.is_file() if last else e.is_dir())]
        if not nxt:
            where = "/".join(parts[:i]) or "the root"
            kind = "file" if last else "folder"
            return 0, (f"no {kind} {comp} in {where}" if rx is None
                       else f"no {kind} matching {comp} in {where}")
        found = sorted(nxt)
    return len(found), ""


def _check_layout(card: dict, root: Path) -> list[Finding]:
    layout = card.get("layout")
    if not layout:
        return [Finding("note", "layout", "card gives no layout")]
    out = []
    for entry in layout:
        if not isinstance(entry, str):
            out.append(Finding("note", "layout", f"card entry {entry!r} is not a path; skipped"))
            continue
        n, missing = match_layout(root, entry)
        out.append(Finding("ok", f"layout {entry}", f"{n} file{'s' * (n != 1)}") if n
                   else Finding("missing", f"layout {entry}", missing))
    return out


def _check_archives(card: dict, root: Path, progress: bool) -> list[Finding]:
    entries = card.get("downloads")
    if not entries:
        return [Finding("note", "archives", "card lists no downloads")]
    out, absent = [], []
    for spec in (FileSpec.from_card(e) for e in entries):
        path = root / spec.file
        if path.with_name(path.name + ".part").is_file():
            out.append(Finding("note", f"archive {spec.file}",
                               "partial download present (rerun evpipe download to resume)"))
        if not path.is_file():
            absent.append(spec.file)
            continue
        ok, detail = check_file(path, spec, progress)
        out.append(Finding("ok" if ok else "wrong", f"archive {spec.file}", detail))
    if absent:
        out.append(Finding("note", "archives",
                           "not in the root, not checked: " + ", ".join(absent)))
    return out


def _missing_sources(loader, items: list) -> tuple[int, list[str]]:
    """(items with a missing source file, first few such files)."""
    bad, examples = 0, []
    for item in items:
        gone = [p for p in loader.source_files(item) if not Path(p).exists()]
        if gone:
            bad += 1
            examples += [str(p) for p in gone[:MAX_EXAMPLES - len(examples)]]
    return bad, examples


def _check_splits(name: str, card: dict, root: Path) -> tuple[list[Finding], dict]:
    """Split counts and source files; returns the findings and {split: (loader, items)}."""
    if name not in DATASETS:
        return [Finding("note", "splits", f"no loader registered for {name!r}; not checked")], {}
    loader_cls = DATASETS.get(name)
    splits = card.get("splits")
    if not isinstance(splits, dict) or not splits:
        splits = {s: None for s in loader_cls.splits}
    out, opened = [], {}
    for split, expected in splits.items():
        what = f"split {split}"
        try:
            loader = loader_cls(root, split)
            items = loader.items()
        except (EvpipeError, OSError) as e:
            out.append(Finding("wrong", what, f"loader failed: {e}"))
            continue
        opened[split] = (loader, items)
        n = len(items)
        if isinstance(expected, int) and not isinstance(expected, bool):
            out.append(Finding("ok", what, f"{n} items") if n == expected
                       else Finding("wrong", what, f"{n} items, card says {expected}"))
        else:
            out.append(Finding("note", what, f"{n} items (card gives no count)"))
        try:
            bad, examples = _missing_sources(loader, items)
        except NotImplementedError:
            continue
        except (EvpipeError, OSError) as e:
            out.append(Finding("wrong", what, f"loader failed listing source files: {e}"))
            continue
        if bad:
            out.append(Finding("missing", what, f"{bad} of {n} items lack source files, e.g. "
                               + ", ".join(examples)))
    return out, opened


def _decode_all(opened: dict, progress: bool) -> list[Finding]:
    """Open every item through its loader once (items shared by splits are decoded once)."""
    out, seen = [], set()
    for split, (loader, items) in opened.items():
        n_items = n_bad = 0
        for item in tqdm(items, desc=f"decoding {split}", unit="item", file=sys.stderr,
                         disable=not progress, leave=False):
            try:
                key = tuple(map(str, loader.source_files(item)))
            except NotImplementedError:
                key = None
            if key is not None:
                if key in seen:
                    continue
                seen.add(key)
            n_items += 1
            try:
                for _ in loader.records(item):
                    pass
            except (EvpipeError, OSError) as e:
                n_bad += 1
                out.append(Finding("wrong", f"sample {loader.item_id(item)} ({split})", str(e)))
        out.append(Finding("wrong" if n_bad else "ok", f"decode {split}",
                           f"{n_items - n_bad} of {n_items} items decode"
                           + (f" ({len(items) - n_items} already checked in another split)"
                              if n_items < len(items) else "")))
    return out


def verify(name: str, root: str | os.PathLike, *, deep: bool = False, progress: bool = False,
           card: dict | None = None) -> list[Finding]:
    """Check the copy of dataset `name` at `root` against its card (or `card`): layout,
    split counts and source files, archive checksums, and with `deep` every sample."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError("not a folder", path=root)
    card = load_card(name) if card is None else card
    if not isinstance(card, dict):
        raise ConfigError(f"card of {name!r} is not a JSON object")
    findings = _check_layout(card, root)
    split_findings, opened = _check_splits(name, card, root)
    findings += split_findings
    findings += _check_archives(card, root, progress)
    if deep:
        findings += _decode_all(opened, progress)
    return findings
