"""Ranking candidate source networks on one target (stage rank_sources), as the LogME
paper's protocol does (You et al. 2021, "LogME: Practical Assessment of Pre-trained
Models for Transfer Learning", ICML).

Each candidate of `ranking.candidates` (a torchvision or timm network and its weights,
transferlab.models.hub) sees the prepared target images as its weights expect them:
RGB, square at the weights' crop size (or `data.image_size` when set, as prepare sizes
arch pretrained), normalised with the weights' mean and std. Its activations at every
derived layer on the target training images (at most `ranking.subsample` per class,
drawn with `seed`), reduced as the features store holds them (`features.pool`,
`features.max_dim`), are scored by each estimator of `ranking.estimators`; a candidate's
score is taken at its last layer (the new head's input, what LogME scores) and at its
best layer (the layer where that estimator scores highest).

The measured result (`ranking.finetune`): the candidate trained on the same images by
the one loop (transferlab.training.loop.fit) under one of the project's treatments of
every layer (transferlab.models.treatments): FT (full fine-tuning, AnB+ at n = all
layers), LP (linear probe, AnB at n = all) or LP-FT, with transfer's recipe and budget
(`transfer.layer_decay` and `transfer.l2sp` included), then its accuracy on the whole
target test part. `transfer.layer_lr_mult` names the study's layers, not a candidate's,
so it does not apply here; nor do the study's train-time crops and mirrors (`data.crop`,
`data.flip`), which are in the prepared images' pixels. Per estimator, the candidates'
ranking by score is compared with
their ranking by measured accuracy by the weighted Kendall tau of
`scipy.stats.weightedtau` (`scoring.weighted_tau`), at the last and at the best layer.

Cost, per candidate: one forward pass over the scored images holding every layer's
features at once (layers x images x at most `features.max_dim` float32 values), the
estimators on each layer, and one transfer run. No store is kept: the stage's output is
DVC-cached, and DVC hashes the weights files (under `${data.root}`, a declared dependency).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from transferlab.config.params import Params
from transferlab.config.spec import ConfigurationError, fail
from transferlab.data.prepared import TaskData
from transferlab.io import file_digest, write_json_atomic
from transferlab.transferability.scoring import weighted_tau

AT = ("last", "best")  # where a candidate's score is taken


def estimator_score(name: str, x, y, params: Params) -> float | None:
    """One estimator of `ranking.estimators` on one layer's features; None where it is
    undefined (SFDA without within-class spread)."""
    from transferlab.transferability import estimators as est

    cfg = params.transferability
    if name == "knn":
        value = est.knn_loo_accuracy(x, y, cfg.knn_neighbours)
    elif name == "logme":
        value = est.logme(x, y)
    elif name == "hscore":
        value = est.hscore(x, y)
    elif name == "transrate":
        value = est.transrate(x, y, cfg.transrate_eps2)
    elif name == "gbc":
        value = est.gbc(x, y, cfg.gbc_dims)
    else:
        value = est.sfda(x, y, cfg.sfda_shrinkage_rate)
    return None if math.isnan(value) else float(value)


def candidate_labels(candidates) -> list[str]:
    """What the tables call each candidate: its name, and its weights file's name where
    two candidates share a name (two checkpoints of one architecture)."""
    names = [c["name"] for c in candidates]
    return [c["name"] if names.count(c["name"]) == 1
            else f"{c['name']} ({Path(c['weights']).name if c['weights'] else 'cache'})"
            for c in candidates]


def _key(i: int) -> str:
    return f"ranking.candidates[{i}]"


def load_candidate(i: int, candidate: dict, num_classes: int):
    """(the network with its weights and a new head, where the weights came from). A name
    the library does not know, a missing or wrong weights file, or weights neither in the
    library's cache nor downloadable are refused naming the candidate's key."""
    from transferlab.models.hub import build_hub_model, parse_hub_name
    from transferlab.models.pretrained import where_to_get

    name, weights = candidate["name"], candidate["weights"]
    try:
        parse_hub_name(name)
    except (ValueError, ImportError) as err:
        raise fail(f"{_key(i)}.name", name, f"a model the library has ({err})") from None
    then = (f" and put the file under data.root, then give its path as {_key(i)}.weights")
    if weights is not None and not Path(weights).is_file():
        raise ConfigurationError(f"params: {_key(i)}.weights = {weights!r}: no such file. "
                                 f"{where_to_get(name).capitalize()}{then}")
    try:
        model = build_hub_model(name, num_classes, weights)
    except ValueError as err:  # a file that is not this network's state dict
        raise ConfigurationError(f"params: {_key(i)}.weights = {weights!r} cannot be "
                                 f"loaded into {name}: {err}") from err
    except (OSError, RuntimeError) as err:  # weights null: not cached, and offline
        why = (str(err).splitlines() or [type(err).__name__])[0]
        raise ConfigurationError(
            f"params: {_key(i)}.weights = null: the weights of {name} are not in the "
            f"library's cache and cannot be downloaded here ({why}). "
            f"{where_to_get(name).capitalize()}{then}") from err
    if weights is not None:
        origin = {"weights": weights, "sha256": file_digest(weights)}
    else:
        from transferlab.models.hub import weights_origin

        url, digest = weights_origin(name)
        origin = {"weights": None, "url": url, "hash": digest}
    return model, origin


def candidate_task(task: TaskData, name: str, image_size: int | None) -> tuple[TaskData, dict]:
    """`task` as the weights of `name` take it (RGB, square at their crop size or at
    `image_size`, their mean and std), and what was done."""
    from transferlab.data.readers import convert_images
    from transferlab.models.hub import hub_preprocessing

    prep = hub_preprocessing(name)
    size = image_size or prep.crop
    converted = dataclasses.replace(
        task, x_train=convert_images(task.x_train, 3, (size, size)),
        x_test=convert_images(task.x_test, 3, (size, size)), mean=prep.mean, std=prep.std)
    return converted, {"size": size, "weights_crop": prep.crop, "mean": list(prep.mean),
                       "std": list(prep.std)}


def layer_features(model, task: TaskData, params: Params, device) -> dict[str, np.ndarray]:
    """{layer: (N, D) float32} of every layer of `model` on `task`'s training images."""
    from transferlab.features.extract import own_model_features, run_batches

    f = params.features
    fn = own_model_features(model.eval(), task.pixel_max, list(model.layer_names),
                            iterations=False, device=device, mean=task.mean, std=task.std)
    return run_batches(fn, task.x_train, f.batch_size, f.pool, f.max_dim)


