"""Downloadable datasets: where they come from, how to check them, how to read them.

`load_dataset(name, root=...)` finds a dataset under `root` in torchvision's
layout (so a copy torchvision already downloaded is reused), and otherwise
downloads, verifies and extracts it first. Nothing is downloaded when the local
copy is present. A few datasets are also found in another layout (`INSTALLED`:
Debian's `dataset-fashion-mnist` under `/usr/share/datasets`), read where they
are after their checksums matched.

Manifest format
---------------
A catalog entry, built in or read from the JSON file given as `manifest`
(which replaces the built-in entry, e.g. for a private mirror serving other
files, or for tests; a file may also map dataset names to entries), looks like this::

    {
      "files": [
        {"name": "cifar-10-python.tar.gz",
         "urls": ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"],
         "md5": "c58f30108f718f92721af3b95e74349a",
         "dir": ".",
         "extract": "."}
      ],
      "local": {
        "cifar-10-batches-py/data_batch_1": {"md5": "c99cafc152244af753f735de768cd75f"},
        "cifar-10-batches-py/batches.meta": null
      }
    }

- `files`: what to download. `name` is a plain file name, saved as
  `<root>/<dir>/<name>` (`dir` defaults to "."). `urls` (or a single `url`) are
  tried in order; with `mirror`, the only URL is `<mirror>/<name>`. Each file
  needs `md5` and/or `sha256` (of its bytes) and/or `gunzip_sha256` (of a gzip
  file's decompressed bytes: `gunzip -c FILE | sha256sum`); a file is used only
  after its checksum matched. With both kinds, a file passes when its bytes match,
  and otherwise only when its decompressed content does (the same data
  recompressed, as Debian's Fashion-MNIST).
  `extract`: a directory under root to extract the archive (tar, tar.gz, zip)
  into; absent or null keeps the file as it is (MNIST's .gz files). Its top-level
  entries replace same-named ones there, unless `merge` is true: then directories
  are merged into (VOC's archives, several of which fill VOCdevkit/).
- `local`: paths under root (files or directories) that together are the
  dataset in torchvision's layout. When all exist, nothing is downloaded. A
  value of {"md5": ...}, {"sha256": ...} and/or {"gunzip_sha256": ...} is checked
  before the file is read (as for `files`); null means no check. A list of paths
  is the same as all-null values. CIFAR's pickled batches are only read when
  checked this way, or when they came out of an archive that was verified in the
  same call.

All paths in a manifest must stay inside root (no absolute paths, no `..`).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path, PurePosixPath

from transferlab.data.archives import extract_archive
from transferlab.data.download import (
    CHECKS,
    ChecksumError,
    DownloadError,
    download_file,
    verify_file,
)
from transferlab.data.readers import (
    FASHION_MNIST_CLASSES,
    VOC_PARTS,
    RawDataset,
    read_cifar,
    read_image_folder,
    read_miniplaces,
    read_mnist,
    read_tinyimagenet,
    read_voc,
    resize_images,
    square_size,
)
from transferlab.progress import progress_enabled

DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "voc2007", "voc2012",
            "tinyimagenet", "miniplaces", "imagefolder")
OFFLINE_HINT = "`dataset: digits` is bundled with scikit-learn and runs offline"

_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
               "http://yann.lecun.com/exdb/mnist/")
_MNIST = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# Fashion-MNIST: torchvision's FashionMNIST (its mirror, file names and the MD5s of the
# .gz files), and the sha256 of each decompressed idx file. Debian's package
# dataset-fashion-mnist (/usr/share/datasets/fashion-mnist/) ships the same files with
# the gzip header rewritten (file name dropped, mtime set to the package's date; the
# deflate stream is upstream's), so their MD5s differ (train images: cf8536b0... there)
# and the decompressed digest is what accepts them. Recorded from Debian's
# 0.0~git20200523.55506a9-1; the same idx bytes as upstream's gzips (docs/datasets.md).
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FASHION = {  # name: (md5 of the .gz, sha256 of the decompressed idx file)
    "train-images-idx3-ubyte.gz": (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train-labels-idx1-ubyte.gz": (
        "25c81989df183df01b3e8a0aad5dffbe",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "t10k-images-idx3-ubyte.gz": (
        "bef4ecab320f06d8554ea6380940ec79",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "t10k-labels-idx1-ubyte.gz": (
        "bb300cfdad3c16e7a12a480ee83cd310",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}
_CIFAR10_BATCHES = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
_CIFAR100_FILES = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}

# MiniPlaces (https://github.com/CSAILVision/miniplaces, README sec. 1-2): the images come
# as data.tar.gz (top level images/{train,val,test}/ and objects/); the labels come from
# the development kit's data/ folder, fetched at the commit that added them (unchanged
# since), whose bytes the MD5s below are of. MIT publishes no checksum for the archive:
# its MD5 is the `data_md5` of one public MiniPlaces PyTorch loader (course starter code;
# a single source) and could not be confirmed here. A mismatch names both sums, and a
# `manifest` with the right one takes over.
_MINIPLACES_KIT = ("https://raw.githubusercontent.com/CSAILVision/miniplaces/"
                   "43f337898589dc70f4cf024587ead2aa1cff4e73/data/")
_MINIPLACES_LISTS = {
    "categories.txt": "eba942405da94c3010400c98edf2392c",
    "train.txt": "9ef0d988e43f4a3734f7735a6d99d430",
    "val.txt": "eaee4c0605235fb0042368aa6d921db2",
}

# Pascal VOC: the Oxford mirror first (torchvision's), the original host second. VOC 2007
# comes as two archives that both extract into VOCdevkit/VOC2007 (trainval: 5,011 images;
# test: 4,952, released later with its annotations), and VOC 2012 into VOCdevkit/VOC2012
# beside it, so every VOC archive merges into VOCdevkit instead of replacing it.
_VOC_HOSTS = ("https://thor.robots.ox.ac.uk/pascal/VOC/", "http://host.robots.ox.ac.uk/pascal/VOC/")


def _voc_files(year: str, archives: dict[str, str]) -> list[dict]:
    return [{"name": name, "urls": [f"{host}voc{year}/{name}" for host in _VOC_HOSTS],
             "md5": md5, "extract": ".", "merge": True} for name, md5 in archives.items()]


def _voc_local(year: str, lists: tuple[str, ...]) -> dict[str, None]:
    return {f"VOCdevkit/VOC{year}/{p}": None
            for p in (*(f"ImageSets/Main/{part}.txt" for part in lists), "Annotations",
                      "JPEGImages")}


# The published MD5s are the ones torchvision's dataset classes list.
CATALOG: dict[str, dict] = {
    "mnist": {
        "files": [{"name": n, "urls": [u + n for u in _MNIST_URLS], "md5": md5,
                   "dir": "MNIST/raw"} for n, md5 in _MNIST.items()],
        "local": {f"MNIST/raw/{n}": {"md5": md5} for n, md5 in _MNIST.items()},
    },
    "fashion-mnist": {
        "files": [{"name": n, "urls": [_FASHION_URL + n], "md5": md5, "gunzip_sha256": sha,
                   "dir": "FashionMNIST/raw"} for n, (md5, sha) in _FASHION.items()],
        "local": {f"FashionMNIST/raw/{n}": {"md5": md5, "gunzip_sha256": sha}
                  for n, (md5, sha) in _FASHION.items()},
    },
    "cifar10": {
        "files": [{"name": "cifar-10-python.tar.gz",
                   "urls": ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"],
                   "md5": "c58f30108f718f92721af3b95e74349a", "extract": "."}],
        "local": {f"cifar-10-batches-py/{n}": {"md5": md5} for n, md5 in _CIFAR10_BATCHES.items()},
    },
    "cifar100": {
        "files": [{"name": "cifar-100-python.tar.gz",
                   "urls": ["https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"],
                   "md5": "eb9058c3a382ffc7106e4002c42a8d85", "extract": "."}],
        "local": {f"cifar-100-python/{n}": {"md5": md5} for n, md5 in _CIFAR100_FILES.items()},
    },
    "voc2007": {
        "files": _voc_files("2007", {"VOCtrainval_06-Nov-2007.tar":
                                     "c52e279531787c972589f7e41ab4ae64",
                                     "VOCtest_06-Nov-2007.tar":
                                     "b6e924de25625d8de591ea690078ad9f"}),
        "local": _voc_local("2007", ("trainval", "test")),
    },
    "voc2012": {
        "files": _voc_files("2012", {"VOCtrainval_11-May-2012.tar":
                                     "6cd6e144f989b92b3379bac3b3de84fd"}),
        "local": _voc_local("2012", ("train", "val")),
    },
    "tinyimagenet": {
        "files": [{"name": "tiny-imagenet-200.zip",
                   "urls": ["http://cs231n.stanford.edu/tiny-imagenet-200.zip"],
                   "md5": "90528d7ca1a48142e341f4ef8d21d0de", "extract": "."}],
        "local": {f"tiny-imagenet-200/{p}": None
                  for p in ("wnids.txt", "words.txt", "train", "val/val_annotations.txt",
                            "val/images")},
    },
    # laid out as the development kit expects: data/ holds the lists and images/
    "miniplaces": {
        "files": [{"name": "data.tar.gz",
                   "urls": ["http://miniplaces.csail.mit.edu/data/data.tar.gz"],
                   "md5": "265825ec94f79390e4f1e38045a69059", "dir": "miniplaces",
                   "extract": "miniplaces/data"},
                  *({"name": n, "urls": [_MINIPLACES_KIT + n], "md5": md5,
                     "dir": "miniplaces/data"} for n, md5 in _MINIPLACES_LISTS.items())],
        "local": {**{f"miniplaces/data/{n}": {"md5": md5}
                     for n, md5 in _MINIPLACES_LISTS.items()},
                  "miniplaces/data/images/train": None, "miniplaces/data/images/val": None},
    },
}


# Other layouts a dataset is found in under root, read where they are: the `local` paths
# under the first prefix are looked for under the second too, when they are not all
# present in the catalog's own layout. Such a copy is checked like any local copy, but
# never downloaded into, replaced or deleted: a system package's files are not ours.
# Debian's dataset-fashion-mnist installs /usr/share/datasets/fashion-mnist/*.gz, so
# `data.root: /usr/share/datasets` reads it as installed.
INSTALLED: dict[str, tuple[str, str]] = {
    "fashion-mnist": ("FashionMNIST/raw/", "fashion-mnist/"),
}


class DatasetUnavailableError(FileNotFoundError):
    """No local copy, and it could not (or may not) be downloaded."""


# ---------------------------------------------------------------------------- manifests


def _inside(value, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"manifest: {what} = {value!r}: expected a non-empty relative path")
    p = PurePosixPath(value.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (len(value) > 1 and value[1] == ":"):
        raise ValueError(f"manifest: {what} = {value!r}: must stay inside root "
                         f"(no absolute path, no '..')")
    return str(p)


def _checksums(value, what: str, required: bool) -> dict[str, str] | None:
    if value is None and not required:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"manifest: {what} = {value!r}: expected a mapping")
    sums = {k: value[k] for k in CHECKS if k in value}
    if not sums:
        raise ValueError(f"manifest: {what} needs one of {', '.join(CHECKS)}")
    for algo, digest in sums.items():
        length = 32 if algo == "md5" else 64
        if not isinstance(digest, str) or len(digest) != length or not all(
                c in "0123456789abcdefABCDEF" for c in digest):
            raise ValueError(f"manifest: {what}.{algo} = {digest!r}: expected {length} hex "
                             f"digits")
    return {k: v.lower() for k, v in sums.items()}


def validate_manifest(entry, source: str = "manifest") -> dict:
    """A normalised copy of a catalog entry; ValueError naming the bad key otherwise."""
    if not isinstance(entry, dict):
        raise ValueError(f"{source}: expected a JSON object with 'files' and 'local'")
    unknown = set(entry) - {"files", "local", "dataset", "description"}
    if unknown:
        raise ValueError(f"{source}: unknown keys {sorted(unknown)}; allowed: files, local "
                         f"(and dataset, description as notes)")
    files = entry.get("files")
    if not isinstance(files, list) or not files:
        raise ValueError(f"{source}: 'files' must be a non-empty list")
    out_files = []
    for i, f in enumerate(files):
        what = f"files[{i}]"
        if not isinstance(f, dict):
            raise ValueError(f"{source}: {what} must be an object")
        bad = set(f) - {"name", "url", "urls", "dir", "extract", "merge", *CHECKS}
        if bad:
            raise ValueError(f"{source}: {what}: unknown keys {sorted(bad)}; allowed: name, "
                             f"url(s), {', '.join(CHECKS)}, dir, extract, merge")
        name = f.get("name")
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (
                ".", ".."):
            raise ValueError(f"{source}: {what}.name = {name!r}: expected a plain file name")
        urls = f.get("urls", [f["url"]] if "url" in f else None)
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise ValueError(f"{source}: {what} ({name}) needs 'urls' (a list) or 'url'")
        extract = f.get("extract")
        merge = f.get("merge", False)
        if not isinstance(merge, bool) or (merge and extract is None):
            raise ValueError(f"{source}: {what}.merge = {merge!r}: expected true or false "
                             f"(true only with 'extract')")
        out_files.append({
            "name": name, "urls": list(urls),
            "checksums": _checksums(f, f"{what} ({name})", required=True),
            "dir": _inside(f.get("dir", "."), f"{what}.dir"),
            "extract": None if extract is None else _inside(extract, f"{what}.extract"),
            "merge": merge,
        })
    local = entry.get("local")
    if isinstance(local, list):
        local = dict.fromkeys(local)
    if not isinstance(local, dict) or not local:
        raise ValueError(f"{source}: 'local' must be a non-empty mapping (or list) of paths")
    out_local = {_inside(p, f"local path {p!r}"): _checksums(v, f"local[{p!r}]", required=False)
                 for p, v in local.items()}
    return {"files": out_files, "local": out_local}


def read_manifest(path: str | Path, name: str | None = None) -> dict:
    """One entry, or with `name`, that dataset's entry of a {dataset: entry} file (so one
    manifest serves both sides of a cross-dataset study)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"manifest {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"manifest {path}: not valid JSON ({e})") from None
    if name is not None and isinstance(raw, dict) and "files" not in raw:
        if name not in raw:
            raise ValueError(f"manifest {path}: no entry for dataset {name!r}; it has "
                             + ", ".join(map(repr, raw)))
        raw = raw[name]
    return validate_manifest(raw, f"manifest {path}")


