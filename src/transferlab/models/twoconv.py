"""Sharma's "simple two layer CNN" for MNIST: conv1, conv2, one FC layer, the head.

The paper shows the network only in a missing figure; its sizes here (5x5
kernels, 10 and 20 channels, no padding, a 2x2 max-pool after each conv, 50
hidden units: "3 layers deep") are an assumption, the common small MNIST CNN.
At 28x28 the maps go 28 -> 24 -> 12 -> 8 -> 4, so fc3 sees 20 * 4 * 4 = 320 values.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from transferlab.models.base import TransferableNet

KERNEL = 5


def build_twoconv(in_shape: tuple[int, int, int], num_classes: int,
                  channels: tuple[int, int] = (10, 20), hidden: int = 50) -> TransferableNet:
    depth, height, width = in_shape
    side = min(height, width)
    if side < 16:
        raise ValueError(f"twoconv needs inputs of at least 16x16 pixels (two unpadded 5x5 "
                         f"convolutions and pools), got {height}x{width}")
    c1, c2 = channels

    def shrink(px: int) -> int:
        return ((px - KERNEL + 1) // 2 - KERNEL + 1) // 2

    flat = c2 * shrink(height) * shrink(width)
    layers = OrderedDict(
        conv1=nn.Sequential(nn.Conv2d(depth, c1, KERNEL), nn.MaxPool2d(2), nn.ReLU(inplace=True)),
        conv2=nn.Sequential(nn.Conv2d(c1, c2, KERNEL), nn.MaxPool2d(2), nn.ReLU(inplace=True)),
        fc3=nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(inplace=True)),
    )
    return TransferableNet(layers, hidden, num_classes)
