import math

import numpy as np
import pytest
import torch

from transferlab.models import build_model
from transferlab.train import Batches, TrainingDiverged, fit, to_tensor

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
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 1, step 1"):
        fit(net, Batches(x, y, 16, 0), CFG, epochs=2, progress=False)


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
