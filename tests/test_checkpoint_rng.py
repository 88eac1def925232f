"""The pretraining checkpoint carries the CUDA random states, so that a resumed GPU run
draws the same dropout masks as an uninterrupted one."""

import pytest
import torch
from torch import nn

from transferlab.models.base import TransferableNet
from transferlab.training import loop as train
from transferlab.training.loop import Batches, fit

from .conftest import recipe

CFG = recipe(batch_size=8, lr=1e-2)


def dropout_net(seed: int, device: str = "cpu") -> TransferableNet:
    torch.manual_seed(seed)  # seeds the CUDA generators too
    layer = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.5))
    return TransferableNet([("fc1", layer)], 32, 3).to(device)


def data(device: str = "cpu"):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 1, 8, 8, generator=g), torch.randint(0, 3, (24,), generator=g)
    return x.to(device), y.to(device)


class Stop(Exception):
    pass


class StopAfter:
    """A dvclive stand-in that kills the run after `epochs` logged epochs."""

    def __init__(self, epochs: int):
        self.left = epochs

    def log_metric(self, *_):
        pass

    def next_step(self):
        self.left -= 1
        if self.left == 0:
            raise Stop


def test_checkpoint_saves_and_restores_every_gpu_random_state(tmp_path, monkeypatch):
    """No GPU needed: torch.cuda's state functions are stood in for (only for the
    checkpoint's code: the optimiser still sees no CUDA)."""
    saved = [torch.tensor([1, 2, 3], dtype=torch.uint8), torch.tensor([4, 5], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(train, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in saved])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.append(states))
    x, y = data()
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(Stop):
        fit(dropout_net(0), Batches(x, y, 8, 0), CFG, epochs=3, live=StopAfter(2),
            checkpoint=ckpt, checkpoint_key="k", progress=False)
    state = torch.load(ckpt, weights_only=True)
    assert [s.tolist() for s in state["cuda_rng"]] == [[1, 2, 3], [4, 5]]
    saved[0][0] = 9  # the live state moved on; the resumed run must get the saved one
    fit(dropout_net(1), Batches(x, y, 8, 0), CFG, epochs=3, checkpoint=ckpt,
        checkpoint_key="k", progress=False)
    assert len(restored) == 1
    assert [s.tolist() for s in restored[0]] == [[1, 2, 3], [4, 5]]
    assert all(s.device.type == "cpu" for s in restored[0])  # torch wants them on the CPU


def test_a_checkpoint_without_gpus_restores_no_gpu_state(tmp_path, monkeypatch):
    x, y = data()
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(Stop):
        fit(dropout_net(0), Batches(x, y, 8, 0), CFG, epochs=3, live=StopAfter(2),
            checkpoint=ckpt, checkpoint_key="k", progress=False)
    if not torch.cuda.is_available():
        assert torch.load(ckpt, weights_only=True)["cuda_rng"] == []
    calls = []
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: calls.append(states))
    monkeypatch.setattr(train, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [])
    fit(dropout_net(1), Batches(x, y, 8, 0), CFG, epochs=3, checkpoint=ckpt,
        checkpoint_key="k", progress=False)
    assert calls == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_resumed_cuda_run_with_dropout_matches_an_uninterrupted_one(tmp_path):
    x, y = data("cuda")
    full = dropout_net(0, "cuda")
    fit(full, Batches(x, y, 8, 0), CFG, epochs=4, progress=False)
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(Stop):
        fit(dropout_net(0, "cuda"), Batches(x, y, 8, 0), CFG, epochs=4, live=StopAfter(2),
            checkpoint=ckpt, checkpoint_key="k", progress=False)
    # A fresh model under another seed: every generator is elsewhere until the resume.
    resumed = dropout_net(99, "cuda")
    history = fit(resumed, Batches(x, y, 8, 0), CFG, epochs=4, checkpoint=ckpt,
                  checkpoint_key="k", progress=False)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
