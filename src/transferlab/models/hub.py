"""torchvision and timm classification models as `TransferableNet`s.

A pretrained source is named `torchvision:<model>` or `timm:<model>`
(`model.pretrained.name`). Its ordered layers come from the library's model
itself (`hub_families.split`), its weights from a local state-dict file or the
library's own cache, its preprocessing from the weights' metadata.

Weights (`model.pretrained.weights`):
- a file: the library model's own `state_dict()` (`torch.save` or
  safetensors), loaded strictly;
- None: the library's cache, downloaded into it when the machine is online.
  torchvision: `<torch.hub.get_dir()>/checkpoints/<file name of the weights
  URL>`, whose sha256 must start with the hash in that name (torchvision's own
  rule). timm: the Hugging Face hub cache of the model's `hf_hub_id`, whose
  blob name is the file's sha256.

The library model is built as the library builds it for its DEFAULT weights
(googlenet / inception_v3 with `transform_input=True`, ViTs at the weights'
image size), so the logits match the library's with the same weights.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferlab.io import file_digest
from transferlab.models.base import TransferableNet
from transferlab.models.hub_families import split

KEY = "model.pretrained.name"
WEIGHTS_KEY = "model.pretrained.weights"
LIBRARIES = ("torchvision", "timm")
TIMM_MISSING = "timm models need the optional extra: pip install -e '.[timm]'"
# Parts of the library models that no layer holds and no file must provide:
# the auxiliary heads (torchvision's pretrained googlenet has none).
_AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")


@dataclass(frozen=True)
class Preprocessing:
    """What the weights were trained on: resize the shorter side to `resize`,
    centre-crop `crop` x `crop`, normalise with `mean` / `std` (on [0, 1] pixels)."""

    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ImportError(TIMM_MISSING) from None
    return timm


def _torchvision_models() -> list[str]:
    from torchvision import models

    return models.list_models(module=models)


def parse_hub_name(name: str) -> tuple[str, str]:
    """("torchvision" | "timm", model name) of `torchvision:<name>` / `timm:<name>`."""
    library, sep, model = str(name).partition(":")
    if not sep or library not in LIBRARIES or not model:
        raise ValueError(f"{KEY} = {name!r}: write torchvision:<model> (e.g. "
                         "torchvision:resnet18) or timm:<model> (e.g. timm:resnet18)")
    if library == "torchvision":
        known = _torchvision_models()
        if model not in known:
            raise ValueError(f"{KEY} = {name!r}: not a torchvision classification model; "
                             f"known: {', '.join(known)}")
    elif not _timm().is_model(model):
        raise ValueError(f"{KEY} = {name!r}: not a timm model (timm.list_models() lists "
                         "them; a pretrained tag may follow a dot, e.g. resnet18.a1_in1k)")
    return library, model


def _torchvision_weights(model: str) -> Any:
    from torchvision.models import get_model_weights

    return get_model_weights(model).DEFAULT


def _torchvision_kwargs(model: str, pretrained: bool) -> dict[str, Any]:
    """The builder arguments torchvision itself sets for its DEFAULT weights."""
    kwargs: dict[str, Any] = {}
    if model in ("googlenet", "inception_v3"):
        # Aux heads built (so files with them load) and dropped by the split;
        # init_weights given so that torchvision does not warn about its default.
        kwargs.update(transform_input=pretrained, aux_logits=True, init_weights=not pretrained)
    if pretrained and model.startswith("vit_"):
        kwargs["image_size"] = _torchvision_weights(model).meta["min_size"][0]
    if pretrained and model.startswith("maxvit"):
        kwargs["input_size"] = _torchvision_weights(model).meta["min_size"]
    return kwargs


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Every parameter created inside goes to the meta device (no memory, no init).

    `torch.device("meta")` as a context cannot build RegNet (its builder computes
    the stage widths with tensors and reads them back) nor timm models (drop-path
    rates from torch.linspace), so parameters are moved as they are registered.
    It patches nn.Module while the block runs: build in one thread at a time.
    """
    register = nn.Module.register_parameter

    def to_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = to_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def _library_model(library: str, model: str, *, pretrained: bool,
                   **overrides: Any) -> nn.Module:
    """The library's model with random weights, built as for its DEFAULT weights."""
    if library == "torchvision":
        from torchvision.models import get_model

        kwargs = {**_torchvision_kwargs(model, pretrained), **overrides}
        return get_model(model, weights=None, **kwargs)
    return _timm().create_model(model, pretrained=False, **overrides)


@functools.lru_cache(maxsize=64)
def hub_layer_names(name: str) -> tuple[str, ...]:
    """The ordered transferable layer names, from the model built on the meta device."""
    library, model = parse_hub_name(name)
    with _parameters_on_meta():
        return tuple(n for n, _ in split(_library_model(library, model, pretrained=True)).layers)


