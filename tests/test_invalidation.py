"""What a change reruns, through the real `dvc status` / `dvc repro` in a git repository.

For each kind of input (a param, a file outside the repository, a code file,
the source model) the stages DVC calls changed must be exactly those that
depend on it. The variant store's side of the same question is in test_runs.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks.pipeline_overhead import copy_checkout, tool_env

from .conftest import TINY, deep_update, write_params

pytestmark = pytest.mark.e2e

ALL_STAGES = {"check_params", "sources_used", "prepare", "pretrain@A", "pretrain@B",
              "transfer", "sweep@0", "binary_aux", "features", "heads", "diagnostics",
              "transferability", "rank_sources", "report"}
PARAMS = deep_update(TINY, {"sweep": {"seeds": [0], "treatments": ["base", "AnB"]},
                            "pretrain": {"epochs": 1}, "transfer": {"steps": 3}})


def run(repo: Path, *args: str) -> subprocess.CompletedProcess:
    # The stages import the package from the repository's own src/, as an editable
    # install of a checkout does, so an edit there is an edit of the code that runs.
    env = {**tool_env(), "PYTHONPATH": str(repo / "src")}
    return subprocess.run(list(args), cwd=repo, env=env, capture_output=True, text=True)


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    proc = run(repo, "dvc", *args)
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def ran(proc: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", proc.stdout + proc.stderr))


def changed_stages(repo: Path) -> set[str]:
    """The stages `dvc status` reports as changed, less check_params (which every change
    of a params file reruns: it checks both files whole)."""
    status = json.loads(dvc(repo, "status", "--json").stdout or "{}")
    return set(status) - {"check_params"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = tmp_path_factory.mktemp("invalidation")
    copy_checkout(path, None)
    folder = path / "data" / "raw" / "images"  # under data.root, a dependency of prepare
    (folder / "c0").mkdir(parents=True)
    (folder / "c0" / "a.png").write_bytes(b"one")
    (folder / "c0" / "b.png").write_bytes(b"two")
    write_params(path / "params.yaml",
                 deep_update(PARAMS, {"data": {"path": "data/raw/images"}}))
    run(path, "git", "add", "-A")
    run(path, "git", "commit", "-qm", "tiny params")
    first = dvc(path, "repro")
    assert set(re.findall(r"Running stage '([^']+)'", first.stdout)) == ALL_STAGES
    run(path, "git", "add", "-A")
    run(path, "git", "commit", "-qm", "baseline")
    assert changed_stages(path) == set()
    return path


@pytest.fixture
def clean(repo):
    yield repo
    run(repo, "git", "checkout", "--", ".")
    dvc(repo, "checkout", "-f")


def set_params(repo: Path, changes: dict) -> None:
    from transferlab.config.params import read_params_file

    write_params(repo / "params.yaml", deep_update(read_params_file(repo / "params.yaml"),
                                                   changes))


@pytest.mark.parametrize(("changes", "expected"), [
    # Must hold: none of these re-decodes the data or retrains a source network.
    ({"subsample": 2}, {"transfer", "heads", "report"}),
    ({"data": {"flip": True}}, {"pretrain@A", "pretrain@B", "transfer", "sweep@0",
                                "binary_aux"}),
    ({"model": {"alexnet": {"fc": 2048}}}, set()),
    # rank_sources fine-tunes its candidates with transfer's recipe (none here: a note)
    ({"transfer": {"lr_mult": 0.5}}, {"transfer", "sweep@0", "binary_aux", "rank_sources"}),
    # the transferability stage's linear probe is the heads' own CV (when switched on)
    ({"heads": {"cv_folds": 2}}, {"heads", "transferability"}),
    ({"transferability": {"knn_neighbours": 2}}, {"transferability", "rank_sources"}),
    ({"ranking": {"subsample": 20}}, {"rank_sources"}),
    ({"transferability": {"bootstrap": 50}}, {"report"}),
    ({"report": {"tolerance": 0.02}}, {"report"}),
    ({"data": {"crop": 6}}, {"pretrain@A", "pretrain@B", "transfer", "sweep@0", "binary_aux",
                             "features", "diagnostics", "transferability"}),
])
def test_a_param_reruns_exactly_the_stages_that_read_it(clean, changes, expected):
    set_params(clean, changes)
    assert changed_stages(clean) == expected


def test_the_pad_with_a_crop_retrains_the_sweep_variants(clean, tmp_path, monkeypatch):
    # A store of its own: the session's store may hold variants other tests trained.
    monkeypatch.setenv("TRANSFERLAB_STORE", str(tmp_path / "store"))
    set_params(clean, {"data": {"crop": 6}})
    dvc(clean, "repro", "sweep@0")
    set_params(clean, {"data": {"crop": 6, "pad": 2}})
    assert "sweep@0" in changed_stages(clean)
    out = dvc(clean, "repro", "-s", "sweep@0")  # the source models stay as they were
    assert re.search(r"sweep seed 0: (\d+) variants, \1 trained, 0 reused", out.stdout), \
        out.stdout


def test_an_edited_code_file_reruns_the_stages_that_import_it(clean):
    with open(clean / "src/transferlab/heads/fit.py", "a") as fh:
        fh.write("\n# an edit\n")
    # transferability shares its subsample; rank_sources imports the estimators, whose
    # linear probe is the heads' own CV
    assert changed_stages(clean) == {"heads", "transferability", "rank_sources"}
    # `dvc repro -s heads` sees the edit by itself (no step before it has to run first)
    assert ran(dvc(clean, "repro", "-s", "heads")) == {"heads"}
    with open(clean / "src/transferlab/report/diagnostics.py", "a") as fh:
        fh.write("\n# an edit\n")
    assert changed_stages(clean) == {"transferability", "rank_sources", "report"}


def test_an_edited_heads_module_reruns_heads_and_its_downstream_only(clean):
    with open(clean / "src/transferlab/heads/lowshot.py", "a") as fh:
        fh.write("\n# an edit\n")
    assert changed_stages(clean) == {"heads"}
    # the report follows heads' outputs, which a comment leaves as they were
    rerun = ran(dvc(clean, "repro"))
    assert "heads" in rerun and rerun <= {"heads", "report"}


def test_a_new_source_model_reruns_what_reads_it(clean):
    dvc(clean, "repro", "-f", "-s", "pretrain@B")  # the same bytes: nothing downstream
    assert changed_stages(clean) == set()
    (clean / "models" / "B.pt").unlink()
    shutil.copy(clean / "models" / "A.pt", clean / "models" / "B.pt")
    assert changed_stages(clean) == {"pretrain@B", "transfer", "sweep@0"}


def test_an_image_added_to_the_folder_reruns_prepare(clean):
    folder = clean / "data" / "raw" / "images"
    (folder / "c0" / "c.png").write_bytes(b"three")
    try:
        assert "prepare" in changed_stages(clean)
    finally:
        (folder / "c0" / "c.png").unlink()
    assert changed_stages(clean) == set()


def test_an_image_swapped_in_with_the_same_size_and_mtime_reruns_prepare(clean):
    """As `rsync -t` or `tar x` of another version do: a new file renamed over the old one,
    its size and modification time those of the file it replaces."""
    image = clean / "data" / "raw" / "images" / "c0" / "a.png"
    old = image.read_bytes()
    stat = image.stat()
    swapped = image.with_name("a.png.new")
    swapped.write_bytes(b"owt")  # other bytes, the same size
    os.replace(swapped, image)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert image.stat().st_size == stat.st_size
    try:
        assert "prepare" in changed_stages(clean)
        assert "prepare" in ran(dvc(clean, "repro", "-s", "prepare"))
    finally:
        image.write_bytes(old)


@pytest.mark.parametrize("line", ["freez: 2\n", "foo: 1\n"])
def test_an_unknown_key_fails_every_repro(clean, line):
    with open(clean / "params.yaml", "a") as fh:
        fh.write(line)
    proc = run(clean, "dvc", "repro")
    assert proc.returncode != 0
    assert f"unknown key '{line.split(':')[0]}'" in proc.stderr + proc.stdout


def test_a_missing_params_file_is_named(clean):
    (clean / "params.yaml").unlink()
    proc = run(clean, "dvc", "status")
    assert proc.returncode != 0
    assert "'params.yaml' does not exist" in proc.stdout + proc.stderr
