"""Decode datasets from their torchvision on-disk layouts into uint8 arrays.

Every reader fills a preallocated (N, C, H, W) uint8 array image by image, so
peak memory stays close to the size of the result.
"""

from __future__ import annotations

import gzip
import struct
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferlab.data.safe_pickle import safe_load_file

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor"]
# torchvision's FashionMNIST.classes (Zalando's label descriptions), in label order
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]
VOC_DEFAULT_SIZE = 32  # Spero studies VOC 2012 at 32x32
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


@dataclass
class RawDataset:
    """A whole dataset as decoded from disk, before any class split.

    labels: int64 (N,) class indices, or for multi-label sets uint8 (N, L) with 1 = present.
    difficult: multi-label only, bool (N, L): the class occurs only as "difficult" objects.
    is_test: bool (N,) marking the dataset's official test/validation part, or None.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    is_test: np.ndarray | None = None
    difficult: np.ndarray | None = None

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2

    def __len__(self) -> int:
        return len(self.images)


# ---------------------------------------------------------------------------- images


def _pil():
    from PIL import Image

    return Image


def _image_errors() -> tuple[type[BaseException], ...]:
    """What PIL raises for a file it cannot open or decode. DecompressionBombError (an
    image too large to be safe) is not an OSError; SyntaxError and ValueError come from
    some format plugins on malformed headers."""
    return (OSError, SyntaxError, ValueError, EOFError, _pil().DecompressionBombError)


def _decode(path: Path, mode: str, size: tuple[int, int] | None, out: np.ndarray) -> None:
    """Decode one image file into `out` (C, H, W), converting and resizing as asked."""
    Image = _pil()
    try:
        with Image.open(path) as img:
            if size is not None and img.format == "JPEG":
                img.draft(mode, size)  # let libjpeg decode at a reduced scale: much faster
            img = img.convert(mode)
            if size is not None and img.size != size:
                img = img.resize(size, Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except _image_errors() as e:
        raise ValueError(f"{path}: cannot decode image ({e})") from e
    if arr.shape[:2] != out.shape[1:]:
        raise ValueError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]}, expected "
                         f"{out.shape[2]}x{out.shape[1]}")
    out[:] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def square_size(image_size: int | None) -> tuple[int, int] | None:
    """(width, height) for a square image_size; None stays None; ValueError otherwise."""
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size = {image_size!r}: expected a positive integer")
    return image_size, image_size


def resize_images(images: np.ndarray, image_size: int | None) -> np.ndarray:
    """Resize (N, C, H, W) uint8 images to image_size x image_size (no-op if already so)."""
    size = square_size(image_size)
    if size is None:
        return images
    return convert_images(images, images.shape[1], size)


def convert_images(images: np.ndarray, channels: int, size: tuple[int, int]) -> np.ndarray:
    """uint8 (N, C, H, W) images converted to `channels` (grey <-> RGB) and resized
    (bilinear) to `size` = (height, width); no-op when they already are."""
    if images.shape[1] == channels and tuple(images.shape[2:]) == tuple(size):
        return images
    Image = _pil()
    out = np.empty((len(images), channels, *size), dtype=np.uint8)
    mode = "L" if channels == 1 else "RGB"
    for i, img in enumerate(images):
        arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        pil = Image.fromarray(arr).convert(mode).resize((size[1], size[0]), Image.BILINEAR)
        arr = np.asarray(pil)
        out[i] = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    return out


def _decode_all(paths: list[Path], mode: str, size: tuple[int, int],
                fixed_size: bool) -> np.ndarray:
    channels = 1 if mode == "L" else 3
    out = np.empty((len(paths), channels, size[1], size[0]), dtype=np.uint8)
    for i, p in enumerate(paths):
        _decode(p, mode, None if fixed_size else size, out[i])
    return out


# ---------------------------------------------------------------------------- MNIST


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        header = f.read(4 + 4 * ndim)
        if len(header) < 4 + 4 * ndim:
            raise ValueError(f"{path}: truncated idx header")
        got_magic, *dims = struct.unpack(f">I{ndim}I", header)
        if got_magic != magic:
            raise ValueError(f"{path}: idx magic number {got_magic:#010x}, expected {magic:#010x}")
        out = np.empty(dims, dtype=np.uint8)
        n = f.readinto(memoryview(out).cast("B"))
        if n != out.size or f.read(1):
            raise ValueError(f"{path}: idx body does not match header dimensions {dims}")
    return out


def read_mnist(raw_dir: str | Path, class_names: list[str] | None = None) -> RawDataset:
    """MNIST from `<root>/MNIST/raw/*-ubyte.gz`: 60000 train + 10000 test, (N, 1, 28, 28).

    Any set of the same four idx files (Fashion-MNIST's: `class_names` =
    FASHION_MNIST_CLASSES); class names default to the digits "0".."9".
    """
    raw_dir = Path(raw_dir)
    parts = []
    for prefix in ("train", "t10k"):
        images = _read_idx(raw_dir / f"{prefix}-images-idx3-ubyte.gz", 0x00000803, 3)
        labels = _read_idx(raw_dir / f"{prefix}-labels-idx1-ubyte.gz", 0x00000801, 1)
        if len(images) != len(labels):
            raise ValueError(f"{raw_dir}: {prefix} has {len(images)} images but "
                             f"{len(labels)} labels")
        parts.append((images, labels))
    n_train, n_test = len(parts[0][0]), len(parts[1][0])
    h, w = parts[0][0].shape[1:]
    images = np.empty((n_train + n_test, 1, h, w), dtype=np.uint8)
    images[:n_train, 0] = parts[0][0]
    images[n_train:, 0] = parts[1][0]
    labels = np.concatenate([parts[0][1], parts[1][1]]).astype(np.int64)
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[n_train:] = True
    names = [str(d) for d in range(10)] if class_names is None else list(class_names)
    if len(labels) and labels.max() >= len(names):
        raise ValueError(f"{raw_dir}: label {int(labels.max())} in the idx files, but the "
                         f"dataset has {len(names)} classes")
    return RawDataset(images, labels, names, is_test)


# ---------------------------------------------------------------------------- CIFAR


def _str(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _load_pickle(path: Path, check: Callable[[Path], None]) -> dict:
    check(path)  # a checksum must have matched before anything is unpickled
    obj = safe_load_file(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _field(batch: dict, key: bytes, path: Path):
    if key not in batch:
        raise ValueError(f"{path}: missing key {key.decode()!r}; found "
                         f"{sorted(_str(k) for k in batch)}")
    return batch[key]


def read_cifar(base_dir: str | Path, train: list[str], test: list[str], meta: str,
               label_key: bytes, names_key: bytes, check: Callable[[Path], None]) -> RawDataset:
    """CIFAR-10/100 python batches; `check(path)` must raise unless the file was verified."""
    base_dir = Path(base_dir)
    names = [_str(n) for n in _field(_load_pickle(base_dir / meta, check), names_key,
                                     base_dir / meta)]
    files = train + test
    # A batch pickle holds its N x 3072 pixel bytes verbatim, so file size // 3072 bounds N:
    # allocate once for all batches, and free each batch right after copying it.
    capacity = sum((base_dir / name).stat().st_size // 3072 for name in files)
    images = np.empty((capacity, 3, 32, 32), dtype=np.uint8)
    labels = np.empty(capacity, dtype=np.int64)
    is_test = np.zeros(capacity, dtype=bool)
    filled = 0
    for name in files:
        path = base_dir / name
        batch = _load_pickle(path, check)
        data = np.asarray(_field(batch, b"data", path), dtype=np.uint8)
        lab = np.asarray(_field(batch, label_key, path), dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(lab):
            raise ValueError(f"{path}: data shape {data.shape} with {len(lab)} labels; "
                             f"expected (N, 3072) and N labels")
        end = filled + len(data)
        if end > capacity:
            raise ValueError(f"{path}: holds more images than its size allows")
        images[filled:end] = data.reshape(-1, 3, 32, 32)
        labels[filled:end] = lab
        is_test[filled:end] = name in test
        filled = end
        del batch, data
    # leading slices stay contiguous; the unused tail is under 1 % of the buffer
    images, labels, is_test = images[:filled], labels[:filled], is_test[:filled]
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
        raise ValueError(f"{base_dir}: labels outside 0..{len(names) - 1}")
    return RawDataset(images, labels, names, is_test)


# ---------------------------------------------------------------------------- VOC


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def voc_labels(xml_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(present, difficult) per VOC class: difficult only where no non-difficult object exists."""
    present = np.zeros(len(VOC_CLASSES), dtype=np.uint8)
    difficult = np.zeros(len(VOC_CLASSES), dtype=bool)
    index = {c: i for i, c in enumerate(VOC_CLASSES)}
    for obj in ET.parse(xml_path).getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in index:
            raise ValueError(f"{xml_path}: object name {name!r} is not a VOC class")
        if (obj.findtext("difficult") or "0").strip() == "1":
            difficult[index[name]] = True
        else:
            present[index[name]] = 1
    difficult &= present == 0
    return present, difficult


