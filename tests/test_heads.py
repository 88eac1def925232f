import numpy as np

from transferlab.heads import _choose_c, fit_heads, l2_normalise


def separable(seed, n_per_class=12, classes=3, dim=20):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 5
    x = np.concatenate([c + rng.normal(scale=0.3, size=(n_per_class, dim)) for c in centres])
    y = np.repeat(np.arange(classes), n_per_class)
    return x, y


def test_every_head_separates_separable_features():
    x_train, y_train = separable(0)
    x_test, y_test = separable(0, n_per_class=6)
    results = fit_heads(x_train, y_train, x_test, y_test, svm_c=(0.1, 1.0, 10.0),
                        logreg_c=(0.1, 1.0, 10.0), trees=16, cv_folds=3, seed=0)
    assert set(results) == {"svm", "logreg", "random_forest"}
    for name, r in results.items():
        assert r["test_accuracy"] == 1.0, name
    assert results["svm"]["C"] in (0.1, 1.0, 10.0) and results["svm"]["cv_folds"] == 3


def test_random_labels_are_not_learned():
    x_train, _ = separable(0)
    rng = np.random.default_rng(1)
    y_train = rng.integers(0, 3, len(x_train))
    x_test, y_test = separable(0, n_per_class=30)
    results = fit_heads(x_train, y_train, x_test, y_test, svm_c=(1.0,), logreg_c=(1.0,),
                        trees=16, cv_folds=3, seed=0)
    assert all(r["test_accuracy"] < 0.8 for r in results.values())


def test_l2_normalise_gives_unit_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    out = l2_normalise(x)
    assert np.allclose(out[0], [0.6, 0.8]) and np.all(out[1] == 0)


def test_cost_choice_uses_only_the_training_part_and_skips_cv_with_one_image():
    from sklearn.svm import LinearSVC

    x, y = separable(2, n_per_class=1)
    c, info = _choose_c(lambda c: LinearSVC(C=c), (0.01, 1.0, 100.0), x, y, 5, 0)
    assert c == 1.0 and info["cv_folds"] == 0 and "no cross-validation" in info["note"]
