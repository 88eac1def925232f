"""Classical heads on one layer's frozen features: linear SVM, logistic regression,
random forest.

The linear heads get features L2-normalised per image (optionally after a signed power
transform, `heads.transform`); the random forest gets them as extracted.
Every choice of the cost C is made by stratified k-fold cross-validation on the
training part only; the test part is touched once per chosen model, to score it.

Heads:
- `svm`: one binary LinearSVC per class (one-vs-rest), each with its own C
  chosen by CV scored by average precision; a single-label prediction is the
  class with the largest decision value.
- `logreg`: single-label, one multinomial LogisticRegression with C chosen by
  CV accuracy; multi-label, one binary LogisticRegression per label with C per
  label by CV average precision.
- `random_forest`: one forest (heads.random_forest.n_estimators trees) predicting
  the class, or every label at once for multi-label tasks.

Single-label labels are int (N,); multi-label labels are uint8 (N, L), scored by
per-label average precision and their mean (mAP), with test labels marked
`difficult` left out as in the Pascal VOC protocol.

When a training sample is an augmented copy of an image, CV keeps all copies of
one image in the same fold (groups), so validation never sees a near-duplicate
of a training image.

The settings come from the `heads` params section (`HeadParams`); seeds and
images per class are arguments. The low-shot curves (`heads_lowshot`) and the
per-iteration table (`heads_iterations`) build on these functions.
"""

from __future__ import annotations

import math

import numpy as np

from transferlab.config.params import HEAD_TRANSFORMS, HeadParams
from transferlab.features.store import FeatureSplit
from transferlab.progress import progress_bar

# ---------------------------------------------------------------------------- transforms


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def power_normalise(x: np.ndarray, power: float) -> np.ndarray:
    """sign(x) |x|^power, then L2 (the componentwise power transform of CNNaug-SVM)."""
    return l2_normalise(np.sign(x) * np.abs(x) ** power)


def transform_features(x: np.ndarray, transform: str, power: float) -> np.ndarray:
    """`transform` l2 or power (`power_normalise` with `power`), as heads.transform says."""
    if transform == "l2":
        return l2_normalise(x)
    if transform == "power":
        return power_normalise(x, power)
    raise ValueError(f"heads.transform = {transform!r}: allowed: " + ", ".join(HEAD_TRANSFORMS))


# ---------------------------------------------------------------------------- CV


