"""Pascal VOC 2007 classification: its two archives downloaded from a local HTTP server,
verified, merged into one VOCdevkit/VOC2007, read as 20 labels with "difficult" kept, and
scored by the VOC2007 devkit's 11-point AP."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.dataset_fixtures import (
    serve_directory,
    write_manifest,
    write_voc2007_archives,
    write_voc_archive,
)
from transferlab.data.archives import extract_archive
from transferlab.data.catalog import (
    CATALOG,
    DatasetUnavailableError,
    catalog_entry,
    load_dataset,
    validate_manifest,
)
from transferlab.data.download import ChecksumError
from transferlab.data.readers import VOC_CLASSES, read_voc
from transferlab.metrics import mean_average_precision


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    srv = tmp_path_factory.mktemp("srv")
    voc2007, expected = write_voc2007_archives(srv)
    voc2012, _ = write_voc_archive(srv)
    with serve_directory(srv) as url:
        yield {"url": url, "voc2007": voc2007, "voc2012": voc2012, "expected": expected}


def _load(root: Path, served, tmp_path: Path, **kwargs):
    manifest = write_manifest(served["voc2007"], tmp_path / "voc2007.json")
    return load_dataset("voc2007", root=root, mirror=served["url"], manifest=manifest,
                        progress=False, **kwargs)


def test_both_archives_are_downloaded_verified_and_read_as_trainval_and_test(tmp_path, served):
    before = len(served["url"].requests)
    data = _load(tmp_path / "root", served, tmp_path, image_size=24)
    fetched = [r.rsplit("/", 1)[-1] for r in served["url"].requests[before:]]
    assert sorted(fetched) == ["VOCtest_06-Nov-2007.tar", "VOCtrainval_06-Nov-2007.tar"]
    exp = served["expected"]
    assert data.multilabel and data.class_names == VOC_CLASSES
    assert data.images.shape == (len(exp["labels"]), 3, 24, 24)
    np.testing.assert_array_equal(data.labels, exp["labels"])
    np.testing.assert_array_equal(data.difficult, exp["difficult"])
    assert data.difficult.any() and not (data.difficult & (data.labels == 1)).any()
    # trainval is the train part, the test list the official test part
    assert not data.is_test[:exp["n_train"]].any() and data.is_test[exp["n_train"]:].all()
    assert int(data.is_test.sum()) == 30 and exp["n_train"] == 48
    # both archives landed in the one folder, each file of each (the merge)
    base = tmp_path / "root" / "VOCdevkit" / "VOC2007"
    assert len(list((base / "JPEGImages").glob("*.jpg"))) == 78
    assert {p.name for p in (base / "ImageSets" / "Main").iterdir()} == {
        "train.txt", "val.txt", "trainval.txt", "test.txt"}


def test_offline_read_from_data_root_downloads_nothing(tmp_path, served):
    root = tmp_path / "root"
    first = _load(root, served, tmp_path)
    for tar in root.glob("*.tar"):  # an unpacked copy alone is the dataset
        tar.unlink()
    before = len(served["url"].requests)
    again = load_dataset("voc2007", root=root, download=False, progress=False)
    assert len(served["url"].requests) == before
    np.testing.assert_array_equal(again.labels, first.labels)
    assert again.images.shape[2:] == (32, 32)  # VOC's default size


def test_segmentation_lists_of_2007_are_its_trainval_and_test_lists(tmp_path, served):
    data = _load(tmp_path / "root", served, tmp_path, voc_lists="segmentation")
    exp = served["expected"]
    n_train, n_test = exp["n_train"], len(exp["labels"]) - exp["n_train"]
    # the fixture's segmentation lists: every third image of trainval and of test
    assert int((~data.is_test).sum()) == len(range(0, n_train, 3))
    assert int(data.is_test.sum()) == len(range(0, n_test, 3))
    np.testing.assert_array_equal(data.labels[~data.is_test], exp["labels"][:n_train:3])


def test_voc2007_and_voc2012_live_side_by_side_under_one_root(tmp_path, served):
    """Every VOC archive fills VOCdevkit/: extracting one must not replace the other."""
    root = tmp_path / "root"
    m2012 = write_manifest(served["voc2012"], tmp_path / "voc2012.json")
    _load(root, served, tmp_path)
    load_dataset("voc2012", root=root, mirror=served["url"], manifest=m2012, progress=False)
    assert (root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "test.txt").is_file()
    assert (root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Main" / "val.txt").is_file()
    both = load_dataset("voc2007", root=root, download=False, progress=False)
    assert len(both.labels) == len(served["expected"]["labels"])


def test_a_corrupt_archive_is_refused_deleted_and_its_files_not_extracted(tmp_path, served):
    manifest = json.loads(json.dumps(served["voc2007"]))
    manifest["files"][1]["md5"] = "0" * 32  # the test archive's checksum no longer matches
    path = write_manifest(manifest, tmp_path / "bad.json")
    root = tmp_path / "root"
    with pytest.raises(ChecksumError) as err:
        load_dataset("voc2007", root=root, mirror=served["url"], manifest=path, progress=False)
    assert "VOCtest_06-Nov-2007.tar" in str(err.value) and "0" * 32 in str(err.value)
    assert not (root / "VOCtest_06-Nov-2007.tar").exists()
    assert not (root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "test.txt").exists()
    # and offline, the half copy is no dataset: the error names what is missing
    good = write_manifest(served["voc2007"], tmp_path / "good.json")
    with pytest.raises(DatasetUnavailableError, match="test.txt"):
        load_dataset("voc2007", root=root, manifest=good, download=False, progress=False)


def test_the_catalog_lists_the_released_archives_with_torchvisions_md5s():
    entry = catalog_entry("voc2007")
    files = {f["name"]: f for f in entry["files"]}
    # torchvision.datasets.voc.DATASET_YEAR_DICT["2007"] and ["2007-test"]
    assert {n: f["checksums"] for n, f in files.items()} == {
        "VOCtrainval_06-Nov-2007.tar": {"md5": "c52e279531787c972589f7e41ab4ae64"},
        "VOCtest_06-Nov-2007.tar": {"md5": "b6e924de25625d8de591ea690078ad9f"}}
    assert files["VOCtest_06-Nov-2007.tar"]["urls"][0] == (
        "https://thor.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtest_06-Nov-2007.tar")
    assert all(f["merge"] and f["extract"] == "." for f in entry["files"])
    assert set(entry["local"]) == {f"VOCdevkit/VOC2007/{p}" for p in (
        "ImageSets/Main/trainval.txt", "ImageSets/Main/test.txt", "Annotations", "JPEGImages")}
    # VOC 2012 keeps its archive and checksum, now merged into VOCdevkit too
    assert CATALOG["voc2012"]["files"][0]["md5"] == "6cd6e144f989b92b3379bac3b3de84fd"
    assert catalog_entry("voc2012")["files"][0]["merge"]


def test_merge_needs_a_boolean_and_an_extract_folder():
    good = {"name": "a.tar", "url": "http://x/a.tar", "md5": "0" * 32, "extract": "."}
    assert validate_manifest({"files": [good], "local": ["a"]})["files"][0]["merge"] is False
    for bad in ({**good, "merge": "yes"}, {k: v for k, v in good.items() if k != "extract"}
                | {"merge": True}):
        with pytest.raises(ValueError, match=r"files\[0\]\.merge"):
            validate_manifest({"files": [bad], "local": ["a"]})


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_merging_keeps_other_files_and_replaces_same_named_ones(tmp_path):
    target = tmp_path / "out"
    extract_archive(_tar(tmp_path / "a.tar", {"d/sub/a.txt": b"a", "d/same.txt": b"old"}),
                    target, merge=True)
    (tmp_path / "elsewhere").mkdir()
    (target / "d" / "link").symlink_to(tmp_path / "elsewhere")
    files = extract_archive(_tar(tmp_path / "b.tar", {"d/sub/b.txt": b"b", "d/same.txt": b"new",
                                                      "d/link/x.txt": b"x"}),
                            target, merge=True)
    assert files == ["d/link/x.txt", "d/same.txt", "d/sub/b.txt"]
    assert (target / "d/sub/a.txt").read_bytes() == b"a"
    assert (target / "d/sub/b.txt").read_bytes() == b"b"
    assert (target / "d/same.txt").read_bytes() == b"new"
    # a linked folder of the target is replaced, never written through
    assert not (target / "d/link").is_symlink() and not (tmp_path / "elsewhere/x.txt").exists()
    assert sorted(p.name for p in target.iterdir()) == ["d"]  # no leftovers
    # without merge, the top-level folder is replaced as before
    extract_archive(_tar(tmp_path / "c.tar", {"d/c.txt": b"c"}), target)
    assert sorted(p.name for p in (target / "d").iterdir()) == ["c.txt"]


def test_read_voc_names_the_missing_list(tmp_path):
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "trainval.txt").write_text("000001\n")
    with pytest.raises(FileNotFoundError, match="test.txt"):
        read_voc(tmp_path, 8, "main", ("trainval", "test"))


def test_voc07_map_by_hand_with_a_difficult_image_left_out():
    """The VOC2007 devkit's 11-point AP per label, difficult examples ignored, averaged.

    Label 0, by score: pos, neg, pos, neg (2 positives): (precision, recall) after each:
    (1, 1/2), (1/2, 1/2), (2/3, 1), (1/2, 1). Best precision at recall >= t: 1 for
    t <= 0.5 (6 points), 2/3 for t = 0.6..1 (5 points): (6 + 5 * 2/3) / 11 = 28/33.
    Label 1: the top-scored image is a difficult negative and is ignored; the rest rank
    pos, neg, neg: AP 1. Counted, it would make the positive second: precision 1/2 at
    every recall, AP 1/2.
    """
    y = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    scores = np.array([[0.9, 0.95], [0.8, 0.7], [0.7, 0.2], [0.1, 0.1]])
    ignore = np.zeros_like(y, dtype=bool)
    ignore[0, 1] = True
    mean, per_label = mean_average_precision(y, scores, ignore, definition="voc07")
    assert per_label == pytest.approx([28 / 33, 1.0])
    assert mean == pytest.approx((28 / 33 + 1.0) / 2)
    _, counted = mean_average_precision(y, scores, definition="voc07")
    assert counted[1] == pytest.approx(0.5)


def test_prepare_reads_voc2007_as_the_hong_presets_set_it_up(tmp_path, served):
    """The data part of the hong-*-voc2007 presets: VOC 2012 as the source task, every
    VOC 2007 label as the target, trainval / test as its parts, difficult kept."""
    from tests.conftest import complete
    from transferlab.config.params import parse_params
    from transferlab.data.prepared import prepare_tasks

    manifest = write_manifest({"voc2007": served["voc2007"], "voc2012": served["voc2012"]},
                              tmp_path / "raw" / "manifest.json")
    params = parse_params(complete({"dataset": "voc2007", "data": {
        "split": "fixed", "source_dataset": "voc2012", "target_dataset": "voc2007",
        "source_classes": "all", "target_classes": "all", "image_size": 16,
        "root": str(tmp_path / "raw"), "mirror": str(served["url"]),
        "manifest": str(manifest)}}))
    source, target, meta = prepare_tasks("voc2007", params.data, 0, progress=False)
    exp = served["expected"]
    assert (meta["source_dataset"], meta["target_dataset"]) == ("voc2012", "voc2007")
    assert meta["multilabel_target"] and target.class_names == VOC_CLASSES
    assert len(target.y_train) == exp["n_train"]
    assert len(target.y_test) == len(exp["labels"]) - exp["n_train"]
    np.testing.assert_array_equal(target.y_test, exp["labels"][exp["n_train"]:])
    np.testing.assert_array_equal(target.difficult_test, exp["difficult"][exp["n_train"]:])
    assert target.x_train.shape[1:] == (3, 16, 16) and source.multilabel
