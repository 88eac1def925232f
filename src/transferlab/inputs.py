"""Each stage's inputs that DVC does not see directly, as one small file per stage.

The light `validate` stage, which runs on every `dvc repro`, writes
data/inputs/<stage>.json for every other stage, and the stage depends on it:
- `code`: the sha256 of the stage script and of every module of its import
  closure, so editing a module reruns exactly the stages that import it (one
  dependency column in `dvc exp show` instead of one per source file);
- `recipe`: the values of the recipe.yaml keys the stage declares under
  `meta.recipe` in dvc.yaml;
- `external`: fingerprints of the paths in params that live outside the
  repository (`data.path`, an image folder; `data.manifest`,
  `data.classes_file`, `features.weights`), which DVC cannot list as deps
  because they may be null: adding an image to the folder or replacing a
  weights file reruns exactly the stages that read them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from transferlab.keys import (
    PACKAGE_DIR,
    file_digest,
    import_closure,
    recipe_keys,
    stage_script,
)

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


def code_digests(root: Path, script: str) -> dict[str, str]:
    """sha256 of a stage script (by its path from the project root) and of each module it
    imports (by its path in the package)."""
    digests = {script: file_digest(root / script)}
    for module in import_closure(root / script):
        digests[module.relative_to(PACKAGE_DIR.parent).as_posix()] = file_digest(module)
    return digests


def stage_inputs(params, stage: str, root: Path = Path(".")) -> dict:
    """What data/inputs/<stage>.json holds (see the module's docstring)."""
    from transferlab.schema import value_at

    dvc_yaml = root / "dvc.yaml"
    return {"code": code_digests(root, stage_script(stage, dvc_yaml)),
            "recipe": {key: value_at(params, key) for key in recipe_keys(stage, dvc_yaml)},
            "external": {key: fingerprint(value_at(params, key))
                         for key in EXTERNAL.get(stage, ())}}
