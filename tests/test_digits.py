import subprocess
import sys

import numpy as np

from transferlab.data.digits import digits_file, load_digits_arrays


def test_digits_read_without_sklearn_are_load_digits_exactly():
    from sklearn.datasets import load_digits

    assert digits_file() is not None  # else the loader falls back to importing sklearn
    images, labels = load_digits_arrays()
    bunch = load_digits()
    expected = bunch.images.astype(np.uint8)[:, None, :, :]
    assert images.dtype == expected.dtype and images.shape == (1797, 1, 8, 8)
    assert images.tobytes() == expected.tobytes()
    assert labels.dtype == np.int64 and np.array_equal(labels, bunch.target)


def test_prepare_imports_no_sklearn_for_the_digits():
    code = ("import sys; from transferlab.data.digits import load_digits_arrays; "
            "load_digits_arrays(); print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
