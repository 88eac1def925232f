"""Paper presets: partial params trees in presets/, laid over params.yaml and recipe.yaml.

    python -m transferlab.config.presets                      # list them, with what each reproduces
    python -m transferlab.config.presets soekhoe-alexnet-miniplaces --exp-args | xargs dvc exp run
    python -m transferlab.config.presets soekhoe-alexnet-tinyimagenet --write  # rewrite both files

A preset names only what its paper changes, in one tree; every other key keeps
its value. `--exp-args` addresses each key in its file (`-S freeze=7`,
`-S recipe.yaml:pretrain.epochs=90`). Both ways validate the result before
printing or writing.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
from pathlib import Path

import yaml

from transferlab.config.params import (
    PARAMS_FILE,
    ParamsError,
    home_file,
    parse_params,
    read_params_file,
    write_params_files,
)

PRESETS_DIR = Path("presets")


def preset_path(name: str, directory: Path = PRESETS_DIR) -> Path:
    """The preset named `name`, or the one preset whose name starts with it."""
    if (directory / f"{name}.yaml").is_file():
        return directory / f"{name}.yaml"
    matches = sorted(directory.glob(f"{name}*.yaml"))
    if len(matches) != 1:
        known = ", ".join(p.stem for p in sorted(directory.glob("*.yaml")))
        raise ParamsError(f"preset {name!r} matches {len(matches)} files in {directory}; "
                          f"presets: {known}")
    return matches[0]


def merge(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_preset(name: str, params_file: Path = Path("params.yaml"),
                 directory: Path = PRESETS_DIR) -> dict:
    """The params (both files) with the preset laid over them, validated."""
    base = read_params_file(params_file)
    preset = yaml.safe_load(preset_path(name, directory).read_text())
    merged = merge(base, preset)
    parse_params(merged)
    return merged


def exp_args(preset: dict, prefix: str = "") -> list[str]:
    """`-S key=value` pairs for every leaf of the preset (lists stay whole)."""
    args = []
    for key, value in preset.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            args += exp_args(value, path + ".")
        else:
            where = "" if home_file(path) == PARAMS_FILE else f"{home_file(path)}:"
            args += ["-S", f"{where}{path}={json.dumps(value)}"]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--exp-args", action="store_true")
    how.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    found = sorted(PRESETS_DIR.glob("*.yaml"))
    if not found:
        print(f"error: no presets found: {PRESETS_DIR.absolute()} "
              f"{'holds no *.yaml files' if PRESETS_DIR.is_dir() else 'does not exist'}; "
              "run this from the project root (the folder with params.yaml and presets/)",
              file=sys.stderr)
        return 2
    if args.name is None:
        for path in found:
            print(path.stem)
            paper = (yaml.safe_load(path.read_text()) or {}).get("paper") or {}
            for key in ("study", "reproduces"):
                if paper.get(key):
                    print(f"    {key}: {' '.join(str(paper[key]).split())}")
        return 0
    if not Path("params.yaml").is_file():
        print(f"error: {Path('params.yaml').absolute()} does not exist; run this from the "
              "project root", file=sys.stderr)
        return 2
    try:
        merged = apply_preset(args.name)
    except ParamsError as err:
        print(err, file=sys.stderr)
        return 2
    if args.write:
        write_params_files(merged, Path("."))
        print(f"params.yaml and recipe.yaml now hold preset {preset_path(args.name).stem}")
    else:
        preset = yaml.safe_load(preset_path(args.name).read_text())
        # quoted for a shell (and for xargs, which splits like one)
        print(" ".join(shlex.quote(a) if a != "-S" else a for a in exp_args(preset)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
