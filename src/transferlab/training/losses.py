"""The training objective: task loss per iteration, discounted, plus binary auxiliary heads.

- Single-label: cross-entropy. Multi-label (y of shape (B, L), 0/1): binary
  cross-entropy with logits per label, averaged over the (sample, label)
  entries not masked by `ignore` (VOC's "difficult" labels).
- Several iterations (the feedback net, Spero, eq. 7): L = sum_{i=1..n}
  gamma^i L_i, iterations numbered from 1 as in the paper's Table 1. A model
  with one iteration gets the plain loss L_1 (no constant factor gamma).
- Binary auxiliary heads (Borthakur & Einhorn): each head maps the source classes to 0
  (a seeded random half) or 1 (the rest) and is a Linear(embed_dim, 2) on the
  model's last-iteration embedding. Loss (1 - B) L_task + B * mean over the
  heads of CE(head_h, y_b_h): with one head this is the paper's
  (1 - B) CE(y) + B CE(y_b); with several, B is split equally between them as
  in its Fig. 10 ("B = b x n"). The aux heads live in the Objective, never in
  the model, so saved models and transfer do not see them; their parameters
  must be given to the optimiser (`objective.parameters()`).
- L2-SP (Li, Grandvalet and Davoine, ICML 2018), added to the loss in the training
  step, apart from the objective (`L2SP`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from transferlab.models.base import TransferableNet


class BinaryAux(nn.Module):
    def __init__(self, num_classes: int, num_heads: int, embed_dim: int, weight: float,
                 seed: int):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"binary aux heads need at least 2 source classes, got {num_classes}")
        if num_heads < 1:
            raise ValueError(f"binary aux num_heads = {num_heads}: must be at least 1")
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"binary aux weight = {weight}: must be in [0, 1]")
        self.weight = float(weight)
        gen = torch.Generator().manual_seed(seed)
        codes = torch.ones(num_heads, num_classes, dtype=torch.long)
        for h in range(num_heads):
            codes[h, torch.randperm(num_classes, generator=gen)[:num_classes // 2]] = 0
        # codes[h, c]: the binary label head h gives class c.
        self.register_buffer("codes", codes)
        self.heads = nn.ModuleList(nn.Linear(embed_dim, 2) for _ in range(num_heads))

    def forward(self, embedding: Tensor, y: Tensor) -> Tensor:
        """Mean over the heads of the cross-entropy against each head's binary labels."""
        losses = [F.cross_entropy(head(embedding).float(), self.codes[h][y])
                  for h, head in enumerate(self.heads)]
        return torch.stack(losses).mean()


class Objective(nn.Module):
    """loss(model, x, y) -> (loss, last-iteration logits); holds any aux heads."""

    def __init__(self, *, multilabel: bool = False, gamma: float = 1.0,
                 binary_aux: BinaryAux | None = None):
        super().__init__()
        if gamma <= 0:
            raise ValueError(f"gamma = {gamma}: the per-iteration discount must be positive")
        if multilabel and binary_aux is not None:
            raise ValueError("binary aux heads split single-label classes; "
                             "they cannot be used with multi-label targets")
        self.multilabel = multilabel
        self.gamma = float(gamma)
        self.binary_aux = binary_aux

    def task_loss(self, logits: Tensor, y: Tensor, ignore: Tensor | None = None) -> Tensor:
        logits = logits.float()
        if not self.multilabel:
            if ignore is not None:
                raise ValueError("an ignore mask only applies to multi-label targets")
            return F.cross_entropy(logits, y)
        if y.shape != logits.shape:
            raise ValueError(f"multi-label targets have shape {tuple(y.shape)}, "
                             f"logits {tuple(logits.shape)}")
        per_entry = F.binary_cross_entropy_with_logits(logits, y.float(), reduction="none")
        if ignore is None:
            return per_entry.mean()
        keep = ~ignore.bool()
        # An all-ignored batch contributes zero, not NaN.
        return (per_entry * keep).sum() / keep.sum().clamp(min=1)

    def forward(self, model: TransferableNet, x: Tensor, y: Tensor,
                ignore: Tensor | None = None) -> tuple[Tensor, Tensor]:
        # One pass through the layers gives every iteration's embedding.
        embeddings = model.iteration_embeddings(x)
        logits = [model.head(e) for e in embeddings]
        losses = [self.task_loss(out, y, ignore) for out in logits]
        if len(losses) == 1:
            loss = losses[0]
        else:
            loss = sum(self.gamma ** i * li for i, li in enumerate(losses, 1))
        if self.binary_aux is not None:
            b = self.binary_aux.weight
            loss = (1 - b) * loss + b * self.binary_aux(embeddings[-1], y)
        return loss, logits[-1]


class L2SP:
    """Li, Grandvalet and Davoine (ICML 2018)'s penalty: alpha/2 ||w - w0||^2 over the
    fine-tuned copied parameters (w0: their values when copied, the source's) plus
    beta/2 ||w||^2 over the new ones (the head, new FC layers, fresh layers above n).

    An explicit term of the loss, not the optimiser's weight_decay: its gradient
    alpha (w - w0) + beta w then goes through Adam's normalisation like the task
    loss's, as the paper's objective says, where a decoupled or Adam weight decay
    would pull towards 0 at another strength. Every parameter of a layer counts
    (weights, biases, normalisation scales), as tllib's SPRegularization does.
    """

    def __init__(self, tuned: list[Tensor], new: list[Tensor], alpha: float, beta: float):
        self.tuned = list(tuned) if alpha else []
        self.start = [p.detach().clone() for p in self.tuned]
        self.new = list(new) if beta else []
        self.alpha, self.beta = float(alpha), float(beta)

    def __call__(self) -> Tensor:
        # float32 sums outside autocast; a parameter's term is 0 where it has not moved
        terms = [(p.float() - p0.float()).pow(2).sum() for p, p0 in
                 zip(self.tuned, self.start, strict=True)]
        total = self.alpha / 2 * torch.stack(terms).sum() if terms else None
        if self.new:
            new = self.beta / 2 * torch.stack([p.float().pow(2).sum() for p in self.new]).sum()
            total = new if total is None else total + new
        return total


__all__ = ["BinaryAux", "L2SP", "Objective"]
