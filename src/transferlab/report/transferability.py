"""Report section "Which layers to transfer": the estimators of results/transferability.json
and Sharma's probes scored against the sweep, the fitted rule, a plot. No torch.

Used by `report.build.build_report` for one pipeline run (one class split; the interval is
over seeds, the rule held out by seed) and by benchmarks/transferability_study.py over many
random class splits (interval over splits, the rule held out by split).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from transferlab.report.plots import pyplot, save_png
from transferlab.report.summary import read_result, score
from transferlab.report.tables import fmt, markdown_table, write_table
from transferlab.transferability import scoring as ts

# Every per-layer score a unit can hold, in the order the tables list ties and the plot its
# panels: the estimators of `transferlab.transferability.estimators.LAYER_ESTIMATORS` (not
# imported: that module needs torch; a test holds the two lists together), the source
# model's accuracy, and Sharma's probes.
LAYER_SCORES = ("knn", "logme", "hscore", "transrate", "gbc", "sfda", "linear_probe",
                "source accuracy", *ts.THRESHOLD_ESTIMATORS)
BASELINES = ("always deepest", "always shallowest", "random ranking")
HEADLINE = ("knn", "logme", "hscore", "transrate", "gbc")


def units_from_results(variants: list[dict], transfer: dict, diagnostics: dict | None,
                       split) -> list[dict]:
    """One unit per (size k, seed) of the sweep: measured base / AnB / AnB+ (both
    directions of a swapped sweep averaged) and every layer estimator's {n: score}."""
    if "layer_scores" not in transfer:
        return []
    positions = transfer["positions"]
    acc: dict = defaultdict(list)
    for v in variants:
        acc[(v["subsample"], v["seed"], v["treatment"], v["n"])].append(score(v))
    units = []
    for k in transfer["sizes"]:
        for seed in transfer["seeds"]:
            def at(t, n, k=k, seed=seed):
                values = acc.get((k, seed, t, n))
                return None if not values else float(np.mean(values))
            # the layers both scored (features.layers) and measured (sweep.layers)
            ns = sorted(n for n in positions.values() if at("AnB", n) is not None)
            anb = {n: at("AnB", n) for n in ns}
            if at("base", 0) is None or len(ns) < 2:
                continue
            plus = {n: at("AnB+", n) for n in ns}
            unit = {"id": (split, k, seed), "base": at("base", 0), "AnB": anb,
                    "AnB+": {n: a for n, a in plus.items() if a is not None}, "scores": {}}
            if len(unit["AnB+"]) != len(ns):
                unit["AnB+"] = {}
            for name, by_k in transfer["layer_scores"].items():
                per_layer = by_k[str(k)][str(seed)]
                unit["scores"][name] = {positions[la]: _num(v) for la, v in per_layer.items()
                                        if positions[la] in anb}
            if "source_accuracy" in transfer:
                unit["scores"]["source accuracy"] = {
                    positions[la]: v for la, v in transfer["source_accuracy"].items()
                    if positions[la] in anb}
            if diagnostics is not None:
                summary = diagnostics["summary"]
                # lower gap / spread = keeps more of the new classes: negate to rank
                unit["scores"]["decoder gap"] = {
                    positions[la]: -summary[la]["decoder_gap"] for la in positions
                    if la in summary and positions[la] in anb}
                unit["scores"]["spread ratio"] = {
                    positions[la]: -summary[la]["spread_unknown"] for la in positions
                    if la in summary and positions[la] in anb}
            unit["network"] = {name: by_k.get(str(k), {}).get(str(seed)) for name, by_k in
                               transfer.get("network_scores", {}).items()}
            units.append(unit)
    return units


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def analyse(units: list[dict], *, resamples: int, seed: int, tolerance: float,
            group: str) -> dict:
    """Estimator table, fitted rule with its held-out evaluation, network scores."""
    rows = ts.score_estimators(units, resamples=resamples, seed=seed, group=group)
    present = sorted({name for u in units for name in u["scores"]})
    rule = ts.held_out_rule(units, present, tolerance) if units else None
    fixed = ts.held_out_rule(units, [], tolerance, fixed=True) if units else None
    network = {}
    for name in sorted({n for u in units for n in u.get("network", {})}):
        values = [u["network"][name] for u in units if u["network"].get(name) is not None]
        network[name] = float(np.mean(values)) if values else None
    per_size = {k: ts.score_estimators([u for u in units if u["id"][1] == k],
                                       resamples=resamples, seed=seed, group=group)
                for k in sorted({u["id"][1] for u in units})}
    comparisons = []
    for target in ts.TARGETS:
        best, _ = best_estimator(rows, target)
        if best is None:
            continue
        scored = [r for r in rows if r["target"] == target and not math.isnan(r["tau"])]
        best = best["estimator"]
        others = [*BASELINES, *(["knn"] if best != "knn" and any(
            r["estimator"] == "knn" for r in scored) else [])]
        comparisons += [ts.paired_difference(units, best, other, target=target,
                                             resamples=resamples, seed=seed, group=group)
                        for other in others]
    return {"rows": rows, "per_size": per_size, "comparisons": comparisons,
            "rule": rule, "fixed_rule": fixed,
            "network_mean": network,
            "units": len(units), "group": group}


