"""Stage report: headline and detailed metrics, tables, plots and the training curves
(copied from dvclive into git), from all results; imports no torch."""

import time

STARTED = time.time()

from transferlab.zygote import handoff  # noqa: E402

STARTED = handoff(STARTED)  # the rest may run in a fork of a resident launcher

from pathlib import Path  # noqa: E402

from transferlab.stage import run_stage  # noqa: E402

SUMMARY = Path("metrics/summary.json")
DETAILS = Path("metrics/details.json")
PLOTS = Path("plots")
LIVE = Path("dvclive")


def main(params) -> None:
    from transferlab.report import build_report

    build_report(params, results=Path("results"), summary_out=SUMMARY, details_out=DETAILS,
                 plots_dir=PLOTS, live=LIVE)


if __name__ == "__main__":
    from transferlab.report import CURVES, SWEEP_CURVES

    outputs = [SUMMARY, DETAILS, SUMMARY.with_suffix(".md"), PLOTS / "diagnostics_tsne.png",
               PLOTS / "lowshot.png", PLOTS / "estimators.csv", PLOTS / "estimators.png"] + [
        PLOTS / f"{name}.{ext}"
        for name in ("transferability", "size_curve", "heads", "iterations", "diagnostics")
        for ext in ("csv", "png")] + [PLOTS / "curves" / f"{name}.tsv" for name in CURVES] + [
        PLOTS / "curves" / SWEEP_CURVES, PLOTS / "sweep_curves.png"]
    run_stage("report", main, outputs, STARTED)
