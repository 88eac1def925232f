"""Low-shot curves: the heads fitted on k images per class, over several random draws.

For each k in `heads.lowshot.shots`, draw r (r = 0 .. draws - 1) fits the heads
`heads.lowshot.heads` on `nested_subsample(labels, k, seed + r)`, so within one
draw the k = 1 set lies inside the k = 2 set, and draw 0 is the per-layer heads'
draw. Single-label tasks only.
"""

from __future__ import annotations

from transferlab.config.params import HeadParams
from transferlab.features.store import FeatureSplit
from transferlab.heads.fit import check_per_class, fit_layer
from transferlab.metrics import mean_std
from transferlab.progress import progress_bar


def lowshot(train: FeatureSplit, test: FeatureSplit, cfg: HeadParams, *, seed: int) -> dict:
    """{head: {k: {mean, std, scores, seeds, notes}}} over `cfg.lowshot.draws` draws per k.

    mean and std are the project's one "mean ± sd" (`metrics.mean_std`: ddof 1) of the
    draws' scores.
    """
    low = cfg.lowshot
    if train.multilabel:
        raise ValueError("heads.lowshot: k images per class is defined for single-label "
                         "tasks only; set heads.lowshot.shots to [] for multi-label data")
    for k in low.shots:
        check_per_class("heads.lowshot.shots", k, train)
    seeds = [seed + r for r in range(low.draws)]
    out: dict[str, dict] = {h: {} for h in low.heads}
    fits = {}
    for k, s in progress_bar([(k, s) for k in low.shots for s in seeds], desc="heads: low-shot",
                             unit="fit"):
        fits[k, s] = fit_layer(train, test, cfg, per_class=k, seed=seed, draw_seed=s,
                               heads=low.heads)
    for k in low.shots:
        per_draw = [fits[k, s] for s in seeds]
        for h in low.heads:
            scores = [r[h]["score"] for r in per_draw]
            notes = sorted({n for r in per_draw for n in r[h]["notes"]})
            stats = mean_std(scores)
            out[h][str(k)] = {"mean": stats["mean"], "std": stats["std"], "scores": scores,
                              "seeds": seeds, "notes": notes}
    return out
