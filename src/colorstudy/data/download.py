"""Verified downloads, mirrors and safe archive extraction for the dataset sources.

A download streams to ``<name>.part`` (resumed with an HTTP Range request on the
next run), is checked against its published checksum and only then moved into
place with :func:`os.replace`, so nothing ever reads a truncated or corrupt file.
Every failure is a :class:`DownloadError` whose message names the file and the fix.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.parse import quote, unquote, urlsplit
from urllib.request import Request, urlopen

from tqdm import tqdm

MIRROR_ENV = "COLORSTUDY_MIRROR"
CACHE_ENV = "COLORSTUDY_CACHE"
TIMEOUT_S = 60.0
_CHUNK = 1 << 20
_USER_AGENT = "colorstudy/0.1 (python urllib)"


class DownloadError(RuntimeError):
    """A download, checksum or extraction failed; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """A published file: its official URL and checksum(s)."""

    url: str
    md5: str | None = None
    sha256: str | None = None
    name: str | None = None  # file name on disk and on a mirror; default: the URL's last segment

    @property
    def filename(self) -> str:
        return self.name or unquote(PurePosixPath(urlsplit(self.url).path).name)


def cache_dir() -> Path:
    """Where verified archives are kept between runs (``$COLORSTUDY_CACHE``, else ~/.cache).

    Outside the stage's output so a failed or repeated stage run never re-downloads
    hundreds of MB, and a half-finished ``.part`` survives to be resumed.
    """
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "colorstudy").expanduser()


def resolve_mirror(mirror: str | None) -> str | None:
    """``data.mirror`` if set, else ``$COLORSTUDY_MIRROR``, as a URL base (local dirs become file://)."""
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if mirror is None:
        return None
    if "://" in mirror:
        if urlsplit(mirror).scheme not in ("file", "http", "https"):
            raise DownloadError(f"mirror {mirror!r}: only a local folder, file://, http:// or https:// "
                                f"base is supported; fix data.mirror or ${MIRROR_ENV}")
        return mirror
    path = Path(mirror).expanduser()
    if not path.is_dir():
        raise DownloadError(f"mirror {mirror!r} is not a folder; create it with the archives in it, "
                            f"or fix data.mirror / ${MIRROR_ENV}")
    return path.resolve().as_uri()


def mirrored_url(remote: RemoteFile, mirror: str | None) -> str:
    """The URL to fetch: the mirror's base with the file's name kept, else the official URL."""
    base = resolve_mirror(mirror)
    return remote.url if base is None else f"{base.rstrip('/')}/{quote(remote.filename)}"


def file_digest(path: Path, algorithm: str) -> str:
    with open(path, "rb") as f:
        # usedforsecurity=False: MD5 here is an integrity check, and FIPS builds refuse it otherwise
        return hashlib.file_digest(f, lambda: hashlib.new(algorithm, usedforsecurity=False)).hexdigest()


def checksum_mismatch(path: Path, *, md5: str | None = None, sha256: str | None = None) -> str | None:
    """None if ``path`` matches every given checksum, else 'md5: expected ..., got ...'."""
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected:
            got = file_digest(path, algorithm)
            if got != expected.lower():
                return f"{algorithm}: expected {expected.lower()}, got {got}"
    return None


