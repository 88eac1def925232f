"""Typed, validated params: the one schema of params.yaml and recipe.yaml.

Each section is a dataclass whose fields mirror the params files key for key; a
field's type, bounds and choices are declared beside it (transferlab.config.spec).
The values, defaults included, live in the two files only: a missing key is an
error. params.yaml holds the study's headline keys (`STUDY_KEYS`: what
`dvc exp show` lists and `dvc exp run -S key=value` changes); recipe.yaml holds
every other key, the papers' training and probing details, which
`dvc exp run -S recipe.yaml:key=value` changes and
`dvc params diff --targets params.yaml recipe.yaml` shows.
`load_params()` reads both with the YAML rules DVC uses (YAML 1.2) and
returns a `Params` tree, or raises `ParamsError` naming the key, the value and
what is allowed. Checks that relate several keys follow the per-field ones.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from transferlab.config import bounds as bound
from transferlab.config.spec import (
    Bool,
    Choice,
    Float,
    Int,
    List,
    Literal,
    Mapping,
    OneOf,
    ParamsError,
    Section,
    Text,
    check_keys,
    fail,
    read_section,
    spec,
    value_at,
)
from transferlab.models import ARCHITECTURES, HubName, layer_names_of
from transferlab.models.treatments import TREATMENTS, treatment_name

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "voc2007",
            "voc2012", "tinyimagenet", "miniplaces", "imagefolder")
SOURCES = ("A", "B")
SPLITS = ("fixed", "random", "file")
OPTIMIZERS = ("adam", "sgd")
NORMALISE = ("half", "source", "pretrained")  # pretrained: the weights' own (arch pretrained)
HEAD_NAMES = ("svm", "logreg", "random_forest")
HEAD_TRANSFORMS = ("l2", "power")
AP_DEFINITIONS = ("voc07", "voc12", "sklearn")  # transferlab.metrics.average_precision
POOLS = ("flatten", "avg")
DECODERS = ("mlp", "conv")  # diagnostics.decoder; transferlab.diagnostics.probes
SEED = Int(lo=0, hi=2**31 - 1)
SEEDS = List(item=SEED)
FRACTION = Float(lo=0.0, lo_open=True, hi=1.0)  # (0, 1]
# Every count, size and rate has an upper bound; the bounds and why: transferlab.config.bounds.
CLASSES = OneOf(specs=(Literal(value="all"), List(item=Int(lo=0, hi=bound.CLASS_INDEX))))
EPOCHS = Int(lo=1, hi=bound.EPOCHS)
STEPS = Int(lo=1, hi=bound.STEPS)
BATCH = Int(lo=1, hi=bound.BATCH)
PER_CLASS = Int(lo=0, hi=bound.IMAGES_PER_CLASS, why="0 = all")  # images per class
LR = Float(lo=0.0, lo_open=True, hi=bound.LR)
LAYER_COUNT = Int(lo=1, hi=bound.LAYERS)  # an n of layers; the arch's count: _check_layer_bounds
THREADS = Int(lo=0, hi=bound.THREADS, why="0 = leave as is")
LAYER_RATE = Float(lo=0.0, lo_open=True, hi=bound.RATE_MULT)  # transfer.layer_lr_mult.<layer>
TREATMENT_LAYERS = List(item=LAYER_COUNT, increasing=True)  # sweep.treatment_layers.<name>
PATH = Text(nullable=True, what="a path")

__all__ = ["ParamsError", "Params", "load_params", "parse_params"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataParams(Section):
    split: str = spec(Choice(options=SPLITS))
    source_classes: tuple[int, ...] | str = spec(CLASSES)  # class indices, or "all"
    target_classes: tuple[int, ...] | str = spec(CLASSES)
    classes_file: str | None = spec(PATH)  # split: file
    source_dataset: str | None = spec(Choice(options=DATASETS, nullable=True))  # null: dataset
    target_dataset: str | None = spec(Choice(options=DATASETS, nullable=True))
    test_fraction: float = spec(Float(lo=0.0, lo_open=True, hi=0.9))
    root: str = spec(Text(what="a directory path"))
    mirror: str | None = spec(Text(nullable=True, what="a base URL"))
    manifest: str | None = spec(PATH)
    path: str | None = spec(PATH)  # imagefolder
    source_path: str | None = spec(PATH)  # imagefolder on the source side (null = path)
    target_path: str | None = spec(PATH)  # imagefolder on the target side (null = path)
    voc_lists: str = spec(Choice(options=("main", "segmentation")))  # VOC's train/val lists
    image_size: int | None = spec(Int(lo=4, hi=1024, nullable=True))
    normalise: str = spec(Choice(options=NORMALISE))
    crop: int = spec(Int(lo=0, hi=bound.PIXELS, why="0 = no cropping"))
    pad: int = spec(Int(lo=0, hi=64, why="pixels of zero padding before the random crop"))
    flip: bool = spec(Bool())

    def dataset_of(self, task: str, dataset: str) -> str:
        chosen = self.source_dataset if task == "source" else self.target_dataset
        return chosen or dataset

    def path_of(self, task: str, dataset: str) -> str | None:
        """The image folder of side `task` (source or target) when it is an imagefolder."""
        if self.dataset_of(task, dataset) != "imagefolder":
            return None
        own = self.source_path if task == "source" else self.target_path
        return own or self.path

    def crosses(self, dataset: str) -> bool:
        """Source and target come from different datasets (or different image folders)."""
        return (self.dataset_of("source", dataset) != self.dataset_of("target", dataset)
                or self.path_of("source", dataset) != self.path_of("target", dataset))


def _model_section(arch: str):
    options = ARCHITECTURES[arch].options

    def check(key: str, raw: dict) -> dict[str, Any]:
        check_keys(raw, list(options), key + ".")
        return {name: options[name].check(f"{key}.{name}", raw[name]) for name in options}

    return spec(Mapping(checker=check, items=tuple(options.items())))


# One field per architecture of the registry, so the section and the registry cannot drift.
ModelParams = dataclasses.make_dataclass(
    "ModelParams", [(arch, dict, _model_section(arch)) for arch in ARCHITECTURES],
    bases=(Section,), frozen=True, kw_only=True)
ModelParams.__module__ = __name__


@dataclasses.dataclass(frozen=True, kw_only=True)
class BinaryAuxParams(Section):
    heads: int = spec(Int(lo=0, hi=16, why="0 = no binary auxiliary head"))
    weight: float = spec(FRACTION)
    in_model_A: bool = spec(Bool())  # model A (sweep, transfer, features) trains with them
    compare: bool = spec(Bool())  # stage binary_aux runs the paired with/without comparison
    seeds: tuple[int, ...] = spec(SEEDS)  # the paired comparison's replicates
    subsample: int = spec(PER_CLASS)  # its target images per class


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainParams(Section):
    """What pretraining and transfer share; `PretrainParams` counts epochs,
    `TransferParams` steps."""

    batch_size: int = spec(BATCH)
    optimizer: str = spec(Choice(options=OPTIMIZERS))
    lr: float = spec(LR)
    momentum: float = spec(Float(lo=0.0, hi=1.0))  # sgd only
    weight_decay: float = spec(Float(lo=0.0, hi=bound.WEIGHT_DECAY))
    # epochs (pretrain) or steps (transfer); each below the run's length: _check_milestones
    milestones: tuple[int, ...] = spec(List(item=STEPS, may_be_empty=True, increasing=True))
    lr_decay: float = spec(FRACTION)
    # weight gamma^i of iteration i's loss (feedback networks)
    gamma: float = spec(Float(lo=0.0, lo_open=True, hi=bound.GAMMA))
    compile: bool = spec(Bool())  # torch.compile the loss (one-at-a-time loops only)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PretrainParams(TrainParams):
    epochs: int = spec(EPOCHS)
    binary_aux: BinaryAuxParams


@dataclasses.dataclass(frozen=True, kw_only=True)
class L2SPParams(Section):
    """Li, Grandvalet and Davoine (ICML 2018): loss += alpha/2 ||w - w_source||^2 over the
    fine-tuned copied layers + beta/2 ||w||^2 over the new ones (0 = off)."""

    alpha: float = spec(Float(lo=0.0, hi=bound.PENALTY))  # 0 = off
    beta: float = spec(Float(lo=0.0, hi=bound.PENALTY))  # 0 = off


@dataclasses.dataclass(frozen=True, kw_only=True)
class LPFTParams(Section):
    """Kumar et al. (ICLR 2022)'s LP-FT treatment: the head alone first, then everything."""

    # share of the budget the head trains alone (floored to steps; at least one step)
    head_share: float = spec(Float(lo=0.0, lo_open=True, hi=1.0, hi_open=True))
    lr_mult: float = spec(FRACTION)  # copied layers' rate multiplier in the second phase


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransferParams(TrainParams):
    steps: int = spec(STEPS)  # the budget, or its minimum when `epochs` is set
    epochs: int | None = spec(Int(lo=1, hi=bound.EPOCHS, nullable=True))  # null: `steps` only
    lr_mult: float = spec(FRACTION)  # copied layers' rate multiplier in the + treatments
    layer_lr_mult: dict = spec(Mapping(checker=lambda key, raw: _layer_rates(key, raw),
                                       items=(("<layer>", LAYER_RATE),)))
    # steps at which the copied layers' rate decays (null: `milestones`, as every group)
    copied_milestones: tuple[int, ...] | None = spec(
        List(item=STEPS, may_be_empty=True, increasing=True, nullable=True))
    frozen_dropout: bool = spec(Bool())  # dropout stays on in frozen layers (Caffe lr_mult 0)
    # copied trained layer i of L at lr * lr_mult * layer_decay^(L - i) (1.0 = off)
    layer_decay: float = spec(FRACTION)
    l2sp: L2SPParams
    lp_ft: LPFTParams

    def budget(self, train_images: int) -> int:
        """Optimiser steps of one transfer run on `train_images` images: `steps`, or
        `epochs` passes over them when that is more."""
        if self.epochs is None:
            return self.steps
        per_epoch = -(-train_images // min(self.batch_size, max(train_images, 1)))
        return max(self.steps, self.epochs * per_epoch)


def _layer_rates(key: str, raw: dict) -> dict[str, float]:
    """layer name -> rate multiplier; names are checked against the arch in `_check`."""
    return {str(name): LAYER_RATE.check(f"{key}.{name}", value) for name, value in raw.items()}


def _treatment_layers(key: str, raw: dict) -> dict[str, tuple[int, ...]]:
    # LP, FT and LP-FT copy every layer: they have no n to choose
    copying = [name for name, t in TREATMENTS.items() if t.copies_layers and not t.all_layers]
    for name in raw:
        if name not in copying:
            raise fail(f"{key}.{name}", raw[name], "a key naming a treatment that copies "
                       "layers: " + ", ".join(copying))
    return {name: TREATMENT_LAYERS.check(f"{key}.{name}", value) for name, value in raw.items()}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepParams(Section):
    treatments: tuple[str, ...] = spec(List(item=Choice(options=tuple(TREATMENTS))))
    layers: tuple[int, ...] = spec(List(item=LAYER_COUNT))
    subsample: tuple[int, ...] = spec(List(item=PER_CLASS))
    seeds: tuple[int, ...] = spec(SEEDS)
    # {treatment: [n, ...]}: that treatment runs at these n instead of sweep.layers
    treatment_layers: dict = spec(Mapping(checker=_treatment_layers,
                                          items=(("<treatment>", TREATMENT_LAYERS),)))
    reuse_variants: bool = spec(Bool())
    # false: every variant trains one at a time (transferlab.training.batched says when
    # the stacked groups lose: 28x28 inputs, thousands of images per class)
    batched: bool = spec(Bool())
    swap: bool = spec(Bool())
    # each variant also stores its curve (test score, train loss) at about 30 epochs
    curves: bool = spec(Bool())

    def layers_of(self, treatment: str) -> tuple[int, ...]:
        return self.treatment_layers.get(treatment, self.layers)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AugmentParams(Section):
    copies: int = spec(Int(lo=0, hi=64, why="extra features per image; 0 = off"))
    flip: bool = spec(Bool())
    pad: float = spec(FRACTION)  # crop window shift, as a fraction of the shorter side
    rotate: float = spec(Float(lo=0.0, hi=180.0))  # max rotation in degrees (0 = none)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeatureParams(Section):
    layers: tuple[str, ...] = spec(List(item=Text(what="a layer name")))
    batch_size: int = spec(BATCH)
    augment: AugmentParams
    iterations: bool = spec(Bool())  # feedback nets: also each iteration's head input
    source_model: str = spec(Text(what='A (model A) or "torchvision:<model name>"'))
    weights: str | None = spec(PATH)  # the torchvision model's local weights file
    input_size: int = spec(Int(lo=16, hi=1024))
    pool: str = spec(Choice(options=POOLS))
    # a conv map above this many dims is average-pooled at extraction (transferlab.features.
    # reduce); 9,216 = 256 x 6 x 6, Goyal et al. 2019's ~9k per pooled layer
    max_dim: int = spec(Int(lo=1, hi=bound.STORED_DIMS))
    # GiB the features, heads, diagnostics and transferability stages may hold (estimated
    # from the shapes before any work); null: the machine's physical memory
    memory_gb: float | None = spec(Float(lo=0.0, lo_open=True, hi=bound.MEMORY_GB,
                                         nullable=True))


@dataclasses.dataclass(frozen=True, kw_only=True)
class CostGrid(Section):
    C: tuple[float, ...] = spec(List(item=Float(lo=0.0, lo_open=True, hi=bound.COST)))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ForestParams(Section):
    n_estimators: int = spec(Int(lo=1, hi=bound.TREES))


@dataclasses.dataclass(frozen=True, kw_only=True)
class LowShotParams(Section):
    shots: tuple[int, ...] = spec(List(item=Int(lo=1, hi=bound.IMAGES_PER_CLASS),
                                       may_be_empty=True))  # [] = off
    draws: int = spec(Int(lo=1, hi=bound.DRAWS))
    heads: tuple[str, ...] = spec(List(item=Choice(options=HEAD_NAMES)))
    layers: tuple[str, ...] | None = spec(List(item=Text(what="a layer name"), nullable=True))


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeadParams(Section):
    cv_folds: int = spec(Int(lo=2, hi=bound.FOLDS))
    heads: tuple[str, ...] = spec(List(item=Choice(options=HEAD_NAMES)))
    transform: str = spec(Choice(options=HEAD_TRANSFORMS))
    power: float = spec(FRACTION)
    svm: CostGrid
    logreg: CostGrid
    random_forest: ForestParams
    iterations: bool = spec(Bool())
    # feedback nets: iterations t whose head input (iter<t>, 256-d) gets the heads of a layer
    on_iterations: tuple[int, ...] = spec(List(item=Int(lo=1, hi=bound.ITERATIONS),
                                               may_be_empty=True))
    lowshot: LowShotParams
    ap: str = spec(Choice(options=AP_DEFINITIONS))  # average precision wherever mAP is scored
    # worker processes for the CV fits (`heads.fit.choose_c`); results do not depend on it
    cv_workers: int = spec(Int(lo=0, hi=bound.THREADS, why="0 = one per core"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiagnosticsParams(Section):
    """Sharma's probes; lower bounds are what the probes need (t-SNE >= 250 iterations)."""

    images_per_class: int = spec(Int(lo=2, hi=bound.IMAGES_PER_CLASS))  # test images per class
    tsne_perplexity: float = spec(Float(lo=0.0, lo_open=True, hi=bound.PERPLEXITY))
    tsne_iterations: int = spec(Int(lo=250, hi=bound.TSNE_ITERATIONS))
    inversion_images_per_class: int = spec(Int(lo=0, hi=bound.IMAGES_PER_CLASS))
    inversion_steps: int = spec(STEPS)
    inversion_lr: float = spec(LR)
    inversion_init_std: float = spec(Float(lo=0.0, hi=bound.INIT_STD))
    decoder_epochs: int = spec(EPOCHS)
    decoder_lr: float = spec(LR)
    # mlp: every layer's decoder is an MLP on the flattened activation; conv: a layer with a
    # (C, H, W) map gets a convolutional decoder, flat layers keep the MLP
    decoder: str = spec(Choice(options=DECODERS))
    # the MLP's hidden units
    decoder_hidden: int = spec(Int(lo=0, hi=bound.UNITS, why="0 = linear decoder"))
    decoder_channels: int = spec(Int(lo=1, hi=bound.CHANNELS))  # the conv decoder's channels
    decoder_batch_size: int = spec(BATCH)
    decoder_train_per_class: int = spec(PER_CLASS)
    cpu_threads: int = spec(THREADS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransferabilityParams(Section):
    """Estimators of each layer's transferability (docs/transferability.md)."""

    knn_neighbours: int = spec(Int(lo=1, hi=bound.NEIGHBOURS))
    # TransRate's distortion eps^2
    transrate_eps2: float = spec(Float(lo=0.0, lo_open=True, hi=bound.TRANSRATE_EPS2))
    gbc_dims: int = spec(Int(lo=1, hi=bound.FEATURE_DIMS))  # GBC's PCA components
    # SFDA's a: lambda = exp(-a max eig S_W)
    sfda_shrinkage_rate: float = spec(Float(lo=0.0, lo_open=True, hi=bound.SFDA_SHRINKAGE))
    linear_probe: bool = spec(Bool())  # also the logreg head's CV accuracy (seconds per layer)
    source_images_per_class: int = spec(PER_CLASS)
    cpu_threads: int = spec(THREADS)
    # resamples of the interval over seeds / splits
    bootstrap: int = spec(Int(lo=1, hi=bound.BOOTSTRAP))
    bootstrap_seed: int = spec(SEED)


# Stage rank_sources (transferlab.transferability.ranking). The layer estimators only:
# NCE and LEEP read a source classifier's predictions over its own classes, which a
# candidate loaded as layers plus a new head no longer has (and a timm network saved
# without its classifier never had), and they score a whole network, not a layer, so
# "last layer" and "best layer" mean nothing for them.
RANKING_ESTIMATORS = ("logme", "hscore", "transrate", "gbc", "sfda", "knn")
# The measured result each candidate is ranked by: a treatment of every layer (FT: full
# fine-tuning, what LogME's protocol measures; LP: linear probe; LP-FT), or none: the
# scores only.
RANKING_FINETUNE = ("FT", "LP", "LP-FT", "none")
CANDIDATE = {
    "name": HubName(),
    "weights": Text(nullable=True, what="a state-dict file under data.root (null: the "
                    "library's own cache)"),
}


def _candidate(key: str, raw: dict) -> dict[str, Any]:
    """One candidate source network: its library name and its weights file."""
    check_keys(raw, list(CANDIDATE), key + ".")
    return {name: CANDIDATE[name].check(f"{key}.{name}", raw[name]) for name in CANDIDATE}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RankingParams(Section):
    """Candidate source networks ranked on the target (docs/transferability.md)."""

    candidates: tuple[dict, ...] = spec(List(item=Mapping(checker=_candidate,
                                                          items=tuple(CANDIDATE.items())),
                                             may_be_empty=True))  # [] = nothing to rank
    estimators: tuple[str, ...] = spec(List(item=Choice(options=RANKING_ESTIMATORS)))
    finetune: str = spec(Choice(options=RANKING_FINETUNE))
    subsample: int = spec(PER_CLASS)  # at most this many target images per class; 0 = all


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportParams(Section):
    layer: int = spec(LAYER_COUNT)  # n of the size curve
    subsample: int = spec(PER_CLASS)  # target size of the transferability curve
    # sweep verdict: AnB this far below = retrain
    tolerance: float = spec(Float(lo=0.0, hi=bound.TOLERANCE))
    # summary.md and details.json state Yosinski's findings and whether they reproduce
    findings: bool = spec(Bool())


# raw: a measure whose scale differs from ours (shown side by side, no difference)
PAPER_UNITS = ("accuracy", "error", "accuracy%", "error%", "map", "map%", "raw")
PAPER_NUMBER_KEYS = ("what", "value", "unit", "source", "ours")
# as printed: a number; [low, high] for a range the paper prints as "4-5" (no difference is
# taken against a range); null for a figure without a number
PAPER_VALUE = OneOf(specs=(Float(), List(item=Float(), length=2, increasing=True)),
                    nullable=True)


# A published number is not a count, size or rate of a run (only the report reads it):
# the one Float without an upper bound (tests/test_params.py names it).
PAPER_NUMBER = {
    "what": Text(what="a description"),
    "value": PAPER_VALUE,
    "unit": Choice(options=PAPER_UNITS),
    "source": Text(what="page, table or figure"),
    "ours": List(item=Text(what="a key of metrics/details.json"), unique=False, nullable=True),
}


def _paper_number(key: str, raw: dict) -> dict[str, Any]:
    """One published number: what it is, its value as printed (a number, a range
    [low, high], or null: figure only),
    its unit, where it is printed, and where our number is in metrics/details.json."""
    check_keys(raw, list(PAPER_NUMBER_KEYS), key + ".")
    return {name: PAPER_NUMBER[name].check(f"{key}.{name}", raw[name])
            for name in PAPER_NUMBER_KEYS}


@dataclasses.dataclass(frozen=True, kw_only=True)
class PaperParams(Section):
    """What a preset reproduces and the paper's own numbers; only the report reads it,
    so no training or feature result depends on it."""

    study: str | None = spec(Text(nullable=True, what="the paper"))
    reproduces: str | None = spec(Text(nullable=True, what="the figure or table"))
    note: str | None = spec(Text(nullable=True, what="a note for the report"))
    numbers: tuple[dict, ...] = spec(List(item=Mapping(checker=_paper_number,
                                                       items=tuple(PAPER_NUMBER.items())),
                                          may_be_empty=True, unique=False))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Params(Section):
    dataset: str = spec(Choice(options=DATASETS))
    arch: str = spec(Choice(options=tuple(ARCHITECTURES)))
    source: str = spec(Choice(options=SOURCES))
    # bounds below the count: _freeze_count
    freeze: int = spec(OneOf(specs=(Int(hi=bound.LAYERS), Text(what="a layer name"))))
    finetune: bool = spec(Bool())
    subsample: int = spec(PER_CLASS)
    seed: int = spec(SEED)
    data: DataParams
    model: ModelParams
    pretrain: PretrainParams
    transfer: TransferParams
    sweep: SweepParams
    features: FeatureParams
    heads: HeadParams
    diagnostics: DiagnosticsParams
    transferability: TransferabilityParams
    ranking: RankingParams
    report: ReportParams
    paper: PaperParams

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """Builder arguments of the chosen arch (its `model.<arch>` section)."""
        return dict(getattr(self.model, self.arch))

    @property
    def layer_names(self) -> tuple[str, ...]:
        return layer_names_of(self.arch, self.model_kwargs)

    @property
    def treatment(self) -> str:
        """Yosinski's name for the experiment the top-level params describe."""
        return treatment_name(self.source, self.freeze, self.finetune)


# ---------------------------------------------------------------------------- cross-key checks


def _check_layer_bounds(p: Params, names: tuple[str, ...]) -> None:
    n = len(names)
    why = f"the {n} layers of arch {p.arch!r}"
    for i, layer in enumerate(p.sweep.layers):
        if layer > n:
            raise fail(f"sweep.layers[{i}]", layer, f"an integer from 1 to {n} ({why})")
    for treatment, layers in p.sweep.treatment_layers.items():
        key = f"sweep.treatment_layers.{treatment}"
        if treatment not in p.sweep.treatments:
            raise fail(key, list(layers), "a key that is one of sweep.treatments: "
                       + ", ".join(p.sweep.treatments))
        for i, layer in enumerate(layers):
            if layer > n:
                raise fail(f"{key}[{i}]", layer, f"an integer from 1 to {n} ({why})")
    if p.report.layer > n:
        raise fail("report.layer", p.report.layer, f"an integer from 1 to {n} ({why})")
    if p.features.source_model == "A":
        for i, name in enumerate(p.features.layers):
            if name not in names:
                raise fail(f"features.layers[{i}]", name, f"a layer of arch {p.arch!r}: "
                           + ", ".join(names))
    if p.heads.lowshot.layers is not None:
        for i, name in enumerate(p.heads.lowshot.layers):
            if name not in p.features.layers:
                raise fail(f"heads.lowshot.layers[{i}]", name,
                           "one of features.layers: " + ", ".join(p.features.layers))


def _freeze_count(value: int | str, names: tuple[str, ...], arch: str) -> int:
    """`freeze` as a count of layers; a layer name means "up to and including it"."""
    if isinstance(value, str):
        if value not in names:
            shown = ", ".join(names if len(names) <= 12 else names[:6] + ("...",) + names[-3:])
            raise fail("freeze", value, f"a layer count or a layer name of arch {arch!r}: "
                       + shown)
        return names.index(value) + 1
    if not 0 <= value <= len(names):
        raise fail("freeze", value, f"an integer from 0 to {len(names)} (0 = from scratch, up "
                   f"to the {len(names)} layers of arch {arch!r})")
    return value


def _check_milestones(key: str, milestones: tuple[int, ...], length: int, unit: str) -> None:
    for i, m in enumerate(milestones):
        if m > max(length - 1, 1):
            raise fail(f"{key}[{i}]", m, f"an integer from 1 to {max(length - 1, 1)} ({unit} "
                       "after which the rate drops, before the last)")


def _check_transfer_rates(p: Params, names: tuple[str, ...]) -> None:
    for name in p.transfer.layer_lr_mult:
        if name not in names:
            shown = ", ".join(names if len(names) <= 12 else names[:6] + ("...",) + names[-3:])
            raise fail(f"transfer.layer_lr_mult.{name}", p.transfer.layer_lr_mult[name],
                       f"a mapping whose keys are layers of arch {p.arch!r}: {shown}")


def _check_fine_tuning(p: Params) -> None:
    """The fine-tuning options (L2-SP, layer decay, LP-FT) act on some run, and LP-FT's
    first phase has at least one step in the smallest budget."""
    t = p.transfer
    tuning = [name for name in p.sweep.treatments if TREATMENTS[name].finetune]
    used = bool(tuning) or (p.finetune and p.freeze != 0) or p.pretrain.binary_aux.compare
    why = ("the default unless some run fine-tunes copied layers (finetune: true, a "
           "fine-tuning treatment in sweep.treatments: AnB+, BnB+, AnB-ft, FT, LP-FT, or "
           "pretrain.binary_aux.compare); with none, it would change nothing")
    for key, value, off in (("transfer.l2sp.alpha", t.l2sp.alpha, 0.0),
                            ("transfer.l2sp.beta", t.l2sp.beta, 0.0),
                            ("transfer.layer_decay", t.layer_decay, 1.0)):
        if value != off and not used:
            raise fail(key, value, f"{off} ({why})")
    if any(TREATMENTS[name].head_first for name in p.sweep.treatments) \
            and int(t.lp_ft.head_share * t.steps) < 1:
        raise fail("transfer.lp_ft.head_share", t.lp_ft.head_share,
                   f"a share in [1 / transfer.steps, 1) = [{1 / t.steps:.4g}, 1) with LP-FT in "
                   f"sweep.treatments, so that the head trains alone for at least one of the "
                   f"transfer.steps = {t.steps} steps (floor(share x steps) >= 1)")


def _check_binary_aux(p: Params) -> None:
    aux = p.pretrain.binary_aux
    for name in ("in_model_A", "compare"):
        if getattr(aux, name) and aux.heads == 0:
            raise fail(f"pretrain.binary_aux.{name}", True, "false when "
                       "pretrain.binary_aux.heads is 0 (there is no binary head)")


def _check_data(p: Params) -> None:
    d = p.data
    if d.split == "file" and d.classes_file is None:
        raise fail("data.classes_file", None, "a YAML file with `source:` and `target:` class "
                   "lists when data.split is file")
    cross = d.crosses(p.dataset)
    if cross and d.split == "random":
        raise fail("data.split", d.split, "fixed or file when source and target datasets "
                   "differ (random halves split one dataset)")
    if d.split == "fixed" and not cross:
        src, tgt = d.source_classes, d.target_classes
        if "all" in (src, tgt):
            raise fail("data.source_classes" if src == "all" else "data.target_classes",
                       "all", "a list of classes when source and target share one dataset")
        if set(src) & set(tgt):
            raise fail("data.target_classes", list(tgt), "classes disjoint from "
                       f"data.source_classes (both contain {sorted(set(src) & set(tgt))})")
    for task in ("source", "target"):
        if d.dataset_of(task, p.dataset) == "imagefolder" and d.path_of(task, p.dataset) is None:
            if d.source_path is None and d.target_path is None:  # the one-folder case
                raise fail("data.path", None, "a directory with one sub-folder per class "
                           "(dataset imagefolder)")
            raise fail(f"data.{task}_path", None, "a directory with one sub-folder per class "
                       f"(the {task} is an imagefolder; or set data.path for both sides)")
    for task in ("source", "target"):
        own = d.source_path if task == "source" else d.target_path
        if own is not None and d.dataset_of(task, p.dataset) != "imagefolder":
            raise fail(f"data.{task}_path", own, f"null unless the {task} dataset is "
                       "imagefolder")
    if d.pad and not d.crop:
        raise fail("data.pad", d.pad, "0 unless data.crop is set (padding feeds the random crop)")


# Paths outside the repository are read by a stage only from under data.root, the folder
# dvc.yaml declares as a dependency (`${data.root}`): DVC then hashes what is read, so a
# changed image or weights file reruns its readers and nothing else needs fingerprinting.
EXTERNAL_PATHS = ("data.path", "data.source_path", "data.target_path", "data.manifest",
                  "features.weights", "model.pretrained.weights")


def _check_external_paths(p: Params) -> None:
    root = Path(p.data.root).resolve()
    for key in EXTERNAL_PATHS:
        value = value_at(p, key)
        if value is not None and not Path(value).resolve().is_relative_to(root):
            raise fail(key, value, f"a path under data.root = {p.data.root!r}, the folder "
                       "dvc.yaml declares as the input of the stages that read it (move it "
                       "there, or set recipe.yaml:data.root to a folder that holds it)")
    for i, candidate in enumerate(p.ranking.candidates):
        weights = candidate["weights"]
        if weights is not None and not Path(weights).resolve().is_relative_to(root):
            raise fail(f"ranking.candidates[{i}].weights", weights, "a path under data.root "
                       f"= {p.data.root!r}, the folder dvc.yaml declares as an input of "
                       "rank_sources (move it there, or set recipe.yaml:data.root to a "
                       "folder that holds it)")
    classes_file = p.data.classes_file
    if classes_file is not None and not any(
            Path(classes_file).resolve().is_relative_to(Path(d).resolve())
            for d in ("splits", p.data.root)):
        raise fail("data.classes_file", classes_file, "a file under splits/ (a dependency "
                   "of prepare) or under data.root")


def _check_iteration_heads(p: Params) -> None:
    count = p.model_kwargs.get("iterations", 1)
    for i, t in enumerate(p.heads.on_iterations):
        if count == 1 or not p.features.iterations or p.features.source_model != "A":
            raise fail(f"heads.on_iterations[{i}]", t, "[] unless model A predicts after "
                       "several iterations (arch feedback), features.iterations is true and "
                       "features.source_model is A")
        if t > count:
            raise fail(f"heads.on_iterations[{i}]", t, f"an iteration from 1 to {count} "
                       f"(model.{p.arch}.iterations)")


def _check_features(p: Params) -> None:
    f = p.features
    source = f.source_model
    if source != "A" and not (source.startswith("torchvision:")
                              and len(source) > len("torchvision:")):
        raise fail("features.source_model", source,
                   'A (model A) or "torchvision:<model name>", e.g. torchvision:resnet18')
    if source != "A" and f.weights is None:
        raise fail("features.weights", None, f"the path of a local weights file for {source} "
                   "(weights cannot be downloaded at run time)")


def _check_pretrained(p: Params) -> None:
    """Arch pretrained sees its images as its weights were trained on them (their size,
    mean and std, RGB), which prepare gives with data.normalise: pretrained only."""
    normalise = p.data.normalise
    if p.arch == "pretrained" and normalise != "pretrained":
        raise fail("data.normalise", normalise, "pretrained when arch is pretrained (the "
                   "weights' own mean and std, images resized to their size and grey ones "
                   "repeated to RGB): add -S recipe.yaml:data.normalise=pretrained")
    if normalise == "pretrained" and p.arch != "pretrained":
        raise fail("data.normalise", normalise, "half or source unless arch is pretrained "
                   "(pretrained: the mean and std of model.pretrained's weights)")
    if p.arch == "pretrained" and p.pretrain.binary_aux.in_model_A:
        raise fail("pretrain.binary_aux.in_model_A", True, "false when arch is pretrained "
                   "(model A is the pretrained network, not trained here)")


def _check(p: Params) -> Params:
    """Checks across keys; returns `p` with `freeze` as a layer count."""
    try:
        names = layer_names_of(p.arch, p.model_kwargs)
    except (ValueError, ImportError) as err:  # e.g. a depth the architecture cannot be
        # built with, a hub model the library does not know, timm not installed
        raise ParamsError(f"params: {err}") from None
    _check_pretrained(p)
    _check_data(p)
    _check_external_paths(p)
    _check_features(p)
    _check_iteration_heads(p)
    _check_layer_bounds(p, names)
    _check_milestones("pretrain.milestones", p.pretrain.milestones, p.pretrain.epochs, "epochs")
    if p.transfer.epochs is None:  # else the budget depends on the target size
        _check_milestones("transfer.milestones", p.transfer.milestones, p.transfer.steps,
                          "steps")
        if p.transfer.copied_milestones is not None:
            _check_milestones("transfer.copied_milestones", p.transfer.copied_milestones,
                              p.transfer.steps, "steps")
    _check_transfer_rates(p, names)
    _check_fine_tuning(p)
    _check_binary_aux(p)
    if p.report.layer not in p.sweep.layers:
        raise fail("report.layer", p.report.layer, "one of sweep.layers: "
                   + ", ".join(map(str, p.sweep.layers)))
    if p.report.subsample not in p.sweep.subsample:
        raise fail("report.subsample", p.report.subsample, "one of sweep.subsample: "
                   + ", ".join(map(str, p.sweep.subsample)))
    if p.diagnostics.inversion_images_per_class > p.diagnostics.images_per_class:
        raise fail("diagnostics.inversion_images_per_class",
                   p.diagnostics.inversion_images_per_class,
                   f"at most diagnostics.images_per_class = {p.diagnostics.images_per_class}")
    freeze = _freeze_count(p.freeze, names, p.arch)
    out = dataclasses.replace(p, freeze=freeze)
    object.__setattr__(out, "_prefix", "")
    return out


def parse_params(raw: Any) -> Params:
    """Validate a complete params mapping (as read from params.yaml)."""
    return _check(read_section(Params, raw))


PARAMS_FILE = "params.yaml"
RECIPE_FILE = "recipe.yaml"

# The study's headline, kept in params.yaml: the keys a researcher changes from one
# experiment to the next. The recipe's details (about a hundred keys) live in
# recipe.yaml, so each file reads as one kind of thing; dvc.yaml declares each key from
# its own file, and a key in the other file is refused naming where it belongs.
STUDY_KEYS = ("dataset", "arch", "source", "freeze", "finetune", "subsample", "seed",
              "model", "data.split", "data.crop", "data.pad", "data.flip",
              "transfer.steps", "transfer.lr", "transfer.lr_mult",
              "sweep.treatments", "sweep.layers", "sweep.subsample", "sweep.seeds")


def home_file(key: str) -> str:
    """The file a dotted key lives in."""
    study = any(key == k or key.startswith(k + ".") for k in STUDY_KEYS)
    return PARAMS_FILE if study else RECIPE_FILE


def _holds_study_keys(key: str) -> bool:
    return any(k.startswith(key + ".") for k in STUDY_KEYS)


def split_params(raw: dict, prefix: str = "") -> tuple[dict, dict]:
    """A complete params tree cut into (params.yaml's part, recipe.yaml's part)."""
    study, recipe = {}, {}
    for name, value in raw.items():
        key = prefix + str(name)
        if isinstance(value, dict) and home_file(key) == RECIPE_FILE and _holds_study_keys(key):
            inner_study, inner_recipe = split_params(value, key + ".")
            if inner_study:
                study[name] = inner_study
            if inner_recipe:
                recipe[name] = inner_recipe
        elif home_file(key) == PARAMS_FILE:
            study[name] = value
        else:
            recipe[name] = value
    return study, recipe


def _merge_files(study: Any, recipe: Any, prefix: str = "") -> Any:
    """One tree from the two files' trees; a key set in both is refused."""
    if not isinstance(study, dict) or not isinstance(recipe, dict):
        raise ParamsError(f"params: {prefix.rstrip('.')!r} is set in both {PARAMS_FILE} and "
                          f"{RECIPE_FILE}; it belongs in {home_file(prefix.rstrip('.'))}")
    out = dict(study)
    for name, value in recipe.items():
        out[name] = (_merge_files(study[name], value, f"{prefix}{name}.") if name in study
                     else value)
    return out


def _misplaced(tree: Any, in_file: str) -> str | None:
    """The first key of `tree` (read from `in_file`) whose home is the other file."""
    study, recipe = split_params(tree if isinstance(tree, dict) else {})
    key, value = "", recipe if in_file == PARAMS_FILE else study
    while isinstance(value, dict) and value:  # name a whole key, not its section
        name, value = next(iter(value.items()))
        key += f".{name}" if key else str(name)
    return key or None


def _read_yaml(path: Path) -> Any:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    if not path.exists():
        raise ParamsError(f"params: {path.resolve()} not found (run from the project root)")
    try:
        return YAML(typ="safe").load(path.read_text())
    except YAMLError as err:
        raise ParamsError(f"params: {path} is not valid YAML: {err}") from None


def _read_both(path: str | Path) -> tuple[Any, Any]:
    path = Path(path)
    return _read_yaml(path), _read_yaml(path.with_name(RECIPE_FILE))


def read_params_file(path: str | Path = PARAMS_FILE) -> Any:
    """params.yaml and the recipe.yaml beside it as one plain tree, read with the YAML 1.2
    rules DVC uses (`3e-4` is a number)."""
    study, recipe = _read_both(path)
    return _merge_files(study or {}, recipe or {})


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    study, recipe = _read_both(path)
    params = parse_params(_merge_files(study or {}, recipe or {}))
    # After the key and value checks, so a misspelt key is reported as unknown first.
    for tree, in_file in ((study, PARAMS_FILE), (recipe, RECIPE_FILE)):
        key = _misplaced(tree, in_file)
        if key is not None:
            where = (f"-S {RECIPE_FILE}:{key}=..." if in_file == PARAMS_FILE
                     else f"-S {key}=...")
            raise ParamsError(f"params: {key!r} is in {in_file}, but its place is "
                              f"{home_file(key)} ({PARAMS_FILE} holds the study's headline "
                              f"keys: {', '.join(STUDY_KEYS)}; {RECIPE_FILE} every other "
                              f"key); with dvc exp run, change it with {where}")
    return params


def write_params_files(raw: dict, directory: str | Path) -> None:
    """Write a complete params tree as params.yaml and recipe.yaml in `directory`."""
    import yaml

    study, recipe = split_params(raw)
    for name, part in ((PARAMS_FILE, study), (RECIPE_FILE, recipe)):
        Path(directory, name).write_text(yaml.safe_dump(part, sort_keys=False))


def check_sweep_subsamples(params: Params, smallest_class: int) -> None:
    for i, k in enumerate(params.sweep.subsample):
        check_subsample(f"sweep.subsample[{i}]", k, smallest_class)


def check_subsample(key: str, value: int, smallest_class: int) -> None:
    """Refuse a per-class size larger than the smallest class's training part."""
    if value > smallest_class:
        raise fail(key, value, f"0 (all) or at most {smallest_class}, the training images "
                   "of the smallest target class")