def weights_origin(name: str) -> tuple[str | None, str | None]:
    """(download URL, hash) of the DEFAULT weights: torchvision's sha256 prefix (from
    the file name), None for timm (the Hugging Face hub checks its own files)."""
    library, model = parse_hub_name(name)
    if library == "torchvision":
        try:
            url = _torchvision_weights(model).url
        except (ValueError, AttributeError):
            return None, None
        found = re.search(r"-([a-f0-9]+)\.", url.rsplit("/", 1)[-1])
        return url, found.group(1) if found else None
    cfg = _timm().models.get_pretrained_cfg(model)
    if cfg is None:
        return None, None
    if cfg.hf_hub_id:
        repo = cfg.hf_hub_id.split("@")[0]
        return f"https://huggingface.co/{repo}/resolve/main/model.safetensors", None
    return cfg.url or None, None


def _save_hint(library: str, model: str) -> str:
    if library == "torchvision":
        build = (f"import torch, torchvision; m = torchvision.models.get_model('{model}', "
                 "weights='DEFAULT')")
    else:
        build = f"import torch, timm; m = timm.create_model('{model}', pretrained=True)"
    return (f"or, on a machine with internet, run: python -c \"{build}; "
            f"torch.save(m.state_dict(), '{model}.pth')\", copy the file under data.root "
            f"and give it as {WEIGHTS_KEY}")


