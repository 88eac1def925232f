"""The preset's paper beside this run: each number the paper prints (params `paper.numbers`)
next to ours at the same place of the details, in the paper's unit."""

from __future__ import annotations

from transferlab.report.tables import fmt, markdown_table


def _ours_at(details: dict, path: tuple[str, ...] | None) -> float | None:
    """The number at `path` in the details (a sweep cell's mean), or None when absent."""
    if path is None:
        return None
    node = details
    for part in path:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    if isinstance(node, dict):
        node = node.get("mean")
    return node if isinstance(node, int | float) and not isinstance(node, bool) else None


def in_unit(score: float, unit: str) -> float:
    """Our score (accuracy or mAP as a fraction) in the unit the paper prints; a raw
    measure stays as it is."""
    if unit == "raw":
        return score
    value = 1.0 - score if unit.startswith("error") else score
    return 100.0 * value if unit.endswith("%") else value


def is_range(value) -> bool:
    """A published range ("4-5"), held as [low, high]."""
    return isinstance(value, list | tuple)


def paper_rows(paper, details: dict) -> list[dict]:
    """Each published number beside ours (same unit) and the difference ours - paper;
    none against a figure (null), a range or a raw measure."""
    rows = []
    for number in paper.numbers:
        ours = _ours_at(details, number["ours"])
        ours = None if ours is None else round(in_unit(ours, number["unit"]), 6)
        value = number["value"]
        rows.append({"what": number["what"], "source": number["source"],
                     "unit": number["unit"],
                     "paper": list(value) if is_range(value) else value, "ours": ours,
                     "ours_from": None if number["ours"] is None else
                     ".".join(number["ours"]),
                     "difference": None if ours is None or value is None or is_range(value)
                     or number["unit"] == "raw" else round(ours - value, 6)})
    return rows


def printed(value) -> str:
    """The paper's value as it prints it: a number, a range "4-5", or "figure only"."""
    if is_range(value):
        return "-".join(fmt(v, "g") for v in value)
    return fmt(value, "g", missing="figure only")


def paper_details(paper, rows: list[dict]) -> dict | None:
    """The details' "paper" entry; None when the preset names no paper and no number."""
    if not rows and paper.study is None:
        return None
    return {"study": paper.study, "reproduces": paper.reproduces, "numbers": rows}


def paper_markdown(paper, rows: list[dict]) -> list[str]:
    """The section's lines; none when the preset names no paper and no number."""
    study, reproduces, note = paper.study, paper.reproduces, paper.note  # read every key
    if study is None and not rows:
        return []
    lines = [f"## The paper's numbers beside ours: {study or 'unnamed study'}", "",
             f"Reproduces: {reproduces or 'not stated'}.", ""]
    if note:
        lines += [note, ""]
    if not rows:
        return lines + ["The paper prints no number for this figure (figures only); "
                        "compare the plots by eye.", ""]

    def cells(r: dict) -> list:
        # a percentage to 2 decimals, a fraction to 3, a raw measure to 4 significant digits
        spec = ".4g" if r["unit"] == "raw" else ".2f" if r["unit"].endswith("%") else ".3f"
        return [r["what"], r["source"], r["unit"], printed(r["paper"]),
                fmt(r["ours"], spec, missing="not run"),
                fmt(r["difference"], "+" + spec, missing="")]

    return lines + [markdown_table(["what", "source", "unit", "paper", "ours", "ours - paper"],
                                   [cells(r) for r in rows]),
                    "", "\"not run\": this run has no result at that place "
                    "(ours_from in metrics/details.json names it).", ""]
