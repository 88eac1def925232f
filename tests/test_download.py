"""Download, verify and extract through a real HTTP server on 127.0.0.1 (no other network)."""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.dataset_fixtures import (
    CLOSED_URL,
    class_images,
    py2_pickle,
    serve_directory,
    with_base_url,
    write_cifar10_archive,
    write_cifar100_archive,
    write_manifest,
    write_miniplaces_archive,
    write_mnist_files,
    write_tinyimagenet_zip,
    write_voc_archive,
)
from transferlab.data.archives import UnsafeArchiveError, extract_archive
from transferlab.data.catalog import (
    CATALOG,
    DatasetUnavailableError,
    ensure_local_copy,
    load_dataset,
    read_manifest,
    validate_manifest,
)
from transferlab.data.download import ChecksumError, download_file, verify_file
from transferlab.data.readers import read_miniplaces
from transferlab.data.safe_pickle import UnsafePickleError, safe_loads


def _all_files(root: Path) -> list[str]:
    """Files (not directories) under root."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """All five formats written once, served for the whole module."""
    srv = tmp_path_factory.mktemp("srv")
    voc, voc_expected = write_voc_archive(srv)
    miniplaces, miniplaces_lists = write_miniplaces_archive(srv)
    manifests = {"mnist": write_mnist_files(srv), "cifar10": write_cifar10_archive(srv),
                 "cifar100": write_cifar100_archive(srv), "voc2012": voc,
                 "tinyimagenet": write_tinyimagenet_zip(srv), "miniplaces": miniplaces}
    with serve_directory(srv) as url:
        yield {"dir": srv, "url": url, "manifests": manifests, "voc_expected": voc_expected,
               "miniplaces_lists": miniplaces_lists}


def _manifest_file(tmp_path, served, name, **changes) -> Path:
    m = json.loads(json.dumps(served["manifests"][name]))
    m.update(changes)
    return write_manifest(m, tmp_path / f"{name}.json")


EXPECTED = {  # name: (N, C, H, W, number of classes, test part size)
    "mnist": ((180, 1, 28, 28), 10, 60),
    "cifar10": ((210, 3, 32, 32), 10, 60),
    "cifar100": ((168, 3, 32, 32), 8, 48),
    "voc2012": ((90, 3, 32, 32), 20, 30),
    "tinyimagenet": ((102, 3, 64, 64), 6, 30),
    "miniplaces": ((102, 3, 128, 128), 6, 30),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_download_verify_extract_decode(tmp_path, served, name):
    shape, n_classes, n_test = EXPECTED[name]
    before = len(served["url"].requests)
    data = load_dataset(name, root=tmp_path / "root", mirror=served["url"],
                        manifest=_manifest_file(tmp_path, served, name), progress=False)
    assert len(served["url"].requests) > before
    assert data.images.dtype == np.uint8 and data.images.shape == shape
    assert len(data.class_names) == n_classes
    assert data.is_test.dtype == bool and int(data.is_test.sum()) == n_test
    if name == "voc2012":
        assert data.multilabel and data.labels.dtype == np.uint8
        assert data.labels.shape == (shape[0], 20) and data.difficult.shape == (shape[0], 20)
    else:
        assert not data.multilabel and data.labels.dtype == np.int64
        assert set(np.unique(data.labels)) == set(range(n_classes))
    # no temporary files or extraction leftovers anywhere under root
    assert not [f for f in _all_files(tmp_path / "root")
                if Path(f).name.startswith(".") or f.endswith(".part")]


def test_decoded_pixels_and_labels_are_the_written_ones(tmp_path, served):
    mnist = load_dataset("mnist", root=tmp_path, mirror=served["url"],
                         manifest=_manifest_file(tmp_path, served, "mnist"), progress=False)
    x, y = class_images(10, 12, 1, 28, 28, 0)
    np.testing.assert_array_equal(mnist.images[:120], x)
    np.testing.assert_array_equal(mnist.labels[:120], y)
    assert not mnist.is_test[:120].any() and mnist.is_test[120:].all()
    cifar = load_dataset("cifar10", root=tmp_path, mirror=served["url"],
                         manifest=_manifest_file(tmp_path, served, "cifar10"), progress=False)
    x, y = class_images(10, 15, 3, 32, 32, 0)
    np.testing.assert_array_equal(cifar.images[:150], x)
    np.testing.assert_array_equal(cifar.labels[:150], y)
    assert cifar.class_names == [f"class{c}" for c in range(10)]


def test_voc_labels_and_difficult_masks(tmp_path, served):
    data = load_dataset("voc2012", root=tmp_path, mirror=served["url"], image_size=24,
                        manifest=_manifest_file(tmp_path, served, "voc2012"), progress=False)
    exp = served["voc_expected"]
    assert data.images.shape[2:] == (24, 24)
    np.testing.assert_array_equal(data.labels, exp["labels"])
    np.testing.assert_array_equal(data.difficult, exp["difficult"])
    assert data.difficult.any()
    assert not (data.difficult & (data.labels == 1)).any()  # present wins over difficult
    assert not data.is_test[:exp["n_train"]].any() and data.is_test[exp["n_train"]:].all()


def test_voc_segmentation_lists_pick_their_images(tmp_path, served):
    """Spero trained on VOC's 1,464-image segmentation list: data.voc_lists."""
    manifest = _manifest_file(tmp_path, served, "voc2012")
    full = load_dataset("voc2012", root=tmp_path, mirror=served["url"], manifest=manifest,
                        progress=False)
    seg = load_dataset("voc2012", root=tmp_path, mirror=served["url"], manifest=manifest,
                       progress=False, voc_lists="segmentation")
    exp = served["voc_expected"]
    n_train, n_val = exp["n_train"], len(exp["labels"]) - exp["n_train"]
    # the fixture's segmentation lists: every other training image, every val image
    assert len(seg.labels) == (n_train + 1) // 2 + n_val
    assert int((~seg.is_test).sum()) == (n_train + 1) // 2
    np.testing.assert_array_equal(seg.labels[:(n_train + 1) // 2], exp["labels"][:n_train:2])
    np.testing.assert_array_equal(seg.images[0], full.images[0])


def _pixels(path: Path) -> bytes:
    """An image file decoded on its own (RGB, native size), as bytes to look it up by."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).transpose(2, 0, 1).tobytes()


def test_miniplaces_official_val_images_are_the_test_part(tmp_path, served):
    """Soekhoe's V_source / V_target: the validation images of each half's classes, not a
    random fraction of the training images; train.txt's images are the training part."""
    from tests.conftest import TINY, deep_update
    from transferlab.config.params import parse_params
    from transferlab.data.prepared import prepare_tasks

    root = tmp_path / "root"
    params = parse_params(deep_update(TINY, {"dataset": "miniplaces", "data": {
        "split": "random", "root": str(root), "mirror": str(served["url"]),
        "manifest": str(_manifest_file(root, served, "miniplaces"))}}))
    source, target, meta = prepare_tasks("miniplaces", params.data, 0, progress=False)
    images = root / "miniplaces" / "data" / "images"
    lists = served["miniplaces_lists"]
    file_of = {_pixels(images / name): (part, name, label)
               for part in ("train", "val") for name, label in lists[part]}
    assert len(file_of) == len(lists["train"]) + len(lists["val"])  # each image its own
    for task, classes in ((source, meta["source_classes"]), (target, meta["target_classes"])):
        for part, x, y in (("train", task.x_train, task.y_train),
                           ("val", task.x_test, task.y_test)):
            found = [file_of[img.tobytes()] for img in x]
            # every listed image of the task's classes, each once, from the right list
            assert sorted(name for _, name, _ in found) == sorted(
                name for name, label in lists[part] if label in classes)
            assert {p for p, _, _ in found} == {part}
            assert [classes[k] for k in y] == [label for _, _, label in found]
    assert len(source.classes) == len(target.classes) == 3
    assert meta["target_test_per_class"] == [5, 5, 5]  # the fixture's val: 5 a class
    assert "bakery/shop" in meta["source_class_names"] + meta["target_class_names"]
    # the preset's size: 128 px read at 64, the same split
    small = load_dataset("miniplaces", root=root, image_size=64, download=False,
                         manifest=_manifest_file(tmp_path, served, "miniplaces"))
    assert small.images.shape == (102, 3, 64, 64) and int(small.is_test.sum()) == 30


def test_miniplaces_lists_that_do_not_fit_the_images_are_refused(tmp_path, served):
    root = tmp_path / "root"
    manifest = _manifest_file(tmp_path, served, "miniplaces")
    load_dataset("miniplaces", root=root, mirror=served["url"], manifest=manifest,
                 progress=False)
    data = root / "miniplaces" / "data"
    train = (data / "train.txt").read_text()
    first = train.splitlines()[0]  # train/a/abbey/00000001.jpg 0
    cases = [
        (data / "train.txt", train.replace(first, first[:-1] + "1", 1),
         "not in that category's folder"),
        (data / "train.txt", train.replace(first, first[:-1] + "99", 1), "bad line"),
        (data / "val.txt", "val/../../outside.jpg 0\n", "bad line"),
        (data / "categories.txt", "/a/abbey 0\n/a/airport_terminal 2\n", "ids count up"),
    ]
    for path, text, words in cases:
        original = path.read_text()
        path.write_text(text)
        # the reader itself (the catalog's checksums would stop these lists first; a
        # manifest without them, or a copy placed by hand, reaches the reader)
        with pytest.raises(ValueError, match=words) as err:
            read_miniplaces(data)
        assert str(path) in str(err.value)
        path.write_text(original)


def test_local_copy_present_means_no_request(tmp_path, served):
    url = served["url"]
    for name in ("mnist", "cifar10", "tinyimagenet", "miniplaces"):
        manifest = _manifest_file(tmp_path, served, name)
        first = load_dataset(name, root=tmp_path, mirror=url, manifest=manifest, progress=False)
        count = len(url.requests)
        again = load_dataset(name, root=tmp_path, mirror=url, manifest=manifest, progress=False)
        assert len(url.requests) == count, name
        np.testing.assert_array_equal(first.images, again.images)
        # a closed mirror does not matter either: nothing is fetched
        load_dataset(name, root=tmp_path, mirror=CLOSED_URL, manifest=manifest, download=False)


def test_torchvision_layout_placed_by_hand_is_used(tmp_path, served):
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in served["manifests"]["mnist"]["files"]:
        (raw / f["name"]).write_bytes((served["dir"] / f["name"]).read_bytes())
    manifest = _manifest_file(tmp_path, served, "mnist")
    data = load_dataset("mnist", root=tmp_path / "root", mirror=CLOSED_URL, manifest=manifest)
    assert data.images.shape == (180, 1, 28, 28)


def test_archive_already_downloaded_is_extracted_without_request(tmp_path, served):
    root = tmp_path / "root"
    root.mkdir()
    (root / "cifar-100-python.tar.gz").write_bytes(
        (served["dir"] / "cifar-100-python.tar.gz").read_bytes())
    data = load_dataset("cifar100", root=root, mirror=CLOSED_URL,
                        manifest=_manifest_file(tmp_path, served, "cifar100"))
    assert data.images.shape == (168, 3, 32, 32)


def test_checksum_mismatch_names_file_and_leaves_nothing(tmp_path, served):
    m = json.loads(json.dumps(served["manifests"]["cifar10"]))
    real = m["files"][0]["md5"]
    m["files"][0]["md5"] = "0" * 32
    root = tmp_path / "root"
    with pytest.raises(ChecksumError) as err:
        load_dataset("cifar10", root=root, mirror=served["url"],
                     manifest=write_manifest(m, tmp_path / "m.json"), progress=False)
    msg = str(err.value)
    assert "cifar-10-python.tar.gz" in msg and "0" * 32 in msg and real in msg
    assert _all_files(root) == []


def test_truncated_download_is_never_complete(tmp_path, served):
    srv = served["dir"]
    name = "cifar-10-python.tar.gz"
    with serve_directory(srv, truncate={name: 1000}) as url:
        root = tmp_path / "root"
        with pytest.raises(DatasetUnavailableError) as err:
            load_dataset("cifar10", root=root, mirror=url,
                         manifest=_manifest_file(tmp_path, served, "cifar10"), progress=False)
        assert "received 1000 of" in str(err.value) or "truncated" in str(err.value)
        assert _all_files(root) == []
        assert url.requests == [f"/{name}"]
        # download_file alone: same, and the next URL in the list is tried
        good = f"{served['url']}/{name}"
        sums = {"md5": served["manifests"]["cifar10"]["files"][0]["md5"]}
        dest = download_file([f"{url}/{name}", good], tmp_path / "dl" / name, sums,
                             progress=False)
        assert dest.read_bytes() == (srv / name).read_bytes()
        assert _all_files(tmp_path / "dl") == [name]


def test_stale_part_files_are_removed_and_corrupt_download_replaced(tmp_path, served):
    root = tmp_path / "root"
    root.mkdir()
    stale = root / ".cifar-10-python.tar.gz.abc123.part"
    stale.write_bytes(b"half a download")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    (root / "cifar-10-python.tar.gz").write_bytes(b"not the archive")
    data = load_dataset("cifar10", root=root, mirror=served["url"],
                        manifest=_manifest_file(tmp_path, served, "cifar10"), progress=False)
    assert len(data) == 210
    assert not stale.exists()
    assert (root / "cifar-10-python.tar.gz").read_bytes() == (
        served["dir"] / "cifar-10-python.tar.gz").read_bytes()


def test_offline_without_local_copy_says_what_where_and_digits(tmp_path, served):
    root = tmp_path / "root"
    with pytest.raises(DatasetUnavailableError) as err:
        load_dataset("mnist", root=root, mirror=CLOSED_URL,
                     manifest=_manifest_file(tmp_path, served, "mnist"), progress=False)
    msg = str(err.value)
    assert str(root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz") in msg
    assert f"{CLOSED_URL}/train-images-idx3-ubyte.gz" in msg
    assert "dataset: digits" in msg
    # the built-in catalog entry, downloads off
    with pytest.raises(DatasetUnavailableError) as err:
        load_dataset("cifar10", root=root, download=False)
    msg = str(err.value)
    assert str(root / "cifar-10-batches-py" / "data_batch_1") in msg
    assert "download=False" in msg and "dataset: digits" in msg
    assert _all_files(root) == []


def test_mirror_replaces_url_prefix_and_urls_fall_back(tmp_path, served):
    m = json.loads(json.dumps(served["manifests"]["cifar100"]))
    name = m["files"][0]["name"]
    m["files"][0]["urls"] = [f"{CLOSED_URL}/{name}", f"{served['url']}/{name}"]
    data = load_dataset("cifar100", root=tmp_path / "a", progress=False,
                        manifest=write_manifest(m, tmp_path / "m.json"))
    assert len(data) == 168
    m = with_base_url(served["manifests"]["cifar100"], "http://127.0.0.1:9/nowhere")
    path = write_manifest(m, tmp_path / "m2.json")
    with pytest.raises(DatasetUnavailableError):
        load_dataset("cifar100", root=tmp_path / "b", manifest=path, progress=False)
    load_dataset("cifar100", root=tmp_path / "b", manifest=path, mirror=served["url"] + "/",
                 progress=False)
    assert served["url"].requests[-1] == f"/{name}"


def test_builtin_catalog_has_the_published_checksums():
    assert CATALOG["mnist"]["local"]["MNIST/raw/train-images-idx3-ubyte.gz"]["md5"] == \
        "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    sums = {f["name"]: f["md5"] for e in CATALOG.values() for f in e["files"]}
    assert sums["cifar-10-python.tar.gz"] == "c58f30108f718f92721af3b95e74349a"
    assert sums["cifar-100-python.tar.gz"] == "eb9058c3a382ffc7106e4002c42a8d85"
    assert sums["VOCtrainval_11-May-2012.tar"] == "6cd6e144f989b92b3379bac3b3de84fd"
    assert sums["tiny-imagenet-200.zip"] == "90528d7ca1a48142e341f4ef8d21d0de"
    # MiniPlaces' label lists come from one commit of the development kit, so their
    # checksums cannot drift with the repository; the archive has one checksum too
    kit = [f for f in CATALOG["miniplaces"]["files"] if f["name"].endswith(".txt")]
    assert sorted(f["name"] for f in kit) == ["categories.txt", "train.txt", "val.txt"]
    assert all(f["urls"][0].startswith("https://raw.githubusercontent.com/CSAILVision/"
                                       "miniplaces/43f337898589dc70f4cf024587ead2aa1cff4e73/")
               for f in kit)
    assert sums["data.tar.gz"] == "265825ec94f79390e4f1e38045a69059"
    for name, entry in CATALOG.items():
        validate_manifest(entry, name)


def test_manifest_errors_name_the_key(tmp_path):
    ok = {"files": [{"name": "a.tar", "url": "http://x/a.tar", "sha256": "a" * 64,
                     "extract": "."}], "local": ["a"]}
    assert validate_manifest(ok)["files"][0]["checksums"] == {"sha256": "a" * 64}
    bad_cases = [
        ({**ok, "extra": 1}, "unknown keys"),
        ({**ok, "local": ["../outside"]}, "inside root"),
        ({**ok, "files": [{**ok["files"][0], "extract": "/abs"}]}, "inside root"),
        ({**ok, "files": [{**ok["files"][0], "name": "d/a.tar"}]}, "plain file name"),
        ({**ok, "files": [{"name": "a", "url": "http://x/a"}]}, "md5, sha256"),
        ({**ok, "files": [{**ok["files"][0], "sha256": "xyz"}]}, "hex digits"),
        ({**ok, "files": [{**ok["files"][0], "gunzip_sha256": "a" * 32}]}, "64 hex digits"),
        ({**ok, "local": {"a": {"gunzip": "a" * 64}}}, "gunzip_sha256"),
    ]
    # a gzip checked by its decompressed content alone, or as well as by its bytes
    only = {"files": [{"name": "a.gz", "url": "http://x/a.gz", "gunzip_sha256": "B" * 64}],
            "local": {"a.gz": {"md5": "c" * 32, "gunzip_sha256": "d" * 64}}}
    checked = validate_manifest(only)
    assert checked["files"][0]["checksums"] == {"gunzip_sha256": "b" * 64}
    assert checked["local"]["a.gz"] == {"md5": "c" * 32, "gunzip_sha256": "d" * 64}
    for raw, words in bad_cases:
        with pytest.raises(ValueError, match=words):
            validate_manifest(raw)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        read_manifest(tmp_path / "bad.json")


# ---------------------------------------------------------------------------- archive safety


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w") as tar:
        ok = tarfile.TarInfo("good/file.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if data else None)
    return path


def _member(name, type=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = type
    info.linkname = linkname
    return info


@pytest.mark.parametrize("member, why", [
    (_member("/etc/evil"), "absolute"),
    (_member("good/../../evil"), ".."),
    (_member("link", tarfile.SYMTYPE, "../../etc/passwd"), "outside"),
    (_member("link", tarfile.SYMTYPE, "/etc/passwd"), "absolute"),
    (_member("hard", tarfile.LNKTYPE, "../outside.txt"), "outside"),
    (_member("hard", tarfile.LNKTYPE, "/etc/passwd"), "absolute"),
    (_member("dev", tarfile.CHRTYPE), "device"),
    (_member("blk", tarfile.BLKTYPE), "device"),
    (_member("pipe", tarfile.FIFOTYPE), "fifo"),
], ids=["absolute", "dotdot", "symlink-out", "symlink-abs", "hardlink-out", "hardlink-abs",
        "chardev", "blockdev", "fifo"])
def test_tar_refuses_members_outside_or_special(tmp_path, member, why):
    archive = _tar_with(tmp_path / "bad.tar", member, b"x" if member.isfile() else b"")
    target = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError) as err:
        extract_archive(archive, target)
    assert "bad.tar" in str(err.value) and member.name in str(err.value)
    assert why in str(err.value)
    assert list(target.iterdir()) == []  # not even the good member
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "evil").exists()


def test_tar_refuses_writing_through_an_inside_symlink_chain(tmp_path):
    archive = tmp_path / "chain.tar"
    with tarfile.open(archive, "w") as tar:
        tar.addfile(_member("sub", tarfile.DIRTYPE))
        tar.addfile(_member("sub/up", tarfile.SYMTYPE, ".."))
        tar.addfile(_member("sub/up/file.txt"), io.BytesIO(b""))
    with pytest.raises(UnsafeArchiveError, match="through the link"):
        extract_archive(archive, tmp_path / "out")


def test_zip_refuses_dotdot_and_absolute(tmp_path):
    for name in ("../evil.txt", "ok/../../evil.txt", "/abs.txt"):
        archive = tmp_path / "bad.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("fine.txt", b"ok")
            zf.writestr(zipfile.ZipInfo(name), b"evil")
        with pytest.raises(UnsafeArchiveError) as err:
            extract_archive(archive, tmp_path / "out")
        assert "bad.zip" in str(err.value) and name in str(err.value)
        assert list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


def test_safe_extraction_replaces_existing_entries(tmp_path):
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("data/new.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"new"))
        tar.addfile(_member("data/alias", tarfile.SYMTYPE, "new.txt"))
    target = tmp_path / "out"
    (target / "data").mkdir(parents=True)
    (target / "data" / "old.txt").write_text("old")
    (target / "keep.txt").write_text("keep")
    files = extract_archive(archive, target)
    assert files == ["data/alias", "data/new.txt"]
    assert sorted(p.name for p in target.iterdir()) == ["data", "keep.txt"]
    assert sorted(p.name for p in (target / "data").iterdir()) == ["alias", "new.txt"]
    assert (target / "data" / "alias").read_text() == "new"


def test_unsafe_archive_through_load_dataset(tmp_path):
    srv = tmp_path / "srv"
    srv.mkdir()
    archive = _tar_with(srv / "cifar-10-python.tar.gz", _member("../escape.txt"), b"x")
    from tests.dataset_fixtures import md5
    manifest = {"files": [{"name": archive.name, "url": f"{CLOSED_URL}/{archive.name}",
                           "md5": md5(archive), "extract": "."}],
                "local": ["cifar-10-batches-py/data_batch_1"]}
    root = tmp_path / "root"
    with serve_directory(srv) as url, pytest.raises(UnsafeArchiveError, match="escape.txt"):
        load_dataset("cifar10", root=root, mirror=url, progress=False,
                     manifest=write_manifest(manifest, tmp_path / "m.json"))
    assert _all_files(root) == ["cifar-10-python.tar.gz"]  # verified archive, nothing extracted
    assert not (tmp_path / "escape.txt").exists()


# ---------------------------------------------------------------------------- pickles


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def test_restricted_unpickler_refuses_code_and_never_runs_it(tmp_path):
    marker = tmp_path / "pwned"
    payload = py2_pickle({b"data": _Evil(os.system, f"touch {marker}")})
    with pytest.raises(UnsafePickleError) as err:
        safe_loads(payload, source="batch")
    assert f"{os.system.__module__}.system" in str(err.value) and "batch" in str(err.value)
    assert not marker.exists()
    for func in (eval, exec, getattr):
        with pytest.raises(UnsafePickleError, match=rf"(__builtin__|builtins)\.{func.__name__};"):
            safe_loads(pickle.dumps(_Evil(func, "1"), protocol=2))
    # the py3 way of pickling bytes at protocol 2 names _codecs.encode: not needed, refused
    with pytest.raises(UnsafePickleError, match="_codecs.encode"):
        safe_loads(pickle.dumps(b"abc", protocol=2))


def test_real_style_cifar_pickle_loads():
    arr = np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072)
    obj = safe_loads(py2_pickle({b"data": arr, b"labels": [1, 2], b"names": [b"a", b"b"]}))
    np.testing.assert_array_equal(obj[b"data"], arr)
    assert obj[b"labels"] == [1, 2] and obj[b"names"] == [b"a", b"b"]


def _cifar_archive_with_batch(srv: Path, batch: bytes) -> dict:
    manifest = write_cifar10_archive(srv, n_per_class=2, n_test_per_class=1)
    path = srv / "cifar-10-python.tar.gz"
    with tarfile.open(path, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    members["cifar-10-batches-py/data_batch_1"] = batch
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    from tests.dataset_fixtures import md5
    manifest["files"][0]["md5"] = md5(path)
    manifest["local"] = list(manifest["local"])  # no per-batch checksums: the archive's only
    return manifest


def test_malicious_batch_in_verified_archive_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = py2_pickle({b"data": _Evil(os.system, f"touch {marker}")})
    manifest = _cifar_archive_with_batch(tmp_path / "srv", evil)
    with serve_directory(tmp_path / "srv") as url, pytest.raises(UnsafePickleError,
                                                                 match="system"):
        load_dataset("cifar10", root=tmp_path / "root", mirror=url, progress=False,
                     manifest=write_manifest(manifest, tmp_path / "m.json"))
    assert not marker.exists()


def test_batches_are_not_unpickled_before_a_checksum_matched(tmp_path, served):
    root = tmp_path / "root"
    manifest = _manifest_file(tmp_path, served, "cifar10")
    load_dataset("cifar10", root=root, mirror=served["url"], manifest=manifest, progress=False)
    # tampered after extraction: the batch checksum catches it before unpickling
    marker = tmp_path / "pwned"
    batch = root / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(pickle.dumps(_Evil(os.system, f"touch {marker}"), protocol=2))
    with pytest.raises(ChecksumError, match="data_batch_2"):
        load_dataset("cifar10", root=root, mirror=CLOSED_URL, manifest=manifest, download=False)
    assert not marker.exists()
    # a local copy whose manifest has no batch checksums is never unpickled
    m = json.loads(manifest.read_text())
    m["local"] = list(m["local"])
    unchecked = write_manifest(m, tmp_path / "unchecked.json")
    with pytest.raises(ChecksumError, match="refusing to unpickle"):
        load_dataset("cifar10", root=root, mirror=CLOSED_URL, manifest=unchecked)
    assert not marker.exists()


def test_ensure_local_copy_redownloads_a_corrupt_local_copy(tmp_path, served):
    root = tmp_path / "root"
    manifest = _manifest_file(tmp_path, served, "mnist")
    entry = read_manifest(manifest)
    ensure_local_copy("mnist", entry, root, mirror=served["url"], progress=False)
    target = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(b"garbage")
    count = len(served["url"].requests)
    verified = ensure_local_copy("mnist", entry, root, mirror=served["url"], progress=False)
    assert target in verified and len(served["url"].requests) > count
    assert target.read_bytes() == (served["dir"] / target.name).read_bytes()


def test_gunzip_sha256_checks_a_gzip_by_its_content(tmp_path, served):
    """Byte checksums first; failing them (or with none), the decompressed content's."""
    import gzip
    import hashlib

    src = served["dir"] / "t10k-labels-idx1-ubyte.gz"
    content = gzip.decompress(src.read_bytes())
    sha = hashlib.sha256(content).hexdigest()
    other = tmp_path / "other.gz"  # the same content, other gzip bytes
    other.write_bytes(gzip.compress(content, compresslevel=1, mtime=12345))
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    for sums in ({"md5": md5, "gunzip_sha256": sha}, {"gunzip_sha256": sha}):
        verify_file(src, sums)
        verify_file(other, sums)
    with pytest.raises(ChecksumError, match="md5 checksum mismatch"):
        verify_file(other, {"md5": md5})
    # download_file: the same rule, on the bytes before they are renamed into place
    dest = download_file([f"{served['url']}/{src.name}"], tmp_path / "dl" / "x.gz",
                         {"gunzip_sha256": sha}, progress=False)
    assert dest.read_bytes() == src.read_bytes()
    wrong = {"md5": md5, "gunzip_sha256": "0" * 64}
    with pytest.raises(ChecksumError) as err:
        verify_file(other, wrong)
    assert str(other) in str(err.value) and f"expected {'0' * 64}, got {sha}" in str(err.value)
    verify_file(src, wrong)  # its bytes match: the content digest is not needed
    with pytest.raises(ChecksumError, match="x.gz: gunzip_sha256 .* mismatch.*deleted"):
        download_file([f"{served['url']}/{src.name}"], tmp_path / "dl2" / "x.gz",
                      {"gunzip_sha256": "0" * 64}, progress=False)
    assert not (tmp_path / "dl2").exists() or _all_files(tmp_path / "dl2") == []


def test_download_bar_shows_only_on_a_terminal(monkeypatch):
    import io as _io
    import sys

    from transferlab.data.download import _bar

    class Terminal(_io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("TRANSFERLAB_NO_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", _io.StringIO())  # a log file, a queued run
    with _bar(10, "x", True) as bar:
        assert bar.disable
    monkeypatch.setattr(sys, "stderr", Terminal())
    with _bar(10, "x", True) as bar:
        assert not bar.disable
    with _bar(10, "x", False) as bar:
        assert bar.disable
    monkeypatch.setenv("TRANSFERLAB_NO_PROGRESS", "1")
    with _bar(10, "x", True) as bar:
        assert bar.disable
