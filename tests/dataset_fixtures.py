"""Small datasets in the real on-disk formats, and a local HTTP server to fetch them from.

Each `write_*` function writes the file(s) a real download would deliver into a
directory and returns a catalog manifest (see transferlab.data.catalog) whose
checksums match them. The manifest's URLs point at a closed port; pass the
served base URL as `mirror` (or use `with_base_url`). Images are learnable:
each class has its own colour and stripe pattern, plus noise.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import pickle
import struct
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

CLOSED_URL = "http://127.0.0.1:9"  # discard port: nothing listens there
VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor"]


# ---------------------------------------------------------------------------- helpers


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def file_entry(path: Path, *, dir: str = ".", extract: str | None = None) -> dict:
    entry = {"name": path.name, "urls": [f"{CLOSED_URL}/{path.name}"], "md5": md5(path),
             "dir": dir}
    if extract is not None:
        entry["extract"] = extract
    return entry


def with_base_url(manifest: dict, base_url: str) -> dict:
    out = json.loads(json.dumps(manifest))
    for f in out["files"]:
        f["urls"] = [f"{base_url.rstrip('/')}/{f['name']}"]
    return out


def write_manifest(manifest: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2))
    return path


def class_image(label: int, channels: int, h: int, w: int, rng: np.random.Generator,
                noise: float = 18.0) -> np.ndarray:
    """(C, H, W) uint8: a colour and stripe orientation/period that identify the class."""
    hue = np.array([(label * 97) % 256, (label * 53 + 80) % 256, (label * 181 + 160) % 256],
                   dtype=np.float64)[:channels]
    if channels == 1:
        hue = np.array([40.0 + (label * 37) % 180])
    yy, xx = np.mgrid[0:h, 0:w]
    period = 2 + label % 4
    stripes = ((yy if label % 2 else xx) // period) % 2
    img = hue[:, None, None] * (0.55 + 0.45 * stripes[None])
    img = img + rng.normal(0, noise, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def class_images(n_classes: int, per_class: int, channels: int, h: int, w: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    rng.shuffle(labels)
    images = np.stack([class_image(int(c), channels, h, w, rng) for c in labels])
    return images, labels.astype(np.int64)


def _jpeg(img_chw: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    arr = img_chw[0] if img_chw.shape[0] == 1 else img_chw.transpose(1, 2, 0)
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_300_000_000  # fixed, so the archive (and its checksum) is reproducible
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = 1_300_000_000
    tar.addfile(info)


# ---------------------------------------------------------------------------- MNIST


def _idx(array: np.ndarray, magic: int) -> bytes:
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def write_mnist_files(dir: Path, n_per_class: int = 12, n_test_per_class: int = 6,
                      n_classes: int = 10, seed: int = 0) -> dict:
    """The four idx .gz files of MNIST (28x28, greyscale) with a few images per digit."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    files, local = [], {}
    for prefix, per_class, s in (("train", n_per_class, seed), ("t10k", n_test_per_class,
                                                                 seed + 1)):
        images, labels = class_images(n_classes, per_class, 1, 28, 28, s)
        for kind, data in (("images-idx3", _idx(images[:, 0], 0x803)),
                           ("labels-idx1", _idx(labels, 0x801))):
            path = dir / f"{prefix}-{kind}-ubyte.gz"
            path.write_bytes(data)
            files.append(file_entry(path, dir="MNIST/raw"))
            local[f"MNIST/raw/{path.name}"] = {"md5": md5(path)}
    return {"files": files, "local": local}


def sha256_gunzip(path: Path) -> str:
    return hashlib.sha256(gzip.decompress(Path(path).read_bytes())).hexdigest()


