import json
import math

import pytest

from transferlab.config.params import parse_params
from transferlab.metrics import mean_std
from transferlab.report.build import build_report
from transferlab.report.curves import (
    CURVES,
    copy_curves,
    draw_sweep_curves,
    sweep_curves,
    write_sweep_curves,
)
from transferlab.report.summary import NonFiniteScore, aggregate_sweep, write_json
from transferlab.report.tables import fmt, markdown_table, write_table

from .conftest import TINY, complete


def test_mean_and_sample_std_over_seeds():
    stats = mean_std([0.5, 0.7, 0.9])
    assert stats["mean"] == pytest.approx(0.7)
    assert stats["std"] == pytest.approx(0.2)
    assert stats["seeds"] == 3
    assert mean_std([0.4])["std"] == 0.0


def test_aggregate_groups_by_size_treatment_and_layer():
    variants = [{"subsample": 5, "treatment": "AnB", "n": 2, "seed": s, "test_accuracy": a}
                for s, a in ((0, 0.6), (1, 0.8))]
    variants.append({"subsample": 5, "treatment": "base", "n": 0, "seed": 0,
                     "test_accuracy": 0.5})
    table = aggregate_sweep(variants)
    assert table[5]["AnB"][2]["mean"] == pytest.approx(0.7)
    assert table[5]["base"][0]["seeds"] == 1


def test_swapped_directions_are_averaged_per_seed_before_the_spread():
    variants = [{"subsample": 5, "treatment": "AnB", "n": 2, "seed": s, "direction": d,
                 "test_score": a}
                for s, d, a in ((0, "AB", 0.6), (0, "BA", 0.8), (1, "AB", 0.7), (1, "BA", 0.9))]
    stats = aggregate_sweep(variants)[5]["AnB"][2]
    assert stats["seeds"] == 2
    assert stats["mean"] == pytest.approx(0.75)
    # Per-seed averages 0.7 and 0.8: sd over seeds, not over the four runs.
    assert stats["std"] == pytest.approx(0.0707107, abs=1e-6)


def _write_results(root, seeds, diagnostics, layers=(1, 3), sizes=(1, 3)):
    (root / "pretrain").mkdir(parents=True)
    (root / "diagnostics.json").write_text(json.dumps(diagnostics))
    for s in ("A", "B"):
        (root / "pretrain" / f"{s}.json").write_text(json.dumps({"test_accuracy": 0.9}))
    (root / "transfer.json").write_text(json.dumps(
        {"test_accuracy": 0.8, "n": 3, "subsample": 3, "seed": 0}))
    heads = {lay: {h: {"test_accuracy": 0.5, "dim": 64}
                   for h in ("svm", "logreg", "random_forest")}
             for lay in ("conv1", "fc5")}
    (root / "heads.json").write_text(json.dumps(heads))
    lowshot = {"shots": [1, 2], "draws": 2, "layers": {"fc5": {"svm": {
        "1": {"mean": 0.4, "std": 0.1, "scores": [0.3, 0.5]},
        "2": {"mean": 0.6, "std": 0.0, "scores": [0.6, 0.6]}}}}}
    (root / "heads_lowshot.json").write_text(json.dumps(lowshot))
    (root / "heads_iterations.json").write_text(json.dumps({"note": "single iteration"}))
    (root / "binary_aux.json").write_text(json.dumps({"enabled": False}))
    (root / "sweep").mkdir()
    for seed in seeds:
        variants = [{"treatment": "base", "n": 0, "subsample": k, "seed": seed,
                     "test_accuracy": 0.5 + seed / 10} for k in sizes]
        variants += [{"treatment": t, "n": n, "subsample": k, "seed": seed,
                      "test_accuracy": 0.6 + n / 100}
                     for t in ("AnB", "AnB+", "BnB", "BnB+") for n in layers for k in sizes]
        (root / "sweep" / f"seed-{seed}.json").write_text(json.dumps({"variants": variants}))
    names = ("conv1", "conv2", "conv3", "conv4", "fc5")
    # every feature layer is scored; only those the sweep measured (layers) are ranked
    positions = {name: i + 1 for i, name in enumerate(names)}
    # knn follows the sweep (deeper is better here), logme the other way round
    scores = {"knn": {str(k): {str(s): {la: n / 10 for la, n in positions.items()}
                               for s in seeds} for k in sizes},
              "logme": {str(k): {str(s): {la: -n / 10 for la, n in positions.items()}
                                 for s in seeds} for k in sizes}}
    (root / "transferability.json").write_text(json.dumps({
        "sizes": list(sizes), "seeds": list(seeds), "layers": list(positions),
        "positions": positions, "layer_scores": scores,
        "source_accuracy": {la: 0.9 for la in positions},
        "network_scores": {"nce": {str(k): {str(s): -0.5 for s in seeds} for k in sizes}}}))


