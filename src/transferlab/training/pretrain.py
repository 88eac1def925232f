"""Pretraining: the source network on classes A, or the selffer network on B."""

from __future__ import annotations

import shutil
from pathlib import Path

from transferlab.config.params import Params, check_subsample
from transferlab.data.prepared import TaskData
from transferlab.io import file_digest, read_json, write_json_atomic
from transferlab.keys import Declared, derive_key, pretrained_weights
from transferlab.metrics import mean_std
from transferlab.timing import compute
from transferlab.training.loop import Batches, evaluate, fit, pick_device, score_of, task_tensors
from transferlab.training.variant import make_objective, new_model, save_model, train_transform


def train_network(params: Params, task: TaskData, *, seed: int, aux_heads: int,
                  live=None, checkpoint: Path | None = None, checkpoint_key: str | None = None,
                  progress: bool = True,
                  desc: str = "pretrain", world=None):
    """A fresh network trained on all of `task`'s training part: (model, metrics).

    Under torchrun (`world`, transferlab.training.distributed), every process trains its part
    of each batch and DDP averages the gradients."""
    device = pick_device()
    model = new_model(params, task, seed, device)
    t = task_tensors(task, device, params.data.crop)
    test = (t["x_test"], t["y_test"], t["ignore_test"])
    cfg = params.pretrain
    aux = None
    if aux_heads and not task.multilabel:
        from transferlab.training.losses import BinaryAux

        aux = BinaryAux(task.num_classes, aux_heads, model.embed_dim, cfg.binary_aux.weight,
                        seed)
    objective = make_objective(task.multilabel, cfg.gamma, aux)
    ap = params.heads.ap if task.multilabel else None
    batches = Batches(t["x_train"], t["y_train"], cfg.batch_size, seed, t["ignore_train"])
    trained = model
    if world is not None:
        from transferlab.training import distributed

        if aux is not None:  # its heads live in the objective, outside DDP's averaging
            raise distributed.DistributedError(
                "pretrain.binary_aux.in_model_A: true is not supported under torchrun; "
                "pretrain in one process")
        model, trained = distributed.wrap(model, world, device)
        batches = distributed.sharded(batches, world)
    with compute():
        history = fit(trained, batches, cfg, epochs=cfg.epochs, test=test, live=live,
                      checkpoint=checkpoint, checkpoint_key=checkpoint_key,
                      progress=progress, desc=desc, objective=objective,
                      transform=train_transform(params, task), ap=ap)
        result = evaluate(model, *test, ap=ap)
    metrics = {"metric": "map" if task.multilabel else "accuracy",
               "test_score": score_of(result),
               **{f"test_{k}": v for k, v in result.items()},
               "train_accuracy": history[-1]["train_accuracy"], "epochs": len(history),
               "classes": task.classes, "train_images": int(len(task.y_train)),
               "test_images": int(len(task.y_test)),
               "binary_aux_heads": aux_heads if aux is not None else 0}
    return model, metrics


def checkpoint_key(params: Params, declared: Declared, source: str, task_file: Path,
                   device, world_size: int = 1) -> str:
    """What a resumable pretraining run is: the params and code its stage declares, the
    side, the prepared file's digest, the torch version, the device type,
    under torchrun the number of processes (each normalises its own part of a batch) and,
    for arch pretrained, the weights' digest."""
    import torch

    world = {"world_size": world_size} if world_size > 1 else {}
    return derive_key(params, declared.params, source=source, data=file_digest(task_file),
                      code=declared.code, torch=torch.__version__, device=device.type,
                      **world, **pretrained_weights(params))


def model_a_aux_heads(params: Params) -> int:
    """Binary auxiliary heads model A trains with: `heads` when `in_model_A`, else none."""
    aux = params.pretrain.binary_aux
    return aux.heads if aux.in_model_A else 0


