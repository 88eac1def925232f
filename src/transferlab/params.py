"""Typed, validated params.

`load_params()` reads params.yaml and returns a `Params` tree, or raises
`ParamsError` naming the key, the value and what is allowed. Every stage calls
it before doing any work, so a bad value fails the first stage that runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from transferlab.models import ARCHITECTURES, layer_names_of
from transferlab.treatments import TREATMENTS, treatment_name

DATASETS = ("digits", "mnist", "cifar10", "cifar100", "voc2012", "tinyimagenet", "imagefolder")
SOURCES = ("A", "B")
SPLITS = ("fixed", "random", "file")
OPTIMIZERS = ("adam", "sgd")
NORMALISE = ("half", "source")


class ParamsError(ValueError):
    """A param has a value the pipeline cannot run with."""


def _fail(key: str, value: Any, allowed: str) -> ParamsError:
    return ParamsError(f"params: {key} = {value!r} is not allowed; expected {allowed}")


class _Section:
    """Reads keys out of one mapping and remembers which were read."""

    def __init__(self, raw: Any, prefix: str):
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise _fail(prefix or "<top level>", raw, "a mapping of keys to values")
        self.raw = raw
        self.prefix = prefix
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def get(self, name: str, default: Any) -> Any:
        self.seen.add(name)
        return self.raw.get(name, default)

    def section(self, name: str) -> _Section:
        return _Section(self.get(name, {}), self.key(name))

    def integer(self, name: str, default: int, lo: int | None = None, hi: int | None = None,
                why: str = "") -> int:
        value = self.get(name, default)
        return _check_int(self.key(name), value, lo, hi, why)

    def number(self, name: str, default: float, lo: float = 0.0, lo_open: bool = False,
               hi: float | None = None) -> float:
        value = self.get(name, default)
        key = self.key(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value
        ):
            raise _fail(key, value, "a finite number")
        bad_low = value <= lo if lo_open else value < lo
        if bad_low or (hi is not None and value > hi):
            lo_txt = f"> {lo}" if lo_open else f">= {lo}"
            hi_txt = f" and <= {hi}" if hi is not None else ""
            raise _fail(key, value, f"a number {lo_txt}{hi_txt}")
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise _fail(self.key(name), value, "true or false")
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.get(name, default)
        if value not in allowed:
            raise _fail(self.key(name), value, "one of " + ", ".join(map(str, allowed)))
        return value

    def non_empty_list(self, name: str, default: list) -> list:
        value = self.get(name, default)
        if not isinstance(value, list):
            raise _fail(self.key(name), value, "a list")
        if not value:
            raise _fail(self.key(name), value, "a non-empty list")
        if len(set(map(repr, value))) != len(value):
            raise _fail(self.key(name), value, "a list without repeated values")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.seen)
        if unknown:
            where = self.prefix or "the top level"
            raise ParamsError(
                f"params: unknown key {self.key(unknown[0])!r}; keys allowed in {where}: "
                + ", ".join(sorted(self.seen))
            )


def _check_int(key: str, value: Any, lo: int | None, hi: int | None, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, value, "an integer")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        if hi is None:
            rng = f"an integer >= {lo}"
        elif lo is None:
            rng = f"an integer <= {hi}"
        else:
            rng = f"an integer from {lo} to {hi}"
        raise _fail(key, value, rng + (f" ({why})" if why else ""))
    return value


@dataclass(frozen=True)
class DataParams:
    split: str
    source_classes: tuple[int, ...] | str  # class indices, or "all"
    target_classes: tuple[int, ...] | str
    test_fraction: float
    classes_file: str | None = None  # split: file
    source_dataset: str | None = None  # None: the top-level `dataset`
    target_dataset: str | None = None
    root: str = "data/raw"
    mirror: str | None = None
    manifest: str | None = None
    path: str | None = None  # imagefolder
    image_size: int | None = None
    normalise: str = "half"
    crop: int = 0  # random crop at train time, centre crop at test (0 = none)
    flip: bool = False
    pad: int = 0  # zero padding before the random crop (seed 001: 4 pixels, crop 32)

    def dataset_of(self, task: str, dataset: str) -> str:
        chosen = self.source_dataset if task == "source" else self.target_dataset
        return chosen or dataset


@dataclass(frozen=True)
class BinaryAuxParams:
    heads: int  # 0 = off
    weight: float
    seeds: tuple[int, ...] = (0, 1, 2)  # the paired comparison's replicates
    subsample: int = 5  # its target images per class


@dataclass(frozen=True)
class TrainParams:
    """One training recipe; `epochs` for pretraining, `steps` for transfer."""

    batch_size: int
    lr: float
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    epochs: int = 0
    steps: int = 0
    lr_mult: float = 1.0
    milestones: tuple[int, ...] = ()  # epochs (pretrain) / steps (transfer): lr *= lr_decay
    lr_decay: float = 0.1
    gamma: float = 1.0  # weight gamma^i of iteration i's loss (feedback networks)
    binary_aux: BinaryAuxParams = BinaryAuxParams(0, 0.4, (0, 1, 2), 5)


@dataclass(frozen=True)
class SweepParams:
    treatments: tuple[str, ...]
    layers: tuple[int, ...]
    subsample: tuple[int, ...]
    seeds: tuple[int, ...]
    reuse_variants: bool
    swap: bool = False


@dataclass(frozen=True)
class AugmentParams:
    copies: int  # extra training features per image from random crops (CNNaug); 0 = off
    flip: bool
    pad: float  # crop window shift, as a fraction of the shorter side


@dataclass(frozen=True)
class FeatureParams:
    layers: tuple[str, ...]
    batch_size: int
    augment: AugmentParams = AugmentParams(0, False, 0.125)
    iterations: bool = True  # feedback nets: also each iteration's head input (iter1..iterT)
    source_model: str = "A"  # A, or "torchvision:<name>": that model's features instead
    weights: str | None = None  # the torchvision model's local weights file
    input_size: int = 224
    pool: str = "flatten"  # flatten | avg (spatial mean of conv maps)


@dataclass(frozen=True)
class LowShotParams:
    shots: tuple[int, ...]  # images per class
    draws: int  # random draws per size
    heads: tuple[str, ...]
    layers: tuple[str, ...] | None  # None: every feature layer


@dataclass(frozen=True)
class HeadParams:
    cv_folds: int
    svm_C: tuple[float, ...]
    logreg_C: tuple[float, ...]
    forest_trees: int
    transform: str = "l2"  # l2 | power
    power: float = 0.5
    heads: tuple[str, ...] = ("svm", "logreg", "random_forest")
    iterations: bool = True
    lowshot: LowShotParams = LowShotParams((1, 2, 4, 8), 3, ("svm", "logreg"), ("conv2",))


@dataclass(frozen=True)
class DiagnosticsParams:
    settings: tuple[tuple[str, Any], ...]  # DIAGNOSTICS_DEFAULTS keys, validated

    def as_dict(self) -> dict[str, Any]:
        return dict(self.settings)


@dataclass(frozen=True)
class ReportParams:
    layer: int
    subsample: int


@dataclass(frozen=True)
class Params:
    dataset: str
    arch: str
    source: str
    freeze: int
    finetune: bool
    subsample: int
    seed: int
    data: DataParams
    model: dict[str, dict[str, Any]]
    pretrain: TrainParams
    transfer: TrainParams
    sweep: SweepParams
    features: FeatureParams
    heads: HeadParams
    report: ReportParams
    diagnostics: DiagnosticsParams

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """Builder arguments of the chosen arch (its `model.<arch>` section)."""
        return dict(self.model[self.arch])

    @property
    def layer_names(self) -> tuple[str, ...]:
        return layer_names_of(self.arch, self.model_kwargs)

    @property
    def treatment(self) -> str:
        """Yosinski's name for the experiment the top-level params describe."""
        return treatment_name(self.source, self.freeze, self.finetune)


