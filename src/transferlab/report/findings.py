"""Yosinski's findings, each stated, checked against the sweep and reported as holding or
not (report.findings: true; the Fashion-MNIST preset asks for it).

Each finding is a pure function over the sweep aggregated over seeds (`aggregate_sweep`:
{size: {treatment: {n: {mean, std, seeds}}}}, base at n = 0) that returns a `Finding`:
`holds` (True, False, or None where the sweep cannot tell), the numbers it compared and a
one-line reason. An effect counts only when it is larger than the spread over seeds: the
larger sd over seeds of the two means it compares ("the spread"). A finding that does not
reproduce says why when that is derivable: the spread larger than the effect, or the
shape the other way round.

The papers print these as figures only (Yosinski et al.'s Figs. 2 and 3, Soekhoe's
Fig. 6.1): the `paper` column says the shape in words, not a number.
"""

from __future__ import annotations

import dataclasses

from transferlab.report.summary import size_title
from transferlab.report.tables import fmt, markdown_table

# The transfers from A: the treatments whose best is "the best transfer".
TRANSFERS = ("AnB", "AnB+")

PAPER = {
    "bnb_dip": "figure only (Fig. 2): BnB falls at middle n (3..6 of 7, most at 4 and 5) "
               "and recovers at the top",
    "anb_falls": "figure only (Fig. 2): AnB holds at n = 1, 2 and falls at the top layers",
    "anb_plus": "figure only (Fig. 2): AnB+ at or above base at every n",
    "gain_shrinks": "figure only (Soekhoe Fig. 6.1): the gain of transfer over base shrinks "
                    "as the target grows",
}
STATEMENT = {
    "bnb_dip": "BnB dips at middle layers",
    "anb_falls": "AnB falls at the top layers",
    "anb_plus": "AnB+ is at or above base at every n",
    "gain_shrinks": "the transfer gain shrinks as the target grows",
}


@dataclasses.dataclass(frozen=True)
class Finding:
    holds: bool | None
    numbers: dict
    reason: str

    def as_dict(self) -> dict:
        return {"holds": self.holds, "numbers": self.numbers, "reason": self.reason}


def _stat(sweep: dict, k, treatment: str, n: int) -> dict | None:
    return sweep.get(k, {}).get(treatment, {}).get(n)


def _spread(*stats: dict) -> float:
    """The larger sd over seeds of the means compared."""
    return max(s["std"] for s in stats)


def _few_seeds(*stats: dict) -> str:
    return " (one seed: no spread to compare with)" if min(s["seeds"] for s in stats) < 2 \
        else ""


def _curve(sweep: dict, k, treatment: str) -> dict[int, dict]:
    return dict(sorted(sweep.get(k, {}).get(treatment, {}).items()))


def bnb_dip(sweep: dict, k) -> Finding:
    """BnB at some middle n (neither the first nor the last n run) below BnB at both ends
    by more than the spread: the co-adapted layers split in the middle (Fig. 2)."""
    curve = _curve(sweep, k, "BnB")
    if len(curve) < 3:
        return Finding(None, {"BnB": curve}, "BnB needs three or more n (two ends and a "
                       "middle) to show a dip")
    ns = list(curve)
    first, last = ns[0], ns[-1]
    low = min(ns[1:-1], key=lambda n: curve[n]["mean"])
    end = min((first, last), key=lambda n: curve[n]["mean"])
    dip = curve[end]["mean"] - curve[low]["mean"]
    spread = _spread(curve[low], curve[end])
    numbers = {"BnB": curve, "lowest_middle_n": low, "lower_end_n": end, "dip": dip,
               "spread": spread}
    if dip > spread:
        return Finding(True, numbers, f"BnB at n = {low} is {fmt(dip)} below its lower end "
                       f"(n = {end}), more than the spread {fmt(spread)}" + _few_seeds(
                           curve[low], curve[end]))
    if dip > 0:
        why = f"spread over seeds ({fmt(spread)}) larger than the dip ({fmt(dip)})"
    else:
        why = f"no dip: BnB at every middle n is at or above its lower end (n = {end})"
    return Finding(False, numbers, why)


