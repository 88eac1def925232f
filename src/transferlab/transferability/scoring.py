"""Scoring transferability estimators against the measured sweep, and a fitted
freeze / fine-tune / retrain rule evaluated on class splits it never saw. Numpy only.

A *unit* is one measured transfer curve: (split, target size k, seed). For each
unit the sweep gives the accuracy of every option: base (n = 0), AnB at n, AnB+ at n;
the estimators give one score per layer n (higher = predicted better).

- `weighted_tau`: Vigna's weighted Kendall tau with hyperbolic additive weights,
  averaged over the rankings by either variable (what `scipy.stats.weightedtau` computes
  by default), so swapping the top layers costs more than swapping the bottom ones.
- `bootstrap_interval`: percentile interval of a mean, resampling whole groups
  (seeds, or splits in a multi-split study) with a seeded generator.
- `regret`: best measured accuracy minus the accuracy at the layer the score picks.
- `fit_rule` / `apply_rule`: per target size, which estimator picks n, and whether to
  freeze (AnB), fine-tune (AnB+) or not transfer (base); fitted by least mean regret on
  the training splits' accuracies only.
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

FREEZE, FINE_TUNE, NO_TRANSFER = "AnB", "AnB+", "base"
OPTIONS = (FREEZE, FINE_TUNE, NO_TRANSFER)
VERDICTS = {FREEZE: "freeze", FINE_TUNE: "fine-tune", NO_TRANSFER: "don't transfer"}
TARGETS = ("AnB", "best")  # rank layers by AnB at n, or by the better of AnB / AnB+ at n
# Sharma's probes have a meaning of their own (a reconstruction gap, a spread ratio), so
# the rule may also use them as Sharma did, with a bar (fitted here, not hand-set)
THRESHOLD_ESTIMATORS = ("decoder gap", "spread ratio")


# ---------------------------------------------------------------------------- tau


def _lexrank(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rank 0 for the largest a (ties broken by the larger b)."""
    order = np.lexsort((-b, -a))
    rank = np.empty(len(a), np.int64)
    rank[order] = np.arange(len(a))
    return rank


def _tau_with_rank(x: np.ndarray, y: np.ndarray, rank: np.ndarray) -> float:
    w = 1.0 / (rank + 1.0)
    i, j = np.triu_indices(len(x), 1)
    weight = w[i] + w[j]
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    num = float((weight * sx * sy).sum())
    den = math.sqrt(float((weight * sx * sx).sum()) * float((weight * sy * sy).sum()))
    return num / den if den > 0 else float("nan")


def weighted_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Weighted Kendall tau of two score vectors (NaN when either is constant)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) != len(y):
        raise ValueError(f"weighted_tau: {len(x)} against {len(y)} values")
    if len(x) < 2:
        return float("nan")
    return (_tau_with_rank(x, y, _lexrank(x, y)) + _tau_with_rank(x, y, _lexrank(y, x))) / 2


# ---------------------------------------------------------------------------- bootstrap


