"""Pretraining under torchrun: two CPU processes (gloo) on 127.0.0.1, DDP averaging."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from transferlab.config.spec import ParamsError
from transferlab.training import distributed

from .conftest import deep_update
from .test_interruption import project

EPOCHS = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "TRANSFERLAB_STORE": str(cwd / "store"),
                               **(env or {})})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_pretraining_under_torchrun_trains_and_rank_0_alone_writes(tmp_path, tiny_raw):
    raw = deep_update(tiny_raw, {"pretrain": {"epochs": EPOCHS, "batch_size": 64}})
    cwd = project(tmp_path / "run", raw)
    _run(cwd, "stages/prepare.py")
    logs = tmp_path / "logs"
    # Where-it-runs configuration: the stage starts itself under torchrun.
    options = (f"--nproc-per-node 2 --master-addr 127.0.0.1 --master-port {_free_port()} "
               f"--log-dir {logs} --redirects 3")
    proc = _run(cwd, "stages/pretrain.py", "--source", "A",
                env={"TRANSFERLAB_TORCHRUN": options, "GLOO_SOCKET_IFNAME": "lo",
                     "OMP_NUM_THREADS": "1"})
    assert "torch.distributed.run --nproc-per-node 2" in proc.stderr

    outs = {int(p.parent.name): p.read_text() for p in logs.glob("*/attempt_0/*/stdout.log")}
    assert sorted(outs) == [0, 1], outs
    assert "pretrain A:" in outs[0] and "2 processes, rank 0 wrote the outputs" in outs[0]
    assert "pretrain A:" not in outs[1]

    metrics = json.loads((cwd / "results/pretrain/A.json").read_text())
    assert metrics["epochs"] == EPOCHS
    assert metrics["test_score"] > 0.4, metrics  # 5 classes: chance is 0.2
    curve = (cwd / "dvclive/pretrain-A/plots/metrics/train_loss.tsv").read_text().splitlines()
    assert len(curve) == 1 + EPOCHS, "one writer logs each epoch once"
    losses = [float(line.split("\t")[-1]) for line in curve[1:]]
    assert losses[-1] < 0.9 * losses[0], losses
    assert not list((cwd / "store" / "checkpoints").glob("*.pt")), "rank 0 removed it"
    assert not [p for p in cwd.rglob(".*.tmp*")], "no temporaries left behind"

    # The model loads in the transfer stage like a single-process one.
    _run(cwd, "stages/pretrain.py", "--source", "B")
    _run(cwd, "stages/transfer.py")
    result = json.loads((cwd / "results/transfer.json").read_text())
    assert 0 <= result["test_score"] <= 1


def test_a_batch_size_the_processes_cannot_share_is_refused_before_any_work(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ParamsError, match="pretrain.batch_size = 63 .* multiple of 2"):
        distributed.setup(63, "pretrain.batch_size")


def test_more_processes_than_gpus_is_refused_before_any_work(monkeypatch):
    import torch

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(distributed.DistributedError, match="4 processes .* 2 GPU"):
        distributed.setup(64, "pretrain.batch_size")


def test_sharded_batches_split_every_global_batch_evenly():
    import torch

    from transferlab.training.distributed import World, sharded
    from transferlab.training.loop import Batches

    x = torch.arange(10).float().view(10, 1, 1, 1)
    y = torch.arange(10)
    whole = list(Batches(x, y, 4, 0).epoch(3))
    parts = [list(sharded(Batches(x, y, 4, 0), World(r, 2, r, 2)).epoch(3)) for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == len(whole) == 3
    for (_, yb, _), (_, y0, _), (_, y1, _) in zip(whole, *parts, strict=True):
        assert len(y0) == len(y1)
        together = torch.cat([y0, y1])
        assert set(together.tolist()) == set(yb.tolist())  # the last one padded by wrapping
        if len(yb) == 4:
            assert sorted(together.tolist()) == sorted(yb.tolist())

