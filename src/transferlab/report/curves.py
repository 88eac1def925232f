"""Training curves in git: the dvclive runs' per-step metrics copied to plots/curves/, and
the sweep's per-epoch curves at the report's layer and target size (sweep.curves), as a
table and a figure (Borthakur & Einhorn's full training curves)."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from transferlab.config.params import Params
from transferlab.models.treatments import TREATMENTS
from transferlab.report.plots import COLOURS, pyplot, save_png
from transferlab.report.summary import metric_label, score, size_title
from transferlab.report.tables import write_table

# dvclive directories whose per-step curves the report copies into git (plots/curves/).
CURVES = ("pretrain-A", "pretrain-B", "transfer")
# The sweep's curves: a test-score and a train-loss column per treatment, against the
# optimiser step (and the epoch).
SWEEP_CURVES = "sweep.tsv"


def _read_tsv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


# The columns of a pretraining curve, written with no rows for a model not trained here.
PRETRAIN_COLUMNS = ("test_loss", "test_score", "train_accuracy", "train_loss")


def copy_curves(live: Path, out: Path, untrained: frozenset[str] = frozenset()) -> list[Path]:
    """One TSV per dvclive run of CURVES: a row per logged step, a column per metric.

    dvclive writes one file per metric (`plots/metrics/<name>.tsv`: timestamp, step,
    value); the copy drops the timestamps (so a rerun that logs the same numbers
    leaves the git-tracked file unchanged) and names the test metric `test_score`
    (accuracy, or mAP for a multi-label target) so one plot fits both. A run of
    `untrained` (arch pretrained's model A, loaded, not trained; a model no stage reads) has
    no curve: its file holds the columns and no row.
    """
    written = []
    for name in CURVES:
        if name in untrained:
            write_table(out / f"{name}.tsv", ["step", *PRETRAIN_COLUMNS], [])
            written.append(out / f"{name}.tsv")
            continue
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
        # the values stay dvclive's text: the copy holds the very numbers it logged
        write_table(path, ["step", *columns],
                    ([step, *[values.get(c, "") for c in columns]]
                     for step, values in sorted(by_step.items())))
        written.append(path)
    return written


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
        cells = [step, epoch]
        for t in TREATMENTS:
            point = curves.get(t, {}).get(step) or {}
            cells += [point.get("test_score"), point.get("train_loss")]
        return cells

    write_table(path, ["step", "epoch", *columns], (row(step) for step in steps))


def draw_sweep_curves(params: Params, curves: dict, summary: dict, path: Path) -> None:
    """Test score and train loss against the epoch (the step where an epoch is not
    known), a line per treatment, at the report's layer and target size."""
    plt = pyplot()
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
    fig.suptitle(f"Sweep training curves at {size_title(k)}, n = {layer}" + (
        "\n(final scores only: the sweep ran with sweep.curves: false)" if only_final
        else ""), y=1.08 if only_final else 1.03)
    save_png(fig, path, dpi=110, bbox_inches="tight")
