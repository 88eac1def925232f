"""Architectures, each exposing its ordered transferable layers.

The registry stays free of torch imports so that params validation, data
preparation and reporting start fast: every architecture declares its layer
names as a plain function of its keyword arguments, and `build_model` imports
the torch module only when a model is actually built (and checks that the
built layers match the declared names). The one exception is arch `pretrained`
(a torchvision or timm network, transferlab.models.pretrained): its layers are
derived from the library's model itself, so naming them imports torch, and only
when that arch is chosen.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from transferlab.config import bounds as bound
from transferlab.config.spec import Bool, Float, Int, List, Spec, Text, fail

if TYPE_CHECKING:
    from transferlab.models.base import TransferableNet

NamesFn = Callable[..., Sequence[str]]


@dataclass(frozen=True)
class Architecture:
    """How to build one architecture and name its layers without building it.

    `builder` and (if a string) `layer_names` are "module:function"; both are
    called with the model kwargs. `options` declares each kwarg's type and
    bounds: the `model.<arch>` section of params is checked against it (its
    values, defaults included, live in params.yaml only).
    """

    builder: str
    layer_names: str | NamesFn
    options: dict[str, Spec] = field(default_factory=dict)


def _convnet_names(**_: Any) -> tuple[str, ...]:
    return ("conv1", "conv2", "conv3", "conv4", "fc5")


def _twoconv_names(**_: Any) -> tuple[str, ...]:
    return ("conv1", "conv2", "fc3")


def _alexnet_names(**_: Any) -> tuple[str, ...]:
    return ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")


def _blocks_per_stage(arch: str, depth: Any, convs_per_unit: int) -> int:
    """Units per stage for the 3-stage CIFAR nets: depth = 3 * units * convs + 4."""
    step = 3 * convs_per_unit
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 4 + step \
            or (depth - 4) % step:
        raise ValueError(f"model.{arch}.depth = {depth!r}: must be an integer of the form "
                         f"{step} * k + 4 with k >= 1 (e.g. {step + 4}, {2 * step + 4}, ...)")
    return (depth - 4) // step


def _densenet_names(depth: int = 100, **_: Any) -> tuple[str, ...]:
    # Bottleneck layers hold two convolutions each (1x1 then 3x3).
    per_block = _blocks_per_stage("densenet_bc", depth, 2)
    names = ["conv0"]
    for b in (1, 2, 3):
        names += [f"block{b}.layer{i}" for i in range(1, per_block + 1)]
        names.append(f"trans{b}" if b < 3 else "final")
    return tuple(names)


def _wrn_names(depth: int = 28, **_: Any) -> tuple[str, ...]:
    per_block = _blocks_per_stage("wrn", depth, 2)
    names = ["conv1"]
    for b in (1, 2, 3):
        names += [f"block{b}.unit{i}" for i in range(1, per_block + 1)]
    return (*names, "final")


def _feedback_names(**_: Any) -> tuple[str, ...]:
    return ("stem", *(f"lstm{i}" for i in range(1, 13)))


HUB_LIBRARIES = ("torchvision", "timm")


@dataclass(frozen=True)
class HubName(Text):
    """`<library>:<model>`; whether the library knows the model is checked when the
    arch is chosen (its layer names are derived then, transferlab.models.hub)."""

    what: str = '"torchvision:<model>" or "timm:<model>", e.g. torchvision:resnet18'

    def _check(self, key: str, value: Any) -> str:
        text = super()._check(key, value)
        library, _, model = text.partition(":")
        if library not in HUB_LIBRARIES or not model:
            raise fail(key, value, self._allowed())
        return text


@functools.lru_cache(maxsize=16)
def _pretrained_names(name: str = "torchvision:resnet18", **_: Any) -> tuple[str, ...]:
    # Cached: params.layer_names is asked many times, and each answer builds the model
    # (on the meta device: no weights, no download).
    from transferlab.models.hub import hub_layer_names

    return tuple(hub_layer_names(name))


_DROPOUT = Float(lo=0.0, hi=1.0, hi_open=True)
# Upper bounds of the shapes, and why: transferlab.config.bounds.
_CHANNELS = Int(lo=1, hi=bound.CHANNELS)
_UNITS = Int(lo=1, hi=bound.UNITS)
_DEPTH = Int(lo=10, hi=bound.DEPTH, why="6 k + 4")

ARCHITECTURES: dict[str, Architecture] = {
    "convnet": Architecture(
        builder="transferlab.models.convnet:build_convnet",
        layer_names=_convnet_names,
        options={"width": _CHANNELS, "hidden": _UNITS},
    ),
    "alexnet": Architecture(
        builder="transferlab.models.alexnet:build_alexnet",
        layer_names=_alexnet_names,
        options={"channels": List(item=_CHANNELS, length=5, unique=False), "fc": _UNITS,
                 "groups": Int(lo=1, hi=bound.GROUPS), "lrn": Bool(), "dropout": _DROPOUT},
    ),
    "densenet_bc": Architecture(
        builder="transferlab.models.densenet:build_densenet_bc",
        layer_names=_densenet_names,
        options={"depth": _DEPTH, "growth": Int(lo=1, hi=bound.GROWTH),
                 "compression": Float(lo=0.0, lo_open=True, hi=1.0)},
    ),
    "wrn": Architecture(
        builder="transferlab.models.wrn:build_wrn",
        layer_names=_wrn_names,
        options={"depth": _DEPTH, "widen": Int(lo=1, hi=bound.WIDEN), "dropout": _DROPOUT},
    ),
    "feedback": Architecture(
        builder="transferlab.models.feedback:build_feedback",
        layer_names=_feedback_names,
        options={"iterations": Int(lo=1, hi=bound.ITERATIONS), "width": _CHANNELS,
                 "hidden": _UNITS, "dropout": _DROPOUT},
    ),
    "twoconv": Architecture(  # Sharma's two-conv-layer MNIST network
        builder="transferlab.models.twoconv:build_twoconv",
        layer_names=_twoconv_names,
        options={"channels": List(item=_CHANNELS, length=2, unique=False), "hidden": _UNITS},
    ),
    # A torchvision or timm network; pretrain@A loads its weights (model A), everything
    # else builds it untrained (transferlab.models.pretrained).
    "pretrained": Architecture(
        builder="transferlab.models.pretrained:build_pretrained",
        layer_names=_pretrained_names,
        options={"name": HubName(),
                 "weights": Text(nullable=True, what="a state-dict file under data.root "
                                 "(null: the library's own cache)")},
    ),
}


def _architecture(arch: str) -> Architecture:
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"arch = {arch!r}: not one of " + ", ".join(ARCHITECTURES)) from None


def model_kwargs_of(arch: str, model_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`model_kwargs` as a dict; unknown keys are an error (missing ones take the
    builder's own defaults, for library use; params always give every key)."""
    spec = _architecture(arch)
    given = dict(model_kwargs or {})
    unknown = sorted(set(given) - set(spec.options))
    if unknown:
        raise ValueError(f"model kwargs {unknown} are not options of arch {arch!r}; "
                         f"allowed: {', '.join(spec.options) or '(none)'}")
    return given


def _resolve(ref: str) -> Callable[..., Any]:
    module, func = ref.split(":")
    return getattr(importlib.import_module(module), func)


def layer_names_of(arch: str, model_kwargs: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The ordered transferable layer names, computed without importing torch."""
    spec = _architecture(arch)
    names_fn = _resolve(spec.layer_names) if isinstance(spec.layer_names, str) \
        else spec.layer_names
    return tuple(names_fn(**model_kwargs_of(arch, model_kwargs)))


def build_model(arch: str, in_shape: tuple[int, int, int], num_classes: int,
                **model_kwargs: Any) -> TransferableNet:
    kwargs = model_kwargs_of(arch, model_kwargs)
    model = _resolve(_architecture(arch).builder)(tuple(in_shape), num_classes, **kwargs)
    declared = layer_names_of(arch, kwargs)
    if tuple(model.layer_names) != declared:
        raise RuntimeError(f"arch {arch!r} built layers {model.layer_names}, declared {declared}")
    return model


__all__ = ["ARCHITECTURES", "Architecture", "build_model", "layer_names_of", "model_kwargs_of"]
