"""The transferability stage: every estimator (`transferlab.transferability.estimators`)
on every feature layer of model A, at every target size and seed of the sweep, on
exactly the images the sweep trains on; plus the per-network NCE / LEEP and the source
task's own accuracy per layer. Scoring against the sweep happens in the report
(`transferlab.transferability.scoring`).

The features store holds the whole target training part; the images of sweep variant
(k, seed) are `nested_subsample(labels, k, seed)` of it (`heads_fitting.subsample_rows`,
the draw `TaskData.subsampled` makes for training), augmented copies left out.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from transferlab.config.params import Params
from transferlab.data.prepared import TaskData, center_cropped
from transferlab.features.budget import check_budget, transferability_peak
from transferlab.features.store import load_split, split_path, split_shape
from transferlab.heads.fit import subsample_rows
from transferlab.progress import progress_bar
from transferlab.transferability import estimators as est

SOURCE_ACCURACY = "source accuracy"
MEASURES = {
    "knn": "leave-one-out k-NN accuracy (cosine, transferability.knn_neighbours)",
    "logme": "LogME, You et al. 2021: maximised evidence per image, mean over classes",
    "hscore": "H-score, Bao et al. 2019, Ledoit-Wolf shrunk covariance (Ibrahim et al. 2022)",
    "transrate": "TransRate, Huang et al. 2022: coding rate minus class-conditional rate",
    "gbc": "GBC, Pandy et al. 2022: minus summed Bhattacharyya coefficients of class pairs",
    "sfda": "SFDA, Shao et al. 2022: mean log-likelihood of the labels in a regularised "
            "Fisher space after ConfMix (transferability.sfda_shrinkage_rate)",
    "linear_probe": "the logreg head's best cross-validated accuracy (heads.logreg.C)",
    SOURCE_ACCURACY: "nearest class mean accuracy of the layer on the source task's test "
                     "images (what the layer does for its own task)",
    "nce": "NCE, Tran et al. 2019: -H(target label | source prediction); whole network",
    "leep": "LEEP, Nguyen et al. 2020: log expected empirical prediction; whole network",
}


def layer_scores(x: torch.Tensor, y: torch.Tensor, params: Params, seed: int) -> dict:
    """Every layer estimator on one layer's features of one (k, seed) draw."""
    cfg = params.transferability
    # GBC and SFDA both work in the principal axes of the centred features: one
    # eigendecomposition for the two (about 11 s of a 5,000 x 9,216 draw's 62,
    # benchmarks/estimators_at_scale.py).
    span = est.span_coordinates(x)
    scores = {
        "knn": est.knn_loo_accuracy(x, y, cfg.knn_neighbours),
        "logme": est.logme(x, y),
        "hscore": est.hscore(x, y),
        "transrate": est.transrate(x, y, cfg.transrate_eps2),
        "gbc": est.gbc(x, y, cfg.gbc_dims, span),
        "sfda": est.sfda(x, y, cfg.sfda_shrinkage_rate, span),
    }
    del span
    if cfg.linear_probe:
        scores["linear_probe"] = est.linear_probe_cv_accuracy(x.cpu().numpy(), y.cpu().numpy(),
                                                              params.heads, seed)
    return scores


def draw_rows(train, k: int, seed: int) -> np.ndarray:
    """Rows of a layer's stored training part that sweep variant (k, seed) trains on: the
    images, not their augmented copies."""
    rows = subsample_rows(train, k, seed)
    return rows[train.copy[rows] == 0]


def load_source_network(path: Path, params: Params, source: TaskData, device
                        ) -> tuple[torch.nn.Module, bool]:
    """Model A with its own head (the source classes), for NCE / LEEP, and whether that
    head was trained (not so for arch pretrained: a new head on the loaded network)."""
    from transferlab.models import build_model
    from transferlab.training.variant import input_shape

    state = torch.load(path, map_location=device, weights_only=True)
    model = build_model(params.arch, input_shape(params, source.image_shape),
                        source.num_classes, **params.model_kwargs)
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval(), state.get("meta", {}).get("head_trained", True)