def fine_tune(params: Params, name: str, source, task: TaskData, device) -> dict:
    """The candidate's measured result: the network with a new head (seeded by `seed`)
    given every layer of `source` under the treatment `ranking.finetune` (FT, LP or
    LP-FT), trained on `task` by the one loop with transfer's recipe and budget, as a
    sweep variant of that treatment is (`variant.setup_variant`), and its accuracy on
    `task`'s test part.

    A copy of the candidate as loaded, not the library's untrained build, takes the
    layers: googlenet and inception_v3 are built with their input transform only for
    pretrained weights (transferlab.models.hub), and the copy keeps it."""
    import copy

    import torch

    from transferlab.models.surgery import apply_treatment
    from transferlab.models.treatments import TREATMENTS
    from transferlab.training.loop import Batches, evaluate, fit, seed_everything, task_tensors
    from transferlab.training.variant import l2sp_penalty, lp_ft_head_steps, make_objective

    cfg = params.transfer
    treatment = params.ranking.finetune
    seed_everything(params.seed)
    model = copy.deepcopy(source)
    model.head = torch.nn.Linear(model.embed_dim, task.num_classes).to(device)
    n = len(model.layer_names)
    steps = cfg.budget(len(task.y_train))
    lr_mult, head_steps = cfg.lr_mult, 0
    if TREATMENTS[treatment].head_first:  # LP-FT: its own phase-2 rate and phase 1
        lr_mult, head_steps = cfg.lp_ft.lr_mult, lp_ft_head_steps(cfg.lp_ft.head_share, steps)
    plan = apply_treatment(model, treatment, n, {"A": source}, cfg.lr, lr_mult,
                           layer_lr_mult={}, frozen_dropout=cfg.frozen_dropout,
                           layer_decay=cfg.layer_decay, head_steps=head_steps)
    t = task_tensors(task, device)
    history = fit(model, Batches(t["x_train"], t["y_train"], cfg.batch_size, params.seed),
                  cfg, param_groups=plan.param_groups, frozen=plan.frozen, steps=steps,
                  progress=False, desc=name, objective=make_objective(False, cfg.gamma),
                  penalty=l2sp_penalty(plan, cfg.l2sp.alpha, cfg.l2sp.beta),
                  head_first=plan.head_first)
    result = evaluate(model, t["x_test"], t["y_test"])
    return {"treatment": treatment, "n": n, "steps": steps,
            "test_accuracy": result["accuracy"], "test_loss": result["loss"],
            "final_train_loss": history[-1]["train_loss"]}


