"""Every `dvc exp run -S ...` the project documents runs as written.

The commands are collected from the presets' comments (each applied over its preset)
and from README.md and docs/*.md: the lines of fenced code blocks (applied over the
shipped params.yaml and recipe.yaml, or over the preset a `presets NAME --write` line
of the same block wrote) and inline spans that hold a whole `dvc exp run`. Each
command starts from that base, as `dvc exp run` starts from the workspace. Its `-S`
pairs go through DVC's own code for `-S` (`to_path_overrides`, then Hydra's overrides
on the file each one names: params.yaml unless prefixed `recipe.yaml:`), so a key that
is not in that file is refused as DVC refuses it; the files are then read by the
params loader (`load_params`), which validates every value and refuses a key in the
wrong file. Every other `-S key=value` quoted in prose must at least name the file its
key lives in.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from transferlab.config.params import (
    PARAMS_FILE,
    ParamsError,
    home_file,
    load_params,
    read_params_file,
    split_params,
)
from transferlab.config.presets import apply_preset, preset_path

from .conftest import skip_without_hub

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))
# Shown in the docs as failing, with the loader's message beside it.
DOCUMENTED_FAILURES = {"dvc exp run -S freeze=9": "freeze = 9 is not allowed"}


def _join_continued(lines: list[str]) -> list[str]:
    """Lines with a trailing backslash joined to the next, as a shell reads them."""
    out, pending = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
        else:
            out.append(pending + line)
            pending = ""
    return out + ([pending] if pending else [])


def _expand(line: str) -> list[str]:
    """The `dvc exp run` commands of one shell line, a `for v in ...; do` loop unrolled."""
    loop = re.search(r"for (\w+) in ([^;]+); do (.*?); done", line)
    bodies = [line] if loop is None else [
        loop.group(3).replace(f"${loop.group(1)}", value) for value in loop.group(2).split()]
    segments = [re.sub(r"^\$\s+", "", segment.strip())  # a shell prompt shown before it
                for body in bodies for segment in re.split(r";|&&|\|\|?", body)]
    return [s for s in segments if s.startswith("dvc exp run") and not _is_template(s)]


def _is_template(text: str) -> bool:
    """`-S key=value`: the form of an assignment, not a command to run."""
    return bool(re.search(r"-S (\S+:)?key=value", text))


def _set_params(command: str) -> tuple[list[str], bool]:
    """(its -S arguments, whether it leaves the workspace alone: --queue / --temp)."""
    words = shlex.split(command)
    args = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-S", "--set-param")]
    return args, "--queue" in words or "--temp" in words


def _preset_commands() -> list[tuple[str, str | None, str]]:
    """(where, preset, command) for each command in a preset's comments: a whole
    `dvc exp run`, or the `-S` pairs a comment quotes to lay over the preset."""
    found = []
    for path in PRESETS:
        comments = [line.split("#", 1)[1] for line in path.read_text().splitlines()
                    if line.lstrip().startswith("#")]
        for line in _join_continued(comments):
            if "dvc exp run" in line:
                found += [(path.name, path.stem, c) for c in _expand(line)]
            else:
                found += [(path.name, path.stem, f"dvc exp run {span}")
                          for span in re.findall(r"`(-S [^`]+)`", line)]
    return found


def _doc_commands() -> tuple[list[tuple[str, str | None, str]], list[tuple[str, str]]]:
    """(where, preset or None, command) for each command of README.md and docs/*.md; and
    (where, -S argument) for each `-S` quoted in prose outside a whole command."""
    commands, quoted = [], []
    for path in DOCS:
        where = str(path.relative_to(ROOT))
        text = path.read_text()
        for i, block in enumerate(text.split("```")):
            if i % 2:  # a fenced block
                preset = None
                for line in _join_continued(block.splitlines()):
                    line = re.sub(r"\s+#.*$", "", line)
                    written = re.search(r"transferlab\.config\.presets (\S+) --write", line)
                    if written:
                        preset = written.group(1)
                    commands += [(where, preset, c) for c in _expand(line)
                                 if "--exp-args" not in line]
            else:
                for span in re.findall(r"`([^`\n]+)`", block):
                    if span.startswith("dvc exp run"):
                        commands += [(where, None, c) for c in _expand(span)]
                    else:
                        quoted += [(where, arg) for arg in re.findall(r"-S (\S+)", span)
                                   if not _is_template(f"-S {arg}")]
    return commands, quoted


PRESET_COMMANDS = _preset_commands()
DOC_COMMANDS, QUOTED = _doc_commands()


def _apply(command: str, preset: str | None, tmp: Path) -> None:
    """Run the command's -S pairs as `dvc exp run` does over the base, then load both
    files with the params loader (which raises ParamsError on a bad result)."""
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides

    base = (read_params_file(ROOT / PARAMS_FILE) if preset is None
            else apply_preset(preset, ROOT / PARAMS_FILE, ROOT / "presets"))
    for name, part in zip((PARAMS_FILE, "recipe.yaml"), split_params(base), strict=True):
        (tmp / name).write_text(yaml.safe_dump(part, sort_keys=False))
    args, _ = _set_params(command)
    for arg in args:
        file, key = _file_and_key(arg)
        assert home_file(key) == file, (
            f"-S {arg} sets {key} in {file}, but its place is {home_file(key)}: write "
            f"-S {'' if home_file(key) == PARAMS_FILE else home_file(key) + ':'}{key}=...")
    for file, overrides in to_path_overrides(args).items():
        apply_overrides(tmp / file, overrides)
    load_params(tmp / PARAMS_FILE)


def _file_and_key(arg: str) -> tuple[str, str]:
    assignment = arg.split("=", 1)[0]
    file, _, key = assignment.rpartition(":")
    return file or PARAMS_FILE, key


def test_commands_are_found_where_the_issue_found_them():
    """The collectors see the commands the docs and presets hold (none silently lost)."""
    sources = {where for where, _, _ in PRESET_COMMANDS + DOC_COMMANDS}
    assert {"borthakur-einhorn-densenet-fig2.yaml", "borthakur-einhorn-densenet-cifar100.yaml",
            "hong-alexnet-cifar100.yaml", "README.md", "docs/datasets.md", "docs/hong.md",
            "docs/borthakur-einhorn.md", "docs/scaling.md", "docs/spero.md"} <= sources
    loops = [c for where, _, c in DOC_COMMANDS if where == "docs/borthakur-einhorn.md"]
    assert "dvc exp run --queue -S recipe.yaml:pretrain.binary_aux.weight=0.6" in loops
    hong = [c for where, _, c in PRESET_COMMANDS if where.startswith("hong")]
    assert any("-n different" in c and "data.classes_file" in c for c in hong)
    for where, arg in QUOTED:
        assert "=" in arg, (where, arg)


@pytest.mark.parametrize(("where", "preset", "command"), PRESET_COMMANDS + DOC_COMMANDS,
                         ids=lambda x: x if isinstance(x, str) else "")
def test_each_documented_command_passes_the_params_loader(where, preset, command, tmp_path,
                                                          monkeypatch):
    monkeypatch.chdir(ROOT)  # paths in params (splits/, data.root) are read from the root
    if preset is not None:
        skip_without_hub(yaml.safe_load(preset_path(preset, ROOT / "presets").read_text()))
    if "arch=pretrained" in command:
        pytest.importorskip("transferlab.models.hub")
    if command in DOCUMENTED_FAILURES:
        with pytest.raises(ParamsError) as err:
            _apply(command, preset, tmp_path)
        assert DOCUMENTED_FAILURES[command] in str(err.value)
        # the docs show the loader's own message
        assert str(err.value) in (ROOT / where).read_text(), where
        return
    _apply(command, preset, tmp_path)


@pytest.mark.parametrize(("where", "arg"), QUOTED, ids=lambda x: x)
def test_each_quoted_assignment_names_the_file_of_its_key(where, arg):
    file, key = _file_and_key(arg)
    assert home_file(key) == file, f"{where}: -S {arg}: {key} lives in {home_file(key)}"


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_each_preset_validates(path, monkeypatch):
    skip_without_hub(yaml.safe_load(path.read_text()))
    monkeypatch.chdir(ROOT)
    apply_preset(path.stem, ROOT / PARAMS_FILE, ROOT / "presets")
