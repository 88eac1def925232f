"""Streaming downloads that are verified before they count.

A download streams into a hidden temporary file beside its destination
(`.<name>.<random>.part`), hashing as it goes. It is renamed onto the real name
only when the byte count matches the server's Content-Length and the checksum
matches the expected one, so an interrupted or corrupt download is never taken
for a complete file. On a checksum mismatch the bytes are deleted and the error
names the file with the expected and actual checksums. urllib only.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from transferlab.io import current_umask
from transferlab.progress import progress_bar

CHUNK = 1 << 20
STALE_PART_SECONDS = 600  # a .part file untouched this long belongs to a dead download
HASHES = ("md5", "sha256")


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
    unknown = set(checksums) - set(HASHES)
    if unknown or not checksums:
        raise ValueError(f"checksums {checksums!r}: give md5 and/or sha256")
    return {algo: hashlib.new(algo) for algo in checksums}


def _compare(path: Path, hashers: dict, checksums: dict[str, str]) -> None:
    for algo, h in hashers.items():
        expected, actual = checksums[algo].lower(), h.hexdigest()
        if actual != expected:
            raise ChecksumError(f"{path}: {algo} checksum mismatch: expected {expected}, "
                                f"got {actual}")


def verify_file(path: str | Path, checksums: dict[str, str]) -> None:
    """Raise ChecksumError naming `path`, the expected and the actual checksum on mismatch."""
    path = Path(path)
    hashers = _hashers(checksums)
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
                _compare(dest, hashers, checksums)
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
