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

DATASETS = ("digits",)
SOURCES = ("A", "B")
SPLITS = ("fixed", "random")
OPTIMIZERS = ("adam", "sgd")


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
    source_classes: tuple[int, ...]
    target_classes: tuple[int, ...]
    test_fraction: float


@dataclass(frozen=True)
class ModelParams:
    width: int
    hidden: int


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


@dataclass(frozen=True)
class SweepParams:
    treatments: tuple[str, ...]
    layers: tuple[int, ...]
    subsample: tuple[int, ...]
    seeds: tuple[int, ...]
    reuse_variants: bool


@dataclass(frozen=True)
class FeatureParams:
    layers: tuple[str, ...]
    batch_size: int


@dataclass(frozen=True)
class HeadParams:
    cv_folds: int
    svm_C: tuple[float, ...]
    logreg_C: tuple[float, ...]
    forest_trees: int


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
    model: ModelParams
    pretrain: TrainParams
    transfer: TrainParams
    sweep: SweepParams
    features: FeatureParams
    heads: HeadParams
    report: ReportParams

    @property
    def layer_names(self) -> tuple[str, ...]:
        return layer_names_of(self.arch)

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


def _train_params(sec: _Section, *, epochs: bool, defaults: dict) -> TrainParams:
    kwargs: dict[str, Any] = {}
    if epochs:
        kwargs["epochs"] = sec.integer("epochs", defaults["epochs"], 1)
    else:
        kwargs["steps"] = sec.integer("steps", defaults["steps"], 1)
        kwargs["lr_mult"] = sec.number("lr_mult", defaults.get("lr_mult", 0.1), lo=0.0,
                                       lo_open=True, hi=1.0)
    kwargs["batch_size"] = sec.integer("batch_size", defaults["batch_size"], 1)
    kwargs["optimizer"] = sec.choice("optimizer", "adam", OPTIMIZERS)
    kwargs["lr"] = sec.number("lr", defaults["lr"], lo=0.0, lo_open=True)
    kwargs["momentum"] = sec.number("momentum", 0.9, lo=0.0, hi=1.0)
    kwargs["weight_decay"] = sec.number("weight_decay", 0.0, lo=0.0)
    sec.done()
    return TrainParams(**kwargs)


def parse_params(raw: Any) -> Params:
    """Validate a params mapping (as read from params.yaml)."""
    top = _Section(raw, "")
    dataset = top.choice("dataset", "digits", DATASETS)
    arch = top.choice("arch", "convnet", tuple(ARCHITECTURES))
    n_layers = len(layer_names_of(arch))
    source = top.choice("source", "A", SOURCES)
    freeze = top.integer("freeze", 3, 0, n_layers,
                         f"0 = from scratch, up to the {n_layers} layers of arch {arch!r}")
    finetune = top.boolean("finetune", False)
    subsample = top.integer("subsample", 5, 0, None, "0 = all")
    seed = top.integer("seed", 0, 0, 2**31 - 1)

    d = top.section("data")
    split = d.choice("split", "fixed", SPLITS)
    src_cls = _int_list(d, "source_classes", [0, 1, 2, 3, 4], 0)
    tgt_cls = _int_list(d, "target_classes", [5, 6, 7, 8, 9], 0)
    if split == "fixed" and set(src_cls) & set(tgt_cls):
        both = sorted(set(src_cls) & set(tgt_cls))
        raise _fail("data.target_classes", list(tgt_cls),
                    f"classes disjoint from data.source_classes (both contain {both})")
    test_fraction = d.number("test_fraction", 0.3, lo=0.0, lo_open=True, hi=0.9)
    d.done()
    data = DataParams(split, src_cls, tgt_cls, test_fraction)

    m = top.section("model")
    model = ModelParams(m.integer("width", 32, 1), m.integer("hidden", 128, 1))
    m.done()

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
    )
    s.done()

    f = top.section("features")
    names = layer_names_of(arch)
    layers = f.non_empty_list("layers", list(names))
    for i, name in enumerate(layers):
        if name not in names:
            raise _fail(f"features.layers[{i}]", name,
                        f"a layer of arch {arch!r}: " + ", ".join(names))
    features = FeatureParams(tuple(layers), f.integer("batch_size", 256, 1))
    f.done()

    h = top.section("heads")
    cv_folds = h.integer("cv_folds", 5, 2)
    svm = h.section("svm")
    svm_c = _float_list(svm, "C", [0.01, 0.1, 1, 10, 100])
    svm.done()
    lr = h.section("logreg")
    logreg_c = _float_list(lr, "C", [0.01, 0.1, 1, 10, 100])
    lr.done()
    rf = h.section("random_forest")
    trees = rf.integer("n_estimators", 128, 1)
    rf.done()
    h.done()
    heads = HeadParams(cv_folds, svm_c, logreg_c, trees)

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
                  pretrain, transfer, sweep, features, heads, report)


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
