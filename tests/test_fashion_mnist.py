"""Fashion-MNIST: torchvision's four files downloaded and verified by their MD5s, and
Debian's recompressed copy (package dataset-fashion-mnist, /usr/share/datasets/fashion-mnist/)
accepted by the sha256 of the decompressed idx files. The real files are read where they are
installed (`make setup` installs them as root), a tiny set in the same format otherwise."""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from tests.dataset_fixtures import (
    CLOSED_URL,
    class_images,
    md5,
    recompress_like_debian,
    serve_directory,
    sha256_gunzip,
    write_fashion_mnist_files,
    write_manifest,
)
from transferlab.data.catalog import CATALOG, load_dataset, validate_manifest
from transferlab.data.download import ChecksumError, verify_file
from transferlab.data.readers import FASHION_MNIST_CLASSES

from .conftest import TINY, deep_update

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
NAMES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
INSTALLED = all((DEBIAN / n).is_file() for n in NAMES)
TV_MD5 = {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
          "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
          "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
          "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}
PER_CLASS, TEST_PER_CLASS = 6, 3  # the tiny set's images per class


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The tiny set in torchvision's gzip form, served over HTTP, with its manifest."""
    srv = tmp_path_factory.mktemp("srv")
    manifest = write_fashion_mnist_files(srv, PER_CLASS, TEST_PER_CLASS)
    with serve_directory(srv) as url:
        yield {"dir": srv, "url": url, "manifest": manifest}


def _manifest(tmp_path: Path, served, where: Path | None = None) -> Path:
    return write_manifest(served["manifest"], (where or tmp_path) / "fashion-mnist.json")


@pytest.fixture
def debian_copy(tmp_path, served):
    """(root, manifest, train and test images per class): Debian's installed copy and the
    built-in catalog, or else the tiny set recompressed into Debian's layout."""
    if INSTALLED:
        return DEBIAN.parent, None, 6000, 1000
    root = tmp_path / "datasets"
    for name in NAMES:
        recompress_like_debian(served["dir"] / name, root / "fashion-mnist" / name)
    return root, _manifest(tmp_path, served), PER_CLASS, TEST_PER_CLASS


def test_catalog_has_torchvisions_files_and_the_decompressed_digests():
    from torchvision.datasets import FashionMNIST

    entry = CATALOG["fashion-mnist"]
    assert [(f["name"], f["md5"]) for f in entry["files"]] == \
        [tuple(r) for r in FashionMNIST.resources] == list(TV_MD5.items())
    assert [f["urls"] for f in entry["files"]] == \
        [[m + f["name"] for m in FashionMNIST.mirrors] for f in entry["files"]]
    assert FASHION_MNIST_CLASSES == FashionMNIST.classes
    for f in entry["files"]:
        assert f["dir"] == "FashionMNIST/raw"  # torchvision's layout: its copy is reused
        assert entry["local"][f"FashionMNIST/raw/{f['name']}"] == \
            {"md5": f["md5"], "gunzip_sha256": f["gunzip_sha256"]}
    assert entry["files"][0]["gunzip_sha256"] == \
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"
    validate_manifest(entry)


def test_download_serves_torchvision_names_verified_by_md5(tmp_path, served):
    root = tmp_path / "root"
    manifest = _manifest(tmp_path, served)
    before = len(served["url"].requests)
    data = load_dataset("fashion-mnist", root=root, mirror=served["url"], manifest=manifest,
                        progress=False)
    assert served["url"].requests[before:] == [f"/{n}" for n in NAMES]
    assert _files(root) == [f"FashionMNIST/raw/{n}" for n in sorted(NAMES)]
    for n in NAMES:  # torchvision's bytes, kept as they came
        assert md5(root / "FashionMNIST/raw" / n) == md5(served["dir"] / n)
    n_train, n_test = 10 * PER_CLASS, 10 * TEST_PER_CLASS
    assert data.images.shape == (n_train + n_test, 1, 28, 28) and data.images.dtype == np.uint8
    assert data.class_names == FASHION_MNIST_CLASSES
    assert int(data.is_test.sum()) == n_test and not data.is_test[:n_train].any()
    x, y = class_images(10, PER_CLASS, 1, 28, 28, 0)
    np.testing.assert_array_equal(data.images[:n_train], x)
    np.testing.assert_array_equal(data.labels[:n_train], y)
    # present now: read again without a request, even with the network gone
    count = len(served["url"].requests)
    load_dataset("fashion-mnist", root=root, mirror=CLOSED_URL, manifest=manifest,
                 download=False)
    assert len(served["url"].requests) == count


def test_a_mirror_serving_debians_gzips_is_accepted_by_their_content(tmp_path, served):
    deb = tmp_path / "deb"
    for n in NAMES:
        recompress_like_debian(served["dir"] / n, deb / n)
        assert md5(deb / n) != md5(served["dir"] / n)
    with serve_directory(deb) as url:
        data = load_dataset("fashion-mnist", root=tmp_path / "root", mirror=url,
                            manifest=_manifest(tmp_path, served), progress=False)
    assert data.images.shape == (10 * (PER_CLASS + TEST_PER_CLASS), 1, 28, 28)
    # and the same files put in torchvision's layout by hand
    raw = tmp_path / "byhand" / "FashionMNIST/raw"
    for n in NAMES:
        recompress_like_debian(served["dir"] / n, raw / n)
    again = load_dataset("fashion-mnist", root=tmp_path / "byhand", mirror=CLOSED_URL,
                         manifest=_manifest(tmp_path, served), download=False)
    np.testing.assert_array_equal(again.images, data.images)


def _other_content(src: Path, dest: Path) -> None:
    """`src`'s idx file with one pixel changed, gzipped: a valid file of the wrong content."""
    data = bytearray(gzip.decompress(src.read_bytes()))
    data[-1] ^= 0xFF
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(gzip.compress(bytes(data), mtime=0))


def test_a_gzip_with_other_content_is_refused_naming_the_file(tmp_path, served):
    name = "train-images-idx3-ubyte.gz"
    expected = served["manifest"]["files"][0]["gunzip_sha256"]
    bad = tmp_path / "bad"
    for n in NAMES:
        (bad / n).parent.mkdir(parents=True, exist_ok=True)
        (bad / n).write_bytes((served["dir"] / n).read_bytes())
    _other_content(served["dir"] / name, bad / name)
    root = tmp_path / "root"
    with serve_directory(bad) as url, pytest.raises(ChecksumError) as err:
        load_dataset("fashion-mnist", root=root, mirror=url,
                     manifest=_manifest(tmp_path, served), progress=False)
    msg = str(err.value)
    assert str(root / "FashionMNIST/raw" / name) in msg
    assert f"md5 checksum mismatch: expected {served['manifest']['files'][0]['md5']}" in msg
    assert f"gunzip_sha256 (sha256 of the decompressed content) mismatch: expected " \
           f"{expected}, got {sha256_gunzip(bad / name)}" in msg
    assert "the file was deleted" in msg and _files(root) == []
    # the same file placed by hand, downloads off: refused, named
    raw = root / "FashionMNIST/raw"
    for n in NAMES:
        (raw / n).parent.mkdir(parents=True, exist_ok=True)
        (raw / n).write_bytes((bad / n).read_bytes())
    with pytest.raises(ChecksumError, match=f"corrupt: {raw / name}: md5"):
        load_dataset("fashion-mnist", root=root, manifest=_manifest(tmp_path, served),
                     download=False)
    # not gzip at all
    (raw / name).write_bytes(b"not a gzip file")
    with pytest.raises(ChecksumError, match="does not decompress as gzip"):
        verify_file(raw / name, served["manifest"]["local"][f"FashionMNIST/raw/{name}"])


def test_debians_layout_is_read_where_it_is(tmp_path, debian_copy):
    root, manifest, per_class, test_per_class = debian_copy
    before = None if INSTALLED else _files(root)
    data = load_dataset("fashion-mnist", root=root, manifest=manifest, mirror=CLOSED_URL,
                        download=False)
    assert data.images.shape == (10 * (per_class + test_per_class), 1, 28, 28)
    assert data.images.dtype == np.uint8 and data.class_names == FASHION_MNIST_CLASSES
    assert np.bincount(data.labels[~data.is_test]).tolist() == [per_class] * 10
    assert np.bincount(data.labels[data.is_test]).tolist() == [test_per_class] * 10
    assert 0 < data.images.mean() < 255
    if not INSTALLED:  # nothing written under root: no FashionMNIST/, no downloads
        assert _files(root) == before and sorted(p.name for p in root.iterdir()) == \
            ["fashion-mnist"]


def test_a_corrupt_debian_copy_is_named_and_left_alone(tmp_path, served):
    root = tmp_path / "datasets"
    for n in NAMES:
        recompress_like_debian(served["dir"] / n, root / "fashion-mnist" / n)
    target = root / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    _other_content(served["dir"] / target.name, target)
    content = target.read_bytes()
    with pytest.raises(ChecksumError) as err:
        load_dataset("fashion-mnist", root=root, mirror=served["url"],
                     manifest=_manifest(tmp_path, served), progress=False)
    msg = str(err.value)
    assert str(target) in msg and "never replaced" in msg and "gunzip_sha256" in msg
    assert target.read_bytes() == content and not (root / "FashionMNIST").exists()


@pytest.mark.skipif(not INSTALLED, reason="Debian's dataset-fashion-mnist is not installed "
                                          "(`make setup` installs it when run as root)")
def test_debians_real_files_are_the_recorded_idx_files():
    entry = CATALOG["fashion-mnist"]
    for f in entry["files"]:
        path = DEBIAN / f["name"]
        # recompressed: another md5 than torchvision's, so only the content digest passes
        assert md5(path) != f["md5"]
        with pytest.raises(ChecksumError, match="md5 checksum mismatch"):
            verify_file(path, {"md5": f["md5"]})
        verify_file(path, {"md5": f["md5"], "gunzip_sha256": f["gunzip_sha256"]})
        with gzip.open(path, "rb") as g:
            header = g.read(16)
        n = 60000 if f["name"].startswith("train") else 10000
        if "images" in f["name"]:
            assert struct.unpack(">IIII", header) == (2051, n, 28, 28)
        else:
            assert struct.unpack(">II", header[:8]) == (2049, n)
    assert hashlib.md5((DEBIAN / NAMES[0]).read_bytes()).hexdigest().startswith("cf8536b0")


def test_prepare_splits_fashion_mnist_into_a_and_b(tmp_path, served):
    from transferlab.config.params import parse_params
    from transferlab.data.prepared import prepare_tasks

    root = tmp_path / "datasets"
    for n in NAMES:
        recompress_like_debian(served["dir"] / n, root / "fashion-mnist" / n)
    p = parse_params(deep_update(TINY, {"dataset": "fashion-mnist", "data": {
        "root": str(root), "mirror": CLOSED_URL,
        "manifest": str(_manifest(tmp_path, served, root))}}))
    source, target, meta = prepare_tasks("fashion-mnist", p.data, 0, progress=False)
    assert meta["image_shape"] == [1, 28, 28]
    assert meta["source_class_names"] == FASHION_MNIST_CLASSES[:5]
    assert meta["target_class_names"] == FASHION_MNIST_CLASSES[5:]
    assert source.x_train.shape == (5 * PER_CLASS, 1, 28, 28)
    assert target.x_test.shape == (5 * TEST_PER_CLASS, 1, 28, 28)
    json.dumps(meta)  # meta.json holds it
