"""Copy, freeze, fine-tune or re-initialise the first n layers, for any architecture.

Everything here works on `TransferableNet.layer_names` by position and reaches a
layer through `layer(name)` (names may contain dots); nothing knows what a
layer contains.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from transferlab.models.base import TransferableNet
from transferlab.models.treatments import TREATMENTS, Treatment


@dataclass
class TransferPlan:
    """Which layers were copied and how each parameter is trained.

    `frozen`: the modules the training loop keeps in eval mode. Each param group
    says whether it holds copied layers (`copied`), so that schedules can treat
    copied and new layers apart (train.make_scheduler).
    """

    copied: list[str]
    frozen: list[nn.Module]
    param_groups: list[dict]


def copy_first_layers(target: TransferableNet, source: TransferableNet, n: int) -> list[str]:
    """Load the first n layers of `source` into `target`; return their names."""
    if n > len(target.layer_names):
        raise ValueError(f"freeze = {n} but the model has only {len(target.layer_names)} "
                         f"layers: {target.layer_names}")
    if source.layer_names != target.layer_names:
        raise ValueError(f"layer lists differ: {source.layer_names} vs {target.layer_names}")
    names = target.layer_names[:n]
    for name in names:
        target.layer(name).load_state_dict(source.layer(name).state_dict())
    return names


def eval_mode_modules(layers: list[nn.Module], dropout: bool) -> list[nn.Module]:
    """What of the frozen `layers` runs in eval mode: all of them, or with `dropout`
    only their normalisation modules with running statistics (batch norm), so that
    dropout stays on as under a Caffe `lr_mult: 0` freeze while the statistics stay
    the source's."""
    if not dropout:
        return list(layers)
    return [m for layer in layers for m in layer.modules() if isinstance(m, _NormBase)]


def apply_treatment(model: TransferableNet, treatment: Treatment | str, n: int,
                    sources: dict[str, TransferableNet], lr: float, lr_mult: float, *,
                    layer_lr_mult: Mapping[str, float], frozen_dropout: bool
                    ) -> TransferPlan:
    """Set up a freshly initialised `model` for one treatment at depth n.

    Copied layers up to n are frozen (requires_grad off, kept in eval mode, or
    with `frozen_dropout` only their batch norms) or, for the `+` treatments,
    trained at lr * lr_mult, or at lr * layer_lr_mult[name] for the layers it
    names. Layers above n keep their fresh initialisation, except for treatments
    that copy every layer (AnB-ft): those fine-tune the copied layers above n at
    the same rates and freeze the first n. The head is always new, at lr.
    """
    if isinstance(treatment, str):
        treatment = TREATMENTS[treatment]
    if not treatment.copies_layers or (n == 0 and not treatment.copies_all):
        return TransferPlan([], [], [{"params": list(model.parameters()), "lr": lr,
                                      "copied": False}])
    count = len(model.layer_names) if treatment.copies_all else n
    copied = copy_first_layers(model, sources[treatment.source], count)
    frozen_names = copied[:n] if treatment.copies_all or not treatment.finetune else []
    tuned_names = [name for name in copied if name not in frozen_names]
    copied_ids = {id(p) for name in copied for p in model.layer(name).parameters()}
    new_params = [p for p in model.parameters() if id(p) not in copied_ids]
    for name in frozen_names:
        for p in model.layer(name).parameters():
            p.requires_grad_(False)
    groups = _copied_groups(model, tuned_names, lr, lr_mult, layer_lr_mult)
    groups.append({"params": new_params, "lr": lr, "copied": False})
    frozen = eval_mode_modules([model.layer(name) for name in frozen_names], frozen_dropout)
    return TransferPlan(copied, frozen, groups)


def _copied_groups(model: TransferableNet, names: list[str], lr: float, lr_mult: float,
                   layer_lr_mult: Mapping[str, float]) -> list[dict]:
    """One group for the fine-tuned copied layers at lr * lr_mult, plus one per layer
    with its own multiplier."""
    if not names:
        return []
    shared = [p for name in names if name not in layer_lr_mult
              for p in model.layer(name).parameters()]
    groups = [{"params": shared, "lr": lr * lr_mult, "copied": True}]
    for name in names:
        if name in layer_lr_mult:
            groups.append({"params": list(model.layer(name).parameters()),
                           "lr": lr * layer_lr_mult[name], "copied": True, "layer": name})
    return groups
