"""The arrays `prepare` writes and every later stage reads.

`prepare` decodes each dataset once into uint8 arrays: a source task (classes
A) and a target task (classes B), each with a train and a test part. Later
stages never decode images again. Multi-label tasks (Pascal VOC) carry a
(N, L) 0/1 label matrix and a "difficult" mask instead of class indices.
"""

from __future__ import annotations

import dataclasses
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from transferlab.data.readers import convert_images
from transferlab.data.split import (
    nested_subsample,
    nested_subsample_multilabel,
    split_classes,
    stratified_test_split,
)
from transferlab.io import write_json_atomic, write_npz_atomic

_REQUIRED_ARRAYS = ("classes", "x_train", "y_train", "x_test", "y_test", "pixel_max")


@dataclass
class TaskData:
    """One task: images (uint8, N x C x H x W) and labels re-indexed 0..k-1.

    Single-label: `y_*` int64 (N,). Multi-label: `y_*` uint8 (N, k) and
    `difficult_*` bool (N, k), labels the VOC protocol leaves out of scoring.
    `mean`/`std` (per channel, on the [0, 1] scale) normalise the inputs.
    """

    classes: list
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    pixel_max: int
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    difficult_train: np.ndarray | None = None
    difficult_test: np.ndarray | None = None
    class_names: list[str] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def multilabel(self) -> bool:
        return self.y_train.ndim == 2

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def train_counts(self) -> np.ndarray:
        return _counts(self.y_train, self.num_classes)

    def smallest_train_class(self) -> int:
        return int(self.train_counts().min())

    def subsampled(self, per_class: int, seed: int) -> TaskData:
        pick = nested_subsample_multilabel if self.multilabel else nested_subsample
        idx = pick(self.y_train, per_class, seed)
        diff = None if self.difficult_train is None else self.difficult_train[idx]
        return TaskData(self.classes, self.x_train[idx], self.y_train[idx], self.x_test,
                        self.y_test, self.pixel_max, self.mean, self.std, diff,
                        self.difficult_test, self.class_names)

    def save(self, path: Path) -> None:
        arrays = dict(classes=np.asarray(self.classes), x_train=self.x_train,
                      y_train=self.y_train, x_test=self.x_test, y_test=self.y_test,
                      pixel_max=np.asarray(self.pixel_max), mean=np.asarray(self.mean),
                      std=np.asarray(self.std),
                      class_names=np.asarray(self.class_names or [str(c) for c in self.classes]))
        if self.multilabel:
            arrays["difficult_train"] = self.difficult_train
            arrays["difficult_test"] = self.difficult_test
        write_npz_atomic(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> TaskData:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; run `dvc repro prepare` first")
        try:
            with np.load(path) as z:
                has = set(z.files)
                missing = [k for k in _REQUIRED_ARRAYS if k not in has]
                if missing:
                    raise KeyError(f"no array {', '.join(missing)}")
                return cls(z["classes"].tolist(), z["x_train"], z["y_train"], z["x_test"],
                           z["y_test"], int(z["pixel_max"]),
                           tuple(z["mean"].tolist()) if "mean" in has else (0.5,),
                           tuple(z["std"].tolist()) if "std" in has else (0.5,),
                           z["difficult_train"] if "difficult_train" in has else None,
                           z["difficult_test"] if "difficult_test" in has else None,
                           z["class_names"].tolist() if "class_names" in has else None)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            why = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise ValueError(f"{path}: cannot read the prepared arrays ({why}); the file is "
                             "damaged: delete it and run `dvc repro prepare`") from e


def center_cropped(task: TaskData, crop: int) -> TaskData:
    """`task` with every image cut to its central crop x crop window (0 = unchanged)."""
    if not crop:
        return task
    h, w = task.image_shape[1:]
    top, left = (h - crop) // 2, (w - crop) // 2
    window = (slice(None), slice(None), slice(top, top + crop), slice(left, left + crop))
    return dataclasses.replace(task, x_train=task.x_train[window], x_test=task.x_test[window])


@dataclass
class RawImages:
    """A decoded dataset: the whole of it, before any class split."""

    images: np.ndarray  # uint8 N x C x H x W
    labels: np.ndarray  # int64 (N,) or 0/1 uint8 (N, L)
    class_names: list[str]
    is_test: np.ndarray | None = None  # the dataset's own test part, if it has one
    difficult: np.ndarray | None = None  # bool (N, L), multi-label only

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2


def load_raw(dataset: str, data, progress: bool = True, path: str | None = None) -> RawImages:
    """Decode `dataset` from `data.root` (downloading it if it is not there yet)."""
    if dataset == "digits":
        from transferlab.data.digits import load_digits_arrays

        images, labels = load_digits_arrays()
        return RawImages(images, labels, [str(i) for i in range(10)])
    from transferlab.data.catalog import load_dataset

    raw = load_dataset(dataset, root=data.root, mirror=data.mirror, manifest=data.manifest,
                       image_size=data.image_size,
                       path=path, progress=progress,
                       voc_lists=data.voc_lists if dataset.startswith("voc") else "main")
    return RawImages(raw.images, raw.labels, list(raw.class_names), raw.is_test,
                     getattr(raw, "difficult", None))


def read_classes_file(path: str | Path, names_a: list[str], names_b: list[str]
                      ) -> tuple[list[int], list[int]]:
    """`source:` / `target:` lists of class names or indices from a YAML file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"params: data.classes_file = {str(path)!r} does not exist")
    spec = yaml.safe_load(path.read_text()) or {}
    out = []
    for key, names in (("source", names_a), ("target", names_b)):
        values = spec.get(key)
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: `{key}:` must be a non-empty list of class names or "
                             "indices")
        idx = []
        for v in values:
            if isinstance(v, int) and 0 <= v < len(names):
                idx.append(v)
            elif isinstance(v, str) and v in names:
                idx.append(names.index(v))
            else:
                raise ValueError(f"{path}: {key} class {v!r} is not a class of the dataset; "
                                 f"classes: {', '.join(names[:20])}"
                                 + (" ..." if len(names) > 20 else ""))
        out.append(sorted(idx))
    return out[0], out[1]


def _parts(raw: RawImages, test_fraction: float, seed: int, classes: list[int],
           dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices; every one of `classes` needs an image in each part."""
    if raw.is_test is not None:
        return np.flatnonzero(~raw.is_test), np.flatnonzero(raw.is_test)
    if raw.multilabel:  # strata, not classes: no class is left without test images by them
        return stratified_test_split(raw.labels.argmax(1), test_fraction, seed, required=())
    return stratified_test_split(raw.labels, test_fraction, seed, required=classes,
                                 name_of=lambda c: f"class {raw.class_names[c]!r} of "
                                                   f"dataset {dataset}")


def _task(raw: RawImages, train_idx, test_idx, classes: list[int], exclusive: list[int]
          ) -> TaskData:
    """Images of `classes`, labels re-indexed; multi-label images carrying any label of
    `exclusive` (the other task's classes, same dataset) are left out of both tasks."""
    names = [raw.class_names[c] for c in classes]
    if not raw.multilabel:
        index_of = {c: i for i, c in enumerate(classes)}

        def part(idx):
            keep = idx[np.isin(raw.labels[idx], classes)]
            return raw.images[keep], np.array([index_of[c] for c in raw.labels[keep]],
                                              dtype=np.int64), None

    else:
        def part(idx):
            y = raw.labels[idx]
            keep = y[:, classes].any(1)
            if exclusive:
                keep &= ~y[:, exclusive].any(1)
            kept = idx[keep]
            diff = raw.difficult[kept][:, classes] if raw.difficult is not None else \
                np.zeros((len(kept), len(classes)), dtype=bool)
            return raw.images[kept], raw.labels[kept][:, classes].astype(np.uint8), diff

    x_train, y_train, d_train = part(train_idx)
    x_test, y_test, d_test = part(test_idx)
    return TaskData(list(classes), x_train, y_train, x_test, y_test, 255, (0.5,), (0.5,),
                    d_train, d_test, names)


def _class_list(spec, raw: RawImages) -> list[int]:
    n = len(raw.class_names)
    if spec == "all":
        return list(range(n))
    bad = [c for c in spec if c >= n]
    if bad:
        raise ValueError(f"params: data.source_classes/target_classes name classes {bad} that "
                         f"the dataset does not have; it has classes 0..{n - 1}")
    return sorted(spec)


def weights_preprocessing(params):
    """With data.normalise: pretrained, how the weights of model.pretrained want their
    inputs (transferlab.models.hub: size, mean, std); else None. torch is imported
    only then."""
    if params.data.normalise != "pretrained":
        return None
    from transferlab.models.hub import hub_preprocessing

    name = params.model.pretrained["name"]
    return name, hub_preprocessing(name)


def prepare_tasks(dataset: str, data, seed: int, progress: bool = True,
                  preprocessing=None) -> tuple[TaskData, TaskData, dict]:
    """Source task A, target task B and a description of the split, from params;
    `preprocessing` (data.normalise: pretrained) is `weights_preprocessing`'s answer."""
    src_name = data.dataset_of("source", dataset)
    tgt_name = data.dataset_of("target", dataset)
    path_a, path_b = data.path_of("source", dataset), data.path_of("target", dataset)
    raw_a = load_raw(src_name, data, progress, path_a)
    # two image folders are two datasets: each its own classes and test part
    raw_b = raw_a if not data.crosses(dataset) else load_raw(tgt_name, data, progress, path_b)
    pixel_max = 16 if src_name == "digits" else 255
    if raw_a is raw_b:
        labels = list(range(len(raw_a.class_names)))
        if data.split == "file":
            a_cls, b_cls = read_classes_file(data.classes_file, raw_a.class_names,
                                             raw_a.class_names)
        else:
            src = () if data.source_classes == "all" else data.source_classes
            tgt = () if data.target_classes == "all" else data.target_classes
            a_cls, b_cls = split_classes(labels, data.split, seed, tuple(src), tuple(tgt))
        if set(a_cls) & set(b_cls):
            raise ValueError(f"params: the source and target classes overlap: "
                             f"{sorted(set(a_cls) & set(b_cls))}")
        tr, te = _parts(raw_a, data.test_fraction, seed, a_cls + b_cls, src_name)
        source = _task(raw_a, tr, te, a_cls, b_cls)
        target = _task(raw_a, tr, te, b_cls, a_cls)
    else:
        if data.split == "file":
            a_cls, b_cls = read_classes_file(data.classes_file, raw_a.class_names,
                                             raw_b.class_names)
        else:
            a_cls, b_cls = _class_list(data.source_classes, raw_a), \
                _class_list(data.target_classes, raw_b)
        source = _task(raw_a, *_parts(raw_a, data.test_fraction, seed, a_cls, src_name),
                       a_cls, [])
        target = _task(raw_b, *_parts(raw_b, data.test_fraction, seed, b_cls, tgt_name),
                       b_cls, [])
        # Both tasks go through the same network: the target takes the source's image format.
        if src_name == "digits" or tgt_name == "digits":
            raise ValueError("params: the 8x8 digits (0..16 pixels) cannot be crossed with "
                             "another dataset; use mnist for handwritten digits")
        channels, size = source.image_shape[0], source.image_shape[1:]
        target.x_train = convert_images(target.x_train, channels, size)
        target.x_test = convert_images(target.x_test, channels, size)
    pretrained = None
    if preprocessing is not None:
        pretrained = _to_weights_input(source, target, data.image_size, *preprocessing)
    elif data.image_size is not None and source.image_shape[1:] != (data.image_size,) * 2:
        for task in (source, target):
            task.x_train = convert_images(task.x_train, task.image_shape[0],
                                         (data.image_size, data.image_size))
            task.x_test = convert_images(task.x_test, task.image_shape[0],
                                        (data.image_size, data.image_size))
    for task in (source, target):
        task.pixel_max = pixel_max
    mean, std = (_normalisation(source, data.normalise) if pretrained is None
                 else (tuple(pretrained["mean"]), tuple(pretrained["std"])))
    for task in (source, target):
        task.mean, task.std = mean, std
    for name, task in (("source", source), ("target", target)):
        if len(task.y_train) == 0 or len(task.y_test) == 0:
            raise ValueError(f"the {name} task has no training or no test images; check "
                             "data.source_classes / data.target_classes")
        if not task.multilabel:
            _check_every_class_in_both_parts(name, task)
    meta = {
        "dataset": dataset, "source_dataset": src_name, "target_dataset": tgt_name,
        "image_shape": list(source.image_shape), "multilabel_target": target.multilabel,
        "source_classes": a_cls, "target_classes": b_cls,
        "source_class_names": source.class_names, "target_class_names": target.class_names,
        "normalise": {"mean": list(mean), "std": list(std)},
        "source_train_per_class": source.train_counts().tolist(),
        "source_test_per_class": _counts(source.y_test, source.num_classes).tolist(),
        "target_train_per_class": target.train_counts().tolist(),
        "target_test_per_class": _counts(target.y_test, target.num_classes).tolist(),
    }
    if pretrained is not None:
        meta["pretrained_input"] = pretrained
    return source, target, meta


def _to_weights_input(source: TaskData, target: TaskData, image_size: int | None,
                      name: str, weights) -> dict:
    """Both tasks' images as the weights of `name` take them: RGB (grey repeated), square
    at the weights' crop size, or at `image_size` when set (small CPU runs and tests),
    a departure the record names. Images go straight to that size: the weights' own
    transforms resize to `resize` and centre-crop, which would cut the border off images
    that, like most small datasets', fill their frame."""
    size = image_size or weights.crop
    for task in (source, target):
        task.x_train = convert_images(task.x_train, 3, (size, size))
        task.x_test = convert_images(task.x_test, 3, (size, size))
    record = {"model": name, "size": size, "weights_crop": weights.crop,
              "weights_resize": weights.resize, "interpolation": weights.interpolation,
              "mean": [float(m) for m in weights.mean], "std": [float(s) for s in weights.std]}
    if size != weights.crop:
        record["departure"] = (f"data.image_size = {size}: the weights of {name} were trained "
                               f"on {weights.crop} x {weights.crop} crops")
    return record


def _check_every_class_in_both_parts(name: str, task: TaskData) -> None:
    """A single-label class with no training or no test image cannot be learnt or scored."""
    train, test = task.train_counts(), _counts(task.y_test, task.num_classes)
    for i in np.flatnonzero((train == 0) | (test == 0)):
        label = task.class_names[i] if task.class_names else task.classes[i]
        raise ValueError(f"the {name} task's class {label!r} has {int(train[i])} training and "
                         f"{int(test[i])} test images; every class needs at least one of "
                         "each")


def _counts(y: np.ndarray, k: int) -> np.ndarray:
    """Images per class (single-label) or per label (multi-label)."""
    return (y > 0).sum(0) if y.ndim == 2 else np.bincount(y, minlength=k)


def _normalisation(source: TaskData, how: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    channels = source.image_shape[0]
    if how == "half":  # Spero: mean 0.5, std 0.5 on the [0, 1] scale
        return (0.5,) * channels, (0.5,) * channels
    # Per channel, from the source training images; the target reuses them.
    x = source.x_train
    sums = np.zeros(channels)
    sq = np.zeros(channels)
    for start in range(0, len(x), 4096):  # chunks keep memory flat on large sets
        chunk = x[start:start + 4096].astype(np.float64) / source.pixel_max
        sums += chunk.sum((0, 2, 3))
        sq += (chunk ** 2).sum((0, 2, 3))
    n = len(x) * x.shape[2] * x.shape[3]
    mean = sums / n
    std = np.sqrt(np.maximum(sq / n - mean ** 2, 1e-12))
    return tuple(round(float(m), 6) for m in mean), tuple(round(float(s), 6) for s in std)


def prepare_dataset(dataset: str, split: str, source_classes, target_classes,
                    test_fraction: float, seed: int) -> tuple[TaskData, TaskData, dict]:
    """The digits (or another dataset, from data/raw) split by class lists, every other
    data param at its neutral value (no crop, pad or flip, normalisation "half")."""
    from transferlab.config.params import DataParams

    data = DataParams(split=split, source_classes=tuple(source_classes),
                      target_classes=tuple(target_classes), test_fraction=test_fraction,
                      classes_file=None, source_dataset=None, target_dataset=None,
                      root="data/raw", mirror=None, manifest=None, path=None, source_path=None,
                      target_path=None, voc_lists="main",
                      image_size=None,
                      normalise="half", crop=0, pad=0, flip=False)
    return prepare_tasks(dataset, data, seed, progress=False)


def write_prepared(out_dir: Path, source: TaskData, target: TaskData, meta: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    source.save(out_dir / "source.npz")
    target.save(out_dir / "target.npz")
    write_json_atomic(out_dir / "meta.json", meta)



def describe(source: TaskData, target: TaskData, meta: dict) -> str:
    """One line on what prepare wrote: classes and images of each side."""
    multi = ", multi-label" if target.multilabel else ""
    return (f"source {meta['source_dataset']} ({source.num_classes} classes): "
            f"{len(source.y_train)} train, {len(source.y_test)} test; target "
            f"{meta['target_dataset']} ({target.num_classes} classes{multi}): "
            f"{len(target.y_train)} train, {len(target.y_test)} test; "
            f"images {meta['image_shape']}"
            + (f"; {meta['pretrained_input']['departure']}"
               if "departure" in meta.get("pretrained_input", {}) else ""))