def write_fashion_mnist_files(dir: Path, n_per_class: int = 6, n_test_per_class: int = 3,
                              seed: int = 0) -> dict:
    """Fashion-MNIST's four files under torchvision's names (MNIST's idx format, 28x28 grey),
    and a manifest like the catalog's: the md5 of these gzips and the sha256 of their
    decompressed content (`gunzip_sha256`), saved under FashionMNIST/raw."""
    m = write_mnist_files(dir, n_per_class, n_test_per_class, seed=seed)
    files, local = [], {}
    for f in m["files"]:
        sha = sha256_gunzip(Path(dir) / f["name"])
        files.append({**f, "dir": "FashionMNIST/raw", "gunzip_sha256": sha})
        local[f"FashionMNIST/raw/{f['name']}"] = {"md5": f["md5"], "gunzip_sha256": sha}
    return {"files": files, "local": local}


DEBIAN_MTIME = 1591347949  # the date Debian's dataset-fashion-mnist stamps on its gzips


def recompress_like_debian(src: Path, dest: Path) -> None:
    """The same content gzipped again as Debian's package has it (another mtime, no file
    name, another level): other bytes, so another md5, and the same gunzip_sha256."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    data = gzip.decompress(Path(src).read_bytes())
    dest.write_bytes(gzip.compress(data, compresslevel=6, mtime=DEBIAN_MTIME))


# ---------------------------------------------------------------------------- CIFAR


class Py2StylePickler(pickle._Pickler):
    """Writes pickles like the real CIFAR files: Python 2 byte strings (BINSTRING opcodes,
    not _codecs.encode calls) and numpy.core.multiarray._reconstruct as the array global."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes

    def save_global(self, obj, name=None):
        if getattr(obj, "__name__", None) == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2StylePickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _cifar_images(n_classes, per_class, seed):
    images, labels = class_images(n_classes, per_class, 3, 32, 32, seed)
    return images.reshape(len(images), -1), labels


