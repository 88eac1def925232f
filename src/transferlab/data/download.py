"""Streaming downloads that are verified before they count.

A download streams into a hidden temporary file beside its destination
(`.<name>.<random>.part`), hashing as it goes. It is renamed onto the real name
only when the byte count matches the server's Content-Length and the checksum
matches the expected one, so an interrupted or corrupt download is never taken
for a complete file. On a checksum mismatch the bytes are deleted and the error
names the file with the expected and actual checksums. urllib only.

A gzip file may instead (or as well) be checked by `gunzip_sha256`, the sha256 of
its decompressed bytes (`gunzip -c FILE | sha256sum`): the same content
recompressed (other gzip header or settings, so other bytes) passes too. With byte
checksums as well, the file passes when they match, and otherwise only when its
decompressed content does.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from transferlab.io import current_umask
from transferlab.progress import progress_bar

CHUNK = 1 << 20
STALE_PART_SECONDS = 600  # a .part file untouched this long belongs to a dead download
HASHES = ("md5", "sha256")  # of the file's bytes
GUNZIP_HASH = "gunzip_sha256"  # sha256 of a gzip file's decompressed bytes
CHECKS = (*HASHES, GUNZIP_HASH)
_GZIP_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError


class ChecksumError(ValueError):
    """A file's bytes do not match the expected checksum."""


class DownloadError(OSError):
    """Every URL for a file failed (network error, HTTP error, truncated body)."""

    def __init__(self, name: str, failures: list[tuple[str, str]]):
        self.name = name
        self.failures = failures
        tried = "; ".join(f"{url} ({why})" for url, why in failures)
        super().__init__(f"could not download {name}: tried {tried}")


class IncompleteDownloadError(OSError):
    """The connection ended before the announced Content-Length was received."""


def _bar(total: int | None, desc: str, enabled: bool):
    """A byte-counting bar: the project's one progress bar (on a terminal only)."""
    return progress_bar(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                        disable=not enabled)


def _hashers(checksums: dict[str, str]) -> dict[str, hashlib._Hash]:
    """Hashers for the byte checksums among `checksums` (none when only gunzip_sha256)."""
    unknown = set(checksums) - set(CHECKS)
    if unknown or not checksums:
        raise ValueError(f"checksums {checksums!r}: give md5, sha256 and/or {GUNZIP_HASH}")
    return {algo: hashlib.new(algo) for algo in HASHES if algo in checksums}


def gunzip_sha256(path: str | Path) -> str:
    """sha256 of the decompressed content of gzip file `path`, streamed (constant memory).
    ChecksumError naming the file when it is not a valid gzip file."""
    try:
        return _gunzip_sha256(path)
    except _GZIP_ERRORS as e:
        raise ChecksumError(f"{path}: does not decompress as gzip ({e})") from None


def _gunzip_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with gzip.open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _compare(path: Path, hashers: dict, checksums: dict[str, str],
             data: Path | None = None) -> None:
    """Raise ChecksumError naming `path` unless its bytes (hashed into `hashers`) match, or,
    failing that, the decompressed content of `data` (default `path`) matches gunzip_sha256."""
    mismatches = []
    for algo, h in hashers.items():
        expected, actual = checksums[algo].lower(), h.hexdigest()
        if actual != expected:
            mismatches.append(f"{algo} checksum mismatch: expected {expected}, got {actual}")
    if hashers and not mismatches:
        return
    if GUNZIP_HASH in checksums:
        expected = checksums[GUNZIP_HASH].lower()
        try:
            actual = _gunzip_sha256(data or path)
        except _GZIP_ERRORS as e:
            why = f"does not decompress as gzip ({e})"
        else:
            if actual == expected:
                return
            why = f"expected {expected}, got {actual}"
        mismatches.append(f"{GUNZIP_HASH} (sha256 of the decompressed content) mismatch: "
                          f"{why}")
    raise ChecksumError(f"{path}: {'; '.join(mismatches)}")


def verify_file(path: str | Path, checksums: dict[str, str]) -> None:
    """Raise ChecksumError naming `path`, the expected and the actual checksum on mismatch."""
    path = Path(path)
    hashers = _hashers(checksums)
    if hashers:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                for h in hashers.values():
                    h.update(chunk)
    _compare(path, hashers, checksums)


def remove_stale_parts(dest: Path, max_age: float = STALE_PART_SECONDS) -> None:
    """Delete leftover temporary files of `dest` that no live download is writing."""
    now = time.time()
    for part in dest.parent.glob(f".{dest.name}.*.part"):
        try:
            if now - part.stat().st_mtime > max_age:
                part.unlink()
        except FileNotFoundError:
            pass


def _stream(url: str, out, hashers: dict, progress: bool, desc: str, timeout: float) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        with _bar(total, desc, progress) as bar:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except ConnectionError as e:
                    raise IncompleteDownloadError(
                        f"connection dropped after {received} bytes ({e})") from e
                except Exception as e:  # http.client.IncompleteRead and friends
                    raise IncompleteDownloadError(
                        f"truncated after {received} bytes ({e})") from e
                if not chunk:
                    break
                out.write(chunk)
                for h in hashers.values():
                    h.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received != total:
            raise IncompleteDownloadError(
                f"truncated: received {received} of {total} bytes (Content-Length)")
        return received


def download_file(urls: list[str], dest: str | Path, checksums: dict[str, str], *,
                  progress: bool = True, timeout: float = 60.0) -> Path:
    """Fetch `dest` from the first URL that works, verify it, and only then rename it into place.

    Network failures and truncated bodies move on to the next URL; a checksum mismatch stops
    at once (the server delivered the wrong bytes) and leaves no file behind.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(dest)
    failures: list[tuple[str, str]] = []
    for url in urls:
        hashers = _hashers(checksums)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                _stream(url, out, hashers, progress, dest.name, timeout)
            try:
                _compare(dest, hashers, checksums, data=tmp)
            except ChecksumError as e:
                raise ChecksumError(f"{e} (downloaded from {url}; the file was deleted)") from None
            # mkstemp makes it owner-only; a dataset is not a secret: what `open` would give
            os.chmod(tmp, 0o666 & ~current_umask())
            os.replace(tmp, dest)
            return dest
        except (urllib.error.URLError, IncompleteDownloadError, TimeoutError,
                ConnectionError) as e:
            if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
                e = e.reason
            failures.append((url, str(e)))
        finally:
            tmp.unlink(missing_ok=True)
    raise DownloadError(dest.name, failures)
