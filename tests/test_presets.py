"""The paper presets validate, and run through the whole pipeline on tiny fixture data
with their architecture shrunk (the full runs need the real datasets and a GPU)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests import dataset_fixtures as fx
from transferlab.config.params import home_file, parse_params, read_params_file
from transferlab.config.presets import apply_preset, exp_args, merge

from .conftest import SHIPPED, TINY, skip_without_hub, write_params
from .pipeline_runner import make_project, run_pipeline

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted(p.stem for p in (ROOT / "presets").glob("*.yaml"))

# What each preset keeps (dataset pair, arch, recipe) and what shrinks for a test run:
# one feature layer each (heads and probes per layer are most of a tiny run's time).
TINY_RUN = {
    "pretrain": {"epochs": 2, "batch_size": 32},
    "transfer": {"steps": 3, "batch_size": 16},
    "heads": {"cv_folds": 2, "svm": {"C": [1]}, "logreg": {"C": [1]},
              "random_forest": {"n_estimators": 4},
              "lowshot": {"shots": [1], "draws": 1, "layers": None}},
    # the tiny probe sizes only: a preset's own choices (Sharma's conv decoders) stay
    "diagnostics": {key: value for key, value in TINY["diagnostics"].items()
                    if value != SHIPPED["diagnostics"][key]},
    "sweep": {"seeds": [0]},
}
# The feedback net is the slowest on a CPU: 16 px images, one epoch.
FEEDBACK = {"model": {"feedback": {"iterations": 2, "width": 4, "hidden": 16}},
            "data": {"image_size": 16}, "pretrain": {"epochs": 1},
            "subsample": 1, "sweep": {"subsample": [1]}, "report": {"subsample": 1},
            "features": {"layers": ["lstm12"]},
            "heads": {"on_iterations": [2], "lowshot": {"layers": ["lstm12"]}}}
VOC = {"data": {"target_classes": [0, 1, 2, 3, 4, 5]}}
ALEXNET = {"model": {"alexnet": {"channels": [8, 8, 8, 8, 8], "fc": 16}},
           "pretrain": {"milestones": [1]}, "transfer": {"milestones": [2]},
           "features": {"layers": ["fc7"]}, "heads": {"lowshot": {"layers": ["fc7"]}}}
YOSINSKI = merge(ALEXNET, {"subsample": 3, "sweep": {"subsample": [3], "layers": [1, 7],
                                                     "seeds": [0]},
                           "report": {"subsample": 3, "layer": 7}})
# Hong's ImageNet-source presets: torchvision's AlexNet as it is (the weights file the
# test writes: the library's model, untrained), at its smallest input (63 px), on the
# fixture's six VOC labels, one epoch.
HUB_VOC = {"model": {"pretrained": {"weights": "{tmp}/raw/weights/alexnet.pth"}},
           "data": {"image_size": 64, "source_classes": [0, 1, 2, 3, 4, 5],
                    "target_classes": [0, 1, 2, 3, 4, 5]},
           "transfer": {"epochs": 1}, "features": {"layers": ["fc7"]}}
SHRINK = {
    "yosinski-2014-cifar100-similar": YOSINSKI,
    # the fixture's CIFAR-100 has 8 classes: the split by index, in its range
    "yosinski-2014-cifar100-dissimilar": merge(YOSINSKI, {"data": {
        "classes_file": "{tmp}/raw/manmade-natural.yaml"}}),
    "spero-feedback-cifar10-voc": merge(FEEDBACK, VOC),
    "spero-feedback-cifar100-voc": merge(FEEDBACK, VOC),
    "spero-feedback-cifar100-cifar10": merge(FEEDBACK, {"data": {"target_classes": "all"},
                                                           "heads": {"lowshot": {"shots": []}}}),
    "borthakur-einhorn-densenet-cifar100": {
        "model": {"densenet_bc": {"depth": 10, "growth": 4}},
        "pretrain": {"milestones": [1], "binary_aux": {
            "heads": 1, "compare": True, "seeds": [0], "subsample": 3}},
        "transfer": {"milestones": [2], "copied_milestones": [2]},
        "subsample": 3, "sweep": {"subsample": [3], "layers": [1, 3], "seeds": [0]},
        "report": {"subsample": 3, "layer": 3}, "freeze": "block1.layer1",
        # depth 10: conv0, block1.layer1, trans1, block2.layer1, trans2, ...
        "features": {"layers": ["final"]}},
    "borthakur-einhorn-densenet-fig2": {
        # depth 10: conv0, block1.layer1, trans1, block2.layer1, trans2, block3.layer1, final
        "model": {"densenet_bc": {"depth": 10, "growth": 4}},
        "pretrain": {"milestones": [1]},
        "transfer": {"milestones": [1, 2], "copied_milestones": [2]},
        "subsample": 3, "sweep": {"subsample": [3], "layers": [3, 7],
                                  "treatment_layers": {"AnB+": [7]}},
        "report": {"subsample": 3, "layer": 3}, "freeze": "trans1",
        "features": {"layers": ["final"]}, "heads": {"lowshot": {"layers": ["final"]}}},
    "borthakur-einhorn-wrn-cifar100": {
        # depth 10: conv1, block1.unit1, block2.unit1, block3.unit1, final
        "model": {"wrn": {"depth": 10, "widen": 1}},
        "pretrain": {"milestones": [1], "binary_aux": {"seeds": [0], "subsample": 3}},
        "transfer": {"milestones": [2], "copied_milestones": [2]}, "subsample": 3,
        "sweep": {"subsample": [3], "layers": [5]}, "report": {"subsample": 3, "layer": 5},
        "features": {"layers": ["final"]}},
    "sharma-twoconv-mnist": {
        "model": {"twoconv": {"channels": [4, 4], "hidden": 8}}, "subsample": 3,
        "sweep": {"subsample": [3], "layers": [1, 2]}, "report": {"subsample": 3, "layer": 2},
        "heads": {"lowshot": {"layers": ["fc3"]}}},
    "hong-alexnet-cifar100": merge(ALEXNET, {
        "subsample": 3, "sweep": {"subsample": [1, 3], "layers": [7], "seeds": [0]},
        "report": {"subsample": 3, "layer": 7}, "features": {"augment": {"copies": 1}}}),
    "soekhoe-alexnet-tinyimagenet": merge(ALEXNET, {
        "subsample": 3, "sweep": {"subsample": [1, 3], "layers": [1, 7]},
        "report": {"subsample": 3, "layer": 7}}),
    # 128 px JPEGs read at the preset's 64 px, official val as the test part
    "soekhoe-alexnet-miniplaces": merge(ALEXNET, {
        "subsample": 3, "sweep": {"subsample": [3], "layers": [1, 7]},
        "report": {"subsample": 3, "layer": 7}}),
    "hong-decaf-alexnet-voc2007": HUB_VOC,
    "hong-oquab-alexnet-voc2007": HUB_VOC,
    "hong-finetune-alexnet-voc2007": HUB_VOC,
    "hong-cnnaug-alexnet-voc2007": merge(HUB_VOC, {"features": {
        "layers": ["fc6"], "augment": {"copies": 1}}}),
    # the convnet at 28x28 as it is; two sizes and three n, so each finding is decided;
    # the budget still grows with the size (2 epochs at batch 4: 4 steps at 1 / class, 8 at 3)
    "yosinski-fashion-mnist": {
        "subsample": 3, "transfer": {"steps": 1, "epochs": 2, "batch_size": 4},
        "sweep": {"subsample": [1, 3], "layers": [1, 3, 5]},
        "report": {"subsample": 3, "layer": 3},
        "features": {"layers": ["conv2", "fc5"]}, "heads": {"lowshot": {"layers": None}},
        "diagnostics": {"decoder_train_per_class": 0}},
}
FILES = {
    "cifar10": fx.write_cifar10_archive, "cifar100": fx.write_cifar100_archive,
    "voc2007": fx.write_voc2007_archives, "voc2012": fx.write_voc_archive,
    "tinyimagenet": fx.write_tinyimagenet_zip,
    "mnist": fx.write_mnist_files, "miniplaces": fx.write_miniplaces_archive,
    "fashion-mnist": lambda d: fx.write_fashion_mnist_files(d, 12, 6),
}


def test_every_study_has_a_preset_and_says_what_it_reproduces():
    studies = {re.match(r"(borthakur-einhorn|[a-z]+)-", n).group(1) for n in PRESETS}
    assert studies == {"yosinski", "spero", "borthakur-einhorn", "sharma", "hong",
                       "soekhoe"}
    assert set(SHRINK) == set(PRESETS)
    for name in PRESETS:
        paper = yaml.safe_load((ROOT / "presets" / f"{name}.yaml").read_text())["paper"]
        assert paper["study"] and paper["reproduces"], name
        # a figure without numbers says so; every printed number names where it is
        assert paper["numbers"] or "figure" in paper["note"].lower(), name
        assert all(n["source"] for n in paper["numbers"]), name


def test_the_listing_names_each_preset_with_the_figure_it_reproduces(capsys, monkeypatch):
    from transferlab.config.presets import main

    monkeypatch.chdir(ROOT)
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in PRESETS:
        reproduces = yaml.safe_load((ROOT / "presets" / f"{name}.yaml").read_text())[
            "paper"]["reproduces"]
        assert f"{name}\n" in out and reproduces.split(":")[0] in out, name


def _preset(name: str) -> dict:
    return yaml.safe_load((ROOT / "presets" / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_validates_over_the_shipped_params(name):
    skip_without_hub(_preset(name))
    params = parse_params(apply_preset(name, ROOT / "params.yaml", ROOT / "presets"))
    assert params.dataset != "digits"
    preset = yaml.safe_load((ROOT / "presets" / f"{name}.yaml").read_text())
    args = exp_args(preset)
    assert args[0] == "-S" and f"arch={json.dumps(preset['arch'])}" in args


def _datasets(params) -> set[str]:
    return {params.data.dataset_of(task, params.dataset) for task in ("source", "target")}


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_runs_through_report_on_fixture_data(tmp_path, name):
    skip_without_hub(_preset(name))
    files = tmp_path / "files"
    # under data.root, where a classes file from outside splits/ must be
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "manmade-natural.yaml").write_text("source: [0, 1, 2]\n"
                                                          "target: [3, 4, 5, 6, 7]\n")
    raw = apply_preset(name, ROOT / "params.yaml", ROOT / "presets")
    manifest = {}
    for dataset in sorted(_datasets(parse_params(raw))):
        written = FILES[dataset](files)
        manifest[dataset] = written[0] if isinstance(written, tuple) else written
    path = fx.write_manifest(manifest, tmp_path / "raw" / "manifest.json")
    if raw["arch"] == "pretrained":  # the library's own model, untrained, as the weights file
        import torch
        import torchvision

        library, model_name = raw["model"]["pretrained"]["name"].split(":")
        assert library == "torchvision", name
        (tmp_path / "raw" / "weights").mkdir()
        torch.save(torchvision.models.get_model(model_name, weights=None).state_dict(),
                   tmp_path / "raw" / "weights" / f"{model_name}.pth")
    project = make_project(tmp_path / "project", ROOT)
    shrink = json.loads(json.dumps(SHRINK[name]).replace("{tmp}", str(tmp_path)))
    with fx.serve_directory(files) as server:
        raw = merge(merge(raw, TINY_RUN), shrink)
        raw = merge(raw, {"data": {"root": str(tmp_path / "raw"), "mirror": str(server),
                                   "manifest": str(path)}})
        parse_params(raw)
        write_params(project / "params.yaml", raw)
        ran = run_pipeline(project)
    assert ran[:3] == ["check_params", "sources_used", "prepare"] and ran[-1] == "report"
    summary = json.loads((project / "metrics/summary.json").read_text())
    details = json.loads((project / "metrics/details.json").read_text())
    pretrain = json.loads((project / "results/pretrain/A.json").read_text())
    sweep = json.loads((project / "results/sweep/seed-0.json").read_text())
    # the paper's numbers sit beside ours, one row each, ours found where it was run
    paper = yaml.safe_load((ROOT / "presets" / f"{name}.yaml").read_text())["paper"]
    rows = details["paper"]["numbers"]
    assert [r["what"] for r in rows] == [n["what"] for n in paper["numbers"]]
    # each published number as transcribed, and where ours is read
    assert [(r["paper"], r["unit"], r["source"], r["ours_from"]) for r in rows] == [
        (n["value"], n["unit"], n["source"], None if n["ours"] is None else ".".join(n["ours"]))
        for n in paper["numbers"]]
    assert "The paper's numbers beside ours" in (project / "metrics/summary.md").read_text()
    if name.startswith("spero"):  # feedback net: a score per iteration
        assert len(pretrain["test_iteration_accuracy"]) == 2
        # the heads (Fig. 3's forest) also on the last iteration's 256-d readout
        assert set(details["heads"]) == {"lstm12", "iter2"}
        # Table 1's rows of the two iterations run here are filled, the rest "not run"
        table = [r for r in rows if (r["ours_from"] or "").startswith("pretrain.")]
        assert table and all((r["ours"] is not None) == r["ours_from"].endswith((".0", ".1"))
                             for r in table)
    if name.endswith("-voc"):  # VOC target: mAP per iteration, the sweep's gain (Fig. 2)
        assert summary["metric"] == "map"
        assert len(details["pretrain"]["B"]["iteration_map"]) == 2
        gains = details["sweep_iterations"]["k1"]["AnB"]["n13"]
        assert len(gains["gain_over_base"]) == len(gains["gain_over_model_B"]) == 2
        # Fig. 2's gain rows: over model B, beside the paper's range, no difference
        fig2 = [r for r in rows if "gain_over_model_B" in (r["ours_from"] or "")]
        assert len(fig2) == 4 and all(isinstance(r["paper"], list) and r["difference"] is None
                                      for r in fig2)
    if name.endswith("cifar100-cifar10"):  # Fig. 4: per-iteration logistic regression
        assert details["iteration_heads"]["rows"] == ["iter1", "iter2", "all"]
    if name.endswith("fig2"):  # every layer copied; frozen up to n, the rest fine-tuned;
        # the "0" point (nothing frozen) is AnB+ at every layer
        assert {(v["treatment"], v["n"]) for v in sweep["variants"]} == {
            ("base", 0), ("AnB-ft", 3), ("AnB-ft", 7), ("AnB+", 7)}
    if raw["pretrain"]["binary_aux"]["compare"]:  # Borthakur & Einhorn: the paired comparison
        _check_binary_aux(raw, details["binary_aux"], rows)
        assert summary["binary_aux"] == {key: details["binary_aux"][key] for key in (
            "mean_difference", "binary_better", "seeds")}
        assert "Binary auxiliary heads" in (project / "metrics/summary.md").read_text()
    if name.startswith("borthakur-einhorn"):  # the variants' treatments, copied layers and rates
        _check_seed001_variants(project, raw, sweep)
    if name.startswith("sharma"):  # the probes per digit, beside the paper's tables
        assert set(details["diagnostics"]) == {"conv1", "conv2", "fc3"}
        assert all(r["ours"] is not None and r["difference"] is None for r in rows)
        # Exp. 3's decoders are convolutional for the conv layers; flat fc3 keeps the
        # MLP, its gap taken against the MLP fed the image
        diagnostics = json.loads((project / "results/diagnostics.json").read_text())
        assert diagnostics["decoder_kinds"] == {"input": "conv", "input_mlp": "mlp",
                                                "conv1": "conv", "conv2": "conv", "fc3": "mlp"}
        assert diagnostics["decoder_baseline"] == {"conv1": "input", "conv2": "input",
                                                   "fc3": "input_mlp"}
        assert "| class | input (conv) | input (mlp) | conv1 (conv) | conv2 (conv) | fc3 (mlp) |" \
            in (project / "metrics/summary.md").read_text()
    if name.startswith("hong") and name.endswith("voc2007"):  # VOC 2007's devkit AP
        assert summary["metric"] == "map" and summary["ap_definition"] == "voc07"
        assert {(v["treatment"], v["n"]) for v in sweep["variants"]} == {
            (t, 7) for t in raw["sweep"]["treatments"]}
        meta = json.loads((project / "data/prepared/meta.json").read_text())
        assert (meta["source_dataset"], meta["target_dataset"]) == ("voc2012", "voc2007")
    if name.startswith("soekhoe"):  # swapped study; AnB+ only as FTall (n = 7)
        assert {v["direction"] for v in sweep["variants"]} == {"AB", "BA"}
        assert {v["n"] for v in sweep["variants"] if v["treatment"] == "AnB+"} == {7}
    if name.endswith("miniplaces"):  # 128 px read at 64; the official val is the test part
        meta = json.loads((project / "data/prepared/meta.json").read_text())
        assert meta["image_shape"] == [3, 64, 64]
        assert meta["source_test_per_class"] == meta["target_test_per_class"] == [5] * 3
        assert meta["source_train_per_class"] == meta["target_train_per_class"] == [12] * 3
    if name.startswith("yosinski"):  # all five treatments at every n of the sweep
        assert {(v["treatment"], v["n"]) for v in sweep["variants"]} == {
            ("base", 0), *((t, n) for t in ("AnB", "AnB+", "BnB", "BnB+")
                           for n in raw["sweep"]["layers"])}
    if raw["report"]["findings"]:  # Yosinski's findings, decided per size on the sweep
        _check_findings(raw, sweep, details["findings"],
                        (project / "metrics/summary.md").read_text())
    else:
        assert "findings" not in details


def _check_findings(raw: dict, sweep: dict, findings: dict, text: str) -> None:
    """Each finding per target size in details.json, the gain over the sizes, summary.md's
    table; and the budget of every variant grows with its target size (transfer.epochs)."""
    sizes = {f"k{k}" for k in raw["sweep"]["subsample"]}
    assert set(findings) == {"bnb_dip", "anb_falls", "anb_plus", "gain_shrinks"}
    for key in ("bnb_dip", "anb_falls", "anb_plus"):
        assert set(findings[key]["sizes"]) == sizes
        assert all(f["holds"] in (True, False) and f["reason"]
                   for f in findings[key]["sizes"].values())
    assert findings["gain_shrinks"]["holds"] in (True, False)
    assert "Yosinski's findings on this sweep" in text
    assert "| finding | target size | paper | ours | reproduces | why |" in text
    steps = {v["subsample"]: v["steps"] for v in sweep["variants"]}
    assert steps == {k: parse_params(raw).transfer.budget(5 * k) for k in steps}
    assert steps[1] < steps[3]


def _check_binary_aux(raw: dict, aux: dict, rows: list[dict]) -> None:
    """Borthakur & Einhorn's paired comparison holds what its preset asks for, and the paper rows
    (Table 1, Fig. 6) are its arms' mean test error."""
    cfg = raw["pretrain"]["binary_aux"]
    params = parse_params(raw)
    # every layer copied and fine-tuned (AnB+ at all layers), on the preset's subsample
    assert (aux["treatment"], aux["n"], aux["subsample"], aux["heads"], aux["weight"]) == (
        "AnB+", len(params.layer_names), cfg["subsample"], cfg["heads"], cfg["weight"])
    assert [p["seed"] for p in aux["pairs"]] == cfg["seeds"]
    assert aux["seeds"] == len(cfg["seeds"])
    for arm in ("plain", "binary"):
        assert aux[arm]["mean"] == pytest.approx(
            sum(p[arm] for p in aux["pairs"]) / len(aux["pairs"]))
    differences = [p["binary"] - p["plain"] for p in aux["pairs"]]
    assert aux["mean_difference"] == pytest.approx(sum(differences) / len(differences))
    assert aux["binary_better"] == sum(d > 0 for d in differences)
    for row in rows:
        if row["ours_from"] is None:  # the second split: another top-level seed
            assert row["ours"] is None and row["difference"] is None
            continue
        section, arm = row["ours_from"].split(".")
        assert (section, arm in ("plain", "binary"), row["unit"]) == ("binary_aux", True,
                                                                      "error%")
        assert row["ours"] == pytest.approx(100 * (1 - aux[arm]["mean"]))
        if row["paper"] is None:
            assert row["difference"] is None
        else:
            assert row["difference"] == pytest.approx(row["ours"] - row["paper"])


