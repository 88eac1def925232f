"""Atomic file writes: a reader sees the old file, the new one, or nothing.

Every write goes to a temporary beside its destination and is renamed onto it
(`os.replace`) only when complete. A temporary is named
`.<name>.<pid>-<host>.<random>.tmp[<suffix>]`: the pid and a short tag of the
host say which process wrote it, so `clean_stale_temporaries` can remove the
leftovers of a killed writer without touching those of a live one. Files are
created with mode 0o666 and directories with 0o777, less the umask, as `open`
and `mkdir` would make them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

_TEMP_RE = r"\.{name}\.(?P<pid>\d+)-(?P<host>[0-9a-f]{{6}})\.[0-9a-f]+\.tmp(?:\..*)?"


def _host_tag() -> str:
    """Six hex digits of the host name: a pid means something only on its own host."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def temporary_name(path: str | Path, suffix: str = "") -> Path:
    """A fresh, unique temporary path beside `path` that names the writing process."""
    path = Path(path)
    name = f".{path.name}.{os.getpid()}-{_host_tag()}.{secrets.token_hex(6)}.tmp{suffix}"
    return path.parent / name


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a new empty temporary file beside `path`; rename it onto `path` on success.

    The file is created with mode 0o666 less the umask (what `open` gives a new file);
    `suffix` ends its name, for writers that pick a format by extension.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = temporary_name(path, suffix)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:  # 48 random bits: practically never
            continue
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a new empty temporary directory beside `path`; it replaces `path` on success.

    The directory is created with mode 0o777 less the umask. An old `path` is first
    renamed aside (under a temporary name) and deleted after the new one is in place, so
    a kill never leaves a half-deleted directory at `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = temporary_name(path)
        try:
            os.mkdir(tmp, 0o777)
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        old = None
        if path.is_dir() and not path.is_symlink():
            old = temporary_name(path)
            os.replace(path, old)
        elif path.exists() or path.is_symlink():
            path.unlink()
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def file_digest(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to a unique temporary beside `path`, then `os.replace` it onto `path`.

    The one idiom for a file written whole, e.g. a model or checkpoint serialised into a
    buffer first (`torch.save(obj, buf)`; `write_bytes_atomic(path, buf.getvalue())`).
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def json_text(data, *, allow_nan: bool = True) -> str:
    """The project's JSON file format: indented, keys sorted, a final newline;
    `allow_nan=False` refuses NaN and infinities (ValueError) instead of writing them."""
    return json.dumps(data, indent=2, sort_keys=True, allow_nan=allow_nan) + "\n"


def write_json_atomic(path: str | Path, data) -> None:
    write_text_atomic(path, json_text(data))


class NonFiniteJSON(ValueError):
    """JSON text holding NaN or Infinity where only finite numbers may be."""


def parse_json(text: str, *, allow_nan: bool = True):
    """`json.loads`; with `allow_nan=False`, NaN and Infinity raise NonFiniteJSON."""
    def refuse(constant: str):
        raise NonFiniteJSON(f"holds {constant}, not a finite number")

    return json.loads(text, **({} if allow_nan else {"parse_constant": refuse}))


def write_npz_atomic(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def read_json(path: str | Path, what: str | None = None, *, required: Iterable[str] = (),
              allow_nan: bool = True, hint: str = "run `dvc repro` to rebuild it"):
    """The JSON value in `path`; every failure is an error that names the file.

    `what` says what the file holds ("sweep results"), `required` lists top-level keys
    it must have (then it must be an object), `allow_nan=False` refuses NaN and
    Infinity, and `hint` ends the message. A missing file raises FileNotFoundError;
    unreadable, invalid or incomplete contents raise ValueError.
    """
    path = Path(path)
    label = f"{path} ({what})" if what else str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{label} is missing; {hint}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{label} cannot be read ({e}); {hint}") from e
    try:
        data = parse_json(text, allow_nan=allow_nan)
    except NonFiniteJSON as e:
        raise ValueError(f"{label} {e}; {hint}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{label} is not valid JSON ({e}); {hint}") from e
    required = list(required)
    if required:
        if not isinstance(data, dict):
            raise ValueError(f"{label} holds a JSON {type(data).__name__}, expected an object "
                             f"with keys {', '.join(required)}; {hint}")
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"{label} lacks the key(s) {', '.join(map(repr, missing))}; {hint}")
    return data


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: set and restore (not thread-safe, hence last resort)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except (OverflowError, ValueError):  # not a pid this system can have
        return False
    return True


def _stale(directory: Path, name_re: str) -> list[Path]:
    if not directory.is_dir():
        return []
    pattern = re.compile(_TEMP_RE.format(name=name_re))
    host = _host_tag()
    out = []
    for entry in directory.iterdir():
        m = pattern.fullmatch(entry.name)
        if m and m["host"] == host and not _pid_alive(int(m["pid"])):
            out.append(entry)
    return sorted(out)


def stale_temporaries(path: str | Path) -> list[Path]:
    """The temporaries beside `path` (files or directories) left by a dead writer.

    Only those written on this host are judged; a temporary whose writer process still
    runs (even an orphaned stage) is never listed.
    """
    path = Path(path)
    return _stale(path.parent, re.escape(path.name))


def _remove(tmps: list[Path]) -> list[Path]:
    for tmp in tmps:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    return tmps


def clean_stale_temporaries(paths: Iterable[str | Path]) -> list[Path]:
    """Delete, for each output path, the temporaries beside it whose writer is dead.

    Call it when a stage starts, with the stage's outputs: a SIGKILL leaves a
    temporary behind (the `finally` that removes it never runs). Returns what was
    removed.
    """
    return [tmp for path in paths for tmp in _remove(stale_temporaries(path))]


def clean_stale_temporaries_in(directories: Iterable[str | Path]) -> list[Path]:
    """The same for every temporary directly inside each directory, whatever file it
    was to become: for stores of many files (the variant store, the checkpoints)."""
    return [tmp for d in directories for tmp in _remove(_stale(Path(d), ".+"))]


def remove_outputs(paths) -> None:
    """Delete a failed stage's outputs so nothing half-written is left behind."""
    for p in map(Path, paths):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
