"""Safe extraction of tar (plain, .gz, .bz2, .xz) and zip archives.

Every member is checked before anything is written: absolute paths, `..`
components, links that point outside the target, links that other members
would be written through, and device / fifo files are refused with an error
naming the archive and the member. Extraction goes into a hidden temporary
directory inside the target and each top-level entry is renamed into place only
after the whole archive came out, so a failure leaves nothing half-extracted.

With `merge=True` a directory that exists in the target and in the archive is merged
into instead of replaced (the archive's files replace same-named ones, other files
stay): Pascal VOC 2007 comes as two archives (trainval, test) that both fill
VOCdevkit/VOC2007/, and VOC 2012's archive fills VOCdevkit/ beside it. Each entry
that is new to the target is still renamed in whole, but a merge as a whole is not
atomic: a crash part-way leaves some of the archive's files moved in.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the target or is not a plain file/dir/link."""


def _refuse(archive: Path, member: str, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"{archive}: refusing to extract member {member!r}: {why}")


def _check_relative(archive: Path, member: str, path: str) -> str:
    """The normalised relative path of `path`, or an error if it leaves the target."""
    if path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":"):
        raise _refuse(archive, member, "absolute path")
    parts = path.replace("\\", "/").split("/")
    if ".." in parts:
        raise _refuse(archive, member, "'..' in the path")
    norm = posixpath.normpath("/".join(parts))
    if norm == ".":
        return ""
    return norm


def _check_tar_members(archive: Path, members: list[tarfile.TarInfo]) -> None:
    links: set[str] = set()
    for m in members:
        name = _check_relative(archive, m.name, m.name)
        if m.ischr() or m.isblk() or m.isfifo():
            raise _refuse(archive, m.name, "device or fifo file")
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            raise _refuse(archive, m.name, f"unsupported member type {m.type!r}")
        # Writing through a link that an earlier member created could leave the target.
        parent = posixpath.dirname(name)
        while parent:
            if parent in links:
                raise _refuse(archive, m.name, f"its path goes through the link {parent!r}")
            parent = posixpath.dirname(parent)
        if m.issym():
            if m.linkname.startswith("/"):
                raise _refuse(archive, m.name, f"symlink to absolute path {m.linkname!r}")
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname))
            if resolved == ".." or resolved.startswith("../"):
                raise _refuse(archive, m.name, f"symlink {m.linkname!r} points outside")
            links.add(name)
        elif m.islnk():
            if m.linkname.startswith("/"):
                raise _refuse(archive, m.name, f"hardlink to absolute path {m.linkname!r}")
            resolved = posixpath.normpath(m.linkname)
            if resolved == ".." or resolved.startswith("../"):
                raise _refuse(archive, m.name, f"hardlink {m.linkname!r} points outside")
            if resolved in links:
                raise _refuse(archive, m.name, f"hardlink to the symlink {m.linkname!r}")


def _check_zip_members(archive: Path, infos: list[zipfile.ZipInfo]) -> None:
    for info in infos:
        _check_relative(archive, info.filename, info.filename)


def _extract_into(archive: Path, tmp: Path) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            _check_zip_members(archive, infos)
            zf.extractall(tmp)
        return
    try:
        tf = tarfile.open(archive, "r:*")
    except tarfile.TarError as e:
        raise ValueError(f"{archive}: not a readable tar or zip archive ({e})") from e
    with tf:
        members = tf.getmembers()
        _check_tar_members(archive, members)
        # The data filter re-checks every path against the real file system.
        tf.extractall(tmp, members=members, filter="data")


def _replace(entry: Path, dest: Path) -> None:
    """Rename `entry` onto `dest`, an existing `dest` first moved aside and then deleted."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".old", dir=dest.parent))
        os.replace(dest, old / entry.name)
    os.replace(entry, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _merge(source: Path, dest: Path) -> None:
    """Move `source`'s entries into the directory `dest`, recursing into directories both
    hold (never through a link: a linked directory of the target is replaced, not entered)."""
    for entry in sorted(source.iterdir()):
        to = dest / entry.name
        if _real_dir(entry) and _real_dir(to):
            _merge(entry, to)
        else:
            _replace(entry, to)


def extract_archive(archive: str | Path, target: str | Path, *, merge: bool = False
                    ) -> list[str]:
    """Extract `archive` into `target`; return the extracted file paths relative to `target`.

    Top-level entries already in `target` with the same names are replaced; with `merge`,
    directories are merged into and only same-named files replaced.
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".extract", dir=target))
    try:
        _extract_into(archive, tmp)
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*")
                       if p.is_file() or p.is_symlink())
        if merge:
            _merge(tmp, target)
        else:
            for entry in sorted(tmp.iterdir()):
                _replace(entry, target / entry.name)
        return files
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