def _check_seed001_variants(project: Path, raw: dict, sweep: dict) -> None:
    """Each sweep variant of a Borthakur & Einhorn preset is the (treatment, n) grid the preset
    lists, copies the layers its treatment copies, and trains them at the paper's rates:
    copied layers at 0.01, the new FC layer at 0.1 (secs. 4.1, 4.2.2)."""
    import torch

    from transferlab.data.prepared import TaskData
    from transferlab.training.variant import Variant, new_model, setup_variant

    params = parse_params(raw)
    names = list(params.layer_names)
    sw = raw["sweep"]
    expected = {("base", 0, k, s) for k in sw["subsample"] for s in sw["seeds"]} | {
        (t, n, k, s) for t in sw["treatments"] if t != "base"
        for n in sw["treatment_layers"].get(t, sw["layers"])
        for k in sw["subsample"] for s in sw["seeds"]}
    assert {(v["treatment"], v["n"], v["subsample"], v["seed"])
            for v in sweep["variants"]} == expected
    target = TaskData.load(project / "data/prepared/target.npz")
    source = new_model(params, target, 0, torch.device("cpu"))  # its weights do not matter
    for v in sweep["variants"]:
        copies_all = v["treatment"] == "AnB-ft"
        assert v["copied_layers"] == (names if copies_all else names[:v["n"]])
        assert v["train_images"] == v["subsample"] * target.num_classes
        assert v["steps"] == params.transfer.budget(v["train_images"])
        setup = setup_variant(params, target, {"A": source},
                              Variant(v["treatment"], v["n"], v["subsample"], v["seed"]),
                              torch.device("cpu"))
        model, groups = setup.model, setup.plan.param_groups
        rates = {id(p): (g["lr"], g["copied"]) for g in groups for p in g["params"]}
        frozen = names[:v["n"]] if v["treatment"] in ("AnB", "AnB-ft") else []
        for name in names:
            for p in model.layer(name).parameters():
                if name in frozen:
                    assert not p.requires_grad and id(p) not in rates, (v, name)
                elif name in v["copied_layers"]:
                    assert rates[id(p)] == (pytest.approx(0.01), True), (v, name)
                else:  # re-initialised above n (AnB+), or base
                    assert rates[id(p)] == (pytest.approx(0.1), False), (v, name)
        assert all(rates[id(p)] == (pytest.approx(0.1), False) for p in model.head.parameters())


