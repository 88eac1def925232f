"""Decoding from the on-disk layouts: image folders, VOC annotations, idx files."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from tests.dataset_fixtures import class_images, write_image_folder
from transferlab.data.catalog import load_dataset
from transferlab.data.readers import (
    FASHION_MNIST_CLASSES,
    RawDataset,
    _decode,
    read_mnist,
    resize_images,
    voc_labels,
)


def test_image_folder_decodes_exact_pixels_with_sorted_classes(tmp_path):
    write_image_folder(tmp_path, n_classes=3, n_per_class=4, size=(12, 10))
    (tmp_path / "class_1" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    data = load_dataset("imagefolder", root=tmp_path / "unused", path=tmp_path)
    assert data.class_names == ["class_0", "class_1", "class_2"]
    assert data.images.shape == (12, 3, 10, 12) and data.images.dtype == np.uint8
    assert data.is_test is None and not data.multilabel
    np.testing.assert_array_equal(data.labels, np.repeat([0, 1, 2], 4))
    png = np.asarray(Image.open(tmp_path / "class_2" / "img_001.png"))
    np.testing.assert_array_equal(data.images[9], png.transpose(2, 0, 1))


def test_image_folder_extensions_any_case_and_greyscale(tmp_path):
    write_image_folder(tmp_path, n_classes=2, n_per_class=3, size=(8, 8), grey=True)
    img = Image.open(tmp_path / "class_0" / "img_000.png")
    img.save(tmp_path / "class_0" / "UPPER.JPG", format="JPEG")
    img.save(tmp_path / "class_1" / "other.BMP", format="BMP")
    data = load_dataset("imagefolder", root=tmp_path, path=tmp_path)
    assert data.images.shape == (8, 1, 8, 8)  # all greyscale: one channel
    assert np.bincount(data.labels).tolist() == [4, 4]
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "class_1" / "red.png")
    data = load_dataset("imagefolder", root=tmp_path, path=tmp_path)
    assert data.images.shape == (9, 3, 8, 8)  # one colour image: everything RGB
    red = data.images[data.labels == 1][-1]
    assert red[:, 0, 0].tolist() == [200, 10, 10]


def test_image_folder_odd_size_error_names_the_file_and_resize_fixes_it(tmp_path):
    write_image_folder(tmp_path, n_classes=2, n_per_class=3, size=(16, 16))
    odd = tmp_path / "class_1" / "odd.png"
    Image.new("RGB", (20, 18)).save(odd)
    with pytest.raises(ValueError) as err:
        load_dataset("imagefolder", root=tmp_path, path=tmp_path)
    assert str(odd) in str(err.value) and "20x18" in str(err.value)
    assert "image_size" in str(err.value)
    data = load_dataset("imagefolder", root=tmp_path, path=tmp_path, image_size=8)
    assert data.images.shape == (7, 3, 8, 8)


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="needs `path`"):
        load_dataset("imagefolder", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("imagefolder", root=tmp_path, path=tmp_path / "nope")
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_dataset("imagefolder", root=tmp_path, path=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="'empty' holds no image files"):
        load_dataset("imagefolder", root=tmp_path, path=tmp_path)
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("imagefolder", root=tmp_path, path=tmp_path, image_size=0)
    with pytest.raises(ValueError, match="allowed: mnist"):
        load_dataset("svhn", root=tmp_path)
    with pytest.raises(ValueError, match="only used by dataset imagefolder"):
        load_dataset("mnist", root=tmp_path, path=tmp_path)


def _xml(objects):
    objs = "".join(f"<object><name>{n}</name><difficult>{d}</difficult></object>"
                   for n, d in objects)
    return f"<annotation><filename>x.jpg</filename>{objs}</annotation>"


def test_voc_difficult_only_where_no_plain_object(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(_xml([("dog", 0), ("dog", 1), ("cat", 1), ("person", 1), ("person", 1),
                          ("car", 0)]))
    present, difficult = voc_labels(path)
    names = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
             "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
             "sheep", "sofa", "train", "tvmonitor"]
    on = {names[i] for i in np.flatnonzero(present)}
    hard = {names[i] for i in np.flatnonzero(difficult)}
    assert on == {"dog", "car"} and hard == {"cat", "person"}
    assert present.dtype == np.uint8 and difficult.dtype == bool
    path.write_text(_xml([("dragon", 0)]))
    with pytest.raises(ValueError, match="'dragon' is not a VOC class"):
        voc_labels(path)


def test_mnist_idx_header_is_checked(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    images, labels = class_images(10, 2, 1, 28, 28, 0)
    for prefix in ("train", "t10k"):
        (raw / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(
            struct.pack(">IIII", 0x803, 20, 28, 28) + images.tobytes()))
        (raw / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(
            struct.pack(">II", 0x801, 20) + labels.astype(np.uint8).tobytes()))
    data = read_mnist(raw)
    assert data.images.shape == (40, 1, 28, 28) and data.is_test.sum() == 20
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(
        struct.pack(">II", 0x803, 20) + labels.astype(np.uint8).tobytes()))
    with pytest.raises(ValueError, match="magic number"):
        read_mnist(raw)
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(
        struct.pack(">II", 0x801, 25) + labels.astype(np.uint8).tobytes()))
    with pytest.raises(ValueError, match="does not match header"):
        read_mnist(raw)
    # the same format with other class names (Fashion-MNIST); a label past them is refused
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(
        struct.pack(">II", 0x801, 20) + labels.astype(np.uint8).tobytes()))
    assert read_mnist(raw, FASHION_MNIST_CLASSES).class_names[0] == "T-shirt/top"
    with pytest.raises(ValueError, match="label 9 in the idx files, but the dataset has 3"):
        read_mnist(raw, ["a", "b", "c"])


def test_resize_images_keeps_channels_and_dtype():
    images, _ = class_images(2, 2, 1, 28, 28, 0)
    out = resize_images(images, 32)
    assert out.shape == (4, 1, 32, 32) and out.dtype == np.uint8
    assert resize_images(out, 32) is out
    rgb, _ = class_images(2, 1, 3, 8, 8, 0)
    assert resize_images(rgb, 4).shape == (2, 3, 4, 4)


def test_raw_dataset_multilabel_flag():
    single = RawDataset(np.zeros((2, 1, 4, 4), np.uint8), np.zeros(2, np.int64), ["a"])
    multi = RawDataset(np.zeros((2, 1, 4, 4), np.uint8), np.zeros((2, 3), np.uint8),
                       ["a", "b", "c"], difficult=np.zeros((2, 3), bool))
    assert not single.multilabel and multi.multilabel and len(multi) == 2


def test_fixture_images_are_learnable(tmp_path):
    """A nearest-class-mean classifier beats chance by far on held-out fixture images, so a
    tiny network in the end-to-end tests can learn them too."""
    x, y = class_images(8, 15, 3, 32, 32, 0)
    xt, yt = class_images(8, 6, 3, 32, 32, 1)
    flat, flat_t = x.reshape(len(x), -1).astype(float), xt.reshape(len(xt), -1).astype(float)
    means = np.stack([flat[y == c].mean(0) for c in range(8)])
    pred = ((flat_t[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == yt).mean() > 0.9


def test_image_folder_skips_hidden_files_such_as_appledouble(tmp_path):
    write_image_folder(tmp_path, n_classes=2, n_per_class=3, size=(8, 8))
    (tmp_path / "class_0" / "._img_000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    Image.new("RGB", (8, 8)).save(tmp_path / "class_1" / ".hidden.png")
    data = load_dataset("imagefolder", root=tmp_path, path=tmp_path)
    assert np.bincount(data.labels).tolist() == [3, 3]
    (tmp_path / "class_2").mkdir()
    (tmp_path / "class_2" / "._a.png").write_bytes(b"metadata")
    with pytest.raises(ValueError, match="'class_2' holds no image files"):
        load_dataset("imagefolder", root=tmp_path, path=tmp_path)


def test_a_decompression_bomb_names_the_file(tmp_path, monkeypatch):
    write_image_folder(tmp_path, n_classes=2, n_per_class=2, size=(16, 16))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # 16x16 exceeds twice the limit
    assert not issubclass(Image.DecompressionBombError, OSError)
    with pytest.raises(ValueError, match=r"class_0/img_000\.png: cannot read image "
                                         r"\(Image size \(256 pixels\) exceeds limit"):
        load_dataset("imagefolder", root=tmp_path, path=tmp_path)
    out = np.empty((3, 16, 16), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"img_001\.png: cannot decode image \(Image size"):
        _decode(tmp_path / "class_1" / "img_001.png", "RGB", None, out)
