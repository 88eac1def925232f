"""Cache keys derived from the declarations in dvc.yaml, never listed by hand.

What a stage depends on is declared once, in dvc.yaml: its params (from
params.yaml, and `recipe.yaml: [...]` from the second file) and its code, as
directory deps under src/ plus its own script. The sweep's variant store and the
pretraining checkpoint key their entries on the same declarations: the declared
params' values and a digest of the declared code, with the torch version and the
device type (tests/test_declarations.py holds the declarations against what each
stage really reads and imports).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferlab.config.params import PARAMS_FILE
from transferlab.config.spec import ConfigurationError, value_at
from transferlab.io import file_digest

CODE_ROOTS = ("src/", "stages/")
_TEMPLATE = re.compile(r"\$\{([^}]+)\}")


@dataclass(frozen=True)
class Declared:
    """What dvc.yaml says a stage depends on, as a cache key needs it."""

    params: tuple[str, ...]  # every declared params key, from both files
    code: str  # sha256 of the declared code: the .py files under its src/ and stages/ deps


def stage_spec(stage: str, dvc_yaml: Path | str = "dvc.yaml") -> dict:
    """A stage's definition in dvc.yaml (the `do:` part of a foreach stage)."""
    from ruamel.yaml import YAML

    spec = YAML(typ="safe").load(Path(dvc_yaml).read_text())["stages"][stage.split("@")[0]]
    return spec.get("do", spec)


def stage_params(stage: str, params: Any, dvc_yaml: Path | str = "dvc.yaml"
                 ) -> dict[str, list[str]]:
    """{file: keys} a stage declares, `${...}` filled in from `params`."""
    out: dict[str, list[str]] = {}
    for entry in stage_spec(stage, dvc_yaml).get("params", []):
        items = entry.items() if isinstance(entry, dict) else [(PARAMS_FILE, [entry])]
        for file, keys in items:
            # `file:` with no list declares the whole file (check_params)
            out.setdefault(file, []).extend(
                _TEMPLATE.sub(lambda m: str(value_at(params, m.group(1))), k) for k in keys or ())
    return out


def code_deps(stage: str, dvc_yaml: Path | str = "dvc.yaml") -> list[str]:
    """The stage's declared deps that are code (under src/ or stages/)."""
    return [d for d in stage_spec(stage, dvc_yaml).get("deps", []) if d.startswith(CODE_ROOTS)]


def code_files(deps: list[str], root: Path) -> list[Path]:
    """Every .py file under the given deps (files or directories), sorted."""
    files: set[Path] = set()
    for dep in deps:
        path = root / dep
        files.update(path.rglob("*.py") if path.is_dir() else [path])
    return sorted(files)


def declared(stage: str, params: Any, dvc_yaml: Path | str = "dvc.yaml") -> Declared:
    root = Path(dvc_yaml).parent
    h = hashlib.sha256()
    for path in code_files(code_deps(stage, dvc_yaml), root):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
    keys = [k for ks in stage_params(stage, params, dvc_yaml).values() for k in ks]
    return Declared(params=tuple(sorted(keys)), code=h.hexdigest())


def pretrained_weights(params: Any) -> dict[str, str]:
    """{"weights": ...} for arch pretrained: the sha256 of model.pretrained.weights, or for
    null (the library's cache) the download URL and hash the library verifies. {} for
    every other arch, so their keys stay what they were."""
    if params.arch != "pretrained":
        return {}
    chosen = params.model.pretrained
    if chosen["weights"] is not None:
        if not Path(chosen["weights"]).is_file():
            raise ConfigurationError(f"params: model.pretrained.weights = "
                                     f"{chosen['weights']!r}: no such file")
        return {"weights": file_digest(chosen["weights"])}
    from transferlab.models.hub import weights_origin

    url, digest = weights_origin(chosen["name"])
    return {"weights": f"{chosen['name']} {url} {digest}"}


def derive_key(params: Any, keys: tuple[str, ...] | list[str], **parts: Any) -> str:
    """sha256 of the declared params' values and the other `parts` (digests, names)."""
    blob = {"params": {k: value_at(params, k) for k in sorted(keys)}, **parts}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()