def test_report_reads_only_the_seeds_in_params(tmp_path, tiny_params, tiny_diagnostics):
    results = tmp_path / "results"
    # seed-5 is stale: not in sweep.seeds
    _write_results(results, seeds=[0, 5], diagnostics=tiny_diagnostics)
    summary = build_report(tiny_params, results=results, summary_out=tmp_path / "m/s.json",
                           plots_dir=tmp_path / "plots")
    assert summary["sweep"]["k3"]["base"] == {"mean": 0.5, "std": 0.0, "seeds": 1}
    assert summary["sweep"]["k1"]["AnB"]["n3"]["mean"] == pytest.approx(0.63)
    rows = (tmp_path / "plots/transferability.csv").read_text().splitlines()
    assert rows[0] == "n,base,AnB,AnB+,BnB,BnB+,AnB-2fc,AnB-ft,LP,FT,LP-FT"
    assert rows[1].startswith("0,0.5,") and rows[2].startswith("1,0.5,0.61")
    assert json.loads((tmp_path / "m/details.json").read_text()) == summary
    assert (tmp_path / "m/s.md").read_text().startswith("| pretrained model | test accuracy")
    assert set(summary["diagnostics"]) == {"conv1", "conv2", "conv3", "conv4", "fc5"}
    # the verdicts are the fitted rule's (one seed here: fitted on it, nothing held out)
    assert {v["verdict"] for v in summary["diagnostics"].values()} <= {
        "freeze", "fine-tune", "retrain"}
    assert summary["diagnostics_rule"]["fitted_on"] == [0]
    assert summary["diagnostics_vs_sweep"] == {}
    md = (tmp_path / "m/s.md").read_text()
    assert "## Layer diagnostics" in md and "agree at 0 of 0" in md
    assert "no hand-set threshold" in md
    assert "| fc5 | 64 | svm | 0.400 ± 0.100 | 0.600 ± 0.000 |" in md
    assert "| layer | dim | svm | logreg | random_forest |" in md  # the dims the heads saw
    assert (tmp_path / "plots/heads.csv").read_text().startswith("n,layer,dim,svm,")
    assert summary["lowshot"]["layers"]["fc5"]["svm"]["2"] == {"mean": 0.6, "std": 0.0}
    assert "## Which layers to transfer" in md
    rows = {(r["estimator"], r["target"]): r for r in summary["transferability"]["rows"]}
    assert rows[("knn", "AnB")]["tau"] == pytest.approx(1.0)
    assert rows[("logme", "AnB")]["tau"] == pytest.approx(-1.0)
    head = json.loads((tmp_path / "m/s.json").read_text())["transferability"]
    assert head["tau_knn"] == pytest.approx(1.0) and head["tau_hscore"] is None
    for name in ("transferability", "size_curve", "heads", "iterations", "diagnostics",
                 "diagnostics_tsne", "lowshot", "estimators"):
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 1000


def test_report_fails_clearly_on_a_missing_result(tmp_path, tiny_params, tiny_diagnostics):
    results = tmp_path / "results"
    _write_results(results, seeds=[0], diagnostics=tiny_diagnostics)
    (results / "heads.json").unlink()
    with pytest.raises(FileNotFoundError, match="heads.json is missing"):
        build_report(tiny_params, results=results, summary_out=tmp_path / "s.json",
                     plots_dir=tmp_path / "plots")
    assert not (tmp_path / "s.json").exists()