def _write_tar_gz(path: Path, members: dict[str, bytes], dirs: list[str]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in dirs:
            _add_dir(tar, d)
        for name, data in members.items():
            _add_bytes(tar, name, data)
    path.write_bytes(gzip.compress(buf.getvalue(), mtime=0))


def write_cifar10_archive(dir: Path, n_per_class: int = 15, n_test_per_class: int = 6,
                          n_classes: int = 10, n_batches: int = 5, seed: int = 0) -> dict:
    """cifar-10-python.tar.gz holding cifar-10-batches-py/ (data_batch_*, test_batch,
    batches.meta) as Python-2 style protocol-2 pickles."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    x, y = _cifar_images(n_classes, n_per_class, seed)
    xt, yt = _cifar_images(n_classes, n_test_per_class, seed + 1)
    base = "cifar-10-batches-py"
    members = {}
    for i, (xb, yb) in enumerate(zip(np.array_split(x, n_batches), np.array_split(y, n_batches),
                                     strict=True), start=1):
        members[f"{base}/data_batch_{i}"] = py2_pickle({
            b"batch_label": f"training batch {i} of {n_batches}".encode(),
            b"labels": [int(v) for v in yb], b"data": xb,
            b"filenames": [f"img_{i}_{j}.png".encode() for j in range(len(yb))]})
    members[f"{base}/test_batch"] = py2_pickle({
        b"batch_label": b"testing batch 1 of 1", b"labels": [int(v) for v in yt],
        b"data": xt, b"filenames": [f"test_{j}.png".encode() for j in range(len(yt))]})
    members[f"{base}/batches.meta"] = py2_pickle({
        b"num_cases_per_batch": len(x) // n_batches, b"num_vis": 3072,
        b"label_names": [f"class{c}".encode() for c in range(n_classes)]})
    path = dir / "cifar-10-python.tar.gz"
    _write_tar_gz(path, members, [base])
    local = {name: {"md5": hashlib.md5(data).hexdigest()} for name, data in members.items()}
    return {"files": [file_entry(path, extract=".")], "local": local}


def write_cifar100_archive(dir: Path, n_per_class: int = 15, n_test_per_class: int = 6,
                           n_classes: int = 8, seed: int = 0) -> dict:
    """cifar-100-python.tar.gz holding cifar-100-python/{train,test,meta}."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    base = "cifar-100-python"
    members = {}
    for part, per_class, s in (("train", n_per_class, seed), ("test", n_test_per_class,
                                                               seed + 1)):
        x, y = _cifar_images(n_classes, per_class, s)
        members[f"{base}/{part}"] = py2_pickle({
            b"filenames": [f"{part}_{j}.png".encode() for j in range(len(y))],
            b"batch_label": f"{part} batch".encode(), b"fine_labels": [int(v) for v in y],
            b"coarse_labels": [int(v) // 2 for v in y], b"data": x})
    members[f"{base}/meta"] = py2_pickle({
        b"fine_label_names": [f"fine{c}".encode() for c in range(n_classes)],
        b"coarse_label_names": [f"coarse{c}".encode() for c in range((n_classes + 1) // 2)]})
    path = dir / "cifar-100-python.tar.gz"
    _write_tar_gz(path, members, [base])
    local = {name: {"md5": hashlib.md5(data).hexdigest()} for name, data in members.items()}
    return {"files": [file_entry(path, extract=".")], "local": local}


# ---------------------------------------------------------------------------- VOC


def _voc_xml(image_id: str, w: int, h: int, objects: list[tuple[str, bool]],
             year: str = "2012") -> bytes:
    objs = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{int(diff)}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
        f"<xmax>{w - 1}</xmax><ymax>{h - 1}</ymax></bndbox></object>"
        for name, diff in objects)
    return (f"<annotation><folder>VOC{year}</folder><filename>{image_id}.jpg</filename>"
            f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
            f"<segmented>0</segmented>{objs}</annotation>").encode()


def _voc_part(members: dict, base: str, year: str, n_classes: int, per_class: int,
              rng: np.random.Generator, first: int) -> tuple[list[str], list, list]:
    """One part's JPEGs and annotations into `members`; (ids, labels, difficult). Every
    4th image adds a "difficult" object of the next class; every 5th adds its main class
    once more as difficult (which must not mark it difficult)."""
    order = np.repeat(np.arange(n_classes), per_class)
    rng.shuffle(order)
    ids, expected_labels, expected_difficult = [], [], []
    for k, c in enumerate(order, start=first + 1):
        image_id = f"{year}_{k - 1:06d}" if year == "2012" else f"{k:06d}"
        h, w = int(rng.integers(36, 60)), int(rng.integers(36, 60))
        objects = [(VOC_CLASSES[c], False)]
        labels = np.zeros(len(VOC_CLASSES), np.uint8)
        difficult = np.zeros(len(VOC_CLASSES), bool)
        labels[c] = 1
        if k % 4 == 0:
            other = (c + 1) % n_classes
            objects.append((VOC_CLASSES[other], True))
            difficult[other] = True
        if k % 5 == 0:
            objects.append((VOC_CLASSES[c], True))
        members[f"{base}/JPEGImages/{image_id}.jpg"] = _jpeg(class_image(int(c), 3, h, w, rng))
        members[f"{base}/Annotations/{image_id}.xml"] = _voc_xml(image_id, w, h, objects, year)
        ids.append(image_id)
        expected_labels.append(labels)
        expected_difficult.append(difficult)
    return ids, expected_labels, expected_difficult


def _write_voc_tar(path: Path, base: str, members: dict) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("VOCdevkit", base, f"{base}/JPEGImages", f"{base}/Annotations",
                  f"{base}/ImageSets", f"{base}/ImageSets/Main", f"{base}/ImageSets/Segmentation"):
            _add_dir(tar, d)
        for name, data in members.items():
            _add_bytes(tar, name, data)
    path.write_bytes(buf.getvalue())


def _lists(ids: list[str]) -> bytes:
    return ("\n".join(ids) + "\n").encode()


def write_voc_archive(dir: Path, n_classes: int = 6, n_train_per_class: int = 10,
                      n_val_per_class: int = 5, seed: int = 0) -> tuple[dict, dict]:
    """VOCtrainval_11-May-2012.tar with VOCdevkit/VOC2012/{JPEGImages,Annotations,
    ImageSets/Main/{train,val}.txt}. Images differ in size; each shows its main class's
    pattern, with "difficult" objects as `_voc_part` says. Returns the manifest and the
    expected {"labels", "difficult", "n_train"} in train-then-val order."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = "VOCdevkit/VOC2012"
    members, ids = {}, {}
    expected_labels, expected_difficult = [], []
    for part, per_class in (("train", n_train_per_class), ("val", n_val_per_class)):
        ids[part], labels, difficult = _voc_part(members, base, "2012", n_classes, per_class,
                                                 rng, len(expected_labels))
        expected_labels += labels
        expected_difficult += difficult
    for part in ("train", "val"):
        members[f"{base}/ImageSets/Main/{part}.txt"] = _lists(ids[part])
        # the segmentation lists hold a subset: every other training image, every val one
        members[f"{base}/ImageSets/Segmentation/{part}.txt"] = _lists(
            ids[part][::2 if part == "train" else 1])
    path = dir / "VOCtrainval_11-May-2012.tar"
    _write_voc_tar(path, base, members)
    local = {f"{base}/{p}": None for p in ("ImageSets/Main/train.txt",
                                          "ImageSets/Main/val.txt", "Annotations",
                                          "JPEGImages")}
    # merged into VOCdevkit/ as the catalog's VOC entries are (VOC 2007 lives beside it)
    manifest = {"files": [{**file_entry(path, extract="."), "merge": True}], "local": local}
    return manifest, {"labels": np.stack(expected_labels),
                      "difficult": np.stack(expected_difficult), "n_train": len(ids["train"])}


def write_voc2007_archives(dir: Path, n_classes: int = 6, n_trainval_per_class: int = 8,
                           n_test_per_class: int = 5, seed: int = 0) -> tuple[dict, dict]:
    """VOC 2007's two archives, as released: VOCtrainval_06-Nov-2007.tar (trainval images,
    annotations, ImageSets/Main/{train,val,trainval}.txt and the segmentation lists) and
    VOCtest_06-Nov-2007.tar (test images, annotations, ImageSets/Main/test.txt and
    ImageSets/Segmentation/test.txt), both under VOCdevkit/VOC2007 and numbered 000001..
    across the two as the real ones are. Their manifest merges both into one folder.
    Returns the manifest and the expected {"labels", "difficult", "n_train"} in
    trainval-then-test order."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = "VOCdevkit/VOC2007"
    trainval, test = {}, {}
    ids_tv, labels, difficult = _voc_part(trainval, base, "2007", n_classes,
                                          n_trainval_per_class, rng, 0)
    ids_test, labels_test, difficult_test = _voc_part(test, base, "2007", n_classes,
                                                      n_test_per_class, rng, len(ids_tv))
    half = len(ids_tv) // 2
    for part, ids in (("train", ids_tv[:half]), ("val", ids_tv[half:]), ("trainval", ids_tv)):
        trainval[f"{base}/ImageSets/Main/{part}.txt"] = _lists(sorted(ids))
    # the segmentation lists hold a subset: every third image of each part
    trainval[f"{base}/ImageSets/Segmentation/trainval.txt"] = _lists(ids_tv[::3])
    test[f"{base}/ImageSets/Main/test.txt"] = _lists(ids_test)
    test[f"{base}/ImageSets/Segmentation/test.txt"] = _lists(ids_test[::3])
    files = []
    for name, members in (("VOCtrainval_06-Nov-2007.tar", trainval),
                          ("VOCtest_06-Nov-2007.tar", test)):
        _write_voc_tar(dir / name, base, members)
        files.append({**file_entry(dir / name, extract="."), "merge": True})
    local = {f"{base}/{p}": None for p in ("ImageSets/Main/trainval.txt",
                                          "ImageSets/Main/test.txt", "Annotations",
                                          "JPEGImages")}
    return {"files": files, "local": local}, {
        "labels": np.stack(labels + labels_test),
        "difficult": np.stack(difficult + difficult_test), "n_train": len(ids_tv)}


# ---------------------------------------------------------------------------- Tiny ImageNet


def write_tinyimagenet_zip(dir: Path, n_classes: int = 6, n_train_per_class: int = 12,
                           n_val_per_class: int = 5, seed: int = 0) -> dict:
    """tiny-imagenet-200.zip in the real layout: wnids.txt, words.txt (more words than
    classes), train/<wnid>/images/*.JPEG + boxes, val/images + val_annotations.txt, and an
    unlabelled test/images part. One training image is greyscale, as in the real set."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    wnids = [f"n{1443537 + 1000 * c:08d}" for c in range(n_classes)]
    base = "tiny-imagenet-200"
    path = dir / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        def add(name: str, data: bytes) -> None:
            zf.writestr(zipfile.ZipInfo(name, date_time=(2015, 1, 1, 0, 0, 0)), data)

        add(f"{base}/wnids.txt", ("\n".join(wnids) + "\n").encode())
        words = [f"{w}\tthing {c}, other name" for c, w in enumerate(wnids)]
        words.append("n09999999\tunused word")
        add(f"{base}/words.txt", ("\n".join(words) + "\n").encode())
        for c, w in enumerate(wnids):
            boxes = []
            for i in range(n_train_per_class):
                img = class_image(c, 3, 64, 64, rng)
                if c == 0 and i == 0:
                    img = np.repeat(img.mean(0, keepdims=True).astype(np.uint8), 1, axis=0)
                add(f"{base}/train/{w}/images/{w}_{i}.JPEG", _jpeg(img))
                boxes.append(f"{w}_{i}.JPEG\t0\t0\t63\t63")
            add(f"{base}/train/{w}/{w}_boxes.txt", ("\n".join(boxes) + "\n").encode())
        ann, k = [], 0
        for c in np.repeat(np.arange(n_classes), n_val_per_class):
            add(f"{base}/val/images/val_{k}.JPEG", _jpeg(class_image(int(c), 3, 64, 64, rng)))
            ann.append(f"val_{k}.JPEG\t{wnids[c]}\t0\t0\t63\t63")
            k += 1
        add(f"{base}/val/val_annotations.txt", ("\n".join(ann) + "\n").encode())
        for i in range(3):
            add(f"{base}/test/images/test_{i}.JPEG", _jpeg(class_image(i, 3, 64, 64, rng)))
    local = {f"{base}/{p}": None for p in ("wnids.txt", "words.txt", "train",
                                          "val/val_annotations.txt", "val/images")}
    return {"files": [file_entry(path, extract=".")], "local": local}


# ---------------------------------------------------------------------------- MiniPlaces

# Real category paths of MiniPlaces' categories.txt, two of them nested one level deeper
MINIPLACES_CATEGORIES = ["/a/abbey", "/a/airport_terminal", "/b/bakery/shop", "/c/canyon",
                         "/c/church/outdoor", "/d/dam", "/k/kitchen", "/y/yard"]


def write_miniplaces_archive(dir: Path, n_classes: int = 6, n_train_per_class: int = 12,
                             n_val_per_class: int = 5, n_test: int = 3, seed: int = 0
                             ) -> tuple[dict, dict]:
    """MiniPlaces as released: data.tar.gz holding images/train/<letter>/<name>/NNNNNNNN.jpg,
    images/val/NNNNNNNN.jpg, unlabelled images/test/ and a few objects/ annotations, and
    the development kit's categories.txt, train.txt and val.txt beside it (all 128x128
    JPEG). Returns the manifest and {"train": [(file, label)], "val": [...]} as listed."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    folders = MINIPLACES_CATEGORIES[:n_classes]
    members: dict[str, bytes] = {}
    train, val = [], []
    for c, folder in enumerate(folders):
        for i in range(1, n_train_per_class + 1):
            name = f"train{folder}/{i:08d}.jpg"
            members[f"images/{name}"] = _jpeg(class_image(c, 3, 128, 128, rng))
            train.append((name, c))
            if i == 1:  # object annotations exist for a few images; nothing reads them
                members[f"objects/{name[:-4]}.xml"] = b"<annotation></annotation>"
    order = np.repeat(np.arange(n_classes), n_val_per_class)
    rng.shuffle(order)  # the real val.txt lists the categories mixed
    for k, c in enumerate(order, start=1):
        name = f"val/{k:08d}.jpg"
        members[f"images/{name}"] = _jpeg(class_image(int(c), 3, 128, 128, rng))
        val.append((name, int(c)))
    for k in range(1, n_test + 1):
        members[f"images/test/{k:08d}.jpg"] = _jpeg(class_image(k % n_classes, 3, 128, 128,
                                                                rng))
    dirs = sorted({str(p) for n in members for p in Path(n).parents if str(p) != "."})
    archive = dir / "data.tar.gz"
    _write_tar_gz(archive, members, dirs)
    lists = {"categories.txt": "".join(f"{f} {c}\n" for c, f in enumerate(folders)),
             "train.txt": "".join(f"{n} {c}\n" for n, c in train),
             "val.txt": "".join(f"{n} {c}\n" for n, c in val)}
    files = [file_entry(archive, dir="miniplaces", extract="miniplaces/data")]
    local = {}
    for name, text in lists.items():
        (dir / name).write_text(text)
        files.append(file_entry(dir / name, dir="miniplaces/data"))
        local[f"miniplaces/data/{name}"] = {"md5": md5(dir / name)}
    local.update({"miniplaces/data/images/train": None, "miniplaces/data/images/val": None})
    return {"files": files, "local": local}, {"train": train, "val": val}


# ---------------------------------------------------------------------------- image folders


def write_image_folder(dir: Path, n_classes: int = 6, n_per_class: int = 12,
                       size: tuple[int, int] = (16, 16), grey: bool = False,
                       seed: int = 0) -> Path:
    """<dir>/class_<c>/img_<i>.png, one folder per class; returns dir."""
    from PIL import Image

    dir = Path(dir)
    rng = np.random.default_rng(seed)
    channels = 1 if grey else 3
    for c in range(n_classes):
        folder = dir / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = class_image(c, channels, size[1], size[0], rng)
            arr = img[0] if grey else img.transpose(1, 2, 0)
            Image.fromarray(arr).save(folder / f"img_{i:03d}.png")
    return dir


# ---------------------------------------------------------------------------- HTTP server


class BaseUrl(str):
    """The server's base URL; `.requests` lists the paths it was asked for."""

    requests: list[str]


@contextmanager
def serve_directory(dir: Path, *, truncate: dict[str, int] | None = None) -> Iterator[BaseUrl]:
    """Serve `dir` on 127.0.0.1 (a free port) from a thread; yields the base URL.

    truncate: {file name: bytes}: for those files announce the full Content-Length but send
    only that many bytes and close the connection, like a dropped download.
    """
    dir = Path(dir)
    requests: list[str] = []
    truncate = dict(truncate or {})

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(dir), **kwargs)

        def log_message(self, format, *args):  # keep test output quiet
            pass

        def do_GET(self):
            requests.append(self.path)
            name = self.path.lstrip("/")
            if name in truncate and (dir / name).is_file():
                data = (dir / name).read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[:truncate[name]])
                self.wfile.flush()
                self.close_connection = True
                return
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = BaseUrl(f"http://127.0.0.1:{server.server_address[1]}")
    url.requests = requests
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
