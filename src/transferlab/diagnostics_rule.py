"""Seed 002's rule: from the layer probes' figures to a verdict per layer, and its report.

`recommend` says per layer whether it can be transferred frozen or must be
retrained, from the decoder gap and spread figures the probes measured
(`transferlab.diagnostics_probes`); `compare_with_sweep` checks that verdict
against the transfer sweep's accuracies. The markdown tables and the t-SNE grid
render saved results for the report. Works on the results JSON alone: no torch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from transferlab.params import DiagnosticsParams

FROZEN, RETRAIN = "transfer frozen", "retrain"


def class_mean(per_class: dict[str, float], classes: list[str]) -> float:
    """Mean of a {class: value} figure over `classes`."""
    return float(np.mean([per_class[c] for c in classes]))


# ---------------------------------------------------------------------------
# Recommendation
# ---------------------------------------------------------------------------

def rule_text(cfg: DiagnosticsParams) -> str:
    return (
        f"A layer may be transferred frozen when (a) its decoder gap (unknown classes' mean "
        f"decoder error minus the known classes', less the same difference for a decoder fed "
        f"the input itself) is at most {cfg.max_decoder_gap:g} and (b) the unknown classes' "
        f"mean spread ratio is at most {cfg.max_spread_ratio:g}; otherwise it is retrained. "
        f"The gap is a difference, not a ratio, because early layers reconstruct known classes "
        f"almost perfectly and a ratio of two tiny errors is noise. Once a layer says retrain, "
        f"every later layer does too: a retrained layer changes the input of every layer above "
        f"it, so their weights no longer see the features they were trained on, and a transfer "
        f"copies a prefix of the network (AnB at n copies layers 1..n). Gradient inversion is "
        f"reported, not used: seed 002 found its errors about equal for trained and random "
        f"networks.")


def recommend(results: dict, cfg: DiagnosticsParams) -> dict:
    """Per layer "transfer frozen" or "retrain" from `results["summary"]`; see `rule_text`.

    Needs only `layers`, `unknown_classes`, `spread` and `summary` (its
    `decoder_gap` and `spread_unknown`), so the rule can be re-run with other
    thresholds on saved results.
    """
    per_layer: dict[str, dict] = {}
    blocked_by: str | None = None
    frozen_prefix = 0
    for layer in results["layers"]:
        s = results["summary"][layer]
        reasons = []
        if s["decoder_gap"] > cfg.max_decoder_gap:
            reasons.append(f"decoder gap {s['decoder_gap']:.3g} > {cfg.max_decoder_gap:g}")
        if s["spread_unknown"] > cfg.max_spread_ratio:
            reasons.append(f"spread ratio {s['spread_unknown']:.3g} > {cfg.max_spread_ratio:g}")
        own = RETRAIN if reasons else FROZEN
        if blocked_by is not None:
            verdict = RETRAIN
            reason = f"after {blocked_by}, which is retrained"
            if reasons:
                reason += "; also " + ", ".join(reasons)
        else:
            verdict = own
            reason = ", ".join(reasons) if reasons else "within both thresholds"
            if own == RETRAIN:
                blocked_by = layer
            else:
                frozen_prefix += 1
        spread = results["spread"][layer]
        per_layer[layer] = {
            "verdict": verdict,
            "own_verdict": own,
            "reason": reason,
            "decoder_gap": s["decoder_gap"],
            "spread_ratio": s["spread_unknown"],
            "spread_classes_over": [c for c in results["unknown_classes"]
                                    if spread[c] > cfg.max_spread_ratio],
        }
    return {
        "rule": rule_text(cfg),
        "thresholds": {"max_decoder_gap": cfg.max_decoder_gap,
                       "max_spread_ratio": cfg.max_spread_ratio},
        "layers": per_layer,
        "frozen_layers": frozen_prefix,
    }


# ---------------------------------------------------------------------------
# Comparison with the transfer sweep
# ---------------------------------------------------------------------------

def compare_with_sweep(results: dict, sweep_means: dict, tolerance: float) -> list[dict]:
    """Probe verdict against the sweep, one row per probed layer n (its position).

    `sweep_means` maps (treatment, n) to mean target test accuracy at one target
    size; base sits at ("base", 0). The sweep says a layer needs retraining when
    AnB at n falls more than `tolerance` below AnB+ at n (fine-tuning the copied
    layers helps) or below base (the frozen copy is worse than no transfer);
    otherwise it says "transfer frozen". `agree` compares that with the probe's
    verdict; comparisons whose accuracies are missing are None.
    """
    if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance = {tolerance!r}: must be a finite number >= 0")
    base = sweep_means.get(("base", 0))
    rows = []
    for layer in results["layers"]:
        n = results["layer_positions"][layer]
        anb, anb_plus = sweep_means.get(("AnB", n)), sweep_means.get(("AnB+", n))
        below_plus = None if anb is None or anb_plus is None else anb < anb_plus - tolerance
        below_base = None if anb is None or base is None else anb < base - tolerance
        known_flags = [f for f in (below_plus, below_base) if f is not None]
        if not known_flags:
            sweep_verdict = None
        else:
            sweep_verdict = RETRAIN if any(known_flags) else FROZEN
        probe = results["recommendation"]["layers"][layer]["verdict"]
        rows.append({
            "n": n, "layer": layer, "probe": probe, "AnB": anb, "AnB+": anb_plus, "base": base,
            "AnB_below_AnB+": below_plus, "AnB_below_base": below_base,
            "sweep": sweep_verdict,
            "agree": None if sweep_verdict is None else sweep_verdict == probe,
        })
    return rows


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


def diagnostics_tables_markdown(results: dict) -> str:
    """Inversion, decoder and spread tables plus the recommendation, as markdown."""
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
        "### Recommendation",
        "",
        results["recommendation"]["rule"],
        "",
    ]
    rec = results["recommendation"]["layers"]
    rows = [[results["layer_positions"][layer], layer, rec[layer]["decoder_gap"],
             rec[layer]["spread_ratio"], ", ".join(rec[layer]["spread_classes_over"]) or "–",
             rec[layer]["own_verdict"], f"**{rec[layer]['verdict']}**", rec[layer]["reason"]]
            for layer in layers]
    parts.append(_table(["n", "layer", "decoder gap", "spread ratio (unknown)",
                         "unknown classes over spread threshold", "layer alone", "verdict",
                         "why"], rows))
    return "\n".join(parts) + "\n"


def comparison_markdown(rows: list[dict]) -> str:
    """`compare_with_sweep`'s rows as a markdown table."""
    return _table(["n", "layer", "probe", "AnB", "AnB+", "base", "AnB below AnB+",
                   "AnB below base", "sweep", "agree"],
                  [[r["n"], r["layer"], r["probe"], r["AnB"], r["AnB+"], r["base"],
                    r["AnB_below_AnB+"], r["AnB_below_base"], r["sweep"], r["agree"]]
                   for r in rows]) + "\n"


def draw_tsne_grid(results: dict, path: str | Path) -> None:
    """One t-SNE panel per layer: known classes as circles, unknown as triangles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from transferlab.io import atomic_path

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
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