def test_report_shows_map_and_the_paired_binary_head_comparison(tmp_path, tiny_params,
                                                                 tiny_diagnostics):
    results = tmp_path / "results"
    _write_results(results, seeds=[0], diagnostics=tiny_diagnostics)
    (results / "transfer.json").write_text(json.dumps(
        {"metric": "map", "test_score": 0.42, "test_map": 0.42, "n": 3, "subsample": 3,
         "seed": 0}))
    (results / "pretrain" / "A.json").write_text(json.dumps(
        {"metric": "accuracy", "test_score": 0.9, "test_accuracy": 0.9,
         "test_iteration_accuracy": [0.7, 0.8, 0.85, 0.9]}))
    pairs = [{"seed": s, "plain": {"target_score": p}, "binary": {"target_score": b}}
             for s, p, b in ((0, 0.5, 0.6), (1, 0.7, 0.6))]
    (results / "binary_aux.json").write_text(json.dumps({
        "enabled": True, "treatment": "AnB", "n": 3, "subsample": 3, "heads": 1,
        "weight": 0.4, "pairs": pairs, "mean_difference": 0.0, "sd_difference": 0.1414,
        "binary_better": 1, "seeds": 2}))
    summary = build_report(tiny_params, results=results, summary_out=tmp_path / "m/s.json",
                           plots_dir=tmp_path / "plots")
    assert summary["metric"] == "map" and summary["transfer"]["test_map"] == 0.42
    assert summary["binary_aux"]["pairs"][1] == {"seed": 1, "plain": 0.7, "binary": 0.6}
    text = (tmp_path / "m/s.md").read_text()
    assert "test mAP 0.420" in text and "| 1 | 0.700 | 0.600 | -0.100 |" in text
    (results / "heads_iterations.json").write_text(json.dumps({
        "rows": ["iter1", "iter2", "all"], "columns": ["iter1", "iter2"],
        "accuracy": [[0.5, 0.4], [0.45, 0.6], [0.55, 0.65]]}))
    build_report(tiny_params, results=results, summary_out=tmp_path / "m/s.json",
                 plots_dir=tmp_path / "plots")
    assert "| all | 0.550 | 0.650 |" in (tmp_path / "m/s.md").read_text()
    rows = (tmp_path / "plots/iterations.csv").read_text().splitlines()
    assert rows[0] == "iteration,A,B" and rows[4].startswith("4,0.9,")


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), tree


def test_headline_is_short_and_the_details_hold_every_number(tmp_path, tiny_params,
                                                             tiny_diagnostics):
    results = tmp_path / "results"
    _write_results(results, seeds=[0, 1], diagnostics=tiny_diagnostics)
    # two seeds, so that the rule can be held out by seed
    tiny_params = parse_params(complete({**TINY, "sweep": {**TINY["sweep"], "seeds": [0, 1]}}))
    details = build_report(tiny_params, results=results, summary_out=tmp_path / "m/s.json",
                           plots_dir=tmp_path / "plots")
    head = dict(_leaves(json.loads((tmp_path / "m/s.json").read_text())))
    assert len(head) <= 25, sorted(head)
    assert len(dict(_leaves(details))) > 3 * len(head)
    k, n = tiny_params.report.subsample, tiny_params.report.layer
    assert head["sweep_at_report.subsample"] == k and head["sweep_at_report.n"] == n
    assert head["sweep_at_report.AnB"] == details["sweep"][f"k{k}"]["AnB"][f"n{n}"]["mean"]
    assert head["sweep_at_report.base"] == details["sweep"][f"k{k}"]["base"]["mean"]
    assert head["pretrain.A.test_accuracy"] == 0.9
    assert head["transfer.test_accuracy"] == 0.8 and head["transfer.freeze"] == 3
    assert head["best_head.score"] == 0.5
    # diagnostics.agree: the units (k, seed) where the rule fitted without that seed chose
    # within report.tolerance of the best measured option
    compared = [r["agree"] for r in details["diagnostics_vs_sweep"].values()]
    assert head["diagnostics.agree"] == sum(compared)
    assert head["diagnostics.compared"] == len(compared) == 4  # 2 sizes x 2 seeds
    rule = details["transferability"]["rule"]
    assert head["diagnostics.agree"] == pytest.approx(rule["held_out_agreement"] * 4)
    for key, row in details["diagnostics_vs_sweep"].items():
        assert key.split()[1] == "seed=" + str(1 - row["fitted_on"][0])  # the other seed


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_sweep_score_is_refused_naming_file_and_variant(tmp_path, tiny_params,
                                                                     tiny_diagnostics, bad):
    results = tmp_path / "results"
    _write_results(results, seeds=[0], diagnostics=tiny_diagnostics)
    path = results / "sweep" / "seed-0.json"
    sweep = json.loads(path.read_text())
    victim = next(v for v in sweep["variants"] if v["treatment"] == "AnB+" and v["n"] == 3
                  and v["subsample"] == 3)
    victim["test_accuracy"] = bad
    path.write_text(json.dumps(sweep))  # json writes a bare NaN / Infinity, as Python allows
    with pytest.raises(NonFiniteScore) as err:
        build_report(tiny_params, results=results, summary_out=tmp_path / "m/s.json",
                     plots_dir=tmp_path / "plots")
    message = str(err.value)
    assert str(path) in message and "AnB+ n=3 subsample=3 seed=0" in message
    # Refused before anything is written: no summary whose diagnostics would say "agree".
    assert not (tmp_path / "m/s.json").exists() and not (tmp_path / "m/details.json").exists()


