"""The default small CNN: conv1..conv4, fc5, for the 8x8 digits and larger."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from transferlab.models.base import TransferableNet


def build_convnet(in_shape: tuple[int, int, int], num_classes: int, width: int = 32,
                  hidden: int = 128) -> TransferableNet:
    """Two conv pairs, each pair ending in a 2x2 max-pool, then one FC layer.

    At 8x8 input the maps go 8 -> 4 -> 2, so the digits need no upsampling.
    """
    channels, height, width_px = in_shape
    if height < 4 or width_px < 4:
        raise ValueError(f"convnet needs inputs of at least 4x4 pixels, got {height}x{width_px}")
    w1, w2 = width, 2 * width
    flat = w2 * (height // 4) * (width_px // 4)

    def conv(cin: int, cout: int, pool: bool) -> nn.Sequential:
        parts: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
        if pool:
            parts.append(nn.MaxPool2d(2))
        return nn.Sequential(*parts)

    layers = OrderedDict(
        conv1=conv(channels, w1, pool=False),
        conv2=conv(w1, w1, pool=True),
        conv3=conv(w1, w2, pool=False),
        conv4=conv(w2, w2, pool=True),
        fc5=nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(inplace=True)),
    )
    return TransferableNet(layers, hidden, num_classes)
