"""Hong's take-home table from two runs: similar / different x little / much data.

    python -m transferlab.report.quadrant SIMILAR.json DIFFERENT.json --little 25 --much 500

Each file is a run's metrics/details.json: one on a split whose halves are alike
(random halves), one on a split whose halves differ (man-made / natural), both
with the two target sizes in sweep.subsample. Each cell puts the lecture's advice
beside what the two runs measured for the strategies it names: a linear classifier
on the top layer (the best head on the last feature layer), a linear classifier from
an earlier stage (the best head on any other layer), fine-tuning (AnB+ at the
deepest and at the shallowest n run), training from scratch (base).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transferlab.io import read_json
from transferlab.report.tables import fmt, markdown_table

# The lecture's table (Hong, "Take home messages").
ADVICE = {
    ("similar", "little"): "Use Linear Classifier on top layer",
    ("different", "little"): "You're in trouble... Try linear classifier from different stages",
    ("similar", "much"): "Finetune a few layers",
    ("different", "much"): "Finetune a larger number of layers",
}
LINEAR = ("svm", "logreg")


def _best_head(details: dict, layers: list[str]) -> tuple[str, float] | None:
    scores = [(f"{head} on {layer}", score) for layer in layers
              for head, score in details.get("heads", {}).get(layer, {}).items()
              if head in LINEAR and score is not None]
    return max(scores, key=lambda x: x[1], default=None)


def cell(details: dict, size: int) -> dict:
    """What one run measured at one target size for the strategies of the table."""
    sweep = details["sweep"].get(f"k{size}")
    if sweep is None:
        known = ", ".join(k[1:] for k in details["sweep"])
        raise KeyError(f"no sweep at {size} images per class (this run has: {known})")
    out: dict = {"base": sweep.get("base", {}).get("mean")}
    finetuned = {int(n[1:]): s["mean"] for n, s in sweep.get("AnB+", {}).items()}
    if finetuned:
        out["finetune_few"] = (max(finetuned), finetuned[max(finetuned)])
        out["finetune_many"] = (min(finetuned), finetuned[min(finetuned)])
    layers = list(details.get("heads", {}))
    # Heads run at one size (params subsample); they join the cell of that size only.
    if details.get("transfer", {}).get("subsample") == size and layers:
        out["linear_top"] = _best_head(details, layers[-1:])
        out["linear_earlier"] = _best_head(details, layers[:-1])
    return out


def _score(entry: float | tuple | None) -> str:
    """A strategy's score; with what it was measured on (a head and layer, or n)."""
    if not isinstance(entry, tuple):
        return fmt(entry, missing="not run")
    what, score = entry
    return f"{fmt(score)} ({what if isinstance(what, str) else f'n={what}'})"


def table(similar: dict, different: dict, little: int, much: int) -> str:
    runs = {"similar": similar, "different": different}
    rows = []
    for amount, size in (("little", little), ("much", much)):
        for split in ("similar", "different"):
            c = cell(runs[split], size)
            rows.append([f"{amount} ({size}/class)", split, ADVICE[(split, amount)],
                         *(_score(c.get(key)) for key in ("base", "linear_top", "linear_earlier",
                                                          "finetune_few", "finetune_many"))])
    return markdown_table(["data", "split", "the lecture advises", "base", "linear on top layer",
                           "linear from an earlier stage", "fine-tune few (AnB+, deepest n)",
                           "fine-tune many (AnB+, shallowest n)"], rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("similar", type=Path)
    parser.add_argument("different", type=Path)
    parser.add_argument("--little", type=int, required=True)
    parser.add_argument("--much", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        runs = [read_json(path) for path in (args.similar, args.different)]
        print(table(*runs, args.little, args.much), end="")
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
