"""Fingerprints of the inputs that live outside the repository.

`data.path` (an image folder), `data.manifest`, `data.classes_file` and
`features.weights` are paths in params: DVC cannot list them as deps because
they may be null. The light `validate` stage, which runs on every `dvc repro`,
writes their fingerprints to small files that `prepare` and `features` depend
on, so adding an image to the folder or replacing a weights file reruns
exactly the stages that read them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from transferlab.keys import file_digest

# Which stage reads which external path params.
EXTERNAL = {"prepare": ("data.path", "data.source_path", "data.target_path", "data.manifest",
                        "data.classes_file"),
            "features": ("features.weights",)}


def folder_digest(path: Path) -> tuple[int, str]:
    """(files, digest) of a directory tree from each file's relative path, size and
    modification time: cheap on a large image folder, and any added, removed,
    replaced or edited file changes it."""
    h = hashlib.sha256()
    count = 0
    for root, dirs, files in os.walk(path, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            full = Path(root, name)
            try:
                st = full.stat()
            except OSError:  # a dangling link: its name still counts
                st = None
            rel = full.relative_to(path).as_posix()
            h.update(f"{rel}\0{st and st.st_size}\0{st and st.st_mtime_ns}\n".encode())
            count += 1
    return count, h.hexdigest()


def fingerprint(value: str | None) -> dict | None:
    if value is None:
        return None
    path = Path(value)
    if path.is_dir():
        files, digest = folder_digest(path)
        return {"path": value, "kind": "folder", "files": files, "digest": digest}
    if path.is_file():
        return {"path": value, "kind": "file", "sha256": file_digest(path)}
    return {"path": value, "kind": "missing"}


def external_inputs(params, stage: str) -> dict:
    from transferlab.schema import value_at

    return {key: fingerprint(value_at(params, key)) for key in EXTERNAL[stage]}