def download(url: str, dest: Path, *, md5: str | None = None, sha256: str | None = None,
             timeout: float = TIMEOUT_S, progress: bool = True) -> Path:
    """Fetch ``url`` to ``dest`` via ``dest.part``: resume, verify, then move into place atomically."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    _stream(url, part, timeout, progress)
    bad = checksum_mismatch(part, md5=md5, sha256=sha256)
    if bad:
        # a corrupt .part would otherwise be "resumed" (appended to) on every later run
        part.unlink()
        raise DownloadError(
            f"checksum mismatch for {dest.name} from {url} ({bad}); the download was deleted. "
            "Run again; if it fails again the server or mirror holds a different file: "
            f"replace it with the official {dest.name}.")
    os.replace(part, dest)
    return dest


def _stream(url: str, part: Path, timeout: float, progress: bool) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT, **({"Range": f"bytes={offset}-"} if offset else {})}
    name = part.name.removesuffix(".part")
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as e:
        if e.code == 416 and offset:
            return  # the .part already holds the whole file (or more): the checksum decides
        raise DownloadError(f"{name}: HTTP {e.code} {e.reason} from {url}; check the URL or put "
                            f"{name} in a folder and set data.mirror (or ${MIRROR_ENV})") from e
    except (URLError, OSError) as e:
        guess = "the mirror lacks it?" if url.startswith("file:") else "no network?"
        raise DownloadError(f"{name}: cannot open {url} ({getattr(e, 'reason', e)}); {guess} put {name} "
                            f"in a folder and set data.mirror (or ${MIRROR_ENV})") from e
    with response:
        if offset and response.status == 206:
            start = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not start or int(start.group(1)) != offset:
                part.unlink()
                raise DownloadError(f"{name}: {url} answered the resume request with the wrong range "
                                    f"({response.headers.get('Content-Range')!r}); the partial file "
                                    "was deleted, run again to download from the start")
        elif offset:
            offset = 0  # the server ignored Range and sends the whole file: start over
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        received = 0
        bar = tqdm(total=None if expected is None else offset + expected, initial=offset, unit="B",
                   unit_scale=True, unit_divisor=1024, desc=name, mininterval=1.0, disable=not progress)
        with open(part, "ab" if offset else "wb") as f, bar:
            try:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (http.client.IncompleteRead, OSError) as e:
                raise DownloadError(f"{name}: connection to {url} dropped after {offset + received} "
                                    f"bytes ({e}); run again to resume from {part}") from e
    if expected is not None and received < expected:
        raise DownloadError(f"{name}: truncated download from {url}: expected {offset + expected} bytes, "
                            f"got {offset + received}; run again to resume from {part}")


def fetch(remote: RemoteFile, dest_dir: Path | None = None, *, mirror: str | None = None,
          timeout: float = TIMEOUT_S, progress: bool = True) -> Path:
    """A verified local copy of ``remote`` in ``dest_dir`` (default :func:`cache_dir`), downloading if needed."""
    dest = Path(dest_dir or cache_dir()) / remote.filename
    if dest.exists():
        if not checksum_mismatch(dest, md5=remote.md5, sha256=remote.sha256):
            return dest
        dest.unlink()  # cached by an older run with a different expected file
    return download(mirrored_url(remote, mirror), dest, md5=remote.md5, sha256=remote.sha256,
                    timeout=timeout, progress=progress)


# -- extraction -------------------------------------------------------------------

def _inside(root: Path, target: Path) -> bool:
    return target.resolve().is_relative_to(root.resolve())


def _check_member(archive: Path, root: Path, name: str) -> None:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or re.match(r"^[A-Za-z]:", name) or not _inside(root, root / pure):
        raise DownloadError(f"{archive.name}: refusing member {name!r}: its path escapes the "
                            "extraction folder; the archive is malicious or corrupt, delete it "
                            "and get the official one")


def _check_tar_member(archive: Path, root: Path, member: tarfile.TarInfo) -> None:
    _check_member(archive, root, member.name)
    if member.issym() or member.islnk():
        # symlink targets are relative to the link's folder, hardlink targets to the root
        base = root / PurePosixPath(member.name).parent if member.issym() else root
        if PurePosixPath(member.linkname).is_absolute() or not _inside(root, base / member.linkname):
            raise DownloadError(f"{archive.name}: refusing link {member.name!r} -> {member.linkname!r}: "
                                "it points outside the extraction folder; the archive is malicious "
                                "or corrupt, delete it and get the official one")
    elif not (member.isfile() or member.isdir()):
        raise DownloadError(f"{archive.name}: refusing {member.name!r}: device files and pipes do not "
                            "belong in a photo archive; delete it and get the official one")


def extract(archive: Path, dest: Path) -> Path:
    """Safely extract a tar/tgz/zip into ``dest`` (replaced), via a temporary sibling folder."""
    archive, dest = Path(archive), Path(dest)
    tmp = dest.with_name(f".{dest.name}.extracting")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    _check_member(archive, tmp, info.filename)
                    if stat.S_ISLNK(info.external_attr >> 16):
                        raise DownloadError(f"{archive.name}: refusing symlink {info.filename!r} "
                                            "in a zip; delete it and get the official archive")
                z.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                # every member is checked before anything is written; the stdlib "data"
                # filter is a second line of defence
                for member in tar.getmembers():
                    _check_tar_member(archive, tmp, member)
                tar.extractall(tmp, filter="data")
        else:
            raise DownloadError(f"{archive.name} is neither a tar nor a zip archive; delete it and "
                                "get the official one")
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, gzip.BadGzipFile, zlib.error) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DownloadError(f"{archive.name} is corrupt ({e}); delete it and download it again") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
