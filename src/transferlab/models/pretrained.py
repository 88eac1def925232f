"""Arch `pretrained`: a torchvision or timm network as the source network of the treatments.

Every model the registry builds for this arch starts from the library's own random
initialisation: model B (the selffer control, trained from scratch on the target
classes by the usual pretrain recipe), each sweep variant's fresh network, and the
networks that then load models/A.pt. The pretrained weights are read by one stage only,
pretrain@A (`load_source`), which writes them as models/A.pt in the project's
checkpoint format; the stages after it load model A from there as they load any
model A. What a network is made of is transferlab.models.hub's concern; this module
only fits it to the registry and to the offline machine.
"""

from __future__ import annotations

from pathlib import Path

from transferlab.config.spec import ConfigurationError
from transferlab.models.base import TransferableNet
from transferlab.models.hub import build_hub_model, weights_origin


class WeightsUnavailable(ConfigurationError):
    """The pretrained weights are neither in the given file nor in the library's cache
    (and cannot be downloaded here)."""


def build_pretrained(in_shape: tuple[int, int, int], num_classes: int, *, name: str,
                     weights: str | None = None) -> TransferableNet:
    """The network `name`, untrained (`weights` is read by pretrain@A only)."""
    channels = in_shape[0]
    if channels != 3:
        # ImageNet networks take RGB; prepare repeats grey images when it normalises for
        # the weights, so another channel count means the data was prepared for another arch.
        raise ValueError(f"arch pretrained ({name}) takes 3-channel images, got {channels}: "
                         "prepare them with recipe.yaml:data.normalise=pretrained, which "
                         "repeats grey images to 3 channels")
    return build_hub_model(name, num_classes, pretrained=False)


def where_to_get(name: str) -> str:
    """How to get the weights of `name` onto an offline machine: URL and hash."""
    url, digest = weights_origin(name)
    if url is None:
        return (f"the library gives no download URL for {name}: save the state dict of the "
                "library's pretrained model (torch.save(model.state_dict(), path)) on a "
                "machine with internet")
    check = f" (its hash: {digest})" if digest else ""
    return f"on a machine with internet, download {url}{check}"


def load_source(name: str, weights: str | Path | None, num_classes: int) -> TransferableNet:
    """The pretrained network `name` with its weights: the state-dict file `weights`, or
    the library's own cache when None (downloading only when online); a new head for
    `num_classes` classes. Missing weights raise `WeightsUnavailable` naming the URL
    and hash to fetch them from."""
    then = (" and put the file under data.root (e.g. data/raw/weights/), then run with "
            "-S model.pretrained.weights=<its path>")
    if weights is not None:
        if not Path(weights).is_file():
            raise WeightsUnavailable(f"params: model.pretrained.weights = {str(weights)!r}: "
                                     f"no such file. {where_to_get(name).capitalize()}{then}")
        return build_hub_model(name, num_classes, weights)
    try:
        return build_hub_model(name, num_classes, None)
    except (OSError, RuntimeError) as err:  # no cached file, no network (URLError: OSError)
        why = (str(err).splitlines() or [type(err).__name__])[0]
        raise WeightsUnavailable(
            f"params: model.pretrained.weights = null: the weights of {name} are not in the "
            f"library's cache and cannot be downloaded here ({why}). "
            f"{where_to_get(name).capitalize()}{then}") from err
