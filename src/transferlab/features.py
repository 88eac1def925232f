"""Activations at named layers, run once per split, flattened to arrays."""

from __future__ import annotations

import numpy as np
import torch

from transferlab.data.prepared import TaskData
from transferlab.experiment import load_model
from transferlab.io import atomic_dir
from transferlab.models.base import TransferableNet
from transferlab.params import check_subsample
from transferlab.stage import compute
from transferlab.train import pick_device, to_tensor


@torch.no_grad()
def extract(model: TransferableNet, images: np.ndarray, pixel_max: int, layers: list[str],
            batch_size: int = 256, device: torch.device | None = None) -> dict[str, np.ndarray]:
    """{layer: (N, D) float32} for uint8 `images`, one forward pass per batch."""
    device = device or next(model.parameters()).device
    model.eval()
    parts: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    for start in range(0, len(images), batch_size):
        x = to_tensor(images[start:start + batch_size], pixel_max, device)
        for name, act in model.activations(x, layers).items():
            parts[name].append(act.flatten(1).float().cpu().numpy())
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def extract_target_features(params, *, prepared, model_path, out_dir) -> None:
    """features/<layer>/{train,test}.npz for the (subsampled) target train and test images."""
    target = TaskData.load(prepared / "target.npz")
    check_subsample("subsample", params.subsample, target.smallest_train_class())
    task = target.subsampled(params.subsample, params.seed)
    device = pick_device()
    model = load_model(model_path, params, task.image_shape, task.num_classes, device)
    layers = list(params.features.layers)
    with compute():
        splits = {
            "train": extract(model, task.x_train, task.pixel_max, layers,
                             params.features.batch_size, device),
            "test": extract(model, task.x_test, task.pixel_max, layers,
                            params.features.batch_size, device),
        }
    labels = {"train": task.y_train, "test": task.y_test}
    with atomic_dir(out_dir) as tmp:
        for layer in layers:
            (tmp / layer).mkdir()
            for split, acts in splits.items():
                np.savez_compressed(tmp / layer / f"{split}.npz", x=acts[layer],
                                    y=labels[split])
    dims = {layer: int(splits["train"][layer].shape[1]) for layer in layers}
    print(f"features: {len(task.y_train)} train / {len(task.y_test)} test images, dims {dims}")
