"""Copy, freeze, fine-tune or re-initialise the first n layers, for any architecture.

Everything here works on `TransferableNet.layer_names` by position and reaches a
layer through `layer(name)` (names may contain dots); nothing knows what a
layer contains.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from transferlab.models.base import TransferableNet
from transferlab.treatments import TREATMENTS, Treatment


@dataclass
class TransferPlan:
    """Which layers were copied and how each parameter is trained."""

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


def apply_treatment(model: TransferableNet, treatment: Treatment | str, n: int,
                    sources: dict[str, TransferableNet], lr: float, lr_mult: float
                    ) -> TransferPlan:
    """Set up a freshly initialised `model` for one treatment at depth n.

    Layers above n and the head keep their fresh initialisation. Copied layers
    are frozen (requires_grad off, kept in eval mode) or, for the `+`
    treatments, trained at lr * lr_mult.
    """
    if isinstance(treatment, str):
        treatment = TREATMENTS[treatment]
    if not treatment.copies_layers or n == 0:
        return TransferPlan([], [], [{"params": list(model.parameters()), "lr": lr}])
    copied = copy_first_layers(model, sources[treatment.source], n)
    copied_params = [p for name in copied for p in model.layer(name).parameters()]
    copied_ids = {id(p) for p in copied_params}
    new_params = [p for p in model.parameters() if id(p) not in copied_ids]
    if treatment.finetune:
        groups = [{"params": copied_params, "lr": lr * lr_mult}, {"params": new_params, "lr": lr}]
        return TransferPlan(copied, [], groups)
    for p in copied_params:
        p.requires_grad_(False)
    return TransferPlan(copied, [model.layer(name) for name in copied],
                        [{"params": new_params, "lr": lr}])
