"""Random crops, mirrors and rotations of image batches, reproducible from a torch.Generator.

The project's one pad-crop-flip: training augments each batch on its device
(Soekhoe: random 57x57 crop of the 64x64 images plus horizontal mirroring at
training time, the centre crop at test time; Borthakur & Einhorn: random 32 crop of the
zero-padded 32x32 image plus horizontal flip), and the features stage makes
its CNNaug copies with the same function on uint8 images on the CPU.

Padding is black, as when a pipeline pads the images before normalising them: training
batches arrive normalised, so they are padded with `fill`, the normalised value of a
zero pixel (`train_transform` passes it); uint8 images are padded with 0.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def _check(x: Tensor, size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) of the crop; `size` is a side (a square) or (height, width)."""
    if x.dim() != 4:
        raise ValueError(f"expected images shaped (N, C, H, W), got shape {tuple(x.shape)}")
    h, w = (size, size) if isinstance(size, int) else size
    if not (1 <= h <= x.shape[2] and 1 <= w <= x.shape[3]):
        raise ValueError(f"crop size {size} must be between 1 and the image size "
                         f"{x.shape[2]}x{x.shape[3]}")
    return h, w


def pad_images(x: Tensor, pad: int, fill: float | tuple[float, ...] = 0.0) -> Tensor:
    """Images padded by `pad` pixels per side with `fill`: one value, or one per channel."""
    fills = (fill,) if isinstance(fill, int | float) else tuple(fill)
    if len(set(fills)) == 1:
        return F.pad(x, (pad, pad, pad, pad), value=fills[0])
    if len(fills) != x.shape[1]:
        raise ValueError(f"{len(fills)} fill values for {x.shape[1]} channels")
    n, c, h, w = x.shape
    out = torch.tensor(fills, dtype=x.dtype, device=x.device).view(1, c, 1, 1).repeat(
        n, 1, h + 2 * pad, w + 2 * pad)
    out[:, :, pad:pad + h, pad:pad + w] = x
    return out


def random_crop_flip(x: Tensor, size: int | tuple[int, int], generator: torch.Generator, *,
                     flip: bool = True, pad: int = 0,
                     fill: float | tuple[float, ...] = 0.0) -> Tensor:
    """A random crop of each image (size x size, or (height, width)), mirrored left-right
    with probability 0.5 when `flip`.

    With `pad`, the images are first padded by that many pixels per side with `fill`
    (`pad_images`: a value, or one per channel).
    Offsets and flips are drawn from `generator` (on its own device), so the
    same generator state gives the same batch. Any dtype works (uint8 included).
    """
    if pad:
        x = pad_images(x, pad, fill)
    size_h, size_w = _check(x, size)
    n, _, height, width = x.shape
    gdev = generator.device
    top = torch.randint(0, height - size_h + 1, (n,), generator=generator, device=gdev)
    left = torch.randint(0, width - size_w + 1, (n,), generator=generator, device=gdev)
    mirror = torch.rand(n, generator=generator, device=gdev) < 0.5
    top, left, mirror = top.to(x.device), left.to(x.device), mirror.to(x.device)
    rows = top[:, None] + torch.arange(size_h, device=x.device)  # (N, size_h)
    cols = left[:, None] + torch.arange(size_w, device=x.device)
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


def random_rotate(x: Tensor, max_degrees: float, generator: torch.Generator) -> Tensor:
    """Each image rotated about its centre by an angle drawn uniformly from
    [-max_degrees, max_degrees] (Hong's CNNaug rotations); corners that come from
    outside the image are zero, pixels are interpolated bilinearly. The dtype is
    kept (integer images are rounded back)."""
    n = x.shape[0]
    angles = (torch.rand(n, generator=generator, device=generator.device) * 2 - 1)
    radians = angles.to(x.device, torch.float32) * (max_degrees * torch.pi / 180)
    cos, sin = torch.cos(radians), torch.sin(radians)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    if x.dtype.is_floating_point:
        return out.to(x.dtype)
    info = torch.iinfo(x.dtype)
    return out.round().clamp(info.min, info.max).to(x.dtype)


__all__ = ["center_crop", "pad_images", "random_crop_flip", "random_rotate"]