@pytest.mark.parametrize("where", ["transfer", "heads", "pretrain", "diagnostics"])
def test_non_finite_scores_in_other_results_are_refused_naming_the_file(
        tmp_path, tiny_params, tiny_diagnostics, where):
    results = tmp_path / "results"
    diagnostics = json.loads(json.dumps(tiny_diagnostics))
    if where == "diagnostics":
        layer = diagnostics["layers"][0]
        diagnostics["summary"][layer]["decoder_gap"] = float("nan")
    _write_results(results, seeds=[0], diagnostics=diagnostics)
    path = {"transfer": results / "transfer.json", "heads": results / "heads.json",
            "pretrain": results / "pretrain" / "B.json",
            "diagnostics": results / "diagnostics.json"}[where]
    data = json.loads(path.read_text())
    if where == "heads":
        data["fc5"]["logreg"]["test_accuracy"] = float("nan")
    elif where != "diagnostics":
        data["test_accuracy"] = float("nan")
    path.write_text(json.dumps(data))
    with pytest.raises(NonFiniteScore, match=str(path)) as err:
        build_report(tiny_params, results=results, summary_out=tmp_path / "m/s.json",
                     plots_dir=tmp_path / "plots")
    if where == "heads":
        assert "head logreg on layer fc5" in str(err.value)
    assert not (tmp_path / "m/s.json").exists()


def test_report_json_is_never_written_with_a_bare_nan(tmp_path):
    with pytest.raises(ValueError, match="JSON compliant"):
        write_json(tmp_path / "x.json", {"score": math.nan})
    assert not (tmp_path / "x.json").exists()
    write_json(tmp_path / "x.json", {"score": 0.5, "missing": None})
    assert json.loads((tmp_path / "x.json").read_text()) == {"missing": None, "score": 0.5}


def _dvclive_run(root, name, steps, metrics):
    folder = root / name / "plots" / "metrics"
    folder.mkdir(parents=True)
    for metric, values in metrics.items():
        lines = [f"timestamp\tstep\t{metric}"]
        lines += [f"{1700000000000 + i}\t{s}\t{v}" for i, (s, v) in
                  enumerate(zip(steps, values, strict=True))]
        (folder / f"{metric}.tsv").write_text("\n".join(lines) + "\n")


