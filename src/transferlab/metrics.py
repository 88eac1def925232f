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


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall steps, thresholds at every distinct score.

    The same definition as scikit-learn's `average_precision_score`; NaN when
    there is no positive.
    """
    y_true = np.asarray(y_true) > 0
    positives = int(y_true.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    s, t = np.asarray(scores, dtype=np.float64)[order], y_true[order]
    # The last index of every run of equal scores is one threshold.
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(t)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(y_true: np.ndarray, scores: np.ndarray,
                           ignore: np.ndarray | None = None) -> tuple[float, list[float]]:
    """(mAP, per-label AP) over labels with at least one positive; `ignore` (bool, N x L)
    marks labels left out of scoring ("difficult" in the VOC protocol)."""
    per_label = []
    for j in range(y_true.shape[1]):
        keep = np.ones(len(y_true), dtype=bool) if ignore is None else ~ignore[:, j]
        per_label.append(average_precision(y_true[keep, j], scores[keep, j]))
    valid = [ap for ap in per_label if not np.isnan(ap)]
    return (float(np.mean(valid)) if valid else float("nan")), per_label
