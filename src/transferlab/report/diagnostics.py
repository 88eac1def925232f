"""Sharma's layer probes in the report: the section "Layer diagnostics", its per-class
tables, the per-layer figure and the t-SNE grid, from results/diagnostics.json alone (no
torch).

The verdict per layer is not made here: it is the rule fitted on the sweep
(`transferlab.transferability.scoring.fit_rule`, whose estimators include the probes'
decoder gap and spread ratio, with any bar on them fitted too), rendered by
`transferlab.report.transferability.probe_verdicts`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from transferlab.config.params import Params
from transferlab.metrics import class_mean
from transferlab.report.plots import pyplot, save_png
from transferlab.report.summary import finite, read_result, size_title
from transferlab.report.tables import fmt, markdown_table, write_table
from transferlab.report.transferability import (
    held_out_markdown,
    held_out_rows,
    probe_verdicts,
)

# The probes' errors span magnitudes (an inversion MSE of 1e-05 at conv1, 0.9 at fc5):
# four significant digits say as much of each, where three decimals would print 0.000.
SPEC = ".4g"
# The per-layer figures of `summary["diagnostics"]`, as diagnostics.csv holds them.
MEASURES = ("decoder_gap", "spread_unknown", "inversion_trained_over_random")


def _class_rows(results: dict, columns: list[dict[str, float]]) -> list[list]:
    known, unknown = results["known_classes"], results["unknown_classes"]
    rows = [[f"{c} (known)", *[col[c] for col in columns]] for c in known]
    rows += [[f"{c} (unknown)", *[col[c] for col in columns]] for c in unknown]
    rows.append(["mean known", *[class_mean(col, known) for col in columns]])
    rows.append(["mean unknown", *[class_mean(col, unknown) for col in columns]])
    return rows


def _decoder_column(results: dict, key: str) -> str:
    """A decoder table's column: the layer, with its decoder's kind when kinds differ."""
    kinds = results.get("decoder_kinds", {})
    name = "input" if key == "input_mlp" else key
    return f"{name} ({kinds[key]})" if len(set(kinds.values())) > 1 else name


def diagnostics_tables_markdown(results: dict, verdicts: dict[str, str] | None = None) -> str:
    """Inversion, decoder and spread tables, and per layer its decoder gap, spread ratio
    and `verdicts` (the fitted rule's, `transferability.probe_verdicts`), as markdown."""
    layers = results["layers"]
    inv = results["inversion"]
    # the input decoded by each kind of decoder the layers use, then the layers
    decoded = [key for key in ("input", "input_mlp") if key in results["decoder"]] + layers
    inv_cols, inv_head = [], []
    for layer in layers:
        inv_cols += [inv["trained"][layer], inv["random"][layer]]
        inv_head += [layer, f"{layer} (random)"]
    parts = [
        "### Gradient inversion error per class and layer",
        "",
        results["measures"]["inversion"] + "; `(random)`: the same probe on a randomly "
        "initialised network of the same shape.",
        "",
        markdown_table(["class", *inv_head], _class_rows(results, inv_cols), SPEC),
        "",
        "### Decoder reconstruction error per class and layer",
        "",
        results["measures"]["decoder"] + ". " + results["measures"]["decoder_gap"] + ".",
        "",
        markdown_table(["class", *[_decoder_column(results, la) for la in decoded]],
                       _class_rows(results, [results["decoder"][la] for la in decoded])
                       + [["decoder train MSE",
                           *[results["decoder_train_mse"][la] for la in decoded]]], SPEC),
        "",
        "### Spread per class and layer",
        "",
        results["measures"]["spread"] + ".",
        "",
        markdown_table(["class", *layers],
                       _class_rows(results, [results["spread"][layer] for layer in layers]),
                       SPEC),
        "",
        "### Per layer",
        "",
    ]
    verdicts = verdicts or {}
    rows = [[results["layer_positions"][layer], layer, results["summary"][layer]["decoder_gap"],
             results["summary"][layer]["spread_unknown"],
             f"**{verdicts[layer]}**" if layer in verdicts else None] for layer in layers]
    parts.append(markdown_table(["n", "layer", "decoder gap", "spread ratio (unknown)",
                                 "verdict of the fitted rule"], rows, SPEC))
    return "\n".join(parts) + "\n"


def draw_tsne_grid(results: dict, path: str | Path) -> None:
    """One t-SNE panel per layer: known classes as circles, unknown as triangles."""
    plt = pyplot()
    layers = results["layers"]
    labels = np.asarray(results["tsne"]["labels"])
    classes = results["known_classes"] + results["unknown_classes"]
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    cols = min(len(layers), 5)
    rows = math.ceil(len(layers) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows + 0.6), squeeze=False)
    for ax in axes.flat[len(layers):]:
        ax.set_visible(False)
    for ax, layer in zip(axes.flat, layers, strict=False):
        xy = np.asarray(results["tsne"]["coords"][layer])
        for i, cls in enumerate(classes):
            is_known = cls in results["known_classes"]
            pts = xy[labels == cls]
            ax.scatter(pts[:, 0], pts[:, 1], s=12, color=cmap(i % cmap.N),
                       marker="o" if is_known else "^", alpha=0.8, linewidths=0,
                       label=f"{cls} ({'known' if is_known else 'unknown'})")
        ax.set_title(layer)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(classes), 10), fontsize=8,
               markerscale=1.8,
               frameon=False)
    fig.suptitle("t-SNE of layer activations: known (o) and unknown (^) classes")
    save_png(fig, path, tight_layout={"rect": (0, 0.08, 1, 0.95)}, dpi=110)