def cv_splits(y: np.ndarray, folds: int, seed: int, groups: np.ndarray | None = None
              ) -> tuple[list[tuple[np.ndarray, np.ndarray]], int, str | None]:
    """(splits, k, note): stratified k-fold splits of the training part.

    k is `folds`, or fewer when the smallest class has fewer images (groups);
    with k < 2 there are no splits and `note` says why.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(y)
    if groups is None:
        smallest = int(np.unique(y, return_counts=True)[1].min())
    else:
        smallest = min(len(np.unique(groups[y == c])) for c in np.unique(y))
    if len(np.unique(y)) < 2:
        return [], 0, "only one class in the training part: no cross-validation"
    k = min(folds, smallest)
    if k < 2:
        return [], 0, f"{smallest} image(s) in the smallest class: no cross-validation"
    dummy = np.zeros(len(y))
    if groups is None:
        cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        return list(cv.split(dummy, y)), k, None
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(cv.split(dummy, y, groups)), k, None


def cv_workers(count: int) -> int:
    """Worker processes for the CV fits: `count` (heads.cv_workers), 0 = one per core
    this process may use (joblib's count: CPU affinity and cgroup quotas included, on
    any OS)."""
    from joblib import cpu_count

    return count or cpu_count()


def _fold_score(make, x: np.ndarray, y: np.ndarray, c: float, train: np.ndarray,
                test: np.ndarray, scoring: str) -> float:
    from sklearn.metrics import get_scorer

    return float(get_scorer(scoring)(make(c).fit(x[train], y[train]), x[test], y[test]))


def choose_c(make, grid: tuple[float, ...], x: np.ndarray, y: np.ndarray, folds: int,
              seed: int, *, groups: np.ndarray | None = None, scoring: str = "accuracy",
              desc: str | None = None, workers: int = 1) -> tuple[float, dict]:
    """Best C by mean CV score (ties go to the smaller C); grid middle if CV can't run.
    With `desc`, a progress bar over the fits (drawn on a terminal only).

    Every (C, fold) fit is independent, so with `workers` > 1 they run in that many
    processes (joblib's loky, which shares the cores' BLAS threads out among them and
    memory-maps the features instead of copying them). Processes, not threads:
    scikit-learn's liblinear draws its coordinate order from one generator per process,
    which concurrent fits in threads would share, so the SVMs would depend on timing. In
    processes every fit seeds its own, and the scores are those of one worker. At the
    Fashion-MNIST study's size the per-class SVMs' fits, one core each, were most of the
    heads stage."""
    from joblib import Parallel, delayed

    splits, k, note = cv_splits(y, folds, seed, groups)
    if k == 0:
        chosen = sorted(grid)[len(grid) // 2]
        return chosen, {"cv_folds": 0, "note": f"{note}, C = {chosen} (middle of the grid)"}
    fits = [(c, train, test) for c in sorted(grid) for train, test in splits]
    bar = progress_bar(total=len(fits), desc=desc, unit="fit", leave=False,
                       disable=desc is None)
    values = []
    for value in Parallel(n_jobs=workers, return_as="generator")(
            delayed(_fold_score)(make, x, y, c, train, test, scoring)
            for c, train, test in fits):
        values.append(value)
        bar.update()
    bar.close()
    scores = {c: float(np.mean(values[i * k:(i + 1) * k])) for i, c in enumerate(sorted(grid))}
    chosen = max(scores, key=lambda c: (scores[c], -c))
    return chosen, {"cv_folds": k, "cv_scoring": scoring,
                    "cv_score": {str(c): s for c, s in scores.items()}}


# ---------------------------------------------------------------------------- metrics


def average_precisions(y: np.ndarray, scores: np.ndarray, difficult: np.ndarray | None = None,
                       *, definition: str) -> tuple[list[float | None], float, list[str]]:
    """(AP per label, mAP, notes); difficult labels are left out of their label's AP;
    `definition`: heads.ap (transferlab.metrics.AP_DEFINITIONS).

    A label without a positive (non-difficult) test image has no AP (None) and
    is left out of the mean.
    """
    from transferlab.metrics import mean_average_precision

    ignore = None if difficult is None else np.asarray(difficult, bool)
    m, per_label = mean_average_precision(y, scores, ignore, definition=definition)
    aps = [None if math.isnan(ap) else ap for ap in per_label]
    notes = [f"label {j}: no positive non-difficult test image, no AP"
             for j, ap in enumerate(aps) if ap is None]
    return aps, m, notes


# ---------------------------------------------------------------------------- heads


def _svm(c: float, seed: int):
    from sklearn.svm import LinearSVC

    # One class against all the others is imbalanced (1 to k-1): without balanced
    # weights a small chosen C pushes every decision value negative and the per-class
    # scores stop being comparable for the argmax (measured on the digits at 5 images
    # per class: 0.49-0.69 accuracy, against 0.89-0.90 balanced).
    return LinearSVC(C=c, max_iter=20000, random_state=seed, class_weight="balanced")


def logreg_model(c: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=5000)


def fit_binary_per_class(make, grid, x_train: np.ndarray, y_bin: np.ndarray, x_test: np.ndarray,
                         *, folds: int, seed: int, groups: np.ndarray | None = None,
                         workers: int = 1
                         ) -> tuple[np.ndarray, list[float | None], list[dict]]:
    """One binary model per column of `y_bin` (N, L), its C chosen by CV average precision.

    Returns (test decision values (N_test, L), C per column, CV info per column).
    A column with a single value in training gets no model and a constant score.
    """
    scores = np.zeros((len(x_test), y_bin.shape[1]))
    chosen: list[float | None] = []
    infos = []
    # CV over the C grid per class is the slow part at large dims: a bar with an ETA
    for j in progress_bar(range(y_bin.shape[1]), desc="heads: per-class CV", unit="class",
                          leave=False):
        target = y_bin[:, j].astype(np.int64)
        if len(np.unique(target)) < 2:
            chosen.append(None)
            infos.append({"cv_folds": 0, "note": f"column {j} has only value {target[0]} in "
                          "training: no model, constant score"})
            continue
        c, info = choose_c(make, grid, x_train, target, folds, seed, groups=groups,
                            scoring="average_precision", workers=workers)
        model = make(c).fit(x_train, target)
        scores[:, j] = model.decision_function(x_test)
        chosen.append(c)
        infos.append(info)
    return scores, chosen, infos


def _per_class_record(chosen, infos, prefix: str) -> dict:
    notes = [f"{prefix} {j}: {info['note']}" for j, info in enumerate(infos) if "note" in info]
    return {"C": chosen, "cv_folds": [info["cv_folds"] for info in infos],
            "cv_score": [info.get("cv_score") for info in infos], "notes": notes}


def _forest_scores(forest, x_test: np.ndarray, n_labels: int) -> np.ndarray:
    """P(label present) per label from a multi-output forest."""
    probas = forest.predict_proba(x_test)
    out = np.zeros((len(x_test), n_labels))
    for j, (p, classes) in enumerate(zip(probas, forest.classes_, strict=True)):
        hit = np.flatnonzero(classes == 1)
        if hit.size:
            out[:, j] = p[:, hit[0]]
    return out


def fit_heads(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
              cfg: HeadParams, *, seed: int, heads: tuple[str, ...] | None = None,
              groups: np.ndarray | None = None, difficult: np.ndarray | None = None
              ) -> dict[str, dict]:
    """Fit every head (`heads`, else `cfg.heads`) on the training part and score it once on
    the test part.

    y_train int (N,) gives single-label heads scored by accuracy; uint8 (N, L)
    gives multi-label heads scored by per-label AP and mAP (`difficult` (N_test, L)
    marks test labels to leave out). `groups` names the image each training row
    came from, when rows are augmented copies.
    Every record has `metric` ("accuracy" or "mAP") and `score`.

    The linear heads see the features after `cfg.transform` (L2, or the power transform
    then L2); the random forest sees them as extracted: its splits need no scaling, and
    Spero's Fig. 3 forests were fit "on the output of iteration 4" as it is.
    """
    from sklearn.ensemble import RandomForestClassifier

    svm_c, logreg_c = cfg.svm.C, cfg.logreg.C
    trees, cv_folds = cfg.random_forest.n_estimators, cfg.cv_folds
    workers = cv_workers(cfg.cv_workers)
    heads = cfg.heads if heads is None else heads
    raw_train, raw_test = x_train, x_test  # the forest's
    x_train = transform_features(x_train, cfg.transform, cfg.power)
    x_test = transform_features(x_test, cfg.transform, cfg.power)
    multilabel = y_train.ndim == 2
    results: dict[str, dict] = {}

    def finish(record: dict, test_scores: np.ndarray | None = None, pred=None) -> dict:
        if multilabel:
            aps, m, notes = average_precisions(y_test, test_scores, difficult,
                                               definition=cfg.ap)
            # C was chosen by scikit-learn's AP in CV (cv_scoring); the test AP is cfg.ap.
            record.update(metric="mAP", score=m, mAP=m, ap_per_class=aps, ap_definition=cfg.ap)
            record["notes"] = record.get("notes", []) + notes
        else:
            acc = float(np.mean(pred == y_test))
            record.update(metric="accuracy", score=acc, test_accuracy=acc)
        return record

    if multilabel:
        classes = None
        y_bin = y_train
    else:
        classes = np.unique(y_train)
        y_bin = (y_train[:, None] == classes[None, :]).astype(np.int64)
    prefix = "label" if multilabel else "class"

    if "svm" in heads:
        scores, chosen, infos = fit_binary_per_class(
            lambda c: _svm(c, seed), svm_c, x_train, y_bin, x_test, folds=cv_folds, seed=seed,
            groups=groups, workers=workers)
        pred = None if multilabel else classes[np.argmax(scores, axis=1)]
        results["svm"] = finish(_per_class_record(chosen, infos, prefix), scores, pred)
    if "logreg" in heads:
        if multilabel:
            scores, chosen, infos = fit_binary_per_class(
                logreg_model, logreg_c, x_train, y_bin, x_test, folds=cv_folds, seed=seed,
                groups=groups, workers=workers)
            results["logreg"] = finish(_per_class_record(chosen, infos, prefix), scores)
        else:
            c, info = choose_c(logreg_model, logreg_c, x_train, y_train, cv_folds, seed,
                               groups=groups, desc="heads: logreg CV over C", workers=workers)
            model = logreg_model(c).fit(x_train, y_train)
            record = {"C": c, **info}
            record["notes"] = [record.pop("note")] if "note" in record else []
            results["logreg"] = finish(record, pred=model.predict(x_test))
    if "random_forest" in heads:
        forest = RandomForestClassifier(n_estimators=trees, random_state=seed, n_jobs=1)
        forest.fit(raw_train, y_train)
        record = {"n_estimators": trees}
        if multilabel:
            results["random_forest"] = finish(
                record, _forest_scores(forest, raw_test, y_train.shape[1]))
        else:
            results["random_forest"] = finish(record, pred=forest.predict(raw_test))
    return results


# ---------------------------------------------------------------------------- one layer


def groups_of(train: FeatureSplit) -> np.ndarray | None:
    """The CV groups of a training split: its images, when rows include augmented copies."""
    return train.index if train.augmented else None


def subsample_rows(train: FeatureSplit, per_class: int, seed: int) -> np.ndarray:
    """Rows of `per_class` images per class (`nested_subsample`) and of their copies."""
    from transferlab.data.split import nested_subsample

    images = nested_subsample(train.image_labels(), per_class, seed)
    return train.rows_of_images(images)


def check_per_class(key: str, k: int, train: FeatureSplit) -> None:
    """Refuse `key` = k images per class when the smallest class has fewer."""
    from transferlab.config.params import check_subsample

    check_subsample(key, k, int(np.bincount(train.image_labels()).min()))


def fit_layer(train: FeatureSplit, test: FeatureSplit, cfg: HeadParams, *, per_class: int,
              seed: int, draw_seed: int | None = None, heads: tuple[str, ...] | None = None
              ) -> dict:
    """Heads on one layer's features, on `per_class` training images per class (0 = all).

    The images are drawn with `draw_seed` (default `seed`); the heads' CV folds and
    models use `seed`.
    """
    draw_seed = seed if draw_seed is None else draw_seed
    notes = []
    if train.multilabel and per_class:
        notes.append(f"subsample {per_class} applies to single-label tasks; all "
                     f"{int(train.index.max()) + 1} training images used")
    elif per_class:
        train = train.take(subsample_rows(train, per_class, draw_seed))
    results = fit_heads(train.x, train.y, test.x, test.y, cfg, seed=seed, heads=heads,
                        groups=groups_of(train), difficult=test.difficult)
    for record in results.values():
        record["train_rows"] = len(train.y)
        record.setdefault("notes", [])
        record["notes"] = notes + record["notes"]
    return results
