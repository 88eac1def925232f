"""Activations at named layers of the source model, run once per split, as arrays.

The source is model A or a torchvision model (`transferlab.features.pretrained`).
The WHOLE target training part is extracted once, followed by `augment.copies`
augmented copies of each image (CNNaug: random crops, optionally mirrored and rotated);
test images are never augmented. `transferlab.features.store` holds the file
layout these arrays are written in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from transferlab.config.params import AugmentParams, FeatureParams, Params
from transferlab.data.prepared import TaskData, center_cropped
from transferlab.features.budget import check_budget, features_peak, pooled_hw, stored_shape
from transferlab.features.store import iteration_count, iteration_name, write_store
from transferlab.models.base import TransferableNet
from transferlab.timing import compute
from transferlab.training.augment import random_crop_flip, random_rotate
from transferlab.training.loop import pick_device, to_tensor
from transferlab.training.variant import load_model

_AUGMENT_STREAM = 71  # keeps augmentation draws apart from other seeded streams

# uint8 images (B, C, H, W) -> {name: (B, ...) tensor}
BatchFeatures = Callable[[np.ndarray], dict[str, torch.Tensor]]


# ---------------------------------------------------------------------------- augmentation


def augmented_training_images(images: np.ndarray, augment: AugmentParams, seed: int
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, index, copy): the originals in order, then `augment.copies` copies of each.

    A copy zero-pads the image by `augment.pad` of its shorter side (at least one
    pixel) and cuts a random window of the original size back out, so any image
    size works; with `augment.flip` it is mirrored left-right with probability 0.5,
    and with `augment.rotate` rotated by up to that many degrees either way.
    """
    n = len(images)
    index = [np.arange(n)]
    copy = [np.zeros(n, np.int16)]
    parts = [images]
    if augment.copies:
        pad = max(1, round(augment.pad * min(images.shape[2:])))
        state = np.random.SeedSequence([seed, _AUGMENT_STREAM]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        originals = torch.from_numpy(np.ascontiguousarray(images))
        for j in range(1, augment.copies + 1):
            copies = random_crop_flip(originals, tuple(images.shape[2:]), generator,
                                      flip=augment.flip, pad=pad)
            if augment.rotate:  # drawn after the crops, so rotate 0 keeps them as they were
                copies = random_rotate(copies, augment.rotate, generator)
            parts.append(copies.numpy())
            index.append(np.arange(n))
            copy.append(np.full(n, j, np.int16))
    return np.concatenate(parts), np.concatenate(index), np.concatenate(copy)


# ---------------------------------------------------------------------------- extraction


def own_model_features(model: TransferableNet, pixel_max: int, layers: list[str], *,
                       iterations: bool, device: torch.device | None = None,
                       mean=(0.5,), std=(0.5,)) -> BatchFeatures:
    """Layer activations, plus iter1..iterT (`iteration_embeddings`) for multi-iteration nets
    when `iterations`. `mean` and `std` normalise as `train.to_tensor` does."""
    device = device or next(model.parameters()).device
    model.eval()
    several = iterations and getattr(model, "num_iterations", 1) > 1

    def fn(batch: np.ndarray) -> dict[str, torch.Tensor]:
        x = to_tensor(batch, pixel_max, device, mean, std)
        out = dict(model.activations(x, layers)) if layers else {}
        if several:
            for t, emb in enumerate(model.iteration_embeddings(x), 1):
                out[iteration_name(t)] = emb
        return out

    return fn


def reduce_activation(act: torch.Tensor, pool: str, max_dim: int | None) -> torch.Tensor:
    """(B, D) rows of a batch of activations as the store holds them: averaged per channel
    (pool "avg"), or flattened after a conv map above `max_dim` dims is average-pooled to
    C x s x s (`budget.pooled_hw`)."""
    if pool == "avg" and act.dim() > 2:
        return act.flatten(2).mean(2)
    if max_dim is not None and act.dim() == 4:
        hw = pooled_hw(tuple(act.shape[1:]), max_dim)
        if hw is not None:
            act = torch.nn.functional.adaptive_avg_pool2d(act, hw)
    return act.flatten(1)


@torch.no_grad()
def run_batches(fn: BatchFeatures, images: np.ndarray, batch_size: int, pool: str,
                max_dim: int | None = None) -> dict[str, np.ndarray]:
    """{name: (N, D) float32}: `fn` on each batch, outputs flattened (pool "flatten") or
    averaged over the spatial positions (pool "avg") per image. With `max_dim`, a flattened
    conv map of more dims is first average-pooled to C x s x s (`budget.pooled_hw`).

    Each output is one preallocated float32 array, filled batch by batch (no list of
    chunks and concatenated copy)."""
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(images), batch_size):
        for name, act in fn(images[start:start + batch_size]).items():
            rows = reduce_activation(act, pool, max_dim).float().cpu().numpy()
            if name not in out:
                out[name] = np.empty((len(images), rows.shape[1]), np.float32)
            out[name][start:start + len(rows)] = rows
    return out


