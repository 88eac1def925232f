import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from transferlab.config.params import (
    ParamsError,
    check_subsample,
    load_params,
    parse_params,
    read_params_file,
)
from transferlab.stage import run_stage

from .conftest import deep_update, write_params
from .pipeline_runner import make_project
from .read_recorder import recording

ROOT = Path(__file__).resolve().parent.parent

# (change, key named in the message, a fragment of what is allowed)
BAD = [
    ({"dataset": "imagenet"}, "dataset = 'imagenet'", "one of digits, mnist"),
    ({"arch": "resnet"}, "arch = 'resnet'", "one of convnet, alexnet"),
    ({"freeze": "conv9"}, "freeze = 'conv9'", "a layer name of arch 'convnet'"),
    ({"model": {"convnet": {"width": "wide"}}}, "model.convnet.width = 'wide'", "an integer"),
    # Degenerate networks: a chance-level model must not be recorded as a result.
    ({"model": {"convnet": {"hidden": 0}}}, "model.convnet.hidden = 0", "from 1 to"),
    ({"model": {"convnet": {"width": 0}}}, "model.convnet.width = 0", "from 1 to"),
    ({"model": {"alexnet": {"channels": [96, 256]}}}, "model.alexnet.channels = [96, 256]",
     "5 values"),
    ({"model": {"convnet": {"depth": 3}}}, "unknown key 'model.convnet.depth'", "hidden"),
    ({"data": {"split": "random", "source_dataset": "cifar100", "target_dataset": "voc2012"}},
     "data.split = 'random'", "fixed or file"),
    ({"data": {"split": "file"}}, "data.classes_file = None", "YAML file"),
    ({"data": {"source_dataset": "svhn"}}, "data.source_dataset = 'svhn'", "one of digits"),
    ({"dataset": "imagefolder"}, "data.path = None", "one sub-folder per class"),
    ({"data": {"image_size": 2}}, "data.image_size = 2", "from 4 to 1024"),
    ({"data": {"source_classes": "most"}}, "data.source_classes = 'most'", '"all"'),
    ({"data": {"target_classes": "all"}}, "data.target_classes = 'all'", "a list of classes"),
    ({"pretrain": {"epochs": 30, "milestones": [20, 10]}}, "pretrain.milestones = [20, 10]",
     "increasing"),
    ({"pretrain": {"epochs": 5, "milestones": [5]}}, "pretrain.milestones[0] = 5",
     "before the last"),
    ({"pretrain": {"binary_aux": {"weight": 1.5}}}, "pretrain.binary_aux.weight = 1.5",
     "<= 1.0"),
    ({"pretrain": {"binary_aux": {"heads": 0, "in_model_A": True}}},
     "pretrain.binary_aux.in_model_A = True", "false when pretrain.binary_aux.heads is 0"),
    ({"pretrain": {"binary_aux": {"heads": 0, "compare": True}}},
     "pretrain.binary_aux.compare = True", "false when pretrain.binary_aux.heads is 0"),
    ({"heads": {"ap": "voc10"}}, "heads.ap = 'voc10'", "voc07, voc12, sklearn"),
    ({"transfer": {"epochs": 0}}, "transfer.epochs = 0", "from 1 to"),
    ({"features": {"augment": {"rotate": 270}}}, "features.augment.rotate = 270", "<= 180"),
    ({"transfer": {"copied_milestones": [3, 2]}}, "transfer.copied_milestones = [3, 2]",
     "increasing"),
    ({"features": {"source_model": "resnet18"}}, "features.source_model = 'resnet18'",
     "torchvision:<model name>"),
    ({"heads": {"heads": ["svm", "knn"]}}, "heads.heads[1] = 'knn'", "random_forest"),
    ({"heads": {"lowshot": {"layers": ["conv9"]}}}, "heads.lowshot.layers[0] = 'conv9'",
     "conv1"),
    ({"features": {"pool": "max"}}, "features.pool = 'max'", "flatten, avg"),
    ({"diagnostics": {"tsne_iterations": 100}}, "diagnostics.tsne_iterations = 100",
     "from 250 to"),
    ({"diagnostics": {"decoder_lr": 0}}, "diagnostics.decoder_lr = 0", "> 0.0"),
    ({"features": {"source_model": "torchvision:resnet18"}}, "features.weights = None",
     "local weights file"),
    ({"heads": {"transform": "pca"}}, "heads.transform = 'pca'", "l2, power"),
    ({"heads": {"lowshot": {"shots": [0]}}}, "heads.lowshot.shots[0] = 0", "from 1 to"),
    ({"source": "C"}, "source = 'C'", "one of A, B"),
    ({"freeze": 6}, "freeze = 6", "from 0 to 5"),
    ({"freeze": -1}, "freeze = -1", "from 0 to 5"),
    ({"freeze": "3"}, "freeze = '3'", "a layer count or a layer name"),
    ({"freeze": 2.5}, "freeze = 2.5", "an integer"),
    ({"finetune": "yes"}, "finetune = 'yes'", "true or false"),
    ({"subsample": -2}, "subsample = -2", "from 0 to"),
    ({"seed": True}, "seed = True", "an integer"),
    ({"sweep": {"treatments": ["base", "CnB"]}}, "sweep.treatments[1] = 'CnB'", "AnB+"),
    ({"sweep": {"treatments": []}}, "sweep.treatments = []", "non-empty"),
    ({"sweep": {"layers": []}}, "sweep.layers = []", "non-empty"),
    ({"sweep": {"seeds": []}}, "sweep.seeds = []", "non-empty"),
    ({"sweep": {"subsample": []}}, "sweep.subsample = []", "non-empty"),
    ({"sweep": {"layers": [1, 7]}}, "sweep.layers[1] = 7", "from 1 to 5"),
    ({"sweep": {"layers": [1, 1]}}, "sweep.layers = [1, 1]", "without repeated"),
    ({"sweep": {"subsample": [-1]}}, "sweep.subsample[0] = -1", "from 0 to"),
    ({"sweep": {"seeds": "0"}}, "sweep.seeds = '0'", "a list"),
    ({"features": {"layers": ["conv9"]}}, "features.layers[0] = 'conv9'", "conv1"),
    ({"transfer": {"lr": 0}}, "transfer.lr = 0", "> 0.0"),
    ({"transfer": {"lr_mult": 2}}, "transfer.lr_mult = 2", "<= 1.0"),
    ({"transfer": {"optimizer": "rmsprop"}}, "transfer.optimizer = 'rmsprop'", "adam, sgd"),
    ({"pretrain": {"epochs": 0}}, "pretrain.epochs = 0", "from 1 to"),
    ({"data": {"split": "halves"}}, "data.split = 'halves'", "fixed, random"),
    ({"data": {"target_classes": [4, 5]}}, "data.target_classes = [4, 5]", "disjoint"),
    ({"data": {"test_fraction": 1.5}}, "data.test_fraction = 1.5", "<= 0.9"),
    ({"heads": {"svm": {"C": [0, 1]}}}, "heads.svm.C[0] = 0", "> 0.0"),
    ({"heads": {"cv_folds": 1}}, "heads.cv_folds = 1", "from 2 to"),
    ({"report": {"layer": 4}}, "report.layer = 4", "one of sweep.layers"),
    ({"report": {"subsample": 7}}, "report.subsample = 7", "one of sweep.subsample"),
    ({"model": None, "data": 3}, "data = 3", "a mapping"),
]


