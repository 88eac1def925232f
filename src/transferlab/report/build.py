"""Tables and plots from the results files; reruns without retraining anything."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

from transferlab.config.params import Params
from transferlab.io import atomic_path, json_text, write_text_atomic
from transferlab.metrics import AP_DEFINITIONS, mean_std
from transferlab.models.treatments import TREATMENTS

TRANSFER_TREATMENTS = [name for name, t in TREATMENTS.items() if t.copies_layers]
METRIC_LABEL = {"accuracy": "accuracy", "map": "mAP"}


def metric_label(summary: dict) -> str:
    """"accuracy", or "mAP (voc12)": an mAP always names its AP definition (heads.ap)."""
    label = METRIC_LABEL[summary["metric"]]
    definition = summary.get("ap_definition")
    return f"{label} ({definition})" if summary["metric"] == "map" and definition else label
COLOURS = {"base": "black", "AnB": "tab:blue", "AnB+": "tab:cyan", "BnB": "tab:red",
           "BnB+": "tab:orange", "AnB-2fc": "tab:purple", "AnB-ft": "tab:green"}
# dvclive directories whose per-step curves the report copies into git (plots/curves/).
CURVES = ("pretrain-A", "pretrain-B", "transfer")


def _read_json(path: Path):
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `dvc repro` to produce it")
    return json.loads(path.read_text())


class NonFiniteScore(ValueError):
    """A results file holds NaN or an infinity where the report needs a score."""


def finite(value, path: Path, what: str):
    """`value` if it is a finite number (or None: not measured); else refuse, naming
    the results file and the entry in it."""
    if isinstance(value, float) and not math.isfinite(value):
        raise NonFiniteScore(f"{path}: {what} is {value!r}, not a finite number; "
                             "the run that wrote it went wrong, rerun it")
    return value


def _variant_label(v: dict) -> str:
    direction = f" direction {v['direction']}" if "direction" in v else ""
    return (f"variant {v.get('treatment')} n={v.get('n')} subsample={v.get('subsample')} "
            f"seed={v.get('seed')}{direction}")


def score(result: dict) -> float:
    """Accuracy, or mAP for a multi-label target."""
    return result["test_score"] if "test_score" in result else result["test_accuracy"]


def aggregate_sweep(variants: list[dict]) -> dict:
    """{subsample: {treatment: {n: {mean, std, seeds}}}}; base sits at n = 0.

    With both directions of a swapped study (seed 004), each seed's two
    directions are averaged first; the spread is over seeds.
    """
    per_seed: dict[tuple, list[float]] = defaultdict(list)
    for v in variants:
        per_seed[(v["subsample"], v["treatment"], v["n"], v["seed"])].append(score(v))
    groups: dict[tuple, list[float]] = defaultdict(list)
    for (k, treatment, n, _seed), values in sorted(per_seed.items()):
        groups[(k, treatment, n)].append(sum(values) / len(values))
    table: dict = defaultdict(lambda: defaultdict(dict))
    for (k, treatment, n), accs in sorted(groups.items()):
        table[k][treatment][n] = mean_std(accs)
    return table


def transfer_layers(sweep: dict) -> list[int]:
    """Every n that some transfer treatment was run at, over all sizes."""
    return sorted({n for per_t in sweep.values() for t, by_n in per_t.items() if t != "base"
                   for n in by_n})


def sweep_variants(params: Params, results: Path) -> list[dict]:
    """Every variant result of the seeds in params, each with a finite test score."""
    variants = []
    for seed in params.sweep.seeds:
        path = results / "sweep" / f"seed-{seed}.json"
        for v in _read_json(path)["variants"]:
            finite(score(v), path, f"the test score of {_variant_label(v)}")
            variants.append(v)
    return variants


def build_summary(params: Params, results: Path) -> tuple[dict, dict]:
    variants = sweep_variants(params, results)
    sweep = aggregate_sweep(variants)
    transfer = _read_json(results / "transfer.json")
    finite(score(transfer), results / "transfer.json", "the test score")
    heads = _read_json(results / "heads.json")
    for layer, per in heads.items():
        for head, r in per.items():
            finite(r.get("score", r.get("test_accuracy")), results / "heads.json",
                   f"the score of head {head} on layer {layer}")
    metric = transfer.get("metric", "accuracy")
    pretrain = {s: _read_json(results / "pretrain" / f"{s}.json") for s in ("A", "B")}
    for s, r in pretrain.items():
        path = results / "pretrain" / f"{s}.json"
        finite(score(r), path, f"the test score of model {s}")
        for i, value in enumerate(iteration_scores(r) or []):
            finite(value, path, f"the test score of model {s} at iteration {i + 1}")
    summary = {
        "metric": metric,
        **({"ap_definition": transfer.get("test_ap_definition")} if metric == "map" else {}),
        "pretrain": {s: _pretrain_entry(r) for s, r in pretrain.items()},
        "transfer": {f"test_{metric}": score(transfer), "freeze": transfer["n"],
                     "subsample": transfer["subsample"], "seed": transfer["seed"]},
        "sweep": {
            f"k{k}": {t: (by_n[0] if t == "base" else {f"n{n}": s for n, s in by_n.items()})
                      for t, by_n in per_t.items()}
            for k, per_t in sweep.items()
        },
        "heads": {layer: {h: r.get("score", r.get("test_accuracy")) for h, r in per.items()}
                  for layer, per in heads.items()},
    }
    iterations = sweep_iterations(variants)
    if iterations:
        summary["sweep_iterations"] = iterations
    low = _read_json(results / "heads_lowshot.json")
    for layer, per in (low.get("layers") or {}).items():
        for head, by_k in per.items():
            for k, v in by_k.items():
                for key in ("mean", "std"):
                    finite(v[key], results / "heads_lowshot.json",
                           f"the {key} of head {head} on layer {layer} at k={k}")
    if low.get("layers"):
        summary["lowshot"] = {
            "shots": low["shots"], "draws": low["draws"],
            "layers": {layer: {h: {k: {"mean": v["mean"], "std": v["std"]}
                                   for k, v in by_k.items()} for h, by_k in per.items()}
                       for layer, per in low["layers"].items()}}
    iters = _read_json(results / "heads_iterations.json")
    for row, accs in zip(iters.get("rows", []), iters.get("accuracy", []), strict=False):
        for column, acc in zip(iters.get("columns", []), accs, strict=False):
            finite(acc, results / "heads_iterations.json",
                   f"the accuracy trained on {row}, tested on {column}")
    if "accuracy" in iters:
        summary["iteration_heads"] = {k: iters[k] for k in ("rows", "columns", "accuracy")}
    aux = _read_json(results / "binary_aux.json")
    if aux.get("enabled"):
        for key in ("mean_difference", "sd_difference"):
            finite(aux[key], results / "binary_aux.json", key)
        for r in aux["pairs"]:
            for arm in ("plain", "binary"):
                finite(r[arm]["target_score"], results / "binary_aux.json",
                       f"the {arm} target score of seed {r['seed']}")
        summary["binary_aux"] = {k: aux[k] for k in ("treatment", "n", "subsample", "heads",
                                                    "weight", "mean_difference",
                                                    "sd_difference", "binary_better", "seeds")}
        summary["binary_aux"]["pairs"] = [
            {"seed": r["seed"], "plain": r["plain"]["target_score"],
             "binary": r["binary"]["target_score"]} for r in aux["pairs"]]
        for arm in ("plain", "binary"):  # seed 001 Table 1 prints each arm's mean
            summary["binary_aux"][arm] = mean_std([r[arm]["target_score"]
                                                   for r in aux["pairs"]])
    return summary, sweep


def iteration_scores(result: dict) -> list[float] | None:
    """Each iteration's test score (accuracy, or mAP for a multi-label target) of a
    feedback network's result; None for a network with one prediction."""
    return result.get("test_iteration_accuracy") or result.get("test_iteration_map")


