"""`evpipe download`: fetch a dataset's public files as its card lists them.

Transfers are resumable (HTTP Range on `<file>.part`; a server that answers 200 instead of
206 restarts the file), streamed in 1 MiB chunks, checked against the card's size and
checksums before the final rename, and tried on each mirror in turn (connection errors,
HTTP errors, timeouts and checksum mismatches move on to the next one). Redirects are
followed only to http(s) URLs. Archives can be unpacked into the root; a member with an
absolute path or `..`, or a link leading outside, rejects the archive.

Card keys read (datasets/<name>.json), all optional:

- `"downloads"`: list of `{"file": NAME, "url": URL, "urls": [URL, ...], "md5": HEX,
  "sha256": HEX, "bytes": N, "extract": true | "zip" | "tar", "dest": SUBFOLDER,
  "note": TEXT}`. NAME is a path relative to the root (no `..`) where the file is kept.
  `url` and `urls` (mirrors, tried in that order) are http(s) only; an entry without any
  must be fetched by hand. `md5`/`sha256` as published; `extract: true` tells the archive
  type from the content; archives unpack into ROOT/SUBFOLDER (default ROOT).
- `"manual"`: how to obtain the files when they cannot be fetched automatically (login,
  licence click-through, dead host); when present, nothing is fetched unless `--mirror` is
  given. Without it, `"obtain"` says where the files come from.
- `"licence"`, `"layout"` (see `evpipe.verify`): shown in the manual instructions.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import posixpath
import re
import shutil
import stat
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from . import __version__
from .errors import ConfigError, DatasetError

CHUNK = 1 << 20
ALGOS = ("sha256", "md5")
_HEX_LEN = {"sha256": 64, "md5": 32}

Log = Callable[[str], None]


class DownloadError(DatasetError):
    """Some files could not be fetched; `results` holds every file's outcome."""

    def __init__(self, message: str, results: list["Result"], **kw):
        super().__init__(message, **kw)
        self.results = results


class ManualDownload(DownloadError):
    """Files that must be fetched by hand; `instructions` says where from and where to."""

    def __init__(self, message: str, results: list["Result"], instructions: str):
        super().__init__(message, results)
        self.instructions = instructions


def card_names() -> list[str]:
    """Names of the datasets that have a card."""
    return sorted(p.name[:-5] for p in resources.files("evpipe.datasets").iterdir()
                  if p.name.endswith(".json"))


