"""Source/target class splits, stratified test parts and nested subsamples.

Every function here is a pure function of its inputs and a seed, so the same
params give the same indices on any machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

# Offsets keep the random streams of different uses of one seed apart.
_CLASS_SPLIT_STREAM = 1
_TEST_SPLIT_STREAM = 2
_SUBSAMPLE_STREAM = 3


def _rng(seed: int, stream: int, *extra: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, *extra])


def split_classes(classes: list[int], split: str, seed: int,
                  source: tuple[int, ...] = (), target: tuple[int, ...] = ()
                  ) -> tuple[list[int], list[int]]:
    """Source classes A and target classes B.

    `fixed`: the given lists; `random`: a random half of `classes` (by seed) as
    A and the rest as B (with an odd count, B gets the extra class).
    """
    present = set(classes)
    if split == "fixed":
        missing = sorted((set(source) | set(target)) - present)
        if missing:
            raise ValueError(f"params: data.source_classes/target_classes name classes {missing} "
                             f"that the dataset does not have; it has {sorted(present)}")
        return sorted(source), sorted(target)
    if split == "random":
        order = _rng(seed, _CLASS_SPLIT_STREAM).permutation(sorted(present))
        half = len(order) // 2
        return sorted(order[:half].tolist()), sorted(order[half:].tolist())
    raise ValueError(f"unknown split {split!r}")


def stratified_test_split(labels: np.ndarray, test_fraction: float, seed: int, *,
                          required: Iterable[int] | None = None,
                          name_of: Callable[[int], str] | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (train, test): per class, a seeded shuffle and the first
    round(fraction * count) images, at least one and at most count - 1, go to test.

    Each class in `required` (default: every class present) needs at least two images,
    one to train and one to test; a class with fewer raises ValueError naming it
    (`name_of(label)`, default "class <label>") and its image count. A class outside
    `required` with a single image goes to train only.
    """
    counts = dict(zip(*np.unique(labels, return_counts=True), strict=True))
    for cls in sorted(counts) if required is None else required:
        n = int(counts.get(cls, 0))
        if n < 2:
            what = name_of(cls) if name_of else f"class {cls}"
            raise ValueError(f"{what} has {n} image{'' if n == 1 else 's'}; a class needs at "
                             "least 2 (one to train, one to test): add images or leave the "
                             "class out")
    train, test = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[_rng(seed, _TEST_SPLIT_STREAM, int(cls)).permutation(len(idx))]
        n_test = min(len(idx) - 1, max(1, round(test_fraction * len(idx))))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def nested_subsample(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of `per_class` images of each class (0 = all).

    Each class gets one seeded order and a size-k sample is its first k images,
    so for one seed the 2-per-class set lies inside the 5-per-class set.
    """
    if per_class == 0:
        return np.arange(len(labels))
    chosen = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        if per_class > len(idx):
            raise ValueError(f"class {cls} has {len(idx)} training images, "
                             f"fewer than the {per_class} asked for")
        order = idx[_rng(seed, _SUBSAMPLE_STREAM, int(cls)).permutation(len(idx))]
        chosen.append(order[:per_class])
    return np.sort(np.concatenate(chosen))


def nested_subsample_multilabel(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Multi-label version: for each label, the first `per_class` images carrying it (in
    one seeded order per label); the union of those sets, so sizes stay nested."""
    if per_class == 0:
        return np.arange(len(labels))
    chosen = set()
    for label in range(labels.shape[1]):
        idx = np.flatnonzero(labels[:, label] > 0)
        if per_class > len(idx):
            raise ValueError(f"label {label} is present in {len(idx)} training images, "
                             f"fewer than the {per_class} asked for")
        order = idx[_rng(seed, _SUBSAMPLE_STREAM, label).permutation(len(idx))]
        chosen.update(order[:per_class].tolist())
    return np.array(sorted(chosen), dtype=np.int64)
