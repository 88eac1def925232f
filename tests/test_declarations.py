"""dvc.yaml against what the code really does: each stage depends on the import closure
of its script (through validate's data/inputs/<stage>.json), and its params are exactly
the keys it reads.

Fewer declared than read serves stale results; more declared than read reruns
stages for nothing. The reads are recorded by the params tree itself
(transferlab.config.spec.recording) while the real stage scripts run.
"""

from __future__ import annotations

import dataclasses

import pytest
from ruamel.yaml import YAML

from transferlab import stage as stage_module
from transferlab.config.params import PARAMS_FILE, RECIPE_FILE, home_file, parse_params
from transferlab.config.spec import Section
from transferlab.inputs import stage_inputs
from transferlab.keys import (
    PACKAGE_DIR,
    file_digest,
    import_closure,
    recipe_keys,
    stage_params,
    stage_script,
)

from .conftest import ROOT, TINY, deep_update, write_params
from .pipeline_runner import make_project, run_pipeline

DVC_YAML = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]
SRC = PACKAGE_DIR.parent  # the folder holding the package

# Keys a stage reads only for some datasets or models, which the two tiny runs below
# cannot reach (no download, no torchvision weights here); each says where it is read.
READ_ONLY_SOMETIMES = {
    "prepare": {
        "data.root": "downloaded datasets (mnist, cifar, voc, tinyimagenet, miniplaces)",
        "data.mirror": "when a dataset is downloaded",
        "data.manifest": "when a dataset is downloaded",
        "data.path": "dataset imagefolder",
        "data.source_path": "dataset imagefolder",
        "data.target_path": "dataset imagefolder",
        "data.voc_lists": "dataset voc2012",
        "data.classes_file": "data.split: file",
    },
    "features": {"features.weights": "features.source_model: torchvision:<name>",
                 "features.input_size": "features.source_model: torchvision:<name>"},
}
# AP (and so its definition) is scored only for multi-label targets (voc2012).
for _stage in ("pretrain", "transfer", "sweep", "binary_aux", "heads"):
    READ_ONLY_SOMETIMES.setdefault(_stage, {})["heads.ap"] = "multi-label targets (voc2012)"
# validate reads the whole file on purpose (unknown keys, bad values) and runs on every
# `dvc repro` (always_changed), so it declares no params.
NOT_TRACKED = {"validate"}


def _stage_spec(name: str) -> dict:
    spec = STAGES[name]
    return spec.get("do", spec)


@pytest.mark.parametrize("name", sorted(set(STAGES) - {"validate"}))
def test_each_stage_depends_on_its_inputs_file_and_lists_no_source_file(name):
    deps = [str(d) for d in _stage_spec(name)["deps"]]
    assert f"data/inputs/{name}.json" in deps
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in STAGES["validate"]["outs"]]
    assert f"data/inputs/{name}.json" in outs
    # Code reaches the stage through the inputs file: one column in `dvc exp show`.
    assert not [d for d in deps if d.startswith(("src/", "stages/"))]


@pytest.mark.parametrize("name", sorted(set(STAGES) - {"validate"}))
def test_inputs_file_digests_the_script_and_its_import_closure(name):
    script = stage_script(name, ROOT / "dvc.yaml")
    code = stage_inputs(parse_params(TINY), name, ROOT)["code"]
    closure = {p.relative_to(SRC).as_posix() for p in import_closure(ROOT / script)}
    assert set(code) == {script} | closure
    assert code[script] == file_digest(ROOT / script)


def test_declared_keys_live_in_the_file_dvc_yaml_names():
    for name in STAGES:
        spec = _stage_spec(name)
        for key in spec.get("params", []):
            assert home_file(key.split(".$")[0]) == PARAMS_FILE, f"{name}: {key}"
        for key in recipe_keys(name, ROOT / "dvc.yaml"):
            assert home_file(key) == RECIPE_FILE, f"{name}: meta.recipe {key}"


def _leaves(section, prefix: str = "") -> set[str]:
    out = set()
    for f in dataclasses.fields(section):
        value = object.__getattribute__(section, f.name)
        if isinstance(value, Section):
            out |= _leaves(value, f"{prefix}{f.name}.")
        else:
            out.add(prefix + f.name)
    return out


# A default-like tiny run and one that takes the other branches: SGD with step decays,
# binary heads, crops with padding and mirrors, the swapped sweep.
BRANCHES = {
    "sgd": {"optimizer": "sgd", "milestones": [1]},
    "pretrain": {"binary_aux": {"heads": 1, "in_model_A": True, "compare": True,
                                "seeds": [0], "subsample": 3}},
    "data": {"crop": 6, "pad": 1, "flip": True},
    "sweep": {"swap": True, "treatments": ["base", "AnB", "AnB+", "BnB", "AnB-2fc"]},
    "transferability": {"linear_probe": True},
}


def _other_branches() -> dict:
    changes = {k: v for k, v in BRANCHES.items() if k != "sgd"}
    changes = deep_update(changes, {"pretrain": dict(BRANCHES["sgd"], epochs=2),
                                    "transfer": dict(BRANCHES["sgd"], milestones=[2])})
    return changes


@pytest.fixture(scope="module")
def reads(tmp_path_factory):
    """{stage: keys read} over both runs of the real stage scripts."""
    collected: dict[str, set[str]] = {}
    for i, changes in enumerate(({}, _other_branches())):
        project = make_project(tmp_path_factory.mktemp(f"reads{i}"), ROOT)
        write_params(project / "params.yaml", deep_update(TINY, changes))
        stage_module.READS.clear()
        run_pipeline(project)
        for full, keys in stage_module.READS.items():
            collected.setdefault(full.split("@")[0], set()).update(keys)
    return collected


@pytest.mark.parametrize("name", sorted(set(STAGES) - NOT_TRACKED))
def test_declared_params_are_exactly_what_the_stage_reads(name, reads):
    params = parse_params(TINY)
    declared = set()
    for key in stage_params(name, params, ROOT / "dvc.yaml"):
        value = params
        for part in key.split("."):
            value = object.__getattribute__(value, part)
        declared |= _leaves(value, key + ".") if isinstance(value, Section) else {key}
    read = reads[name]
    sometimes = set(READ_ONLY_SOMETIMES.get(name, {}))
    assert read <= declared, f"stage {name} reads undeclared params (stale results): " \
        f"{sorted(read - declared)}"
    assert declared - sometimes <= read, f"stage {name} declares params it never reads " \
        f"(needless reruns): {sorted(declared - sometimes - read)}"
    assert sometimes <= declared


def test_validate_runs_every_time_and_declares_nothing():
    spec = STAGES["validate"]
    assert spec.get("always_changed") is True
    assert "params" not in spec and "deps" not in spec


def test_model_params_follow_the_arch_by_templating():
    for name in STAGES:
        declared = _stage_spec(name).get("params", [])
        assert "model" not in declared, f"{name}: depends on every arch's section"
