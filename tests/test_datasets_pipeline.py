"""Every dataset, downloaded from a local HTTP server in its real format, through the
whole pipeline (prepare .. report), and cross-dataset transfer through real `dvc repro`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from benchmarks.pipeline_overhead import copy_checkout, tool_env
from tests import dataset_fixtures as fx
from transferlab.config.params import read_params_file

from .conftest import TINY, deep_update, write_params
from .pipeline_runner import make_project, run_pipeline

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = read_params_file(ROOT / "params.yaml")
SMALL = deep_update(TINY, {"sweep": {"seeds": [0], "treatments": ["base", "AnB", "AnB+"],
                                     "layers": [2]},
                           "features": {"layers": ["conv2", "fc5"]},
                           "report": {"layer": 2},
                           "model": {"convnet": {"width": 8, "hidden": 32}},
                           "pretrain": {"epochs": 8, "batch_size": 16},
                           "heads": {"lowshot": {"shots": [1, 2], "draws": 2}},
                           })


def _served_params(tmp: Path, dataset: str, writer, changes: dict, server) -> dict:
    manifest = writer(tmp / "files")
    if isinstance(manifest, tuple):  # VOC also returns the labels it wrote
        manifest = manifest[0]
    path = fx.write_manifest(manifest, tmp / "raw" / f"{dataset}.manifest.json")
    data = {"root": str(tmp / "raw"), "mirror": str(server), "manifest": str(path)}
    return deep_update(SHIPPED, deep_update(SMALL, deep_update(
        {"dataset": dataset, "data": data}, changes)))


WITHIN = {
    "mnist": (fx.write_mnist_files, {}),
    "cifar10": (fx.write_cifar10_archive, {}),
    "cifar100": (fx.write_cifar100_archive, {"data": {"split": "random"}}),
    "voc2012": (fx.write_voc_archive,
                {"data": {"source_classes": [0, 1, 2], "target_classes": [3, 4, 5]},
                 "subsample": 2, "sweep": {"subsample": [1, 2]},
                 "report": {"subsample": 2}, "heads": {"lowshot": {"shots": [1]}}}),
    "tinyimagenet": (fx.write_tinyimagenet_zip,
                     {"data": {"source_classes": [0, 1, 2], "target_classes": [3, 4, 5],
                               "crop": 57, "flip": True}}),
}


@pytest.mark.parametrize("dataset", sorted(WITHIN))
def test_each_dataset_downloads_and_runs_through_report(tmp_path, dataset):
    writer, changes = WITHIN[dataset]
    project = make_project(tmp_path / "project", ROOT)
    with fx.serve_directory(tmp_path / "files") as server:
        (tmp_path / "files").mkdir()
        raw = _served_params(tmp_path, dataset, writer, changes, server)
        write_params(project / "params.yaml", raw)
        run_pipeline(project)
        assert any(r.endswith(".tar.gz") or r.endswith(".zip") or r.endswith(".tar")
                   or r.endswith(".gz") for r in server.requests), server.requests
    meta = json.loads((project / "data/prepared/meta.json").read_text())
    summary = json.loads((project / "metrics/summary.json").read_text())
    multilabel = dataset == "voc2012"
    assert meta["multilabel_target"] is multilabel
    assert summary["metric"] == ("map" if multilabel else "accuracy")
    score = summary["transfer"][f"test_{summary['metric']}"]
    assert 0.0 <= score <= 1.0
    if multilabel:  # every mAP says which AP it averages (params heads.ap)
        ap = raw["heads"]["ap"]
        assert summary["ap_definition"] == ap
        assert f"mAP ({ap})" in (project / "metrics/summary.md").read_text()
        heads = json.loads((project / "results/heads.json").read_text())
        assert {r["ap_definition"] for per in heads.values() for r in per.values()} == {ap}
    for name in ("transferability", "size_curve", "heads"):
        assert (project / "plots" / f"{name}.png").stat().st_size > 1000
    # A second run reuses the local copy: nothing is downloaded again.
    with fx.serve_directory(tmp_path / "files") as server:
        raw["data"]["mirror"] = str(server)
        write_params(project / "params.yaml", raw)
        run_pipeline(project, only={"prepare"})
        assert server.requests == []


def test_imagefolder_runs_the_whole_pipeline_on_png_files(tmp_path):
    folder = fx.write_image_folder(tmp_path / "pngs", n_classes=6, n_per_class=12)
    project = make_project(tmp_path / "project", ROOT)
    raw = deep_update(SHIPPED, deep_update(SMALL, {
        "dataset": "imagefolder",
        "data": {"root": str(tmp_path), "path": str(folder), "source_classes": [0, 1, 2],
                 "target_classes": [3, 4, 5]},
    }))
    write_params(project / "params.yaml", raw)
    run_pipeline(project)
    meta = json.loads((project / "data/prepared/meta.json").read_text())
    assert meta["image_shape"] == [3, 16, 16]
    assert meta["source_class_names"] == ["class_0", "class_1", "class_2"]
    summary = json.loads((project / "metrics/summary.json").read_text())
    # Each class has its own colour pattern: the source network must beat chance (1/3).
    assert summary["pretrain"]["A"]["test_accuracy"] > 0.5


def test_a_classes_file_names_the_split(tmp_path):
    from transferlab.config.params import parse_params
    from transferlab.data.prepared import prepare_tasks

    folder = fx.write_image_folder(tmp_path / "pngs", n_classes=4, n_per_class=6)
    split = tmp_path / "split.yaml"
    split.write_text("source: [class_2, class_0]\ntarget: [3]\n")
    p = parse_params(deep_update(TINY, {"dataset": "imagefolder", "subsample": 1, "sweep": {
        "subsample": [1]}, "report": {"subsample": 1}, "data": {
        "root": str(tmp_path), "path": str(folder), "split": "file",
        "classes_file": str(split)}}))
    source, target, meta = prepare_tasks("imagefolder", p.data, 0, progress=False)
    assert meta["source_classes"] == [0, 2] and meta["target_classes"] == [3]
    assert source.class_names == ["class_0", "class_2"]
    split.write_text("source: [class_9]\ntarget: [3]\n")
    with pytest.raises(ValueError, match="class_9"):
        prepare_tasks("imagefolder", p.data, 0, progress=False)


def test_offline_without_a_copy_names_the_files_and_the_digits(tmp_path):
    from transferlab.config.params import parse_params
    from transferlab.data.prepared import prepare_tasks

    p = parse_params(deep_update(TINY, {"dataset": "cifar10", "data": {
        "root": str(tmp_path / "raw"), "mirror": fx.CLOSED_URL}}))
    with pytest.raises(Exception) as err:
        prepare_tasks("cifar10", p.data, 0, progress=False)
    text = str(err.value)
    assert "cifar-10-python.tar.gz" in text and str(tmp_path / "raw") in text
    assert "digits" in text


def test_cross_dataset_transfer_to_multilabel_voc_through_dvc_repro(tmp_path):
    """Source CIFAR-100, target Pascal VOC (multi-label): the real `dvc repro`."""
    files = tmp_path / "files"
    cifar = fx.write_cifar100_archive(files)
    voc, _ = fx.write_voc_archive(files)
    manifest = fx.write_manifest({"cifar100": cifar, "voc2012": voc}, tmp_path / "raw" / "m.json")
    repo = tmp_path / "repo"
    repo.mkdir()
    copy_checkout(repo, None)
    with fx.serve_directory(files) as server:
        raw = deep_update(SHIPPED, deep_update(SMALL, {
            "dataset": "cifar100", "subsample": 2,
            "data": {"source_dataset": "cifar100", "target_dataset": "voc2012",
                     "source_classes": "all", "target_classes": [0, 1, 2, 3, 4, 5],
                     "root": str(tmp_path / "raw"), "mirror": str(server),
                     "manifest": str(manifest)},
            "sweep": {"subsample": [1, 2]}, "report": {"subsample": 2},
            "heads": {"lowshot": {"shots": [1]}}}))
        write_params(repo / "params.yaml", raw)
        env = tool_env()
        for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "cross"]):
            subprocess.run(cmd, cwd=repo, check=True, env=env, capture_output=True)
        proc = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True,
                              text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    meta = json.loads((repo / "data/prepared/meta.json").read_text())
    assert meta["source_dataset"] == "cifar100" and meta["target_dataset"] == "voc2012"
    assert meta["multilabel_target"] and meta["target_class_names"][:2] == fx.VOC_CLASSES[:2]
    summary = json.loads((repo / "metrics/summary.json").read_text())
    assert summary["metric"] == "map"
    assert 0 <= summary["transfer"]["test_map"] <= 1
    heads = json.loads((repo / "results/heads.json").read_text())
    assert heads  # every head scored by mAP on the multi-label target
    target = np.load(repo / "data/prepared/target.npz")
    assert target["y_train"].ndim == 2 and target["x_train"].shape[1:] == (3, 32, 32)


def test_a_used_class_with_one_image_is_refused_at_prepare_naming_it(tmp_path):
    from transferlab.config.params import parse_params
    from transferlab.data.prepared import prepare_tasks

    folder = fx.write_image_folder(tmp_path / "pngs", n_classes=5, n_per_class=6)
    for extra in sorted((folder / "class_3").iterdir())[1:]:
        extra.unlink()  # class_3 keeps one image
    split = tmp_path / "split.yaml"
    split.write_text("source: [class_0, class_1]\ntarget: [class_2, class_3]\n")
    p = parse_params(deep_update(TINY, {"dataset": "imagefolder", "subsample": 1, "sweep": {
        "subsample": [1]}, "report": {"subsample": 1}, "data": {
        "root": str(tmp_path), "path": str(folder), "split": "file",
        "classes_file": str(split)}}))
    with pytest.raises(ValueError, match="class 'class_3' of dataset imagefolder has 1 image"):
        prepare_tasks("imagefolder", p.data, 0, progress=False)
    split.write_text("source: [class_0, class_1]\ntarget: [class_2, class_4]\n")
    source, target, meta = prepare_tasks("imagefolder", p.data, 0, progress=False)
    assert min(meta["target_test_per_class"]) >= 1 and min(meta["source_test_per_class"]) >= 1


def test_a_truncated_prepared_file_names_itself(tmp_path, digits_tasks):
    from transferlab.data.prepared import TaskData

    path = tmp_path / "target.npz"
    digits_tasks[1].save(path)
    assert TaskData.load(path).num_classes == digits_tasks[1].num_classes
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=f"{path}: cannot read the prepared arrays.*"
                                         "dvc repro prepare"):
        TaskData.load(path)
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=f"{path}: cannot read the prepared arrays"):
        TaskData.load(path)
    np.savez(path, x_train=np.zeros(2))
    with pytest.raises(ValueError, match=f"{path}: .*no array classes"):
        TaskData.load(path)