def test_training_curves_are_copied_from_dvclive_without_timestamps(tmp_path, tiny_params,
                                                                    tiny_diagnostics):
    live = tmp_path / "dvclive"
    for name in CURVES:
        test_metric = "test_map" if name == "transfer" else "test_accuracy"
        _dvclive_run(live, name, [0, 1, 2], {"train_loss": [2.0, 1.5, 1.25],
                                             test_metric: [0.5, 0.75, 0.875],
                                             "test_loss": [2.5, 2.0, 1.75]})
    results = tmp_path / "results"
    _write_results(results, seeds=[0], diagnostics=tiny_diagnostics)
    build_report(tiny_params, results=results, summary_out=tmp_path / "m/s.json",
                 plots_dir=tmp_path / "plots", live=live)
    for name in CURVES:
        rows = (tmp_path / "plots" / "curves" / f"{name}.tsv").read_text().splitlines()
        assert rows[0].split("\t") == ["step", "test_loss", "test_score", "train_loss"]
        assert rows[1:] == ["0\t2.5\t0.5\t2.0", "1\t2.0\t0.75\t1.5", "2\t1.75\t0.875\t1.25"]
    # The same numbers logged at another time give the same bytes: git sees no change.
    before = (tmp_path / "plots" / "curves" / "transfer.tsv").read_bytes()
    live2 = tmp_path / "again"
    for name in CURVES:
        _dvclive_run(live2, name, [0, 1, 2], {"train_loss": [2.0, 1.5, 1.25],
                                              "test_map" if name == "transfer" else
                                              "test_accuracy": [0.5, 0.75, 0.875],
                                              "test_loss": [2.5, 2.0, 1.75]})
    copy_curves(live2, tmp_path / "plots" / "curves")
    assert (tmp_path / "plots" / "curves" / "transfer.tsv").read_bytes() == before


def test_a_missing_dvclive_run_is_named(tmp_path):
    live = tmp_path / "dvclive"
    _dvclive_run(live, "pretrain-A", [0], {"train_loss": [1.0]})
    with pytest.raises(FileNotFoundError, match="pretrain-B"):
        copy_curves(live, tmp_path / "curves")


def test_a_multilabel_model_b_reports_its_map_per_iteration_and_the_sweep_its_gain(
        tmp_path, tiny_params, tiny_diagnostics):
    """Spero: VOC model B's per-iteration mAP (not its final mAP at iteration 1) and,
    per iteration, each sweep treatment's score and gain over base (Fig. 2)."""
    results = tmp_path / "results"
    _write_results(results, seeds=[0], diagnostics=tiny_diagnostics)
    (results / "pretrain" / "B.json").write_text(json.dumps(
        {"metric": "map", "test_score": 0.38, "test_map": 0.38,
         "test_iteration_map": [0.35, 0.36, 0.37, 0.38]}))
    sweep = json.loads((results / "sweep/seed-0.json").read_text())
    for v in sweep["variants"]:
        v["test_iteration_map"] = [0.3, 0.4] if v["treatment"] == "base" else [0.35, 0.5]
    (results / "sweep/seed-0.json").write_text(json.dumps(sweep))
    summary = build_report(tiny_params, results=results, summary_out=tmp_path / "m/s.json",
                           plots_dir=tmp_path / "plots")
    assert summary["pretrain"]["B"]["iteration_map"] == [0.35, 0.36, 0.37, 0.38]
    rows = (tmp_path / "plots/iterations.csv").read_text().splitlines()
    assert rows[1].split(",")[2] == "0.35" and rows[4].split(",")[2] == "0.38"
    entry = summary["sweep_iterations"]["k3"]["AnB"]["n3"]
    assert entry["score"] == [0.35, 0.5]
    assert entry["gain_over_base"] == pytest.approx([0.05, 0.1])
    assert "gain_over_base" not in summary["sweep_iterations"]["k3"]["base"]["n0"]
    # model B predicts after 4 iterations, these variants after 2: no gain over it
    assert "gain_over_model_B" not in entry
    md = (tmp_path / "m/s.md").read_text()
    assert "| 3 | AnB | 3 | score | 0.350 | 0.500 |" in md
    assert "| 3 | AnB | 3 | minus base | +0.050 | +0.100 |" in md


