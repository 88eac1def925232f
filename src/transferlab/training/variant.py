"""One transfer run: (treatment, n, target size, seed) -> target test accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from transferlab.config.params import Params
from transferlab.config.spec import fail
from transferlab.data.prepared import TaskData
from transferlab.models import build_model
from transferlab.models.base import TransferableNet
from transferlab.models.surgery import apply_treatment
from transferlab.models.treatments import TREATMENTS
from transferlab.training.loop import (
    Batches,
    evaluate,
    fit,
    pick_device,
    score_of,
    seed_everything,
    task_tensors,
)


@dataclass(frozen=True)
class Variant:
    treatment: str
    n: int
    subsample: int
    seed: int

    @property
    def key(self) -> str:
        return f"{self.treatment}/n{self.n}/k{self.subsample}/s{self.seed}"


def save_model(model: TransferableNet, path: Path, meta: dict) -> None:
    """Save weights; the same weights give the same bytes, so DVC hashes stay stable."""
    from transferlab.training.loop import save_state

    save_state({"state_dict": model.state_dict(), "meta": meta}, path)


def load_model(path: str | Path, params: Params, in_shape, num_classes: int,
               device: torch.device) -> TransferableNet:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run its pretrain stage first")
    import pickle

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch.load of a damaged file raises a dozen different types
        # torch's own texts run to paragraphs (and suggest weights_only=False): one line
        why = ("not a weights-only torch file" if isinstance(e, pickle.UnpicklingError)
               else (str(e).splitlines() or [type(e).__name__])[0])
        raise ValueError(f"{path}: cannot load the model ({why}); the file is damaged or not "
                         "a transferlab model: delete it and rerun its pretrain stage") from e
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise ValueError(f"{path} holds no model state_dict; delete it and rerun its "
                         "pretrain stage")
    meta = state.get("meta") if isinstance(state.get("meta"), dict) else {}
    if meta.get("trained") is False:  # pretrain's outputs for a model nothing read
        raise ValueError(f"{path}: {meta.get('note', 'holds no trained model')}")
    model = build_model(params.arch, input_shape(params, in_shape), num_classes,
                        **params.model_kwargs)
    # The head of a source model has the source's class count; only layers transfer.
    layer_state = {k: v for k, v in state["state_dict"].items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(layer_state, strict=False)
    if unexpected or any(not k.startswith("head.") for k in missing):
        raise ValueError(f"{path} does not match arch {params.arch!r}: "
                         f"missing {missing}, unexpected {unexpected}")
    return model.to(device)


def input_shape(params: Params, image_shape) -> tuple[int, int, int]:
    """What the network sees: the stored images, or their `data.crop` crops."""
    c, h, w = image_shape
    crop = params.data.crop
    if crop > min(h, w):
        raise fail("data.crop", crop, f"0 or at most the image size {min(h, w)}")
    return (c, crop, crop) if crop else (c, h, w)


def train_transform(params: Params, task: TaskData | None = None):
    """Random crop (data.crop, after data.pad) and mirror (data.flip) of each training
    batch, or None. The batches are normalised with `task`'s mean and std, so the padding
    is the normalised value of a black pixel, as padding before normalising gives."""
    if not params.data.crop and not params.data.flip:
        return None
    from transferlab.training.augment import random_crop_flip

    crop, flip, pad = params.data.crop, params.data.flip, params.data.pad
    fill = 0.0 if task is None else black(task)

    def transform(x, generator):
        return random_crop_flip(x, crop or x.shape[-1], generator, flip=flip, pad=pad,
                                fill=fill)

    return transform


def black(task: TaskData) -> tuple[float, ...]:
    """A zero pixel after normalisation (loop.to_tensor): -mean / std per channel."""
    return tuple(-m / s for m, s in zip(task.mean, task.std, strict=True))


def new_model(params: Params, task: TaskData, seed: int, device) -> TransferableNet:
    seed_everything(seed)
    model = build_model(params.arch, input_shape(params, task.image_shape), task.num_classes,
                        **params.model_kwargs)
    return model.to(device)


@dataclass
class VariantSetup:
    """A variant ready to train: its target subsample, seeded model, transfer plan,
    data on the device and objective (the one set-up of run_variant and batched)."""

    task: TaskData
    model: TransferableNet
    plan: object  # transfer.TransferPlan
    test: tuple
    batches: Batches
    objective: torch.nn.Module
    steps: int  # the budget (transfer.steps, or transfer.epochs of this target)
    ap: str | None  # AP definition for multi-label targets
    penalty: object = None  # losses.L2SP when transfer.l2sp applies to this variant, or None


def setup_variant(params: Params, target: TaskData, sources: dict[str, TransferableNet],
                  variant: Variant, device) -> VariantSetup:
    task = target.subsampled(variant.subsample, variant.seed)
    model = new_model(params, task, variant.seed, device)
    extra_fc = TREATMENTS[variant.treatment].new_fc
    if extra_fc:
        model.head = fc_head(model.embed_dim, task.num_classes, extra_fc).to(device)
    cfg = params.transfer
    steps = cfg.budget(len(task.y_train))
    lr_mult, head_steps = cfg.lr_mult, 0
    if TREATMENTS[variant.treatment].head_first:  # LP-FT: its own phase-2 rate and phase 1
        lr_mult, head_steps = cfg.lp_ft.lr_mult, lp_ft_head_steps(cfg.lp_ft.head_share, steps)
    plan = apply_treatment(model, variant.treatment, variant.n, sources, cfg.lr, lr_mult,
                           layer_lr_mult=cfg.layer_lr_mult, frozen_dropout=cfg.frozen_dropout,
                           layer_decay=cfg.layer_decay, head_steps=head_steps)
    t = task_tensors(task, device, params.data.crop)
    test = (t["x_test"], t["y_test"], t["ignore_test"])
    batches = Batches(t["x_train"], t["y_train"], cfg.batch_size, variant.seed, t["ignore_train"])
    return VariantSetup(task, model, plan, test, batches,
                        make_objective(task.multilabel, cfg.gamma), steps=steps,
                        ap=params.heads.ap if task.multilabel else None,
                        penalty=l2sp_penalty(plan, cfg.l2sp.alpha, cfg.l2sp.beta))


def lp_ft_head_steps(head_share: float, steps: int) -> int:
    """LP-FT's first phase in a budget of `steps`: floor(head_share * steps) steps
    (params.py checks it is at least 1 at the smallest budget, transfer.steps)."""
    return int(head_share * steps)


def l2sp_penalty(plan, alpha: float, beta: float):
    """The L2-SP term (losses.L2SP) of a variant, or None: with alpha = beta = 0 (off),
    or when the treatment fine-tunes no copied layer (base, AnB, BnB, AnB-2fc, LP: the
    penalty is the fine-tuning regulariser of Li et al., so those train as without it)."""
    from transferlab.training.losses import L2SP

    tuned = [p for g in plan.param_groups if g.get("copied") for p in g["params"]]
    if not tuned or (alpha == 0 and beta == 0):
        return None
    new = [p for g in plan.param_groups if not g.get("copied") for p in g["params"]]
    return L2SP(tuned, new, alpha, beta)


def curve_every(steps: int, steps_per_epoch: int) -> int:
    """Every how many epochs a variant's curve gets a point (and the last epoch always):
    a tiny target makes every step an epoch, so about 30 points of the curve."""
    return max(1, steps // steps_per_epoch // 30)


def run_variant(params: Params, target: TaskData, sources: dict[str, TransferableNet],
                variant: Variant, *, device=None, live=None, progress: bool = False,
                curves: bool = False) -> dict:
    """Train one variant on the target task and test it on the target test part; with
    `curves` (the sweep's `sweep.curves`), its result holds its curve (`curve_of`)."""
    device = device or pick_device()
    s = setup_variant(params, target, sources, variant, device)
    cfg = params.transfer
    history = fit(s.model, s.batches, cfg, param_groups=s.plan.param_groups,
                  frozen=s.plan.frozen, steps=s.steps,
                  test=s.test if live is not None or curves else None,
                  live=live, progress=progress, desc=variant.key,
                  log_every=curve_every(s.steps, s.batches.steps_per_epoch),
                  objective=s.objective, transform=train_transform(params, s.task), ap=s.ap,
                  test_every_log=curves, penalty=s.penalty, head_first=s.plan.head_first)
    return variant_result(variant, s, evaluate(s.model, *s.test, ap=s.ap), history,
                          curves=curves)


def curve_of(history: list[dict]) -> list[dict]:
    """The points of a training history that were tested (every `curve_every`-th epoch
    and the last): epoch, step, train loss and accuracy, test score and loss."""
    def score(record):
        return record["test_map"] if "test_map" in record else record["test_accuracy"]

    return [{"epoch": r["epoch"], "step": r["step"], "train_loss": r["train_loss"],
             "train_accuracy": r["train_accuracy"], "test_score": score(r),
             "test_loss": r["test_loss"]}
            for r in history if "test_loss" in r]


def variant_result(variant: Variant, s: VariantSetup, result: dict, history: list[dict],
                   *, curves: bool = False) -> dict:
    """The stored result of a trained variant: its test scores, last train loss and,
    with `curves`, its curve (whose last point is the final model's test score)."""
    extra = {"curve": curve_of(history)} if curves else {}
    return {
        "treatment": variant.treatment, "n": variant.n, "subsample": variant.subsample,
        "seed": variant.seed, "copied_layers": s.plan.copied,
        "train_images": int(len(s.task.y_train)), "test_images": int(len(s.task.y_test)),
        "steps": s.steps, "metric": "map" if s.task.multilabel else "accuracy",
        "test_score": score_of(result),
        **{f"test_{k}": v for k, v in result.items()},
        "final_train_loss": history[-1]["train_loss"],
        **extra,
    }


def fc_head(width: int, num_classes: int, hidden_layers: int) -> torch.nn.Module:
    """`hidden_layers` FC-ReLU layers of `width` units, then the output layer."""
    parts: list[torch.nn.Module] = []
    for _ in range(hidden_layers):
        parts += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    return torch.nn.Sequential(*parts, torch.nn.Linear(width, num_classes))


def make_objective(multilabel: bool, gamma: float, binary_aux=None):
    from transferlab.training.losses import Objective

    return Objective(multilabel=multilabel, gamma=gamma, binary_aux=binary_aux)