def _int_list(sec: _Section, name: str, default: list, lo: int, hi: int | None = None,
              why: str = "") -> tuple[int, ...]:
    values = sec.non_empty_list(name, default)
    for i, v in enumerate(values):
        _check_int(f"{sec.key(name)}[{i}]", v, lo, hi, why)
    return tuple(values)


def _float_list(sec: _Section, name: str, default: list) -> tuple[float, ...]:
    values = sec.non_empty_list(name, default)
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
            raise _fail(f"{sec.key(name)}[{i}]", v, "a positive number")
    return tuple(float(v) for v in values)


def _optional_str(sec: _Section, name: str) -> str | None:
    value = sec.get(name, None)
    if value is not None and (not isinstance(value, str) or not value):
        raise _fail(sec.key(name), value, "null or a non-empty string")
    return value


def _classes(sec: _Section, name: str, default) -> tuple[int, ...] | str:
    value = sec.get(name, default)
    if value == "all":
        return "all"
    if not isinstance(value, list):
        raise _fail(sec.key(name), value, '"all" or a non-empty list of class indices')
    return _int_list(sec, name, default, 0)


def _train_params(sec: _Section, *, epochs: bool, defaults: dict) -> TrainParams:
    kwargs: dict[str, Any] = {}
    if epochs:
        kwargs["epochs"] = sec.integer("epochs", defaults["epochs"], 1)
        aux = sec.section("binary_aux")
        kwargs["binary_aux"] = BinaryAuxParams(
            aux.integer("heads", 0, 0, 16, "0 = no binary auxiliary head"),
            aux.number("weight", 0.4, lo=0.0, lo_open=True, hi=1.0),
            _int_list(aux, "seeds", [0, 1, 2], 0, 2**31 - 1),
            aux.integer("subsample", 5, 0, None, "0 = all"))
        aux.done()
    else:
        kwargs["steps"] = sec.integer("steps", defaults["steps"], 1)
        kwargs["lr_mult"] = sec.number("lr_mult", defaults.get("lr_mult", 0.1), lo=0.0,
                                       lo_open=True, hi=1.0)
    unit = "epochs" if epochs else "steps"
    length = kwargs["epochs"] if epochs else kwargs["steps"]
    milestones = sec.get("milestones", [])
    if not isinstance(milestones, list):
        raise _fail(sec.key("milestones"), milestones, f"a list of {unit} (may be empty)")
    for i, m in enumerate(milestones):
        _check_int(f"{sec.key('milestones')}[{i}]", m, 1, max(length - 1, 1),
                   f"{unit} after which the rate drops, before the last")
    if list(milestones) != sorted(set(milestones)):
        raise _fail(sec.key("milestones"), milestones, f"increasing {unit}")
    kwargs["milestones"] = tuple(milestones)
    kwargs["lr_decay"] = sec.number("lr_decay", 0.1, lo=0.0, lo_open=True, hi=1.0)
    kwargs["gamma"] = sec.number("gamma", 1.2, lo=0.0, lo_open=True)
    kwargs["batch_size"] = sec.integer("batch_size", defaults["batch_size"], 1)
    kwargs["optimizer"] = sec.choice("optimizer", "adam", OPTIMIZERS)
    kwargs["lr"] = sec.number("lr", defaults["lr"], lo=0.0, lo_open=True)
    kwargs["momentum"] = sec.number("momentum", 0.9, lo=0.0, hi=1.0)
    kwargs["weight_decay"] = sec.number("weight_decay", 0.0, lo=0.0)
    sec.done()
    return TrainParams(**kwargs)


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