def test_the_shipped_params_file_is_the_one_place_of_defaults():
    shipped = load_params(ROOT / "params.yaml")
    assert shipped.treatment == "AnB" and shipped.freeze == 3
    # No value comes from code: any key left out is an error naming it.
    with pytest.raises(ParamsError, match="missing key 'dataset'"):
        parse_params({})
    raw = read_params_file(ROOT / "params.yaml")
    del raw["transfer"]["lr_mult"]
    with pytest.raises(ParamsError, match="missing key 'transfer.lr_mult'"):
        parse_params(raw)
    raw = read_params_file(ROOT / "params.yaml")
    del raw["model"]["wrn"]["widen"]
    with pytest.raises(ParamsError, match="missing key 'model.wrn.widen'"):
        parse_params(raw)


@pytest.mark.parametrize(("change", "key", "allowed"), BAD, ids=[b[1] for b in BAD])
def test_bad_values_are_refused_with_key_value_and_what_is_allowed(tiny_raw, change, key,
                                                                   allowed):
    with pytest.raises(ParamsError) as err:
        parse_params(deep_update(tiny_raw, change))
    assert key in str(err.value) and allowed in str(err.value)


def test_unknown_keys_are_refused_with_the_allowed_ones(tiny_raw):
    with pytest.raises(ParamsError, match=r"unknown key 'frezee'.*freeze"):
        parse_params({**tiny_raw, "frezee": 3})
    with pytest.raises(ParamsError, match=r"unknown key 'transfer.epoch'.*steps"):
        parse_params(deep_update(tiny_raw, {"transfer": {"epoch": 3}}))