def _pretrain_entry(r: dict) -> dict:
    metric = r.get("metric", "accuracy")
    entry = {f"test_{metric}": score(r)}
    if iteration_scores(r):
        entry[f"iteration_{'map' if 'test_iteration_map' in r else 'accuracy'}"] = \
            iteration_scores(r)
    return entry


def sweep_iterations(variants: list[dict]) -> dict:
    """Seed 000 Fig. 2: per iteration, each treatment's mean target score over seeds and
    its gain over base at the same iteration.

    {f"k{size}": {treatment: {f"n{n}": {"score": [...], "gain_over_base": [...]}}}}; base
    sits at "n0" with no gain. Empty when the variants have a single prediction."""
    per: dict[tuple, list[list[float]]] = defaultdict(list)
    for v in variants:
        scores = iteration_scores(v)
        if scores:
            per[(v["subsample"], v["treatment"], v["n"])].append(scores)
    means = {key: [sum(col) / len(col) for col in zip(*runs, strict=True)]
             for key, runs in per.items()}
    out: dict = defaultdict(lambda: defaultdict(dict))
    for (k, treatment, n), scores in sorted(means.items()):
        base = means.get((k, "base", 0))
        entry = {"score": [round(x, 6) for x in scores]}
        if treatment != "base" and base is not None:
            entry["gain_over_base"] = [round(x - b, 6) for x, b in zip(scores, base,
                                                                        strict=True)]
        out[f"k{k}"][treatment][f"n{n}"] = entry
    return {k: dict(v) for k, v in out.items()}


