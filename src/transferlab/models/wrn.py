"""Wide ResNet for 32x32 inputs (Borthakur & Einhorn: WRN-28-10, dropout 0.3).

Layers: `conv1` (3x3 conv to 16 channels), `block{b}.unit{i}` (pre-activation
residual units: BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3 plus the shortcut, a
1x1 conv on the pre-activated input where the width or stride changes), with
16k, 32k and 64k channels in the three groups (k = `widen`) and stride 2 at
the start of groups 2 and 3, then `final` (BN-ReLU-global average pool, the
head's input). (depth - 4) / 6 units per group.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from transferlab.models.base import TransferableNet, check_input_size
from transferlab.models.densenet import bn_relu_pool, init_conv_bn


class WideUnit(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, dropout: float):
        super().__init__()
        self.pre = nn.Sequential(nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True))
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False),
        )
        self.shortcut = None
        if in_ch != out_ch or stride != 1:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.pre(x)
        skip = x if self.shortcut is None else self.shortcut(act)
        return self.body(act) + skip


def build_wrn(in_shape: tuple[int, int, int], num_classes: int, depth: int = 28,
              widen: int = 10, dropout: float = 0.3) -> TransferableNet:
    from transferlab.models import layer_names_of

    in_ch, height, width = check_input_size("wrn", in_shape, 4, "strides twice by 2")
    if widen < 1:
        raise ValueError(f"model.wrn.widen = {widen}: must be at least 1")
    names = layer_names_of("wrn", {"depth": depth})  # validates depth
    per_block = sum(1 for n in names if n.startswith("block1."))

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["conv1"] = nn.Conv2d(in_ch, 16, 3, padding=1, bias=False)
    channels = 16
    for b, (out, stride) in enumerate(((16 * widen, 1), (32 * widen, 2), (64 * widen, 2)), 1):
        for i in range(1, per_block + 1):
            layers[f"block{b}.unit{i}"] = WideUnit(channels, out, stride if i == 1 else 1,
                                                   dropout)
            channels = out
    layers["final"] = bn_relu_pool(channels)
    model = TransferableNet(layers, channels, num_classes)
    init_conv_bn(model)
    return model
