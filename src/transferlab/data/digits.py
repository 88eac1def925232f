"""scikit-learn's bundled 8x8 handwritten digits: 1797 images, no download."""

from __future__ import annotations

import numpy as np

PIXEL_MAX = 16  # digits pixels are integers 0..16


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8 (N, 1, 8, 8) and integer labels 0..9."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[:, None, :, :]
    return images, bunch.target.astype(np.int64)
