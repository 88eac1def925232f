"""Classical heads on frozen features: linear SVM, logistic regression, random forest.

Features are L2-normalised per image (optionally after a signed power transform).
Every choice of the cost C is made by stratified k-fold cross-validation on the
training part only; the test part is touched once per chosen model, to score it.

Heads:
- `svm`: one binary LinearSVC per class (one-vs-rest), each with its own C
  chosen by CV scored by average precision; a single-label prediction is the
  class with the largest decision value.
- `logreg`: single-label, one multinomial LogisticRegression with C chosen by
  CV accuracy; multi-label, one binary LogisticRegression per label with C per
  label by CV average precision.
- `random_forest`: one forest (default 128 trees) predicting the class, or
  every label at once for multi-label tasks.

Single-label labels are int (N,); multi-label labels are uint8 (N, L), scored by
per-label average precision and their mean (mAP), with test labels marked
`difficult` left out as in the Pascal VOC protocol.

When a training sample is an augmented copy of an image, CV keeps all copies of
one image in the same fold (groups), so validation never sees a near-duplicate
of a training image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HEADS = ("svm", "logreg", "random_forest")
TRANSFORMS = ("l2", "power")


# ---------------------------------------------------------------------------- transforms


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def power_normalise(x: np.ndarray, power: float = 0.5) -> np.ndarray:
    """sign(x) |x|^power, then L2 (the componentwise power transform of CNNaug-SVM)."""
    return l2_normalise(np.sign(x) * np.abs(x) ** power)


def transform_features(x: np.ndarray, transform: str = "l2", power: float = 0.5) -> np.ndarray:
    if transform == "l2":
        return l2_normalise(x)
    if transform == "power":
        if not power > 0:
            raise ValueError(f"heads.power = {power!r}: must be a number > 0")
        return power_normalise(x, power)
    raise ValueError(f"heads.transform = {transform!r}: allowed: " + ", ".join(TRANSFORMS))


# ---------------------------------------------------------------------------- config


@dataclass(frozen=True)
class LowShotConfig:
    """Heads fitted on k images per class, for each k in `shots`, over `draws` draws.

    Draw r uses `nested_subsample(labels, k, seed + r)`, so within one draw the
    k = 1 set lies inside the k = 2 set, and draw 0 is the per-layer heads' draw.
    Empty `shots` turns the protocol off.
    """

    shots: tuple[int, ...] = ()
    draws: int = 5
    heads: tuple[str, ...] = HEADS
    layers: tuple[str, ...] | None = None  # None: every layer the per-layer heads use


@dataclass(frozen=True)
class HeadConfig:
    layers: tuple[str, ...] | None = None  # None: the layers listed in the features' meta.json
    heads: tuple[str, ...] = HEADS
    cv_folds: int = 5
    svm_C: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
    logreg_C: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
    forest_trees: int = 128
    transform: str = "l2"
    power: float = 0.5
    subsample: int = 0  # training images per class for the per-layer heads; 0 = all
    seed: int = 0
    lowshot: LowShotConfig = field(default_factory=LowShotConfig)
    iterations: bool = True  # the (T+1) x T table when per-iteration features exist

    def __post_init__(self):
        for name in self.heads:
            if name not in HEADS:
                raise ValueError(f"heads.heads: {name!r} is not a head; allowed: "
                                 + ", ".join(HEADS))
        for name in self.lowshot.heads:
            if name not in HEADS:
                raise ValueError(f"heads.lowshot.heads: {name!r} is not a head; allowed: "
                                 + ", ".join(HEADS))
        if self.transform not in TRANSFORMS:
            raise ValueError(f"heads.transform = {self.transform!r}: allowed: "
                             + ", ".join(TRANSFORMS))
        if self.cv_folds < 2:
            raise ValueError(f"heads.cv_folds = {self.cv_folds}: must be >= 2")
        if self.lowshot.draws < 1 or any(k < 1 for k in self.lowshot.shots):
            raise ValueError(f"heads.lowshot: shots {list(self.lowshot.shots)} and draws "
                             f"{self.lowshot.draws} must be integers >= 1")

    @classmethod
    def from_params(cls, params) -> HeadConfig:
        """From a `Params` tree; keys the params do not have yet keep their defaults."""
        h = params.heads
        low = getattr(h, "lowshot", None)
        lowshot = LowShotConfig() if low is None else LowShotConfig(
            shots=tuple(getattr(low, "shots", ())), draws=getattr(low, "draws", 5),
            heads=tuple(getattr(low, "heads", HEADS)),
            layers=(tuple(low.layers) if getattr(low, "layers", None) else None))
        return cls(layers=tuple(params.features.layers), heads=tuple(getattr(h, "heads", HEADS)),
                   cv_folds=h.cv_folds, svm_C=tuple(h.svm_C), logreg_C=tuple(h.logreg_C),
                   forest_trees=h.forest_trees, transform=getattr(h, "transform", "l2"),
                   power=getattr(h, "power", 0.5), subsample=params.subsample,
                   seed=params.seed, lowshot=lowshot,
                   iterations=getattr(h, "iterations", True))


# ---------------------------------------------------------------------------- CV


def cv_splits(y: np.ndarray, folds: int, seed: int, groups: np.ndarray | None = None
              ) -> tuple[list[tuple[np.ndarray, np.ndarray]], int, str | None]:
    """(splits, k, note): stratified k-fold splits of the training part.

    k is `folds`, or fewer when the smallest class has fewer images (groups);
    with k < 2 there are no splits and `note` says why.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(y)
    if groups is None:
        smallest = int(np.unique(y, return_counts=True)[1].min())
    else:
        smallest = min(len(np.unique(groups[y == c])) for c in np.unique(y))
    if len(np.unique(y)) < 2:
        return [], 0, "only one class in the training part: no cross-validation"
    k = min(folds, smallest)
    if k < 2:
        return [], 0, f"{smallest} image(s) in the smallest class: no cross-validation"
    dummy = np.zeros(len(y))
    if groups is None:
        cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        return list(cv.split(dummy, y)), k, None
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(cv.split(dummy, y, groups)), k, None


