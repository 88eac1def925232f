import subprocess
import sys
from pathlib import Path

from .conftest import deep_update, write_params
from .pipeline_runner import make_project

ROOT = Path(__file__).resolve().parent.parent


def run(stage_args, cwd):
    return subprocess.run([sys.executable, *stage_args], cwd=cwd, capture_output=True,
                          text=True)


def test_a_diverging_pretrain_leaves_no_output_behind(tmp_path, tiny_raw):
    make_project(tmp_path, ROOT)
    raw = deep_update(tiny_raw, {"pretrain": {"optimizer": "sgd", "lr": 1e12, "epochs": 3}})
    write_params(tmp_path / "params.yaml", raw)
    assert run(["stages/prepare.py"], tmp_path).returncode == 0
    proc = run(["stages/pretrain.py", "--source", "A"], tmp_path)
    assert proc.returncode == 1
    assert "loss became" in proc.stderr and "try a lower lr" in proc.stderr
    assert not (tmp_path / "models" / "A.pt").exists()
    assert not (tmp_path / "dvclive" / "pretrain-A").exists()
    assert not (tmp_path / "results" / "pretrain" / "A.json").exists()


def test_a_stage_missing_its_input_says_which_stage_to_run(tmp_path, tiny_raw):
    make_project(tmp_path, ROOT)
    write_params(tmp_path / "params.yaml", tiny_raw)
    proc = run(["stages/features.py"], tmp_path)
    assert proc.returncode == 1
    assert "data/prepared/target.npz is missing" in proc.stderr
    assert not (tmp_path / "data" / "features").exists()