def _model_params(m: _Section) -> dict[str, dict[str, Any]]:
    """`model.<arch>` sections: every arch's builder arguments, defaults filled in."""
    out = {}
    for arch, spec in ARCHITECTURES.items():
        sub = m.section(arch)
        kwargs = {}
        for name, default in spec.defaults.items():
            value = sub.get(name, default)
            if not _same_kind(value, default):
                raise _fail(sub.key(name), value, f"a {type(default).__name__} like {default!r}")
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise _fail(sub.key(name), value, "a value >= 0")
            kwargs[name] = float(value) if isinstance(default, float) else value
        sub.done()
        out[arch] = kwargs
    m.done()
    return out


def _freeze(top: _Section, names: tuple[str, ...], arch: str) -> int:
    """`freeze` as a count of layers, or a layer name meaning "up to and including it"."""
    value = top.get("freeze", 3)
    if isinstance(value, str):
        if value not in names:
            shown = ", ".join(names if len(names) <= 12 else names[:6] + ("...",) + names[-3:])
            raise _fail("freeze", value, f"a layer count or a layer name of arch {arch!r}: "
                        + shown)
        return names.index(value) + 1
    return _check_int("freeze", value, 0, len(names),
                      f"0 = from scratch, up to the {len(names)} layers of arch {arch!r}")


