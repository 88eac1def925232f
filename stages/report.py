"""Stage report: metrics/summary.json and the plots, from all results."""

import time

STARTED = time.time()

from pathlib import Path  # noqa: E402

from transferlab.params import load_params  # noqa: E402
from transferlab.stage import run_stage  # noqa: E402

SUMMARY = Path("metrics/summary.json")
PLOTS = Path("plots")


def main() -> None:
    params = load_params()
    from transferlab.report import build_report

    build_report(params, results=Path("results"), summary_out=SUMMARY, plots_dir=PLOTS)


if __name__ == "__main__":
    outputs = [SUMMARY, SUMMARY.with_suffix(".md"), PLOTS / "diagnostics_tsne.png",
               PLOTS / "lowshot.png"] + [
        PLOTS / f"{name}.{ext}"
        for name in ("transferability", "size_curve", "heads", "iterations", "diagnostics")
        for ext in ("csv", "png")]
    run_stage("report", main, outputs, STARTED)