def test_wrn_trains_through_the_pipeline_on_the_digits(tmp_path):
    project = make_project(tmp_path / "project", ROOT)
    raw = merge(read_params_file(ROOT / "params.yaml"), merge(TINY_RUN, {
        "arch": "wrn", "model": {"wrn": {"depth": 10, "widen": 1}}, "freeze": 2,
        "subsample": 3, "sweep": {"subsample": [3], "layers": [1, 5]},
        "report": {"subsample": 3, "layer": 5}, "features": {"layers": ["conv1", "final"]}}))
    write_params(project / "params.yaml", raw)
    run_pipeline(project)
    summary = json.loads((project / "metrics/details.json").read_text())
    assert set(summary["heads"]) == {"conv1", "final"}
    assert summary["transfer"]["freeze"] == 2


@pytest.mark.parametrize("name", PRESETS)
def test_exp_args_rebuild_the_preset_as_dvc_would_read_them(name, capsys, monkeypatch):
    """`--exp-args | xargs dvc exp run`: xargs splits like shlex, DVC reads each value
    as YAML and sets the dotted key."""
    import shlex

    skip_without_hub(_preset(name))
    from transferlab.config.presets import main

    monkeypatch.chdir(ROOT)
    assert main([name, "--exp-args"]) == 0
    words = shlex.split(capsys.readouterr().out)
    raw = read_params_file(ROOT / "params.yaml")
    for flag, assignment in zip(words[::2], words[1::2], strict=True):
        assert flag == "-S"
        key, value = assignment.split("=", 1)
        where, _, key = key.rpartition(":")
        assert where == ("" if home_file(key) == "params.yaml" else "recipe.yaml"), key
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    assert raw == apply_preset(name, ROOT / "params.yaml", ROOT / "presets")


@pytest.mark.parametrize("argv", [[], ["soekhoe"], ["soekhoe", "--exp-args"]])
def test_run_outside_the_project_says_where_it_looked_and_fails(tmp_path, capsys, monkeypatch,
                                                                argv):
    from transferlab.config.presets import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) != 0
    out, err = capsys.readouterr()
    assert out == ""
    assert str(tmp_path / "presets") in err and "project root" in err
    (tmp_path / "presets").mkdir()
    assert main(argv) != 0
    assert "holds no *.yaml" in capsys.readouterr().err
    if argv:  # presets found, but no params.yaml to lay them over
        (tmp_path / "presets" / "soekhoe-x.yaml").write_text("seed: 1\n")
        assert main(argv) != 0
        assert str(tmp_path / "params.yaml") in capsys.readouterr().err
