import math

import numpy as np
import pytest
import torch

from transferlab.models import build_model
from transferlab.timing import compile_seconds
from transferlab.training.loop import Batches, TrainingDiverged, fit, to_tensor

from .conftest import recipe


def data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def model(seed=0):
    torch.manual_seed(seed)
    return build_model("convnet", (1, 8, 8), 3, width=4, hidden=8)


CFG = recipe(batch_size=16, lr=1e-2)


def test_loss_goes_down_on_a_learnable_task():
    x, y = data()
    net = model()
    history = fit(net, Batches(x, y, 16, 0), recipe(batch_size=16, lr=1e-2),
                  epochs=30, progress=False)
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]


def test_steps_count_optimiser_updates_across_epochs():
    x, y = data(n=10)
    history = fit(model(), Batches(x, y, 4, 0), CFG, steps=7, progress=False)
    # 10 images in batches of 4: 3 steps per epoch, so 7 steps end inside epoch 3.
    assert [h["step"] for h in history] == [3, 6, 7]


def test_nan_loss_stops_training_with_a_clear_error():
    x, y = data()
    net = model()
    with torch.no_grad():
        net.head.weight.fill_(math.nan)
    with pytest.raises(TrainingDiverged, match=r"loss became nan in epoch 1, steps 1-3"):
        fit(net, Batches(x, y, 16, 0), CFG, epochs=2, progress=False)


class _PoisonAfter:
    """A transform that turns the batches into NaN from the given step on."""

    def __init__(self, step):
        self.step, self.calls = step, 0

    def __call__(self, x, generator):
        self.calls += 1
        return x * math.nan if self.calls >= self.step else x


def test_a_loss_diverging_mid_run_stops_it_naming_the_epoch_and_its_steps(tmp_path):
    x, y = data()  # 40 images in batches of 16: steps 1-3 are epoch 1, 4-6 epoch 2, ...
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(TrainingDiverged, match=r"loss became nan in epoch 3, steps 7-9"):
        fit(model(), Batches(x, y, 16, 0), CFG, epochs=6, progress=False,
            transform=_PoisonAfter(8), checkpoint=ckpt, checkpoint_key="k")
    # The newest checkpoint is the last sound epoch's, never the diverged one's.
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2


def test_a_diverged_run_without_logging_stops_at_its_end():
    x, y = data()
    with pytest.raises(TrainingDiverged, match=r"in epoch 2, steps 4-6"):
        fit(model(), Batches(x, y, 16, 0), CFG, epochs=5, progress=False,
            transform=_PoisonAfter(5))


def test_steps_never_read_the_device(monkeypatch):
    """The host reads loss and accuracy once per run when nothing is logged: the
    number of reads does not grow with the number of steps."""
    x, y = data()
    sgd = recipe(batch_size=16, lr=1e-2, optimizer="sgd")  # Adam reads its step count
    reads = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    counts = []
    for epochs in (2, 20):
        reads.clear()
        fit(model(), Batches(x, y, 16, 0), sgd, epochs=epochs, progress=False)
        counts.append(len(reads))
    assert counts[0] == counts[1] <= 2, counts


def test_cpu_runs_are_float32_and_identical_for_the_same_inputs():
    x, y = data()
    runs = []
    for _ in range(2):
        net = model()
        history = fit(net, Batches(x, y, 16, 0), CFG, epochs=3, progress=False)
        runs.append((history, net.state_dict()))
    (h1, s1), (h2, s2) = runs
    assert h1 == h2
    assert all(v.dtype == torch.float32 and torch.equal(v, s2[k]) for k, v in s1.items())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("compile_model", [False, True])
def test_cuda_run_is_channels_last_bfloat16_and_learns(compile_model):
    x, y = data()
    net = model().cuda()
    before = compile_seconds()
    history = fit(net, Batches(x.cuda(), y.cuda(), 16, 0), recipe(batch_size=16, lr=1e-2,
                  compile=compile_model), epochs=30, progress=False)
    assert net.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert (compile_seconds() > before) == compile_model


def test_compiled_cpu_run_follows_the_eager_run_and_times_its_compile(capsys):
    """transfer/pretrain.compile: the real torch.compile (inductor) on the CPU. Its fused
    kernels round differently, so the losses agree closely, not bit for bit."""
    x, y = data(32)
    before = compile_seconds()
    compiled = fit(model(), Batches(x, y, 16, 0), recipe(batch_size=16, lr=1e-2, compile=True),
                   steps=6, progress=False, desc="convnet")
    eager = fit(model(), Batches(x, y, 16, 0), recipe(batch_size=16, lr=1e-2), steps=6,
                progress=False)
    assert compile_seconds() > before
    assert "convnet: first step (torch.compile) took" in capsys.readouterr().err
    for c, e in zip(compiled, eager, strict=True):
        assert c["train_loss"] == pytest.approx(e["train_loss"], rel=1e-4)
        assert c["train_accuracy"] == e["train_accuracy"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_nan_loss_still_stops_the_run():
    x, y = data()
    net = model().cuda()
    with torch.no_grad():
        net.head.weight.fill_(math.nan)
    with pytest.raises(TrainingDiverged, match=r"in epoch 1, steps 1-3"):
        fit(net, Batches(x.cuda(), y.cuda(), 16, 0), CFG, epochs=2, progress=False)


def test_resume_from_checkpoint_matches_an_uninterrupted_run(tmp_path):
    x, y = data()
    full = model()
    fit(full, Batches(x, y, 16, 0), CFG, epochs=4, progress=False)

    ckpt = tmp_path / "ckpt.pt"
    interrupted = model()

    class Stop(Exception):
        pass

    class StopAfterTwo:
        epochs = 0

        def log_metric(self, *_):
            pass

        def next_step(self):
            self.epochs += 1
            if self.epochs == 2:
                raise Stop

    with pytest.raises(Stop):
        fit(interrupted, Batches(x, y, 16, 0), CFG, epochs=4, live=StopAfterTwo(),
            checkpoint=ckpt, checkpoint_key="k", progress=False)
    # The checkpoint is written after the live step; the run died after epoch 2's log,
    # so the newest checkpoint is epoch 1's. Resume in a fresh model.
    resumed = model(seed=99)
    history = fit(resumed, Batches(x, y, 16, 0), CFG, epochs=4, checkpoint=ckpt,
                  checkpoint_key="k", progress=False)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_inputs_are_scaled_to_minus_one_one():
    x = to_tensor(np.array([[[[0, 8, 16]]]], dtype=np.uint8), 16, torch.device("cpu"))
    assert x.flatten().tolist() == [-1.0, 0.0, 1.0]
