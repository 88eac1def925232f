"""Restricted unpickling for the CIFAR batches.

The CIFAR-10/100 "python version" files are protocol-2 pickles written by
Python 2: dicts with byte-string keys, lists of ints and byte strings, and numpy
uint8 arrays. The only globals they name are numpy's array reconstruction
(`numpy.core.multiarray._reconstruct`, `numpy.ndarray`, `numpy.dtype`); dicts,
lists, strings and ints are pickle opcodes and need no global at all. Any other
global is refused before it is looked up, so a tampered file cannot run code.
Callers still verify the checksum first: this is the second line of defence.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names a global outside the allowed list."""


def _reconstruct():
    # numpy 2 moved the module to numpy._core; old pickles still name numpy.core.
    try:
        from numpy._core.multiarray import _reconstruct as fn
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct as fn
    return fn


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}

ALLOWED_GLOBALS = tuple(f"{module}.{name}" for module, name in _ALLOWED)


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose find_class resolves only numpy array reconstruction."""

    def __init__(self, file, *, source: str = "pickle", **kwargs):
        super().__init__(file, **kwargs)
        self._source = source

    def find_class(self, module: str, name: str):
        resolve = _ALLOWED.get((module, name))
        if resolve is None:
            raise UnsafePickleError(
                f"{self._source}: refusing to load global {module}.{name}; "
                f"allowed: {', '.join(ALLOWED_GLOBALS)}")
        return resolve()


def safe_loads(data: bytes, *, source: str = "pickle"):
    """Unpickle `data` (Python 2 byte strings stay bytes) with the restricted Unpickler."""
    return RestrictedUnpickler(io.BytesIO(data), source=source, encoding="bytes").load()


def safe_load_file(path: str | Path):
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, source=str(path), encoding="bytes").load()
