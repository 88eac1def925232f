import json

import pytest

from transferlab.report.quadrant import cell, main, table


def _details(offset: float, heads_at: int) -> dict:
    stats = lambda m: {"mean": m, "std": 0.0, "seeds": 1}  # noqa: E731
    return {
        "sweep": {f"k{k}": {"base": stats(0.3 + offset + k / 1000),
                            "AnB+": {"n3": stats(0.5 + offset), "n7": stats(0.6 + offset)}}
                  for k in (25, 500)},
        "transfer": {"subsample": heads_at},
        "heads": {"conv5": {"svm": 0.4 + offset, "logreg": 0.45 + offset,
                            "random_forest": 0.9},
                  "fc7": {"svm": 0.55 + offset, "logreg": 0.5 + offset}},
    }


def test_a_cell_holds_each_strategy_the_lecture_names():
    c = cell(_details(0.0, heads_at=25), 25)
    assert c["base"] == pytest.approx(0.325)
    assert c["finetune_few"] == (7, 0.6) and c["finetune_many"] == (3, 0.5)
    # linear heads only (the forest's 0.9 is not a linear classifier)
    assert c["linear_top"] == ("svm on fc7", 0.55)
    assert c["linear_earlier"] == ("logreg on conv5", 0.45)
    assert "linear_top" not in cell(_details(0.0, heads_at=25), 500)


def test_the_table_has_four_cells_with_the_lectures_advice(tmp_path, capsys):
    text = table(_details(0.0, 25), _details(-0.1, 25), 25, 500)
    rows = text.splitlines()[2:]
    assert len(rows) == 4
    assert rows[0].startswith("| little (25/class) | similar | Use Linear Classifier on top")
    assert "| 0.450 (svm on fc7) |" in rows[1]  # the different run, offset -0.1
    assert rows[3].startswith("| much (500/class) | different | Finetune a larger number")
    paths = []
    for name, offset in (("s.json", 0.0), ("d.json", -0.1)):
        (tmp_path / name).write_text(json.dumps(_details(offset, 25)))
        paths.append(str(tmp_path / name))
    assert main([*paths, "--little", "25", "--much", "500"]) == 0
    assert capsys.readouterr().out == text
    assert main([*paths, "--little", "10", "--much", "500"]) == 2
    assert "no sweep at 10 images per class (this run has: 25, 500)" in capsys.readouterr().err


def test_relative_accuracy_is_each_treatment_over_base_per_n(tmp_path, capsys):
    """Yosinski's Fig. 3 (bottom): accuracy / base at the same size, per n, per run."""
    from transferlab.report.relative import main as relative_main
    from transferlab.report.relative import relative, table

    def details(base, anb):
        stats = lambda m: {"mean": m, "std": 0.0, "seeds": 2}  # noqa: E731
        return {"sweep": {"k0": {"base": stats(base),
                                 "AnB": {f"n{n}": stats(a) for n, a in anb.items()}}}}

    similar = details(0.5, {1: 0.5, 7: 0.4})
    dissimilar = details(0.4, {1: 0.38, 7: 0.2})
    assert relative(similar, 0) == {"AnB": {1: pytest.approx(1.0), 7: pytest.approx(0.8)}}
    assert relative(dissimilar, 0)["AnB"] == {1: pytest.approx(0.95), 7: pytest.approx(0.5)}
    text = table({"similar": similar, "dissimilar": dissimilar}, 0)
    assert "| similar | AnB | 1.000 | 0.800 |" in text
    assert "| dissimilar | AnB | 0.950 | 0.500 |" in text
    with pytest.raises(KeyError, match="no sweep at 5"):
        relative(similar, 5)
    for name, d in (("similar", similar), ("dissimilar", dissimilar)):
        (tmp_path / f"{name}.json").write_text(json.dumps(d))
    assert relative_main([str(tmp_path / "similar.json"), str(tmp_path / "dissimilar.json"),
                          "--size", "0"]) == 0
    out = capsys.readouterr().out
    assert "| run | treatment | n=1 | n=7 |" in out and "| dissimilar | AnB | 0.950 |" in out