def draw_diagnostics(diag: dict, verdicts: dict, path: Path) -> None:
    """Decoder gap and spread ratio per layer, coloured by the fitted rule's verdict, with
    the rule's bar where it uses one of them."""
    plt = pyplot()
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
    fig.suptitle("Which layers to transfer (Sharma probes of model A)", y=1.03)
    save_png(fig, path, dpi=110, bbox_inches="tight")


def diagnostics_section(params: Params, results: Path, summary: dict, plots: Path,
                        fitted: dict) -> str:
    """Per-layer figures into `summary`, tables, figures and the section's markdown. The
    verdict per layer is the rule fitted on the sweep (`fitted`: the analysis and units of
    `transferability.pipeline_section`), checked on the units each fold of it never saw."""
    path = results / "diagnostics.json"
    diag = read_result(path)
    for layer in diag["layers"]:
        for key, value in diag["summary"][layer].items():
            finite(value, path, f"{key} of layer {layer}")
    # Per-class errors, where Sharma's tables compare (Exp. 2 and 3).
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
    write_table(plots / "diagnostics.csv", ["n", "layer", *MEASURES],
                [[diag["layer_positions"][layer], layer,
                  *[summary["diagnostics"][layer][key] for key in MEASURES]]
                 for layer in diag["layers"]])
    draw_diagnostics(diag, verdicts, plots / "diagnostics.png")
    agree = [r["agree"] for r in rows]
    if "choice" in verdicts:
        about = (f"The verdicts are those of the rule fitted on the sweep (section \"Which "
                 f"layers to transfer\"; no hand-set threshold) at {size_title(k)}: "
                 f"{verdicts['choice']} ({verdicts['picked_by']}), fitted on "
                 f"{verdicts['fitted_on']}. Copied layers are frozen or fine-tuned, the "
                 "layers above them retrained.")
    else:
        about = f"No verdicts: {verdicts['note']}."
    return "\n".join([
        "## Layer diagnostics (Sharma)", "",
        diagnostics_tables_markdown(diag, verdicts["layers"]), "", about, "",
        f"Held out by {rule['held_out_by'] if rule else '–'}: on each unit below the rule "
        f"was fitted without it; its choice agrees with the sweep when it is within "
        f"report.tolerance ({fmt(params.report.tolerance, 'g')}) of the best measured "
        f"option (agree at {sum(agree)} of {len(agree)}):", "",
        held_out_markdown(rows), ""])
