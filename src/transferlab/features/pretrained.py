"""torchvision classification models as feature sources, with weights from a local file.

`source_model: "torchvision:resnet18"` builds the torchvision model with
weights=None and loads a state dict from a file; nothing is downloaded (this
machine has no internet). Features come from named graph nodes through
`torchvision.models.feature_extraction.create_feature_extractor`.

Inputs: uint8 (N, C, H, W) images are scaled to [0, 1], resized to
input_size x input_size, 1-channel images repeated to 3, and normalised with
the ImageNet mean and std the torchvision weights were trained with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

TORCHVISION_PREFIX = "torchvision:"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def classification_models() -> list[str]:
    from torchvision import models

    return models.list_models(module=models)


def weights_help(name: str, path: str | Path) -> str:
    """How to get the weights file on a machine with internet."""
    from torchvision.models import get_model_weights

    try:
        url = get_model_weights(name).DEFAULT.url
    except (ValueError, AttributeError):
        url = None
    where = f"download {url} " if url else ""
    return (f"torchvision weights cannot be downloaded on this machine; put the state-dict "
            f"file of {name!r} at {path}. On a machine with internet, {where}or run: python -c "
            f"\"import torch, torchvision; torch.save(torchvision.models.get_model('{name}', "
            f"weights='DEFAULT').state_dict(), '{Path(path).name}')\" and copy the file here")


def build_torchvision_model(name: str, weights: str | Path) -> nn.Module:
    """torchvision model `name` (weights=None) with its state dict loaded from `weights`."""
    from torchvision.models import get_model

    known = classification_models()
    if name not in known:
        raise ValueError(f"features.source_model = {TORCHVISION_PREFIX}{name}: not a torchvision "
                         "classification model; allowed: " + ", ".join(known))
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"features.weights: {path} not found. " + weights_help(name, path))
    model = get_model(name, weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"features.weights: {path} does not hold the weights of torchvision "
                         f"{name!r}: {err}") from err
    return model.eval()


def node_names(model: nn.Module) -> list[str]:
    """Graph node names usable as feature layers (the eval-mode graph)."""
    from torchvision.models.feature_extraction import get_graph_node_names

    return list(get_graph_node_names(model)[1])


def check_nodes(model: nn.Module, nodes: list[str], name: str = "model") -> None:
    """A node is a graph node name or a submodule's name (its output: the last node inside)."""
    valid = node_names(model)
    modules = {n.rsplit(".", 1)[0] for n in valid if "." in n}
    modules |= {m.split(".")[0] for m in modules}
    unknown = [n for n in nodes if n not in valid and n not in modules]
    if unknown:
        # The full list runs to dozens or hundreds of nodes; name the top-level ones.
        tops = list(dict.fromkeys(n.split(".")[0] for n in valid))
        raise KeyError(f"features.layers: {unknown} are not nodes of torchvision {name!r}; "
                       f"top-level ones: {', '.join(tops)} (all {len(valid)}: e.g. "
                       f"{', '.join(valid[5:12])}, ...; list them with "
                       "torchvision.models.feature_extraction.get_graph_node_names)")


def prepare_input(images: np.ndarray, pixel_max: int, input_size: int,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, C, H, W), C = 1 or 3 -> float (N, 3, size, size), ImageNet-normalised."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"torchvision models take images shaped (N, 1 or 3, H, W); "
                         f"got {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device=device, dtype=torch.float32)
    x = x / pixel_max
    if x.shape[2:] != (input_size, input_size):
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear",
                          align_corners=False, antialias=True)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class TorchvisionFeatures:
    """Callable: uint8 batch -> {node: tensor}, for `features.write_features`.

    `nodes` (features.layers) and `input_size` (features.input_size) come checked by
    the params schema.
    """

    def __init__(self, name: str, weights: str | Path, nodes: list[str], *,
                 input_size: int, pixel_max: int = 255, device: torch.device | str = "cpu"):
        from torchvision.models.feature_extraction import create_feature_extractor

        model = build_torchvision_model(name, weights)
        check_nodes(model, nodes, name)
        self.nodes = list(nodes)
        self.input_size = input_size
        self.pixel_max = pixel_max
        self.device = torch.device(device)
        self.extractor = create_feature_extractor(model, return_nodes=self.nodes).to(
            self.device).eval()

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> dict[str, torch.Tensor]:
        x = prepare_input(images, self.pixel_max, self.input_size, self.device)
        return dict(self.extractor(x))
