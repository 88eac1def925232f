"""The real `dvc repro`, `dvc exp run` and `dvc metrics diff` in a temporary git repository."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from benchmarks.pipeline_overhead import copy_checkout, tool_env
from transferlab.config.params import read_params_file

from .conftest import TINY, deep_update, write_params

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
# DVC needs every param a stage lists to be in the file: start from the shipped one.
E2E_PARAMS = deep_update(read_params_file(ROOT / "params.yaml"),
                         deep_update(TINY, {"sweep": {"seeds": [0]},
                                            "model": {"convnet": {"width": 8}},
                                            "transfer": {"steps": 40}}))


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["dvc", *args], cwd=repo, env=tool_env(), capture_output=True,
                          text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def ran(proc: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", proc.stdout + proc.stderr))


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env=tool_env())


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipeline")
    copy_checkout(path, None)
    write_params(path / "params.yaml", E2E_PARAMS)
    git(path, "add", "-A")
    git(path, "commit", "-qm", "tiny params")
    first = dvc(path, "repro")
    assert ran(first) == {"check_params", "sources_used", "prepare", "pretrain@A", "pretrain@B",
                          "transfer",
                          "sweep@0", "binary_aux", "features", "heads", "diagnostics",
                          "transferability", "rank_sources", "report"}
    git(path, "add", "-A")
    git(path, "commit", "-qm", "baseline")
    return path


def test_repro_produces_the_summary_and_plots(repo):
    summary = json.loads((repo / "metrics/details.json").read_text())
    assert set(summary) == {"metric", "pretrain", "transfer", "sweep", "heads", "heads_dims",
                            "lowshot", "diagnostics", "diagnostics_per_class",
                            "diagnostics_rule", "diagnostics_vs_sweep", "transferability"}
    assert summary["transferability"]["rows"] and summary["transferability"]["rule"]
    assert 0 <= summary["transfer"]["test_accuracy"] <= 1
    assert summary["transfer"]["freeze"] == 3
    assert set(summary["sweep"]) == {"k1", "k3"}
    assert set(summary["sweep"]["k3"]["AnB"]) == {"n1", "n3"}
    assert set(summary["heads"]) == {"conv1", "conv2", "conv3", "conv4", "fc5"}
    for name in ("transferability", "size_curve", "heads"):
        assert (repo / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (repo / "plots" / f"{name}.csv").read_text().count("\n") >= 2
    assert (repo / "data/features/conv3/train.npz").exists()


def test_second_repro_is_up_to_date_and_runs_nothing(repo):
    proc = dvc(repo, "repro")
    assert ran(proc) == set()
    assert "Data and pipelines are up to date." in proc.stdout
    assert "Data and pipelines are up to date." in dvc(repo, "status").stdout
    spec = (repo / "dvc.yaml").read_text()
    assert "always_changed" not in spec


def test_every_stage_runs_as_a_child_of_dvc(repo):
    """The stages' CPU and memory are the dvc process's children's, so `/usr/bin/time -v
    dvc repro`, ulimit and a cgroup's memory limit see and bound them. dvc alone stays
    near 70 MB; a training stage that imports torch goes well past 200 MB."""
    import sys

    # A fresh process runs dvc, so its children's figures are this repro's alone.
    probe = ("import resource, subprocess, sys; "
             "subprocess.run(['dvc', 'repro', '-f', '-s', 'pretrain@A'], check=True); "
             "r = resource.getrusage(resource.RUSAGE_CHILDREN); "
             "print(r.ru_maxrss, r.ru_utime)")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=repo, env=tool_env(),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    maxrss_kb, user_seconds = proc.stdout.split()[-2:]
    assert int(maxrss_kb) > 200_000, maxrss_kb  # kB on Linux
    assert float(user_seconds) > 1.0, user_seconds


def test_plots_render(repo):
    proc = dvc(repo, "plots", "show", "-o", str(repo / "rendered"))
    assert (repo / "rendered" / "index.html").exists(), proc.stdout


def test_exp_show_lists_recipe_keys_and_code_and_metrics_show_works(repo):
    # Declared the DVC way, recipe keys and code folders are columns of their own;
    # `dvc exp show --only-changed` (or --drop/--keep) answers the width.
    header = dvc(repo, "exp", "show", "--csv").stdout.splitlines()[0].split(",")
    assert {"freeze", "transfer.lr", "pretrain.epochs", "heads.cv_folds",
            "src/transferlab/heads"} <= set(header)
    assert not [c for c in header if c.startswith("data/inputs")]
    shown = dvc(repo, "metrics", "show")
    assert "metrics/summary.json" in shown.stdout and "ERROR" not in shown.stderr.upper()


def test_exp_run_freeze_reruns_only_transfer_and_report_and_diff_shows_it(repo):
    proc = dvc(repo, "exp", "run", "-S", "freeze=2")
    # sources_used reads freeze too; what it writes does not change, so no pretrain reruns
    assert ran(proc) == {"check_params", "sources_used", "transfer", "report"}
    diff = json.loads(dvc(repo, "metrics", "diff", "--json").stdout)
    changes = diff["metrics/summary.json"]
    assert changes["transfer.freeze"] == {"old": 3, "new": 2, "diff": -1}
    assert "transfer.test_accuracy" in changes

    # Back to freeze=3: DVC's run-cache restores transfer's outputs without training.
    back = dvc(repo, "exp", "run", "-S", "freeze=3")
    assert "transfer" not in ran(back)
    assert "Stage 'transfer' is cached" in back.stdout + back.stderr
    diff = json.loads(dvc(repo, "metrics", "diff", "--json").stdout)
    assert "transfer.test_accuracy" not in diff.get("metrics/summary.json", {})


def test_adding_a_seed_to_the_grid_runs_only_the_new_variant(repo):
    proc = dvc(repo, "exp", "run", "-S", "sweep.seeds=[0,1]")
    # the estimators score the new seed's draws too (seconds, no training)
    assert ran(proc) == {"check_params", "sweep@1", "transferability", "report"}
    summary = json.loads((repo / "metrics/details.json").read_text())
    assert summary["sweep"]["k3"]["base"]["seeds"] == 2


def test_a_recipe_key_reruns_only_its_readers_and_params_diff_shows_it(repo):
    proc = dvc(repo, "exp", "run", "-S", "recipe.yaml:heads.cv_folds=2")
    # heads and the estimators' linear probe read it; the report follows their outputs
    assert ran(proc) <= {"check_params", "heads", "transferability", "report"}
    assert {"check_params", "heads"} <= ran(proc)
    diff = json.loads(dvc(repo, "params", "diff", "--json").stdout)
    assert diff["recipe.yaml"]["heads.cv_folds"]["new"] == 2


def test_model_b_is_not_trained_while_nothing_reads_it(repo):
    """The graph decides: without a B treatment, pretrain@B reruns and trains nothing, the
    A variants keep their store keys (nothing retrained), and the report says why."""
    proc = dvc(repo, "exp", "run", "-S", "sweep.treatments=[base,AnB,AnB+]")
    out = proc.stdout + proc.stderr
    assert {"sources_used", "pretrain@B", "sweep@0", "report"} <= ran(proc)
    assert "pretrain@A" not in ran(proc)
    assert "pretrain B: model B is not trained: no stage reads it" in out
    assert re.search(r"sweep seed 0: \d+ variants, 0 trained", out), out[-2000:]
    b = json.loads((repo / "results/pretrain/B.json").read_text())
    assert b["trained"] is False
    assert "Model B: model B is not trained" in (repo / "metrics/summary.md").read_text()
    # A treatment that copies from B brings it back; DVC restores the trained B from its
    # cache (the committed run), so nothing trains it again.
    back = dvc(repo, "exp", "run", "-S", "sweep.treatments=[base,AnB,AnB+,BnB]")
    assert "pretrain B: model B is not trained" not in back.stdout + back.stderr
    assert json.loads((repo / "results/pretrain/B.json").read_text()).get("trained") is not False


def test_bad_param_fails_the_run_naming_key_and_value(repo):
    proc = dvc(repo, "exp", "run", "-S", "freeze=9", check=False)
    assert proc.returncode != 0
    assert "freeze = 9" in proc.stdout + proc.stderr
