import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import deep_update, write_params
from .pipeline_runner import make_project

ROOT = Path(__file__).resolve().parent.parent


def run(stage_args, cwd):
    return subprocess.run([sys.executable, *stage_args], cwd=cwd, capture_output=True,
                          text=True)


def test_a_diverging_pretrain_leaves_no_output_behind(tmp_path, tiny_raw, monkeypatch,
                                                       capsys):
    """Every rate a real study could use is allowed (pretrain.lr <= 10), and not every one
    of them diverges on the digits: the loss is made non-finite instead, in process."""
    import runpy

    import torch

    make_project(tmp_path, ROOT)
    write_params(tmp_path / "params.yaml", deep_update(tiny_raw, {"pretrain": {"epochs": 3}}))
    assert run(["stages/prepare.py"], tmp_path).returncode == 0
    plain = torch.nn.functional.cross_entropy
    monkeypatch.setattr(torch.nn.functional, "cross_entropy",
                        lambda *args, **kwargs: plain(*args, **kwargs) * float("inf"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stages/pretrain.py", "--source", "A"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path("stages/pretrain.py", run_name="__main__")
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "loss became" in err and "try a lower lr" in err
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