def anb_falls(sweep: dict, k) -> Finding:
    """AnB at the last n below its best n by more than the spread: the top layers'
    features are specific to A (Fig. 2)."""
    curve = _curve(sweep, k, "AnB")
    if len(curve) < 2:
        return Finding(None, {"AnB": curve}, "AnB needs two or more n to show a fall")
    ns = list(curve)
    last = ns[-1]
    peak = max(ns, key=lambda n: curve[n]["mean"])
    fall = curve[peak]["mean"] - curve[last]["mean"]
    spread = _spread(curve[peak], curve[last])
    numbers = {"AnB": curve, "peak_n": peak, "last_n": last, "fall": fall, "spread": spread}
    if peak == last:
        return Finding(False, numbers, f"no fall: AnB is highest at the top n = {last}")
    if fall > spread:
        return Finding(True, numbers, f"AnB at n = {last} is {fmt(fall)} below its peak at "
                       f"n = {peak}, more than the spread {fmt(spread)}" + _few_seeds(
                           curve[peak], curve[last]))
    return Finding(False, numbers, f"spread over seeds ({fmt(spread)}) larger than the fall "
                   f"({fmt(fall)}) from n = {peak} to n = {last}")


def anb_plus_vs_base(sweep: dict, k) -> Finding:
    """AnB+ at every n no further below base than the spread (Fig. 2: fine-tuned transfer
    never hurts, and ends above base)."""
    curve = _curve(sweep, k, "AnB+")
    base = _stat(sweep, k, "base", 0)
    if not curve or base is None:
        return Finding(None, {}, "needs base and AnB+")
    diffs = {n: s["mean"] - base["mean"] for n, s in curve.items()}
    below = [n for n, s in curve.items() if diffs[n] < -_spread(s, base)]
    above = [n for n, s in curve.items() if diffs[n] > _spread(s, base)]
    worst = min(diffs, key=diffs.get)
    numbers = {"base": base, "AnB+": curve, "difference": diffs, "below": below,
               "above": above}
    if below:
        return Finding(False, numbers, f"AnB+ below base by more than the spread at n = "
                       f"{', '.join(map(str, below))} (most at n = {worst}: "
                       f"{fmt(diffs[worst], '+.3f')})")
    return Finding(True, numbers, f"AnB+ within the spread of base or above at every n "
                   f"(smallest difference {fmt(diffs[worst], '+.3f')} at n = {worst}); "
                   f"above by more than the spread at {len(above)} of {len(curve)} n"
                   + _few_seeds(base, *curve.values()))


def _size_order(k) -> tuple:
    return (k == 0, k)  # 0 = all images: the largest target


def transfer_gain(sweep: dict, k) -> dict | None:
    """The best transfer (the best mean of AnB and AnB+ over n) minus base, at size k."""
    base = _stat(sweep, k, "base", 0)
    runs = [(t, n, s) for t in TRANSFERS for n, s in _curve(sweep, k, t).items()]
    if base is None or not runs:
        return None
    t, n, best = max(runs, key=lambda r: r[2]["mean"])
    return {"treatment": t, "n": n, "best": best, "base": base,
            "gain": best["mean"] - base["mean"], "spread": _spread(best, base)}