HEAD_TRANSFORMS = ("l2", "power")
# Seed 002's probes; sized so the default run's diagnostics take seconds on a CPU.
# Same names and defaults as transferlab.diagnostics.DiagnosticsConfig (a test checks),
# plus `tolerance`: how far AnB may fall below AnB+ or base before the sweep says "retrain".
DIAGNOSTICS_DEFAULTS: dict[str, Any] = {
    "images_per_class": 20,
    "tsne_perplexity": 20.0,
    "tsne_iterations": 500,
    "inversion_images_per_class": 8,
    "inversion_steps": 80,
    "inversion_lr": 0.1,
    "inversion_init_std": 0.1,
    "decoder_epochs": 40,
    "decoder_lr": 0.003,
    "decoder_hidden": 128,
    "decoder_batch_size": 128,
    "decoder_train_per_class": 0,
    "max_decoder_gap": 0.05,
    "max_spread_ratio": 1.2,
    "cpu_threads": 1,
    "tolerance": 0.01,
}


HEAD_NAMES = ("svm", "logreg", "random_forest")
POOLS = ("flatten", "avg")


def _choices(sec: _Section, name: str, default: list, allowed: tuple[str, ...]
             ) -> tuple[str, ...]:
    values = sec.non_empty_list(name, default)
    for i, v in enumerate(values):
        if v not in allowed:
            raise _fail(f"{sec.key(name)}[{i}]", v, "one of " + ", ".join(allowed))
    return tuple(values)


def _feature_params(f: _Section, names: tuple[str, ...], arch: str) -> FeatureParams:
    source_model = f.get("source_model", "A")
    if source_model != "A" and not (isinstance(source_model, str)
                                    and source_model.startswith("torchvision:")
                                    and len(source_model) > len("torchvision:")):
        raise _fail("features.source_model", source_model,
                    'A (model A) or "torchvision:<model name>", e.g. torchvision:resnet18')
    weights = _optional_str(f, "weights")
    if source_model != "A" and weights is None:
        raise _fail("features.weights", None, f"the path of a local weights file for "
                    f"{source_model} (weights cannot be downloaded at run time)")
    layers = f.non_empty_list("layers", list(names))
    for i, name in enumerate(layers):
        if not isinstance(name, str):
            raise _fail(f"features.layers[{i}]", name, "a layer name")
        # A torchvision model's node names are checked when it is built (needs torch).
        if source_model == "A" and name not in names:
            raise _fail(f"features.layers[{i}]", name,
                        f"a layer of arch {arch!r}: " + ", ".join(names))
    aug = f.section("augment")
    augment = AugmentParams(aug.integer("copies", 0, 0, 64, "extra features per image; 0 = off"),
                            aug.boolean("flip", False),
                            aug.number("pad", 0.125, lo=0.0, lo_open=True, hi=1.0))
    aug.done()
    out = FeatureParams(tuple(layers), f.integer("batch_size", 256, 1), augment,
                        f.boolean("iterations", True), source_model, weights,
                        f.integer("input_size", 224, 16, 1024), f.choice("pool", "flatten", POOLS))
    f.done()
    return out