def _order(rows: list[dict], target: str) -> list[dict]:
    rank = {name: i for i, name in enumerate((*LAYER_SCORES, *BASELINES))}
    chosen = [r for r in rows if r["target"] == target]
    return sorted(chosen, key=lambda r: (-(r["tau"] if not math.isnan(r["tau"]) else -9),
                                         rank.get(r["estimator"], 99)))


def table_markdown(analysis: dict) -> str:
    """README-style table: tau (interval) and regret for both targets, best first."""
    by = {(r["estimator"], r["target"]): r for r in analysis["rows"]}

    def tau(r: dict | None) -> str | None:
        return None if r is None else \
            f"{fmt(r['tau'])} ({fmt(r['tau_low'])} to {fmt(r['tau_high'])})"

    rows = []
    for r in _order(analysis["rows"], "AnB"):
        b = by.get((r["estimator"], "best"))
        kind = " *(baseline)*" if r["estimator"] in BASELINES else ""
        rows.append([f"{r['estimator']}{kind}", tau(r), r["regret"], tau(b),
                     None if b is None else b["regret"], r["units"]])
    return markdown_table(["estimator", "weighted τ, AnB (95% interval)", "regret, AnB",
                           "weighted τ, best of AnB/AnB+ (95% interval)", "regret, best",
                           "units"], rows)


def size_table_markdown(analysis: dict, target: str = "AnB") -> str:
    """Mean weighted tau per target size (an estimator undefined at a size, such as k-NN
    with one image per class, shows –, and the overall mean leaves that size out)."""
    sizes = list(analysis["per_size"])
    names = [r["estimator"] for r in _order(analysis["rows"], target)]
    cell = {(k, r["estimator"]): r for k, rows in analysis["per_size"].items() for r in rows
            if r["target"] == target}
    return markdown_table(["estimator", *(f"τ at k={k}" for k in sizes)],
                          [[name, *(cell[(k, name)]["tau"] if (k, name) in cell else None
                                    for k in sizes)] for name in names])


def best_estimator(rows: list[dict], target: str) -> tuple[dict | None, list[dict]]:
    """The estimator row of highest mean weighted tau for `target`, and the rows left out
    of that ranking: a mean over a few units where an estimator happens to be defined
    (SFDA only where images outnumber features) is not comparable with one over all."""
    estimators = [r for r in rows if r["target"] == target and not math.isnan(r["tau"])
                  and r["estimator"] not in BASELINES]
    if not estimators:
        return None, []
    most = max(r["units"] for r in estimators)
    ranked = [r for r in estimators if 2 * r["units"] >= most]
    return max(ranked, key=lambda r: r["tau"]), [r for r in estimators if r not in ranked]