def rank_candidate(i: int, candidate: dict, task: TaskData, params: Params, device) -> dict:
    """Scores at every layer, last and best, and the measured result of one candidate."""
    import torch

    started = time.perf_counter()
    name = candidate["name"]
    model, origin = load_candidate(i, candidate, task.num_classes)
    model = model.to(device)
    seen, given = candidate_task(task, name, params.data.image_size)
    try:
        feats = layer_features(model, seen, params, device)
    except RuntimeError as err:  # e.g. a pooling window larger than a deep layer's map
        if given["size"] == given["weights_crop"]:
            raise
        raise ConfigurationError(
            f"params: data.image_size = {given['size']}: {_key(i)} ({name}) cannot take "
            f"images this small ({(str(err).splitlines() or [''])[0]}); set it larger, or "
            f"null for the weights' own {given['weights_crop']} px") from err
    extracted = time.perf_counter()
    layers = list(model.layer_names)
    y = torch.as_tensor(seen.y_train, device=device)
    scores: dict[str, dict[str, float | None]] = {}
    for layer in layers:
        x = torch.as_tensor(feats[layer], device=device)
        for est in params.ranking.estimators:
            scores.setdefault(est, {})[layer] = estimator_score(est, x, y, params)
    del feats
    scored = time.perf_counter()
    best = {}
    for est, by_layer in scores.items():
        defined = {la: v for la, v in by_layer.items() if v is not None}
        top = max(defined, key=defined.get) if defined else None  # first layer on a tie
        best[est] = {"layer": top, "score": defined.get(top)}
    entry = {"name": name, **origin, "input": given, "layers": layers,
             "scores": scores, "last": {est: s[layers[-1]] for est, s in scores.items()},
             "best": best}
    if params.ranking.finetune != "none":
        entry["finetune"] = fine_tune(params, name, model, seen, device)
    entry["seconds"] = {"features": extracted - started, "estimators": scored - extracted,
                        "finetune": time.perf_counter() - scored}
    return entry


def ranking_taus(entries: list[dict], estimators) -> tuple[dict, dict]:
    """({estimator: {last, best: weighted tau}}, {estimator: {last, best: labels in score
    order}}): each estimator's ranking of the candidates against their measured one.
    A candidate without a score there is left out of that tau; None with fewer than two."""
    taus: dict[str, dict[str, Any]] = {}
    orders: dict[str, dict[str, list[str]]] = {}
    for est in estimators:
        for at in AT:
            pairs = [(e["label"], e[at][est] if at == "last" else e[at][est]["score"],
                      e.get("finetune", {}).get("test_accuracy")) for e in entries]
            scored = [p for p in pairs if p[1] is not None]
            orders.setdefault(est, {})[at] = [p[0] for p in
                                              sorted(scored, key=lambda p: -p[1])]
            both = [p for p in scored if p[2] is not None]
            tau = weighted_tau([p[1] for p in both], [p[2] for p in both]) \
                if len(both) >= 2 else None
            taus.setdefault(est, {})[at] = None if tau is None or math.isnan(tau) else tau
    return taus, orders


def rank_sources(params: Params, *, prepared: Path, out: Path) -> dict:
    """Write `out`: per candidate its scores and measured result, and per estimator the
    weighted tau of its ranking against the measured one (nothing to rank: a note)."""
    cfg = params.ranking
    result: dict[str, Any] = {"requested": len(cfg.candidates), "candidates": []}
    if not cfg.candidates:
        result["note"] = "no candidates (ranking.candidates is empty): nothing to rank"
        write_json_atomic(out, result)
        print(f"rank_sources: {result['note']}")
        return result
    target = TaskData.load(Path(prepared) / "target.npz")
    if target.multilabel:
        result["note"] = ("multi-label target: the estimators are defined for one label per "
                          "image; nothing to rank")
        write_json_atomic(out, result)
        return result
    # torch only now: with no candidates the stage stays a light one
    from transferlab.timing import compute
    from transferlab.training.loop import pick_device
    from transferlab.transferability.compute import MEASURES

    # at most `subsample` per class: a small class gives what it has
    smallest = target.smallest_train_class()
    per_class = min(cfg.subsample, smallest) if cfg.subsample else 0
    task = target.subsampled(per_class, params.seed)
    device = pick_device()
    labels = candidate_labels(cfg.candidates)
    with compute():
        entries = []
        for i, candidate in enumerate(cfg.candidates):
            entry = {"label": labels[i], **rank_candidate(i, candidate, task, params, device)}
            entries.append(entry)
            print(f"rank_sources: {entry['label']}: {len(entry['layers'])} layers scored"
                  + (f", fine-tuned test accuracy {entry['finetune']['test_accuracy']:.3f}"
                     if "finetune" in entry else ""))
    taus, orders = ranking_taus(entries, cfg.estimators)
    measured = [e["label"] for e in sorted(
        entries, key=lambda e: -e["finetune"]["test_accuracy"])] if cfg.finetune != "none" \
        else None
    result.update({
        "candidates": entries, "estimators": list(cfg.estimators),
        "measures": {est: MEASURES[est] for est in cfg.estimators},
        "finetune": cfg.finetune, "treatment": None if cfg.finetune == "none" else cfg.finetune,
        "subsample": per_class, "seed": params.seed,
        "train_images": len(task.y_train), "test_images": len(task.y_test),
        "tau": taus, "order": {"measured": measured, **orders},
    })
    write_json_atomic(out, result)
    return result