def _choose_c(make, grid: tuple[float, ...], x: np.ndarray, y: np.ndarray, folds: int,
              seed: int, *, groups: np.ndarray | None = None, scoring: str = "accuracy"
              ) -> tuple[float, dict]:
    """Best C by mean CV score (ties go to the smaller C); grid middle if CV can't run."""
    from sklearn.model_selection import cross_val_score

    splits, k, note = cv_splits(y, folds, seed, groups)
    if k == 0:
        chosen = sorted(grid)[len(grid) // 2]
        return chosen, {"cv_folds": 0, "note": f"{note}, C = {chosen} (middle of the grid)"}
    scores = {c: float(cross_val_score(make(c), x, y, cv=splits, scoring=scoring).mean())
              for c in sorted(grid)}
    chosen = max(scores, key=lambda c: (scores[c], -c))
    return chosen, {"cv_folds": k, "cv_scoring": scoring,
                    "cv_score": {str(c): s for c, s in scores.items()}}


# ---------------------------------------------------------------------------- metrics


def average_precisions(y: np.ndarray, scores: np.ndarray, difficult: np.ndarray | None = None
                       ) -> tuple[list[float | None], float, list[str]]:
    """(AP per label, mAP, notes); difficult labels are left out of their label's AP.

    A label without a positive (non-difficult) test image has no AP (None) and
    is left out of the mean.
    """
    from transferlab.metrics import mean_average_precision

    ignore = None if difficult is None else np.asarray(difficult, bool)
    m, per_label = mean_average_precision(y, scores, ignore)
    aps = [None if math.isnan(ap) else ap for ap in per_label]
    notes = [f"label {j}: no positive non-difficult test image, no AP"
             for j, ap in enumerate(aps) if ap is None]
    return aps, m, notes


# ---------------------------------------------------------------------------- heads


def _svm(c: float, seed: int):
    from sklearn.svm import LinearSVC

    # One class against all the others is imbalanced (1 to k-1): without balanced
    # weights a small chosen C pushes every decision value negative and the per-class
    # scores stop being comparable for the argmax (measured on the digits at 5 images
    # per class: 0.49-0.69 accuracy, against 0.89-0.90 balanced).
    return LinearSVC(C=c, max_iter=20000, random_state=seed, class_weight="balanced")


def _logreg(c: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=5000)


def fit_binary_per_class(make, grid, x_train: np.ndarray, y_bin: np.ndarray, x_test: np.ndarray,
                         *, folds: int, seed: int, groups: np.ndarray | None = None
                         ) -> tuple[np.ndarray, list[float | None], list[dict]]:
    """One binary model per column of `y_bin` (N, L), its C chosen by CV average precision.

    Returns (test decision values (N_test, L), C per column, CV info per column).
    A column with a single value in training gets no model and a constant score.
    """
    scores = np.zeros((len(x_test), y_bin.shape[1]))
    chosen: list[float | None] = []
    infos = []
    for j in range(y_bin.shape[1]):
        target = y_bin[:, j].astype(np.int64)
        if len(np.unique(target)) < 2:
            chosen.append(None)
            infos.append({"cv_folds": 0, "note": f"column {j} has only value {target[0]} in "
                          "training: no model, constant score"})
            continue
        c, info = _choose_c(make, grid, x_train, target, folds, seed, groups=groups,
                            scoring="average_precision")
        model = make(c).fit(x_train, target)
        scores[:, j] = model.decision_function(x_test)
        chosen.append(c)
        infos.append(info)
    return scores, chosen, infos


def _per_class_record(chosen, infos, prefix: str) -> dict:
    notes = [f"{prefix} {j}: {info['note']}" for j, info in enumerate(infos) if "note" in info]
    return {"C": chosen, "cv_folds": [info["cv_folds"] for info in infos],
            "cv_score": [info.get("cv_score") for info in infos], "notes": notes}


def _forest_scores(forest, x_test: np.ndarray, n_labels: int) -> np.ndarray:
    """P(label present) per label from a multi-output forest."""
    probas = forest.predict_proba(x_test)
    out = np.zeros((len(x_test), n_labels))
    for j, (p, classes) in enumerate(zip(probas, forest.classes_, strict=True)):
        hit = np.flatnonzero(classes == 1)
        if hit.size:
            out[:, j] = p[:, hit[0]]
    return out


def fit_heads(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
              *, svm_c: tuple[float, ...], logreg_c: tuple[float, ...], trees: int,
              cv_folds: int, seed: int, heads: tuple[str, ...] = HEADS, transform: str = "l2",
              power: float = 0.5, groups: np.ndarray | None = None,
              difficult: np.ndarray | None = None) -> dict[str, dict]:
    """Fit every head on the training part and score it once on the test part.

    y_train int (N,) gives single-label heads scored by accuracy; uint8 (N, L)
    gives multi-label heads scored by per-label AP and mAP (`difficult` (N_test, L)
    marks test labels to leave out). `groups` names the image each training row
    came from, when rows are augmented copies.
    Every record has `metric` ("accuracy" or "mAP") and `score`.
    """
    from sklearn.ensemble import RandomForestClassifier

    x_train = transform_features(x_train, transform, power)
    x_test = transform_features(x_test, transform, power)
    multilabel = y_train.ndim == 2
    results: dict[str, dict] = {}

    def finish(record: dict, test_scores: np.ndarray | None = None, pred=None) -> dict:
        if multilabel:
            aps, m, notes = average_precisions(y_test, test_scores, difficult)
            record.update(metric="mAP", score=m, mAP=m, ap_per_class=aps)
            record["notes"] = record.get("notes", []) + notes
        else:
            acc = float(np.mean(pred == y_test))
            record.update(metric="accuracy", score=acc, test_accuracy=acc)
        return record

    if multilabel:
        classes = None
        y_bin = y_train
    else:
        classes = np.unique(y_train)
        y_bin = (y_train[:, None] == classes[None, :]).astype(np.int64)
    prefix = "label" if multilabel else "class"

    if "svm" in heads:
        scores, chosen, infos = fit_binary_per_class(
            lambda c: _svm(c, seed), svm_c, x_train, y_bin, x_test, folds=cv_folds, seed=seed,
            groups=groups)
        pred = None if multilabel else classes[np.argmax(scores, axis=1)]
        results["svm"] = finish(_per_class_record(chosen, infos, prefix), scores, pred)
    if "logreg" in heads:
        if multilabel:
            scores, chosen, infos = fit_binary_per_class(
                _logreg, logreg_c, x_train, y_bin, x_test, folds=cv_folds, seed=seed,
                groups=groups)
            results["logreg"] = finish(_per_class_record(chosen, infos, prefix), scores)
        else:
            c, info = _choose_c(_logreg, logreg_c, x_train, y_train, cv_folds, seed,
                                groups=groups)
            model = _logreg(c).fit(x_train, y_train)
            record = {"C": c, **info}
            record["notes"] = [record.pop("note")] if "note" in record else []
            results["logreg"] = finish(record, pred=model.predict(x_test))
    if "random_forest" in heads:
        forest = RandomForestClassifier(n_estimators=trees, random_state=seed, n_jobs=1)
        forest.fit(x_train, y_train)
        record = {"n_estimators": trees}
        if multilabel:
            results["random_forest"] = finish(
                record, _forest_scores(forest, x_test, y_train.shape[1]))
        else:
            results["random_forest"] = finish(record, pred=forest.predict(x_test))
    return results


def _head_kwargs(cfg: HeadConfig) -> dict:
    return {"svm_c": cfg.svm_C, "logreg_c": cfg.logreg_C, "trees": cfg.forest_trees,
            "cv_folds": cfg.cv_folds, "transform": cfg.transform, "power": cfg.power}


# ---------------------------------------------------------------------------- feature files


@dataclass
class FeatureSplit:
    """One features npz: rows, labels, and for training rows the image each came from."""

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray  # row of the image in the target's part (training: with copies)
    copy: np.ndarray  # 0 = the image itself, j >= 1 = its j-th augmented copy
    difficult: np.ndarray | None = None

    @property
    def multilabel(self) -> bool:
        return self.y.ndim == 2

    @property
    def augmented(self) -> bool:
        return bool(self.copy.size and self.copy.max() > 0)

    def image_labels(self) -> np.ndarray:
        """Labels of the original images, in image order (what nested_subsample draws from)."""
        orig = self.copy == 0
        labels = np.empty((int(self.index.max()) + 1, *self.y.shape[1:]), self.y.dtype)
        labels[self.index[orig]] = self.y[orig]
        return labels

    def rows_of_images(self, images: np.ndarray) -> np.ndarray:
        """Row indices of the given images and of their augmented copies."""
        return np.flatnonzero(np.isin(self.index, images))

    def take(self, rows: np.ndarray) -> FeatureSplit:
        d = None if self.difficult is None else self.difficult[rows]
        return FeatureSplit(self.x[rows], self.y[rows], self.index[rows], self.copy[rows], d)


def load_split(path: str | Path) -> FeatureSplit:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `dvc repro features` first")
    with np.load(path) as z:
        x, y = z["x"], z["y"]
        index = z["index"] if "index" in z else np.arange(len(x))
        copy = z["copy"] if "copy" in z else np.zeros(len(x), np.int16)
        difficult = z["difficult"] if "difficult" in z else None
    return FeatureSplit(x, y, index, copy, difficult)


def _groups(train: FeatureSplit) -> np.ndarray | None:
    return train.index if train.augmented else None


def _subsample_rows(train: FeatureSplit, per_class: int, seed: int) -> np.ndarray:
    from transferlab.data.split import nested_subsample

    images = nested_subsample(train.image_labels(), per_class, seed)
    return train.rows_of_images(images)


def _check_per_class(key: str, k: int, train: FeatureSplit) -> None:
    from transferlab.params import check_subsample

    check_subsample(key, k, int(np.bincount(train.image_labels()).min()))


def fit_layer(train: FeatureSplit, test: FeatureSplit, cfg: HeadConfig,
              heads: tuple[str, ...] | None = None, per_class: int | None = None,
              seed: int | None = None) -> dict:
    """Heads on one layer's features, on `per_class` training images per class (0 = all)."""
    per_class = cfg.subsample if per_class is None else per_class
    seed = cfg.seed if seed is None else seed
    notes = []
    if train.multilabel and per_class:
        notes.append(f"subsample {per_class} applies to single-label tasks; all "
                     f"{int(train.index.max()) + 1} training images used")
    elif per_class:
        train = train.take(_subsample_rows(train, per_class, seed))
    results = fit_heads(train.x, train.y, test.x, test.y, **_head_kwargs(cfg), seed=cfg.seed,
                        heads=heads or cfg.heads, groups=_groups(train),
                        difficult=test.difficult)
    for record in results.values():
        record["train_rows"] = len(train.y)
        record.setdefault("notes", [])
        record["notes"] = notes + record["notes"]
    return results


# ---------------------------------------------------------------------------- low-shot


def lowshot(train: FeatureSplit, test: FeatureSplit, cfg: HeadConfig) -> dict:
    """{head: {k: {mean, std, scores, seeds}}} over `cfg.lowshot.draws` draws per k.

    std is the population standard deviation (ddof 0) of the draws' scores.
    """
    low = cfg.lowshot
    if train.multilabel:
        raise ValueError("heads.lowshot: k images per class is defined for single-label "
                         "tasks only; set heads.lowshot.shots to [] for multi-label data")
    for k in low.shots:
        _check_per_class("heads.lowshot.shots", k, train)
    seeds = [cfg.seed + r for r in range(low.draws)]
    out: dict[str, dict] = {h: {} for h in low.heads}
    for k in low.shots:
        per_draw = [fit_layer(train, test, cfg, low.heads, per_class=k, seed=s) for s in seeds]
        for h in low.heads:
            scores = [r[h]["score"] for r in per_draw]
            notes = sorted({n for r in per_draw for n in r[h]["notes"]})
            out[h][str(k)] = {"mean": float(np.mean(scores)), "std": float(np.std(scores)),
                              "scores": scores, "seeds": seeds, "notes": notes}
    return out


# ---------------------------------------------------------------------------- iterations


def iteration_table(train: list[FeatureSplit], test: list[FeatureSplit], *,
                    logreg_c: tuple[float, ...], cv_folds: int, seed: int,
                    transform: str = "l2", power: float = 0.5) -> dict:
    """Seed 000 Fig. 4: logistic regression fitted on each iteration and on all together.

    Row t (t = 1..T) is fitted on iteration t's training features, row "all" on
    every iteration's training rows stacked (CV folds keep one image's rows
    together); each row is tested on every iteration: a (T+1) x T accuracy table.
    """
    if len(train) != len(test) or not train:
        raise ValueError(f"iteration_table: {len(train)} training and {len(test)} test "
                         "iterations; need the same number, at least one")
    if train[0].multilabel:
        raise ValueError("iteration_table: the per-iteration table is for single-label tasks")
    t_count = len(train)
    xs_test = [transform_features(s.x, transform, power) for s in test]
    xs_train = [transform_features(s.x, transform, power) for s in train]
    rows = [f"iter{t}" for t in range(1, t_count + 1)]
    fits = [(xs_train[t], train[t].y, _groups(train[t])) for t in range(t_count)]
    fits.append((np.concatenate(xs_train), np.concatenate([s.y for s in train]),
                 np.concatenate([s.index for s in train])))
    table, chosen, notes = [], {}, []
    for name, (x, y, groups) in zip([*rows, "all"], fits, strict=True):
        c, info = _choose_c(_logreg, logreg_c, x, y, cv_folds, seed, groups=groups)
        if "note" in info:
            notes.append(f"{name}: {info['note']}")
        model = _logreg(c).fit(x, y)
        chosen[name] = c
        table.append([float(model.score(xt, s.y)) for xt, s in zip(xs_test, test, strict=True)])
    return {"rows": [*rows, "all"], "columns": rows, "accuracy": table, "C": chosen,
            "notes": notes}


def iteration_names(features_dir: str | Path) -> list[str]:
    """iter1..iterT present in a features directory (empty for single-iteration models)."""
    names = []
    while (Path(features_dir) / f"iter{len(names) + 1}" / "train.npz").exists():
        names.append(f"iter{len(names) + 1}")
    return names if len(names) > 1 else []


# ---------------------------------------------------------------------------- stage


def _layers_of(features_dir: Path, cfg: HeadConfig) -> list[str]:
    if cfg.layers is not None:
        return list(cfg.layers)
    import json

    meta = features_dir / "meta.json"
    if not meta.exists():
        raise FileNotFoundError(f"{meta} is missing; run `dvc repro features` first")
    return list(json.loads(meta.read_text())["layers"])


def fit_heads_per_layer(params, *, features_dir, out, config: HeadConfig | None = None,
                        lowshot_out=None, iterations_out=None) -> dict:
    """Every head on every layer; writes `out` as {layer: {head: record}}.

    With `heads.lowshot.shots`, also the low-shot curves ({layer: {head: {k: ...}}})
    and, when the features hold iter1..iterT, the per-iteration table; each is
    written to its own path when given. Returns {"layers", "lowshot", "iterations"}.
    """
    from transferlab.io import write_json_atomic
    from transferlab.stage import compute

    cfg = config or HeadConfig.from_params(params)
    features_dir = Path(features_dir)
    results: dict[str, dict] = {}
    low: dict[str, dict] = {}
    low_layers = cfg.lowshot.layers
    low_note = None if cfg.lowshot.shots else "heads.lowshot.shots is empty: no low-shot run"
    for layer in _layers_of(features_dir, cfg):
        train = load_split(features_dir / layer / "train.npz")
        test = load_split(features_dir / layer / "test.npz")
        if cfg.subsample and not train.multilabel:
            _check_per_class("subsample", cfg.subsample, train)
        if train.multilabel and cfg.lowshot.shots:
            low_note = "k images per class is defined for single-label tasks; low-shot skipped"
        with compute():
            results[layer] = fit_layer(train, test, cfg)
            if low_note is None and (low_layers is None or layer in low_layers):
                low[layer] = lowshot(train, test, cfg)
        scores = ", ".join(f"{h} {r['metric']} {r['score']:.3f}"
                           for h, r in results[layer].items())
        print(f"heads {layer}: {scores}")
    write_json_atomic(out, results)
    # Both side files are always written (DVC outputs), with a note when there is nothing.
    summary = {"shots": list(cfg.lowshot.shots), "draws": cfg.lowshot.draws, "layers": low}
    if low_note is not None:
        summary = {"note": low_note, "layers": {}}
    if lowshot_out is not None:
        write_json_atomic(lowshot_out, summary)
    low = summary if low else None
    table = {"note": "single-iteration network: no per-iteration table"}
    iters = iteration_names(features_dir) if cfg.iterations else []
    if iters:
        train = [load_split(features_dir / n / "train.npz") for n in iters]
        test = [load_split(features_dir / n / "test.npz") for n in iters]
        if train[0].multilabel:
            table = {"note": "the per-iteration table is for single-label tasks; skipped"}
        else:
            if cfg.subsample:
                rows = _subsample_rows(train[0], cfg.subsample, cfg.seed)
                train = [s.take(rows) for s in train]
            with compute():
                table = iteration_table(train, test, logreg_c=cfg.logreg_C,
                                        cv_folds=cfg.cv_folds, seed=cfg.seed,
                                        transform=cfg.transform, power=cfg.power)
            print(f"heads per iteration: rows {table['rows']}, diagonal "
                  f"{[round(table['accuracy'][t][t], 3) for t in range(len(iters))]}")
    if iterations_out is not None:
        write_json_atomic(iterations_out, table)
    return {"layers": results, "lowshot": low, "iterations": table}