@torch.no_grad()
def _batched(fn, x: torch.Tensor, batch_size: int = 512) -> list:
    return [fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]


@torch.no_grad()
def source_layer_accuracy(model, source: TaskData, layers: list[str], per_class: int, seed: int,
                          device, *, pool: str = "flatten", max_dim: int | None = None
                          ) -> dict[str, float]:
    """Nearest-class-mean accuracy of each layer on the source task: class means from at
    most `per_class` source training images per class (0 = all), tested on the source
    test part. The layers are reduced as the features store holds them (`pool`,
    `max_dim`: `reduce_activation`).

    Batch by batch: float64 only for one batch's rows and the (classes x D) sums and
    means, never for a whole part's (N x D) activations."""
    from transferlab.features.extract import reduce_activation
    from transferlab.training.loop import to_tensor

    smallest = int(np.bincount(source.y_train).min())
    # at most `per_class`: a small source class gives what it has
    train = source.subsampled(min(per_class, smallest) if per_class else 0, seed)

    def batches(images, labels):
        x = to_tensor(images, source.pixel_max, device, source.mean, source.std)
        y = torch.as_tensor(labels, device=device)
        for i in range(0, len(x), 512):
            acts = model.activations(x[i:i + 512], layers)
            yield ({la: reduce_activation(acts[la], pool, max_dim).double() for la in layers},
                   y[i:i + 512])

    sums: dict[str, torch.Tensor] = {}
    counts = torch.zeros(source.num_classes, dtype=torch.float64, device=device)
    for acts, y in batches(train.x_train, train.y_train):
        onehot = torch.nn.functional.one_hot(y, source.num_classes).double()
        counts += onehot.sum(0)
        for la in layers:
            part = onehot.T @ acts[la]
            sums[la] = part if la not in sums else sums[la] + part
    means = {la: sums[la] / counts[:, None] for la in layers}
    correct = dict.fromkeys(layers, 0)
    for acts, y in batches(source.x_test, source.y_test):
        for la in layers:
            correct[la] += int((torch.cdist(acts[la], means[la]).argmin(1) == y).sum())
    return {la: correct[la] / len(source.y_test) for la in layers}