def verdict_text(analysis: dict, target: str = "AnB") -> str:
    """Which estimator predicts best and by how much it beats the baselines and k-NN."""
    rows = [r for r in analysis["rows"] if r["target"] == target and not math.isnan(r["tau"])]
    estimators = [r for r in rows if r["estimator"] not in BASELINES]
    baselines = [r for r in rows if r["estimator"] in BASELINES]
    best, unranked = best_estimator(analysis["rows"], target)
    if best is None:
        return "No estimator could be scored."
    text = (f"Best estimator by mean weighted τ ({target}): **{best['estimator']}**, "
            f"τ = {fmt(best['tau'])} ({fmt(best['tau_low'])} to {fmt(best['tau_high'])}).")
    most = max(r["units"] for r in estimators)
    for r in unranked:
        text += (f" Not ranked: {r['estimator']}, defined on {r['units']} of {most} units "
                 f"only (τ = {fmt(r['tau'])} there).")
    if baselines:
        top = max(baselines, key=lambda r: r["tau"])
        text += (f" Best baseline: {top['estimator']}, τ = {fmt(top['tau'])}; difference "
                 f"{fmt(best['tau'] - top['tau'], '+.3f')}"
                 + (" (the intervals overlap)." if best["tau_low"] <= top["tau_high"] else "."))
    paired = [c for c in analysis.get("comparisons", []) if c["target"] == target
              and c["first"] == best["estimator"]]
    if paired:
        text += " Paired on the units where both are defined (interval over the " \
                f"{analysis['group']}s): " + "; ".join(
                    f"minus {c['second']} {fmt(c['difference'])} ({fmt(c['low'])} to "
                    f"{fmt(c['high'])}, {c['units']} units)" for c in paired) + "."
    knn = next((r for r in estimators if r["estimator"] == "knn"), None)
    if knn is not None and best["estimator"] != "knn":
        text += (f" k-NN: τ = {fmt(knn['tau'])} ({fmt(best['tau'] - knn['tau'], '+.3f')} "
                 "behind the best).")
        if best["tau_low"] <= knn["tau_high"]:
            text += " The best does not beat k-NN beyond the interval."
    elif knn is not None:
        text += " No estimator beats k-NN."
    return text


def _picker(choice: dict) -> str:
    if choice["option"] == ts.NO_TRANSFER:
        return "–"
    if choice.get("min_score") is None:
        return f"top layer of {choice['estimator']}"
    # the probes' scores are negated gaps / ratios: state the bar in their own units
    return f"layers up to the first with {choice['estimator']} > {fmt(-choice['min_score'], '.3g')}"


def rule_markdown(rule: dict | None, fixed: dict | None = None) -> str:
    if rule is None:
        return "No units to fit a rule on."
    final = rule["final_rule"]
    table = markdown_table(["target size", "choice", "layers chosen by", "train regret"],
                           [[k, ts.VERDICTS[c["option"]], _picker(c), c["train_regret"]]
                            for k, c in final["per_size"].items()])
    folds = "; ".join(f"fitted on {f['fitted_on']}, held out {f['held_out']}: regret "
                      f"{fmt(f['regret'])}, agreement {fmt(f['agreement'], '.2f')}"
                      for f in rule["folds"])
    return "\n".join([
        "The rule: per target size, transfer the first n layers frozen (AnB), fine-tuned "
        "(AnB+), or not at all (base), with n the layer an estimator ranks first, or (seed "
        "002's form, for the decoder gap and the spread ratio) the last layer before the "
        "first one over a bar; option, estimator and bar are those of least mean regret on "
        "the fitting splits: no threshold is hand-set, and the diagnostics section's verdict "
        "per layer is this rule's. Copied layers are frozen or fine-tuned, the layers above "
        "n retrained.", "",
        table, "",
        f"Held out by {rule['held_out_by']}: mean regret {fmt(rule['held_out_regret'])}, "
        f"agreement (choice within report.tolerance of the best option) "
        f"{fmt(rule['held_out_agreement'], '.2f')}. Folds: {folds or 'none'}.",
        f"Final rule fitted on: {final['fitted_on']}."]
        + ([] if fixed is None else [
            "", f"Baseline without estimators (per size one option and one fixed n, fitted "
            f"on the same folds): held-out regret {fmt(fixed['held_out_regret'])}, agreement "
            f"{fmt(fixed['held_out_agreement'], '.2f')}; fitted on all: " + ", ".join(
                f"k={k} {ts.VERDICTS[c['option']]}"
                + (f" n={c['fixed_n']}" if c.get("fixed_n") else "")
                for k, c in fixed["final_rule"]["per_size"].items()) + "."]))


