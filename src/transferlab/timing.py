"""Seconds a process spends on the work it exists for, apart from imports and I/O.

A leaf module: the training loop, feature extraction and head fitting mark their
compute with `compute()`, and `benchmarks/pipeline_overhead.py` reads the totals
(through TRANSFERLAB_TIMINGS) to say what share of a `dvc repro` is overhead.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

_compute_seconds = 0.0
# Of which torch.compile's first steps (pretrain/transfer.compile): reported apart.
_compile_seconds = 0.0


@contextmanager
def compute() -> Iterator[None]:
    """Mark a block as the work a stage exists for (not imports or I/O)."""
    global _compute_seconds
    start = time.perf_counter()
    try:
        yield
    finally:
        _compute_seconds += time.perf_counter() - start


def add_compile_seconds(seconds: float) -> None:
    global _compile_seconds
    _compile_seconds += seconds


def compile_seconds() -> float:
    """Seconds this process spent in torch.compile's first steps so far."""
    return _compile_seconds


def record(name: str, started: float) -> None:
    """Append this process's timing to the file TRANSFERLAB_TIMINGS names, if set."""
    log = os.environ.get("TRANSFERLAB_TIMINGS")
    if not log:
        return
    entry = {"stage": name, "process_seconds": time.time() - started,
             "compute_seconds": _compute_seconds, "compile_seconds": _compile_seconds}
    with open(log, "a") as fh:
        fh.write(json.dumps(entry) + "\n")