def bootstrap_interval(values_by_group: dict, *, resamples: int, seed: int,
                       level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the mean over all values, groups resampled with replacement.

    `values_by_group` maps a group (a seed, a split) to its list of values; NaNs are
    left out. The same seed gives the same interval."""
    groups = [np.asarray([v for v in vals if not math.isnan(v)], np.float64)
              for _, vals in sorted(values_by_group.items(), key=lambda kv: str(kv[0]))]
    groups = [g for g in groups if len(g)]
    if not groups:
        return (float("nan"),) * 3
    mean = float(np.concatenate(groups).mean())
    rng = np.random.default_rng(seed)
    sums = np.array([g.sum() for g in groups])
    counts = np.array([len(g) for g in groups])
    picks = rng.integers(0, len(groups), size=(resamples, len(groups)))
    means = sums[picks].sum(1) / counts[picks].sum(1)
    tail = (1 - level) / 2
    return mean, float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


# ---------------------------------------------------------------------------- units


def measured_by_layer(unit: dict, target: str) -> dict[int, float]:
    """{n: accuracy} of AnB (target "AnB") or of the better of AnB and AnB+ ("best")."""
    anb, plus = unit["AnB"], unit.get("AnB+", {})
    if target == "AnB":
        return dict(anb)
    return {n: max(acc, plus.get(n, acc)) for n, acc in anb.items()}


def regret(scores: dict[int, float], measured: dict[int, float]) -> float:
    """Best measured accuracy minus the accuracy at the highest-scoring n (NaN scores
    rank last; ties go to the shallower layer)."""
    layers = sorted(measured)
    valid = [n for n in layers if n in scores and not math.isnan(scores[n])]
    if not valid:
        return float("nan")
    chosen = max(valid, key=lambda n: (scores[n], -n))
    return max(measured.values()) - measured[chosen]


def baseline_scores(unit: dict, seed: int) -> dict[str, dict[int, float]]:
    """Rankings that need no estimator: deepest first, shallowest first, random."""
    layers = sorted(unit["AnB"])
    # crc32, not hash(): str hashes change between processes
    rng = np.random.default_rng([seed, zlib.crc32(repr(tuple(unit["id"])).encode())])
    return {"always deepest": {n: float(n) for n in layers},
            "always shallowest": {n: float(-n) for n in layers},
            "random ranking": dict(zip(layers, rng.permutation(len(layers)).astype(float),
                                       strict=True))}


def score_estimators(units: list[dict], *, resamples: int, seed: int, group: str) -> list[dict]:
    """One row per (estimator, target): mean weighted tau with its bootstrap interval over
    `group` ("seed" or "split"), mean regret, units scored.

    Each unit carries `id` (split, k, seed), the measured `AnB` / `AnB+` {n: accuracy}
    and `scores` {estimator: {n: value}}; baselines are added here."""
    taus: dict = defaultdict(lambda: defaultdict(list))
    regrets: dict = defaultdict(list)
    for unit in units:
        split, k, s = unit["id"]
        key = {"seed": s, "split": split}[group]
        all_scores = {**unit["scores"], **baseline_scores(unit, seed)}
        for target in TARGETS:
            measured = measured_by_layer(unit, target)
            layers = sorted(measured)
            for name, scores in all_scores.items():
                if not all(n in scores for n in layers):
                    continue
                tau = weighted_tau([scores[n] for n in layers], [measured[n] for n in layers])
                taus[(name, target)][key].append(tau)
                regrets[(name, target)].append(regret(scores, measured))
    rows = []
    for (name, target), by_group in taus.items():
        mean, lo, hi = bootstrap_interval(by_group, resamples=resamples, seed=seed)
        reg = [r for r in regrets[(name, target)] if not math.isnan(r)]
        rows.append({"estimator": name, "target": target, "tau": mean, "tau_low": lo,
                     "tau_high": hi, "regret": float(np.mean(reg)) if reg else float("nan"),
                     "units": sum(1 for v in by_group.values() for t in v if not math.isnan(t)),
                     "groups": len(by_group)})
    return rows


def paired_difference(units: list[dict], first: str, second: str, *, target: str,
                      resamples: int, seed: int, group: str) -> dict:
    """Mean of tau(first) - tau(second) over the units where both are defined, with the
    bootstrap interval over `group`: the comparison the two separate intervals blur."""
    diffs: dict = defaultdict(list)
    for unit in units:
        split, _k, s = unit["id"]
        scores = {**unit["scores"], **baseline_scores(unit, seed)}
        if first not in scores or second not in scores:
            continue
        measured = measured_by_layer(unit, target)
        layers = sorted(measured)
        if not all(n in scores[first] and n in scores[second] for n in layers):
            continue
        y = [measured[n] for n in layers]
        a = weighted_tau([scores[first][n] for n in layers], y)
        b = weighted_tau([scores[second][n] for n in layers], y)
        if not (math.isnan(a) or math.isnan(b)):
            diffs[{"seed": s, "split": split}[group]].append(a - b)
    mean, low, high = bootstrap_interval(diffs, resamples=resamples, seed=seed)
    return {"first": first, "second": second, "target": target, "difference": mean,
            "low": low, "high": high, "units": sum(len(v) for v in diffs.values())}


# ---------------------------------------------------------------------------- the rule


def option_accuracy(unit: dict, option: str, n: int) -> float:
    if option == NO_TRANSFER:
        return unit["base"]
    return unit[option][n]


def best_accuracy(unit: dict) -> float:
    return max([unit["base"], *unit["AnB"].values(), *unit.get("AnB+", {}).values()])


def _pick_layer(scores: dict[int, float], layers: list[int]) -> int | None:
    valid = [n for n in layers if n in scores and not math.isnan(scores[n])]
    return max(valid, key=lambda n: (scores[n], -n)) if valid else None


def apply_rule(rule: dict, unit: dict) -> tuple[str, int]:
    """(option, n) the rule chooses for a unit, from the unit's estimator scores only."""
    k = unit["id"][1]
    choice = rule["per_size"].get(str(k))
    if choice is None:
        raise KeyError(f"the rule was not fitted at target size {k}")
    if choice["option"] == NO_TRANSFER:
        return NO_TRANSFER, 0
    scores = unit["scores"].get(choice["estimator"], {})
    if choice.get("fixed_n") is not None:  # the no-estimator baseline: one n for all
        n = choice["fixed_n"] if choice["fixed_n"] in unit["AnB"] else 0
    elif choice.get("min_score") is None:
        n = _pick_layer(scores, sorted(unit["AnB"]))
    else:  # Sharma's form: copy the layers up to the first that scores below the bar
        n = 0
        for m in sorted(unit["AnB"]):
            if m not in scores or math.isnan(scores[m]) or scores[m] < choice["min_score"]:
                break
            n = m
    if not n:
        return NO_TRANSFER, 0
    return choice["option"], n


def _candidates(at_k: list[dict], estimators: Sequence[str], fixed: bool = False
                ) -> list[dict]:
    """Every choice the rule may make at one size: no transfer; or an option with n picked
    by an estimator's top layer; or, for Sharma's probes, the layers up to the first one
    whose score falls below a bar (every value seen in the fitting units is tried)."""
    out = [{"option": NO_TRANSFER, "estimator": None}]
    measured = [FREEZE] + ([FINE_TUNE] if all(u.get(FINE_TUNE) for u in at_k) else [])
    for option in measured:
        if fixed:
            layers = sorted(set.intersection(*[set(u["AnB"]) for u in at_k]))
            out += [{"option": option, "estimator": None, "fixed_n": m} for m in layers]
        for name in estimators:
            out.append({"option": option, "estimator": name})
            if name in THRESHOLD_ESTIMATORS:
                bars = sorted({v for u in at_k for v in u["scores"].get(name, {}).values()
                               if not math.isnan(v)})
                out += [{"option": option, "estimator": name, "min_score": bar}
                        for bar in bars]
    return out


def fit_rule(units: list[dict], train_splits: Sequence, estimators: Sequence[str],
             fixed: bool = False) -> dict:
    """Per target size, the choice (`_candidates`) with the least mean regret over the
    units of `train_splits`; only those units' accuracies are read. With `fixed`, one
    n for every unit is a candidate too (with no estimators: the baseline that knows the
    fitting splits' curves but nothing about the new task)."""
    train = [u for u in units if u["id"][0] in set(train_splits)]
    per_size = {}
    for k in sorted({u["id"][1] for u in train}):
        at_k = [u for u in train if u["id"][1] == k]
        best = None
        for choice in _candidates(at_k, estimators, fixed):
            rule = {"per_size": {str(k): choice}}
            losses = []
            for u in at_k:
                opt, n = apply_rule(rule, u)
                losses.append(best_accuracy(u) - option_accuracy(u, opt, n))
            key = (float(np.mean(losses)), OPTIONS.index(choice["option"]),
                   str(choice["estimator"]), choice.get("min_score", -math.inf),
                   choice.get("fixed_n", -1))
            if best is None or key < best[0]:
                best = (key, choice)
        per_size[str(k)] = {**best[1], "train_regret": best[0][0]}
    return {"per_size": per_size, "fitted_on": sorted(set(train_splits), key=str)}


def best_option(unit: dict) -> tuple[str, int]:
    """(option, n) of the best measured accuracy (ties: no transfer, then freeze, then the
    shallower n)."""
    options = [(NO_TRANSFER, 0)] + [(o, n) for o in (FREEZE, FINE_TUNE)
                                    for n in sorted(unit.get(o) or {})]
    preference = {NO_TRANSFER: 2, FREEZE: 1, FINE_TUNE: 0}
    return max(options, key=lambda c: (option_accuracy(unit, *c), preference[c[0]], -c[1]))


def evaluate_rule(rule: dict, units: list[dict], splits: Sequence, tolerance: float) -> dict:
    """Mean regret of the rule on the units of `splits`, and agreement: the share of units
    where its choice is within `tolerance` of the best measured option; `per_unit`: what
    it chose on each unit against the best."""
    chosen = [u for u in units if u["id"][0] in set(splits)]
    regrets, per_unit = [], []
    for u in chosen:
        opt, n = apply_rule(rule, u)
        best = best_option(u)
        loss = best_accuracy(u) - option_accuracy(u, opt, n)
        regrets.append(loss)
        per_unit.append({"id": list(u["id"]), "option": opt, "n": n,
                         "accuracy": option_accuracy(u, opt, n), "best_option": best[0],
                         "best_n": best[1], "best_accuracy": best_accuracy(u),
                         "regret": loss, "agree": bool(loss <= tolerance)})
    if not regrets:
        return {"units": 0, "regret": None, "agreement": None, "per_unit": []}
    return {"units": len(regrets), "regret": float(np.mean(regrets)),
            "agreement": float(np.mean([r <= tolerance for r in regrets])),
            "per_unit": per_unit}


def layer_verdicts(option: str, n: int, layers: Sequence[int]) -> dict[int, str]:
    """Per layer: copied layers frozen or fine-tuned, the others retrained."""
    if option == NO_TRANSFER:
        return {m: "retrain" for m in layers}
    return {m: (VERDICTS[option] if m <= n else "retrain") for m in layers}


def held_out_rule(units: list[dict], estimators: Sequence[str], tolerance: float,
                  fixed: bool = False) -> dict:
    """Fit on some splits, evaluate on the others: leave one split out when there are
    several splits; with one split, leave one seed out (same classes: weaker evidence,
    and said so in `held_out_by`)."""
    splits = sorted({u["id"][0] for u in units}, key=str)
    if len(splits) > 1:
        folds = [([s for s in splits if s != held], [held]) for held in splits]
        by, relabel = "split", None
    else:
        seeds = sorted({u["id"][2] for u in units})
        # relabel units so that the seed is the unit of holding out
        relabel = [{**u, "id": (u["id"][2], u["id"][1], u["id"][2])} for u in units]
        folds = [([s for s in seeds if s != held], [held]) for held in seeds]
        by = "seed (one class split only)"
    data = relabel or units
    per_fold, regrets, agree, count = [], [], [], 0
    for train, test in folds:
        if not train:
            continue
        rule = fit_rule(data, train, estimators, fixed)
        result = evaluate_rule(rule, data, test, tolerance)
        per_fold.append({"fitted_on": train, "held_out": test, **result,
                         "per_size": rule["per_size"]})
        if result["units"]:
            regrets.append(result["regret"] * result["units"])
            agree.append(result["agreement"] * result["units"])
            count += result["units"]
    final = fit_rule(data, sorted({u["id"][0] for u in data}, key=str), estimators, fixed)
    return {"held_out_by": by, "folds": per_fold,
            "held_out_regret": sum(regrets) / count if count else None,
            "held_out_agreement": sum(agree) / count if count else None,
            "final_rule": final}
