"""The report stage's one call: every metric, table and plot from the results files, without
retraining anything. Each part is written by the module of its concern:

- `summary`: the sweep over seeds, the details and headline JSON, summary.md's first part
- `plots`: the sweep's figures and their CSV files
- `curves`: dvclive's training curves and the sweep's, in git
- `transferability`: the estimators against the sweep and the fitted rule
- `diagnostics`: Sharma's layer probes, with the fitted rule's verdict per layer
- `paper`: the preset paper's numbers beside ours
- `findings`: Yosinski's findings, each checked against the sweep (report.findings)
- `ranking`: candidate source networks ranked by the estimators against fine-tuning
- `tables`: the one markdown and CSV table writer and number format they share
"""

from __future__ import annotations

from pathlib import Path

from transferlab.config.params import Params
from transferlab.io import write_text_atomic
from transferlab.report.curves import (
    CURVES,
    SWEEP_CURVES,
    copy_curves,
    draw_sweep_curves,
    sweep_curves,
    write_sweep_curves,
)
from transferlab.report.diagnostics import diagnostics_section
from transferlab.report.findings import findings_section
from transferlab.report.paper import paper_details, paper_markdown, paper_rows
from transferlab.report.plots import (
    draw_iterations,
    draw_lowshot,
    draw_plots,
    write_iterations,
    write_plot_data,
)
from transferlab.report.ranking import ranking_details, ranking_markdown
from transferlab.report.summary import (
    build_summary,
    headline,
    metric_label,
    summary_markdown,
    sweep_variants,
    write_json,
)
from transferlab.report.transferability import pipeline_section

# plots/<name>.csv and plots/<name>.png, each pair drawn from the same numbers
PLOT_PAIRS = ("transferability", "size_curve", "heads", "iterations", "diagnostics",
              "estimators")


def report_outputs(summary: Path, details: Path, plots_dir: Path) -> list[Path]:
    """Every file build_report writes (dvc.yaml declares the same list as outs)."""
    return [summary, details, summary.with_suffix(".md"),
            plots_dir / "diagnostics_tsne.png", plots_dir / "lowshot.png",
            plots_dir / "sweep_curves.png", plots_dir / "curves" / SWEEP_CURVES,
            *(plots_dir / f"{name}.{ext}" for name in PLOT_PAIRS for ext in ("csv", "png")),
            *(plots_dir / "curves" / f"{name}.tsv" for name in CURVES)]


def build_report(params: Params, *, results: Path, summary_out: Path, plots_dir: Path,
                 details_out: Path | None = None, live: Path | None = None) -> dict:
    """Write the headline metrics (`summary_out`), every number (`details_out`, by default
    details.json beside it), summary.md, the plots and, given the dvclive root `live`, the
    training curves under plots_dir/curves. Returns the details.

    Every score is checked finite before anything is written; the JSON files come last,
    so a failed report leaves no metrics that look complete."""
    variants = sweep_variants(params, results)
    summary, sweep = build_summary(params, results, variants)
    write_plot_data(params, sweep, summary, plots_dir)
    write_iterations(summary, plots_dir)
    if live is not None:
        copy_curves(live, plots_dir / "curves", frozenset(
            f"pretrain-{s}" for s, v in summary["pretrain"].items()
            if "pretrained" in v or "not_trained" in v))
    draw_plots(params, sweep, summary, plots_dir)
    curves = sweep_curves(variants, params.report.subsample, params.report.layer)
    write_sweep_curves(curves, plots_dir / "curves" / SWEEP_CURVES)
    draw_sweep_curves(params, curves, summary, plots_dir / "sweep_curves.png")
    draw_iterations(summary, plots_dir)
    draw_lowshot(summary, plots_dir)
    estimators_md, summary["transferability"], estimators_headline, fitted = pipeline_section(
        params, results, plots_dir, variants)
    # the diagnostics' verdicts are those of the rule the estimators section fitted
    diagnostics_md = diagnostics_section(params, results, summary, plots_dir, fitted)
    rows = paper_rows(params.paper, summary)
    paper = paper_details(params.paper, rows)
    if paper is not None:
        summary["paper"] = paper
    paper_md = paper_markdown(params.paper, rows)
    ranking = ranking_details(results)
    ranking_md = []
    if ranking is not None:  # none without candidates: the default run's files stay as they were
        summary["ranking"] = ranking
        ranking_md = ranking_markdown(ranking)
    findings_md = []
    if params.report.findings:  # off by default: the default run's outputs stay as they were
        summary["findings"], findings_md = findings_section(sweep, metric_label(summary))
    text = (summary_markdown(summary, sweep, params) + "\n" + diagnostics_md + "\n"
            + estimators_md + ("\n" + "\n".join(paper_md) if paper_md else "")
            + ("\n" + "\n".join(findings_md) if findings_md else "")
            + ("\n" + "\n".join(ranking_md) if ranking_md else ""))
    write_json(details_out or summary_out.with_name("details.json"), summary)
    write_json(summary_out, {**headline(params, summary, sweep),
                             "transferability": estimators_headline})
    write_text_atomic(summary_out.with_suffix(".md"), text)
    print(text)
    return summary
