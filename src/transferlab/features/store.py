"""The features file format: written by the features stage, read by the heads.

    <dir>/meta.json                 layers, iterations, multilabel, row counts, dims,
                                    augment, source_model, pool
    <dir>/<layer>/train.npz         x (R, D) float32; y (R,) int64 or (R, L) uint8;
                                    index (R,) int64, the image's row in the target's whole
                                    training part; copy (R,) int16, 0 = the image itself,
                                    j >= 1 = its j-th augmented copy; difficult (R, L) bool
                                    (multi-label, when the task has it)
    <dir>/<layer>/test.npz          x, y, index, copy (all 0), difficult (multi-label)
    <dir>/iter<t>/{train,test}.npz  same, the head's input after iteration t = 1..T, written
                                    only for models with more than one iteration

The WHOLE target training part is stored (rows 0..N-1 are the images in order,
augmented copies follow); heads draw their `subsample` images per class from
`index` with the same `nested_subsample` the training stages use.
Numpy only: reading features needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferlab.io import atomic_dir, write_json_atomic

SPLITS = ("train", "test")
ITERATION = "iter"  # iter1..iterT: the per-iteration head inputs of feedback networks
COLUMNS = ("x", "y", "index", "copy")  # every npz has these; `difficult` when multi-label


def iteration_name(t: int) -> str:
    """The store name of iteration t = 1..T."""
    return f"{ITERATION}{t}"


def iteration_count(names) -> int:
    """How many of `names` are iteration entries (iter1, iter2, ...)."""
    return sum(1 for n in names if n.startswith(ITERATION) and n[len(ITERATION):].isdigit())


def split_path(features_dir: str | Path, name: str, split: str) -> Path:
    return Path(features_dir) / name / f"{split}.npz"


@dataclass
class FeatureSplit:
    """One features npz: rows, labels, and for training rows the image each came from."""

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray  # row of the image in the target's part (training: with copies)
    copy: np.ndarray  # 0 = the image itself, j >= 1 = its j-th augmented copy
    difficult: np.ndarray | None = None

    @property
    def multilabel(self) -> bool:
        return self.y.ndim == 2

    @property
    def augmented(self) -> bool:
        return bool(self.copy.size and self.copy.max() > 0)

    def image_labels(self) -> np.ndarray:
        """Labels of the original images, in image order (what nested_subsample draws from)."""
        orig = self.copy == 0
        labels = np.empty((int(self.index.max()) + 1, *self.y.shape[1:]), self.y.dtype)
        labels[self.index[orig]] = self.y[orig]
        return labels

    def rows_of_images(self, images: np.ndarray) -> np.ndarray:
        """Row indices of the given images and of their augmented copies."""
        return np.flatnonzero(np.isin(self.index, images))

    def take(self, rows: np.ndarray) -> FeatureSplit:
        d = None if self.difficult is None else self.difficult[rows]
        return FeatureSplit(self.x[rows], self.y[rows], self.index[rows], self.copy[rows], d)


def load_split(path: str | Path) -> FeatureSplit:
    """One <name>/<split>.npz of the store."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `dvc repro features` first")
    with np.load(path) as z:
        missing = [c for c in COLUMNS if c not in z]
        if missing:
            raise ValueError(f"{path}: not a features file of this version (no {missing}); "
                             "run `dvc repro features` again")
        x, y, index, copy = (z[c] for c in COLUMNS)
        difficult = z["difficult"] if "difficult" in z else None
    return FeatureSplit(x, y, index, copy, difficult)


def split_shape(features_dir: str | Path, name: str, split: str) -> tuple[int, int]:
    """(rows, dims) of x in <name>/<split>.npz, read from its header without loading it."""
    import zipfile

    path = split_path(features_dir, name, split)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `dvc repro features` first")
    with zipfile.ZipFile(path) as z, z.open("x.npy") as f:
        version = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, _, _ = read(f)
    return int(shape[0]), int(np.prod(shape[1:], dtype=np.int64))


def load_splits(features_dir: str | Path, name: str) -> tuple[FeatureSplit, FeatureSplit]:
    """(train, test) of layer or iteration `name`."""
    return tuple(load_split(split_path(features_dir, name, s)) for s in SPLITS)


def iteration_names(features_dir: str | Path) -> list[str]:
    """iter1..iterT present in a store (empty for single-iteration models)."""
    names: list[str] = []
    while split_path(features_dir, iteration_name(len(names) + 1), "train").exists():
        names.append(iteration_name(len(names) + 1))
    return names if len(names) > 1 else []


def write_store(out_dir: str | Path, features: dict[str, dict[str, np.ndarray]],
                rows: dict[str, dict[str, np.ndarray]], meta: dict) -> None:
    """Write a whole store at once (atomically: all of it or none).

    `features` maps split -> {name: x (R, D)}; `rows` maps split -> the per-row
    columns y, index, copy (and difficult); `meta` goes to meta.json.
    """
    names = list(features["train"])
    with atomic_dir(out_dir) as tmp:
        for name in names:
            (tmp / name).mkdir(parents=True)
            for split in SPLITS:
                # Uncompressed: zlib shrank float features only to ~2/3 and took most of
                # the stage (np.load reads compressed stores of earlier runs as well).
                np.savez(split_path(tmp, name, split), x=features[split][name],
                         **rows[split])
        write_json_atomic(tmp / "meta.json", meta)


__all__ = ["FeatureSplit", "iteration_count", "iteration_name", "iteration_names",
           "load_split", "load_splits", "split_path", "split_shape", "write_store"]
