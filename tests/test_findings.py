"""Yosinski's findings (report/findings.py) on hand-built sweeps aggregated over seeds: each
holds where the shape is there and larger than the spread over seeds, and does not (with
its reason) where the shape is missing, reversed or drowned by the spread."""

from __future__ import annotations

import json

from transferlab.report.findings import (
    anb_falls,
    anb_plus_vs_base,
    bnb_dip,
    findings_section,
    gain_shrinks,
    transfer_gain,
)


def _s(mean: float, std: float = 0.01, seeds: int = 3) -> dict:
    return {"mean": mean, "std": std, "seeds": seeds}


def _curve(means, std=0.01, seeds=3) -> dict:
    return {n: _s(m, std, seeds) for n, m in enumerate(means, start=1)}


def _sweep(base=0.80, anb=(0.80, 0.80, 0.78, 0.74, 0.65), anb_plus=(0.82, 0.82, 0.83, 0.83, 0.82),
           bnb=(0.80, 0.74, 0.72, 0.76, 0.80), bnb_plus=(0.80,) * 5, std=0.01, seeds=3) -> dict:
    return {"base": {0: _s(base, std, seeds)}, "AnB": _curve(anb, std, seeds),
            "AnB+": _curve(anb_plus, std, seeds), "BnB": _curve(bnb, std, seeds),
            "BnB+": _curve(bnb_plus, std, seeds)}


# Yosinski's Fig. 2 in miniature at one size
YOSINSKI = {100: _sweep()}


def test_bnb_dip_holds_on_a_u_shape_and_names_the_lowest_middle_n():
    f = bnb_dip(YOSINSKI, 100)
    assert f.holds is True
    assert (f.numbers["lowest_middle_n"], f.numbers["lower_end_n"]) == (3, 1)
    assert abs(f.numbers["dip"] - 0.08) < 1e-9 and f.numbers["spread"] == 0.01
    assert "n = 3" in f.reason


def test_bnb_dip_fails_when_bnb_rises_with_n_or_the_spread_drowns_it():
    rising = bnb_dip({5: _sweep(bnb=(0.70, 0.74, 0.78, 0.80, 0.82))}, 5)
    assert rising.holds is False and rising.reason.startswith("no dip")
    noisy = bnb_dip({5: _sweep(bnb=(0.80, 0.78, 0.77, 0.79, 0.80), std=0.05)}, 5)
    assert noisy.holds is False and "spread over seeds (0.050) larger than the dip" in noisy.reason
    # two n have no middle
    short = bnb_dip({5: {"BnB": _curve((0.8, 0.7))}}, 5)
    assert short.holds is None


def test_anb_falls_holds_when_the_top_n_is_below_the_peak_by_more_than_the_spread():
    f = anb_falls(YOSINSKI, 100)
    assert f.holds is True and (f.numbers["peak_n"], f.numbers["last_n"]) == (1, 5)
    assert abs(f.numbers["fall"] - 0.15) < 1e-9
    flat = anb_falls({5: _sweep(anb=(0.80, 0.81, 0.82, 0.83, 0.84))}, 5)
    assert flat.holds is False and flat.reason == "no fall: AnB is highest at the top n = 5"
    noisy = anb_falls({5: _sweep(anb=(0.80, 0.80, 0.79, 0.79, 0.78), std=0.03)}, 5)
    assert noisy.holds is False and noisy.reason.startswith("spread over seeds (0.030)")


def test_anb_plus_at_or_above_base_within_the_spread():
    f = anb_plus_vs_base(YOSINSKI, 100)
    assert f.holds is True and f.numbers["below"] == []
    assert f.numbers["above"] == [1, 2, 3, 4, 5]  # 0.02..0.03 above, spread 0.01
    # 0.005 below base is within the spread: still "at" base
    at = anb_plus_vs_base({5: _sweep(anb_plus=(0.795,) * 5)}, 5)
    assert at.holds is True and at.numbers["above"] == []
    below = anb_plus_vs_base({5: _sweep(anb_plus=(0.82, 0.82, 0.75, 0.82, 0.70))}, 5)
    assert below.holds is False and below.numbers["below"] == [3, 5]
    assert "n = 3, 5" in below.reason and "most at n = 5: -0.100" in below.reason
    assert anb_plus_vs_base({5: {"AnB+": _curve((0.8,))}}, 5).holds is None


def test_transfer_gain_is_the_best_of_anb_and_anb_plus_minus_base():
    g = transfer_gain(YOSINSKI, 100)
    assert (g["treatment"], g["n"]) == ("AnB+", 3) and abs(g["gain"] - 0.03) < 1e-9
    assert transfer_gain({5: {"AnB": _curve((0.8,))}}, 5) is None  # no base


def test_gain_shrinks_over_sizes_with_all_images_as_the_largest():
    def at(base, best):
        return _sweep(base=base, anb_plus=(best,) * 5, anb=(base,) * 5)

    shrinking = {10: at(0.40, 0.60), 0: at(0.90, 0.905), 100: at(0.70, 0.78)}
    f = gain_shrinks(shrinking)
    assert f.holds is True and list(f.numbers["gain"]) == [10, 100, 0]
    assert abs(f.numbers["shrink"] - 0.195) < 1e-9
    growing = gain_shrinks({10: at(0.40, 0.42), 100: at(0.70, 0.80)})
    assert growing.holds is False and "does not fall at 100/class" in growing.reason
    noisy = gain_shrinks({10: _sweep(base=0.40, anb_plus=(0.43,) * 5, anb=(0.4,) * 5, std=0.05),
                          100: _sweep(base=0.70, anb_plus=(0.72,) * 5, anb=(0.7,) * 5,
                                      std=0.05)})
    assert noisy.holds is False and noisy.reason.startswith("spread over seeds (0.050)")
    assert gain_shrinks({10: at(0.4, 0.6)}).holds is None


def test_one_seed_says_there_is_no_spread():
    f = bnb_dip({5: _sweep(std=0.0, seeds=1)}, 5)
    assert f.holds is True and "one seed" in f.reason


def test_section_rows_per_size_and_json_ready_details():
    sweep = {10: _sweep(base=0.5, anb_plus=(0.7,) * 5), 100: _sweep()}
    details, lines = findings_section(sweep)
    assert set(details) == {"bnb_dip", "anb_falls", "anb_plus", "gain_shrinks"}
    assert set(details["bnb_dip"]["sizes"]) == {"k10", "k100"}
    assert details["gain_shrinks"]["holds"] is True
    assert details["anb_plus"]["paper"].startswith("figure only")
    json.dumps(details, allow_nan=False)  # what write_json needs
    table = "\n".join(lines)
    assert "| finding | target size | paper | ours | reproduces | why |" in table
    assert "| BnB dips at middle layers | 10 target images per class |" in table
    assert "BnB n=3 0.720 ± 0.010; n=1 0.800 ± 0.010" in table
    assert table.count("\n| ") == 1 + 3 * 2 + 1  # the rule line, 3 findings x 2 sizes, the gain
    assert lines[-2] == ("The curves behind them, one panel per target size: "
                         "plots/transferability.png.")
