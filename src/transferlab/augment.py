"""Batch-level augmentation on the batch's device, reproducible from a torch.Generator.

Seed 004: random 57x57 crop of the 64x64 images plus horizontal mirroring at
training time, the centre crop at test time. Seed 001: random 32 crop (of the
zero-padded 32x32 image) plus horizontal flip.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def _check(x: Tensor, size: int) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected images shaped (N, C, H, W), got shape {tuple(x.shape)}")
    if not 1 <= size <= min(x.shape[2], x.shape[3]):
        raise ValueError(f"crop size {size} must be between 1 and the image size "
                         f"{x.shape[2]}x{x.shape[3]}")


def random_crop_flip(x: Tensor, size: int, generator: torch.Generator, *, flip: bool = True,
                     pad: int = 0) -> Tensor:
    """A random size x size crop of each image, mirrored left-right with probability 0.5.

    With `pad`, the images are first zero-padded by that many pixels per side.
    Offsets and flips are drawn from `generator` (on its own device), so the
    same generator state gives the same batch.
    """
    if pad:
        x = F.pad(x, (pad, pad, pad, pad))
    _check(x, size)
    n, _, height, width = x.shape
    gdev = generator.device
    top = torch.randint(0, height - size + 1, (n,), generator=generator, device=gdev)
    left = torch.randint(0, width - size + 1, (n,), generator=generator, device=gdev)
    mirror = torch.rand(n, generator=generator, device=gdev) < 0.5
    top, left, mirror = top.to(x.device), left.to(x.device), mirror.to(x.device)
    offsets = torch.arange(size, device=x.device)
    rows = top[:, None] + offsets  # (N, size)
    cols = left[:, None] + offsets
    if flip:
        cols = torch.where(mirror[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indices split by the channel slice put (N, size, size) first.
    out = x[batch, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def center_crop(x: Tensor, size: int) -> Tensor:
    """The central size x size window of every image (top-left bias when odd)."""
    _check(x, size)
    top = (x.shape[2] - size) // 2
    left = (x.shape[3] - size) // 2
    return x[:, :, top:top + size, left:left + size]


__all__ = ["center_crop", "random_crop_flip"]