VOC_LISTS = {"main": "Main", "segmentation": "Segmentation"}
# dataset: (the list of its train part, the list of its test part). VOC 2007 released its
# test part's annotations (VOCtest_06-Nov-2007.tar), so trainval / test is the devkit's
# own protocol; VOC 2012's test labels are not public, so its val list is the test part.
VOC_PARTS = {"voc2007": ("trainval", "test"), "voc2012": ("train", "val")}


def read_voc(base_dir: str | Path, image_size: int | None = None,
             lists: str = "main", parts: tuple[str, str] = VOC_PARTS["voc2012"]
             ) -> RawDataset:
    """VOC classification (20 labels, multi-label, "difficult" kept) from the devkit's
    layout: the `parts` lists are the train part and the official test part, from
    ImageSets/Main or, with `lists="segmentation"`, ImageSets/Segmentation.

    VOC 2012 (train / val): 5,717 + 5,823 images, or 1,464 + 1,449 (Spero's 1465-image
    VOC training set). VOC 2007 (trainval / test): 5,011 + 4,952, or 422 + 210.
    """
    base_dir = Path(base_dir)
    size = square_size(image_size or VOC_DEFAULT_SIZE)
    folder = base_dir / "ImageSets" / VOC_LISTS[lists]
    train = _read_ids(folder / f"{parts[0]}.txt")
    test = _read_ids(folder / f"{parts[1]}.txt")
    ids = train + test
    images = np.empty((len(ids), 3, size[1], size[0]), dtype=np.uint8)
    labels = np.empty((len(ids), len(VOC_CLASSES)), dtype=np.uint8)
    difficult = np.empty((len(ids), len(VOC_CLASSES)), dtype=bool)
    for i, image_id in enumerate(ids):
        labels[i], difficult[i] = voc_labels(base_dir / "Annotations" / f"{image_id}.xml")
        _decode(base_dir / "JPEGImages" / f"{image_id}.jpg", "RGB", size, images[i])
    is_test = np.zeros(len(ids), dtype=bool)
    is_test[len(train):] = True
    return RawDataset(images, labels, list(VOC_CLASSES), is_test, difficult)


