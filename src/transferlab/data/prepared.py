"""The arrays `prepare` writes and every later stage reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferlab.data.split import nested_subsample, split_classes, stratified_test_split
from transferlab.io import write_json_atomic, write_npz_atomic


@dataclass
class TaskData:
    """One classification task: images (uint8) and labels re-indexed 0..k-1."""

    classes: list[int]  # original dataset labels, in label-index order
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    pixel_max: int

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def smallest_train_class(self) -> int:
        return int(np.bincount(self.y_train, minlength=self.num_classes).min())

    def subsampled(self, per_class: int, seed: int) -> TaskData:
        idx = nested_subsample(self.y_train, per_class, seed)
        return TaskData(self.classes, self.x_train[idx], self.y_train[idx], self.x_test,
                        self.y_test, self.pixel_max)

    def save(self, path: Path) -> None:
        write_npz_atomic(path, classes=np.asarray(self.classes), x_train=self.x_train,
                         y_train=self.y_train, x_test=self.x_test, y_test=self.y_test,
                         pixel_max=np.asarray(self.pixel_max))

    @classmethod
    def load(cls, path: str | Path) -> TaskData:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; run `dvc repro prepare` first")
        with np.load(path) as z:
            return cls(z["classes"].tolist(), z["x_train"], z["y_train"], z["x_test"],
                       z["y_test"], int(z["pixel_max"]))


def _task(images, labels, train_idx, test_idx, classes, pixel_max) -> TaskData:
    index_of = {c: i for i, c in enumerate(classes)}

    def part(idx):
        keep = idx[np.isin(labels[idx], classes)]
        return images[keep], np.array([index_of[c] for c in labels[keep]], dtype=np.int64)

    x_train, y_train = part(train_idx)
    x_test, y_test = part(test_idx)
    return TaskData(list(classes), x_train, y_train, x_test, y_test, pixel_max)


def prepare_dataset(dataset: str, split: str, source_classes, target_classes,
                    test_fraction: float, seed: int) -> tuple[TaskData, TaskData, dict]:
    """Source task A, target task B and a description of the split."""
    if dataset != "digits":
        raise ValueError(f"params: dataset = {dataset!r} is not available; allowed: digits")
    from transferlab.data.digits import PIXEL_MAX, load_digits_arrays

    images, labels = load_digits_arrays()
    a_classes, b_classes = split_classes(sorted(np.unique(labels).tolist()), split, seed,
                                         tuple(source_classes), tuple(target_classes))
    train_idx, test_idx = stratified_test_split(labels, test_fraction, seed)
    source = _task(images, labels, train_idx, test_idx, a_classes, PIXEL_MAX)
    target = _task(images, labels, train_idx, test_idx, b_classes, PIXEL_MAX)
    meta = {
        "dataset": dataset,
        "image_shape": list(images.shape[1:]),
        "source_classes": a_classes,
        "target_classes": b_classes,
        "source_train_per_class": np.bincount(source.y_train).tolist(),
        "source_test_per_class": np.bincount(source.y_test).tolist(),
        "target_train_per_class": np.bincount(target.y_train).tolist(),
        "target_test_per_class": np.bincount(target.y_test).tolist(),
    }
    return source, target, meta


def write_prepared(out_dir: Path, source: TaskData, target: TaskData, meta: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    source.save(out_dir / "source.npz")
    target.save(out_dir / "target.npz")
    write_json_atomic(out_dir / "meta.json", meta)


def read_meta(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