def diagnostics_report(params: Params, results: Path, summary: dict, plots: Path,
                       fitted: dict) -> str:
    """Seed 002: per-layer figures into `summary`, tables, t-SNE grid; the verdict per layer
    is the rule fitted on the sweep (`fitted`: the analysis and units of
    `estimators_report`), checked on the units each fold of it never saw."""
    from transferlab.report.diagnostics import diagnostics_tables_markdown, draw_tsne_grid
    from transferlab.report.transferability import (
        held_out_markdown,
        held_out_rows,
        probe_verdicts,
    )

    diag = _read_json(results / "diagnostics.json")
    for layer in diag["layers"]:
        for key, value in diag["summary"][layer].items():
            finite(value, results / "diagnostics.json", f"{key} of layer {layer}")
    # Per-class errors, where seed 002's tables compare (Exp. 2 and 3).
    summary["diagnostics_per_class"] = {
        "decoder": {layer: diag["decoder"][layer] for layer in diag["layers"]},
        "inversion_trained": diag["inversion"]["trained"],
        "inversion_random": diag["inversion"]["random"]}
    rule = fitted["analysis"]["rule"]
    k = params.report.subsample
    verdicts = probe_verdicts(rule, fitted["units"], k, diag["layer_positions"])
    summary["diagnostics"] = {
        layer: {**{key: round(v, 6) for key, v in diag["summary"][layer].items()},
                "verdict": verdicts["layers"].get(layer)}
        for layer in diag["layers"]}
    summary["diagnostics_rule"] = {key: v for key, v in verdicts.items() if key != "layers"}
    draw_tsne_grid(diag, plots / "diagnostics_tsne.png")
    rows = held_out_rows(rule)
    summary["diagnostics_vs_sweep"] = {
        f"k={r['id'][1]} seed={r['id'][2]}": {
            "rule": r["option"], "n": r["n"], "best": r["best_option"], "best_n": r["best_n"],
            "regret": round(r["regret"], 6), "fitted_on": r["fitted_on"], "agree": r["agree"]}
        for r in rows}
    _write_csv(plots / "diagnostics.csv", ["n", "layer", "decoder_gap", "spread_unknown",
                                           "inversion_trained_over_random"],
               [[diag["layer_positions"][layer], layer,
                 *[_fmt(summary["diagnostics"][layer][key]) for key in
                   ("decoder_gap", "spread_unknown", "inversion_trained_over_random")]]
                for layer in diag["layers"]])
    draw_diagnostics(diag, verdicts, plots / "diagnostics.png")
    agree = [r["agree"] for r in rows]
    if "choice" in verdicts:
        about = (f"The verdicts are those of the rule fitted on the sweep (section \"Which "
                 f"layers to transfer\"; no hand-set threshold) at {_size_title(k)}: "
                 f"{verdicts['choice']} ({verdicts['picked_by']}), fitted on "
                 f"{verdicts['fitted_on']}. Copied layers are frozen or fine-tuned, the "
                 "layers above them retrained.")
    else:
        about = f"No verdicts: {verdicts['note']}."
    return "\n".join([
        "## Layer diagnostics (seed 002)", "",
        diagnostics_tables_markdown(diag, verdicts["layers"]), "", about, "",
        f"Held out by {rule['held_out_by'] if rule else '–'}: on each unit below the rule "
        f"was fitted without it; its choice agrees with the sweep when it is within "
        f"report.tolerance ({_tolerance(params):g}) of the best measured option (agree at "
        f"{sum(agree)} of {len(agree)}):", "",
        held_out_markdown(rows), ""])


def estimators_report(params: Params, results: Path, summary: dict, plots: Path
                      ) -> tuple[str, dict, dict]:
    """Issue 13: transferability estimators scored against the sweep and the fitted rule
    (`transferlab.report.transferability`); details into `summary`, the headline and the
    {analysis, units} (the diagnostics section's verdicts come from its rule) back."""
    from transferlab.report.transferability import pipeline_section

    markdown, details, head, fitted = pipeline_section(params, results, plots)
    summary["transferability"] = details
    return markdown, head, fitted


def _tolerance(params: Params) -> float:
    """The sweep verdict's tolerance: `report.tolerance` (formerly `diagnostics.tolerance`)."""
    return params.report.tolerance


