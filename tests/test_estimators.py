"""Known answers for the transferability estimators and their scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transferlab.config.params import parse_params
from transferlab.transferability import estimators as est
from transferlab.transferability import scoring as ts

from .conftest import TINY


def gaussian_classes(classes=4, per_class=12, dims=20, separation=6.0, seed=0):
    """Well separated classes: class means `separation` apart along random directions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dims)) * separation
    y = np.repeat(np.arange(classes), per_class)
    x = centres[y] + rng.normal(size=(len(y), dims))
    return torch.tensor(x), torch.tensor(y)


def shuffled(y, seed=1):
    return y[torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))]


LAYER_FUNCTIONS = {
    "knn": lambda x, y: est.knn_loo_accuracy(x, y, 3),
    "logme": est.logme,
    "hscore": est.hscore,
    "transrate": lambda x, y: est.transrate(x, y, 1e-2),
    "gbc": lambda x, y: est.gbc(x, y, 8),
    "sfda": lambda x, y: est.sfda(x, y, 5.0),
    "linear_probe": lambda x, y: est.linear_probe_cv_accuracy(
        x.numpy(), y.numpy(), parse_params(TINY).heads, 0),
}


# fewer and more features than images; SFDA only with fewer (with more, every training
# image is certain: test_sfda_saturates_when_features_outnumber_images)
@pytest.mark.parametrize(("name", "dims"), [(name, dims) for name in sorted(LAYER_FUNCTIONS)
                                            for dims in (20, 200)
                                            if (name, dims) != ("sfda", 200)])
def test_separated_classes_score_higher_than_shuffled_labels(name, dims):
    x, y = gaussian_classes(dims=dims)
    fn = LAYER_FUNCTIONS[name]
    real, noise = fn(x, y), fn(x, shuffled(y))
    assert math.isfinite(real) and math.isfinite(noise)
    assert real > noise


def test_knn_is_perfect_on_separated_classes_and_chance_on_one_image_per_class():
    x, y = gaussian_classes(separation=20.0)
    assert est.knn_loo_accuracy(x, y, 3) == 1.0
    x1, y1 = gaussian_classes(per_class=1)
    assert est.knn_loo_accuracy(x1, y1, 1) == 0.0  # no other image of its class


@pytest.mark.parametrize("name", ["nce", "leep"])
def test_network_scores_higher_when_source_predictions_tell_the_target_classes(name):
    rng = np.random.default_rng(0)
    y = torch.tensor(np.repeat(np.arange(3), 20))
    informative = torch.full((60, 5), 0.02, dtype=torch.float64)
    informative[torch.arange(60), y] = 0.92  # source class c fires on target class c
    uninformative = torch.tensor(rng.dirichlet(np.ones(5), size=60))
    fn = getattr(est, name)
    assert fn(informative, y) > fn(uninformative, y)
    # perfectly informative hard predictions: no uncertainty left, NCE = 0
    if name == "nce":
        assert est.nce(informative, y) == pytest.approx(0.0, abs=1e-12)


def _direct_log_evidence(f, t, alpha, beta):
    """log N(t; 0, beta^-1 I + alpha^-1 f f^T): the evidence by its definition."""
    from scipy.stats import multivariate_normal

    cov = np.eye(len(t)) / beta + f @ f.T / alpha
    return multivariate_normal(np.zeros(len(t)), cov).logpdf(t)


@pytest.mark.parametrize("shape", [(12, 3), (6, 10)])
def test_logme_evidence_equals_the_gaussian_marginal_likelihood(shape):
    rng = np.random.default_rng(3)
    f = rng.normal(size=shape)
    t = rng.normal(size=shape[0])
    for alpha, beta in ((0.5, 2.0), (3.0, 0.7)):
        closed = est.logme_evidence(torch.tensor(f), torch.tensor(t), alpha, beta)
        assert closed == pytest.approx(_direct_log_evidence(f, t, alpha, beta), rel=1e-9)