def compute_transferability(params: Params, *, features_dir: Path, prepared: Path,
                            model_path: Path, out: Path) -> dict:
    """Write `out`: {layer estimator: {k: {seed: {layer: score}}}, NCE / LEEP per (k, seed),
    source accuracy per layer, timings}."""
    from transferlab.io import write_json_atomic
    from transferlab.timing import compute
    from transferlab.training.loop import pick_device, to_tensor

    cfg = params.transferability
    names = list(params.layer_names)
    result: dict = {"measures": MEASURES, "sizes": list(params.sweep.subsample),
                    "seeds": list(params.sweep.seeds)}
    if params.features.source_model != "A":
        result["note"] = ("features come from a torchvision model, whose layers are not the "
                          "sweep's n: nothing to rank")
        write_json_atomic(out, result)
        return result
    layers = sorted(params.features.layers, key=names.index)
    y_first, copy_first = _labels(features_dir, layers[0])
    if y_first.ndim == 2:
        result["note"] = ("multi-label target: the estimators are defined for one label per "
                          "image; nothing to rank")
        write_json_atomic(out, result)
        return result
    result["layers"] = layers
    result["positions"] = {layer: names.index(layer) + 1 for layer in layers}
    shapes = {layer: split_shape(features_dir, layer, "train") for layer in layers}
    result["dims"] = {layer: shapes[layer][1] for layer in layers}  # as stored (features.max_dim)
    check_budget("transferability", {
        layer: transferability_peak(d, r, _largest_draw(y_first, copy_first,
                                                        params.sweep.subsample))
        for layer, (r, d) in shapes.items()}, params.features.memory_gb)
    device = pick_device()
    before = torch.get_num_threads()
    if cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    try:
        with compute():
            started = time.perf_counter()
            scores: dict = {}
            draws = [(k, seed) for k in params.sweep.subsample for seed in params.sweep.seeds]
            bar = progress_bar(total=len(layers) * len(draws), desc="transferability",
                               unit="draw")
            # One layer in memory at a time (its training part only); the JSON keys come
            # out in the same order as looping over layers innermost.
            for layer in layers:
                train = load_split(split_path(features_dir, layer, "train"))
                for k, seed in draws:
                    rows = draw_rows(train, k, seed)
                    x = torch.as_tensor(train.x[rows], device=device)
                    y = torch.as_tensor(train.y[rows], device=device)
                    for name, value in layer_scores(x, y, params, seed).items():
                        # undefined (SFDA with one image per class): null, not a bare NaN
                        scores.setdefault(name, {}).setdefault(str(k), {}).setdefault(
                            str(seed), {})[layer] = None if math.isnan(value) else value
                    bar.update()
                del train
            bar.close()
            result["layer_scores"] = scores
            result["layer_seconds"] = time.perf_counter() - started

            started = time.perf_counter()
            source = center_cropped(TaskData.load(Path(prepared) / "source.npz"),
                                    params.data.crop)
            target = center_cropped(TaskData.load(Path(prepared) / "target.npz"),
                                    params.data.crop)
            model, head_trained = load_source_network(model_path, params, source, device)
            if source.multilabel:
                result["source_note"] = "multi-label source: no nearest-class-mean accuracy"
            else:
                result["source_accuracy"] = source_layer_accuracy(
                    model, source, layers, cfg.source_images_per_class, params.seed, device,
                    pool=params.features.pool, max_dim=params.features.max_dim)
            network: dict = {"nce": {}, "leep": {}}
            if target.multilabel:
                result["network_note"] = "NCE and LEEP need single-label targets: skipped"
            elif not head_trained:
                result["network_note"] = ("NCE and LEEP need model A's predictions of the "
                                          "source classes; a pretrained network's head here "
                                          "is new and untrained: skipped")
            else:
                xt = to_tensor(target.x_train, target.pixel_max, device, target.mean,
                               target.std)
                probs = torch.cat(_batched(lambda b: torch.softmax(model(b).double(), 1), xt))
                for k in params.sweep.subsample:
                    for seed in params.sweep.seeds:
                        rows = torch.as_tensor(_subsample_index(target, k, seed), device=device)
                        y = torch.as_tensor(target.y_train, device=device)[rows]
                        network["nce"].setdefault(str(k), {})[str(seed)] = est.nce(probs[rows], y)
                        network["leep"].setdefault(str(k), {})[str(seed)] = est.leep(probs[rows],
                                                                                      y)
            result["network_scores"] = network
            result["network_seconds"] = time.perf_counter() - started
    finally:
        torch.set_num_threads(before)
    write_json_atomic(out, result)
    print(f"transferability: {len(layers)} layers x {len(params.sweep.subsample)} sizes x "
          f"{len(params.sweep.seeds)} seeds in {result['layer_seconds']:.2f} s "
          f"(+ {result['network_seconds']:.2f} s for the source network's scores)")
    return result


def _labels(features_dir: Path, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """(y, copy) of a layer's training part, read without its features."""
    with np.load(split_path(features_dir, layer, "train")) as z:
        return z["y"], z["copy"]


def _largest_draw(y: np.ndarray, copy: np.ndarray, sizes) -> int:
    """Rows of the largest (k, seed) draw: k images per class (all images at k = 0)."""
    images = int((copy == 0).sum())
    classes = len(np.unique(y))
    return min(images, max(k * classes if k else images for k in sizes))


def _subsample_index(task: TaskData, k: int, seed: int) -> np.ndarray:
    """Row indices of the training images `TaskData.subsampled(k, seed)` keeps."""
    from transferlab.data.split import nested_subsample

    return nested_subsample(task.y_train, k, seed)