def test_subsample_above_the_smallest_class_is_refused():
    with pytest.raises(ParamsError, match=r"subsample = 130 .* at most 120"):
        check_subsample("subsample", 130, 120)
    check_subsample("subsample", 120, 120)


def test_freeze_accepts_a_layer_name_as_up_to_and_including_it(tiny_raw):
    assert parse_params({**tiny_raw, "freeze": "conv3"}).freeze == 3
    assert parse_params({**tiny_raw, "freeze": "fc5"}).freeze == 5


def test_model_sections_keep_every_arch_and_fill_defaults(tiny_raw):
    p = parse_params(tiny_raw)
    assert p.model_kwargs == {"width": 4, "hidden": 16}
    fields = {f.name for f in dataclasses.fields(p.model)}
    assert fields == set(__import__("transferlab.models").models.ARCHITECTURES)


def test_treatment_follows_the_top_level_keys(tiny_raw):
    assert parse_params({**tiny_raw, "freeze": 0, "finetune": True}).treatment == "base"
    assert parse_params({**tiny_raw, "source": "B", "finetune": True}).treatment == "BnB+"


def _stage_in(tmp_path: Path, raw: dict, stage: str):
    make_project(tmp_path, ROOT)
    write_params(tmp_path / "params.yaml", raw)
    return subprocess.run([sys.executable, f"stages/{stage}.py"], cwd=tmp_path,
                          capture_output=True, text=True)


@pytest.mark.parametrize("stage", ["prepare", "transfer", "report"])
def test_a_stage_refuses_bad_params_before_any_work(tmp_path, tiny_raw, stage):
    proc = _stage_in(tmp_path, {**tiny_raw, "freeze": 9}, stage)
    assert proc.returncode == 2
    assert "freeze = 9" in proc.stderr and "from 0 to 5" in proc.stderr
    assert not (tmp_path / "data" / "prepared").exists() and not (tmp_path / "results").exists()


