"""Cache keys derived from declarations, never listed by hand.

A key covers what makes a result: the params its stage declares in dvc.yaml
(`params:` from params.yaml and `meta.recipe` from recipe.yaml: the one
declaration; a test holds it against the keys the stage really reads), the
digests of its input files, the source code it imports (the import closure of
its module inside the package, found by reading the imports, lazy ones
included) and the torch version. The sweep's variant store and the pretraining
checkpoint build their keys here, and the validate stage writes each stage's
code digests and recipe values (transferlab.inputs) from the same functions.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transferlab.schema import value_at

PACKAGE = "transferlab"
PACKAGE_DIR = Path(__file__).resolve().parent


def _module_file(module: str) -> Path | None:
    """The file of a transferlab module, or None when it is not one."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    rel = path.resolve().relative_to(PACKAGE_DIR).with_suffix("")
    parts = [PACKAGE, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """The imports and string constants of a module, at any depth, less what is under
    `if TYPE_CHECKING:` (never run, so not imports). One pass over the tree's fields:
    ast.walk's generators cost validate more than parsing did."""
    stack = [tree]
    pop, push, extend = stack.pop, stack.append, stack.extend
    node_type, if_type = ast.AST, ast.If
    wanted = (ast.Constant, ast.Import, ast.ImportFrom)
    while stack:
        node = pop()
        if isinstance(node, wanted):
            yield node
        if type(node) is if_type and "TYPE_CHECKING" in ast.unparse(node.test):
            push(node.test)
            extend(node.orelse)
            continue
        for name in node._fields:
            value = getattr(node, name, None)
            if type(value) is list:
                extend(v for v in value if isinstance(v, node_type))
            elif isinstance(value, node_type):
                push(value)


def _stamp(path: Path | str) -> tuple[Path, int, int]:
    """A file's identity for the parse caches below: a rewritten file is parsed again."""
    path = Path(path).resolve()
    st = path.stat()
    return path, st.st_mtime_ns, st.st_size


def _imported_modules(path: Path) -> frozenset[str]:
    """Every transferlab module a file imports, at any depth of its code; a string
    naming one ("transferlab.models.convnet:build_convnet", for importlib) counts too."""
    # validate walks the closure of every stage script: each module is parsed once.
    return _parsed_imports(*_stamp(path))


@functools.cache
def _parsed_imports(path: Path, _mtime_ns: int, _size: int) -> frozenset[str]:
    text = path.read_text()
    # The parse is a pure function of the text, the file's place in the package (its path
    # and the package's folder) and this module's code: kept on disk under their digest,
    # it serves every later process (each training stage derives its cache key from its
    # import closure).
    digest = hashlib.sha256(f"{_scanner_digest()}\0{PACKAGE_DIR}\0{path}\0".encode()
                            + text.encode()).hexdigest()
    names = _cached_scan(digest)
    if names is None:
        names = _scan_imports(path, text)
        _store_scan(digest, names)
    # Which of them are files of the package is asked of the disk every time.
    return frozenset(m for m in names if _module_file(m) is not None)


def _scan_imports(path: Path, text: str) -> list[str]:
    """The transferlab module names a file's text imports (and their parents)."""
    tree = ast.parse(text, filename=str(path))
    here = _module_name(path) if path.resolve().is_relative_to(PACKAGE_DIR) else ""
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.startswith(PACKAGE + "."):
            found.add(node.value.split(":")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            # `from transferlab.data import split` imports a module, not a name.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    modules = set()
    for name in found:
        if not name.startswith(PACKAGE):
            continue
        parts = name.split(".")
        # Importing a.b.c runs the __init__ of a and of a.b as well.
        modules.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return sorted(modules)


@functools.cache
def _scanner_digest() -> str:
    return file_digest(__file__)


def scan_cache_dir() -> Path:
    """Where parsed imports are kept: $TRANSFERLAB_CACHE, else the user's cache folder."""
    import os

    root = os.environ.get("TRANSFERLAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "transferlab")
    return Path(root, "imports")


def _cached_scan(digest: str) -> list[str] | None:
    """A kept parse, or None (absent, unreadable or not what a parse gives: a miss)."""
    try:
        names = json.loads((scan_cache_dir() / f"{digest}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None
    return names


def _store_scan(digest: str, names: list[str]) -> None:
    """Keep a parse (atomically); a folder that cannot be written only costs the cache."""
    from transferlab.io import write_text_atomic

    try:
        write_text_atomic(scan_cache_dir() / f"{digest}.json", json.dumps(names))
    except OSError:
        pass


def import_closure(start: Path | str) -> list[Path]:
    """The package files that `start` (a script path or a module name) imports,
    directly or through others; `start` itself is included when it is in the package."""
    if isinstance(start, str) and not start.endswith(".py"):
        first = _module_file(start)
        if first is None:
            raise ValueError(f"{start!r} is not a module of {PACKAGE}")
    else:
        first = Path(start).resolve()
    seen: set[Path] = set()
    todo = [first]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += [_module_file(m) for m in _imported_modules(path)]
    return sorted(p for p in seen if p.is_relative_to(PACKAGE_DIR))


def code_digest(module: str) -> str:
    """sha256 over the import closure of `module`: relative paths and contents."""
    h = hashlib.sha256()
    for path in import_closure(module):
        h.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def file_digest(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_TEMPLATE = re.compile(r"\$\{([^}]+)\}")


def dvc_stages(dvc_yaml: Path | str = "dvc.yaml") -> dict:
    """The `stages:` of dvc.yaml, parsed once per version of the file (do not modify)."""
    return _parsed_stages(*_stamp(dvc_yaml))


@functools.cache
def _parsed_stages(path: Path, _mtime_ns: int, _size: int) -> dict:
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(path.read_text())["stages"]


def stage_spec(stage: str, dvc_yaml: Path | str = "dvc.yaml") -> dict:
    """A stage's definition in dvc.yaml (the `do:` part of a foreach stage)."""
    spec = dvc_stages(dvc_yaml)[stage.split("@")[0]]
    return spec.get("do", spec)


def stage_script(stage: str, dvc_yaml: Path | str = "dvc.yaml") -> str:
    """The script a stage's command runs (`python stages/x.py ...`)."""
    return next(w for w in stage_spec(stage, dvc_yaml)["cmd"].split() if w.endswith(".py"))


def recipe_keys(stage: str, dvc_yaml: Path | str = "dvc.yaml") -> list[str]:
    """The recipe.yaml keys a stage declares under `meta.recipe` in dvc.yaml."""
    return list((stage_spec(stage, dvc_yaml).get("meta") or {}).get("recipe", []))


def stage_params(stage: str, params: Any, dvc_yaml: Path | str = "dvc.yaml") -> list[str]:
    """Every params key a stage declares in dvc.yaml, from both files, `${...}` filled in
    from `params`."""
    declared = stage_spec(stage, dvc_yaml).get("params", [])
    keys = []
    for entry in declared:
        if isinstance(entry, dict):  # {file: [keys]} form: recipe keys go in meta.recipe
            raise ValueError(f"dvc.yaml stage {stage}: params from another file: {entry}")
        keys.append(_TEMPLATE.sub(lambda m: str(value_at(params, m.group(1))), entry))
    return keys + recipe_keys(stage, dvc_yaml)


def derive_key(params: Any, keys: list[str], **parts: Any) -> str:
    """sha256 of the declared params' values and the other `parts` (digests, names)."""
    blob = {"params": {k: value_at(params, k) for k in sorted(keys)}, **parts}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()
