"""Ranking candidate source networks on one target (stage rank_sources), offline and in
seconds: three torchvision networks built with weights=None and saved as state-dict files
under data.root stand for pretrained ones; the target is the digits' classes 5-9 upscaled
to 32 px (data.image_size), fine-tuned for five steps. Their ranking means nothing (the
weights are random); what is tested is that every number is the one the protocol says."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import weightedtau

from transferlab.config.params import ParamsError, parse_params
from transferlab.config.spec import ConfigurationError
from transferlab.models.hub import hub_layer_names, weights_origin
from transferlab.report.ranking import ranking_details, ranking_markdown
from transferlab.transferability.ranking import rank_sources, ranking_taus
from transferlab.transferability.scoring import weighted_tau

from .conftest import TINY, deep_update

NAMES = ("torchvision:resnet18", "torchvision:mobilenet_v3_small", "torchvision:squeezenet1_1")
ESTIMATORS = ("logme", "hscore", "transrate", "gbc", "sfda", "knn")


def save_weights(name: str, path: Path, seed: int = 0) -> Path:
    """The library model's own state dict, as a user saves a pretrained one."""
    library, _, model = name.partition(":")
    torch.manual_seed(seed)
    if library == "timm":
        import timm

        network = timm.create_model(model, pretrained=False)
    else:
        from torchvision.models import get_model

        network = get_model(model, weights=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), path)
    return path


def ranking_params(root: Path, candidates: list[dict], **ranking) -> dict:
    """TINY with the candidates under data.root, the digits at 32 px, 5 images per class,
    fine-tuned for transfer.steps (5)."""
    return deep_update(TINY, {"data": {"root": str(root), "image_size": 32},
                              "transfer": {"epochs": None},
                              "ranking": {"candidates": candidates, "subsample": 5,
                                          **ranking}})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, digits_tasks):
    out = tmp_path_factory.mktemp("prepared")
    digits_tasks[1].save(out / "target.npz")
    return out


@pytest.fixture(scope="module")
def ranked(tmp_path_factory, prepared):
    """rank_sources on the three candidates: (params, result, weights files, out path)."""
    root = tmp_path_factory.mktemp("raw")
    files = [save_weights(n, root / "weights" / f"{n.partition(':')[2]}.pth") for n in NAMES]
    params = parse_params(ranking_params(
        root, [{"name": n, "weights": str(f)} for n, f in zip(NAMES, files, strict=True)]))
    out = root.parent / "ranking.json"
    result = rank_sources(params, prepared=prepared, out=out)
    return params, result, files, out


# ---------------------------------------------------------------------------- params


def test_no_candidates_is_the_default_and_writes_a_note_only(tmp_path, prepared):
    params = parse_params(TINY)
    assert params.ranking.candidates == () and params.ranking.finetune == "FT"
    assert params.ranking.estimators == ESTIMATORS
    result = rank_sources(params, prepared=prepared, out=tmp_path / "r.json")
    assert result == json.loads((tmp_path / "r.json").read_text())
    assert result["requested"] == 0 and result["candidates"] == []
    assert "no candidates" in result["note"]
    assert ranking_details(tmp_path.parent / "nowhere") is None  # results from before it
    (tmp_path / "ranking.json").write_text(json.dumps(result))
    assert ranking_details(tmp_path) is None  # the default report has no such section


@pytest.mark.parametrize(("change", "match"), [
    ({"candidates": [{"name": "resnet18", "weights": None}]},
     r"ranking.candidates\[0\].name = 'resnet18' .* \"torchvision:<model>\" or "
     r"\"timm:<model>\""),
    ({"candidates": [{"name": "torchvision:resnet18"}]},
     r"missing key 'ranking.candidates\[0\].weights'"),
    ({"candidates": [{"name": "torchvision:resnet18", "weights": None, "lr": 1}]},
     r"unknown key 'ranking.candidates\[0\].lr'"),
    ({"candidates": [{"name": "torchvision:resnet18", "weights": None}] * 2},
     r"ranking.candidates = .* without repeated values"),
    ({"estimators": ["logme", "leep"]},
     r"ranking.estimators\[1\] = 'leep' .* one of logme, hscore, transrate, gbc, sfda, knn"),
    ({"finetune": "AnB+"}, r"ranking.finetune = 'AnB\+' .* one of FT, LP, LP-FT, none"),
    ({"subsample": -1}, r"ranking.subsample = -1 .*\(0 = all\)"),
])
def test_bad_ranking_params_are_refused_naming_the_key(change, match):
    with pytest.raises(ParamsError, match=match):
        parse_params(deep_update(TINY, {"ranking": change}))


