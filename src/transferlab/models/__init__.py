"""Architectures, each exposing its ordered transferable layers.

The registry stays free of torch imports so that params validation, data
preparation and reporting start fast; `build_model` imports the architecture.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transferlab.models.base import TransferableNet


@dataclass(frozen=True)
class Architecture:
    layer_names: tuple[str, ...]
    builder: str  # "module:function"


ARCHITECTURES: dict[str, Architecture] = {
    "convnet": Architecture(
        ("conv1", "conv2", "conv3", "conv4", "fc5"),
        "transferlab.models.convnet:build_convnet",
    ),
}


def layer_names_of(arch: str) -> tuple[str, ...]:
    return ARCHITECTURES[arch].layer_names


def build_model(arch: str, in_shape: tuple[int, int, int], num_classes: int,
                **model_params) -> TransferableNet:
    module, func = ARCHITECTURES[arch].builder.split(":")
    model = getattr(importlib.import_module(module), func)(in_shape, num_classes, **model_params)
    if tuple(model.layer_names) != ARCHITECTURES[arch].layer_names:
        raise RuntimeError(f"arch {arch!r} built layers {model.layer_names}, "
                           f"declared {ARCHITECTURES[arch].layer_names}")
    return model


__all__ = ["ARCHITECTURES", "Architecture", "build_model", "layer_names_of"]