def catalog_entry(name: str) -> dict:
    if name not in CATALOG:
        raise ValueError(f"dataset {name!r} has no download entry; known: {', '.join(CATALOG)}")
    return validate_manifest(copy.deepcopy(CATALOG[name]), f"catalog entry {name}")


# ---------------------------------------------------------------------------- local copy


def _listing(paths: list[Path], limit: int = 8) -> str:
    shown = ", ".join(str(p) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _file_urls(f: dict, mirror: str | None) -> list[str]:
    return [mirror.rstrip("/") + "/" + f["name"]] if mirror else f["urls"]


def _unavailable(name: str, root: Path, missing: list[Path], archive: Path,
                 failures: list[tuple[str, str]] | None) -> DatasetUnavailableError:
    if failures is None:
        how = "downloading is switched off (download=False)"
    else:
        how = "the download failed: tried " + "; ".join(f"{u} ({why})" for u, why in failures)
    return DatasetUnavailableError(
        f"dataset {name!r}: no local copy under {root}; missing: {_listing(missing)}. "
        f"Needed {archive}, but {how}. Put the files there in torchvision's layout, point "
        f"`mirror` or `manifest` at a reachable copy, or run offline: {OFFLINE_HINT}.")


def ensure_local_copy(name: str, entry: dict, root: str | Path, *, mirror: str | None = None,
                      download: bool = True, progress: bool = True) -> set[Path]:
    """Make the entry's `local` paths exist under root; return the files verified in this call.

    A verified file either matched its checksum or came out of an archive that did.
    """
    root = Path(root).expanduser().absolute()
    local = {root / rel: sums for rel, sums in entry["local"].items()}
    missing = [p for p in local if not p.exists()]
    verified: set[Path] = set()
    if not missing:
        bad = []
        for p, sums in local.items():
            if sums:
                try:
                    verify_file(p, sums)
                    verified.add(p)
                except ChecksumError as e:
                    bad.append(str(e))
        if not bad:
            return verified
        if not download:
            raise ChecksumError(f"dataset {name!r}: local copy is corrupt: {'; '.join(bad)}. "
                                f"Delete the file(s) or allow downloading.")
        print(f"dataset {name}: local copy fails its checksums ({'; '.join(bad)}); "
              f"downloading again", file=sys.stderr)
        verified.clear()
    for f in entry["files"]:
        dest = root / f["dir"] / f["name"]
        if dest.is_file():
            try:
                verify_file(dest, f["checksums"])
            except ChecksumError:
                if not download:
                    raise
                dest.unlink()  # an old or corrupt copy of ours: fetch it again
        if not dest.is_file():
            urls = _file_urls(f, mirror)
            if not download:
                raise _unavailable(name, root, missing, dest, None)
            try:
                download_file(urls, dest, f["checksums"], progress=progress_enabled(progress))
            except DownloadError as e:
                raise _unavailable(name, root, missing, dest, e.failures) from e
        if f["extract"] is None:
            verified.add(dest)
        else:
            target = root / f["extract"]
            verified.update(target / rel for rel in extract_archive(dest, target,
                                                                    merge=f["merge"]))
    still = [p for p in local if not p.exists()]
    if still:
        raise FileNotFoundError(f"dataset {name!r}: after downloading and extracting, still "
                                f"missing {_listing(still)}; the files do not have the layout "
                                f"the catalog or manifest expects")
    for p, sums in local.items():
        if sums:
            verify_file(p, sums)
            verified.add(p)
    return verified


def installed_copy(name: str, entry: dict, root: str | Path) -> Path | None:
    """The folder of dataset `name`'s copy in its other layout (INSTALLED) under root, when
    the catalog's own layout is incomplete and that one complete; None otherwise.

    Its files are checked against the entry's `local` checksums; a mismatch is an error
    (such a copy is never replaced), not a reason to download.
    """
    if name not in INSTALLED:
        return None
    own, other = INSTALLED[name]
    root = Path(root).expanduser().absolute()
    if all((root / rel).exists() for rel in entry["local"]):
        return None
    if not all(rel.startswith(own) for rel in entry["local"]):
        return None  # a manifest with another layout: only its own counts
    local = {root / other / rel[len(own):]: sums for rel, sums in entry["local"].items()}
    if not all(p.exists() for p in local):
        return None
    for p, sums in local.items():
        if sums:
            try:
                verify_file(p, sums)
            except ChecksumError as e:
                raise ChecksumError(
                    f"dataset {name!r}: the copy in {root / other} fails its checksums: {e}. "
                    f"It is read as it is and never replaced: reinstall it (Debian: apt-get "
                    f"install --reinstall dataset-{name}), or point data.root at another "
                    f"folder to download a fresh copy there") from None
    return root / other


# ---------------------------------------------------------------------------- loading


def _verified_check(verified: set[Path]):
    def check(path: Path) -> None:
        if Path(path).absolute() not in verified:
            raise ChecksumError(
                f"{path}: refusing to unpickle a file whose checksum was not verified; give its "
                f"md5 or sha256 under 'local' in the manifest, or let it be extracted from a "
                f"verified archive")
    return check


def load_dataset(name: str, *, root: str | Path, mirror: str | None = None,
                 manifest: str | Path | None = None, image_size: int | None = None,
                 path: str | Path | None = None, download: bool = True,
                 progress: bool = True, voc_lists: str = "main") -> RawDataset:
    """Decode dataset `name` from `root` (downloading and verifying it first when missing).

    `imagefolder` reads `path` instead and never downloads. `image_size` resizes to a square
    (VOC defaults to 32; other sets keep their native size when it is None). `voc_lists`
    picks VOC's image lists: main (classification) or segmentation; VOC 2007's are its
    trainval and test lists, VOC 2012's its train and val lists (no test labels public).
    """
    if name not in DATASETS:
        raise ValueError(f"dataset = {name!r} is not known; allowed: {', '.join(DATASETS)}")
    square_size(image_size)  # a bad size fails before any download
    if name == "imagefolder":
        if path is None:
            raise ValueError("dataset imagefolder needs `path`: a directory with one sub-folder "
                             "per class")
        return read_image_folder(path, image_size)
    if path is not None:
        raise ValueError(f"`path` = {str(path)!r} is only used by dataset imagefolder, "
                         f"not {name}")
    entry = read_manifest(manifest, name) if manifest is not None else catalog_entry(name)
    root = Path(root).expanduser().absolute()
    installed = installed_copy(name, entry, root)
    if installed is not None:
        verified = set()
    else:
        verified = ensure_local_copy(name, entry, root, mirror=mirror, download=download,
                                     progress=progress)
    if name == "mnist":
        return _resized(read_mnist(root / "MNIST" / "raw"), image_size)
    if name == "fashion-mnist":
        raw_dir = installed or root / "FashionMNIST" / "raw"
        return _resized(read_mnist(raw_dir, FASHION_MNIST_CLASSES), image_size)
    if name == "cifar10":
        data = read_cifar(root / "cifar-10-batches-py",
                          [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                          "batches.meta", b"labels", b"label_names", _verified_check(verified))
        return _resized(data, image_size)
    if name == "cifar100":
        data = read_cifar(root / "cifar-100-python", ["train"], ["test"], "meta",
                          b"fine_labels", b"fine_label_names", _verified_check(verified))
        return _resized(data, image_size)
    if name in VOC_PARTS:
        return read_voc(root / "VOCdevkit" / f"VOC{name[3:]}", image_size, voc_lists,
                        VOC_PARTS[name])
    if name == "miniplaces":
        return read_miniplaces(root / "miniplaces" / "data", image_size)
    return read_tinyimagenet(root / "tiny-imagenet-200", image_size)


def _resized(data: RawDataset, image_size: int | None) -> RawDataset:
    data.images = resize_images(data.images, image_size)
    return data