def test_a_weights_file_outside_data_root_is_refused(tmp_path):
    inside = str(tmp_path / "raw" / "w.pth")
    parse_params(ranking_params(tmp_path / "raw", [{"name": NAMES[0], "weights": inside}]))
    outside = str(tmp_path / "elsewhere" / "w.pth")
    with pytest.raises(ParamsError, match=r"ranking.candidates\[0\].weights = .*elsewhere.* "
                                          r"a path under data.root"):
        parse_params(ranking_params(tmp_path / "raw", [{"name": NAMES[0], "weights": outside}]))


def test_what_only_the_stage_can_check_names_the_candidate(tmp_path, prepared):
    root = tmp_path / "raw"
    bad_name = parse_params(ranking_params(root, [{"name": "torchvision:no_such_net",
                                                   "weights": None}]))
    with pytest.raises(ParamsError, match=r"ranking.candidates\[0\].name = "
                                          r"'torchvision:no_such_net'"):
        rank_sources(bad_name, prepared=prepared, out=tmp_path / "r.json")
    missing = parse_params(ranking_params(root, [{"name": NAMES[0],
                                                  "weights": str(root / "none.pth")}]))
    url, digest = weights_origin(NAMES[0])
    with pytest.raises(ConfigurationError) as err:
        rank_sources(missing, prepared=prepared, out=tmp_path / "r.json")
    assert "ranking.candidates[0].weights" in str(err.value) and url in str(err.value) \
        and digest in str(err.value)
    wrong = save_weights(NAMES[2], root / "squeezenet.pth")  # another network's weights
    mismatched = parse_params(ranking_params(root, [{"name": NAMES[0], "weights": str(wrong)}]))
    with pytest.raises(ConfigurationError, match=r"ranking.candidates\[0\].weights = .* "
                                                 r"cannot be loaded into torchvision:resnet18"):
        rank_sources(mismatched, prepared=prepared, out=tmp_path / "r.json")


def test_images_too_small_for_a_candidate_name_data_image_size(tmp_path, prepared):
    root = tmp_path / "raw"
    weights = save_weights(NAMES[2], root / "sq.pth")
    params = parse_params(deep_update(
        ranking_params(root, [{"name": NAMES[2], "weights": str(weights)}], subsample=1),
        {"data": {"image_size": 16}}))
    with pytest.raises(ConfigurationError, match=r"data.image_size = 16: "
                       r"ranking.candidates\[0\] \(torchvision:squeezenet1_1\) cannot take "
                       r"images this small .* null for the weights' own 224 px"):
        rank_sources(params, prepared=prepared, out=tmp_path / "r.json")


# ---------------------------------------------------------------------------- tau


def test_weighted_tau_is_scipys_and_weighs_the_top_most():
    x = [0.9, 0.7, 0.4, 0.2, 0.1]
    for y in ([0.8, 0.9, 0.3, 0.2, 0.1], [0.9, 0.7, 0.4, 0.1, 0.2], [0.1, 0.2, 0.4, 0.7, 0.9],
              [0.5, 0.5, 0.3, 0.3, 0.1]):
        assert weighted_tau(x, y) == pytest.approx(weightedtau(x, y)[0], abs=1e-12)
    assert weighted_tau(x, x) == 1.0
    assert weighted_tau(x, [-v for v in x]) == -1.0
    # the same one swap costs more at the top than at the bottom
    top, bottom = weighted_tau(x, [0.8, 0.9, 0.4, 0.2, 0.1]), \
        weighted_tau(x, [0.9, 0.7, 0.4, 0.1, 0.2])
    assert top < bottom < 1.0