def pretrain(params: Params, source: str, *, prepared: Path, model_out: Path,
             metrics_out: Path, live_dir: Path | None = None,
             checkpoints: Path | None = None, declared: Declared | None = None,
             progress: bool = True, uses: Path | None = None) -> dict:
    """Train on all training images of the source (A) or target (B) classes.

    B uses the whole target training part, as Yosinski et al.'s selffer
    networks do; the target test part is never used for training. Binary
    auxiliary heads (Borthakur & Einhorn) train with the source network A only, and only
    with `pretrain.binary_aux.in_model_A`.
    `declared` is what the stage declares in dvc.yaml (params and code): with the inputs'
    digests and the code they make the checkpoint's key, and the checkpoint is
    `checkpoints/<key>.pt` (in the shared store: any run of the same pretraining
    resumes it). Under torchrun only rank 0 logs and writes (transferlab.training.distributed).
    `uses` (stage sources_used's file for this model) saying no stage reads the model: no
    training, and outputs that say so (`write_unused_model`).
    """
    from transferlab.training import distributed

    # No file: the stage script run by hand, outside `dvc repro` (which runs sources_used
    # first): the model is trained, as before there was a file.
    if uses is not None and uses.exists() and not read_json(
            uses, "whether any stage reads this model", required=["used"])["used"]:
        return write_unused_model(source, model_out=model_out, metrics_out=metrics_out,
                                  live_dir=live_dir)
    world = distributed.setup(params.pretrain.batch_size, "pretrain.batch_size")
    main = world is None or world.main
    task_file = prepared / ("source.npz" if source == "A" else "target.npz")
    task = TaskData.load(task_file)
    if params.arch == "pretrained" and source == "A":
        metrics = {}
        if main:
            metrics = write_pretrained_source(params, task, model_out=model_out,
                                              metrics_out=metrics_out, live_dir=live_dir)
        if world is not None:
            distributed.teardown()
        return metrics
    key = checkpoint = None
    if checkpoints is not None:
        key = checkpoint_key(params, declared or Declared((), ""), source, task_file, pick_device(),
                             1 if world is None else world.size)
        checkpoint = checkpoints / f"{key}.pt"
    live = None
    if live_dir is not None and main:
        from dvclive import Live

        shutil.rmtree(live_dir, ignore_errors=True)
        live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)
    try:
        model, metrics = train_network(
            params, task, seed=params.seed,
            aux_heads=model_a_aux_heads(params) if source == "A" else 0, live=live,
            checkpoint=checkpoint, checkpoint_key=key, progress=progress and main,
            desc=f"pretrain {source}", world=world)
    finally:
        if live is not None:
            live.end()
    if main:
        meta = {"arch": params.arch, "source": source, "classes": task.classes,
                "in_shape": list(task.image_shape)}
        save_model(model, model_out, meta)
        write_json_atomic(metrics_out, metrics)
        if checkpoint is not None:
            checkpoint.unlink(missing_ok=True)
        where = "" if world is None else f" ({world.size} processes, rank 0 wrote the outputs)"
        print(f"pretrain {source}: {task.num_classes} classes, test {metrics['metric']} "
              f"{metrics['test_score']:.4f}{where}")
    if world is not None:
        distributed.teardown()
    return metrics


UNUSED_NOTE = ("not trained: no stage reads it (no B treatment in sweep.treatments, no "
               "transfer run from B, no sweep.swap, no per-iteration gain over model B); "
               "pretrain@B trains it as soon as one does")


def write_unused_model(source: str, *, model_out: Path, metrics_out: Path,
                       live_dir: Path | None = None) -> dict:
    """The outputs of a pretraining stage whose model nothing reads: a model file that holds
    no weights and says why (loading it is an error naming the reason), the same in the
    metrics and the dvclive folder, so DVC's outputs exist and nothing looks trained."""
    from transferlab.training.loop import save_state

    note = f"model {source} is {UNUSED_NOTE}"
    save_state({"state_dict": {}, "meta": {"source": source, "trained": False,
                                           "note": note}}, model_out)
    metrics = {"trained": False, "note": note}
    write_json_atomic(metrics_out, metrics)
    if live_dir is not None:
        shutil.rmtree(live_dir, ignore_errors=True)
        write_json_atomic(live_dir / "not-trained.json", metrics)
    print(f"pretrain {source}: {note}")
    return metrics