def draw_diagnostics(diag: dict, verdicts: dict, path: Path) -> None:
    """Decoder gap and spread ratio per layer, coloured by the fitted rule's verdict, with
    the rule's bar where it uses one of them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = diag["layers"]
    colour = {"freeze": "tab:green", "fine-tune": "tab:blue", "retrain": "tab:red"}
    choice = verdicts.get("choice_rule") or {}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, name, label in (
            (axes[0], "decoder_gap", "decoder gap",
             "decoder gap (unknown - known error, less the input's)"),
            (axes[1], "spread_unknown", "spread ratio", "spread ratio of unknown classes")):
        values = [diag["summary"][layer][key] for layer in layers]
        ax.bar(range(len(layers)), values,
               color=[colour.get(verdicts["layers"].get(layer), "tab:gray") for layer in layers])
        if choice.get("estimator") == name and choice.get("min_score") is not None:
            # the rule ranks by the negated figure: its bar is -min_score in the figure's units
            ax.axhline(-choice["min_score"], color="black", ls="--", lw=1,
                       label="fitted bar")
            ax.legend(fontsize=8)
        ax.set_xticks(range(len(layers)), layers, rotation=45 if len(layers) > 6 else 0)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_title("fitted rule: green = freeze, blue = fine-tune, red = retrain",
                      fontsize=9)
    axes[1].set_title(f"at {verdicts['k']} images per class: "
                      + verdicts.get("choice", "no fitted rule"), fontsize=9)
    fig.suptitle("Which layers to transfer (seed 002 probes of model A)", y=1.03)
    _save(fig, path)
    plt.close(fig)


def _write_csv(path: Path, header: list[str], rows) -> None:
    """A table, atomically: comma-separated, or tab-separated with "\n" line ends for a
    .tsv (the layout of dvclive's curves)."""
    tsv = path.suffix == ".tsv"
    with atomic_path(path, suffix=path.suffix) as tmp, open(tmp, "w", newline="") as fh:
        writer = (csv.writer(fh, delimiter="\t", lineterminator="\n") if tsv
                  else csv.writer(fh))
        writer.writerow(header)
        writer.writerows(rows)


def _fmt(x: float | None) -> str | float:
    return "" if x is None else round(x, 6)


def _value(sweep: dict, k: int, treatment: str, n: int) -> float | None:
    stats = sweep.get(k, {}).get(treatment, {}).get(0 if treatment == "base" else n)
    return None if stats is None else stats["mean"]


def write_plot_data(params: Params, sweep: dict, summary: dict, plots: Path) -> None:
    k, layer = params.report.subsample, params.report.layer
    treatments = list(TREATMENTS)
    layers = transfer_layers(sweep)
    _write_csv(plots / "transferability.csv", ["n", *treatments],
               [[n, *[_fmt(_value(sweep, k, t, n) if (t == "base" or n > 0) else
                           _value(sweep, k, "base", 0)) for t in treatments]]
                for n in [0, *layers]])
    _write_csv(plots / "size_curve.csv", ["subsample", *treatments],
               [[size, *[_fmt(_value(sweep, size, t, layer)) for t in treatments]]
                for size in sorted(sweep)])
    names = params.layer_names
    heads = ("svm", "logreg", "random_forest")
    _write_csv(plots / "heads.csv", ["n", "layer", *heads],
               [[names.index(lay) + 1 if lay in names else i + 1, lay,
                 *[_fmt(accs.get(h)) for h in heads]]
                for i, (lay, accs) in enumerate(summary["heads"].items())])


def _size_label(k: int) -> str:
    return "all" if k == 0 else str(k)


def _size_title(k: int) -> str:
    return {0: "all target images", 1: "1 target image per class"}.get(
        k, f"{k} target images per class")


def _save(fig, path: Path) -> None:
    from transferlab.report.figures import save_png

    save_png(fig, path, dpi=110, bbox_inches="tight")


def draw_plots(params: Params, sweep: dict, summary: dict, plots: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(sweep)
    # Transferability: one panel per target size, as Yosinski et al.'s Fig. 2.
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.6), squeeze=False,
                             sharey=True)
    for ax, k in zip(axes[0], sizes, strict=True):
        per_t = sweep[k]
        if "base" in per_t:
            b = per_t["base"][0]
            ax.axhspan(b["mean"] - b["std"], b["mean"] + b["std"], color="grey", alpha=0.2)
            ax.axhline(b["mean"], color=COLOURS["base"], ls="--", lw=1, label="base")
        for t in TRANSFER_TREATMENTS:
            if t not in per_t:
                continue
            ns = sorted(per_t[t])
            ax.errorbar(ns, [per_t[t][n]["mean"] for n in ns],
                        yerr=[per_t[t][n]["std"] for n in ns], marker="o", capsize=3,
                        color=COLOURS[t], label=t)
        ax.set_title(_size_title(k))
        ax.set_xlabel("n: layers copied from the pretrained network")
        ax.set_xticks(range(0, len(params.layer_names) + 1))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"target test {metric_label(summary)} "
                          "(mean ± sd over seeds)")
    axes[0][-1].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"Transferability: {params.dataset}, {params.arch}", y=1.03)
    _save(fig, plots / "transferability.png")
    plt.close(fig)

    # Size curves: one panel per transfer treatment, a line per n, base for reference.
    present = [t for t in TRANSFER_TREATMENTS if any(t in sweep[k] for k in sizes)]
    fig, axes = plt.subplots(1, max(len(present), 1), figsize=(4.2 * max(len(present), 1), 3.6),
                             squeeze=False, sharey=True)
    cmap = plt.get_cmap("viridis")
    x_of = {k: i for i, k in enumerate(sizes)}
    for ax, t in zip(axes[0], present, strict=False):
        base = [(x_of[k], sweep[k]["base"][0]["mean"]) for k in sizes if "base" in sweep[k]]
        if base:
            ax.plot(*zip(*base, strict=True), "k--", marker="s", label="base")
        ns = sorted({n for k in sizes for n in sweep[k].get(t, {})})
        for i, n in enumerate(ns):
            pts = [(x_of[k], sweep[k][t][n]) for k in sizes if n in sweep[k].get(t, {})]
            ax.errorbar([p[0] for p in pts], [p[1]["mean"] for p in pts],
                        yerr=[p[1]["std"] for p in pts], marker="o", capsize=2,
                        color=cmap(i / max(len(ns) - 1, 1)), label=f"n={n}")
        ax.set_xticks(range(len(sizes)), [_size_label(k) for k in sizes])
        ax.set_title(t)
        ax.set_xlabel("target training images per class")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"target test {metric_label(summary)}")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Accuracy against target size", y=1.03)
    _save(fig, plots / "size_curve.png")
    plt.close(fig)

    # Heads per layer of model A.
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    layers = list(summary["heads"])
    for head, marker in (("svm", "o"), ("logreg", "s"), ("random_forest", "^")):
        if all(head in summary["heads"][lay] for lay in layers):
            ax.plot(layers, [summary["heads"][lay][head] for lay in layers], marker=marker,
                    label=head)
    ax.set_xlabel("layer of model A (features L2-normalised)")
    ax.set_ylabel("target test accuracy")
    ax.set_title(f"Heads on frozen features, {params.subsample} images per class")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, plots / "heads.png")
    plt.close(fig)