# ---------------------------------------------------------------------------- Sharma's
# verdicts: the diagnostics section's freeze / fine-tune / retrain per layer is the fitted
# rule's choice (no hand-set threshold), checked on the units it was not fitted on.


def mean_unit(units: list[dict], k: int) -> dict | None:
    """The units at target size k averaged over their seeds (every estimator's score and
    every measured accuracy per layer): the task as a whole at that size."""
    at_k = [u for u in units if u["id"][1] == k]
    if not at_k:
        return None

    def average(dicts: list[dict]) -> dict:
        keys = sorted(set.intersection(*[set(d) for d in dicts])) if dicts else []
        return {n: float(np.mean([d[n] for d in dicts])) for n in keys}

    names = set.intersection(*[set(u["scores"]) for u in at_k])
    plus = [u["AnB+"] for u in at_k]
    return {"id": ("mean over seeds", k, None), "base": float(np.mean([u["base"] for u in at_k])),
            "AnB": average([u["AnB"] for u in at_k]),
            "AnB+": average(plus) if all(plus) else {},
            "scores": {name: average([u["scores"][name] for u in at_k]) for name in names}}


def choice_text(option: str, n: int) -> str:
    if option == ts.NO_TRANSFER:
        return ts.VERDICTS[option]
    return f"{ts.VERDICTS[option]} " + ("layer 1" if n == 1 else f"layers 1-{n}")


def probe_verdicts(rule: dict | None, units: list[dict], k: int,
                   positions: dict[str, int]) -> dict:
    """Verdict per probed layer (freeze, fine-tune or retrain) at k images per class: the
    final rule (fitted on every unit of this run) applied to the seeds' mean unit at k."""
    unit = mean_unit(units, k)
    if rule is None or unit is None:
        return {"k": k, "layers": {}, "note": "no fitted rule: no curve at this size has "
                "both estimator scores and measured accuracies"}
    final = rule["final_rule"]
    choice = final["per_size"].get(str(k))
    if choice is None:
        return {"k": k, "layers": {}, "note": f"the rule was not fitted at {k} images per class"}
    option, n = ts.apply_rule(final, unit)
    verdicts = ts.layer_verdicts(option, n, sorted(positions.values()))
    return {"k": k, "option": option, "n": n, "choice": choice_text(option, n),
            "picked_by": _picker(choice), "choice_rule": choice,
            "fitted_on": final["fitted_on"], "held_out_by": rule["held_out_by"],
            "held_out_regret": rule["held_out_regret"],
            "held_out_agreement": rule["held_out_agreement"],
            "layers": {layer: verdicts[pos] for layer, pos in positions.items()}}


def held_out_rows(rule: dict | None) -> list[dict]:
    """Every unit the rule was evaluated on without having been fitted on it: its choice
    against the best measured option."""
    if rule is None:
        return []
    return [{**row, "fitted_on": fold["fitted_on"]} for fold in rule["folds"]
            for row in fold["per_unit"]]


def held_out_markdown(rows: list[dict]) -> str:
    return markdown_table(
        ["k", "seed", "rule fitted on", "rule's choice", "its accuracy", "best measured",
         "best accuracy", "regret", "agree"],
        [[str(r["id"][1]), str(r["id"][2]), str(r["fitted_on"]),
          choice_text(r["option"], r["n"]), r["accuracy"],
          choice_text(r["best_option"], r["best_n"]), r["best_accuracy"], r["regret"],
          "yes" if r["agree"] else "no"] for r in rows])


