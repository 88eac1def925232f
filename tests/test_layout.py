"""The shape of the package: subpackages named for the pipeline's parts, no import cycle,
thin stage scripts, and nothing on the default path that needs Linux."""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

from .conftest import ROOT, TINY, write_params
from .import_closure import PACKAGE_DIR, module_graph
from .pipeline_runner import make_project, run_pipeline


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _without_parent_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    # Importing a.b.c runs a/__init__ and a/b/__init__: an edge to a parent package is
    # Python's import machinery, not a dependency of the module's own code.
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def test_no_import_cycle_in_the_package():
    assert _cycles(_without_parent_packages(module_graph())) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_subpackages_name_the_pipeline_and_few_modules_sit_at_the_top():
    packages = {p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").exists()}
    assert {"config", "data", "models", "training", "features", "heads", "diagnostics",
            "transferability", "report"} <= packages
    top = [p.name for p in PACKAGE_DIR.glob("*.py") if p.name != "__init__.py"]
    assert len(top) <= 8, top


def test_the_library_never_imports_stage_glue():
    graph = module_graph()
    users = sorted(m for m, deps in graph.items() if "transferlab.stage" in deps)
    assert users == [], users


def test_stage_scripts_are_short():
    for script in (ROOT / "stages").glob("*.py"):
        lines = script.read_text().count("\n")
        assert lines <= 40, f"{script.name}: {lines} lines"


def test_no_stage_launcher_left_anywhere():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    hits = [f for f in files if "zygote" in f.lower()
            or (f.endswith((".py", ".md", ".yaml", ".toml")) and f != "tests/test_layout.py"
                and "zygote" in (ROOT / f).read_text(errors="replace").lower())]
    assert hits == []


LINUX_ONLY = ("sched_getaffinity", "sched_setaffinity", "pidfd_open", "fork", "forkpty")


def test_the_default_pipeline_runs_without_linux_only_calls(tmp_path, monkeypatch):
    """As on macOS or Windows: no os.sched_getaffinity, os.pidfd_open or os.fork, and no
    /proc. Every stage of a tiny default run still finishes."""
    for name in LINUX_ONLY:
        monkeypatch.delattr(os, name, raising=False)
    real_read_text = pathlib.Path.read_text

    def no_proc(self, *args, **kwargs):
        if str(self).startswith("/proc"):
            raise FileNotFoundError(str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", no_proc)
    project = make_project(tmp_path / "project", ROOT)
    write_params(project / "params.yaml", TINY)
    ran = run_pipeline(project)
    assert ran[0] == "check_params" and ran[-1] == "report"
    assert (project / "metrics" / "summary.json").exists()


@pytest.mark.parametrize("name", LINUX_ONLY)
def test_no_module_calls_a_linux_only_function(name):
    hits = [p.relative_to(ROOT).as_posix() for p in PACKAGE_DIR.rglob("*.py")
            if f"os.{name}(" in p.read_text()]
    assert hits == []
