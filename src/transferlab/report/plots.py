"""The sweep's figures and the CSV files `dvc plots` draws them from: transferability per
target size (Yosinski's Fig. 2), accuracy against target size, heads per layer, low-shot
heads, and the test score per iteration of a feedback network (Spero's).

Also the helpers every figure of the report uses (`pyplot`, `save_png`, `COLOURS`).
matplotlib is imported when a figure is drawn, not with the module: `transferlab.report`
stays quick to import for what needs only its numbers.
"""

from __future__ import annotations

from pathlib import Path

from transferlab.config.params import Params
from transferlab.io import atomic_path
from transferlab.models.treatments import TREATMENTS
from transferlab.report.summary import (
    HEADS,
    METRIC_LABEL,
    TRANSFER_TREATMENTS,
    metric_label,
    size_title,
    sweep_mean,
    transfer_layers,
)
from transferlab.report.tables import write_table

COLOURS = {"base": "black", "AnB": "tab:blue", "AnB+": "tab:cyan", "BnB": "tab:red",
           "BnB+": "tab:orange", "AnB-2fc": "tab:purple", "AnB-ft": "tab:green",
           "LP": "tab:brown", "FT": "tab:pink", "LP-FT": "tab:olive"}


def pyplot():
    """matplotlib.pyplot on the Agg backend: files only, no display, the same PNG bytes
    for the same figure on every machine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path, *, tight_layout: dict | None = None, **savefig) -> None:
    """`fig.tight_layout(**tight_layout)` when given, `fig.savefig(path, format="png",
    **savefig)` written atomically (a reader sees the old file or the new one), then
    the figure closed."""
    if tight_layout is not None:
        fig.tight_layout(**tight_layout)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", **savefig)
    pyplot().close(fig)


def _save(fig, path: Path) -> None:
    """The layout of the sweep's figures."""
    save_png(fig, path, dpi=110, bbox_inches="tight")


def _size_label(k: int) -> str:
    return "all" if k == 0 else str(k)


def write_plot_data(params: Params, sweep: dict, summary: dict, plots: Path) -> None:
    """transferability.csv (the report's size, a column per treatment, a row per n),
    size_curve.csv (the report's layer, a row per size) and heads.csv."""
    k, layer = params.report.subsample, params.report.layer
    treatments = list(TREATMENTS)
    write_table(plots / "transferability.csv", ["n", *treatments],
                [[n, *[sweep_mean(sweep, k, t, n) if (t == "base" or n > 0) else
                       sweep_mean(sweep, k, "base", 0) for t in treatments]]
                 for n in [0, *transfer_layers(sweep)]])
    write_table(plots / "size_curve.csv", ["subsample", *treatments],
                [[size, *[sweep_mean(sweep, size, t, layer) for t in treatments]]
                 for size in sorted(sweep)])
    names = params.layer_names
    dims = summary.get("heads_dims") or {}
    write_table(plots / "heads.csv", ["n", "layer", "dim", *HEADS],
                [[names.index(lay) + 1 if lay in names else i + 1, lay, dims.get(lay),
                  *[accs.get(h) for h in HEADS]]
                 for i, (lay, accs) in enumerate(summary["heads"].items())])


def iteration_rows(summary: dict) -> list[list]:
    """Test score of each iteration's prediction of models A and B (1 row for ordinary nets)."""
    per = {s: v.get("iteration_accuracy") or v.get("iteration_map")
           or [next(iter(v.values()))] for s, v in summary["pretrain"].items()}
    count = max(len(v) for v in per.values())
    # a model with no score (arch pretrained's model A, not trained here) gives ""
    return [[i + 1, *[round(per[s][i], 6) if i < len(per[s]) and per[s][i] is not None
                      else "" for s in ("A", "B")]]
            for i in range(count)]


def write_iterations(summary: dict, plots: Path) -> None:
    write_table(plots / "iterations.csv", ["iteration", "A", "B"], iteration_rows(summary))


def draw_plots(params: Params, sweep: dict, summary: dict, plots: Path) -> None:
    """transferability.png, size_curve.png and heads.png."""
    plt = pyplot()
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
        ax.set_title(size_title(k))
        ax.set_xlabel("n: layers copied from the pretrained network")
        ax.set_xticks(range(0, len(params.layer_names) + 1))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"target test {metric_label(summary)} "
                          "(mean ± sd over seeds)")
    axes[0][-1].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"Transferability: {params.dataset}, {params.arch}", y=1.03)
    _save(fig, plots / "transferability.png")

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

    # Heads per layer of model A.
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    layers = list(summary["heads"])
    for head, marker in zip(HEADS, ("o", "s", "^"), strict=True):
        if all(head in summary["heads"][lay] for lay in layers):
            ax.plot(layers, [summary["heads"][lay][head] for lay in layers], marker=marker,
                    label=head)
    ax.set_xlabel("layer of model A (features L2-normalised)")
    ax.set_ylabel("target test accuracy")
    ax.set_title(f"Heads on frozen features, {params.subsample} images per class")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, plots / "heads.png")


def draw_lowshot(summary: dict, plots: Path) -> None:
    plt = pyplot()
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


def draw_iterations(summary: dict, plots: Path) -> None:
    plt = pyplot()
    rows = iteration_rows(summary)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for col, (s, name) in enumerate((("A", "model A (source classes)"),
                                     ("B", "model B (target classes)")), start=1):
        points = [(r[0], r[col]) for r in rows if r[col] != ""]
        if not points:
            continue
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
