"""Stage report: metrics/summary.json and every plot, from the result files alone."""

from pathlib import Path

from transferlab.report.build import build_report, report_outputs
from transferlab.stage import run_stage

SUMMARY = Path("metrics/summary.json")
DETAILS = Path("metrics/details.json")
PLOTS = Path("plots")


def main(params) -> None:
    build_report(params, results=Path("results"), summary_out=SUMMARY, details_out=DETAILS,
                 plots_dir=PLOTS, live=Path("dvclive"))


if __name__ == "__main__":
    run_stage("report", main, report_outputs(SUMMARY, DETAILS, PLOTS))
