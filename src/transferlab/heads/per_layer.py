"""The heads stage: every head on every feature layer, low-shot curves, per-iteration table.

Reads the features store (`transferlab.features.store`), fits the heads per layer
(`transferlab.heads.fit`), the low-shot curves (`transferlab.heads.lowshot`)
and, for feedback networks, the per-iteration table (`transferlab.heads.iterations`),
and writes each as a results file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from transferlab.config.params import HeadParams, Params
from transferlab.features.budget import check_budget, heads_peak
from transferlab.features.store import (
    iteration_name,
    iteration_names,
    load_splits,
    split_path,
    split_shape,
)
from transferlab.heads.fit import check_per_class, cv_workers, fit_layer, subsample_rows
from transferlab.heads.iterations import iteration_table
from transferlab.heads.lowshot import lowshot
from transferlab.io import write_json_atomic
from transferlab.timing import compute


def run_heads(params: Params, *, features_dir, out, lowshot_out=None,
              iterations_out=None) -> dict:
    """The heads stage: every head on features.layers and, for a feedback network, on
    the readouts of heads.on_iterations (Spero's Fig. 3: the forest on iteration 4's
    256-d readout, beside the layers)."""
    readouts = tuple(iteration_name(t) for t in params.heads.on_iterations)
    return fit_heads_per_layer(params.heads, layers=params.features.layers + readouts,
                               subsample=params.subsample, seed=params.seed,
                               features_dir=features_dir, out=out, lowshot_out=lowshot_out,
                               iterations_out=iterations_out,
                               memory_gb=params.features.memory_gb)


def fitted_rows(features_dir, layer: str, subsample: int) -> int | None:
    """How many training rows the heads fit at `subsample` images per class (None: all),
    from the store's labels alone (the features are not loaded)."""
    if not subsample:
        return None
    with np.load(split_path(features_dir, layer, "train")) as z:
        y, copy = z["y"], z["copy"]
    if y.ndim == 2:  # multi-label: the heads fit every image
        return None
    per_class = np.bincount(y[copy == 0])
    copies = len(y) / max(1, int((copy == 0).sum()))
    return int(np.minimum(per_class[per_class > 0], subsample).sum() * copies)


def fit_heads_per_layer(cfg: HeadParams, *, layers: Sequence[str], subsample: int, seed: int,
                        features_dir, out, lowshot_out=None, iterations_out=None,
                        memory_gb: float | None = None) -> dict:
    """Every head on every layer in `layers` (features.layers), on `subsample` training
    images per class (0 = all) drawn with `seed`; writes `out` as {layer: {head: record}}.

    With `heads.lowshot.shots`, also the low-shot curves ({layer: {head: {k: ...}}})
    and, when the features hold iter1..iterT, the per-iteration table; each is
    written to its own path when given. Returns {"layers", "lowshot", "iterations"}.
    Every record carries `dim`, the stored feature dims the head saw. A layer whose
    estimated peak memory (`budget.heads_peak`) is above `memory_gb` (null: the machine's)
    is refused before any layer is fitted.
    """
    features_dir = Path(features_dir)
    shapes = {layer: (split_shape(features_dir, layer, "train"),
                      split_shape(features_dir, layer, "test")) for layer in layers}
    fit_rows = fitted_rows(features_dir, layers[0], subsample) if layers else None
    workers = cv_workers(cfg.cv_workers)
    check_budget("heads", {layer: heads_peak(train[1], train[0], test[0], cfg.heads, fit_rows,
                                             workers)
                           for layer, (train, test) in shapes.items()}, memory_gb)
    results: dict[str, dict] = {}
    low: dict[str, dict] = {}
    low_layers = cfg.lowshot.layers
    low_note = None if cfg.lowshot.shots else "heads.lowshot.shots is empty: no low-shot run"
    for layer in layers:
        train, test = load_splits(features_dir, layer)
        if subsample and not train.multilabel:
            check_per_class("subsample", subsample, train)
        if train.multilabel and cfg.lowshot.shots:
            low_note = "k images per class is defined for single-label tasks; low-shot skipped"
        with compute():
            results[layer] = fit_layer(train, test, cfg, per_class=subsample, seed=seed)
            if low_note is None and (low_layers is None or layer in low_layers):
                low[layer] = lowshot(train, test, cfg, seed=seed)
        for record in results[layer].values():
            record["dim"] = shapes[layer][0][1]
        scores = ", ".join(f"{h} {r['metric']} {r['score']:.3f}"
                           for h, r in results[layer].items())
        print(f"heads {layer} ({shapes[layer][0][1]} dims): {scores}")
    write_json_atomic(out, results)
    # Both side files are always written (DVC outputs), with a note when there is nothing.
    summary = {"shots": list(cfg.lowshot.shots), "draws": cfg.lowshot.draws, "layers": low}
    if low_note is not None:
        summary = {"note": low_note, "layers": {}}
    if lowshot_out is not None:
        write_json_atomic(lowshot_out, summary)
    low = summary if low else None
    table = {"note": "single-iteration network: no per-iteration table"}
    iters = iteration_names(features_dir) if cfg.iterations else []
    if iters:
        splits = [load_splits(features_dir, n) for n in iters]
        train, test = [s[0] for s in splits], [s[1] for s in splits]
        if train[0].multilabel:
            table = {"note": "the per-iteration table is for single-label tasks; skipped"}
        else:
            if subsample:
                rows = subsample_rows(train[0], subsample, seed)
                train = [s.take(rows) for s in train]
            with compute():
                table = iteration_table(train, test, cfg, seed=seed)
            print(f"heads per iteration: rows {table['rows']}, diagonal "
                  f"{[round(table['accuracy'][t][t], 3) for t in range(len(iters))]}")
    if iterations_out is not None:
        write_json_atomic(iterations_out, table)
    return {"layers": results, "lowshot": low, "iterations": table}
