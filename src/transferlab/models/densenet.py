"""DenseNet-BC for 32x32 inputs (Borthakur & Einhorn: L = 100, k = 12, 3 dense blocks).

Layers: `conv0` (3x3 conv to 2k channels), `block{b}.layer{i}` (bottleneck
BN-ReLU-conv1x1 to 4k, BN-ReLU-conv3x3 to k; it returns its input with the k
new channels appended, so running the layer list in order is the dense
connectivity), `trans1`, `trans2` (BN-ReLU-conv1x1 compressing the channels by
`compression`, 2x2 average pool) and `final` (BN-ReLU-global average pool,
the head's input). Depth counts the convolutions plus conv0, the two
transitions and the classifier: (depth - 4) / 6 bottleneck layers per block.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from transferlab.models.base import TransferableNet, check_input_size


class DenseLayer(nn.Module):
    def __init__(self, in_ch: int, growth: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True),
            nn.Conv2d(in_ch, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth), nn.ReLU(inplace=True),
            nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], 1)


def _transition(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True),
                         nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.AvgPool2d(2))


def build_densenet_bc(in_shape: tuple[int, int, int], num_classes: int, depth: int = 100,
                      growth: int = 12, compression: float = 0.5) -> TransferableNet:
    from transferlab.models import layer_names_of

    in_ch, height, width = check_input_size("densenet_bc", in_shape, 4, "pools twice by 2")
    if not 0 < compression <= 1:
        raise ValueError(f"model.densenet_bc.compression = {compression}: must be in (0, 1]")
    names = layer_names_of("densenet_bc", {"depth": depth})  # validates depth
    per_block = sum(1 for n in names if n.startswith("block1."))

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels = 2 * growth
    layers["conv0"] = nn.Conv2d(in_ch, channels, 3, padding=1, bias=False)
    for b in (1, 2, 3):
        for i in range(1, per_block + 1):
            layers[f"block{b}.layer{i}"] = DenseLayer(channels, growth)
            channels += growth
        if b < 3:
            out = int(math.floor(channels * compression))
            layers[f"trans{b}"] = _transition(channels, out)
            channels = out
    layers["final"] = bn_relu_pool(channels)
    model = TransferableNet(layers, channels, num_classes)
    init_conv_bn(model)
    return model


def bn_relu_pool(channels: int) -> nn.Sequential:
    """The last transferable layer of the CIFAR-style nets: BN, ReLU, global average pool.

    A layer of its own because its batch norm has parameters to transfer.
    """
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def init_conv_bn(model: nn.Module) -> None:
    """He-normal convolutions, unit BN scale, zero biases (the CIFAR recipe)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