def gain_shrinks(sweep: dict) -> Finding:
    """The transfer gain (best transfer minus base) falls at each larger target size, and
    from the smallest to the largest by more than the spread (Soekhoe)."""
    gains = {k: g for k in sorted(sweep, key=_size_order)
             if (g := transfer_gain(sweep, k)) is not None}
    if len(gains) < 2:
        return Finding(None, {"gain": gains}, "needs two or more target sizes")
    sizes = list(gains)
    values = [gains[k]["gain"] for k in sizes]
    shrink = values[0] - values[-1]
    spread = max(gains[sizes[0]]["spread"], gains[sizes[-1]]["spread"])
    numbers = {"gain": gains, "shrink": shrink, "spread": spread}
    steps = ", ".join(f"{_size_label(k)}: {fmt(v, '+.3f')}" for k, v in zip(sizes, values,
                                                                             strict=True))
    rises = [k for a, b, k in zip(values, values[1:], sizes[1:], strict=False) if b >= a]
    if rises:
        where = ", ".join(map(_size_label, rises))
        return Finding(False, numbers, f"the gain does not fall at {where} ({steps})")
    if shrink <= spread:
        return Finding(False, numbers, f"spread over seeds ({fmt(spread)}) larger than the "
                       f"shrink ({fmt(shrink)}; {steps})")
    return Finding(True, numbers, f"the gain falls at each larger size ({steps}), by "
                   f"{fmt(shrink)} in all, more than the spread {fmt(spread)}")


def _size_label(k) -> str:
    return "all" if k == 0 else f"{k}/class"


def findings(sweep: dict) -> list[tuple[str, object, Finding]]:
    """(finding key, size or None for one over the sizes, Finding), in the table's order."""
    sizes = sorted(sweep, key=_size_order)
    out = []
    for key, fn in (("bnb_dip", bnb_dip), ("anb_falls", anb_falls),
                    ("anb_plus", anb_plus_vs_base)):
        out += [(key, k, fn(sweep, k)) for k in sizes]
    out.append(("gain_shrinks", None, gain_shrinks(sweep)))
    return out


def _ours(key: str, k, f: Finding) -> str:
    """The numbers a row prints: the means compared, with their sd over seeds."""
    num = f.numbers
    if f.holds is None and key != "gain_shrinks":
        return ""
    if key == "bnb_dip":
        low, end = num["lowest_middle_n"], num["lower_end_n"]
        return (f"BnB n={low} {fmt(num['BnB'][low])}; n={end} {fmt(num['BnB'][end])}")
    if key == "anb_falls":
        peak, last = num["peak_n"], num["last_n"]
        return f"AnB n={peak} {fmt(num['AnB'][peak])}; n={last} {fmt(num['AnB'][last])}"
    if key == "anb_plus":
        worst = min(num["difference"], key=num["difference"].get)
        return (f"base {fmt(num['base'])}; AnB+ n={worst} {fmt(num['AnB+'][worst])}")
    return "; ".join(f"{_size_label(k)}: {g['treatment']} n={g['n']} "
                     f"{fmt(g['gain'], '+.3f')} (base {fmt(g['base'])})"
                     for k, g in num["gain"].items())


def findings_section(sweep: dict, label: str = "accuracy") -> tuple[dict, list[str]]:
    """(details.json's `findings`, summary.md's lines): each finding per target size (the
    gain's over the sizes), whether it holds, the numbers and the reason."""
    rows, details = [], {}
    for key, k, f in findings(sweep):
        where = "all sizes" if k is None else size_title(k)
        rows.append([STATEMENT[key], where, PAPER[key], _ours(key, k, f),
                     "–" if f.holds is None else ("yes" if f.holds else "no"), f.reason])
        entry = f.as_dict()
        if k is None:
            details[key] = {**entry, "paper": PAPER[key]}
        else:
            details.setdefault(key, {"paper": PAPER[key], "sizes": {}})["sizes"][
                f"k{k}"] = entry
    lines = [f"Yosinski's findings on this sweep (test {label}, mean ± sd over seeds; an "
             "effect counts when larger than the spread, the larger sd over seeds of the two "
             "means compared; the papers show these as figures only):", "",
             markdown_table(["finding", "target size", "paper", "ours", "reproduces",
                             "why"], rows), "",
             "The curves behind them, one panel per target size: plots/transferability.png.",
             ""]
    return details, lines
