"""What every stage entry point shares: params, errors, cleanup, timing, read tracking."""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from transferlab.io import clean_stale_temporaries, remove_outputs
from transferlab.params import Params, ParamsError, load_params
from transferlab.schema import recording, value_at

# Seconds spent in training, feature extraction and head fitting in this process;
# the benchmark compares it with the stage's wall time.
_compute_seconds = 0.0
# Of which torch.compile's first steps (pretrain/transfer.compile): reported apart.
_compile_seconds = 0.0

# Stage name -> the params keys its last run in this process read (tests compare
# them with the stage's declared params in dvc.yaml).
READS: dict[str, set[str]] = {}


class ParamsChanged(RuntimeError):
    """params.yaml or recipe.yaml changed, in a key the stage read, while it ran."""


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


def _record_timing(name: str, started: float) -> None:
    log = os.environ.get("TRANSFERLAB_TIMINGS")
    if not log:
        return
    entry = {"stage": name, "process_seconds": time.time() - started,
             "compute_seconds": _compute_seconds, "compile_seconds": _compile_seconds}
    with open(log, "a") as fh:
        fh.write(json.dumps(entry) + "\n")


def check_params_unchanged(used: Params, reads: set[str], path: str | Path = "params.yaml"
                           ) -> None:
    """Fail when a key the stage read has another value in the params files now.

    DVC records the params it finds in params.yaml when a stage ends; a
    `dvc exp run -S` refused while this stage ran still rewrote the file, and
    the lock would pair this run's outputs with values it never trained with.
    """
    try:
        now = load_params(path)
    except ParamsError as err:
        raise ParamsChanged(f"the params files changed while the stage ran and are no "
                            f"longer valid "
                            f"({err})") from None
    changed = [f"{k}: {value_at(used, k)!r} -> {value_at(now, k)!r}" for k in sorted(reads)
               if value_at(used, k) != value_at(now, k)]
    if changed:
        raise ParamsChanged("the params files changed while the stage ran ("
                            + "; ".join(changed)
                            + "); the results would be recorded under values they were not "
                            "made with. Run again.")


def run_stage(name: str, main: Callable[[Params], None], outputs: Sequence[str | Path],
              started: float | None = None) -> None:
    """Load params, run `main(params)`; on any failure remove its outputs and exit non-zero.

    `started` is the time.time() at which the entry script began, before its
    imports, so the recorded timing includes them.
    """
    started = started if started is not None else time.time()
    # What a killed earlier run of this stage left beside its outputs (never a live one's).
    clean_stale_temporaries(outputs)
    try:
        params = load_params()
        with recording() as reads:
            main(params)
        READS[name] = set(reads)
        check_params_unchanged(params, reads)
    except ParamsError as err:
        remove_outputs(outputs)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except BaseException as err:
        remove_outputs(outputs)
        if not isinstance(err, ParamsChanged):
            traceback.print_exc()
        reason = str(err) or type(err).__name__
        print(f"error: stage {name} failed: {reason}; its outputs were removed", file=sys.stderr)
        sys.exit(1)
    _record_timing(name, started)
