"""Seed 002's probes in the report: per-class tables and the t-SNE grid of saved results.

The verdict per layer is not made here: it is the rule fitted on the sweep
(`transferlab.transferability.scoring.fit_rule`, whose estimators include the probes'
decoder gap and spread ratio, with any bar on them fitted too), rendered by
`transferlab.report.transferability.probe_verdicts`. Works on the results JSON alone: no
torch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from transferlab.metrics import class_mean

# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------

def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


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
    and `verdicts` (the fitted rule's, `transferability_report.probe_verdicts`), as
    markdown."""
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
        _table(["class", *inv_head], _class_rows(results, inv_cols)),
        "",
        "### Decoder reconstruction error per class and layer",
        "",
        results["measures"]["decoder"] + ". " + results["measures"]["decoder_gap"] + ".",
        "",
        _table(["class", *[_decoder_column(results, la) for la in decoded]],
               _class_rows(results, [results["decoder"][la] for la in decoded])
               + [["decoder train MSE",
                   *[results["decoder_train_mse"][la] for la in decoded]]]),
        "",
        "### Spread per class and layer",
        "",
        results["measures"]["spread"] + ".",
        "",
        _table(["class", *layers],
               _class_rows(results, [results["spread"][layer] for layer in layers])),
        "",
        "### Per layer",
        "",
    ]
    verdicts = verdicts or {}
    rows = [[results["layer_positions"][layer], layer, results["summary"][layer]["decoder_gap"],
             results["summary"][layer]["spread_unknown"],
             f"**{verdicts[layer]}**" if layer in verdicts else "–"] for layer in layers]
    parts.append(_table(["n", "layer", "decoder gap", "spread ratio (unknown)",
                         "verdict of the fitted rule"], rows))
    return "\n".join(parts) + "\n"


def draw_tsne_grid(results: dict, path: str | Path) -> None:
    """One t-SNE panel per layer: known classes as circles, unknown as triangles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from transferlab.report.figures import save_png

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
    plt.close(fig)
