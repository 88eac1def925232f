"""The one training loop every training stage calls."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transferlab.params import TrainParams


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def to_tensor(images: np.ndarray, pixel_max: int, device: torch.device) -> torch.Tensor:
    """uint8 images -> float in [-1, 1] (mean 0.5, std 0.5 after scaling to [0, 1])."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device=device, dtype=torch.float32)
    return (x / pixel_max - 0.5) / 0.5


@dataclass
class Batches:
    """A whole small dataset on the device; shuffled per epoch from (seed, epoch)."""

    x: torch.Tensor
    y: torch.Tensor
    batch_size: int
    seed: int

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.y) / min(self.batch_size, len(self.y)))

    def epoch(self, index: int):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        order = torch.randperm(len(self.y), generator=gen).to(self.x.device)
        size = min(self.batch_size, len(self.y))
        for start in range(0, len(order), size):
            idx = order[start:start + size]
            yield self.x[idx], self.y[idx]


def progress_bar(iterable=None, disable: bool = False, **kwargs):
    """A tqdm bar on stderr; TRANSFERLAB_NO_PROGRESS=1 hides every bar."""
    from tqdm import tqdm

    hidden = disable or os.environ.get("TRANSFERLAB_NO_PROGRESS") == "1"
    return tqdm(iterable, file=sys.stderr, dynamic_ncols=True, disable=hidden, **kwargs)


def make_optimizer(param_groups: list[dict], cfg: TrainParams) -> torch.optim.Optimizer:
    groups = [g for g in param_groups if g["params"]]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, foreach=True)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
             ) -> dict[str, float]:
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        with _autocast(x.device):
            logits = model(xb).float()
        loss_sum += nn.functional.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    model.train(was_training)
    return {"accuracy": correct / len(y), "loss": loss_sum / len(y)}


def _autocast(device: torch.device):
    # Mixed precision only on GPU; CPU runs stay in float32 and deterministic.
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def _config_key(cfg: TrainParams, seed: int, model: nn.Module, n_train: int) -> str:
    blob = json.dumps([asdict(cfg), seed, n_train, sorted(model.state_dict())], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def fit(model: nn.Module, train: Batches, cfg: TrainParams, *,
        param_groups: list[dict] | None = None, frozen: Sequence[nn.Module] = (),
        epochs: int | None = None, steps: int | None = None,
        test: tuple[torch.Tensor, torch.Tensor] | None = None, live=None,
        checkpoint: Path | None = None, progress: bool = True, desc: str = "train",
        log_every: int = 1) -> list[dict]:
    """Train `model` with cross-entropy for `epochs` passes or `steps` updates.

    `frozen` modules stay in eval mode (no dropout, batch-norm statistics kept).
    `test` is only monitored and logged, never used for any decision. With
    `checkpoint`, state is saved after every epoch and a matching checkpoint is
    resumed from. `live` (a dvclive.Live) gets the metrics of every
    `log_every`-th epoch and of the last. Returns one metrics dict per epoch.
    """
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs or steps")
    per_epoch = train.steps_per_epoch
    total_steps = steps if steps is not None else epochs * per_epoch
    n_epochs = math.ceil(total_steps / per_epoch)
    optimizer = make_optimizer(param_groups or [{"params": list(model.parameters())}], cfg)

    history: list[dict] = []
    first_epoch = 0
    key = _config_key(cfg, train.seed, model, len(train.y))
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=train.x.device, weights_only=False)
        if state.get("key") == key:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"])
            history, first_epoch = state["history"], state["epoch"]

    bar = None
    if progress:
        bar = progress_bar(total=total_steps, initial=min(first_epoch * per_epoch, total_steps),
                           desc=desc, unit="step", leave=False)
    step = first_epoch * per_epoch
    for epoch in range(first_epoch, n_epochs):
        model.train()
        for module in frozen:
            module.eval()
        loss_sum, correct, seen = 0.0, 0, 0
        for xb, yb in train.epoch(epoch):
            if step >= total_steps:
                break
            with _autocast(xb.device):
                logits = model(xb)
                loss = nn.functional.cross_entropy(logits.float(), yb)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"{desc}: loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} "
                    f"(lr = {cfg.lr}, optimizer = {cfg.optimizer}); try a lower lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(yb)
            correct += (logits.argmax(1) == yb).sum().item()
            seen += len(yb)
            step += 1
            if bar is not None:
                bar.update(1)
        record = {"epoch": epoch + 1, "step": step, "train_loss": loss_sum / max(seen, 1),
                  "train_accuracy": correct / max(seen, 1)}
        log_now = live is not None and ((epoch + 1) % log_every == 0 or epoch + 1 == n_epochs)
        if test is not None and log_now:
            record.update({f"test_{k}": v for k, v in evaluate(model, *test).items()})
        history.append(record)
        if log_now:
            for name, value in record.items():
                if name not in ("epoch", "step"):
                    live.log_metric(name, value)
            live.next_step()
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            tmp = checkpoint.with_suffix(".tmp")
            torch.save({"key": key, "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
                        "history": history, "epoch": epoch + 1}, tmp)
            os.replace(tmp, checkpoint)
    if bar is not None:
        bar.close()
    return history
