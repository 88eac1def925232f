from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from transferlab.config.params import HeadParams, parse_params, read_params_file
from transferlab.config.presets import merge
from transferlab.features.store import FeatureSplit
from transferlab.heads.fit import (
    average_precisions,
    choose_c,
    fit_heads,
    fit_layer,
    l2_normalise,
    power_normalise,
    subsample_rows,
    transform_features,
)
from transferlab.heads.iterations import iteration_table
from transferlab.heads.lowshot import lowshot

GRID = (0.01, 0.1, 1.0, 10.0)
SHIPPED = read_params_file(Path(__file__).resolve().parents[1] / "params.yaml")


def head_params(**changes) -> HeadParams:
    """The shipped `heads` section with `changes` merged in."""
    return parse_params(merge(SHIPPED, {"heads": changes})).heads


def grids(svm, logreg, trees, cv_folds, **changes) -> HeadParams:
    return head_params(svm={"C": list(svm)}, logreg={"C": list(logreg)},
                       random_forest={"n_estimators": trees}, cv_folds=cv_folds, **changes)


def separable(seed, n_per_class=12, classes=3, dim=20):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 5
    x = np.concatenate([c + rng.normal(scale=0.3, size=(n_per_class, dim)) for c in centres])
    y = np.repeat(np.arange(classes), n_per_class)
    return x, y


def two_parts(seed, n_train, n_test, noise=0.3, classes=3, dim=20):
    """Training and test samples around the same class centres."""
    x, y = separable(seed, n_train + n_test, classes, dim)
    x = x + np.random.default_rng(seed + 100).normal(scale=noise, size=x.shape)
    first = np.tile(np.arange(n_train + n_test) < n_train, classes)
    return (x[first], y[first]), (x[~first], y[~first])


