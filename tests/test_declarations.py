"""dvc.yaml against what the code really does.

Every stage declares, the DVC way, the params it reads (from params.yaml, and under
`recipe.yaml:` from the recipe file) and its code (its script, the package folders and
leaf modules it imports). Fewer declared than read or imported serves stale results;
more declared reruns stages for nothing. The reads are recorded by the params tree
by tests/read_recorder.py while the real stage scripts run; the
imports are read from the source (tests/import_closure.py).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from transferlab import keys
from transferlab.config.params import PARAMS_FILE, RECIPE_FILE, home_file, parse_params
from transferlab.config.spec import Section

from .conftest import ROOT, TINY, deep_update, write_params
from .import_closure import PACKAGE_DIR, import_closure
from .pipeline_runner import make_project, run_pipeline

DVC_YAML = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]

# Keys a stage reads only for some datasets or models, which the two tiny runs below
# cannot reach (no download, no torchvision weights here); each says where it is read.
READ_ONLY_SOMETIMES = {
    "prepare": {
        "data.root": "downloaded datasets (mnist, fashion-mnist, cifar, voc, tinyimagenet, "
                     "miniplaces)",
        "data.mirror": "when a dataset is downloaded",
        "data.manifest": "when a dataset is downloaded",
        "data.path": "dataset imagefolder",
        "data.source_path": "dataset imagefolder",
        "data.target_path": "dataset imagefolder",
        "data.voc_lists": "datasets voc2007, voc2012",
        "data.classes_file": "data.split: file",
        "model.pretrained": "data.normalise: pretrained (arch pretrained: the weights' input)",
    },
    "features": {"features.weights": "features.source_model: torchvision:<name>",
                 "features.input_size": "features.source_model: torchvision:<name>"},
}
# LP-FT's keys are read by treatment LP-FT only, which only a sweep runs (the top-level
# params describe base, AnB(+) or BnB(+)); stages transfer and binary_aux declare the
# whole transfer section.
for _stage in ("transfer", "binary_aux"):
    for _key in ("transfer.lp_ft.head_share", "transfer.lp_ft.lr_mult"):
        READ_ONLY_SOMETIMES.setdefault(_stage, {})[_key] = "treatment LP-FT (sweep only)"
# AP (and so its definition) is scored only for multi-label targets (voc2007, voc2012).
for _stage in ("pretrain", "transfer", "sweep", "binary_aux", "heads"):
    READ_ONLY_SOMETIMES.setdefault(_stage, {})["heads.ap"] = "multi-label targets (VOC)"


def _spec(name: str) -> dict:
    spec = STAGES[name]
    return spec.get("do", spec)


def _leaves(section, prefix: str = "") -> set[str]:
    out = set()
    for f in dataclasses.fields(section):
        value = object.__getattribute__(section, f.name)
        if isinstance(value, Section):
            out |= _leaves(value, f"{prefix}{f.name}.")
        else:
            out.add(prefix + f.name)
    return out


def declared_leaves(name: str, params, dvc_yaml: Path = ROOT / "dvc.yaml") -> set[str]:
    """Every leaf key a stage declares, a whole section standing for all its keys."""
    out = set()
    for file_keys in keys.stage_params(name, params, dvc_yaml).values():
        for key in file_keys:
            value = params
            for part in key.split("."):
                value = object.__getattribute__(value, part)
            out |= _leaves(value, key + ".") if isinstance(value, Section) else {key}
    return out


def undeclared_imports(name: str, dvc_yaml: Path = ROOT / "dvc.yaml") -> list[str]:
    """Package files the stage's script imports that lie under none of its declared deps."""
    root = dvc_yaml.parent
    script = next(w for w in _spec(name)["cmd"].split() if w.endswith(".py"))
    declared = {p.resolve() for p in keys.code_files(keys.code_deps(name, dvc_yaml), root)}
    imported = [ROOT / script, *import_closure(ROOT / script)]
    src = PACKAGE_DIR.parent.parent
    return [p.relative_to(src).as_posix() for p in imported
            if (root / p.relative_to(src)).resolve() not in declared]


def unused_code_deps(name: str) -> list[str]:
    """Declared code deps that hold no file the stage's script imports (needless reruns)."""
    script = next(w for w in _spec(name)["cmd"].split() if w.endswith(".py"))
    used = {p.relative_to(ROOT).as_posix() for p in import_closure(ROOT / script)} | {script}
    return [d for d in keys.code_deps(name, ROOT / "dvc.yaml")
            if not any(u == d or u.startswith(d + "/") for u in used)]


def test_no_stage_is_always_changed_and_no_generated_inputs():
    for name in STAGES:
        assert not _spec(name).get("always_changed"), name
        assert not [d for d in _spec(name).get("deps", []) if d.startswith("data/inputs")]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_module_a_stage_imports_lies_under_its_declared_deps(name):
    assert undeclared_imports(name) == [], f"stage {name}: add these (or their folders) " \
        "to its deps in dvc.yaml"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_declared_code_dep_is_imported(name):
    assert unused_code_deps(name) == []


