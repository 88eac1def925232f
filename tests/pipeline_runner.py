"""Run the stages of dvc.yaml in one process, in dependency order.

The same entry scripts `dvc repro` runs, without paying a Python start-up and
the torch import per stage: the dataset tests run the whole pipeline on six
datasets. The real `dvc repro` is exercised by test_pipeline_e2e.py.
"""

from __future__ import annotations

import os
import runpy
import shlex
import sys
from pathlib import Path

import yaml

from transferlab.config.params import read_params_file


def _expand(name: str, stage: dict, params: dict) -> list[tuple[str, str]]:
    if "foreach" in stage:
        return [(f"{name}@{item}", stage["do"]["cmd"].replace("${item}", str(item)))
                for item in stage["foreach"]]
    if "matrix" in stage:
        (key, ref), = stage["matrix"].items()
        path = ref.strip("${}").split(".")
        values = params
        for part in path:
            values = values[part]
        return [(f"{name}@{v}", stage["cmd"].replace(f"${{item.{key}}}", str(v)))
                for v in values]
    return [(name, stage["cmd"])]


def stage_commands(repo: Path) -> list[tuple[str, list[str]]]:
    """(stage name, argv) for every stage of repo/dvc.yaml, in file order (which is a
    topological order of the graph; test_runner_order_is_the_dvc_order checks it)."""
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    params = read_params_file(repo / "params.yaml")
    out = []
    for name, stage in spec["stages"].items():
        for full, cmd in _expand(name, stage, params):
            argv = shlex.split(cmd)
            assert argv[0] == "python", cmd
            out.append((full, argv[1:]))
    return out


def run_pipeline(repo: Path, only: set[str] | None = None,
                 reads: dict[str, set[str]] | None = None) -> list[str]:
    """Run every stage's script as `python <script> <args>` would, in this process.

    With `reads`, the params keys each stage read are added to reads[stage name]."""
    from .read_recorder import recording

    repo = Path(repo)
    ran = []
    old_cwd, old_argv = os.getcwd(), sys.argv
    os.chdir(repo)
    try:
        for name, argv in stage_commands(repo):
            if only is not None and name.split("@")[0] not in only:
                continue
            sys.argv = argv
            try:
                with recording() as keys:
                    runpy.run_path(argv[0], run_name="__main__")
            except SystemExit as exc:
                if exc.code not in (0, None):
                    raise AssertionError(f"stage {name} exited with {exc.code}") from exc
            if reads is not None:
                reads.setdefault(name.split("@")[0], set()).update(keys)
            ran.append(name)
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv
    return ran


def make_project(dest: Path, root: Path) -> Path:
    """The files a pipeline run reads: the stage scripts and the code they declare in
    dvc.yaml (the cache keys hash it), dvc.yaml, splits/, presets/, data/raw/."""
    import shutil

    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("stages", "src", "splits", "presets", "data/raw"):
        shutil.copytree(root / name, dest / name, ignore=ignore, dirs_exist_ok=True)
    shutil.copy(root / "dvc.yaml", dest / "dvc.yaml")
    return dest