def test_ranking_taus_by_hand():
    def entry(label, last, best, acc):
        e = {"label": label, "last": {"logme": last},
             "best": {"logme": {"layer": "x", "score": best}}}
        return e if acc is None else {**e, "finetune": {"test_accuracy": acc}}

    entries = [entry("a", 1.0, 3.0, 0.5), entry("b", 2.0, 2.0, 0.7), entry("c", 3.0, 1.0, 0.9),
               entry("d", None, 0.5, 0.1)]
    taus, orders = ranking_taus(entries, ["logme"])
    # last layer: d has no score and is left out; a < b < c in both: tau 1
    assert taus["logme"]["last"] == 1.0 and orders["logme"]["last"] == ["c", "b", "a"]
    best = weightedtau([3.0, 2.0, 1.0, 0.5], [0.5, 0.7, 0.9, 0.1])[0]
    assert taus["logme"]["best"] == pytest.approx(best)
    assert orders["logme"]["best"] == ["a", "b", "c", "d"]
    # nothing measured (ranking.finetune: none), or one candidate: no tau
    unmeasured = [{k: v for k, v in e.items() if k != "finetune"} for e in entries]
    assert ranking_taus(unmeasured, ["logme"])[0]["logme"] == {"last": None, "best": None}
    assert ranking_taus(entries[:1], ["logme"])[0]["logme"] == {"last": None, "best": None}


# ---------------------------------------------------------------------------- the ranking


def test_three_candidates_are_scored_at_every_layer_and_ranked(ranked, digits_tasks):
    from transferlab.io import file_digest

    params, result, files, out = ranked
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    target = digits_tasks[1]
    assert result["train_images"] == 5 * target.num_classes
    assert result["test_images"] == len(target.y_test)
    assert [c["name"] for c in result["candidates"]] == list(NAMES)
    for c, f in zip(result["candidates"], files, strict=True):
        assert c["label"] == c["name"] and c["sha256"] == file_digest(f)
        assert c["layers"] == list(hub_layer_names(c["name"])) and c["input"]["size"] == 32
        assert c["input"]["mean"] == [0.485, 0.456, 0.406]
        assert set(c["scores"]) == set(ESTIMATORS)
        for est in ESTIMATORS:
            by_layer = c["scores"][est]
            assert list(by_layer) == c["layers"]
            assert c["last"][est] == by_layer[c["layers"][-1]]
            defined = {la: v for la, v in by_layer.items() if v is not None}
            assert c["best"][est]["score"] == max(defined.values())
            assert by_layer[c["best"][est]["layer"]] == c["best"][est]["score"]
        ft = c["finetune"]
        assert ft["treatment"] == "FT" and ft["n"] == len(c["layers"]) and ft["steps"] == 5
        correct = ft["test_accuracy"] * result["test_images"]
        assert abs(correct - round(correct)) < 1e-4  # a float32 mean of 0/1 hits
    accuracy = {c["label"]: c["finetune"]["test_accuracy"] for c in result["candidates"]}
    assert result["order"]["measured"] == sorted(accuracy, key=lambda a: -accuracy[a])
    for est in ESTIMATORS:
        for at in ("last", "best"):
            score = {c["label"]: c["last"][est] if at == "last" else c["best"][est]["score"]
                     for c in result["candidates"]}
            score = {a: v for a, v in score.items() if v is not None}  # SFDA may be undefined
            assert result["order"][est][at] == sorted(score, key=lambda a: -score[a])
            if len(score) < 2:
                assert result["tau"][est][at] is None
                continue
            expected = weightedtau(list(score.values()), [accuracy[a] for a in score])[0]
            if math.isnan(expected):  # constant scores: no ranking to compare
                assert result["tau"][est][at] is None, (est, at)
            else:
                assert result["tau"][est][at] == pytest.approx(expected, abs=1e-12), (est, at)