def summary_markdown(summary: dict, sweep: dict, params: Params) -> str:
    metric = summary["metric"]
    label = metric_label(summary)
    lines = []
    if summary.get("ap_definition"):
        lines += [f"mAP here is the mean over labels of the {summary['ap_definition']} AP: "
                  f"{AP_DEFINITIONS[summary['ap_definition']]} (params heads.ap).", ""]
    lines += [f"| pretrained model | test {label} |", "|---|---|"]
    lines += [f"| {s} | {next(iter(v.values())):.3f} |" for s, v in summary["pretrain"].items()]
    t = summary["transfer"]
    lines += ["", f"Transfer experiment ({params.treatment}, n = {t['freeze']}, "
              f"{t['subsample']} images per class, seed {t['seed']}): "
              f"test {label} {t[f'test_{metric}']:.3f}", ""]
    layers = transfer_layers(sweep)
    for k in sorted(sweep):
        columns = [0, *layers]
        lines += [f"Sweep, {_size_title(k)} (test {label}, mean ± sd over seeds):", "",
                  "| treatment | " + " | ".join(f"n={n}" for n in columns) + " |",
                  "|---|" + "---|" * len(columns)]
        for tr in sorted(sweep[k], key=list(TREATMENTS).index):
            by_n = sweep[k][tr]
            cells = [f"{by_n[n]['mean']:.3f} ± {by_n[n]['std']:.3f}" if n in by_n else ""
                     for n in columns]
            lines.append(f"| {tr} | " + " | ".join(cells) + " |")
        lines.append("")
    if "binary_aux" in summary:
        lines += binary_aux_markdown(summary["binary_aux"])
    lines += ["Heads on model A's features:", "", "| layer | svm | logreg | random_forest |",
              "|---|---|---|---|"]
    lines += ["| " + " | ".join([lay, *[f"{a[h]:.3f}" if h in a else "" for h in
                                         ("svm", "logreg", "random_forest")]]) + " |"
              for lay, a in summary["heads"].items()]
    lines += _lowshot_markdown(summary) + _iterations_markdown(summary)
    lines += _sweep_iterations_markdown(summary)
    return "\n".join(lines) + "\n"


def _lowshot_markdown(summary: dict) -> list[str]:
    low = summary.get("lowshot")
    if not low:
        return []
    shots = low["shots"]
    lines = ["", f"Low-shot heads (test {metric_label(summary)}, mean ± sd over "
             f"{low['draws']} draws of k images per class):", "",
             "| layer | head | " + " | ".join(f"k={k}" for k in shots) + " |",
             "|---|---|" + "---|" * len(shots)]
    for layer, per_head in low["layers"].items():
        for head, by_k in per_head.items():
            lines.append(f"| {layer} | {head} | " + " | ".join(
                f"{by_k[str(k)]['mean']:.3f} ± {by_k[str(k)]['std']:.3f}" for k in shots) + " |")
    return lines


def _iterations_markdown(summary: dict) -> list[str]:
    table = summary.get("iteration_heads")
    if not table:
        return []
    lines = ["", "Logistic regression per iteration (rows: trained on; columns: tested on; "
             "seed 000 Fig. 4):", "",
             "| trained on | " + " | ".join(table["columns"]) + " |",
             "|---|" + "---|" * len(table["columns"])]
    lines += [f"| {row} | " + " | ".join(f"{v:.3f}" for v in accs) + " |"
              for row, accs in zip(table["rows"], table["accuracy"], strict=True)]
    return lines


def _sweep_iterations_markdown(summary: dict) -> list[str]:
    table = summary.get("sweep_iterations")
    if not table:
        return []
    label = metric_label(summary)
    count = max(len(e["score"]) for per_t in table.values() for by_n in per_t.values()
                for e in by_n.values())
    lines = ["", f"Sweep per iteration (target test {label}, mean over seeds; gain: minus "
             "base at the same iteration; seed 000 Fig. 2):", "",
             "| size | treatment | n | " + " | ".join(f"iter{i}" for i in range(1, count + 1))
             + " |", "|---|---|---|" + "---|" * count]
    for k, per_t in table.items():
        for t, by_n in per_t.items():
            for n, e in by_n.items():
                cells = [f"{x:.3f}" + (f" ({g:+.3f})" if "gain_over_base" in e else "")
                         for x, g in zip(e["score"], e.get("gain_over_base", e["score"]),
                                         strict=True)]
                lines.append(f"| {k[1:]} | {t} | {n[1:]} | " + " | ".join(cells) + " |")
    return lines