def test_logme_fixed_point_maximises_the_evidence():
    rng = np.random.default_rng(4)
    f = rng.normal(size=(30, 4))
    t = f @ np.array([1.0, -0.5, 0.2, 0.0]) + 0.3 * rng.normal(size=30)
    evidence, alpha, beta = est.logme_fit(torch.tensor(f), torch.tensor(t))
    assert evidence == pytest.approx(_direct_log_evidence(f, t, alpha, beta), rel=1e-9)
    for da, db in ((1.05, 1), (0.95, 1), (1, 1.05), (1, 0.95)):
        assert _direct_log_evidence(f, t, alpha * da, beta * db) < evidence
    # the noise precision found is near the true one (sd 0.3 -> beta about 11)
    assert 5 < beta < 25


def test_ledoit_wolf_shrinkage_matches_sklearn():
    from sklearn.covariance import ledoit_wolf_shrinkage

    x, _ = gaussian_classes(dims=50, per_class=5)
    xc = x - x.mean(0)
    assert est.ledoit_wolf_shrinkage(xc) == pytest.approx(
        ledoit_wolf_shrinkage(xc.numpy(), assume_centered=True), rel=1e-9)


def test_hscore_woodbury_path_equals_the_direct_inverse():
    x, y = gaussian_classes(dims=80, per_class=5)  # 80 features, 20 images
    xc = (x - x.mean(0)).numpy()
    lam = est.ledoit_wolf_shrinkage(torch.tensor(xc))
    mu = np.trace(xc.T @ xc / len(xc)) / xc.shape[1]
    cov = (1 - lam) * xc.T @ xc / len(xc) + lam * mu * np.eye(xc.shape[1])
    means = np.stack([xc[y.numpy() == c].mean(0) for c in range(4)])
    between = sum(0.25 * np.outer(m, m) for m in means)
    assert est.hscore(x, y) == pytest.approx(np.trace(np.linalg.solve(cov, between)), rel=1e-7)


def test_estimators_run_on_one_image_per_class():
    x, y = gaussian_classes(per_class=1, dims=30)
    for name, fn in LAYER_FUNCTIONS.items():
        value = fn(x, y)
        assert isinstance(value, float), name


# ---------------------------------------------------------------------------- SFDA


def _shrunk_within(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(0) for c in classes])
    dev = x - means[np.searchsorted(classes, y)]
    s_w = dev.T @ dev / len(x)
    return (1 - lam) * s_w + lam * np.trace(s_w) / x.shape[1] * np.eye(x.shape[1])


def test_fisher_direction_of_two_classes_is_the_closed_form():
    """Two classes: the one Fisher direction is S~_W^-1 (m_1 - m_0), scaled to
    u^T S~_W u = 1 (sign aside)."""
    x, y = gaussian_classes(classes=2, per_class=30, dims=6, separation=1.0, seed=3)
    xn, yn = x.numpy(), y.numpy()
    lam = 0.2
    reg = _shrunk_within(xn, yn, lam)
    w = np.linalg.solve(reg, xn[yn == 1].mean(0) - xn[yn == 0].mean(0))
    w /= np.sqrt(w @ reg @ w)
    _, proj = est.fisher_bayes(x - x.mean(0), y, 2, lam, 6)
    u = proj[:, 0].numpy()
    assert abs(float(u @ w)) == pytest.approx(float(w @ w), rel=1e-9)
    assert float(u @ reg @ u) == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize("lam", [1e-3, 0.3])