def test_the_last_layer_is_the_new_heads_input_on_the_weights_own_normalisation(
        ranked, digits_tasks):
    """LogME at the last layer, recomputed without the stage's code path: the network's
    embedding of the images converted by hand (RGB, 32 px, ImageNet mean and std)."""
    from transferlab.data.prepared import TaskData
    from transferlab.data.readers import convert_images
    from transferlab.models.hub import build_hub_model
    from transferlab.transferability.estimators import logme

    params, result, files, _ = ranked
    target = digits_tasks[1]
    task = target.subsampled(5, params.seed)
    assert isinstance(task, TaskData)
    images = convert_images(task.x_train, 3, (32, 32)).astype(np.float32) / target.pixel_max
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (torch.from_numpy(images) - mean) / std
    model = build_hub_model(NAMES[0], target.num_classes, files[0]).eval()
    with torch.no_grad():
        embedding = model.embed(x)
    expected = logme(embedding, torch.as_tensor(task.y_train))
    assert result["candidates"][0]["last"]["logme"] == pytest.approx(expected, rel=1e-5)


def test_the_report_shows_the_table_and_the_taus(ranked):
    _, result, _, out = ranked
    details = ranking_details(out.parent)
    assert [c["label"] for c in details["candidates"]] == list(NAMES)
    assert details["tau"] == result["tau"] and details["steps"] == 5
    text = "\n".join(ranking_markdown(details))
    assert text.startswith("## Ranking candidate source networks")
    header = next(line for line in text.splitlines() if line.startswith("| candidate"))
    assert header.split(" | ")[:3] == ["| candidate", "image size", "measured accuracy"]
    assert all(f"{e} last" in header and f"{e} best (layer)" in header for e in ESTIMATORS)
    for c in result["candidates"]:
        row = next(line for line in text.splitlines() if line.startswith(f"| {c['label']} |"))
        assert f"| {c['finetune']['test_accuracy']:.3f} |" in row
        assert f"({c['best']['logme']['layer']})" in row
    tau_rows = [line for line in text.splitlines()
                if line.split(" | ")[0].lstrip("| ") in ESTIMATORS]
    assert len(tau_rows) == len(ESTIMATORS)
    logme_row = next(r for r in tau_rows if r.startswith("| logme |"))
    assert f"{result['tau']['logme']['last']:.3f}" in logme_row
    assert " > ".join(result["order"]["measured"]) in text


def test_two_checkpoints_of_one_network_scored_without_fine_tuning(tmp_path, prepared):
    """ranking.finetune: none: the scores only, no measured order and no tau; two files of
    one architecture are told apart by their file names."""
    root = tmp_path / "raw"
    files = [save_weights(NAMES[2], root / f"sq{seed}.pth", seed) for seed in (0, 1)]
    params = parse_params(ranking_params(
        root, [{"name": NAMES[2], "weights": str(f)} for f in files],
        finetune="none", subsample=2, estimators=["logme", "knn"]))
    result = rank_sources(params, prepared=prepared, out=tmp_path / "r.json")
    labels = [c["label"] for c in result["candidates"]]
    assert labels == [f"{NAMES[2]} (sq0.pth)", f"{NAMES[2]} (sq1.pth)"]
    assert all("finetune" not in c and set(c["scores"]) == {"logme", "knn"}
               for c in result["candidates"])
    assert result["candidates"][0]["scores"] != result["candidates"][1]["scores"]
    assert result["treatment"] is None and result["order"]["measured"] is None
    assert result["tau"] == {"logme": {"last": None, "best": None},
                             "knn": {"last": None, "best": None}}
    (tmp_path / "ranking.json").write_text(json.dumps(result))
    text = "\n".join(ranking_markdown(ranking_details(tmp_path)))
    assert "no τ" in text and "Weighted Kendall" not in text


