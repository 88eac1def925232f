"""scikit-learn's bundled 8x8 handwritten digits: 1797 images, no download."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np


def digits_file() -> Path | None:
    """The CSV that sklearn.datasets.load_digits reads, found without importing
    scikit-learn (0.7 s: prepare needs none of it); None when it is not there."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    return path if path.is_file() else None


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8 (N, 1, 8, 8) and integer labels 0..9."""
    path = digits_file()
    if path is None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        table = np.column_stack([bunch.data, bunch.target])
    else:
        # As load_digits reads it: np.loadtxt of the gzip'd CSV, 64 pixels then the label.
        with gzip.open(path, mode="rt", encoding="utf-8") as fh:
            table = np.loadtxt(fh, delimiter=",")
    images = table[:, :-1].reshape(-1, 8, 8).astype(np.uint8)[:, None, :, :]
    return images, table[:, -1].astype(np.int64)
