"""Downloads against a local HTTP server: checksums, truncation, resume, mirrors, safe extraction."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from colorstudy.data.download import (DownloadError, RemoteFile, download, extract, fetch,
                                      mirrored_url, resolve_mirror)

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: more than one read chunk


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class FakeServer:
    """Serves ``files`` with optional Range support; knobs simulate misbehaving servers."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ignore_range = False
        self.send_only: int | None = None  # body bytes actually sent (Content-Length stays full)
        self.requests: list[tuple[str, str | None]] = []
        self.base = ""


@pytest.fixture
def server():
    state = FakeServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            rng = self.headers.get("Range")
            state.requests.append((name, rng))
            data = state.files.get(name)
            if data is None:
                self.send_error(404)
                return
            start = 0
            if rng and not state.ignore_range:
                start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
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
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            # HTTP/1.0: the connection closes after the (possibly short) body
            self.wfile.write(body if state.send_only is None else body[:state.send_only])

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def test_download_verifies_and_moves_into_place(server, tmp_path):
    server.files["a.bin"] = PAYLOAD
    dest = download(f"{server.base}/a.bin", tmp_path / "a.bin", md5=md5(PAYLOAD),
                    sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_checksum_mismatch_names_file_and_leaves_nothing(server, tmp_path):
    server.files["a.bin"] = PAYLOAD
    with pytest.raises(DownloadError) as err:
        download(f"{server.base}/a.bin", tmp_path / "a.bin", md5="0" * 32)
    msg = str(err.value)
    assert "a.bin" in msg and "0" * 32 in msg and md5(PAYLOAD) in msg and "official" in msg
    assert list(tmp_path.iterdir()) == []  # neither the final file nor a .part to resume


def test_truncated_body_keeps_part_then_resumes(server, tmp_path):
    server.files["a.bin"] = PAYLOAD
    server.send_only = 1000
    with pytest.raises(DownloadError, match=r"truncated.*expected 1048576 bytes, got 1000.*resume"):
        download(f"{server.base}/a.bin", tmp_path / "a.bin", md5=md5(PAYLOAD))
    assert not (tmp_path / "a.bin").exists()
    assert (tmp_path / "a.bin.part").stat().st_size == 1000
    server.send_only = None
    download(f"{server.base}/a.bin", tmp_path / "a.bin", md5=md5(PAYLOAD))
    assert server.requests[-1] == ("a.bin", "bytes=1000-")
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD and not (tmp_path / "a.bin.part").exists()


def test_resume_from_partial_file(server, tmp_path):
    server.files["a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:12345])
    download(f"{server.base}/a.bin", tmp_path / "a.bin", sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert server.requests == [("a.bin", "bytes=12345-")]
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_complete_part_is_verified_without_refetching(server, tmp_path):
    server.files["a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD)  # the server answers 416: nothing left to send
    download(f"{server.base}/a.bin", tmp_path / "a.bin", md5=md5(PAYLOAD))
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts(server, tmp_path):
    server.files["a.bin"] = PAYLOAD
    server.ignore_range = True
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:5000])
    download(f"{server.base}/a.bin", tmp_path / "a.bin", md5=md5(PAYLOAD))
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD  # not the first 5000 bytes twice


def test_corrupt_part_is_not_resumed_forever(server, tmp_path):
    server.files["a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(b"x" * 5000)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(f"{server.base}/a.bin", tmp_path / "a.bin", md5=md5(PAYLOAD))
    assert not (tmp_path / "a.bin.part").exists()
    download(f"{server.base}/a.bin", tmp_path / "a.bin", md5=md5(PAYLOAD))
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_http_error_and_no_network_name_the_fix(server, tmp_path):
    with pytest.raises(DownloadError, match=r"missing\.tgz: HTTP 404.*data\.mirror"):
        download(f"{server.base}/missing.tgz", tmp_path / "missing.tgz")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=r"no network\? put x\.tgz in a folder and set data\.mirror"):
        download(f"http://127.0.0.1:{port}/x.tgz", tmp_path / "x.tgz", timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_mirrors_replace_the_base_and_keep_the_name(server, tmp_path, monkeypatch):
    monkeypatch.delenv("COLORSTUDY_MIRROR", raising=False)
    remote = RemoteFile("https://example.invalid/some/where/data%20set.tgz", md5=md5(PAYLOAD))
    assert remote.filename == "data set.tgz"
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "data set.tgz").write_bytes(PAYLOAD)
    server.files["m/data%20set.tgz"] = PAYLOAD
    assert mirrored_url(remote, None) == remote.url
    for i, base in enumerate([str(mirror), mirror.as_uri(), f"{server.base}/m/"]):
        assert mirrored_url(remote, base).endswith("/data%20set.tgz")
        got = fetch(remote, tmp_path / f"cache{i}", mirror=base)
        assert got.read_bytes() == PAYLOAD and got.name == "data set.tgz"
    monkeypatch.setenv("COLORSTUDY_MIRROR", str(mirror))  # the environment is the fallback
    assert fetch(remote, tmp_path / "cache-env").read_bytes() == PAYLOAD
    assert resolve_mirror(f"{server.base}/m") == f"{server.base}/m"  # params win over the env


def test_fetch_reuses_a_verified_copy(server, tmp_path):
    server.files["a.bin"] = PAYLOAD
    remote = RemoteFile(f"{server.base}/a.bin", md5=md5(PAYLOAD))
    fetch(remote, tmp_path)
    fetch(remote, tmp_path)
    assert len(server.requests) == 1
    (tmp_path / "a.bin").write_bytes(b"stale")  # no longer matches: fetched again
    assert fetch(remote, tmp_path).read_bytes() == PAYLOAD and len(server.requests) == 2


def test_bad_mirror_settings(tmp_path):
    remote = RemoteFile("https://example.invalid/a.tgz")
    with pytest.raises(DownloadError, match="not a folder"):
        fetch(remote, tmp_path, mirror=str(tmp_path / "nope"))
    with pytest.raises(DownloadError, match="only a local folder"):
        fetch(remote, tmp_path, mirror="ftp://host/x")
    with pytest.raises(DownloadError, match=r"a\.tgz: cannot open file://.*the mirror lacks it\? put a\.tgz"):
        fetch(remote, tmp_path / "c", mirror=str(tmp_path))  # the mirror lacks the file


# -- extraction -------------------------------------------------------------------

def make_tar(path: Path, members: list[tarfile.TarInfo], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for info in members:
            data = b"data" if info.isfile() else None
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def test_extract_tgz_and_zip(tmp_path):
    tgz = make_tar(tmp_path / "a.tgz", [member("jpg", tarfile.DIRTYPE), member("jpg/a.jpg"),
                                        member("jpg/link.jpg", tarfile.SYMTYPE, "a.jpg")])
    out = extract(tgz, tmp_path / "out")
    assert (out / "jpg" / "a.jpg").read_bytes() == b"data" and (out / "jpg" / "link.jpg").is_symlink()
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        z.writestr("top/b.jpg", b"zipdata")
    out = extract(tmp_path / "a.zip", tmp_path / "out")  # replaces the previous extraction
    assert [p.relative_to(out).as_posix() for p in sorted(out.rglob("*"))] == ["top", "top/b.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tgz", "a.zip", "out"]


@pytest.mark.parametrize("bad, match", [
    (member("../evil"), "escapes"),
    (member("jpg/../../evil"), "escapes"),
    (member("/abs/evil"), "escapes"),
    (member("link", tarfile.SYMTYPE, "../../outside"), "points outside"),
    (member("link", tarfile.SYMTYPE, "/etc/passwd"), "points outside"),
    (member("jpg/link", tarfile.SYMTYPE, "../.."), "points outside"),
    (member("hard", tarfile.LNKTYPE, "../outside"), "points outside"),
    (member("dev", tarfile.CHRTYPE), "device files"),
    (member("fifo", tarfile.FIFOTYPE), "device files"),
])
def test_extract_rejects_unsafe_tar_members(tmp_path, bad, match):
    archive = make_tar(tmp_path / "evil.tar", [member("ok.jpg"), bad], mode="w")
    with pytest.raises(DownloadError, match=rf"evil\.tar: refusing .*{match}.*official"):
        extract(archive, tmp_path / "x" / "out")
    assert list((tmp_path / "x").iterdir()) == []  # nothing extracted, no temp folder left
    assert not (tmp_path / "evil").exists()


def test_extract_rejects_zip_traversal_and_corrupt_archives(tmp_path):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as z:
        z.writestr("ok.jpg", b"x")
        z.writestr("../evil", b"x")
    with pytest.raises(DownloadError, match="escapes"):
        extract(tmp_path / "evil.zip", tmp_path / "out")
    (tmp_path / "bad.tgz").write_bytes(b"\x1f\x8b" + b"garbage" * 100)
    with pytest.raises(DownloadError, match=r"bad\.tgz is (corrupt|neither)"):
        extract(tmp_path / "bad.tgz", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tgz", "evil.zip"]