def test_fisher_bayes_classifier_equals_sklearn_shrunk_lda(lam):
    """The Bayes classifier in the Fisher space gives sklearn's eigen-solver LDA
    probabilities with the same shrinkage (its per-class shrinkage towards tr / D sums to
    SFDA's S~_W)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x, y = gaussian_classes(classes=4, per_class=15, dims=8, separation=1.0, seed=4)
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=lam).fit(x.numpy(), y.numpy())
    log_p, proj = est.fisher_bayes(x - x.mean(0), y, 4, lam, 8)
    assert proj.shape == (8, 3)  # C - 1 directions
    np.testing.assert_allclose(log_p.exp().numpy(), lda.predict_proba(x.numpy()), atol=1e-9)


def test_sfda_in_the_span_of_the_images_equals_the_full_space():
    """60 features, 24 images: the classifier worked out in the images' span is the one
    of the full 60 x 60 scatter matrices."""
    x, y = gaussian_classes(classes=3, per_class=8, dims=60, separation=1.0, seed=5)
    lam = 0.25
    full, _ = est.fisher_bayes(x - x.mean(0), y, 3, lam, 60)
    span, _ = est.fisher_bayes(est.span_coordinates(x), y, 3, lam, 60)
    np.testing.assert_allclose(span.numpy(), full.numpy(), atol=1e-9)


def test_sfda_lambda_shrinks_a_tight_within_class_scatter_most():
    tight = torch.diag(torch.tensor([0.01, 0.001], dtype=torch.float64))
    wide = torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64))
    assert est.sfda_shrinkage(tight, 5.0) == pytest.approx(math.exp(-0.05))
    assert est.sfda_shrinkage(wide, 5.0) == pytest.approx(math.exp(-20.0))
    assert est.sfda_shrinkage(wide * 100, 5.0) == 1e-10  # the floor


def test_sfda_ranks_harder_classes_lower_and_is_undefined_with_one_image_per_class():
    scores = [est.sfda(*gaussian_classes(dims=10, per_class=20, separation=s, seed=6), 5.0)
              for s in (0.3, 0.6, 1.2)]
    assert scores[0] < scores[1] < scores[2] <= 0.0
    assert math.isnan(est.sfda(*gaussian_classes(per_class=1, dims=30), 5.0))


def test_sfda_saturates_when_features_outnumber_images():
    """The paper's lambda is tiny for any within-class spread of order 1, so with more
    features than images S~_W is nearly singular on the images' span and every training
    image, real labels or shuffled, is classified with certainty: SFDA is 0 for both (the
    README says what this does to its tau on the digits)."""
    x, y = gaussian_classes(dims=200)
    assert est.sfda(x, y, 5.0) == pytest.approx(0.0, abs=1e-6)
    assert est.sfda(x, shuffled(y), 5.0) == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------- scoring


def test_weighted_tau_equals_scipy_on_a_hand_case_and_with_ties():
    from scipy.stats import weightedtau

    x, y = [0.9, 0.5, 0.7, 0.1, 0.3], [0.8, 0.6, 0.4, 0.2, 0.5]
    assert ts.weighted_tau(x, y) == pytest.approx(weightedtau(x, y).statistic, abs=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.integers(0, 4, size=7).astype(float), rng.normal(size=7)
        assert ts.weighted_tau(a, b) == pytest.approx(weightedtau(a, b).statistic, abs=1e-12)
    assert ts.weighted_tau([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert ts.weighted_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_bootstrap_interval_is_deterministic_for_a_seed():
    rng = np.random.default_rng(0)
    values = {g: list(rng.normal(size=int(rng.integers(1, 4)))) for g in range(8)}
    first = ts.bootstrap_interval(values, resamples=500, seed=7)
    assert first == ts.bootstrap_interval(values, resamples=500, seed=7)
    assert first != ts.bootstrap_interval(values, resamples=500, seed=8)
    mean, low, high = first
    assert mean == pytest.approx(np.mean([v for vals in values.values() for v in vals]))
    assert low <= mean <= high


def test_regret_is_the_accuracy_lost_at_the_chosen_layer():
    measured = {1: 0.8, 2: 0.9, 3: 0.7}
    assert ts.regret({1: 0.0, 2: 1.0, 3: 0.5}, measured) == 0.0
    assert ts.regret({1: 0.0, 2: 0.1, 3: 0.5}, measured) == pytest.approx(0.2)
    assert ts.regret({1: 1.0, 2: float("nan"), 3: 0.5}, measured) == pytest.approx(0.1)


def synthetic_units(splits=(0, 1, 2, 3), sizes=(1, 5), seeds=(0, 1), seed=0):
    """Units where 'good' ranks layers as AnB does and 'bad' the other way round."""
    rng = np.random.default_rng(seed)
    units = []
    for split in splits:
        for k in sizes:
            for s in seeds:
                anb = {n: float(0.9 - 0.05 * abs(n - 2) + rng.normal(0, 0.005))
                       for n in (1, 2, 3)}
                plus = {n: a + (0.02 if k > 1 else -0.02) for n, a in anb.items()}
                units.append({"id": (split, k, s), "base": 0.6 + 0.05 * k / 5,
                              "AnB": anb, "AnB+": plus,
                              "scores": {"good": dict(anb),
                                         "bad": {n: -a for n, a in anb.items()}}})
    return units


def test_scores_rank_the_estimator_that_follows_the_sweep_first():
    rows = ts.score_estimators(synthetic_units(), resamples=200, seed=0, group="split")
    tau = {(r["estimator"], r["target"]): r["tau"] for r in rows}
    assert tau[("good", "AnB")] == pytest.approx(1.0)
    assert tau[("bad", "AnB")] == pytest.approx(-1.0)
    assert {"always deepest", "always shallowest", "random ranking"} <= {r["estimator"]
                                                                          for r in rows}


def test_fitted_rule_picks_the_informative_estimator_and_fine_tunes_only_when_it_pays():
    units = synthetic_units()
    rule = ts.fit_rule(units, [0, 1], ["good", "bad"])
    assert rule["per_size"]["5"] == {"option": "AnB+", "estimator": "good",
                                     "train_regret": pytest.approx(0.0)}
    assert rule["per_size"]["1"]["option"] == "AnB"
    result = ts.evaluate_rule(rule, units, [2, 3], tolerance=0.01)
    assert result["regret"] == pytest.approx(0.0) and result["agreement"] == 1.0


def _scramble(units, splits, seed=5):
    """Every test accuracy of the units of `splits` permuted within its unit."""
    rng = np.random.default_rng(seed)
    out = []
    for u in units:
        if u["id"][0] in splits:
            values = list(rng.permutation([u["base"], *u["AnB"].values(), *u["AnB+"].values()]))
            u = {**u, "base": values[0], "AnB": dict(zip(u["AnB"], values[1:4], strict=True)),
                 "AnB+": dict(zip(u["AnB+"], values[4:7], strict=True))}
        out.append(u)
    return out


def test_shuffling_held_out_accuracies_does_not_change_the_fitted_rule():
    units = synthetic_units()
    scrambled = _scramble(units, {2, 3})
    assert scrambled != units
    assert ts.fit_rule(scrambled, [0, 1], ["good", "bad"]) == ts.fit_rule(units, [0, 1],
                                                                          ["good", "bad"])
    # in the leave-one-split-out folds, the rule that holds out split h never reads h
    for held in (0, 1, 2, 3):
        before = {tuple(f["held_out"]): f for f in
                  ts.held_out_rule(units, ["good", "bad"], 0.01)["folds"]}
        after = {tuple(f["held_out"]): f for f in
                 ts.held_out_rule(_scramble(units, {held}), ["good", "bad"], 0.01)["folds"]}
        assert after[(held,)]["per_size"] == before[(held,)]["per_size"]
        assert after[(held,)]["fitted_on"] == [s for s in (0, 1, 2, 3) if s != held]


def test_layer_verdicts_freeze_the_copied_prefix_and_retrain_the_rest():
    assert ts.layer_verdicts("AnB", 2, [1, 2, 3]) == {1: "freeze", 2: "freeze", 3: "retrain"}
    assert ts.layer_verdicts("AnB+", 1, [1, 2]) == {1: "fine-tune", 2: "retrain"}
    assert ts.layer_verdicts("base", 0, [1, 2]) == {1: "retrain", 2: "retrain"}


def test_the_draw_is_the_sweeps_training_images():
    """The rows the estimators read are the images `TaskData.subsampled` trains on."""
    from transferlab.data.split import nested_subsample
    from transferlab.features.store import FeatureSplit
    from transferlab.heads.fit import subsample_rows

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=40)
    labels[:3] = [0, 1, 2]
    copies = 2
    index = np.concatenate([np.arange(40)] * (copies + 1))
    copy = np.repeat(np.arange(copies + 1), 40).astype(np.int16)
    train = FeatureSplit(rng.normal(size=(len(index), 4)), labels[index], index, copy)
    rows = subsample_rows(train, 4, 3)
    rows = rows[train.copy[rows] == 0]
    assert list(train.index[rows]) == list(nested_subsample(labels, 4, 3))


def test_the_rule_fits_seed_002s_bar_on_the_decoder_gap():
    """Where the best n is the last layer before the gap exceeds 0.05, the fitted rule
    copies up to there, with a bar between the gaps it saw, and holds on unseen splits."""
    rng = np.random.default_rng(2)
    units = []
    for split in range(6):
        gaps = np.sort([rng.uniform(0, 0.04), *rng.uniform(0, 0.1, size=3)])
        best = int((gaps <= 0.05).sum())  # layers 1..best pass
        anb = {n: 0.9 - 0.03 * abs(n - best) for n in (1, 2, 3, 4)}
        units.append({"id": (split, 5, 0), "base": 0.5, "AnB": anb, "AnB+": {},
                      "scores": {"decoder gap": {n: -g for n, g in zip((1, 2, 3, 4), gaps,
                                                                          strict=True)},
                                 "noise": {n: float(rng.normal()) for n in (1, 2, 3, 4)}}})
    for u in units:
        assert max(u["AnB"].values()) > u["base"]
    rule = ts.fit_rule(units, [0, 1, 2, 3], ["decoder gap", "noise"])
    choice = rule["per_size"]["5"]
    assert choice["estimator"] == "decoder gap" and choice["min_score"] is not None
    assert ts.evaluate_rule(rule, units, [4, 5], 0.0)["regret"] <= 0.03


def test_paired_difference_compares_on_the_same_units():
    diff = ts.paired_difference(synthetic_units(), "good", "bad", target="AnB", resamples=100,
                                seed=0, group="split")
    assert diff["difference"] == pytest.approx(2.0)
    assert diff["low"] == pytest.approx(2.0) and diff["units"] == 16


def test_an_estimator_defined_on_few_units_is_not_ranked_best():
    from transferlab.report.transferability import verdict_text

    def row(name, tau, units):
        return {"estimator": name, "target": "AnB", "tau": tau, "tau_low": tau - 0.05,
                "tau_high": tau + 0.05, "regret": 0.0, "units": units}

    analysis = {"rows": [row("sfda", 0.9, 8), row("knn", 0.5, 59), row("logme", 0.2, 90)],
                "group": "split"}
    text = verdict_text(analysis)
    assert "**knn**" in text and "Not ranked: sfda, defined on 8 of 90 units" in text
    analysis["rows"][0]["units"] = 60
    assert "**sfda**" in verdict_text(analysis)


@pytest.mark.parametrize("dims", [20, 200])
def test_the_stage_scores_with_one_shared_span_equal_each_estimator_alone(dims, tiny_params):
    """layer_scores computes the principal axes once for GBC and SFDA; that changes no
    score (float32 input, as the features store holds it)."""
    from transferlab.transferability.compute import layer_scores

    x, y = gaussian_classes(dims=dims, per_class=30)
    x = x.float()
    cfg = tiny_params.transferability
    shared = layer_scores(x, y, tiny_params, 0)
    assert shared["gbc"] == est.gbc(x, y, cfg.gbc_dims)
    sfda_alone = est.sfda(x, y, cfg.sfda_shrinkage_rate)
    assert shared["sfda"] == sfda_alone or (math.isnan(shared["sfda"])
                                            and math.isnan(sfda_alone))
    assert shared["hscore"] == est.hscore(x, y)
