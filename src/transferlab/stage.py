"""What every stage entry point shares: params, errors, cleanup and timing."""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from transferlab.io import remove_outputs
from transferlab.params import ParamsError

# Seconds spent in training, feature extraction and head fitting in this process;
# the benchmark compares it with the stage's wall time.
_compute_seconds = 0.0


@contextmanager
def compute() -> Iterator[None]:
    """Mark a block as the work a stage exists for (not imports or I/O)."""
    global _compute_seconds
    start = time.perf_counter()
    try:
        yield
    finally:
        _compute_seconds += time.perf_counter() - start


def _record_timing(name: str, started: float) -> None:
    log = os.environ.get("TRANSFERLAB_TIMINGS")
    if not log:
        return
    entry = {"stage": name, "process_seconds": time.time() - started,
             "compute_seconds": _compute_seconds}
    with open(log, "a") as fh:
        fh.write(json.dumps(entry) + "\n")


def run_stage(name: str, main: Callable[[], None], outputs: Sequence[str | Path],
              started: float | None = None) -> None:
    """Run a stage's main; on any failure remove its outputs and exit non-zero.

    `started` is the time.time() at which the entry script began, before its
    imports, so the recorded timing includes them.
    """
    started = started if started is not None else time.time()
    try:
        main()
    except ParamsError as err:
        remove_outputs(outputs)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except BaseException as err:
        remove_outputs(outputs)
        traceback.print_exc()
        print(f"error: stage {name} failed: {err!s}; its outputs were removed", file=sys.stderr)
        sys.exit(1)
    _record_timing(name, started)