def test_a_timm_candidate_head_only_freezes_every_copied_layer(tmp_path, prepared,
                                                                monkeypatch):
    """A timm network as a candidate, its weights' own mean and std; ranking.finetune: LP
    (AnB at n = all layers): only the new head trains."""
    timm = pytest.importorskip("timm")
    import transferlab.training.loop as loop

    trained = []
    real_fit = loop.fit

    def spy(model, *args, param_groups, **kwargs):
        trained.append([p for g in param_groups for p in g["params"] if p.requires_grad])
        return real_fit(model, *args, param_groups=param_groups, **kwargs)

    monkeypatch.setattr(loop, "fit", spy)
    name = "timm:resnet10t"
    root = tmp_path / "raw"
    weights = save_weights(name, root / "r10t.pth")
    params = parse_params(ranking_params(root, [{"name": name, "weights": str(weights)}],
                                         finetune="LP", subsample=2))
    result = rank_sources(params, prepared=prepared, out=tmp_path / "r.json")
    (candidate,) = result["candidates"]
    config = timm.data.resolve_data_config({}, model=timm.create_model("resnet10t"))
    assert candidate["input"]["mean"] == pytest.approx(list(config["mean"]))
    assert candidate["input"]["std"] == pytest.approx(list(config["std"]))
    assert candidate["layers"] == list(hub_layer_names(name))
    ft = candidate["finetune"]
    assert ft["treatment"] == "LP" and ft["n"] == len(candidate["layers"])
    (params_trained,) = trained
    assert [tuple(p.shape) for p in params_trained] == [(5, 512), (5,)]  # the head alone


def test_the_report_stage_adds_the_section_and_the_details(ranked, tmp_path, tiny_params,
                                                          tiny_diagnostics):
    import shutil

    from transferlab.report.build import build_report

    from .test_report import _write_results

    _, result, _, out = ranked
    results = tmp_path / "results"
    _write_results(results, seeds=[0], diagnostics=tiny_diagnostics)
    shutil.copy(out, results / "ranking.json")
    details = build_report(tiny_params, results=results, summary_out=tmp_path / "m/s.json",
                           plots_dir=tmp_path / "plots")
    assert details["ranking"] == ranking_details(results)
    assert "ranking" not in json.loads((tmp_path / "m/s.json").read_text())  # not a headline
    md = (tmp_path / "m/s.md").read_text()
    assert md.rstrip().endswith("\n".join(ranking_markdown(details["ranking"])).rstrip())


# ---------------------------------------------------------------------------- dvc


@pytest.mark.e2e
def test_dvc_repro_rank_sources_ranks_the_candidates_and_hashes_their_weights(tmp_path):
    """The real `dvc repro rank_sources` in a fresh repository: it needs only check_params
    and prepare, and a weights file's bytes are its input."""
    import re
    import subprocess

    from benchmarks.pipeline_overhead import copy_checkout, tool_env

    from .conftest import write_params

    repo = tmp_path / "repo"
    repo.mkdir()
    copy_checkout(repo, None)
    files = [f"data/raw/weights/{n.partition(':')[2]}.pth" for n in NAMES]
    for name, file in zip(NAMES, files, strict=True):
        save_weights(name, repo / file)
    write_params(repo / "params.yaml", deep_update(TINY, {
        "data": {"image_size": 32}, "transfer": {"epochs": None},
        "ranking": {"candidates": [{"name": n, "weights": f} for n, f in zip(NAMES, files,
                                                                           strict=True)],
                    "subsample": 5}}))
    # the stages import the copy's own src/, as an editable install of a checkout does
    env = {**tool_env(), "PYTHONPATH": str(repo / "src")}

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    run("git", "add", "-A")
    run("git", "commit", "-qm", "three candidates")
    out = run("dvc", "repro", "rank_sources")
    assert set(re.findall(r"Running stage '([^']+)'", out.stdout)) == {
        "check_params", "prepare", "rank_sources"}
    result = json.loads((repo / "results/ranking.json").read_text())
    assert [c["name"] for c in result["candidates"]] == list(NAMES)
    assert set(result["tau"]) == set(ESTIMATORS)
    assert all(c["finetune"]["steps"] == 5 for c in result["candidates"])
    assert json.loads(run("dvc", "status", "--json", "rank_sources").stdout or "{}") == {}
    save_weights(NAMES[2], repo / files[2], seed=1)  # other weights, same file
    assert "rank_sources" in json.loads(run("dvc", "status", "--json", "rank_sources").stdout)
