"""The one way the report writes a table: `markdown_table` for summary.md, `write_table` for
the CSV and TSV files under plots/, and `fmt` for every number printed in text.

A printed number says as much as the table needs (`spec`, 3 decimals unless the caller
asks otherwise); a number in a CSV stays a number, rounded to 6 places, so that dvc plots
and a spreadsheet read it as one.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from transferlab.io import atomic_path

# What a table prints where a number is missing (not measured, or not defined there).
MISSING = "–"


def fmt(value, spec: str = ".3f", *, missing: str = MISSING) -> str:
    """`value` as the report prints it.

    A number in the format `spec` (".3f": three decimals; "+.3f" for a signed
    difference; ".4g" where values span magnitudes); an integer (a count or an index) as
    it is; a mean and sd of `mean_std` as "mean ± sd", both in `spec`; a truth value as
    yes / no; None or NaN as `missing`; text as it is.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):  # a count or an index (seed, k, n): as it is
        return str(value)
    if isinstance(value, float):
        return format(value, spec)
    if isinstance(value, dict) and "mean" in value and "std" in value:
        return f"{fmt(value['mean'], spec, missing=missing)} ± " \
               f"{fmt(value['std'], spec, missing=missing)}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence], spec: str = ".3f",
                   *, missing: str = MISSING) -> str:
    """A GitHub markdown table, without a final newline; a cell that is not text goes
    through `fmt(cell, spec, missing=missing)`."""

    def line(cells: Iterable) -> str:
        return "| " + " | ".join(c if isinstance(c, str) else fmt(c, spec, missing=missing)
                                 for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(r) for r in rows)])


def csv_cell(value):
    """A number as a CSV holds it: a float rounded to 6 places, None as an empty cell."""
    if value is None:
        return ""
    return round(value, 6) if isinstance(value, float) else value


def write_table(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """A table file, atomically: comma-separated, or tab-separated with "\\n" line ends
    for a .tsv (the layout of dvclive's curves); each cell through `csv_cell`."""
    tsv = path.suffix == ".tsv"
    with atomic_path(path, suffix=path.suffix) as tmp, open(tmp, "w", newline="") as fh:
        writer = (csv.writer(fh, delimiter="\t", lineterminator="\n") if tsv
                  else csv.writer(fh))
        writer.writerow(header)
        writer.writerows([csv_cell(c) for c in row] for row in rows)