def mixed_difficulty(seed, n=20):
    """Class 0 easy, classes 1 and 2 barely apart: their best costs differ."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3 * n, 6))
    y = np.repeat(np.arange(3), n)
    x[y == 0, 0] += 3
    x[y == 1, 1] += 0.3
    x[y == 2, 1] -= 0.3
    return x, y


def test_every_head_separates_separable_features():
    x_train, y_train = separable(0)
    x_test, y_test = separable(0, n_per_class=6)
    results = fit_heads(x_train, y_train, x_test, y_test,
                        grids((0.1, 1.0, 10.0), (0.1, 1.0, 10.0), 16, 3), seed=0)
    assert set(results) == {"svm", "logreg", "random_forest"}
    for name, r in results.items():
        assert r["test_accuracy"] == 1.0 and r["score"] == 1.0, name
        assert r["metric"] == "accuracy"
    assert len(results["svm"]["C"]) == 3 and set(results["svm"]["C"]) <= {0.1, 1.0, 10.0}
    assert results["svm"]["cv_folds"] == [3, 3, 3]
    assert results["logreg"]["C"] in (0.1, 1.0, 10.0) and results["logreg"]["cv_folds"] == 3


def test_random_labels_are_not_learned():
    x_train, _ = separable(0)
    rng = np.random.default_rng(1)
    y_train = rng.integers(0, 3, len(x_train))
    x_test, y_test = separable(0, n_per_class=30)
    results = fit_heads(x_train, y_train, x_test, y_test, grids((1.0,), (1.0,), 16, 3), seed=0)
    assert all(r["test_accuracy"] < 0.8 for r in results.values())


def test_l2_normalise_gives_unit_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    out = l2_normalise(x)
    assert np.allclose(out[0], [0.6, 0.8]) and np.all(out[1] == 0)


def test_power_transform_is_signed_root_then_l2():
    x = np.array([[4.0, -9.0, 0.0], [-1.0, 1.0, 16.0]])
    out = power_normalise(x, 0.5)
    want = np.array([[2.0, -3.0, 0.0], [-1.0, 1.0, 4.0]])
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    assert np.allclose(out, want)
    assert np.allclose(transform_features(x, "power", 0.5), want)
    assert not np.allclose(transform_features(x, "l2", 0.5), want)
    assert np.allclose(power_normalise(x, 1.0), l2_normalise(x))
    with pytest.raises(ValueError, match="heads.transform = 'cube'"):
        transform_features(x, "cube", 0.5)


def test_cost_choice_skips_cv_with_one_image_and_says_so():
    from sklearn.svm import LinearSVC

    x, y = separable(2, n_per_class=1)
    c, info = choose_c(lambda c: LinearSVC(C=c), (0.01, 1.0, 100.0), x, y, 5, 0)
    assert c == 1.0 and info["cv_folds"] == 0 and "no cross-validation" in info["note"]
    x_test, y_test = separable(2, n_per_class=2)
    results = fit_heads(x, y, x_test, y_test, grids((0.01, 1.0, 100.0), (0.1, 1.0), 4, 5),
                        seed=0)
    assert results["svm"]["C"] == [1.0, 1.0, 1.0] and len(results["svm"]["notes"]) == 3
    assert "middle of the grid" in results["logreg"]["notes"][0]


def test_chosen_costs_do_not_depend_on_the_test_part():
    x, y = mixed_difficulty(2)
    x_test, y_test = mixed_difficulty(12)
    cfg = grids(GRID, GRID, 4, 3, heads=["svm", "logreg"])
    base = fit_heads(x, y, x_test, y_test, cfg, seed=0)
    shuffled = fit_heads(x, y, x_test, np.random.default_rng(0).permutation(y_test), cfg, seed=0)
    noise = fit_heads(x, y, np.random.default_rng(1).normal(size=x_test.shape), y_test, cfg,
                      seed=0)
    for other in (shuffled, noise):
        assert other["svm"]["C"] == base["svm"]["C"]
        assert other["logreg"]["C"] == base["logreg"]["C"]
        assert other["svm"]["cv_score"] == base["svm"]["cv_score"]
    assert noise["svm"]["test_accuracy"] != base["svm"]["test_accuracy"]


def test_svm_cost_is_chosen_per_class_and_matches_a_hand_fit():
    from sklearn.metrics import average_precision_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import LinearSVC

    x, y = mixed_difficulty(2)
    x_test, y_test = mixed_difficulty(12)
    result = fit_heads(x, y, x_test, y_test, grids(GRID, GRID, 4, 3), seed=0,
                       heads=("svm",))["svm"]
    assert len(set(result["C"])) > 1, result["C"]

    xn = l2_normalise(x)
    for cls in (1, 2):
        target = (y == cls).astype(int)
        folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(xn, target))
        mean_ap = {}
        for c in GRID:
            aps = []
            for tr, va in folds:
                model = LinearSVC(C=c, max_iter=20000, random_state=0,
                                  class_weight="balanced").fit(xn[tr], target[tr])
                aps.append(average_precision_score(target[va], model.decision_function(xn[va])))
            mean_ap[c] = np.mean(aps)
        best = max(GRID, key=lambda c: (mean_ap[c], -c))
        assert result["C"][cls] == best
        assert np.allclose([result["cv_score"][cls][str(c)] for c in GRID],
                           [mean_ap[c] for c in GRID])


def test_average_precision_matches_sklearn_and_ignores_difficult_labels():
    from sklearn.metrics import average_precision_score

    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]], np.uint8)
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.3], [0.5, 0.6], [0.3, 0.2], [0.1, 0.7]])
    difficult = np.zeros_like(y, bool)
    difficult[3, 0] = True  # a high-scoring negative, left out
    aps, m, notes = average_precisions(y, scores, difficult, definition="sklearn")
    keep = np.array([True, True, True, False, True, True])
    want0 = average_precision_score(y[keep, 0], scores[keep, 0])
    want1 = average_precision_score(y[:, 1], scores[:, 1])
    assert np.isclose(aps[0], want0) and np.isclose(aps[1], want1)
    assert np.isclose(m, (want0 + want1) / 2) and notes == []
    assert want0 != average_precision_score(y[:, 0], scores[:, 0])
    y2 = y.copy()
    y2[3, 0] = 1
    assert average_precisions(y2, scores, difficult, definition="sklearn")[1] == m


def multilabel_data(seed, n=40, labels=3, dim=8):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, labels)) < 0.4).astype(np.uint8)
    x = rng.normal(size=(n, dim))
    x[:, :labels] += 2.0 * y
    return x, y


def test_multilabel_heads_score_map_and_skip_difficult_labels():
    x, y = multilabel_data(0)
    x_test, y_test = multilabel_data(1, n=30)
    difficult = np.zeros_like(y_test, bool)
    difficult[:4, 0] = True
    kwargs = dict(cfg=grids((0.1, 1.0), (0.1, 1.0), 16, 3), seed=0)
    base = fit_heads(x, y, x_test, y_test, difficult=difficult, **kwargs)
    flipped = y_test.copy()
    flipped[:4, 0] = 1 - flipped[:4, 0]
    other = fit_heads(x, y, x_test, flipped, difficult=difficult, **kwargs)
    voc07 = fit_heads(x, y, x_test, y_test, difficult=difficult,
                      **dict(kwargs, cfg=replace(kwargs["cfg"], ap="voc07")))
    for head in ("svm", "logreg", "random_forest"):
        r = base[head]
        assert r["metric"] == "mAP" and len(r["ap_per_class"]) == 3
        # The record says which AP it is, and the definition is the one asked for.
        assert r["ap_definition"] == kwargs["cfg"].ap and voc07[head]["ap_definition"] == "voc07"
        assert voc07[head]["mAP"] != r["mAP"], head
        assert np.isclose(r["mAP"], np.mean(r["ap_per_class"])) and r["mAP"] > 0.7, head
        assert other[head]["mAP"] == r["mAP"]
    assert len(base["svm"]["C"]) == 3 and len(base["logreg"]["C"]) == 3
    changed = fit_heads(x, y, x_test, flipped, **kwargs)  # not difficult: now it counts
    assert changed["svm"]["mAP"] != base["svm"]["mAP"]


def feature_split(x, y, copies=0):
    n = len(y)
    return FeatureSplit(np.concatenate([x] * (copies + 1)), np.concatenate([y] * (copies + 1)),
                        np.tile(np.arange(n), copies + 1),
                        np.repeat(np.arange(copies + 1), n).astype(np.int16))


def test_lowshot_draws_are_nested_deterministic_and_summarised_right():
    (x, y), (x_test, y_test) = two_parts(3, 10, 8, noise=5.0)  # not too easy
    train = feature_split(x, y)
    test = feature_split(x_test, y_test)
    cfg = head_params(heads=["logreg"], logreg={"C": [1.0]}, cv_folds=2,
                      lowshot={"shots": [1, 2, 4], "draws": 3, "heads": ["logreg"]})
    out = lowshot(train, test, cfg, seed=5)
    assert out == lowshot(train, test, cfg, seed=5)
    assert set(out) == {"logreg"} and set(out["logreg"]) == {"1", "2", "4"}
    for k in (1, 2, 4):
        rec = out["logreg"][str(k)]
        assert len(rec["scores"]) == 3 and rec["seeds"] == [5, 6, 7]
        assert np.isclose(rec["mean"], np.mean(rec["scores"]))
        assert np.isclose(rec["std"], np.std(rec["scores"], ddof=1))  # metrics.mean_std
        want = [fit_layer(train, test, cfg, per_class=k, seed=5, draw_seed=s,
                          heads=("logreg",))["logreg"]["score"] for s in (5, 6, 7)]
        assert rec["scores"] == want
    assert out["logreg"]["1"]["std"] > 0
    for s in (5, 6):
        sets = [set(subsample_rows(train, k, s)) for k in (1, 2, 4)]
        assert sets[0] < sets[1] < sets[2] and [len(r) for r in sets] == [3, 6, 12]
    assert set(subsample_rows(train, 2, 5)) != set(subsample_rows(train, 2, 6))
    too_many = replace(cfg, lowshot=replace(cfg.lowshot, shots=(11,)))
    with pytest.raises(ValueError, match="heads.lowshot.shots"):
        lowshot(train, test, too_many, seed=5)


def test_subsample_takes_augmented_copies_along_and_matches_training_draw():
    from transferlab.data.split import nested_subsample

    x, y = separable(0, n_per_class=6)
    train = feature_split(x, y, copies=2)
    rows = subsample_rows(train, 2, 0)
    images = nested_subsample(y, 2, 0)
    assert len(rows) == 3 * len(images) == 18
    assert set(train.index[rows]) == set(images)
    assert sorted(train.copy[rows].tolist()) == [0] * 6 + [1] * 6 + [2] * 6


def test_iteration_table_shape_and_informative_iteration():
    rng = np.random.default_rng(0)
    (x_inf, y), (x_inf_test, y_test) = two_parts(0, 15, 10)
    train, test = [], []
    for t in range(4):
        if t == 2:
            train.append(feature_split(x_inf, y))
            test.append(feature_split(x_inf_test, y_test))
        else:
            train.append(feature_split(rng.normal(size=x_inf.shape), y))
            test.append(feature_split(rng.normal(size=x_inf_test.shape), y_test))
    table = iteration_table(train, test, head_params(logreg={"C": [0.1, 1.0]}, cv_folds=3),
                            seed=0)
    acc = np.array(table["accuracy"])
    assert acc.shape == (5, 4) and table["rows"][-1] == "all"
    assert np.all((acc >= 0) & (acc <= 1))
    assert acc[2, 2] == 1.0 and max(acc[0, 0], acc[1, 1], acc[3, 3]) < 0.7
    assert acc[4, 2] > 0.9  # the stacked model learns the informative iteration too


def test_the_forest_sees_the_features_as_extracted_the_linear_heads_normalised():
    """Classes that differ only in the scale of their features: L2 normalisation makes
    them one point (the linear heads cannot tell them apart), the forest on the raw
    features can (Spero's forests were fit on the iteration output as it is)."""
    rng = np.random.default_rng(0)
    direction = rng.uniform(1.0, 2.0, size=8)
    y = np.tile(np.arange(2), 30)
    x = direction * np.where(y == 0, 1.0, 3.0)[:, None] * rng.uniform(0.9, 1.1, (60, 1))
    for transform in ("l2", "power"):
        results = fit_heads(x[:40], y[:40], x[40:], y[40:],
                            grids((1.0,), (1.0,), 16, 2, transform=transform), seed=0)
        assert results["random_forest"]["test_accuracy"] == 1.0, transform
        assert results["logreg"]["test_accuracy"] <= 0.75, transform


def test_cv_scores_are_scikit_learns_cross_val_score_per_cost():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    x, y = mixed_difficulty(3)
    _, info = choose_c(lambda c: LogisticRegression(C=c, max_iter=5000), GRID, x, y, 4, 7)
    folds = StratifiedKFold(n_splits=4, shuffle=True, random_state=7)
    for c in GRID:
        want = cross_val_score(LogisticRegression(C=c, max_iter=5000), x, y, cv=folds).mean()
        assert info["cv_score"][str(c)] == pytest.approx(want, abs=1e-12)


def test_cv_fits_in_worker_processes_give_the_one_worker_results():
    """Every SVM fit seeds liblinear's generator in its own process: the scores, the
    chosen costs and the test predictions are those of one worker."""
    x, y = mixed_difficulty(4, n=30)
    x_test, y_test = mixed_difficulty(14)
    one = fit_heads(x, y, x_test, y_test, grids(GRID, GRID, 4, 3, cv_workers=1), seed=0)
    two = fit_heads(x, y, x_test, y_test, grids(GRID, GRID, 4, 3, cv_workers=2), seed=0)
    assert two == one
