"""Pretraining: the source network on classes A, or the selffer network on B."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from transferlab.data.prepared import TaskData
from transferlab.experiment import new_model, save_model
from transferlab.io import write_json_atomic
from transferlab.params import Params
from transferlab.stage import compute
from transferlab.train import Batches, evaluate, fit, pick_device, to_tensor


def pretrain(params: Params, source: str, *, prepared: Path, model_out: Path,
             metrics_out: Path, live_dir: Path | None = None,
             checkpoint: Path | None = None, progress: bool = True) -> dict:
    """Train on all training images of the source (A) or target (B) classes.

    B uses the whole target training part, as Yosinski et al.'s selffer
    networks do; the target test part is never used for training.
    """
    task = TaskData.load(prepared / ("source.npz" if source == "A" else "target.npz"))
    device = pick_device()
    model = new_model(params, task, params.seed, device)
    x = to_tensor(task.x_train, task.pixel_max, device)
    y = torch.from_numpy(task.y_train).to(device)
    x_test = to_tensor(task.x_test, task.pixel_max, device)
    y_test = torch.from_numpy(task.y_test).to(device)

    live = None
    if live_dir is not None:
        from dvclive import Live

        shutil.rmtree(live_dir, ignore_errors=True)
        live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)
    try:
        with compute():
            history = fit(model, Batches(x, y, params.pretrain.batch_size, params.seed),
                          params.pretrain, epochs=params.pretrain.epochs, test=(x_test, y_test),
                          live=live, checkpoint=checkpoint, progress=progress,
                          desc=f"pretrain {source}")
            test = evaluate(model, x_test, y_test)
    finally:
        if live is not None:
            live.end()
    meta = {"arch": params.arch, "source": source, "classes": task.classes,
            "in_shape": list(task.image_shape)}
    save_model(model, model_out, meta)
    metrics = {"test_accuracy": test["accuracy"], "test_loss": test["loss"],
               "train_accuracy": history[-1]["train_accuracy"], "epochs": len(history),
               "classes": task.classes, "train_images": int(len(y)),
               "test_images": int(len(y_test))}
    write_json_atomic(metrics_out, metrics)
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    print(f"pretrain {source}: classes {task.classes}, test accuracy {test['accuracy']:.4f}")
    return metrics