def _head_params(h: _Section, feature_layers: tuple[str, ...]) -> HeadParams:
    cv_folds = h.integer("cv_folds", 5, 2)
    heads = _choices(h, "heads", list(HEAD_NAMES), HEAD_NAMES)
    transform = h.choice("transform", "l2", HEAD_TRANSFORMS)
    power = h.number("power", 0.5, lo=0.0, lo_open=True, hi=1.0)
    svm = h.section("svm")
    svm_c = _float_list(svm, "C", [0.01, 0.1, 1, 10, 100])
    svm.done()
    lr = h.section("logreg")
    logreg_c = _float_list(lr, "C", [0.01, 0.1, 1, 10, 100])
    lr.done()
    rf = h.section("random_forest")
    trees = rf.integer("n_estimators", 128, 1)
    rf.done()
    iterations = h.boolean("iterations", True)
    low = h.section("lowshot")
    shots = low.get("shots", [1, 2, 4, 8])
    if shots != []:
        shots = _int_list(low, "shots", [1, 2, 4, 8], 1)
    draws = low.integer("draws", 3, 1)
    low_heads = _choices(low, "heads", ["svm", "logreg"], HEAD_NAMES)
    low_layers = low.get("layers", ["conv2"])
    if low_layers is not None:
        low_layers = _choices(low, "layers", ["conv2"], tuple(feature_layers))
    low.done()
    h.done()
    return HeadParams(cv_folds, svm_c, logreg_c, trees, transform, power, heads, iterations,
                      LowShotParams(tuple(shots), draws, low_heads, low_layers))


# Lower bounds the probes need (t-SNE wants at least 250 iterations); floats listed
# here must be > 0, every other value >= 0.
_DIAGNOSTICS_MIN = {"images_per_class": 2, "tsne_iterations": 250, "inversion_steps": 1,
                    "decoder_epochs": 1, "decoder_batch_size": 1}
_DIAGNOSTICS_POSITIVE = ("tsne_perplexity", "inversion_lr", "decoder_lr", "max_spread_ratio")


def _diagnostics_params(sec: _Section) -> DiagnosticsParams:
    values = []
    for name, default in DIAGNOSTICS_DEFAULTS.items():
        if isinstance(default, int):
            value = sec.integer(name, default, _DIAGNOSTICS_MIN.get(name, 0))
        else:
            value = sec.number(name, default, lo=0.0, lo_open=name in _DIAGNOSTICS_POSITIVE)
        values.append((name, value))
    sec.done()
    return DiagnosticsParams(tuple(values))


