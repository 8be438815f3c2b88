"""`evpipe download` against a local HTTP server (127.0.0.1 only): resume, mirrors,
checksums, redirects, archives, and the manual path."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from evpipe import cli, download
from evpipe.download import (DownloadError, FileSpec, ManualDownload, download_dataset,
                             download_file, download_files, extract_archive)
from evpipe.errors import ConfigError, DatasetError
from tests.helpers import run_cli

DATA = bytes(range(256)) * 1024 + b"tail"  # 262148 bytes
SHA = hashlib.sha256(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()


@dataclass
class Route:
    data: bytes = DATA
    ranges: bool = True        # honour "Range: bytes=N-"
    cut_after: int | None = None  # close the connection after this many body bytes...
    cuts: int = 1              # ...on this many requests
    status: int | None = None  # answer with this error
    location: str | None = None  # redirect here
    delay: float = 0.0         # seconds before answering


class Server:
    """http.server in a thread; `routes` maps paths to behaviour, `log` records
    (path, Range header) per request."""

    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.log: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.log.append((self.path, rng))
                route = outer.routes.get(self.path)
                if route is None or route.status:
                    self.send_error(route.status if route else 404)
                    return
                time.sleep(route.delay)
                if route.location:
                    self.send_response(302)
                    self.send_header("Location", route.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data, start = route.data, 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and route.ranges:
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if route.cut_after is not None and route.cuts > 0:
                    route.cuts -= 1
                    body = body[:route.cut_after]
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def url(self, path: str, **kw) -> str:
        self.routes[path] = Route(**kw)
        return self.base + path

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def refused_url():
    """A URL on a port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/data.bin"


def fetch(spec, root, **kw):
    messages = []
    kw.setdefault("progress", False)
    result = download_file(spec, root, log=messages.append, **kw)
    return result, messages


def test_complete_download_verified(server, tmp_path):
    spec = {"file": "data.bin", "url": server.url("/data.bin"), "sha256": SHA, "md5": MD5,
            "bytes": len(DATA)}
    result, _ = fetch(spec, tmp_path)
    assert (tmp_path / "data.bin").read_bytes() == DATA
    assert not (tmp_path / "data.bin.part").exists()
    assert result.status == "downloaded" and result.detail == "sha256 and md5 ok"
    assert server.log == [("/data.bin", None)]
    # Present with the right checksum: skipped without a request.
    again, _ = fetch(spec, tmp_path)
    assert again.status == "present" and len(server.log) == 1


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    spec = {"file": "data.bin", "url": server.url("/data.bin", cut_after=100_000), "sha256": SHA}
    result, messages = fetch(spec, tmp_path)
    assert result.status == "downloaded" and (tmp_path / "data.bin").read_bytes() == DATA
    assert server.log == [("/data.bin", None), ("/data.bin", "bytes=100000-")]
    assert "connection closed after 100000 of 262148 bytes; resuming (1/3)" in messages[0]


def test_partial_file_kept_and_resumed_by_a_later_run(server, tmp_path):
    spec = {"file": "data.bin", "url": server.url("/data.bin", cut_after=5000), "sha256": SHA}
    with pytest.raises(DatasetError, match="connection closed after 5000 of 262148 bytes"):
        fetch(spec, tmp_path, retries=0)
    assert (tmp_path / "data.bin.part").read_bytes() == DATA[:5000]
    result, _ = fetch(spec, tmp_path)
    assert result.status == "downloaded" and (tmp_path / "data.bin").read_bytes() == DATA
    assert server.log[-1] == ("/data.bin", "bytes=5000-")


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(b"x" * 7000)  # a stale partial file
    spec = {"file": "data.bin", "url": server.url("/data.bin", ranges=False), "sha256": SHA}
    result, messages = fetch(spec, tmp_path)
    assert (tmp_path / "data.bin").read_bytes() == DATA
    assert server.log == [("/data.bin", "bytes=7000-")]
    assert any("ignored the range request; restarting from byte 0" in m for m in messages)