def test_spero_fig2_gain_is_over_model_b_per_iteration():
    """Spero's Fig. 2 gain: the transfer's per-iteration mAP minus that of model B (the
    target-only network of stage pretrain), not minus the sweep's short base run."""
    from transferlab.report.summary import sweep_iterations

    def variant(treatment, n, seed, scores):
        return {"treatment": treatment, "n": n, "subsample": 0, "seed": seed,
                "test_score": scores[-1], "test_iteration_map": scores}

    variants = [variant("base", 0, 0, [0.20, 0.22]), variant("base", 0, 1, [0.22, 0.24]),
                variant("AnB", 13, 0, [0.40, 0.44]), variant("AnB", 13, 1, [0.42, 0.46])]
    model_b = [0.36, 0.38]  # pretrain/B.json's test_iteration_map
    table = sweep_iterations(variants, model_b)
    anb = table["k0"]["AnB"]["n13"]
    assert anb["score"] == pytest.approx([0.41, 0.45])  # mean over the two seeds
    assert anb["gain_over_model_B"] == pytest.approx([0.41 - 0.36, 0.45 - 0.38])
    assert anb["gain_over_base"] == pytest.approx([0.41 - 0.21, 0.45 - 0.23])
    # base against model B too (the from-scratch run on the transfer budget is weaker)
    assert table["k0"]["base"]["n0"]["gain_over_model_B"] == pytest.approx([-0.15, -0.15])
    assert "gain_over_model_B" not in sweep_iterations(variants)["k0"]["AnB"]["n13"]

    # The paper prints the gain as a range ("a 4-5% boost"): ours beside it, in mAP
    # points, and no difference taken against a range.
    from transferlab.report.paper import paper_markdown, paper_rows

    params = parse_params(complete({**TINY, "paper": {
        "study": "Spero", "reproduces": "Fig. 2", "note": None, "numbers": [
            {"what": "gain, iteration 2", "value": [4, 5], "unit": "map%",
             "source": "sec. 7.1", "ours": ["sweep_iterations", "k0", "AnB", "n13",
                                            "gain_over_model_B", "1"]}]}}))
    rows = paper_rows(params.paper, {"sweep_iterations": table})
    assert rows[0]["paper"] == [4.0, 5.0] and rows[0]["ours"] == pytest.approx(7.0)
    assert rows[0]["difference"] is None
    assert "| gain, iteration 2 | sec. 7.1 | map% | 4-5 | 7.00 |  |" in \
        "\n".join(paper_markdown(params.paper, rows))


def test_the_papers_numbers_sit_beside_ours_in_the_papers_unit(tmp_path, tiny_diagnostics):
    from transferlab.config.params import parse_params

    from .conftest import TINY, complete

    numbers = [
        {"what": "AnB n=3, error", "value": 35.0, "unit": "error%", "source": "Table 1",
         "ours": ["sweep", "k3", "AnB", "n3"]},
        {"what": "model A", "value": 0.95, "unit": "accuracy", "source": "p. 2",
         "ours": ["pretrain", "A", "test_accuracy"]},
        {"what": "figure only", "value": None, "unit": "accuracy", "source": "Fig. 1",
         "ours": ["sweep", "k3", "base"]},
        {"what": "never run", "value": 50.0, "unit": "accuracy%", "source": "Fig. 2",
         "ours": ["sweep", "k99", "AnB", "n3"]},
    ]
    params = parse_params(complete({**TINY, "paper": {
        "study": "A study", "reproduces": "Fig. 9", "note": None, "numbers": numbers}}))
    results = tmp_path / "results"
    _write_results(results, seeds=[0], diagnostics=tiny_diagnostics)
    summary = build_report(params, results=results, summary_out=tmp_path / "m/s.json",
                           plots_dir=tmp_path / "plots")
    rows = summary["paper"]["numbers"]
    # AnB n=3 scores 0.63: 37 % error, 2 points above the paper's 35.
    assert rows[0]["ours"] == pytest.approx(37.0) and rows[0]["difference"] == pytest.approx(2.0)
    assert rows[1]["ours"] == 0.9 and rows[1]["difference"] == pytest.approx(-0.05)
    assert rows[2]["paper"] is None and rows[2]["ours"] == 0.5 and rows[2]["difference"] is None
    assert rows[3]["ours"] is None
    md = (tmp_path / "m/s.md").read_text()
    assert "## The paper's numbers beside ours: A study" in md and "Reproduces: Fig. 9." in md
    assert "| AnB n=3, error | Table 1 | error% | 35 | 37.00 | +2.00 |" in md
    assert "| figure only | Fig. 1 | accuracy | figure only | 0.500 |  |" in md
    assert "| never run | Fig. 2 | accuracy% | 50 | not run |  |" in md