@torch.no_grad()
def layer_shapes(fn: BatchFeatures, image_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """{name: the shape of one image's output}, from `fn` on one black image."""
    return {name: tuple(act.shape[1:])
            for name, act in fn(np.zeros((1, *image_shape), np.uint8)).items()}


def write_features(task: TaskData, fn: BatchFeatures, features: FeatureParams, seed: int,
                   out_dir: str | Path) -> dict:
    """Extract the whole training part (with augmented copies) and the test part; store them.

    Returns the meta written to <out_dir>/meta.json.
    """
    batch_size, pool, max_dim = features.batch_size, features.pool, features.max_dim
    # Shapes first, so a store too large for the memory budget is refused before any work.
    maps = layer_shapes(fn, tuple(task.x_train.shape[1:]))
    stored = {n: stored_shape(s, max_dim, pool) for n, s in maps.items()}
    rows_total = len(task.x_train) * (1 + features.augment.copies) + len(task.x_test)
    check_budget("features", {"all layers": features_peak(
        {n: math.prod(s) for n, s in stored.items()},
        {n: math.prod(s) for n, s in maps.items()}, rows_total, batch_size)},
        features.memory_gb)
    x_train, index, copy = augmented_training_images(task.x_train, features.augment, seed)
    with compute():
        feats = {"train": run_batches(fn, x_train, batch_size, pool, max_dim),
                 "test": run_batches(fn, task.x_test, batch_size, pool, max_dim)}
    multilabel = task.y_train.ndim == 2
    rows = {
        "train": {"y": task.y_train[index], "index": index, "copy": copy},
        "test": {"y": task.y_test, "index": np.arange(len(task.y_test)),
                 "copy": np.zeros(len(task.y_test), np.int16)},
    }
    for split, key in (("train", "difficult_train"), ("test", "difficult_test")):
        difficult = getattr(task, key, None)
        if multilabel and difficult is not None:
            difficult = np.asarray(difficult, bool)
            rows[split]["difficult"] = difficult[rows[split]["index"]]
    names = list(feats["train"])
    missing = [n for n in features.layers if n not in names]
    if missing:
        raise KeyError(f"features: the model gave no output for {missing}; it gave {names}")
    augment = features.augment
    meta = {
        "layers": list(features.layers), "iterations": iteration_count(names),
        "multilabel": multilabel,
        "train_images": len(task.x_train), "train_rows": len(x_train),
        "test_images": len(task.x_test), "dims": {n: int(feats["train"][n].shape[1])
                                                  for n in names},
        "augment": {f.name: getattr(augment, f.name) for f in dataclasses.fields(augment)},
        "source_model": features.source_model, "pool": pool, "max_dim": max_dim,
        # each output's shape per image, and what was stored (pooled when above max_dim)
        "maps": {n: list(maps[n]) for n in names},
        "stored": {n: list(stored[n]) for n in names},
    }
    write_store(out_dir, feats, rows, meta)
    return meta


def extract_target_features(params: Params, *, prepared, model_path, out_dir) -> dict:
    """The features store for the whole target train part and the test part.

    The source (`features.source_model`) is model A (`model_path`, built as
    `params` says) or "torchvision:<name>", a torchvision model whose weights
    come from the local file `features.weights`; then the layers are node names
    of that model's graph.
    """
    from transferlab.features.pretrained import TORCHVISION_PREFIX, TorchvisionFeatures

    f = params.features
    # The network saw centre crops at test time (data.crop); so do the heads.
    target = center_cropped(TaskData.load(Path(prepared) / "target.npz"), params.data.crop)
    device = pick_device()
    layers = list(f.layers)
    if f.source_model.startswith(TORCHVISION_PREFIX):
        fn = TorchvisionFeatures(f.source_model[len(TORCHVISION_PREFIX):], f.weights, layers,
                                 input_size=f.input_size, pixel_max=target.pixel_max,
                                 device=device)
    else:
        model = load_model(model_path, params, target.image_shape, target.num_classes, device)
        fn = own_model_features(model, target.pixel_max, layers, iterations=f.iterations,
                                device=device, mean=target.mean, std=target.std)
    meta = write_features(target, fn, f, params.seed, out_dir)
    print(f"features: {meta['train_images']} train images ({meta['train_rows']} rows with "
          f"augmented copies) / {meta['test_images']} test images, "
          f"{meta['iterations']} iteration(s), dims {meta['dims']}")
    pooled = {n: "x".join(map(str, meta["maps"][n])) + " -> " + "x".join(map(str, s))
              for n, s in meta["stored"].items() if s != meta["maps"][n]}
    if pooled:
        print(f"features: pooled to at most features.max_dim = {meta['max_dim']} dims: {pooled}")
    return meta