def test_corrupt_resumed_part_restarts_from_zero(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(b"x" * 1000)
    spec = {"file": "data.bin", "url": server.url("/data.bin"), "sha256": SHA}
    result, messages = fetch(spec, tmp_path)
    assert (tmp_path / "data.bin").read_bytes() == DATA
    assert server.log == [("/data.bin", "bytes=1000-"), ("/data.bin", None)]
    assert "sha256 mismatch" in messages[0] and "from byte 0" in messages[0]


def test_whole_part_file_finished_by_416(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(DATA)
    spec = {"file": "data.bin", "url": server.url("/data.bin"), "sha256": SHA}
    result, _ = fetch(spec, tmp_path)
    assert result.status == "downloaded" and (tmp_path / "data.bin").read_bytes() == DATA
    assert server.log == [("/data.bin", f"bytes={len(DATA)}-")]


def test_part_longer_than_the_file_dropped_after_416(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(DATA + b"extra")
    spec = {"file": "data.bin", "url": server.url("/data.bin"), "sha256": SHA}
    result, messages = fetch(spec, tmp_path)
    assert result.status == "downloaded" and (tmp_path / "data.bin").read_bytes() == DATA
    assert server.log == [("/data.bin", f"bytes={len(DATA) + 5}-"), ("/data.bin", None)]
    assert "(HTTP 416); partial file dropped" in messages[0]


def test_checksum_mismatch_moves_to_next_mirror(server, tmp_path):
    bad = bytearray(DATA)
    bad[12345] ^= 1
    spec = {"file": "data.bin", "sha256": SHA,
            "urls": [server.url("/bad.bin", data=bytes(bad)), server.url("/data.bin")]}
    result, messages = fetch(spec, tmp_path)
    assert result.url.endswith("/data.bin") and (tmp_path / "data.bin").read_bytes() == DATA
    assert "/bad.bin failed: sha256 mismatch" in messages[0]
    assert "trying the next mirror" in messages[0]


def test_dead_mirrors_fall_through_with_reasons(server, tmp_path, refused_url):
    spec = {"file": "data.bin", "md5": MD5,
            "urls": [refused_url, server.base + "/missing.bin", server.url("/err.bin", status=500),
                     server.url("/data.bin")]}
    result, messages = fetch(spec, tmp_path)
    assert result.status == "downloaded" and result.url == server.base + "/data.bin"
    assert result.detail == "md5 ok"
    assert "Connection refused" in messages[0]
    assert "HTTP 404" in messages[1] and "HTTP 500" in messages[2]


def test_timeout_moves_to_next_mirror(server, tmp_path):
    spec = {"file": "data.bin", "sha256": SHA,
            "urls": [server.url("/slow.bin", delay=1.0), server.url("/data.bin")]}
    result, messages = fetch(spec, tmp_path, timeout=0.3)
    assert result.url.endswith("/data.bin")
    assert "timed out" in messages[0]


def test_size_from_server_checked_before_transfer(server, tmp_path):
    spec = {"file": "data.bin", "bytes": len(DATA),
            "urls": [server.url("/short.bin", data=DATA[:10]), server.url("/data.bin")]}
    result, messages = fetch(spec, tmp_path)
    assert "server has 10 bytes, card says 262148" in messages[0]
    assert result.detail == "size matches; card gives no checksum"


def test_redirect_followed(server, tmp_path):
    spec = {"file": "data.bin", "url": server.url("/r", location="/data.bin"), "sha256": SHA}
    server.url("/data.bin")
    result, _ = fetch(spec, tmp_path)
    assert (tmp_path / "data.bin").read_bytes() == DATA
    assert [p for p, _ in server.log] == ["/r", "/data.bin"]


@pytest.mark.parametrize("target", ["ftp://127.0.0.1/data.bin", "file:///etc/passwd"])
def test_redirect_to_other_scheme_refused(server, tmp_path, target):
    spec = {"file": "data.bin", "url": server.url("/r", location=target)}
    with pytest.raises(DatasetError, match="every source failed") as e:
        fetch(spec, tmp_path)
    assert "not allowed" in str(e.value) or "refused (only http/https)" in str(e.value)
    assert not (tmp_path / "data.bin").exists()


def test_all_mirrors_fail_reports_each(server, tmp_path, refused_url):
    specs = [{"file": "a.bin", "urls": [refused_url, server.base + "/nope"]},
             {"file": "b.bin", "url": server.url("/data.bin"), "sha256": SHA}]
    with pytest.raises(DownloadError, match="1 of 2 files failed: a.bin") as e:
        download_files(specs, tmp_path, progress=False)
    first, second = e.value.results
    assert first.status == "failed" and "Connection refused" in first.line()
    assert "HTTP 404" in first.line()
    assert second.status == "downloaded"


def test_user_mirror_tried_first(server, tmp_path, refused_url):
    server.url("/mirror/data.bin")
    spec = {"file": "data.bin", "url": refused_url, "sha256": SHA}
    result, _ = fetch(spec, tmp_path, mirrors=[server.base + "/mirror/"])
    assert result.url == server.base + "/mirror/data.bin"
    assert server.log == [("/mirror/data.bin", None)]


def test_present_file_with_wrong_checksum_fetched_again(server, tmp_path):
    (tmp_path / "data.bin").write_bytes(b"old")
    spec = {"file": "data.bin", "url": server.url("/data.bin"), "sha256": SHA}
    result, messages = fetch(spec, tmp_path)
    assert result.status == "downloaded" and (tmp_path / "data.bin").read_bytes() == DATA
    assert "present but sha256 mismatch" in messages[0]


@pytest.mark.parametrize("entry, message", [
    ({"file": "../x", "url": "http://127.0.0.1/x"}, "relative path without '..'"),
    ({"file": "x", "url": "ftp://127.0.0.1/x"}, "not an http"),
    ({"file": "x", "sha256": "abc"}, "not 64 hex digits"),
    ({"file": "x", "extract": "rar"}, "extract"),
    ({"url": "http://127.0.0.1/x"}, "no \"file\""),
])
def test_bad_card_entries(entry, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        FileSpec.from_card(entry)


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def make_tar(members: dict[str, bytes], links: dict[str, str] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in dict(links).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return buf.getvalue()


def test_zip_extracted_into_dest_once(server, tmp_path):
    archive = make_zip({"train/0.bin": b"a", "train/1.bin": b"bb"})
    spec = {"file": "set.zip", "url": server.url("/set.zip", data=archive), "extract": True,
            "dest": "raw", "sha256": hashlib.sha256(archive).hexdigest()}
    root = tmp_path / "root"
    result, _ = fetch(spec, root)
    assert (root / "raw" / "train" / "1.bin").read_bytes() == b"bb"
    assert result.extracted_to == root / "raw" and "unpacked into" in result.line()
    (root / "raw" / "train" / "0.bin").unlink()
    again, _ = fetch(spec, root)
    assert again.status == "present" and again.extracted_to is None
    assert not (root / "raw" / "train" / "0.bin").exists()


def test_tar_extracted(server, tmp_path):
    archive = make_tar({"seq/00/a.txt": b"hello"}, {"seq/latest": "00"})
    spec = {"file": "set.tar.gz", "url": server.url("/set.tar.gz", data=archive),
            "extract": "tar"}
    fetch(spec, tmp_path)
    assert (tmp_path / "seq" / "00" / "a.txt").read_bytes() == b"hello"
    assert (tmp_path / "seq" / "latest" / "a.txt").read_bytes() == b"hello"


@pytest.mark.parametrize("kind, archive", [
    ("zip", make_zip({"ok.txt": b"1", "../evil": b"x"})),
    ("zip", make_zip({"/abs/evil": b"x"})),
    ("tar", make_tar({"ok.txt": b"1", "../evil": b"x"})),
    ("tar", make_tar({"sub/../../evil": b"x"})),
    ("tar", make_tar({}, {"link": "../evil"})),
    ("tar", make_tar({}, {"link": "/etc"})),
])
def test_malicious_archive_rejected(tmp_path, kind, archive):
    path = tmp_path / f"bad.{kind}"
    path.write_bytes(archive)
    dest = tmp_path / "root"
    with pytest.raises(DatasetError, match="archive member|unsafe archive member"):
        extract_archive(path, dest)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "abs").exists()
    if kind == "zip":
        assert not dest.exists() or not any(dest.iterdir())  # checked before writing


def test_malicious_archive_via_download_fails_that_file(server, tmp_path):
    archive = make_zip({"../evil": b"x"})
    specs = [{"file": "bad.zip", "url": server.url("/bad.zip", data=archive), "extract": "zip"}]
    root = tmp_path / "root"
    with pytest.raises(DownloadError) as e:
        download_files(specs, root, progress=False)
    assert "unsafe archive member '../evil'" in e.value.results[0].line()
    assert not (tmp_path / "evil").exists()


def test_kitti_manual_message_from_card(tmp_path):
    proc = run_cli("download", "kitti", "--root", tmp_path / "kitti")
    assert proc.returncode == 1
    out = proc.stdout
    assert "kitti: these files cannot be downloaded automatically" in out
    assert "https://www.cvlibs.net/datasets/kitti/eval_object.php" in out  # the card's "obtain"
    for name in ("data_object_velodyne.zip", "data_object_label_2.zip", "data_object_calib.zip"):
        assert name in out
    assert f"{tmp_path / 'kitti' / 'training' / 'velodyne' / 'NNNNNN.bin'}" in out
    assert "evpipe verify kitti" in out
    assert proc.stderr.strip().splitlines()[-1] == (
        "evpipe: error: kitti: 4 files must be fetched by hand (see the instructions printed)")
    assert not (tmp_path / "kitti").exists()


@pytest.fixture
def toy_card(monkeypatch):
    """Point the card loader at a temporary card named "toy"."""
    cards = {}
    monkeypatch.setattr(download, "load_card", lambda name: cards[name])
    monkeypatch.setattr(download, "card_names", lambda: ["toy"])
    return cards


def test_cli_download_with_mirror_and_manual_card(server, tmp_path, toy_card, capsys):
    toy_card["toy"] = {"manual": "Fill in the form at https://example.org/form",
                       "obtain": "https://example.org", "layout": ["data.bin"],
                       "downloads": [{"file": "data.bin", "url": server.base + "/gone",
                                      "sha256": SHA}]}
    assert cli.main(["download", "toy", "--root", str(tmp_path), "-q"]) == 1
    captured = capsys.readouterr()
    assert "Get them from: Fill in the form at https://example.org/form" in captured.out
    assert "Source: https://example.org" in captured.out
    assert server.log == []
    server.url("/m/data.bin")
    assert cli.main(["download", "toy", "--root", str(tmp_path), "-q",
                     "--mirror", server.base + "/m"]) == 0
    out = capsys.readouterr().out
    assert f"data.bin: downloaded from {server.base}/m/data.bin (sha256 ok)" in out
    # The file is now present, so the manual card has nothing left to ask for.
    assert cli.main(["download", "toy", "--root", str(tmp_path), "-q"]) == 0
    assert "data.bin: present (sha256 ok)" in capsys.readouterr().out


def test_mixed_card_fetches_what_it_can(server, tmp_path, toy_card):
    toy_card["toy"] = {"obtain": "by e-mail",
                       "downloads": [{"file": "pub.bin", "url": server.url("/data.bin")},
                                     {"file": "private.bin", "bytes": 10}]}
    with pytest.raises(ManualDownload) as e:
        download_dataset("toy", tmp_path, progress=False)
    assert [r.line() for r in e.value.results] == [
        f"pub.bin: downloaded from {server.base}/data.bin "
        "(card gives no checksum or size: not verified)"]
    assert "private.bin  (10 bytes)" in e.value.instructions
    assert "pub.bin" not in e.value.instructions
    with pytest.raises(ConfigError, match="lists no file 'nope'"):
        download_dataset("toy", tmp_path, only=["nope"])
    assert [r.file for r in download_dataset("toy", tmp_path, only=["pub.bin"],
                                             progress=False)] == ["pub.bin"]