# ---------------------------------------------------------------------------- Tiny ImageNet


def _unique_names(wnids: list[str], words: dict[str, str]) -> list[str]:
    first = [words.get(w, w).split(",")[0].strip() or w for w in wnids]
    return [f"{n} ({w})" if first.count(n) > 1 else n for n, w in zip(first, wnids, strict=True)]


def _images_in(folder: Path) -> list[Path]:
    """Image files in `folder`, by name; hidden files (`.x.png`, macOS `._x.png`
    AppleDouble metadata) are skipped, as hidden folders are."""
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def read_tinyimagenet(base_dir: str | Path, image_size: int | None = None) -> RawDataset:
    """Tiny ImageNet: train/<wnid>/images plus the labelled val part (the unlabelled test is
    ignored). 64x64 RGB unless image_size asks otherwise."""
    base_dir = Path(base_dir)
    wnids = _read_ids(base_dir / "wnids.txt")
    words = {}
    if (base_dir / "words.txt").is_file():
        for line in (base_dir / "words.txt").read_text().splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.strip()
    index = {w: i for i, w in enumerate(wnids)}
    paths, labels = [], []
    for w in wnids:
        found = _images_in(base_dir / "train" / w / "images")
        paths += found
        labels += [index[w]] * len(found)
    n_train = len(paths)
    ann = base_dir / "val" / "val_annotations.txt"
    for line in ann.read_text().splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise ValueError(f"{ann}: bad line {line!r} (expected <file>\\t<wnid from wnids.txt>)")
        paths.append(base_dir / "val" / "images" / fields[0])
        labels.append(index[fields[1]])
    size = square_size(image_size) or (64, 64)
    images = np.empty((len(paths), 3, size[1], size[0]), dtype=np.uint8)
    for i, p in enumerate(paths):
        _decode(p, "RGB", size, images[i])
    is_test = np.zeros(len(paths), dtype=bool)
    is_test[n_train:] = True
    return RawDataset(images, np.asarray(labels, dtype=np.int64), _unique_names(wnids, words),
                      is_test)


# ---------------------------------------------------------------------------- MiniPlaces


MINIPLACES_SIZE = 128  # the release's images are 128x128 JPEGs