def test_sweep_refuses_a_subsample_larger_than_a_class_and_writes_nothing(tmp_path,
                                                                          tiny_raw):
    # prepare does not read the sizes (changing them must not re-decode the dataset);
    # the stages that draw them refuse them before any training.
    raw = deep_update(tiny_raw, {"sweep": {"subsample": [1, 500]},
                                 "report": {"layer": 3, "subsample": 1}})
    assert _stage_in(tmp_path, raw, "prepare").returncode == 0
    proc = subprocess.run([sys.executable, "stages/sweep.py", "--seed", "0"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "sweep.subsample[1] = 500" in proc.stderr and "smallest target class" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_params_are_read_with_the_yaml_rules_dvc_uses(tmp_path):
    # YAML 1.2 (DVC): 3e-4 is a number; PyYAML's YAML 1.1 would read the string '3e-4'.
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    text = (ROOT / "recipe.yaml").read_text().replace("  lr: 0.001\n", "  lr: 3e-4\n", 1)
    (tmp_path / "recipe.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml").pretrain.lr == 3e-4
    (tmp_path / "recipe.yaml").write_text(text + "report: {}\n")
    with pytest.raises(ParamsError, match="not valid YAML"):  # a duplicate key
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize("text", ["freez: 2\n", "foo: 1\n"])
def test_unknown_top_level_keys_are_refused(tmp_path, text):
    shutil.copy(ROOT / "recipe.yaml", tmp_path / "recipe.yaml")
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text() + text)
    with pytest.raises(ParamsError, match=f"unknown key '{text.split(':')[0]}'"):
        load_params(tmp_path / "params.yaml")


def test_a_misspelt_nested_key_is_refused(tiny_raw):
    with pytest.raises(ParamsError, match="unknown key 'sweep.layer'; keys allowed in sweep"):
        parse_params(deep_update(tiny_raw, {"sweep": {"layer": [1]}}))


def test_reads_are_recorded_by_dotted_key_and_validation_is_not_a_read(tiny_raw):
    from transferlab.config import params as params_module

    with recording() as reads:  # as run_stage's load_params calls it
        p = params_module.parse_params(tiny_raw)
    assert reads == set()
    with recording() as reads:
        p.transfer.lr, p.model_kwargs, p.heads.svm.C  # noqa: B018
        p.data  # noqa: B018  (a section is not a value)
    assert reads == {"transfer.lr", "arch", "model.convnet", "heads.svm.C"}


def test_a_stage_fails_when_the_params_files_change_under_it(tmp_path, tiny_raw,
                                                             monkeypatch, capsys):
    """DVC records the params it finds when a stage ends: a file rewritten meanwhile (a
    refused `dvc exp run -S`) would pair the outputs with values they were not made with."""
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", tiny_raw)
    out = tmp_path / "out.txt"

    def main(params):
        out.write_text("made with lr 0.001")
        write_params(tmp_path / "params.yaml",
                     deep_update(tiny_raw, {"pretrain": {"lr": 0.0013}}))

    with pytest.raises(SystemExit) as exc:
        run_stage("probe", main, [out])
    assert exc.value.code == 1
    assert "the params files changed while the stage ran" in capsys.readouterr().err
    assert not out.exists()
    run_stage("probe", lambda params: out.write_text("ok"), [out])  # unchanged: kept
    assert out.read_text() == "ok"


def test_heads_on_iterations_need_a_feedback_net_with_iteration_features():
    from .conftest import complete

    feedback = {"arch": "feedback", "freeze": 3, "sweep": {"layers": [1, 3]},
                "report": {"layer": 3}, "features": {"layers": ["lstm12"]},
                "heads": {"lowshot": {"layers": None}, "on_iterations": [4]}}
    assert parse_params(complete(feedback)).heads.on_iterations == (4,)
    with pytest.raises(ParamsError, match=r"heads.on_iterations\[0\] = 5 .* from 1 to 4"):
        parse_params(complete({**feedback, "heads": {"on_iterations": [5]}}))
    with pytest.raises(ParamsError, match=r"heads.on_iterations\[0\] = 1 .*\(arch feedback\)"):
        parse_params(complete({"heads": {"on_iterations": [1]}}))


def test_the_two_files_hold_every_key_once_in_its_place(tmp_path, tiny_raw):
    write_params(tmp_path / "params.yaml", tiny_raw)
    assert read_params_file(tmp_path / "params.yaml") == tiny_raw
    study = yaml.safe_load((tmp_path / "params.yaml").read_text())
    recipe = yaml.safe_load((tmp_path / "recipe.yaml").read_text())
    assert set(study["data"]) == {"split", "crop", "pad", "flip"}
    assert "pretrain" in recipe and "pretrain" not in study
    assert set(study["transfer"]) == {"steps", "lr", "lr_mult"}
    assert set(recipe["transfer"]) & set(study["transfer"]) == set()
    # The shipped files follow the same layout.
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert shipped.keys() == study.keys() and shipped["data"].keys() == study["data"].keys()


def test_a_key_in_both_files_or_in_the_wrong_one_is_refused(tmp_path, tiny_raw):
    path = tmp_path / "params.yaml"
    write_params(path, tiny_raw)
    recipe = (tmp_path / "recipe.yaml").read_text()
    (tmp_path / "recipe.yaml").write_text(recipe + "seed: 1\n")
    with pytest.raises(ParamsError, match="'seed' is set in both params.yaml and recipe.yaml"):
        load_params(path)
    # `dvc exp run -S +pretrain.epochs=3` would add the key to params.yaml.
    (tmp_path / "recipe.yaml").write_text(recipe.replace("  epochs: 2\n", "", 1))
    with open(path, "a") as fh:
        fh.write("pretrain:\n  epochs: 3\n")
    with pytest.raises(ParamsError, match=r"'pretrain.epochs' is in params.yaml, but its place is "
                                          r"recipe.yaml.*-S recipe.yaml:pretrain.epochs=") as err:
        load_params(path)
    assert "recipe.yaml" in str(err.value)
    (tmp_path / "recipe.yaml").write_text(recipe)
    write_params(path, tiny_raw)
    assert load_params(path).pretrain.epochs == tiny_raw["pretrain"]["epochs"]


def test_a_missing_recipe_file_is_named(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    with pytest.raises(ParamsError, match=r"recipe.yaml not found"):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize("key", ["path", "manifest"])
def test_a_path_outside_data_root_is_refused_naming_both(tiny_raw, tmp_path, key):
    outside = {"dataset": "imagefolder"} if key == "path" else {}
    raw = deep_update(tiny_raw, {**outside, "data": {"root": str(tmp_path / "raw"),
                                                     key: str(tmp_path / "elsewhere")}})
    with pytest.raises(ParamsError, match=rf"data.{key} = .*elsewhere.* under data.root"):
        parse_params(raw)
    inside = deep_update(raw, {"data": {key: str(tmp_path / "raw" / "x")}})
    parse_params(inside)


# The red-team's §4: values that passed validation, each set as `dvc exp run -S` sets it
# (written into its file, read back with DVC's YAML rules).
UNFINISHABLE = [
    ({"pretrain": {"epochs": 100000000000000000000}},
     "pretrain.epochs = 100000000000000000000", "an integer from 1 to 10000"),
    ({"sweep": {"subsample": [1, 5, 1000000000000]}},
     "sweep.subsample[2] = 1000000000000", "an integer from 0 to 1000000 (0 = all)"),
    ({"features": {"batch_size": 99999999999999999999}},
     "features.batch_size = 99999999999999999999", "an integer from 1 to 65536"),
    ({"transfer": {"lr": 1e308}}, "transfer.lr = 1e+308", "a finite number > 0.0 and <= 10.0"),
]


@pytest.mark.parametrize(("change", "key", "allowed"), UNFINISHABLE,
                         ids=[u[1].split(" ")[0] for u in UNFINISHABLE])
def test_a_value_no_run_could_finish_is_refused_naming_the_key(tmp_path, change, key, allowed):
    write_params(tmp_path / "params.yaml",
                 deep_update(read_params_file(ROOT / "params.yaml"), change))
    with pytest.raises(ParamsError) as err:
        load_params(tmp_path / "params.yaml")
    assert str(err.value) == f"params: {key} is not allowed; expected {allowed}"


def test_a_bound_itself_is_allowed(tiny_raw):
    assert parse_params(deep_update(tiny_raw, {"pretrain": {"epochs": 10_000}})).pretrain.epochs \
        == 10_000
    with pytest.raises(ParamsError, match=r"pretrain.epochs = 10001 "):
        parse_params(deep_update(tiny_raw, {"pretrain": {"epochs": 10_001}}))


# Not a count, size or rate of a run: a number printed in a paper, or a range of two
# (only the report reads it).
UNBOUNDED = {"paper.numbers[].value", "paper.numbers[].value[]"}  # a number, or a range


def test_every_int_and_float_of_the_schema_has_an_upper_bound():
    """A new numeric field without an upper bound (transferlab.config.bounds) fails here."""
    from transferlab.config.params import Params
    from transferlab.config.spec import Float, Int, walk

    numeric = [(key, spec) for key, spec in walk(Params) if isinstance(spec, Int | Float)]
    keys = {key for key, _ in numeric}
    # The walk reaches nested specs: list items, a OneOf's alternatives, model.<arch>
    # options, per-layer rates.
    assert {"sweep.subsample[]", "freeze", "model.densenet_bc.depth",
            "transfer.layer_lr_mult.<layer>", "sweep.treatment_layers.<treatment>[]",
            "heads.svm.C[]"} <= keys
    assert UNBOUNDED <= keys
    assert sorted(key for key, spec in numeric if spec.hi is None and key not in UNBOUNDED) \
        == []
