"""Activations at named layers of the source model, run once per split, as arrays.

Layout written by `write_features` (read by `transferlab.heads.load_split`):

    <out>/meta.json                 layers, iterations, multilabel, row counts, dims, augment
    <out>/<layer>/train.npz         x (R, D) float32; y (R,) int64 or (R, L) uint8;
                                    index (R,) int64, the image's row in the target's whole
                                    training part; copy (R,) int16, 0 = the image itself,
                                    j >= 1 = its j-th augmented copy; difficult (R, L) bool
                                    (multi-label, when the task has it)
    <out>/<layer>/test.npz          x, y, index, copy (all 0), difficult (multi-label)
    <out>/iter<t>/{train,test}.npz  same, the head's input after iteration t = 1..T, written
                                    only for models with num_iterations > 1

The WHOLE target training part is extracted once (rows 0..N-1 are the images in
order, augmented copies follow); heads draw their `subsample` images per class
from `index` with the same `nested_subsample` the training stages use.
Test images are never augmented.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from transferlab.data.prepared import TaskData, center_cropped
from transferlab.experiment import load_model
from transferlab.io import atomic_dir, write_json_atomic
from transferlab.models.base import TransferableNet
from transferlab.stage import compute
from transferlab.train import pick_device, to_tensor

POOLS = ("flatten", "avg")
_AUGMENT_STREAM = 71  # keeps augmentation draws apart from other seeded streams

# uint8 images (B, C, H, W) -> {name: (B, ...) tensor}
BatchFeatures = Callable[[np.ndarray], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class AugmentConfig:
    """CNNaug-SVM: `copies` extra rows per training image, each a random crop (+ flip).

    A crop pads the image by `pad` (a fraction of its shorter side, at least one
    pixel) with zeros and cuts a window of the original size back out, so any
    image size works. `flip` mirrors left-right with probability 0.5; off by
    default because mirrored digits are other glyphs.
    """

    copies: int = 0
    flip: bool = False
    pad: float = 0.125

    def __post_init__(self):
        if self.copies < 0:
            raise ValueError(f"features.augment.copies = {self.copies}: must be >= 0")
        if not 0 < self.pad <= 1:
            raise ValueError(f"features.augment.pad = {self.pad}: must be > 0 and <= 1 "
                             "(a fraction of the shorter image side)")


@dataclass(frozen=True)
class FeatureConfig:
    layers: tuple[str, ...]
    batch_size: int = 256
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    iterations: bool = True  # per-iteration features when the model has several
    source_model: str = "A"  # "A": models/A.pt; "torchvision:<name>": a torchvision model
    weights: str | None = None  # the torchvision state-dict file
    input_size: int = 224  # torchvision models: images are resized to this square size
    pool: str = "flatten"  # "avg": mean over the spatial positions of a (B, C, H, W) output
    seed: int = 0
    crop: int = 0  # centre crop (data.crop): the size the network was trained on

    def __post_init__(self):
        if self.pool not in POOLS:
            raise ValueError(f"features.pool = {self.pool!r}: allowed: " + ", ".join(POOLS))
        if self.batch_size < 1:
            raise ValueError(f"features.batch_size = {self.batch_size}: must be >= 1")

    @classmethod
    def from_params(cls, params) -> FeatureConfig:
        """From a `Params` tree; keys the params do not have yet keep their defaults."""
        f = params.features
        aug = getattr(f, "augment", None)
        augment = AugmentConfig() if aug is None else AugmentConfig(
            copies=getattr(aug, "copies", 0), flip=getattr(aug, "flip", False),
            pad=getattr(aug, "pad", 0.125))
        return cls(layers=tuple(f.layers), batch_size=f.batch_size, augment=augment,
                   iterations=getattr(f, "iterations", True),
                   source_model=getattr(f, "source_model", "A"),
                   weights=getattr(f, "weights", None),
                   input_size=getattr(f, "input_size", 224), pool=getattr(f, "pool", "flatten"),
                   seed=params.seed, crop=params.data.crop)


# ---------------------------------------------------------------------------- augmentation


def pad_crop_flip(images: np.ndarray, pad: int, flip: bool, rng: np.random.Generator
                  ) -> np.ndarray:
    """Zero-pad each uint8 image by `pad` pixels, cut a random window of the original size."""
    n, _, height, width = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    tops = rng.integers(0, 2 * pad + 1, n)
    lefts = rng.integers(0, 2 * pad + 1, n)
    mirror = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
    out = np.empty_like(images)
    for i in range(n):
        window = padded[i, :, tops[i]:tops[i] + height, lefts[i]:lefts[i] + width]
        out[i] = window[:, :, ::-1] if mirror[i] else window
    return out


def augmented_training_images(images: np.ndarray, cfg: AugmentConfig, seed: int
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, index, copy): the originals in order, then `cfg.copies` copies of each."""
    n = len(images)
    index = [np.arange(n)]
    copy = [np.zeros(n, np.int16)]
    parts = [images]
    if cfg.copies:
        pad = max(1, round(cfg.pad * min(images.shape[2:])))
        rng = np.random.default_rng([seed, _AUGMENT_STREAM])
        for j in range(1, cfg.copies + 1):
            parts.append(pad_crop_flip(images, pad, cfg.flip, rng))
            index.append(np.arange(n))
            copy.append(np.full(n, j, np.int16))
    return np.concatenate(parts), np.concatenate(index), np.concatenate(copy)


