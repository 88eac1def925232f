"""Classical heads on frozen features: linear SVM, logistic regression, random forest.

Features are L2-normalised per image. The cost C of the linear heads is chosen
by stratified k-fold cross-validation on the training part only; the test part
is touched once, to score the chosen model.
"""

from __future__ import annotations

import numpy as np

HEADS = ("svm", "logreg", "random_forest")


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _choose_c(make, grid: tuple[float, ...], x: np.ndarray, y: np.ndarray, folds: int,
              seed: int) -> tuple[float, dict]:
    """Best C by mean CV accuracy (ties go to the smaller C); grid middle if CV can't run."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    smallest = int(np.bincount(y).min())
    k = min(folds, smallest)
    if k < 2:
        chosen = sorted(grid)[len(grid) // 2]
        return chosen, {"cv_folds": 0, "note": f"{smallest} image(s) in the smallest class: "
                        f"no cross-validation, C = {chosen} (middle of the grid)"}
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    scores = {c: float(cross_val_score(make(c), x, y, cv=cv).mean()) for c in sorted(grid)}
    chosen = max(scores, key=lambda c: (scores[c], -c))
    return chosen, {"cv_folds": k, "cv_accuracy": {str(c): s for c, s in scores.items()}}


def fit_heads(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
              *, svm_c: tuple[float, ...], logreg_c: tuple[float, ...], trees: int,
              cv_folds: int, seed: int) -> dict[str, dict]:
    """Fit every head on the training part and score it on the test part."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    x_train, x_test = l2_normalise(x_train), l2_normalise(x_test)
    makers = {
        "svm": lambda c: LinearSVC(C=c, max_iter=20000, random_state=seed),
        "logreg": lambda c: LogisticRegression(C=c, max_iter=5000),
    }
    grids = {"svm": svm_c, "logreg": logreg_c}
    results: dict[str, dict] = {}
    for name, make in makers.items():
        c, info = _choose_c(make, grids[name], x_train, y_train, cv_folds, seed)
        model = make(c).fit(x_train, y_train)
        results[name] = {"C": c, "test_accuracy": float(model.score(x_test, y_test)), **info}
    forest = RandomForestClassifier(n_estimators=trees, random_state=seed, n_jobs=1)
    forest.fit(x_train, y_train)
    results["random_forest"] = {"n_estimators": trees,
                                "test_accuracy": float(forest.score(x_test, y_test))}
    return results


def fit_heads_per_layer(params, *, features_dir, out) -> dict:
    """Every head on every layer of `features.layers`; writes one JSON."""
    from pathlib import Path

    from transferlab.io import write_json_atomic
    from transferlab.stage import compute

    results = {}
    for layer in params.features.layers:
        splits = {}
        for split in ("train", "test"):
            path = Path(features_dir) / layer / f"{split}.npz"
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing; run `dvc repro features` first")
            with np.load(path) as z:
                splits[split] = (z["x"], z["y"])
        with compute():
            results[layer] = fit_heads(*splits["train"], *splits["test"],
                                       svm_c=params.heads.svm_C, logreg_c=params.heads.logreg_C,
                                       trees=params.heads.forest_trees,
                                       cv_folds=params.heads.cv_folds, seed=params.seed)
        accs = ", ".join(f"{h} {r['test_accuracy']:.3f}" for h, r in results[layer].items())
        print(f"heads {layer}: {accs}")
    write_json_atomic(out, results)
    return results
