"""One transfer run: (treatment, n, target size, seed) -> target test accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from transferlab.data.prepared import TaskData
from transferlab.models import build_model
from transferlab.models.base import TransferableNet
from transferlab.params import Params
from transferlab.train import Batches, evaluate, fit, pick_device, seed_everything, to_tensor
from transferlab.transfer import apply_treatment


@dataclass(frozen=True)
class Variant:
    treatment: str
    n: int
    subsample: int
    seed: int

    @property
    def key(self) -> str:
        return f"{self.treatment}/n{self.n}/k{self.subsample}/s{self.seed}"


def save_model(model: TransferableNet, path: Path, meta: dict) -> None:
    """Save weights; the same weights give the same bytes, so DVC hashes stay stable."""
    import io

    from transferlab.io import atomic_path

    # torch.save names the archive after the file it writes to; a buffer gets a
    # fixed name, where the random temporary file name would change the bytes.
    buffer = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "meta": meta}, buffer)
    with atomic_path(path, suffix=".pt") as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_model(path: str | Path, params: Params, in_shape, num_classes: int,
               device: torch.device) -> TransferableNet:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run its pretrain stage first")
    state = torch.load(path, map_location=device, weights_only=True)
    model = build_model(params.arch, in_shape, num_classes, width=params.model.width,
                        hidden=params.model.hidden)
    # The head of a source model has the source's class count; only layers transfer.
    layer_state = {k: v for k, v in state["state_dict"].items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(layer_state, strict=False)
    if unexpected or any(not k.startswith("head.") for k in missing):
        raise ValueError(f"{path} does not match arch {params.arch!r}: "
                         f"missing {missing}, unexpected {unexpected}")
    return model.to(device)


def new_model(params: Params, task: TaskData, seed: int, device) -> TransferableNet:
    seed_everything(seed)
    model = build_model(params.arch, task.image_shape, task.num_classes,
                        width=params.model.width, hidden=params.model.hidden)
    return model.to(device)


def run_variant(params: Params, target: TaskData, sources: dict[str, TransferableNet],
                variant: Variant, *, device=None, live=None, progress: bool = False) -> dict:
    """Train one variant on the target task and test it on the target test part."""
    device = device or pick_device()
    task = target.subsampled(variant.subsample, variant.seed)
    model = new_model(params, task, variant.seed, device)
    cfg = params.transfer
    plan = apply_treatment(model, variant.treatment, variant.n, sources, cfg.lr, cfg.lr_mult)
    x_train = to_tensor(task.x_train, task.pixel_max, device)
    y_train = torch.from_numpy(task.y_train).to(device)
    x_test = to_tensor(task.x_test, task.pixel_max, device)
    y_test = torch.from_numpy(task.y_test).to(device)
    batches = Batches(x_train, y_train, cfg.batch_size, variant.seed)
    # A tiny target makes every step an epoch; log about 30 points of the curve.
    log_every = max(1, cfg.steps // batches.steps_per_epoch // 30)
    history = fit(model, batches, cfg, param_groups=plan.param_groups, frozen=plan.frozen,
                  steps=cfg.steps, test=(x_test, y_test) if live is not None else None,
                  live=live, progress=progress, desc=variant.key, log_every=log_every)
    result = evaluate(model, x_test, y_test)
    return {
        "treatment": variant.treatment, "n": variant.n, "subsample": variant.subsample,
        "seed": variant.seed, "copied_layers": plan.copied,
        "train_images": int(len(task.y_train)), "test_images": int(len(task.y_test)),
        "test_accuracy": result["accuracy"], "test_loss": result["loss"],
        "final_train_loss": history[-1]["train_loss"],
    }
