"""A pretraining killed mid-run: what the next run resumes, discards, and logs.

The stage scripts run as real processes, killed with SIGKILL once their first
checkpoint exists, as a crash or the OOM killer would. Checkpoints live in the
store (TRANSFERLAB_STORE, one per test here) under their key, so a run of other
params, data or code never even sees another run's checkpoint.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import ROOT, deep_update, write_params
from .pipeline_runner import make_project

LONG = {"pretrain": {"epochs": 60}}


def project(tmp: Path, raw: dict) -> Path:
    make_project(tmp, ROOT)
    write_params(tmp / "params.yaml", raw)
    return tmp


def _env(cwd: Path) -> dict:
    return {**os.environ, "TRANSFERLAB_STORE": str(cwd / "store")}


def checkpoints(cwd: Path) -> list[Path]:
    return sorted((cwd / "store" / "checkpoints").glob("*.pt"))


def stage(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          env=_env(cwd))
    assert proc.returncode == 0, proc.stderr
    return proc


def killed_after_first_checkpoint(cwd: Path) -> Path:
    proc = subprocess.Popen([sys.executable, "stages/pretrain.py", "--source", "A"], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=_env(cwd))
    deadline = time.time() + 120
    while not checkpoints(cwd):
        assert proc.poll() is None and time.time() < deadline, "no checkpoint was written"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (checkpoint,) = checkpoints(cwd)
    assert not (cwd / "models" / "A.pt").exists()
    return checkpoint


def pretrained_bytes(tmp: Path, raw: dict) -> bytes:
    clean = project(tmp, raw)
    stage(clean, "stages/prepare.py")
    stage(clean, "stages/pretrain.py", "--source", "A")
    return (clean / "models" / "A.pt").read_bytes()


def test_resume_after_a_kill_gives_the_uninterrupted_model_and_the_whole_curve(
        tmp_path, tiny_raw):
    raw = deep_update(tiny_raw, LONG)
    cwd = project(tmp_path / "run", raw)
    stage(cwd, "stages/prepare.py")
    killed_after_first_checkpoint(cwd)
    proc = stage(cwd, "stages/pretrain.py", "--source", "A")
    assert "resuming from" in proc.stderr
    assert not checkpoints(cwd), "a finished run removes its checkpoint"
    assert (cwd / "models" / "A.pt").read_bytes() == pretrained_bytes(tmp_path / "clean", raw)
    curve = (cwd / "dvclive/pretrain-A/plots/metrics/train_loss.tsv").read_text().splitlines()
    assert len(curve) == 1 + 60, "the resumed curve must hold every epoch"
    assert [line.split("\t")[0] for line in curve[1:]] == [str(i) for i in range(60)]


def test_a_checkpoint_of_other_data_is_not_resumed(tmp_path, tiny_raw):
    # The red-team's C1: killed, then data.normalise changed; the class lists (C2) and
    # the code (C3) reach the key the same way (transferlab.keys).
    raw = deep_update(tiny_raw, LONG)
    cwd = project(tmp_path / "run", raw)
    stage(cwd, "stages/prepare.py")
    other = killed_after_first_checkpoint(cwd)
    changed = deep_update(raw, {"data": {"normalise": "source"}})
    write_params(cwd / "params.yaml", changed)
    stage(cwd, "stages/prepare.py")
    proc = stage(cwd, "stages/pretrain.py", "--source", "A")
    assert "resuming" not in proc.stderr
    assert (cwd / "models" / "A.pt").read_bytes() == \
        pretrained_bytes(tmp_path / "clean", changed)
    # The other run's checkpoint is another key's: a queued experiment may resume it.
    assert checkpoints(cwd) == [other]


def test_a_checkpoint_of_another_width_is_not_a_permanent_failure(tmp_path, tiny_raw):
    raw = deep_update(tiny_raw, LONG)
    cwd = project(tmp_path / "run", raw)
    stage(cwd, "stages/prepare.py")
    other = killed_after_first_checkpoint(cwd)
    write_params(cwd / "params.yaml", deep_update(raw, {"model": {"convnet": {"width": 6}}}))
    proc = stage(cwd, "stages/pretrain.py", "--source", "A")  # C4: no size-mismatch error
    assert "resuming" not in proc.stderr and (cwd / "models" / "A.pt").exists()
    assert checkpoints(cwd) == [other]


class _Planted:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo ran > {self.marker}",))


def test_a_planted_checkpoint_runs_no_code(tmp_path, tiny_raw):
    raw = deep_update(tiny_raw, LONG)
    cwd = project(tmp_path, raw)
    stage(cwd, "stages/prepare.py")
    marker = tmp_path / "marker"
    checkpoint = killed_after_first_checkpoint(cwd)  # planted where the next run looks
    with open(checkpoint, "wb") as fh:
        pickle.dump({"key": "x", "x": _Planted(str(marker))}, fh)
    proc = stage(cwd, "stages/pretrain.py", "--source", "A")
    assert not marker.exists(), "unpickling the checkpoint ran code"
    assert "discarding checkpoint" in proc.stderr and "cannot be read" in proc.stderr
    assert (cwd / "models" / "A.pt").exists()


def test_a_checkpoint_with_zeroed_weights_fails_its_digest_and_is_not_resumed(
        tmp_path, tiny_raw):
    """The red-team's S8: the first checkpoint of a killed run read with weights_only,
    every float tensor of the model zeroed, `epoch` set to 30, written back with
    torch.save under the same key. It was resumed ("after epoch 30") and its zeroed
    model became models/A.pt."""
    import torch

    raw = deep_update(tiny_raw, LONG)
    cwd = project(tmp_path / "run", raw)
    stage(cwd, "stages/prepare.py")
    checkpoint = killed_after_first_checkpoint(cwd)
    state = torch.load(checkpoint, weights_only=True)
    for tensor in state["model"].values():
        if tensor.is_floating_point():
            tensor.zero_()
    state["epoch"] = 30
    torch.save(state, checkpoint)  # the key, and any digest, kept as they were

    proc = stage(cwd, "stages/pretrain.py", "--source", "A")
    assert "resuming" not in proc.stderr
    assert f"discarding checkpoint {checkpoint}: it fails its digest" in proc.stderr
    assert (cwd / "models" / "A.pt").read_bytes() == pretrained_bytes(tmp_path / "clean", raw)


def test_a_checkpoint_without_a_digest_is_not_resumed(tmp_path, tiny_raw):
    import torch

    raw = deep_update(tiny_raw, LONG)
    cwd = project(tmp_path, raw)
    stage(cwd, "stages/prepare.py")
    checkpoint = killed_after_first_checkpoint(cwd)
    state = torch.load(checkpoint, weights_only=True)
    state.pop("sha256", None)  # as every checkpoint was written before they carried one
    torch.save(state, checkpoint)
    proc = stage(cwd, "stages/pretrain.py", "--source", "A")
    assert "resuming" not in proc.stderr
    assert f"discarding checkpoint {checkpoint}: it carries no digest" in proc.stderr
    assert (cwd / "models" / "A.pt").exists() and not checkpoints(cwd)