def write_plot(units: list[dict], k: int, csv_path: Path, png_path: Path) -> None:
    """Per estimator: its score against measured AnB accuracy, a point per (layer, seed)."""
    plt = pyplot()
    at_k = [u for u in units if u["id"][1] == k]
    names = [n for n in LAYER_SCORES if any(n in u["scores"] for u in at_k)]
    # the points drawn are those of the CSV, rounded as it holds them
    rows = [[u["id"][2], n, name, round(u["scores"][name][n], 6), round(u["AnB"][n], 6)]
            for u in at_k for name in names if name in u["scores"]
            for n in sorted(u["AnB"]) if not math.isnan(u["scores"][name].get(n, math.nan))]
    write_table(csv_path, ["seed", "n", "estimator", "score", "AnB"], rows)
    cols = min(max(len(names), 1), 5)
    nrows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 3.0 * nrows), squeeze=False)
    cmap = plt.get_cmap("viridis")
    layers = sorted({n for u in at_k for n in u["AnB"]})
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names, strict=False):
        for i, n in enumerate(layers):
            pts = [(r[3], r[4]) for r in rows if r[2] == name and r[1] == n]
            if pts:
                ax.scatter(*zip(*pts, strict=True), color=cmap(i / max(len(layers) - 1, 1)),
                           label=f"n={n}", s=18)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("estimator score", fontsize=8)
        ax.set_ylabel("AnB accuracy", fontsize=8)
        ax.grid(alpha=0.3)
    if names:
        axes.flat[0].legend(fontsize=6)
    fig.suptitle(f"Estimator score against measured AnB accuracy, {k} images per class "
                 "(a point per layer and seed; decoder gap and spread ratio negated)", y=1.02)
    save_png(fig, png_path, tight_layout={}, dpi=100, bbox_inches="tight")


def pipeline_section(params, results: Path, plots: Path, variants: list[dict]
                     ) -> tuple[str, dict, dict, dict]:
    """(markdown, details, headline, {analysis, units}) of one pipeline run's estimators
    against its sweep (`variants`: `summary.sweep_variants`)."""
    transfer = read_result(results / "transferability.json")
    diag_path = results / "diagnostics.json"
    diagnostics = read_result(diag_path) if diag_path.exists() else None
    units = units_from_results(variants, transfer, diagnostics, split="this run")
    cfg = params.transferability
    analysis = analyse(units, resamples=cfg.bootstrap, seed=cfg.bootstrap_seed,
                       tolerance=params.report.tolerance, group="seed")
    write_plot(units, params.report.subsample, plots / "estimators.csv",
               plots / "estimators.png")
    md = "\n".join([
        "## Which layers to transfer: estimators against the sweep", "",
        transfer.get("note", "Weighted Kendall τ between each estimator's ranking of the "
                     "layers and the measured one, per (target size, seed), mean with a "
                     "bootstrap interval over seeds; regret: best measured accuracy minus "
                     "that at the layer the estimator ranks first. One class split: see "
                     "docs/transferability.md for the multi-split study."), "",
        table_markdown(analysis), "", "Per target size (AnB):", "",
        size_table_markdown(analysis), "", verdict_text(analysis), "",
        "Whole-network scores (NCE, LEEP: they read the source network's predictions, so "
        "they rank networks, not layers; mean over sizes and seeds): "
        + (", ".join(f"{k} {fmt(v)}" for k, v in analysis["network_mean"].items()) or "–"),
        "", "### Recommendation fitted and held out", "",
        rule_markdown(analysis["rule"], analysis["fixed_rule"]), ""])
    by = {(r["estimator"], r["target"]): r["tau"] for r in analysis["rows"]}
    rule = analysis["rule"] or {}
    headline = {**{f"tau_{name}": plain(by.get((name, "AnB"))) for name in HEADLINE},
                "rule_held_out_regret": plain(rule.get("held_out_regret"))}
    details = {"rows": analysis["rows"], "rule": rule, "fixed_rule": analysis["fixed_rule"],
               "network_mean": analysis["network_mean"],
               "per_size": analysis["per_size"], "comparisons": analysis["comparisons"],
               "units": analysis["units"], "group": "seed"}
    return md, plain(details), headline, {"analysis": analysis, "units": units}


def plain(obj):
    """JSON-ready: NaN -> None (an estimator undefined there), tuples -> lists, keys -> str,
    numpy scalars -> Python numbers."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, np.generic):
        return plain(obj.item())
    return obj
