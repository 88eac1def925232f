"""The report's section on ranking candidate source networks (results/ranking.json, stage
rank_sources): per candidate its measured accuracy and each estimator's score at its last
and at its best layer, and per estimator the weighted tau of its ranking against the
measured one. With no candidates the report has no such section, so the default run's
summary.md and details.json stay as they were."""

from __future__ import annotations

from pathlib import Path

from transferlab.io import read_json
from transferlab.report.tables import fmt, markdown_table

HOW = {"FT": "every layer copied and fine-tuned", "LP": "every layer copied and frozen",
       "LP-FT": "the head first, then every layer fine-tuned"}


def ranking_details(results: Path) -> dict | None:
    """The numbers behind the section, or None when there is nothing to rank (no
    candidates; a results folder from before the stage existed)."""
    path = Path(results) / "ranking.json"
    if not path.exists():
        return None
    data = read_json(path, "the candidate ranking", required=("candidates", "requested"),
                     hint="run `dvc repro rank_sources` to rebuild it")
    if not data["requested"]:
        return None
    if not data["candidates"]:
        return {"note": data.get("note", "nothing ranked")}
    keep = ("label", "name", "weights", "sha256", "url", "hash", "last", "best")
    return {
        "candidates": [{**{k: c[k] for k in keep if k in c},
                        "accuracy": c.get("finetune", {}).get("test_accuracy"),
                        "image_size": c["input"]["size"]} for c in data["candidates"]],
        **{k: data[k] for k in ("estimators", "finetune", "treatment", "subsample",
                                "train_images", "test_images", "tau", "order")},
        "steps": next((c["finetune"]["steps"] for c in data["candidates"]
                       if "finetune" in c), None),
    }


def _score(cell: dict | float | None, *, layer: bool) -> str:
    if not layer:
        return fmt(cell, ".4g")
    return f"{fmt(cell['score'], '.4g')} ({cell['layer']})" if cell["layer"] else fmt(None)


def ranking_markdown(details: dict) -> list[str]:
    lines = ["## Ranking candidate source networks", ""]
    if "note" in details:
        return [*lines, f"Nothing ranked: {details['note']}.", ""]
    cands, ests = details["candidates"], details["estimators"]
    per_class = (f"at most {details['subsample']} per class" if details["subsample"]
                 else "all of them")
    treatment = details["treatment"]
    measured = (f"{treatment} ({HOW[treatment]}), transfer's budget of {details['steps']} "
                f"steps on the same images, then the accuracy on the target's "
                f"{details['test_images']} test images" if treatment
                else "none (ranking.finetune: none): no τ")
    lines += [f"{len(cands)} candidates, each scored on its features of the target's "
              f"{details['train_images']} training images ({per_class}), as its weights "
              "take them (RGB at the size in the table, their mean and std). Each "
              "estimator's score at the candidate's last layer (the new head's input) and "
              "at its best layer (named). Measured: " + measured + ".", ""]
    header = ["candidate", "image size", "measured accuracy",
              *(f"{e} last" for e in ests), *(f"{e} best (layer)" for e in ests)]
    rows = [[c["label"], c["image_size"], c["accuracy"],
             *(_score(c["last"][e], layer=False) for e in ests),
             *(_score(c["best"][e], layer=True) for e in ests)] for c in cands]
    lines += [markdown_table(header, rows), ""]
    if not treatment:
        return lines
    order = details["order"]
    lines += ["Weighted Kendall τ (scipy.stats.weightedtau's definition, as LogME's "
              "protocol: swapping the top candidates costs most) between each estimator's "
              "ranking and the measured one (" + " > ".join(order["measured"]) + "):", "",
              markdown_table(["estimator", "τ, last layer", "τ, best layer",
                              "ranking by last layer", "ranking by best layer"],
                             [[e, details["tau"][e]["last"], details["tau"][e]["best"],
                               " > ".join(order[e]["last"]), " > ".join(order[e]["best"])]
                              for e in ests]), ""]
    return lines