def draw_lowshot(summary: dict, plots: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    low = summary.get("lowshot")
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    if low:
        for layer, per_head in low["layers"].items():
            for head, by_k in per_head.items():
                ks = [int(k) for k in by_k]
                ax.errorbar(ks, [by_k[str(k)]["mean"] for k in ks],
                            yerr=[by_k[str(k)]["std"] for k in ks], marker="o", capsize=2,
                            label=f"{head} on {layer}")
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=6, ncol=2)
    else:
        ax.text(0.5, 0.5, "no low-shot run (see results/heads_lowshot.json)",
                ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("training images per class (k)")
    ax.set_ylabel(f"target test {metric_label(summary)}")
    ax.set_title("Low-shot heads on frozen features")
    ax.grid(alpha=0.3)
    _save(fig, plots / "lowshot.png")
    plt.close(fig)


def iteration_rows(summary: dict) -> list[list]:
    """Test score of each iteration's prediction of models A and B (1 row for ordinary nets)."""
    per = {s: v.get("iteration_accuracy") or v.get("iteration_map")
           or [next(iter(v.values()))] for s, v in summary["pretrain"].items()}
    count = max(len(v) for v in per.values())
    return [[i + 1, *[round(per[s][i], 6) if i < len(per[s]) else "" for s in ("A", "B")]]
            for i in range(count)]


def draw_iterations(summary: dict, plots: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = iteration_rows(summary)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for col, (s, name) in enumerate((("A", "model A (source classes)"),
                                     ("B", "model B (target classes)")), start=1):
        points = [(r[0], r[col]) for r in rows if r[col] != ""]
        metric = next(iter(summary["pretrain"][s]))[len("test_"):]
        ax.plot(*zip(*points, strict=True), marker="o", label=f"{name}, {METRIC_LABEL[metric]}")
    for k, per_t in summary.get("sweep_iterations", {}).items():
        for t, by_n in per_t.items():
            for n, entry in by_n.items():
                ax.plot(range(1, len(entry["score"]) + 1), entry["score"], ls="--",
                        marker=".", color=COLOURS.get(t), label=f"sweep {t} {n} {k}")
    ax.set_xticks([r[0] for r in rows])
    ax.set_xlabel("iteration (feedback networks predict after every one)")
    ax.set_ylabel("test score (metric in the legend)")
    ax.set_title("Early prediction: test score per iteration")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, plots / "iterations.png")
    plt.close(fig)


def binary_aux_markdown(aux: dict) -> list[str]:
    lines = [f"Binary auxiliary heads (seed 001): {aux['heads']} head(s), weight "
             f"{aux['weight']}, {aux['treatment']} at n = {aux['n']}, {aux['subsample']} "
             "target images per class, paired by seed:", "",
             "| seed | plain A | binary A | difference |", "|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['plain']:.3f} | {r['binary']:.3f} | "
              f"{r['binary'] - r['plain']:+.3f} |" for r in aux["pairs"]]
    lines += ["", f"Mean difference {aux['mean_difference']:+.3f} ± {aux['sd_difference']:.3f}"
              f" (sd over seeds); binary better in {aux['binary_better']} of {aux['seeds']}.",
              ""]
    return lines


def _ours_at(details: dict, path: tuple[str, ...] | None) -> float | None:
    """The number at `path` in the details (a sweep cell's mean), or None when absent."""
    if path is None:
        return None
    node = details
    for part in path:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    if isinstance(node, dict):
        node = node.get("mean")
    return node if isinstance(node, int | float) and not isinstance(node, bool) else None


def in_unit(score: float, unit: str) -> float:
    """Our score (accuracy or mAP as a fraction) in the unit the paper prints; a raw
    measure stays as it is."""
    if unit == "raw":
        return score
    value = 1.0 - score if unit.startswith("error") else score
    return 100.0 * value if unit.endswith("%") else value


def paper_rows(paper, details: dict) -> list[dict]:
    """Each published number beside ours (same unit) and the difference ours - paper."""
    rows = []
    for number in paper.numbers:
        ours = _ours_at(details, number["ours"])
        ours = None if ours is None else round(in_unit(ours, number["unit"]), 6)
        value = number["value"]
        rows.append({"what": number["what"], "source": number["source"],
                     "unit": number["unit"], "paper": value, "ours": ours,
                     "ours_from": None if number["ours"] is None else
                     ".".join(number["ours"]),
                     "difference": None if ours is None or value is None
                     or number["unit"] == "raw" else round(ours - value, 6)})
    return rows


def paper_markdown(paper, rows: list[dict]) -> list[str]:
    study, reproduces, note = paper.study, paper.reproduces, paper.note  # read every key
    if study is None and not rows:
        return []
    lines = [f"## The paper's numbers beside ours: {study or 'unnamed study'}", "",
             f"Reproduces: {reproduces or 'not stated'}.", ""]
    if note:
        lines += [note, ""]
    if not rows:
        return lines + ["The paper prints no number for this figure (figures only); "
                        "compare the plots by eye.", ""]
    lines += ["| what | source | unit | paper | ours | ours - paper |", "|---|---|---|---|---|---|"]
    for r in rows:
        places = 2 if r["unit"].endswith("%") else 3
        paper_cell = "figure only" if r["paper"] is None else f"{r['paper']:g}"
        ours_cell = "not run" if r["ours"] is None else f"{r['ours']:.4g}" \
            if r["unit"] == "raw" else f"{r['ours']:.{places}f}"
        diff = "" if r["difference"] is None else f"{r['difference']:+.{places}f}"
        lines.append(f"| {r['what']} | {r['source']} | {r['unit']} | {paper_cell} | "
                     f"{ours_cell} | {diff} |")
    return lines + ["", "\"not run\": this run has no result at that place "
                    "(ours_from in metrics/details.json names it).", ""]


def headline(params: Params, summary: dict, sweep: dict) -> dict:
    """The few numbers `dvc exp show` and `dvc metrics diff` show by default.

    Everything else (every size, treatment and n, every head, low-shot, diagnostics)
    is in the details file (`metrics/details.json`).
    """
    metric = summary["metric"]
    k, n = params.report.subsample, params.report.layer
    at = {"subsample": k, "n": n}
    for t in ("base", "AnB", "AnB+", "BnB", "BnB+"):
        at[t] = _value(sweep, k, t, n)
    best = max(((h, layer, s) for layer, per in summary["heads"].items()
                for h, s in per.items() if s is not None), key=lambda x: x[2], default=None)
    head = {} if best is None else {"head": best[0], "layer": best[1], "score": best[2]}
    compared = [r["agree"] for r in summary.get("diagnostics_vs_sweep", {}).values()
                if r["agree"] is not None]
    out = {
        "metric": metric,
        **({"ap_definition": summary["ap_definition"]} if "ap_definition" in summary else {}),
        "pretrain": {s: {key: value for key, value in v.items() if key.startswith("test_")}
                     for s, v in summary["pretrain"].items()},
        "transfer": summary["transfer"],
        "sweep_at_report": at,
        "best_head": head,
        "diagnostics": {"agree": sum(compared), "compared": len(compared)},
    }
    if "binary_aux" in summary:
        out["binary_aux"] = {key: summary["binary_aux"][key]
                             for key in ("mean_difference", "binary_better", "seeds")}
    return out


def _read_tsv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def copy_curves(live: Path, out: Path) -> list[Path]:
    """One TSV per dvclive run of CURVES: a row per logged step, a column per metric.

    dvclive writes one file per metric (`plots/metrics/<name>.tsv`: timestamp, step,
    value); the copy drops the timestamps (so a rerun that logs the same numbers
    leaves the git-tracked file unchanged) and names the test metric `test_score`
    (accuracy, or mAP for a multi-label target) so one plot fits both.
    """
    written = []
    for name in CURVES:
        metrics_dir = live / name / "plots" / "metrics"
        files = sorted(metrics_dir.glob("*.tsv"))
        if not files:
            raise FileNotFoundError(f"{metrics_dir} has no dvclive curves; run `dvc repro` "
                                    "to produce them")
        columns, by_step = [], defaultdict(dict)
        for f in files:
            metric = f.stem
            column = "test_score" if metric in ("test_accuracy", "test_map") else metric
            columns.append(column)
            for row in _read_tsv(f):
                if metric not in row or "step" not in row:
                    raise ValueError(f"{f}: expected dvclive columns step and {metric}")
                by_step[int(row["step"])][column] = row[metric]
        columns.sort()
        path = out / f"{name}.tsv"
        _write_csv(path, ["step", *columns],
                   ([step, *[values.get(c, "") for c in columns]]
                    for step, values in sorted(by_step.items())))
        written.append(path)
    return written


# The sweep's per-epoch curves (sweep.curves): a test-score and a train-loss column per
# treatment, against the optimiser step (and the epoch).
SWEEP_CURVES = "sweep.tsv"


def _curve_points(v: dict) -> list[dict]:
    """A variant's curve or, stored without one (sweep.curves off), its final point."""
    if v.get("curve"):
        return v["curve"]
    if "steps" not in v or "final_train_loss" not in v:
        return []
    return [{"step": v["steps"], "epoch": None, "test_score": score(v),
             "train_loss": v["final_train_loss"]}]


def sweep_curves(variants: list[dict], k: int, layer: int) -> dict[str, dict[int, dict]]:
    """{treatment: {step: {"epoch", "test_score", "train_loss"}}}: the curves of the
    variants at target size `k` and n = `layer` (base at n = 0), each point the mean over
    seeds (and over both directions of a swapped study). A variant stored without a
    curve gives its final point only (epoch None: its results do not say)."""
    points: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for v in variants:
        wanted = 0 if v["treatment"] == "base" else layer
        if v["subsample"] != k or v["n"] != wanted:
            continue
        for p in _curve_points(v):
            points[(v["treatment"], p["step"])].append(p)
    curves: dict[str, dict[int, dict]] = defaultdict(dict)
    for (treatment, step), ps in sorted(points.items()):
        curves[treatment][step] = {
            "epoch": next((p["epoch"] for p in ps if p["epoch"] is not None), None),
            **{key: sum(p[key] for p in ps) / len(ps) for key in ("test_score", "train_loss")}}
    return {t: curves[t] for t in TREATMENTS if t in curves}


def write_sweep_curves(curves: dict, path: Path) -> None:
    """One row per step: its epoch (empty for final points of curve-less variants), then
    `<treatment>` test score and `<treatment>_loss` train loss columns for every
    treatment (empty where it has no point)."""
    steps = sorted({step for by_step in curves.values() for step in by_step})
    columns = [c for t in TREATMENTS for c in (t, f"{t}_loss")]

    def row(step):
        found = [by_step[step] for by_step in curves.values() if step in by_step]
        epoch = next((p["epoch"] for p in found if p["epoch"] is not None), None)
        cells = [step, "" if epoch is None else epoch]
        for t in TREATMENTS:
            point = curves.get(t, {}).get(step)
            cells += ["", ""] if point is None else [_fmt(point["test_score"]),
                                                     _fmt(point["train_loss"])]
        return cells

    _write_csv(path, ["step", "epoch", *columns], (row(step) for step in steps))


def draw_sweep_curves(params: Params, curves: dict, summary: dict, path: Path) -> None:
    """Test score and train loss against the epoch (the step where an epoch is not
    known), a line per treatment, at the report's layer and target size (seed 001's
    full training curves)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, layer = params.report.subsample, params.report.layer
    by_epoch = all(p["epoch"] is not None for by_step in curves.values()
                   for p in by_step.values())
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    fig.subplots_adjust(wspace=0.3)
    for t, by_step in curves.items():
        steps = sorted(by_step)
        xs = [by_step[s]["epoch"] if by_epoch else s for s in steps]
        label = "base" if t == "base" else f"{t} n={layer}"
        for ax, key in zip(axes, ("test_score", "train_loss"), strict=True):
            ax.plot(xs, [by_step[s][key] for s in steps], marker="o" if len(steps) == 1
                    else "." if len(steps) < 40 else None, color=COLOURS.get(t), label=label)
    if curves:
        axes[0].legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel(f"target test {metric_label(summary)} (mean over seeds)")
    axes[1].set_ylabel("training loss (mean over seeds)")
    for ax in axes:
        ax.set_xlabel("epoch of the target training data" if by_epoch else "optimiser step")
        ax.grid(alpha=0.3)
    only_final = not any(len(by_step) > 1 for by_step in curves.values())
    fig.suptitle(f"Sweep training curves at {_size_title(k)}, n = {layer}" + (
        "\n(final scores only: the sweep ran with sweep.curves: false)" if only_final
        else ""), y=1.08 if only_final else 1.03)
    _save(fig, path)
    plt.close(fig)


def write_json(path: Path, data) -> None:
    """Sorted, indented JSON; NaN or an infinity is an error, never a bare `NaN`."""
    write_text_atomic(path, json_text(data, allow_nan=False))


def report_outputs(summary: Path, details: Path, plots_dir: Path) -> list[Path]:
    """Every file build_report writes (dvc.yaml declares the same list as outs)."""
    tables = ("transferability", "size_curve", "heads", "iterations", "diagnostics",
              "estimators")
    return [summary, details, summary.with_suffix(".md"),
            plots_dir / "diagnostics_tsne.png", plots_dir / "lowshot.png",
            plots_dir / "sweep_curves.png", plots_dir / "curves" / SWEEP_CURVES,
            *(plots_dir / f"{name}.{ext}" for name in tables for ext in ("csv", "png")),
            *(plots_dir / "curves" / f"{name}.tsv" for name in CURVES)]


def build_report(params: Params, *, results: Path, summary_out: Path, plots_dir: Path,
                 details_out: Path | None = None, live: Path | None = None) -> dict:
    """Write the headline metrics (`summary_out`), every number (`details_out`, by default
    details.json beside it), summary.md, the plots and, given the dvclive root `live`, the
    training curves under plots_dir/curves. Returns the details."""
    from transferlab.report.figures import drawing

    with drawing():  # the figures are drawn in parallel with the rest
        return _build_report(params, results=results, summary_out=summary_out,
                             plots_dir=plots_dir, details_out=details_out, live=live)


def _build_report(params: Params, *, results: Path, summary_out: Path, plots_dir: Path,
                  details_out: Path | None, live: Path | None) -> dict:
    summary, sweep = build_summary(params, results)
    write_plot_data(params, sweep, summary, plots_dir)
    _write_csv(plots_dir / "iterations.csv", ["iteration", "A", "B"], iteration_rows(summary))
    if live is not None:
        copy_curves(live, plots_dir / "curves")
    draw_plots(params, sweep, summary, plots_dir)
    curves = sweep_curves(sweep_variants(params, results), params.report.subsample,
                          params.report.layer)
    write_sweep_curves(curves, plots_dir / "curves" / SWEEP_CURVES)
    draw_sweep_curves(params, curves, summary, plots_dir / "sweep_curves.png")
    draw_iterations(summary, plots_dir)
    draw_lowshot(summary, plots_dir)
    estimators_md, estimators_headline, fitted = estimators_report(params, results, summary,
                                                                    plots_dir)
    diagnostics_md = diagnostics_report(params, results, summary, plots_dir, fitted)
    rows = paper_rows(params.paper, summary)
    if rows or params.paper.study is not None:
        summary["paper"] = {"study": params.paper.study,
                            "reproduces": params.paper.reproduces, "numbers": rows}
    paper_md = paper_markdown(params.paper, rows)
    text = (summary_markdown(summary, sweep, params) + "\n" + diagnostics_md + "\n"
            + estimators_md + ("\n" + "\n".join(paper_md) if paper_md else ""))
    write_json(details_out or summary_out.with_name("details.json"), summary)
    write_json(summary_out, {**headline(params, summary, sweep),
                             "transferability": estimators_headline})
    write_text_atomic(summary_out.with_suffix(".md"), text)
    print(text)
    return summary
