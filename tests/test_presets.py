"""The paper presets validate, and run through the whole pipeline on tiny fixture data
with their architecture shrunk (the full runs need the real datasets and a GPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests import dataset_fixtures as fx
from transferlab.params import parse_params
from transferlab.presets import apply_preset, exp_args, merge

from .conftest import TINY, write_params
from .pipeline_runner import make_project, run_pipeline

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted(p.stem for p in (ROOT / "presets").glob("*.yaml"))

# What each preset keeps (dataset pair, arch, recipe) and what shrinks for a test run.
TINY_RUN = {
    "pretrain": {"epochs": 2, "batch_size": 32},
    "transfer": {"steps": 3, "batch_size": 16},
    "heads": {"cv_folds": 2, "svm": {"C": [1]}, "logreg": {"C": [1]},
              "random_forest": {"n_estimators": 4},
              "lowshot": {"shots": [1], "draws": 1, "layers": None}},
    "diagnostics": TINY["diagnostics"],
    "sweep": {"seeds": [0]},
}
SHRINK = {
    "seed-000": {"model": {"feedback": {"iterations": 2, "width": 4, "hidden": 16}},
                 "subsample": 1, "sweep": {"subsample": [1]}, "report": {"subsample": 1},
                 "features": {"layers": ["lstm1", "lstm12"]},
                 "data": {"target_classes": [0, 1, 2, 3, 4, 5]}},
    "seed-001": {"model": {"densenet_bc": {"depth": 10, "growth": 4}},
                 "pretrain": {"milestones": [1], "binary_aux": {
                     "heads": 1, "compare": True, "seeds": [0, 1], "subsample": 3}},
                 "transfer": {"milestones": [2]},
                 "subsample": 3, "sweep": {"subsample": [3], "layers": [1, 3], "seeds": [0, 1]},
                 "report": {"subsample": 3, "layer": 3}, "freeze": "block1.layer1",
                 # depth 10: conv0, block1.layer1, trans1, block2.layer1, trans2, ...
                 "features": {"layers": ["conv0", "final"]}},
    "seed-004": {"model": {"alexnet": {"channels": [8, 8, 8, 8, 8], "fc": 16}},
                 "subsample": 3, "sweep": {"subsample": [1, 3], "layers": [1, 7]},
                 "report": {"subsample": 3, "layer": 7},
                 "features": {"layers": ["conv1", "fc7"]}},
}
FILES = {
    "seed-000": {"cifar10": fx.write_cifar10_archive, "voc2012": fx.write_voc_archive},
    "seed-001": {"cifar100": fx.write_cifar100_archive},
    "seed-004": {"tinyimagenet": fx.write_tinyimagenet_zip},
}


def test_the_three_papers_have_presets():
    assert [p[:8] for p in PRESETS] == ["seed-000", "seed-001", "seed-004"]


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_validates_over_the_shipped_params(name):
    params = parse_params(apply_preset(name, ROOT / "params.yaml", ROOT / "presets"))
    assert params.dataset != "digits"
    preset = yaml.safe_load((ROOT / "presets" / f"{name}.yaml").read_text())
    args = exp_args(preset)
    assert args[0] == "-S" and f"arch={json.dumps(preset['arch'])}" in args


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_runs_through_report_on_fixture_data(tmp_path, name):
    key = name[:8]
    files = tmp_path / "files"
    manifest = {}
    for dataset, writer in FILES[key].items():
        written = writer(files)
        manifest[dataset] = written[0] if isinstance(written, tuple) else written
    path = fx.write_manifest(manifest, tmp_path / "manifest.json")
    project = make_project(tmp_path / "project", ROOT)
    raw = apply_preset(name, ROOT / "params.yaml", ROOT / "presets")
    with fx.serve_directory(files) as server:
        raw = merge(merge(raw, TINY_RUN), SHRINK[key])
        raw = merge(raw, {"data": {"root": str(tmp_path / "raw"), "mirror": str(server),
                                   "manifest": str(path)}})
        parse_params(raw)
        write_params(project / "params.yaml", raw)
        ran = run_pipeline(project)
    assert ran[:2] == ["validate", "prepare"] and ran[-1] == "report"
    summary = json.loads((project / "metrics/summary.json").read_text())
    pretrain = json.loads((project / "results/pretrain/A.json").read_text())
    if key == "seed-000":  # feedback net: an accuracy per iteration; VOC target: mAP
        assert len(pretrain["test_iteration_accuracy"]) == 2
        assert summary["metric"] == "map"
    if key == "seed-001":  # binary auxiliary head: the paired comparison is in the report
        assert summary["binary_aux"]["seeds"] == 2
        assert "Binary auxiliary heads" in (project / "metrics/summary.md").read_text()
    if key == "seed-004":  # swapped study: both directions trained
        sweep = json.loads((project / "results/sweep/seed-0.json").read_text())
        assert {v["direction"] for v in sweep["variants"]} == {"AB", "BA"}


def test_wrn_trains_through_the_pipeline_on_the_digits(tmp_path):
    project = make_project(tmp_path / "project", ROOT)
    raw = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), merge(TINY_RUN, {
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

    from transferlab.presets import main

    monkeypatch.chdir(ROOT)
    assert main([name, "--exp-args"]) == 0
    words = shlex.split(capsys.readouterr().out)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for flag, assignment in zip(words[::2], words[1::2], strict=True):
        assert flag == "-S"
        key, value = assignment.split("=", 1)
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    assert raw == apply_preset(name, ROOT / "params.yaml", ROOT / "presets")


@pytest.mark.parametrize("argv", [[], ["seed-004"], ["seed-004", "--exp-args"]])
def test_run_outside_the_project_says_where_it_looked_and_fails(tmp_path, capsys, monkeypatch,
                                                                argv):
    from transferlab.presets import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) != 0
    out, err = capsys.readouterr()
    assert out == ""
    assert str(tmp_path / "presets") in err and "project root" in err
    (tmp_path / "presets").mkdir()
    assert main(argv) != 0
    assert "holds no *.yaml" in capsys.readouterr().err
    if argv:  # presets found, but no params.yaml to lay them over
        (tmp_path / "presets" / "seed-004-x.yaml").write_text("seed: 1\n")
        assert main(argv) != 0
        assert str(tmp_path / "params.yaml") in capsys.readouterr().err
