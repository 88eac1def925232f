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
    head_first: HeadFirst | None = None  # LP-FT's first phase, or None


@dataclass
class HeadFirst:
    """LP-FT's first phase (Kumar et al., ICLR 2022): for the first `steps` optimiser steps
    `params` (the copied layers') get no gradient and `frozen` stay in eval mode, as a
    linear probe; then they train in their param groups (training.loop.fit)."""

    steps: int
    params: list[nn.Parameter]
    frozen: list[nn.Module]


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
                    layer_lr_mult: Mapping[str, float], frozen_dropout: bool,
                    layer_decay: float = 1.0, head_steps: int = 0) -> TransferPlan:
    """Set up a freshly initialised `model` for one treatment at depth n.

    Copied layers up to n are frozen (requires_grad off, kept in eval mode, or
    with `frozen_dropout` only their batch norms) or, for the `+` treatments,
    trained at lr * lr_mult, or at lr * layer_lr_mult[name] for the layers it
    names; with `layer_decay` d < 1, copied trained layer i of L (input side
    first) at lr * lr_mult * d^(L - i) (`_copied_groups`). Layers above n keep
    their fresh initialisation, except for treatments that copy every layer
    (AnB-ft): those fine-tune the copied layers above n at the same rates and
    freeze the first n. Treatments of every layer (LP, FT, LP-FT) take n = the
    model's layer count. LP-FT's copied layers are held for its first
    `head_steps` steps (`HeadFirst`). The head is always new, at lr.
    """
    if isinstance(treatment, str):
        treatment = TREATMENTS[treatment]
    if treatment.all_layers and n != len(model.layer_names):
        raise ValueError(f"treatment {treatment.name} copies every layer: n = {n}, but the "
                         f"model has {len(model.layer_names)} layers")
    if treatment.head_first and head_steps < 1:
        raise ValueError(f"treatment {treatment.name} trains the head alone first: "
                         f"head_steps = {head_steps} must be at least 1")
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
    groups = _copied_groups(model, tuned_names, lr, lr_mult, layer_lr_mult, layer_decay)
    groups.append({"params": new_params, "lr": lr, "copied": False})
    frozen = eval_mode_modules([model.layer(name) for name in frozen_names], frozen_dropout)
    head_first = None
    if treatment.head_first:
        layers = [model.layer(name) for name in tuned_names]
        head_first = HeadFirst(head_steps, [p for layer in layers for p in layer.parameters()],
                               eval_mode_modules(layers, frozen_dropout))
    return TransferPlan(copied, frozen, groups, head_first)


def _copied_groups(model: TransferableNet, names: list[str], lr: float, lr_mult: float,
                   layer_lr_mult: Mapping[str, float], layer_decay: float = 1.0) -> list[dict]:
    """One group for the fine-tuned copied layers at lr * lr_mult, plus one per layer
    with its own multiplier. With `layer_decay` d != 1 every layer gets its own group:
    layer i of the L fine-tuned copied layers (1-based, input side first) at
    lr * lr_mult * d^(L - i), the layer next to the head at lr * lr_mult (timm's and
    BEiT's layer-wise decay, over the copied layers only: the head is new, at lr). A
    layer that `layer_lr_mult` names keeps its explicit lr * layer_lr_mult[name]: an
    explicit rate wins over a derived one, and it still counts in L and i."""
    if not names:
        return []
    if layer_decay != 1.0:
        last = len(names)
        return [{"params": list(model.layer(name).parameters()),
                 "lr": lr * layer_lr_mult[name] if name in layer_lr_mult
                 else lr * lr_mult * layer_decay ** (last - i),
                 "copied": True, "layer": name}
                for i, name in enumerate(names, 1)]
    shared = [p for name in names if name not in layer_lr_mult
              for p in model.layer(name).parameters()]
    groups = [{"params": shared, "lr": lr * lr_mult, "copied": True}]
    for name in names:
        if name in layer_lr_mult:
            groups.append({"params": list(model.layer(name).parameters()),
                           "lr": lr * layer_lr_mult[name], "copied": True, "layer": name})
    return groups