def write_pretrained_source(params: Params, task: TaskData, *, model_out: Path,
                            metrics_out: Path, live_dir: Path | None = None) -> dict:
    """Model A of arch pretrained: the network with its weights, not trained here.

    models/A.pt is written in the usual format (state dict and meta), so every later stage
    loads it as any model A. Its head is new and untrained (the library's classifier
    predicts the library's classes, not the source classes), so A has no score on the
    source classes: results/pretrain/A.json says so, and what A is (name, weights file,
    its sha256, layers). The dvclive folder holds the same record, no curves.
    """
    from transferlab.models.pretrained import load_source
    from transferlab.training.loop import seed_everything

    chosen = params.model.pretrained
    seed_everything(params.seed)  # the new head's initialisation
    model = load_source(chosen["name"], chosen["weights"], task.num_classes)
    origin = pretrained_weights(params)["weights"]
    record = {"name": chosen["name"], "weights": chosen["weights"],
              "sha256": origin if chosen["weights"] is not None else None,
              "origin": None if chosen["weights"] is not None else origin,
              "layers": list(model.layer_names)}
    metrics = {"metric": "map" if task.multilabel else "accuracy", "trained": False,
               "pretrained": record, "classes": task.classes, "train_images": 0,
               "note": "model A is the pretrained network as loaded, not trained here: its "
                       "head is new, so it has no score on the source classes"}
    meta = {"arch": params.arch, "source": "A", "classes": task.classes,
            "in_shape": list(task.image_shape), "pretrained": record, "head_trained": False}
    save_model(model, model_out, meta)
    write_json_atomic(metrics_out, metrics)
    if live_dir is not None:
        shutil.rmtree(live_dir, ignore_errors=True)
        write_json_atomic(live_dir / "pretrained.json", record)
    weights = chosen["weights"] or "the library's cache"
    print(f"pretrain A: {chosen['name']} from {weights} ({len(record['layers'])} layers), "
          "not trained here")
    return metrics


def compare_binary_aux(params: Params, *, prepared: Path, out: Path,
                       progress: bool = True) -> dict:
    """Borthakur & Einhorn's paired comparison (Table 1): for each of `binary_aux.seeds`, source
    networks trained with and without the binary auxiliary heads (same split, same
    initialisation, same batches), each transferred with every layer copied and
    fine-tuned (AnB+ at all layers) to `binary_aux.subsample` target images per class."""
    from transferlab.training.variant import Variant, run_variant

    if not params.pretrain.binary_aux.compare:
        payload = {"enabled": False}
        write_json_atomic(out, payload)
        print("binary_aux: pretrain.binary_aux.compare is false; no comparison to run")
        return payload
    heads = params.pretrain.binary_aux.heads
    aux_cfg = params.pretrain.binary_aux
    source = TaskData.load(prepared / "source.npz")
    target = TaskData.load(prepared / "target.npz")
    check_subsample("pretrain.binary_aux.subsample", aux_cfg.subsample,
                    target.smallest_train_class())
    treatment, n = "AnB+", len(params.layer_names)
    pairs = []
    for seed in params.pretrain.binary_aux.seeds:
        row = {"seed": seed}
        for name, aux in (("plain", 0), ("binary", heads)):
            model, metrics = train_network(params, source, seed=seed, aux_heads=aux,
                                           progress=progress, desc=f"{name} A seed {seed}")
            with compute():
                result = run_variant(params, target, {"A": model},
                                     Variant(treatment, n, aux_cfg.subsample, seed))
            row[name] = {"source_score": metrics["test_score"],
                         "target_score": result["test_score"]}
        row["difference"] = row["binary"]["target_score"] - row["plain"]["target_score"]
        pairs.append(row)
        print(f"binary_aux seed {seed}: plain {row['plain']['target_score']:.4f}, "
              f"binary {row['binary']['target_score']:.4f}")
    diffs = [r["difference"] for r in pairs]
    stats = mean_std(diffs)
    payload = {"enabled": True, "heads": heads, "weight": params.pretrain.binary_aux.weight,
               "treatment": treatment, "n": n, "subsample": aux_cfg.subsample,
               "pairs": pairs, "mean_difference": stats["mean"], "sd_difference": stats["std"],
               "binary_better": sum(d > 0 for d in diffs), "seeds": len(diffs)}
    write_json_atomic(out, payload)
    return payload