def test_removing_a_code_declaration_is_caught(tmp_path):
    """What the test above reports when dvc.yaml forgets one of heads' code folders."""
    text = (ROOT / "dvc.yaml").read_text()
    heads = text.index("\n  heads:\n")
    line = "      - src/transferlab/heads\n"
    cut = text.index(line, heads)
    (tmp_path / "dvc.yaml").write_text(text[:cut] + text[cut + len(line):])
    shutil.copytree(ROOT / "stages", tmp_path / "stages")
    shutil.copytree(PACKAGE_DIR, tmp_path / "src" / "transferlab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    missing = undeclared_imports("heads", tmp_path / "dvc.yaml")
    assert "src/transferlab/heads/per_layer.py" in missing
    assert "src/transferlab/heads/fit.py" in missing


def test_declared_keys_live_in_the_file_dvc_yaml_names():
    params = parse_params(TINY)
    for name in STAGES:
        for file, file_keys in keys.stage_params(name, params, ROOT / "dvc.yaml").items():
            assert file in (PARAMS_FILE, RECIPE_FILE), f"{name}: {file}"
            for key in file_keys:
                assert home_file(key) == file, f"{name}: {key} is declared from {file}"


def test_model_params_follow_the_arch_by_templating():
    for name in STAGES:
        declared = [p for p in _spec(name).get("params", []) if isinstance(p, str)]
        assert "model" not in declared, f"{name}: depends on every arch's section"


# A default-like tiny run and one that takes the other branches: SGD with step decays,
# binary heads, crops with padding and mirrors, the swapped sweep.
BRANCHES = {
    "sgd": {"optimizer": "sgd", "milestones": [1]},
    "pretrain": {"binary_aux": {"heads": 1, "in_model_A": True, "compare": True,
                                "seeds": [0], "subsample": 3}},
    "data": {"crop": 6, "pad": 1, "flip": True},
    "sweep": {"swap": True, "treatments": ["base", "AnB", "AnB+", "BnB", "AnB-2fc", "LP",
                                           "FT", "LP-FT"]},
    "transferability": {"linear_probe": True},
    # One candidate source network (its weights written by `reads`), ranked against its
    # LP-FT at 32 px (the treatment that reads most of transfer's recipe): rank_sources
    # reads its keys only when there is one.
    "ranking": {"candidates": [{"name": "torchvision:squeezenet1_1",
                                "weights": "data/raw/weights/squeezenet1_1.pth"}],
                "subsample": 2, "finetune": "LP-FT"},
}


def _other_branches() -> dict:
    changes = {k: v for k, v in BRANCHES.items() if k != "sgd"}
    changes = deep_update(changes, {"pretrain": dict(BRANCHES["sgd"], epochs=2),
                                    "transfer": dict(BRANCHES["sgd"], milestones=[2]),
                                    "data": {"image_size": 32}})
    return changes


def _save_library_weights(name: str, path: Path) -> None:
    """The library model's own state dict (weights=None: nothing is downloaded here)."""
    import torch
    from torchvision.models import get_model

    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(get_model(name.partition(":")[2], weights=None).state_dict(), path)


@pytest.fixture(scope="module")
def reads(tmp_path_factory):
    """{stage: keys read} over both runs of the real stage scripts."""
    collected: dict[str, set[str]] = {}
    for i, changes in enumerate(({}, _other_branches())):
        project = make_project(tmp_path_factory.mktemp(f"reads{i}"), ROOT)
        for candidate in changes.get("ranking", {}).get("candidates", []):
            _save_library_weights(candidate["name"], project / candidate["weights"])
        write_params(project / "params.yaml", deep_update(TINY, changes))
        run_pipeline(project, reads=collected)
    return collected


@pytest.mark.parametrize("name", sorted(STAGES))
def test_declared_params_are_exactly_what_the_stage_reads(name, reads):
    declared = declared_leaves(name, parse_params(TINY))
    read = reads[name]
    sometimes = set(READ_ONLY_SOMETIMES.get(name, {}))
    assert read <= declared, f"stage {name} reads undeclared params (stale results): " \
        f"{sorted(read - declared)}"
    assert declared - sometimes <= read, f"stage {name} declares params it never reads " \
        f"(needless reruns): {sorted(declared - sometimes - read)}"
    assert sometimes <= declared


def test_removing_a_params_declaration_is_caught(reads, tmp_path):
    """What the test above reports when dvc.yaml forgets heads' `heads` section."""
    text = (ROOT / "dvc.yaml").read_text()
    heads = text.index("\n  heads:\n")
    cut = text.index("          - heads\n", heads)
    (tmp_path / "dvc.yaml").write_text(text[:cut] + text[cut + len("          - heads\n"):])
    declared = declared_leaves("heads", parse_params(TINY), tmp_path / "dvc.yaml")
    assert "heads.cv_folds" in reads["heads"] - declared


def test_cache_keys_derive_from_the_declarations(tmp_path):
    """The variant and checkpoint keys hash the declared params and the declared code:
    an edit under a declared folder changes a stage's key, one elsewhere does not."""
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copytree(ROOT / "stages", tmp_path / "stages")
    shutil.copytree(PACKAGE_DIR, tmp_path / "src" / "transferlab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    params = parse_params(TINY)
    before = {s: keys.declared(s, params, tmp_path / "dvc.yaml") for s in ("sweep@0", "heads")}
    flat = {k for ks in keys.stage_params("sweep@0", params, ROOT / "dvc.yaml").values()
            for k in ks}
    assert set(before["sweep@0"].params) == flat
    assert "transfer" in flat and "model.convnet" in flat  # recipe section, templated key
    with open(tmp_path / "src/transferlab/heads/fit.py", "a") as fh:
        fh.write("# an edit\n")
    after = {s: keys.declared(s, params, tmp_path / "dvc.yaml") for s in before}
    assert after["sweep@0"] == before["sweep@0"]
    assert after["heads"].code != before["heads"].code
    with open(tmp_path / "src/transferlab/training/loop.py", "a") as fh:
        fh.write("# an edit\n")
    assert keys.declared("sweep@0", params, tmp_path / "dvc.yaml").code != \
        before["sweep@0"].code
