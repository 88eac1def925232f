"""The model contract: an ordered list of transferable layers plus a new head."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn


def _check_names(names: list[str]) -> None:
    if len(set(names)) != len(names):
        raise ValueError(f"layer names repeat: {names}")
    for name in names:
        if not name or not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(f"layer name {name!r}: use identifiers joined by dots, "
                             "e.g. 'conv1' or 'block2.layer9'")
    for name in names:
        for other in names:
            if other.startswith(name + "."):
                raise ValueError(f"layer name {name!r} is a prefix of layer {other!r}")


class TransferableNet(nn.Module):
    """Runs the layers in order, then `head`.

    Transfer, freezing and feature extraction address layers by their position
    in `layer_names` and reach them through `layer(name)`; no code outside
    models/ knows what a layer contains. Layer names may contain dots
    (`block2.layer9`): each dot opens a nested ModuleDict under `layers`, so
    that layer's parameters are `layers.block2.layer9.*` in the state dict.
    Every head parameter lives under `head.`, every transferable one under
    `layers.`; nothing else holds parameters.

    The head is `nn.Linear(head_in, num_classes)` unless a ready `head`
    module is given; `head_in` is the size of the head's input (`embed_dim`).
    Subclasses that run several iterations (the feedback net) override
    `iteration_embeddings` and set `num_iterations`; `forward` is always the
    last iteration's logits.
    """

    num_iterations: int = 1

    def __init__(self, layers: Mapping[str, nn.Module] | Iterable[tuple[str, nn.Module]],
                 head_in: int, num_classes: int | None = None, head: nn.Module | None = None):
        super().__init__()
        items = list(layers.items()) if isinstance(layers, Mapping) else list(layers)
        names = [name for name, _ in items]
        _check_names(names)
        self.layers = nn.ModuleDict()
        for name, module in items:
            *parents, leaf = name.split(".")
            container = self.layers
            for part in parents:
                if part not in container:
                    container[part] = nn.ModuleDict()
                container = container[part]
            container[leaf] = module
        self._layer_names = names
        if head is None:
            if num_classes is None:
                raise ValueError("give num_classes (for a linear head) or a ready head module")
            head = nn.Linear(head_in, num_classes)
        self.head = head
        self.embed_dim = head_in
        self.num_classes = num_classes

    @property
    def layer_names(self) -> list[str]:
        return list(self._layer_names)

    def layer(self, name: str) -> nn.Module:
        if name not in self._layer_names:
            raise KeyError(f"unknown layer {name!r}; layers: {self._layer_names}")
        return self.layers.get_submodule(name)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The head's input (of the last iteration)."""
        for name in self._layer_names:
            x = self.layer(name)(x)
        return x

    def iteration_embeddings(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The head's input after each iteration; one entry for ordinary nets."""
        return [self.embed(x)]

    def outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits after each iteration, from one pass through the layers."""
        return [self.head(e) for e in self.iteration_embeddings(x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    def _check_wanted(self, names: Iterable[str]) -> set[str]:
        wanted = set(names)
        unknown = wanted - set(self._layer_names)
        if unknown:
            raise KeyError(f"unknown layer(s) {sorted(unknown)}; layers: {self.layer_names}")
        return wanted

    def activations(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        """Outputs of the named layers, stopping after the last one asked for."""
        wanted = self._check_wanted(names)
        out: dict[str, torch.Tensor] = {}
        for name in self._layer_names:
            x = self.layer(name)(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return out


def check_input_size(arch: str, in_shape: tuple[int, int, int], minimum: int, why: str
                     ) -> tuple[int, int, int]:
    """(channels, height, width) of `in_shape`, or a clear error when it is too small."""
    channels, height, width = in_shape
    if min(height, width) < minimum:
        raise ValueError(f"{arch} {why}; inputs must be at least {minimum}x{minimum}, "
                         f"got {height}x{width}")
    return channels, height, width
