"""The per-iteration table of feedback networks (Spero Fig. 4).

Logistic regression fitted on each iteration's head input and on all of them
together, each tested on every iteration: a (T+1) x T accuracy table.
"""

from __future__ import annotations

import numpy as np

from transferlab.config.params import HeadParams
from transferlab.features.store import FeatureSplit, iteration_name
from transferlab.heads.fit import (
    choose_c,
    cv_workers,
    groups_of,
    logreg_model,
    transform_features,
)


def iteration_table(train: list[FeatureSplit], test: list[FeatureSplit], cfg: HeadParams, *,
                    seed: int) -> dict:
    """Row t (t = 1..T) is fitted on iteration t's training features, row "all" on
    every iteration's training rows stacked (CV folds keep one image's rows
    together); each row is tested on every iteration. C comes from `cfg.logreg.C`
    by `cfg.cv_folds`-fold CV; features are transformed as `cfg.transform` says.
    """
    if len(train) != len(test) or not train:
        raise ValueError(f"iteration_table: {len(train)} training and {len(test)} test "
                         "iterations; need the same number, at least one")
    if train[0].multilabel:
        raise ValueError("iteration_table: the per-iteration table is for single-label tasks")
    logreg_c, cv_folds = cfg.logreg.C, cfg.cv_folds
    t_count = len(train)
    xs_test = [transform_features(s.x, cfg.transform, cfg.power) for s in test]
    xs_train = [transform_features(s.x, cfg.transform, cfg.power) for s in train]
    rows = [iteration_name(t) for t in range(1, t_count + 1)]
    fits = [(xs_train[t], train[t].y, groups_of(train[t])) for t in range(t_count)]
    fits.append((np.concatenate(xs_train), np.concatenate([s.y for s in train]),
                 np.concatenate([s.index for s in train])))
    workers = cv_workers(cfg.cv_workers)
    table, chosen, notes = [], {}, []
    for name, (x, y, groups) in zip([*rows, "all"], fits, strict=True):
        c, info = choose_c(logreg_model, logreg_c, x, y, cv_folds, seed, groups=groups,
                           workers=workers)
        if "note" in info:
            notes.append(f"{name}: {info['note']}")
        model = logreg_model(c).fit(x, y)
        chosen[name] = c
        table.append([float(model.score(xt, s.y)) for xt, s in zip(xs_test, test, strict=True)])
    return {"rows": [*rows, "all"], "columns": rows, "accuracy": table, "C": chosen,
            "notes": notes}