def test_paper_numbers_are_checked_key_by_key():
    from transferlab.config.params import ParamsError, parse_params

    from .conftest import TINY, complete

    bad = {"what": "x", "value": 1.0, "unit": "percent", "source": "Table 1", "ours": None}
    with pytest.raises(ParamsError, match=r"paper.numbers\[0\].unit = 'percent'"):
        parse_params(complete({**TINY, "paper": {"numbers": [bad]}}))
    for value in ([5, 4], [4], [4, 5, 6], "4-5"):  # a range is [low, high]
        with pytest.raises(ParamsError, match=r"paper.numbers\[0\].value"):
            parse_params(complete({**TINY, "paper": {"numbers": [{**bad, "unit": "error",
                                                                  "value": value}]}}))
    with pytest.raises(ParamsError, match=r"unknown key 'paper.numbers\[0\].page'"):
        parse_params(complete({**TINY, "paper": {"numbers": [{**bad, "unit": "error",
                                                              "page": 3}]}}))


def _curve(scores, losses):
    return [{"epoch": 2 * i + 2, "step": 2 * i + 2, "train_loss": loss, "train_accuracy": 0.5,
             "test_score": score, "test_loss": 1.0}
            for i, (score, loss) in enumerate(zip(scores, losses, strict=True))]