def _download(url: str, dst: Path, hash_prefix: str | None) -> None:
    """torch.hub's download into the cache; it checks the sha256 prefix."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(dst), hash_prefix=hash_prefix, progress=False)


def _torchvision_cached(name: str, model: str) -> Path:
    url, prefix = weights_origin(name)
    if url is None:
        raise ValueError(f"{KEY} = {name!r}: torchvision has no pretrained weights for it; "
                         f"give a state-dict file as {WEIGHTS_KEY}")
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if not path.is_file():
        try:
            _download(url, path, prefix)
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            raise FileNotFoundError(
                f"{WEIGHTS_KEY} = null: the torchvision weights of {model!r} are not in the "
                f"torch hub cache and cannot be downloaded here ({err}). Download {url} "
                f"(its sha256 starts with {prefix}) and put it at {path}, "
                + _save_hint("torchvision", model)) from err
    digest = file_digest(path)
    if prefix and not digest.startswith(prefix):
        raise ValueError(f"{WEIGHTS_KEY} = null: {path} has sha256 {digest}, but its name says "
                         f"it starts with {prefix}: a damaged or wrong file; delete it and "
                         f"download {url} again")
    return path


def _timm_cached(name: str, model: str) -> Path:
    timm = _timm()
    cfg = timm.models.get_pretrained_cfg(model)
    repo = (cfg.hf_hub_id or "").split("@")[0] if cfg is not None else ""
    url, _ = weights_origin(name)
    if not repo:
        raise FileNotFoundError(f"{WEIGHTS_KEY} = null: timm {model!r} has no Hugging Face hub "
                                f"weights to look up ({url or 'no URL either'}); "
                                + _save_hint("timm", model))
    import huggingface_hub

    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = huggingface_hub.try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            path = Path(found)
            break
    else:
        try:
            path = Path(huggingface_hub.hf_hub_download(repo, "model.safetensors"))
        except Exception as err:  # the hub client raises its own classes when offline
            raise FileNotFoundError(
                f"{WEIGHTS_KEY} = null: the timm weights of {model!r} are not in the Hugging "
                f"Face cache ({huggingface_hub.constants.HF_HUB_CACHE}) and cannot be "
                f"downloaded here ({type(err).__name__}). Download {url} (the hub page "
                f"https://huggingface.co/{repo} shows its sha256) into that cache with "
                f"`hf download {repo}`, " + _save_hint("timm", model)) from err
    # The cache stores each large file as a blob named by its sha256.
    blob = path.resolve()
    if re.fullmatch(r"[0-9a-f]{64}", blob.name) and file_digest(blob) != blob.name:
        raise ValueError(f"{WEIGHTS_KEY} = null: {path} does not match its sha256 {blob.name}: "
                         "a damaged download; delete it and download again")
    return path


def _read_state_dict(path: Path) -> OrderedDict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{WEIGHTS_KEY} = {path}: holds a {type(state).__name__}, not a "
                         "state dict (save model.state_dict())")
    # The tensors are assigned, not copied, into the model: half-precision files
    # (some hub safetensors) are widened to the float32 the library builds in.
    widened = OrderedDict((k, v.float() if torch.is_tensor(v) and v.is_floating_point() else v)
                          for k, v in state.items())
    # Module versions (MNASNet refuses a state dict without its own).
    widened._metadata = getattr(state, "_metadata", None)  # type: ignore[attr-defined]
    return widened


def _listed(keys: list[str]) -> str:
    return ", ".join(keys[:6]) + (f", ... ({len(keys)} in all)" if len(keys) > 6 else "")


def _load(module: nn.Module, state: dict[str, torch.Tensor], path: Path, name: str) -> None:
    try:
        result = module.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as err:  # shape mismatches raise even when not strict
        raise ValueError(f"{WEIGHTS_KEY} = {path}: not the state dict of {name}: {err}") from err
    missing = [k for k in result.missing_keys if not k.startswith(_AUX_PREFIXES)]
    if missing or result.unexpected_keys:
        raise ValueError(f"{WEIGHTS_KEY} = {path}: not the state dict of {name}; missing keys: "
                         f"{_listed(missing) or 'none'}; unexpected keys: "
                         f"{_listed(result.unexpected_keys) or 'none'}")


def _vit_image_size(module: nn.Module, state: dict[str, torch.Tensor]) -> int | None:
    """A torchvision ViT file's image size, from its position embedding (vit_h_14's
    SWAG weights come at 518 and at 224 px)."""
    pos = state.get("encoder.pos_embedding")
    if pos is None or pos.shape == module.encoder.pos_embedding.shape:
        return None
    return module.patch_size * int(round((pos.shape[1] - 1) ** 0.5))


def build_hub_model(name: str, num_classes: int, weights: str | Path | None = None, *,
                    pretrained: bool = True) -> TransferableNet:
    """The library model `name` as layers plus a new `nn.Linear(head_in, num_classes)` head.

    `weights`: a state-dict file, or None for the library's cache. With
    `pretrained=False` (and no `weights`) the library's random initialisation is
    kept: the same architecture trained from scratch (source B, tests). The
    library's classifier is copied into the head when `num_classes` matches.
    """
    library, model = parse_hub_name(name)
    if not pretrained:
        if weights is not None:
            raise ValueError(f"{WEIGHTS_KEY} = {weights}: given with pretrained=False")
        return _as_transferable(_library_model(library, model, pretrained=False), num_classes)
    path = Path(weights) if weights is not None else (
        _torchvision_cached(name, model) if library == "torchvision"
        else _timm_cached(name, model))
    if not path.is_file():
        raise FileNotFoundError(f"{WEIGHTS_KEY} = {path}: no such file; "
                                + _save_hint(library, model))
    state = _read_state_dict(path)
    overrides: dict[str, Any] = {}
    # Built on the meta device and then given the file's tensors (assign=True):
    # no random initialisation to throw away, no second copy of the weights.
    with _parameters_on_meta():
        module = _library_model(library, model, pretrained=True)
        if library == "torchvision" and model.startswith("vit_"):
            size = _vit_image_size(module, state)
            if size is not None:
                overrides["image_size"] = size
                module = _library_model(library, model, pretrained=True, **overrides)
    _load(module, state, path, name)
    return _as_transferable(module, num_classes)


def _as_transferable(module: nn.Module, num_classes: int) -> TransferableNet:
    """A library model's layers (its own modules) plus a new linear head."""
    parts = split(module)
    net = TransferableNet(parts.layers, parts.head_in, num_classes)
    fc = parts.classifier
    if fc is not None and fc.out_features == num_classes:
        with torch.no_grad():
            net.head.weight.copy_(fc.weight)
            net.head.bias.copy_(fc.bias if fc.bias is not None else torch.zeros(num_classes))
    return net


def hub_preprocessing(name: str) -> Preprocessing:
    """Resize, crop and normalisation of the DEFAULT weights (torchvision's
    `weights.transforms()`, timm's resolved data config); no download."""
    library, model = parse_hub_name(name)
    if library == "torchvision":
        t = _torchvision_weights(model).transforms()
        return Preprocessing(resize=int(t.resize_size[0]), crop=int(t.crop_size[0]),
                             mean=tuple(map(float, t.mean)), std=tuple(map(float, t.std)),
                             interpolation=t.interpolation.value)
    timm = _timm()
    with _parameters_on_meta():
        cfg = timm.data.resolve_data_config({}, model=_library_model(library, model,
                                                                     pretrained=True))
    crop = int(cfg["input_size"][-1])
    # timm's eval transform resizes to floor(crop / crop_pct), then centre-crops.
    return Preprocessing(resize=int(crop / cfg["crop_pct"]), crop=crop,
                         mean=tuple(map(float, cfg["mean"])), std=tuple(map(float, cfg["std"])),
                         interpolation=str(cfg["interpolation"]))