def _miniplaces_categories(path: Path) -> list[str]:
    """categories.txt: "/a/abbey 0" lines, ids 0..k-1 in order; the name is the path
    without its leading letter folder ("/b/bakery/shop 10" -> "bakery/shop")."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    folders = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        parts = fields[0].strip("/").split("/") if fields else []
        if len(fields) != 2 or len(parts) < 2 or fields[1] != str(len(folders)):
            raise ValueError(f"{path}:{number}: bad line {line!r} (expected '/<letter>/<name> "
                             f"{len(folders)}': ids count up from 0 in file order)")
        folders.append(fields[0].strip("/"))
    if not folders:
        raise ValueError(f"{path}: no categories")
    return folders


def _miniplaces_list(path: Path, part: str, folders: list[str]) -> tuple[list[str], list[int]]:
    """train.txt / val.txt: "<part>/<file>.jpg <id>" lines. A training image must sit in
    its category's folder (train/<letter>/<name>/...), so lists that do not belong to
    these images are caught before anything is decoded."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    files, labels = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if (len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) >= len(folders)
                or not fields[0].startswith(part + "/") or ".." in fields[0].split("/")):
            raise ValueError(f"{path}:{number}: bad line {line!r} (expected '{part}/<file> "
                             f"<id 0..{len(folders) - 1}>')")
        label = int(fields[1])
        if part == "train" and not fields[0].startswith(f"train/{folders[label]}/"):
            raise ValueError(f"{path}:{number}: {fields[0]} is labelled {label} "
                             f"({folders[label]}) but is not in that category's folder")
        files.append(fields[0])
        labels.append(label)
    return files, labels


def read_miniplaces(base_dir: str | Path, image_size: int | None = None) -> RawDataset:
    """MiniPlaces (MIT's Places subset: 100 scene categories, 1,000 training and 100
    validation images each) in the development kit's `data/` layout: categories.txt,
    train.txt, val.txt, and images/{train,val}/ from data.tar.gz. The labelled
    validation part is the test part; images/test (unlabelled) is not read.
    128x128 RGB unless image_size asks otherwise."""
    base_dir = Path(base_dir)
    folders = _miniplaces_categories(base_dir / "categories.txt")
    train, train_labels = _miniplaces_list(base_dir / "train.txt", "train", folders)
    val, val_labels = _miniplaces_list(base_dir / "val.txt", "val", folders)
    size = square_size(image_size) or (MINIPLACES_SIZE, MINIPLACES_SIZE)
    paths = train + val
    images = np.empty((len(paths), 3, size[1], size[0]), dtype=np.uint8)
    for i, rel in enumerate(paths):
        _decode(base_dir / "images" / rel, "RGB", size, images[i])
    is_test = np.zeros(len(paths), dtype=bool)
    is_test[len(train):] = True
    names = [f.split("/", 1)[1] for f in folders]
    return RawDataset(images, np.asarray(train_labels + val_labels, dtype=np.int64), names,
                      is_test)


# ---------------------------------------------------------------------------- image folders


def read_image_folder(path: str | Path, image_size: int | None = None) -> RawDataset:
    """One sub-folder per class (sorted names) holding png/jpg/jpeg/bmp files, any case;
    hidden folders and files (names starting with ".") are skipped.

    Images become RGB, or L when every file is greyscale. Without image_size all images
    must share one size.
    """
    root = Path(path)
    size = square_size(image_size)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"image folder {root}: no class sub-folders found")
    files: list[Path] = []
    labels: list[int] = []
    for i, c in enumerate(classes):
        found = _images_in(root / c)
        if not found:
            raise ValueError(f"image folder {root}: class folder {c!r} holds no image files "
                             f"({', '.join(IMAGE_EXTENSIONS)})")
        files += found
        labels += [i] * len(found)
    Image = _pil()
    modes, sizes = [], []
    for f in files:  # header only: PIL opens lazily
        try:
            with Image.open(f) as img:
                modes.append(img.mode)
                sizes.append(img.size)
        except _image_errors() as e:
            raise ValueError(f"{f}: cannot read image ({e})") from e
    mode = "L" if all(m in _GREY_MODES for m in modes) else "RGB"
    if size is None:
        size = sizes[0]
        for f, s in zip(files, sizes, strict=True):
            if s != size:
                raise ValueError(
                    f"image folder {root}: {f} is {s[0]}x{s[1]} but {files[0]} is "
                    f"{size[0]}x{size[1]}; all images must have one size, or set image_size")
    images = _decode_all(files, mode, size, fixed_size=image_size is None)
    return RawDataset(images, np.asarray(labels, dtype=np.int64), classes, None)