def test_sweep_curves_are_drawn_and_written_per_treatment_mean_over_seeds(
        tmp_path, tiny_params, tiny_diagnostics):
    import csv
    import dataclasses

    params = dataclasses.replace(tiny_params, sweep=dataclasses.replace(
        tiny_params.sweep, seeds=(0, 1)))
    results = tmp_path / "results"
    _write_results(results, seeds=[0, 1], diagnostics=tiny_diagnostics)
    k, layer = params.report.subsample, params.report.layer
    for seed in (0, 1):
        path = results / "sweep" / f"seed-{seed}.json"
        data = json.loads(path.read_text())
        for v in data["variants"]:
            if v["subsample"] != k:  # another size: a curve the plot must not use
                v["curve"] = _curve([0.0, 0.0], [9.0, 9.0])
            elif v["treatment"] == "base":
                v["curve"] = _curve([0.4 + seed / 5, 0.5 + seed / 5], [2.0, 1.0 + seed])
            elif v["treatment"] == "AnB" and v["n"] == layer:
                v["curve"] = _curve([0.7, 0.8 + seed / 10], [1.0, 0.5])
            elif v["n"] != layer:  # another layer: not drawn either
                v["curve"] = _curve([0.0, 0.0], [9.0, 9.0])
            elif v["treatment"] == "AnB+":  # no curve: its final point (step 4) only
                v.update(steps=4, final_train_loss=0.25 + seed / 10)
            # BnB, BnB+ at the layer: an old-format result (no steps): no point at all
        path.write_text(json.dumps(data))
    build_report(params, results=results, summary_out=tmp_path / "m/s.json",
                 plots_dir=tmp_path / "plots")
    with open(tmp_path / "plots/curves/sweep.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert [(int(r["step"]), int(r["epoch"])) for r in rows] == [(2, 2), (4, 4)]
    assert [float(r["base"]) for r in rows] == pytest.approx([0.5, 0.6])
    assert [float(r["base_loss"]) for r in rows] == pytest.approx([2.0, 1.5])
    assert [float(r["AnB"]) for r in rows] == pytest.approx([0.7, 0.85])
    assert rows[0]["AnB+"] == "" and float(rows[1]["AnB+"]) == pytest.approx(0.6 + layer / 100)
    assert float(rows[1]["AnB+_loss"]) == pytest.approx(0.3)
    assert [r["BnB"] for r in rows] == ["", ""] and rows[0]["AnB-ft_loss"] == ""
    assert (tmp_path / "plots/sweep_curves.png").stat().st_size > 1000
    # Its columns are the ones dvc.yaml plots (x: epoch, y: a column per treatment).
    from ruamel.yaml import YAML

    from .conftest import ROOT

    declared = [next(iter(entry.values())) for entry in
                YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["plots"]
                if isinstance(entry, dict) and "plots/curves/sweep.tsv" in
                next(iter(entry.values()))["y"]]
    assert len(declared) == 2 and all(d["x"] == "step" for d in declared)
    assert {c for d in declared for c in d["y"]["plots/curves/sweep.tsv"]} == set(rows[0]) - {
        "step", "epoch"}


def test_without_sweep_curves_the_table_and_plot_hold_each_final_point(tmp_path, tiny_params):
    variants = [{"treatment": t, "n": n, "subsample": 3, "seed": s, "steps": 100,
                 "test_score": 0.5 + s / 10, "final_train_loss": 0.2}
                for t, n in (("base", 0), ("AnB", 3)) for s in (0, 1)]
    curves = sweep_curves(variants, 3, 3)
    write_sweep_curves(curves, tmp_path / "sweep.tsv")
    header, row = (tmp_path / "sweep.tsv").read_text().splitlines()
    assert header.startswith("step\tepoch\tbase\tbase_loss\tAnB\tAnB_loss\t")
    assert row.split("\t")[:6] == ["100", "", "0.55", "0.2", "0.55", "0.2"]
    draw_sweep_curves(tiny_params, curves, {"metric": "accuracy"}, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_fmt_prints_every_number_of_the_report_one_way():
    assert fmt(0.70049) == "0.700" and fmt(-0.1, "+.3f") == "-0.100"
    assert fmt(0.001234, ".4g") == "0.001234" and fmt(35.0, "g") == "35"
    assert fmt(3) == "3" and fmt(3, ".4g") == "3"  # a count or an index, as it is
    assert fmt({"mean": 0.4, "std": 0.1, "seeds": 2}) == "0.400 ± 0.100"
    assert fmt(True) == "yes" and fmt(False) == "no"
    assert fmt(None) == "–" and fmt(math.nan) == "–" and fmt(None, missing="not run") == "not run"
    assert fmt("conv1") == "conv1"


def test_markdown_table_formats_each_cell_that_is_not_text():
    text = markdown_table(["layer", "svm", "n"], [["conv1", 0.5, 3], ["fc5", None, 4]])
    assert text == ("| layer | svm | n |\n|---|---|---|\n| conv1 | 0.500 | 3 |\n"
                    "| fc5 | – | 4 |")
    assert markdown_table(["a", "b"], [[0.001234, None]], ".4g", missing="").splitlines()[2] \
        == "| 0.001234 |  |"
    assert markdown_table(["k"], []) == "| k |\n|---|"


def test_write_table_holds_numbers_at_six_places_and_missing_as_empty(tmp_path):
    write_table(tmp_path / "t.csv", ["n", "score", "note"], [[1, 1 / 3, None], [2, 0.5, "x"]])
    assert (tmp_path / "t.csv").read_bytes() == b"n,score,note\r\n1,0.333333,\r\n2,0.5,x\r\n"
    write_table(tmp_path / "t.tsv", ["step", "loss"], [[0, "2.50"]])
    assert (tmp_path / "t.tsv").read_bytes() == b"step\tloss\n0\t2.50\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.tsv"]  # no temporaries


def test_the_reports_layer_scores_start_with_every_estimator_in_its_order():
    """The report lists the estimators without importing them (their module needs torch)."""
    from transferlab.report.transferability import LAYER_SCORES
    from transferlab.transferability.estimators import LAYER_ESTIMATORS
    from transferlab.transferability.scoring import THRESHOLD_ESTIMATORS

    assert LAYER_SCORES == (*LAYER_ESTIMATORS, "source accuracy", *THRESHOLD_ESTIMATORS)


def test_the_report_imports_neither_torch_nor_matplotlib_until_it_draws():
    import subprocess
    import sys

    code = ("import sys, transferlab.report.build, transferlab.report.quadrant; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
