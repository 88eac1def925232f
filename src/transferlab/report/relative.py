"""Yosinski et al.'s Fig. 3 (bottom) from several runs: each transfer treatment's target
accuracy relative to base, per n, one row per run and treatment.

    python -m transferlab.report.relative similar.json dissimilar.json [--size 0]

Each file is a run's metrics/details.json (e.g. presets yosinski-2014-cifar100-similar
and yosinski-2014-cifar100-dissimilar). Dividing by base at the same target size is
Yosinski's normalisation: splits whose target tasks differ in difficulty (50 random
classes against 70 natural ones) are compared by how much of base's accuracy each
transfer keeps, not by raw accuracy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transferlab.io import read_json
from transferlab.report.tables import fmt, markdown_table

TREATMENTS = ("AnB", "AnB+", "BnB", "BnB+")


def relative(details: dict, size: int, treatments=TREATMENTS) -> dict[str, dict[int, float]]:
    """{treatment: {n: mean accuracy / base's mean accuracy}} at `size` images per class."""
    sweep = details["sweep"].get(f"k{size}")
    if sweep is None:
        known = ", ".join(k[1:] for k in details["sweep"])
        raise KeyError(f"no sweep at {size} images per class (this run has: {known})")
    base = sweep.get("base", {}).get("mean")
    if not base:
        raise KeyError(f"no base at {size} images per class to divide by")
    return {t: {int(n[1:]): s["mean"] / base for n, s in sweep[t].items()}
            for t in treatments if t in sweep}


def table(runs: dict[str, dict], size: int, treatments=TREATMENTS) -> str:
    """One row per run and treatment, one column per n; each cell treatment / base."""
    ratios = {name: relative(details, size, treatments) for name, details in runs.items()}
    layers = sorted({n for per_t in ratios.values() for by_n in per_t.values() for n in by_n})
    rows = [[name, t, *(fmt(by_n.get(n), missing="") for n in layers)]
            for name, per_t in ratios.items() for t, by_n in per_t.items()]
    return markdown_table(["run", "treatment", *(f"n={n}" for n in layers)], rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="metrics/details.json of each run")
    parser.add_argument("--size", type=int, default=0,
                        help="target images per class (a sweep.subsample; 0 = all)")
    parser.add_argument("--treatments", nargs="+", default=list(TREATMENTS))
    args = parser.parse_args(argv)
    try:
        stems = [path.stem for path in args.runs]
        names = stems if len(set(stems)) == len(stems) else [str(p) for p in args.runs]
        runs = {name: read_json(path) for name, path in zip(names, args.runs, strict=True)}
        print(f"Accuracy relative to base at {args.size or 'all'} target images per class "
              "(Yosinski et al. Fig. 3, bottom):\n")
        print(table(runs, args.size, tuple(args.treatments)), end="")
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
