"""What every stage script shares: load params, run, and on failure leave nothing behind."""

from __future__ import annotations

import hashlib
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from transferlab import timing
from transferlab.config.params import PARAMS_FILE, RECIPE_FILE, Params, load_params
from transferlab.config.spec import ConfigurationError
from transferlab.io import clean_stale_temporaries, remove_outputs

STARTED = time.time()  # this module is imported first thing by every stage script


class ParamsChanged(RuntimeError):
    """params.yaml or recipe.yaml changed while the stage ran."""


def params_files_digest(root: Path = Path(".")) -> str:
    h = hashlib.sha256()
    for name in (PARAMS_FILE, RECIPE_FILE):
        path = root / name
        h.update(path.read_bytes() if path.exists() else b"\0missing")
    return h.hexdigest()


def run_stage(name: str, main: Callable[[Params], None], outputs: Sequence[str | Path]) -> None:
    """Load params, run `main(params)`; on any failure remove its outputs and exit non-zero.

    DVC records the params it finds in the files when a stage ends: a refused
    `dvc exp run -S` still rewrites them while this stage runs, and the lock would
    pair these outputs with values they were not made with. So the files must be
    the same at the end as at the start.
    """
    # What a killed earlier run of this stage left beside its outputs (never a live one's).
    clean_stale_temporaries(outputs)
    try:
        before = params_files_digest()
        params = load_params()
        main(params)
        if params_files_digest() != before:
            raise ParamsChanged("the params files changed while the stage ran; the results "
                                "would be recorded under values they were not made with. "
                                "Run again.")
    except ConfigurationError as err:
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
    timing.record(name, STARTED)
