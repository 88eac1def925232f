"""The package modules a script imports, directly or through others, read from the source.

Used by tests/test_declarations.py to hold each stage's declared code deps against
what its script really imports. Lazy imports count, and so does a string naming a
module ("transferlab.models.convnet:build_convnet", for importlib); imports under
`if TYPE_CHECKING:` do not, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import transferlab

PACKAGE = "transferlab"
PACKAGE_DIR = Path(transferlab.__file__).resolve().parent


def module_file(module: str) -> Path | None:
    """The file of a package module, or None when it is not one."""
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


def _nodes(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []  # never run: not imports
        yield node


def imported_modules(path: Path) -> set[str]:
    """Every package module (and parent package) a file imports, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    inside = path.resolve().is_relative_to(PACKAGE_DIR)
    here = _module_name(path) if inside else ""
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in _nodes(tree):
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
        if name == PACKAGE or name.startswith(PACKAGE + "."):
            parts = name.split(".")
            # Importing a.b.c runs the __init__ of a and of a.b as well.
            modules.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in modules if module_file(m) is not None}


def import_closure(start: Path) -> list[Path]:
    """The package files that the script `start` imports, directly or through others."""
    seen: set[Path] = set()
    todo = [Path(start).resolve()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += [module_file(m) for m in imported_modules(path)]
    return sorted(p for p in seen if p.is_relative_to(PACKAGE_DIR))


def module_graph() -> dict[str, set[str]]:
    """{module: modules it imports} over every module of the package."""
    return {_module_name(p): imported_modules(p) - {_module_name(p)}
            for p in sorted(PACKAGE_DIR.rglob("*.py"))}