def parse_params(raw: Any) -> Params:
    """Validate a params mapping (as read from params.yaml)."""
    top = _Section(raw, "")
    dataset = top.choice("dataset", "digits", DATASETS)
    arch = top.choice("arch", "convnet", tuple(ARCHITECTURES))
    model = _model_params(top.section("model"))
    names = layer_names_of(arch, model[arch])
    n_layers = len(names)
    source = top.choice("source", "A", SOURCES)
    freeze = _freeze(top, names, arch)
    finetune = top.boolean("finetune", False)
    subsample = top.integer("subsample", 5, 0, None, "0 = all")
    seed = top.integer("seed", 0, 0, 2**31 - 1)

    d = top.section("data")
    split = d.choice("split", "fixed", SPLITS)
    src_cls = _classes(d, "source_classes", [0, 1, 2, 3, 4])
    tgt_cls = _classes(d, "target_classes", [5, 6, 7, 8, 9])
    classes_file = _optional_str(d, "classes_file")
    if split == "file" and classes_file is None:
        raise _fail("data.classes_file", None, "a YAML file with `source:` and `target:` class "
                    "lists when data.split is file")
    source_dataset = d.get("source_dataset", None)
    target_dataset = d.get("target_dataset", None)
    for key, value in (("source_dataset", source_dataset), ("target_dataset", target_dataset)):
        if value is not None and value not in DATASETS:
            raise _fail(f"data.{key}", value, "null (= dataset) or one of " + ", ".join(DATASETS))
    cross = (source_dataset or dataset) != (target_dataset or dataset)
    if cross and split == "random":
        raise _fail("data.split", split, "fixed or file when source and target datasets differ "
                    "(random halves split one dataset)")
    if split == "fixed" and not cross:
        if "all" in (src_cls, tgt_cls):
            raise _fail("data.source_classes" if src_cls == "all" else "data.target_classes",
                        "all", "a list of classes when source and target share one dataset")
        if set(src_cls) & set(tgt_cls):
            both = sorted(set(src_cls) & set(tgt_cls))
            raise _fail("data.target_classes", list(tgt_cls),
                        f"classes disjoint from data.source_classes (both contain {both})")
    test_fraction = d.number("test_fraction", 0.3, lo=0.0, lo_open=True, hi=0.9)
    root = d.get("root", "data/raw")
    if not isinstance(root, str) or not root:
        raise _fail("data.root", root, "a directory path")
    mirror = _optional_str(d, "mirror")
    manifest = _optional_str(d, "manifest")
    path = _optional_str(d, "path")
    if "imagefolder" in (dataset, source_dataset, target_dataset) and path is None:
        raise _fail("data.path", None, "a directory with one sub-folder per class "
                    "(dataset imagefolder)")
    image_size = d.get("image_size", None)
    if image_size is not None:
        _check_int("data.image_size", image_size, 4, 1024)
    normalise = d.choice("normalise", "half", NORMALISE)
    crop = d.integer("crop", 0, 0, None, "0 = no cropping")
    flip = d.boolean("flip", False)
    pad = d.integer("pad", 0, 0, 64, "pixels of zero padding before the random crop")
    if pad and not crop:
        raise _fail("data.pad", pad, "0 unless data.crop is set (padding feeds the random crop)")
    d.done()
    data = DataParams(split, src_cls, tgt_cls, test_fraction, classes_file, source_dataset,
                      target_dataset, root, mirror, manifest, path, image_size, normalise, crop,
                      flip, pad)

    pretrain = _train_params(top.section("pretrain"), epochs=True,
                             defaults={"epochs": 30, "batch_size": 64, "lr": 1e-3})
    transfer = _train_params(top.section("transfer"), epochs=False,
                             defaults={"steps": 100, "batch_size": 32, "lr": 1e-3})

    s = top.section("sweep")
    treatments = s.non_empty_list("treatments", list(TREATMENTS))
    for i, t in enumerate(treatments):
        if t not in TREATMENTS:
            raise _fail(f"sweep.treatments[{i}]", t, "one of " + ", ".join(TREATMENTS))
    sweep = SweepParams(
        treatments=tuple(treatments),
        layers=_int_list(s, "layers", [1, 2, 3, 4, 5], 1, n_layers,
                         f"the {n_layers} layers of arch {arch!r}"),
        subsample=_int_list(s, "subsample", [1, 5, 20], 0, None, "0 = all"),
        seeds=_int_list(s, "seeds", [0, 1, 2], 0, 2**31 - 1),
        reuse_variants=s.boolean("reuse_variants", True),
        swap=s.boolean("swap", False),
    )
    s.done()

    features = _feature_params(top.section("features"), names, arch)
    heads = _head_params(top.section("heads"), features.layers)
    diagnostics = _diagnostics_params(top.section("diagnostics"))

    r = top.section("report")
    report = ReportParams(r.integer("layer", 3, 1, n_layers,
                                    f"the {n_layers} layers of arch {arch!r}"),
                          r.integer("subsample", 5, 0))
    r.done()
    if report.layer not in sweep.layers:
        raise _fail("report.layer", report.layer, "one of sweep.layers: "
                    + ", ".join(map(str, sweep.layers)))
    if report.subsample not in sweep.subsample:
        raise _fail("report.subsample", report.subsample, "one of sweep.subsample: "
                    + ", ".join(map(str, sweep.subsample)))
    top.done()
    return Params(dataset, arch, source, freeze, finetune, subsample, seed, data, model,
                  pretrain, transfer, sweep, features, heads, report, diagnostics)


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"params: {path} not found (run from the project root)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"params: {path} is not valid YAML: {err}") from err
    return parse_params(raw)


def check_sweep_subsamples(params: Params, smallest_class: int) -> None:
    for i, k in enumerate(params.sweep.subsample):
        check_subsample(f"sweep.subsample[{i}]", k, smallest_class)


def check_subsample(key: str, value: int, smallest_class: int) -> None:
    """Refuse a per-class size larger than the smallest class's training part."""
    if value > smallest_class:
        raise _fail(key, value, f"0 (all) or at most {smallest_class}, the training images "
                    "of the smallest target class")