def load_card(name: str) -> dict:
    """The card of `name`; ConfigError when there is none."""
    from .datasets import card
    try:
        return card(name)
    except FileNotFoundError:
        raise ConfigError(f"no dataset card for {name!r}; cards: "
                          f"{', '.join(card_names())}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"dataset card of {name!r} is not valid JSON: {e}") from None


def _relative(path: str, what: str) -> str:
    p = PurePosixPath(path.replace("\\", "/"))
    if not path or p.is_absolute() or ".." in p.parts or re.match(r"[A-Za-z]:", path):
        raise ConfigError(f"{what} {path!r} must be a relative path without '..'")
    return str(p)


def _check_url(url: str, what: str) -> str:
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        raise ConfigError(f"{what}: {url!r} is not an http(s) URL")
    return url


@dataclass(frozen=True)
class FileSpec:
    """One downloadable file of a card's `"downloads"` list (see module doc)."""

    file: str
    urls: tuple[str, ...] = ()
    sha256: str | None = None
    md5: str | None = None
    bytes: int | None = None
    extract: str | None = None  # "zip", "tar" or "auto"
    dest: str = ""
    note: str = ""

    @classmethod
    def from_card(cls, entry: dict) -> "FileSpec":
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise ConfigError(f"card downloads entry {entry!r} has no \"file\" name")
        name = _relative(entry["file"], "card downloads file")
        what = f"card downloads entry {name!r}"
        urls = entry.get("urls", [])
        if isinstance(urls, str) or not all(isinstance(u, str) for u in urls):
            raise ConfigError(f"{what}: \"urls\" must be a list of URLs")
        urls = ([entry["url"]] if entry.get("url") else []) + list(urls)
        sums = {}
        for algo in ALGOS:
            value = entry.get(algo)
            if value is not None:
                if not re.fullmatch(rf"[0-9a-fA-F]{{{_HEX_LEN[algo]}}}", str(value)):
                    raise ConfigError(f"{what}: {algo} {value!r} is not "
                                      f"{_HEX_LEN[algo]} hex digits")
                sums[algo] = str(value).lower()
        size = entry.get("bytes")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise ConfigError(f"{what}: \"bytes\" must be a non-negative integer")
        extract = entry.get("extract")
        if extract not in (None, False, True, "zip", "tar"):
            raise ConfigError(f"{what}: \"extract\" must be true, \"zip\" or \"tar\"")
        dest = entry.get("dest") or ""
        return cls(file=name, urls=tuple(_check_url(u, what) for u in urls), bytes=size,
                   extract="auto" if extract is True else (extract or None),
                   dest=_relative(dest, f"{what}: dest") if dest else "",
                   note=str(entry.get("note", "")), **sums)

    @property
    def checksums(self) -> dict[str, str]:
        return {a: getattr(self, a) for a in ALGOS if getattr(self, a)}


@dataclass
class Result:
    """What happened to one file: status "downloaded", "present" or "failed"."""

    file: str
    path: Path
    status: str
    detail: str = ""
    url: str | None = None
    extracted_to: Path | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def line(self) -> str:
        text = f"{self.file}: {self.status}"
        if self.url:
            text += f" from {self.url}"
        if self.detail:
            text += f" ({self.detail})"
        if self.extracted_to:
            text += f", unpacked into {self.extracted_to}"
        if self.errors:
            text += ": " + "; ".join(self.errors)
        return text


def human_bytes(n: float) -> str:
    """`n` bytes in decimal units (29.1 GB)."""
    if n < 1000:
        return f"{int(n)} bytes"
    for unit in ("kB", "MB", "GB"):
        n /= 1000
        if n < 1000:
            break
    else:
        n, unit = n / 1000, "TB"
    return f"{n:.1f} {unit}"


def file_digests(path: str | os.PathLike, algos: Iterable[str], progress: bool = False,
                 upto: int | None = None) -> dict:
    """Hash objects of the first `upto` bytes (default all) of `path`, read in chunks."""
    hashers = {a: hashlib.new(a) for a in algos}
    total = os.path.getsize(path) if upto is None else upto
    with open(path, "rb") as f, tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr,
                                     disable=not progress or not hashers, leave=False,
                                     desc=f"checking {Path(path).name}") as bar:
        left = total
        while hashers and left > 0:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                break
            for h in hashers.values():
                h.update(chunk)
            left -= len(chunk)
            bar.update(len(chunk))
    return hashers


def judge(spec: FileSpec, size: int, digests: dict) -> tuple[bool, str]:
    """(ok, description) of a file of `size` bytes whose hash objects are `digests`."""
    if spec.bytes is not None and size != spec.bytes:
        return False, f"{size} bytes, card says {spec.bytes}"
    sums = spec.checksums
    if not sums:
        return True, ("size matches; card gives no checksum" if spec.bytes is not None
                      else "card gives no checksum or size: not verified")
    for algo, want in sums.items():
        got = digests[algo].hexdigest()
        if got != want:
            return False, f"{algo} mismatch: got {got}, card says {want}"
    return True, " and ".join(sums) + " ok"


def check_file(path: str | os.PathLike, spec: FileSpec, progress: bool = False) -> tuple[bool, str]:
    """Check a local file against its card entry: size, then every checksum given."""
    size = os.path.getsize(path)
    if spec.bytes is not None and size != spec.bytes:
        return judge(spec, size, {})
    return judge(spec, size, file_digests(path, spec.checksums, progress))


class _SourceFailed(Exception):
    """This URL cannot deliver the file; the reason is the message."""


