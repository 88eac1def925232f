"""Scores shared by the training loop, the heads and the report (numpy only)."""

from __future__ import annotations

import math

import numpy as np


def mean_std(values: list[float]) -> dict:
    """Mean and standard deviation of `values` (seeds, draws, paired differences).

    The one "± sd" of the project, in every table and plot: the sample standard
    deviation, ddof 1 (sum of squared deviations over n - 1). A single value has no
    spread to estimate; its sd is reported as 0.0, and `seeds` (= n = 1) says so.
    No values at all is a ValueError.
    """
    n = len(values)
    if n == 0:
        raise ValueError("mean_std: no values")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "seeds": n}


AP_DEFINITIONS = {
    "voc07": "11-point interpolated AP (VOC2007 devkit)",
    "voc12": "area under the monotone precision envelope (VOC2010+ devkit)",
    "sklearn": "non-interpolated AP (scikit-learn's average_precision_score)",
}


def average_precision(y_true: np.ndarray, scores: np.ndarray, definition: str) -> float:
    """Average precision of one label by `definition` (AP_DEFINITIONS); NaN when there
    is no positive.

    sklearn: area under the precision-recall steps, a threshold at every distinct
    score. voc07 and voc12 follow the VOC devkit: images ranked by score (ties
    in their given order), precision and recall after each one; voc07 averages
    the best precision at recall >= 0, 0.1, ..., 1; voc12 integrates the
    precision envelope (the best precision at any higher recall) over recall.
    """
    if definition not in AP_DEFINITIONS:
        raise ValueError(f"AP definition {definition!r}: one of {', '.join(AP_DEFINITIONS)}")
    y_true = np.asarray(y_true) > 0
    positives = int(y_true.sum())
    if positives == 0:
        return float("nan")
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")  # stable: ties keep their order
    s, t = s[order], y_true[order]
    if definition == "sklearn":
        # The last index of every run of equal scores is one threshold.
        last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    else:
        last = np.arange(len(s))
    tp = np.cumsum(t)[last]
    precision = tp / (last + 1)
    recall = tp / positives
    if definition == "sklearn":
        return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    if definition == "voc07":
        points = [precision[recall >= r].max(initial=0.0) for r in np.linspace(0, 1, 11)]
        return float(np.mean(points))
    envelope = np.maximum.accumulate(np.r_[precision, 0.0][::-1])[::-1]
    steps = np.diff(np.r_[0.0, recall])  # recall rises only at positives
    return float(np.sum(steps * envelope[:-1]))


def mean_average_precision(y_true: np.ndarray, scores: np.ndarray,
                           ignore: np.ndarray | None = None, *, definition: str
                           ) -> tuple[float, list[float]]:
    """(mAP, per-label AP) over labels with at least one positive; `ignore` (bool, N x L)
    marks labels left out of scoring ("difficult" in the VOC protocol); `definition`
    is the AP of AP_DEFINITIONS (params: heads.ap)."""
    per_label = []
    for j in range(y_true.shape[1]):
        keep = np.ones(len(y_true), dtype=bool) if ignore is None else ~ignore[:, j]
        per_label.append(average_precision(y_true[keep, j], scores[keep, j], definition))
    valid = [ap for ap in per_label if not np.isnan(ap)]
    return (float(np.mean(valid)) if valid else float("nan")), per_label


def class_mean(per_class: dict[str, float], classes: list[str]) -> float:
    """Mean of a {class: value} figure over `classes`."""
    return float(np.mean([per_class[c] for c in classes]))
