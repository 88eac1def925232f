"""AlexNet as in the Caffe reference model the thesis (Soekhoe) trains at 57x57.

conv1 96 11x11/4, ReLU, max-pool 3/2, LRN; conv2 256 5x5 (2 groups), ReLU,
max-pool 3/2, LRN; conv3 384 3x3; conv4 384 3x3 (2 groups); conv5 256 3x3
(2 groups), max-pool; fc6 and fc7 4096 with ReLU and dropout 0.5; head fc8.
Pools round up as Caffe's do. The pool after conv5 is a global max-pool: at
57x57 and 64x64 inputs conv5's map is 3x3, where Caffe's 3/2 pool gives the
same single value, and it also lets 32x32 inputs (conv5 map 1x1) through.
So fc6 always sees conv5's channels (256 by default). Initialisation is
PyTorch's default rather than Caffe's Gaussian fillers.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from transferlab.models.base import TransferableNet


def build_alexnet(in_shape: tuple[int, int, int], num_classes: int,
                  channels: list[int] | tuple[int, ...] = (96, 256, 384, 384, 256),
                  fc: int = 4096, groups: int = 2, lrn: bool = True,
                  dropout: float = 0.5) -> TransferableNet:
    in_ch, height, width = in_shape
    if min(height, width) < 27:
        raise ValueError(f"alexnet needs inputs of at least 27x27 pixels (an 11x11/4 conv1 "
                         f"and two 3/2 pools), got {height}x{width}")
    if len(channels) != 5:
        raise ValueError(f"model.alexnet.channels = {list(channels)}: give 5 widths, "
                         "one per conv layer")
    c1, c2, c3, c4, c5 = channels
    for key, chans in (("conv2", (c1, c2)), ("conv4", (c3, c4)), ("conv5", (c4, c5))):
        if any(c % groups for c in chans):
            raise ValueError(f"model.alexnet.groups = {groups}: {key}'s input and output "
                             f"channels {chans} must be divisible by it")

    def conv(cin: int, cout: int, k: int, stride: int, pad: int, g: int, pool: bool,
             norm: bool) -> nn.Sequential:
        parts: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, pad, groups=g),
                                  nn.ReLU(inplace=True)]
        if pool:
            parts.append(nn.MaxPool2d(3, 2, ceil_mode=True))
        if norm and lrn:
            parts.append(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0))
        return nn.Sequential(*parts)

    def full(fin: int, fout: int, flatten: bool) -> nn.Sequential:
        parts: list[nn.Module] = [nn.Flatten()] if flatten else []
        parts += [nn.Linear(fin, fout), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        return nn.Sequential(*parts)

    conv5 = conv(c4, c5, 3, 1, 1, groups, pool=False, norm=False)
    conv5.append(nn.AdaptiveMaxPool2d(1))
    layers = OrderedDict(
        conv1=conv(in_ch, c1, 11, 4, 0, 1, pool=True, norm=True),
        conv2=conv(c1, c2, 5, 1, 2, groups, pool=True, norm=True),
        conv3=conv(c2, c3, 3, 1, 1, 1, pool=False, norm=False),
        conv4=conv(c3, c4, 3, 1, 1, groups, pool=False, norm=False),
        conv5=conv5,
        fc6=full(c5, fc, flatten=True),
        fc7=full(fc, fc, flatten=False),
    )
    return TransferableNet(layers, fc, num_classes)