class _Interrupted(_SourceFailed):
    """The transfer stopped after some bytes arrived; resuming may finish it."""


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            fp.close()
            raise _SourceFailed(f"redirect to {newurl!r} refused (only http/https)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def _total_from_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from a Content-Range header."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    first, total = m.groups()
    return (int(first) if first else None), (int(total) if total != "*" else None)


def _transfer(url: str, part: Path, spec: FileSpec, timeout: float, progress: bool,
              log: Log) -> dict:
    """Fetch `url` into `part`, continuing what is there; returns the file's hash objects."""
    offset = part.stat().st_size if part.exists() else 0
    if spec.bytes is not None and offset > spec.bytes:
        part.unlink()
        offset = 0
    headers = {"User-Agent": f"evpipe/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = _OPENER.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        _, total = _total_from_range(e.headers.get("Content-Range") if e.headers else None)
        e.close()
        if e.code == 416 and offset and total == offset:
            return file_digests(part, spec.checksums, progress)  # the part was already whole
        if e.code == 416 and offset:
            part.unlink()
            raise _Interrupted(f"server refused the range from byte {offset} (HTTP 416); "
                               "partial file dropped") from None
        raise _SourceFailed(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise _SourceFailed(_reason(e.reason, timeout) if isinstance(e.reason, BaseException)
                            else str(e.reason)) from None
    except (TimeoutError, http.client.HTTPException, OSError) as e:
        raise _SourceFailed(_reason(e, timeout)) from None
    with resp:
        if resp.status == 206:
            first, total = _total_from_range(resp.headers.get("Content-Range"))
            if first != offset:
                raise _SourceFailed(f"206 answer starts at byte {first}, asked for {offset}")
        else:
            if offset:
                log(f"{spec.file}: {url} ignored the range request; restarting from byte 0")
                offset = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if spec.bytes is not None and total is not None and total != spec.bytes:
            raise _SourceFailed(f"server has {total} bytes, card says {spec.bytes}")
        need = (total if total is not None else spec.bytes or 0) - offset
        free = shutil.disk_usage(part.parent).free
        if need > free:
            raise DatasetError(f"needs {human_bytes(need)} of free space, "
                               f"{human_bytes(free)} left", path=part.parent)
        digests = file_digests(part, spec.checksums, progress, upto=offset) if offset else \
            {a: hashlib.new(a) for a in spec.checksums}
        return _stream(resp, part, offset, total, digests, spec.file, timeout, progress)


def _reason(e: BaseException, timeout: float) -> str:
    if isinstance(e, TimeoutError):
        return f"timed out after {timeout:g} s"
    return str(e) or type(e).__name__


def _stream(resp, part: Path, offset: int, total: int | None, digests: dict, name: str,
            timeout: float, progress: bool) -> dict:
    got = offset
    with open(part, "r+b" if offset else "wb") as f, \
            tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                 file=sys.stderr, disable=not progress, desc=name, dynamic_ncols=True) as bar:
        f.seek(offset)
        f.truncate()
        try:
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                for h in digests.values():
                    h.update(chunk)
                got += len(chunk)
                bar.update(len(chunk))
        except (TimeoutError, http.client.HTTPException, OSError) as e:
            reason = f"{_reason(e, timeout)} after byte {got}"
        else:
            reason = None if total is None or got >= total else \
                f"connection closed after {got} of {total} bytes"
        f.flush()
        os.fsync(f.fileno())
    if reason is not None:
        raise (_Interrupted if got > offset else _SourceFailed)(reason)
    return digests


def _from_url(url: str, part: Path, spec: FileSpec, timeout: float, retries: int,
              progress: bool, log: Log) -> str:
    """Fetch `url` into a verified `part` (resuming up to `retries` times); returns the
    verification text. A mismatch on a resumed file retries once from byte 0."""
    attempts, restarted = 0, False
    while True:
        resumed = part.exists() and part.stat().st_size > 0
        try:
            digests = _transfer(url, part, spec, timeout, progress, log)
        except _Interrupted as e:
            attempts += 1
            if attempts > retries:
                raise
            log(f"{spec.file}: {url}: {e}; resuming ({attempts}/{retries})")
            continue
        ok, text = judge(spec, part.stat().st_size, digests)
        if ok:
            return text
        part.unlink()
        if resumed and not restarted:
            restarted = True
            log(f"{spec.file}: {text} on a resumed file; downloading it again from byte 0")
            continue
        raise _SourceFailed(text)


def download_file(spec: FileSpec | dict, root: str | os.PathLike, *, mirrors: Sequence[str] = (),
                  timeout: float = 30.0, retries: int = 3, progress: bool = True,
                  log: Log | None = None) -> Result:
    """Make ROOT/<file> a verified copy (and unpack it if the card says so).

    A present file that passes the card's checks is kept. Otherwise each base URL of
    `mirrors` (+ "/<file>") and then the card's URLs are tried in order. Raises
    DatasetError naming every source's failure.
    """
    spec = spec if isinstance(spec, FileSpec) else FileSpec.from_card(spec)
    if not timeout > 0 or retries < 0:
        raise ConfigError(f"timeout must be > 0 and retries >= 0 (got {timeout}, {retries})")
    log = log or (lambda msg: None)
    root = Path(root)
    target = root / spec.file
    urls = [_check_url(m.rstrip("/") + "/" + urllib.parse.quote(spec.file), "--mirror")
            for m in mirrors] + list(spec.urls)
    result = Result(spec.file, target, "present")
    if target.is_file():
        ok, result.detail = check_file(target, spec, progress)
        if not ok:
            if not urls:
                raise DatasetError(f"{result.detail}, and the card gives no URL to fetch it "
                                   "again", path=target)
            log(f"{spec.file}: present but {result.detail}; downloading it again")
    elif not urls:
        raise DatasetError("not present, and the card gives no URL", path=target)
    else:
        ok = False
    if not ok:
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        errors = []
        for url in urls:
            try:
                result.detail = _from_url(url, part, spec, timeout, retries, progress, log)
            except _SourceFailed as e:
                errors.append(f"{url}: {e}")
                log(f"{spec.file}: {url} failed: {e}"
                    + ("; trying the next mirror" if url != urls[-1] else ""))
                continue
            os.replace(part, target)
            result.status, result.url = "downloaded", url
            break
        else:
            raise DatasetError(f"every source failed: {'; '.join(errors)}", path=target)
    if spec.extract:
        result.extracted_to = _extract_once(target, spec, root, log)
    return result


def _extract_once(archive: Path, spec: FileSpec, root: Path, log: Log) -> Path | None:
    """Unpack `archive` unless the marker left by an earlier run matches it."""
    dest = root / spec.dest
    marker = archive.with_name(f".{archive.name}.extracted")
    st = archive.stat()
    stamp = f"{st.st_size} {st.st_mtime_ns}\n"
    if marker.is_file() and marker.read_text() == stamp:
        return None
    log(f"{spec.file}: unpacking into {dest}")
    extract_archive(archive, dest, spec.extract)
    marker.write_text(stamp)
    return dest


def download_files(specs: Iterable[FileSpec | dict], root: str | os.PathLike, *,
                   mirrors: Sequence[str] = (), timeout: float = 30.0, retries: int = 3,
                   progress: bool = True, log: Log | None = None) -> list[Result]:
    """`download_file` for each card entry (dicts as in the card, or FileSpecs); every file
    is tried. Raises DownloadError (with all results) when any failed."""
    specs = [s if isinstance(s, FileSpec) else FileSpec.from_card(s) for s in specs]
    results = []
    for spec in specs:
        try:
            results.append(download_file(spec, root, mirrors=mirrors, timeout=timeout,
                                         retries=retries, progress=progress, log=log))
        except DatasetError as e:
            results.append(Result(spec.file, Path(root) / spec.file, "failed", errors=[e.message]))
    failed = [r.file for r in results if not r.ok]
    if failed:
        raise DownloadError(f"{len(failed)} of {len(results)} files failed: {', '.join(failed)}",
                            results)
    return results


def manual_instructions(name: str, card: dict, root: str | os.PathLike,
                        specs: Sequence[FileSpec]) -> str:
    """Where to get the files of `specs` by hand and where to put them."""
    root = Path(root).resolve()
    lines = [f"{name}: these files cannot be downloaded automatically:" if specs
             else f"{name}: the card lists no files to download automatically."]
    for s in specs:
        extra = [human_bytes(s.bytes)] if s.bytes is not None else []
        extra += [s.note] if s.note else []
        lines.append(f"  {s.file}" + (f"  ({'; '.join(extra)})" if extra else ""))
    how = card.get("manual") or card.get("obtain")
    lines.append(f"Get them from: {how}" if how else "The card says nowhere where to get them.")
    if card.get("manual") and card.get("obtain"):
        lines.append(f"Source: {card['obtain']}")
    if card.get("licence"):
        lines.append(f"Licence: {card['licence']}")
    if any(s.checksums or s.extract for s in specs):
        lines.append(f"Put them in {root}, then run `evpipe download {name} --root {root}` "
                     "again to check and unpack them.")
    else:
        lines.append(f"Put {'them' if specs else 'the files'} in {root} and unpack the "
                     "archives there.")
    layout = [p for p in card.get("layout", []) if isinstance(p, str)]
    if layout:
        lines.append("The finished copy holds (NN.., XX.. = that many digits):")
        lines += [f"  {root / p}" for p in layout]
    lines.append(f"Check it with: evpipe verify {name} --root {root}")
    return "\n".join(lines)


def download_dataset(name: str, root: str | os.PathLike, *, only: Sequence[str] | None = None,
                     mirrors: Sequence[str] = (), timeout: float = 30.0, retries: int = 3,
                     progress: bool = True, log: Log | None = None) -> list[Result]:
    """Fetch the files of dataset `name`'s card (or only those named) into `root`.

    Files that need a manual step (card "manual" without `mirrors`, or no URL) and are not
    in `root` yet raise ManualDownload after the others are fetched.
    """
    card = load_card(name)
    entries = card.get("downloads") or []
    if not isinstance(entries, list):
        raise ConfigError(f"card of {name!r}: \"downloads\" must be a list")
    specs = [FileSpec.from_card(e) for e in entries]
    if only:
        known = {s.file for s in specs}
        unknown = [f for f in only if f not in known]
        if unknown:
            raise ConfigError(f"card of {name!r} lists no file {unknown[0]!r}; files: "
                              + (", ".join(sorted(known)) or "none"))
        specs = [s for s in specs if s.file in only]
    root = Path(root)
    auto = bool(mirrors) or not card.get("manual")
    manual = [s for s in specs if not (auto and (s.urls or mirrors))
              and not (root / s.file).is_file()]
    fetch = [s for s in specs if s not in manual]
    results = download_files(fetch, root, mirrors=mirrors, timeout=timeout, retries=retries,
                             progress=progress, log=log) if fetch else []
    if manual or not specs:
        raise ManualDownload(f"{name}: {len(manual) or 'the'} files must be fetched by hand "
                             "(see the instructions printed)", results,
                             manual_instructions(name, card, root, manual))
    return results


def _member_target(dest: Path, name: str, archive: Path) -> Path:
    """Where member `name` lands under `dest`; DatasetError if that is outside `dest`."""
    norm = name.replace("\\", "/")
    parts = PurePosixPath(norm).parts
    if norm.startswith("/") or re.match(r"[A-Za-z]:", norm) or ".." in parts:
        raise DatasetError(f"unsafe archive member {name!r} (absolute or '..'); "
                           "nothing more unpacked", path=archive)
    target = (dest / norm).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise DatasetError(f"archive member {name!r} would land outside {dest}", path=archive)
    return target


def extract_archive(path: str | os.PathLike, dest: str | os.PathLike, kind: str = "auto") -> int:
    """Unpack a zip or tar (any compression) archive into `dest`; returns the member count.

    `kind` "auto" tells the type from the content. A zip is checked whole before anything
    is written; a tar member by member. Members with absolute paths or `..`, links leading
    outside `dest`, and device files raise DatasetError: nothing lands outside `dest`.
    """
    path, dest = Path(path), Path(dest)
    if kind == "auto":
        kind = "zip" if zipfile.is_zipfile(path) else "tar" if tarfile.is_tarfile(path) else None
        if kind is None:
            raise DatasetError("neither a zip nor a tar archive", path=path)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as zf:
                members = zf.infolist()
                for m in members:
                    _member_target(dest, m.filename, path)
                    if stat.S_ISLNK(m.external_attr >> 16):
                        raise DatasetError(f"archive member {m.filename!r} is a link", path=path)
                zf.extractall(dest)
                return len(members)
        return _extract_tar(path, dest)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        raise DatasetError(f"damaged {kind} archive: {e}", path=path) from None


def _extract_tar(path: Path, dest: Path) -> int:
    # The "data" filter (Python >= 3.10.12 / 3.11.4) re-checks what is checked here.
    extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    n = 0
    with tarfile.open(path, "r:*") as tar:
        for m in tar:
            _member_target(dest, m.name, path)
            if m.issym():
                link = posixpath.normpath(posixpath.join(posixpath.dirname(m.name), m.linkname))
                _member_target(dest, link, path)
            elif m.islnk():
                _member_target(dest, m.linkname, path)
            elif not (m.isfile() or m.isdir()):
                raise DatasetError(f"archive member {m.name!r} is a device or pipe", path=path)
            tar.extract(m, dest, **extra)
            n += 1
    return n
