"""The model contract: an ordered list of transferable layers plus a new head."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class TransferableNet(nn.Module):
    """Runs `layers` in order, then `head`.

    Transfer, freezing and feature extraction address layers by their position
    in `layer_names`; no code outside models/ knows what a layer contains.
    """

    def __init__(self, layers: OrderedDict[str, nn.Module], head_in: int, num_classes: int):
        super().__init__()
        self.layers = nn.ModuleDict(layers)
        self.head = nn.Linear(head_in, num_classes)

    @property
    def layer_names(self) -> list[str]:
        return list(self.layers.keys())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers.values():
            x = layer(x)
        return self.head(x)

    def activations(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        """Outputs of the named layers, stopping after the last one asked for."""
        wanted = set(names)
        unknown = wanted - set(self.layers)
        if unknown:
            raise KeyError(f"unknown layer(s) {sorted(unknown)}; layers: {self.layer_names}")
        out: dict[str, torch.Tensor] = {}
        for name, layer in self.layers.items():
            x = layer(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return out