# ---------------------------------------------------------------------------- extraction


@torch.no_grad()
def extract(model: TransferableNet, images: np.ndarray, pixel_max: int, layers: list[str],
            batch_size: int = 256, device: torch.device | None = None) -> dict[str, np.ndarray]:
    """{layer: (N, D) float32} for uint8 `images`, one forward pass per batch."""
    device = device or next(model.parameters()).device
    fn = own_model_features(model, pixel_max, layers, iterations=False, device=device)
    return run_batches(fn, images, batch_size)


def own_model_features(model: TransferableNet, pixel_max: int, layers: list[str], *,
                       iterations: bool = True, device: torch.device | None = None,
                       mean=(0.5,), std=(0.5,)) -> BatchFeatures:
    """Layer activations, plus iter1..iterT (`iteration_embeddings`) for multi-iteration nets."""
    device = device or next(model.parameters()).device
    model.eval()
    several = iterations and getattr(model, "num_iterations", 1) > 1

    def fn(batch: np.ndarray) -> dict[str, torch.Tensor]:
        x = to_tensor(batch, pixel_max, device, mean, std)
        out = dict(model.activations(x, layers)) if layers else {}
        if several:
            for t, emb in enumerate(model.iteration_embeddings(x), 1):
                out[f"iter{t}"] = emb
        return out

    return fn


@torch.no_grad()
def run_batches(fn: BatchFeatures, images: np.ndarray, batch_size: int, pool: str = "flatten"
                ) -> dict[str, np.ndarray]:
    """{name: (N, D) float32}: `fn` on each batch, outputs flattened (or averaged) per image."""
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), batch_size):
        for name, act in fn(images[start:start + batch_size]).items():
            if pool == "avg" and act.dim() > 2:
                act = act.flatten(2).mean(2)
            parts.setdefault(name, []).append(act.flatten(1).float().cpu().numpy())
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def write_features(task: TaskData, fn: BatchFeatures, cfg: FeatureConfig, out_dir: str | Path
                   ) -> dict:
    """Extract the whole training part (with augmented copies) and the test part; write them.

    Returns the meta written to <out_dir>/meta.json.
    """
    x_train, index, copy = augmented_training_images(task.x_train, cfg.augment, cfg.seed)
    with compute():
        feats = {"train": run_batches(fn, x_train, cfg.batch_size, cfg.pool),
                 "test": run_batches(fn, task.x_test, cfg.batch_size, cfg.pool)}
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
    missing = [n for n in cfg.layers if n not in names]
    if missing:
        raise KeyError(f"features: the model gave no output for {missing}; it gave {names}")
    iterations = sorted((n for n in names if n.startswith("iter") and n[4:].isdigit()),
                        key=lambda n: int(n[4:]))
    meta = {
        "layers": list(cfg.layers), "iterations": len(iterations), "multilabel": multilabel,
        "train_images": len(task.x_train), "train_rows": len(x_train),
        "test_images": len(task.x_test), "dims": {n: int(feats["train"][n].shape[1])
                                                  for n in names},
        "augment": asdict(cfg.augment), "source_model": cfg.source_model, "pool": cfg.pool,
    }
    with atomic_dir(out_dir) as tmp:
        for name in names:
            (tmp / name).mkdir(parents=True)
            for split in ("train", "test"):
                np.savez_compressed(tmp / name / f"{split}.npz", x=feats[split][name],
                                    **rows[split])
        write_json_atomic(tmp / "meta.json", meta)
    return meta


def extract_target_features(params, *, prepared, model_path, out_dir,
                            config: FeatureConfig | None = None) -> dict:
    """features/<layer>/{train,test}.npz for the whole target train part and the test part.

    The source is model A (`model_path`) or, with source_model "torchvision:<name>",
    a torchvision model whose weights come from the local file `weights`; then
    the layers are node names of that model's graph.
    """
    from transferlab.pretrained import TORCHVISION_PREFIX, TorchvisionFeatures

    cfg = config or FeatureConfig.from_params(params)
    # The network saw centre crops at test time (data.crop); so do the heads.
    target = center_cropped(TaskData.load(Path(prepared) / "target.npz"), cfg.crop)
    device = pick_device()
    layers = list(cfg.layers)
    if cfg.source_model.startswith(TORCHVISION_PREFIX):
        if not cfg.weights:
            raise ValueError(f"features.weights: source_model {cfg.source_model!r} needs the "
                             "path of a local weights file")
        fn = TorchvisionFeatures(cfg.source_model[len(TORCHVISION_PREFIX):], cfg.weights, layers,
                                 input_size=cfg.input_size, pixel_max=target.pixel_max,
                                 device=device)
    else:
        model = load_model(model_path, params, target.image_shape, target.num_classes, device)
        fn = own_model_features(model, target.pixel_max, layers, iterations=cfg.iterations,
                                device=device, mean=target.mean, std=target.std)
    meta = write_features(target, fn, cfg, out_dir)
    print(f"features: {meta['train_images']} train images ({meta['train_rows']} rows with "
          f"augmented copies) / {meta['test_images']} test images, "
          f"{meta['iterations']} iteration(s), dims {meta['dims']}")
    return meta
