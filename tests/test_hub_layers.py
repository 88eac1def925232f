"""torchvision / timm models as TransferableNets: derived layers, same logits, weights.

Offline: every library model is built with random weights (torchvision
weights=None, timm pretrained=False) and saved to a file when the test needs a
"pretrained" one. Coverage runs on the meta device for every torchvision
model; real forwards only for a small member of each family at a small input.
"""

from __future__ import annotations

import hashlib
import re
import urllib.error
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models as tv

from transferlab.models import hub
from transferlab.models.base import TransferableNet
from transferlab.models.hub_families import split

TORCHVISION = tv.list_models(module=tv)


def assert_covers_every_parameter_once(library: nn.Module) -> None:
    """Each library parameter in exactly one layer, or in a dropped part (classifier,
    aux heads), never in both."""
    parts = split(library)
    seen = Counter(id(p) for _, module in parts.layers for p in module.parameters())
    twice = [n for n, p in library.named_parameters() if seen[id(p)] > 1]
    assert not twice, f"in two layers: {twice[:5]}"
    dropped = {id(p) for m in parts.dropped.values() for p in m.parameters()}
    both = [n for n, p in library.named_parameters() if id(p) in seen and id(p) in dropped]
    assert not both, f"in a layer and dropped: {both[:5]}"
    lost = [n for n, p in library.named_parameters() if id(p) not in seen and id(p) not in dropped]
    assert not lost, f"in no layer: {lost[:5]}"
    # Nothing but library parameters in the layers (the wrappers own none).
    assert set(seen) <= {id(p) for p in library.parameters()}
    if parts.classifier is not None:
        assert parts.classifier.in_features == parts.head_in
        assert any(m is parts.classifier for m in parts.dropped.values())


@pytest.mark.parametrize("model", TORCHVISION)
def test_every_torchvision_model_splits_every_parameter_exactly_once(model):
    with hub._parameters_on_meta():
        library = hub._library_model("torchvision", model, pretrained=True)
    assert_covers_every_parameter_once(library)
    names = hub.hub_layer_names(f"torchvision:{model}")
    assert names == tuple(n for n, _ in split(library).layers)
    assert len(names) >= 7  # blocks, not 4 stages: freeze counts have room
    TransferableNet(split(library).layers, split(library).head_in, 3)  # names are valid


def test_layer_names_are_the_units_a_user_freezes():
    assert hub.hub_layer_names("torchvision:resnet18") == (
        "stem", "layer1.block0", "layer1.block1", "layer2.block0", "layer2.block1",
        "layer3.block0", "layer3.block1", "layer4.block0", "layer4.block1")
    assert hub.hub_layer_names("torchvision:alexnet") == (
        "conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
    vgg16 = hub.hub_layer_names("torchvision:vgg16")
    assert vgg16[:3] == ("conv1_1", "conv1_2", "conv2_1") and vgg16[-3:] == (
        "conv5_3", "fc6", "fc7")
    assert hub.hub_layer_names("torchvision:vit_b_16") == (
        "embed", *(f"block{i}" for i in range(12)))
    googlenet = hub.hub_layer_names("torchvision:googlenet")
    assert googlenet[:3] == ("conv1", "conv2", "conv3") and "aux1" not in googlenet
    assert googlenet[-1] == "inception5b"
    convnext = hub.hub_layer_names("torchvision:convnext_tiny")
    assert convnext[:5] == ("stem", "stage1.block0", "stage1.block1", "stage1.block2",
                            "stage2.downsample")
    densenet = hub.hub_layer_names("torchvision:densenet121")
    assert densenet[:2] == ("conv0", "block1.layer1") and densenet[-1] == "final"
    assert "trans1" in densenet and len(densenet) == 1 + 6 + 12 + 24 + 16 + 3 + 1


def test_the_documented_layer_counts_are_the_derived_ones():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "architectures.md").read_text()
    table = doc[doc.index("| family (library modules)"):doc.index("The special parts")]
    counts = dict(re.findall(r"\b([a-z][a-z0-9_]*): (\d+)\b", table))
    assert len(counts) >= 20, counts
    for model, count in counts.items():
        assert len(hub.hub_layer_names(f"torchvision:{model}")) == int(count), model


def test_parse_hub_name_says_what_is_allowed():
    assert hub.parse_hub_name("torchvision:resnet18") == ("torchvision", "resnet18")
    for bad in ("resnet18", "keras:resnet18", "torchvision:", ""):
        with pytest.raises(ValueError, match=r"model\.pretrained\.name.*torchvision:<model>"):
            hub.parse_hub_name(bad)
    with pytest.raises(ValueError, match=r"'torchvision:resnet19'.*known: alexnet"):
        hub.parse_hub_name("torchvision:resnet19")


# ------------------------------------------------------------- same logits


def library_and_file(tmp_path: Path, model: str, **kwargs) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    library = tv.get_model(model, weights=None, **kwargs).eval()
    path = tmp_path / f"{model}.pth"
    torch.save(library.state_dict(), path)
    return library, path


def assert_same_logits(ours: torch.Tensor, library: torch.Tensor) -> None:
    """Equal up to float rounding, relative to the logits' scale: random deep nets
    (inception_v3 at its init reaches 1e8) amplify one-ulp differences."""
    scale = library.abs().max().clamp_min(1.0)
    torch.testing.assert_close(ours / scale, library / scale, rtol=1e-4, atol=1e-5)


def randomise_norm_statistics(library: nn.Module) -> None:
    """Fresh batch-norm statistics are 0 / 1: give them values a mix-up would show."""
    gen = torch.Generator().manual_seed(1)
    for m in library.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


# (model, input size, builder kwargs the DEFAULT weights imply); one small member per family
SMALL = [
    ("resnet18", 32, {}), ("densenet121", 32, {}), ("mobilenet_v2", 32, {}),
    ("mobilenet_v3_small", 32, {}), ("mnasnet0_5", 32, {}), ("shufflenet_v2_x0_5", 32, {}),
    ("efficientnet_b0", 32, {}), ("regnet_x_400mf", 32, {}), ("convnext_tiny", 32, {}),
    ("swin_t", 32, {}), ("swin_v2_t", 32, {}), ("maxvit_t", 224, {}),
    ("efficientnet_v2_s", 32, {}),
    # torchvision's pretrained googlenet and inception_v3 transform their input and
    # ship without (googlenet) / with (inception) auxiliary heads.
    ("googlenet", 64, {"transform_input": True, "aux_logits": False, "init_weights": True}),
    ("inception_v3", 75, {"transform_input": True, "init_weights": True}),
]


@pytest.mark.parametrize(("model", "size", "kwargs"), SMALL, ids=[m for m, _, _ in SMALL])
def test_build_hub_model_gives_the_library_logits(tmp_path, model, size, kwargs):
    torch.manual_seed(0)
    library = tv.get_model(model, weights=None, **kwargs).eval()
    with torch.no_grad():
        randomise_norm_statistics(library)
    path = tmp_path / f"{model}.pth"
    torch.save(library.state_dict(), path)
    net = hub.build_hub_model(f"torchvision:{model}", 1000, path).eval()
    assert net.layer_names == list(hub.hub_layer_names(f"torchvision:{model}"))
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = library(x)
        assert net.embed(x).shape == (2, net.embed_dim)
        assert_same_logits(net(x), want)


def test_squeezenet_embeds_the_pooled_last_fire_module(tmp_path):
    """Its classifier (1x1 conv, ReLU, pool) is not linear: nothing to copy, so the
    check is the head's input against the library's own features."""
    library, path = library_and_file(tmp_path, "squeezenet1_1")
    net = hub.build_hub_model("torchvision:squeezenet1_1", 4, path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net.embed(x), library.features(x).mean((2, 3)))
    assert net.head.weight.shape == (4, 512)


def tiny(family: str) -> nn.Module:
    """Members of the families whose smallest model is too large to save in a unit
    test (ViT 88 M, VGG 133 M parameters), built small from the family's class;
    AlexNet (61 M) at its own size, straight from its class."""
    from torchvision.models.vgg import VGG, make_layers

    vit = {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 2,
           "hidden_dim": 16, "mlp_dim": 32, "num_classes": 10}
    return {"vit": lambda: tv.VisionTransformer(**vit),
            "vit_pre_logits": lambda: tv.VisionTransformer(**vit, representation_size=8),
            "vgg": lambda: VGG(make_layers([8, "M", 16, "M", 16, 512, "M"], batch_norm=True),
                               num_classes=10),
            "alexnet": lambda: tv.AlexNet(num_classes=10)}[family]()


@pytest.mark.parametrize("family", ["vit", "vit_pre_logits", "vgg", "alexnet"])
def test_large_families_give_the_library_logits_at_a_small_size(family):
    torch.manual_seed(0)
    library = tiny(family).eval()
    randomise_norm_statistics(library)
    assert_covers_every_parameter_once(library)
    net = hub._as_transferable(library, 10).eval()
    x = torch.randn(2, 3, 32 if "vit" in family else 64, 32 if "vit" in family else 64)
    with torch.no_grad():
        assert_same_logits(net(x), library(x))
    if family == "vgg":
        assert net.layer_names == ["conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7"]


def test_a_vit_file_sets_the_image_size_from_its_position_embedding():
    """vit_h_14's DEFAULT weights are at 518 px, its other SWAG weights at 224."""
    small, large = (tv.VisionTransformer(image_size=size, patch_size=8, num_layers=1,
                                         num_heads=1, hidden_dim=8, mlp_dim=8)
                    for size in (32, 64))
    assert hub._vit_image_size(small, large.state_dict()) == 64
    assert hub._vit_image_size(small, small.state_dict()) is None


def test_the_new_head_is_new_when_the_class_count_differs(tmp_path):
    library, path = library_and_file(tmp_path, "resnet18")
    net = hub.build_hub_model("torchvision:resnet18", 5, path).eval()
    assert net.head.weight.shape == (5, 512)
    assert not torch.equal(net.head.weight, library.fc.weight[:5])
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():  # the layers still hold the file's weights
        library.fc = nn.Identity()
        torch.testing.assert_close(net.embed(x), library(x))


def test_pretrained_false_keeps_the_library_initialisation_and_takes_no_file(tmp_path):
    torch.manual_seed(0)
    net = hub.build_hub_model("torchvision:resnet18", 3, pretrained=False)
    assert net.layer_names[0] == "stem"
    with pytest.raises(ValueError, match="pretrained=False"):
        hub.build_hub_model("torchvision:resnet18", 3, tmp_path / "w.pth", pretrained=False)


# ------------------------------------------------------------------ weights


def test_a_file_with_other_keys_names_the_file_and_the_keys(tmp_path):
    _, path = library_and_file(tmp_path, "resnet18")
    state = torch.load(path, weights_only=True)
    state["extra.weight"] = state.pop("layer1.0.conv1.weight")
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"resnet18\.pth.*missing keys: layer1\.0\.conv1\."
                                         r"weight; unexpected keys: extra\.weight"):
        hub.build_hub_model("torchvision:resnet18", 10, path)
    _, other = library_and_file(tmp_path, "resnet34")
    with pytest.raises(ValueError, match=r"resnet34\.pth: not the state dict of "
                                         r"torchvision:resnet18.*unexpected keys: layer1\.2"):
        hub.build_hub_model("torchvision:resnet18", 10, other)
    with pytest.raises(FileNotFoundError, match=r"model\.pretrained\.weights = .*nope\.pth"):
        hub.build_hub_model("torchvision:resnet18", 10, tmp_path / "nope.pth")


def test_weights_origin_gives_the_url_and_torchvisions_hash():
    url, digest = hub.weights_origin("torchvision:resnet18")
    assert url == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert digest == "f37072fd"


def test_offline_cache_miss_says_where_to_get_and_put_the_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url, dst, hash_prefix):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(hub, "_download", offline)
    with pytest.raises(FileNotFoundError) as err:
        hub.build_hub_model("torchvision:resnet18", 10)
    message = str(err.value)
    for part in ("https://download.pytorch.org/models/resnet18-f37072fd.pth", "f37072fd",
                 str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"),
                 "model.pretrained.weights", "weights='DEFAULT'"):
        assert part in message


def test_the_cache_file_must_match_the_hash_in_its_name(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    library, saved = library_and_file(tmp_path, "resnet18")
    cached = tmp_path / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir()
    cached.write_bytes(saved.read_bytes())
    with pytest.raises(ValueError, match=r"resnet18-f37072fd\.pth has sha256 [0-9a-f]{64}, "
                                         r"but its name says it starts with f37072fd"):
        hub.build_hub_model("torchvision:resnet18", 10)
    # A file whose sha256 does start with the hash in its name is loaded from the cache.
    prefix = hashlib.sha256(saved.read_bytes()).hexdigest()[:8]
    cached.rename(cached.with_name(f"resnet18-{prefix}.pth"))
    monkeypatch.setattr(hub, "weights_origin", lambda name: (
        f"https://example.invalid/resnet18-{prefix}.pth", prefix))
    net = hub.build_hub_model("torchvision:resnet18", 1000).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), library(x))


# --------------------------------------------------------------- preprocessing


@pytest.mark.parametrize(("model", "resize", "crop", "interpolation"), [
    # torchvision's documented DEFAULT transforms
    ("resnet18", 256, 224, "bilinear"), ("resnet50", 232, 224, "bilinear"),
    ("efficientnet_b0", 256, 224, "bicubic"), ("inception_v3", 342, 299, "bilinear")])
def test_torchvision_preprocessing_comes_from_the_weights(model, resize, crop, interpolation):
    p = hub.hub_preprocessing(f"torchvision:{model}")
    assert (p.resize, p.crop, p.interpolation) == (resize, crop, interpolation)
    assert p.mean == pytest.approx((0.485, 0.456, 0.406))
    assert p.std == pytest.approx((0.229, 0.224, 0.225))


# --------------------------------------------------------------------- timm

TIMM = [("resnet10t", 32, {}), ("convnext_atto", 32, {}), ("efficientnet_b0", 32, {}),
        ("vit_tiny_patch16_224", 224, {})]


@pytest.mark.parametrize("model", ["resnet10t", "resnet50d", "convnext_atto", "convnext_tiny",
                                   "efficientnet_b0", "efficientnetv2_rw_s",
                                   "vit_tiny_patch16_224", "vit_base_patch16_224"])
def test_timm_families_split_every_parameter_exactly_once(model):
    pytest.importorskip("timm")
    with hub._parameters_on_meta():
        library = hub._library_model("timm", model, pretrained=True)
    assert_covers_every_parameter_once(library)
    assert hub.hub_layer_names(f"timm:{model}") == tuple(n for n, _ in split(library).layers)


def test_timm_layer_names():
    pytest.importorskip("timm")
    assert hub.hub_layer_names("timm:vit_tiny_patch16_224") == (
        "embed", *(f"block{i}" for i in range(12)))
    convnext = hub.hub_layer_names("timm:convnext_atto")
    assert convnext[:3] == ("stem", "stage1.block0", "stage1.block1")
    assert "stage2.downsample" in convnext and "stage1.downsample" not in convnext
    assert hub.hub_layer_names("timm:resnet10t")[:2] == ("stem", "layer1.block0")


@pytest.mark.parametrize(("model", "size", "kwargs"), TIMM, ids=[m for m, _, _ in TIMM])
def test_timm_build_hub_model_gives_the_library_logits(tmp_path, model, size, kwargs):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    library = timm.create_model(model, pretrained=False, **kwargs).eval()
    with torch.no_grad():
        randomise_norm_statistics(library)
    if model == "resnet10t":  # the Hugging Face hub's format, stored in half precision
        from safetensors.torch import save_file

        path = tmp_path / "model.safetensors"
        library.half().float()  # the values a half-precision file holds
        save_file({k: v.half() for k, v in library.state_dict().items()}, str(path))
    else:
        path = tmp_path / f"{model}.pth"
        torch.save(library.state_dict(), path)
    net = hub.build_hub_model(f"timm:{model}", 1000, path).eval()
    assert all(p.dtype == torch.float32 for p in net.parameters())
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert net.embed(x).shape == (2, net.embed_dim)
        assert_same_logits(net(x), library(x))


@pytest.mark.parametrize("kwargs", [
    {"global_pool": "avg", "class_token": False},
    {"no_embed_class": True, "reg_tokens": 2},
    {"global_pool": "avg", "fc_norm": True}])
def test_timm_vit_variants_give_the_library_logits(kwargs):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    library = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                                patch_size=8, depth=2, **kwargs).eval()
    assert_covers_every_parameter_once(library)
    net = hub._as_transferable(library, 1000).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_same_logits(net(x), library(x))


def test_timm_preprocessing_comes_from_the_pretrained_config():
    pytest.importorskip("timm")
    # timm's default tags: resnet18.a1_in1k (crop_pct 0.95), vit_tiny augreg (0.9, mean 0.5)
    p = hub.hub_preprocessing("timm:resnet18")
    assert (p.resize, p.crop, p.interpolation) == (235, 224, "bicubic")
    assert p.mean == pytest.approx((0.485, 0.456, 0.406))
    v = hub.hub_preprocessing("timm:vit_tiny_patch16_224")
    assert (v.resize, v.crop, v.mean, v.std) == (248, 224, (0.5,) * 3, (0.5,) * 3)


def test_timm_offline_cache_miss_gives_the_url_and_how_to_save(monkeypatch):
    pytest.importorskip("timm")
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, filename: None)

    def offline(repo, filename):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    url, digest = hub.weights_origin("timm:resnet10t")
    assert url == "https://huggingface.co/timm/resnet10t.c3_in1k/resolve/main/model.safetensors"
    assert digest is None
    with pytest.raises(FileNotFoundError) as err:
        hub.build_hub_model("timm:resnet10t", 10)
    for part in (url, "hf download timm/resnet10t.c3_in1k", "timm.create_model('resnet10t', "
                 "pretrained=True)", "model.pretrained.weights"):
        assert part in str(err.value)


def test_timm_names_are_checked():
    pytest.importorskip("timm")
    assert hub.parse_hub_name("timm:resnet18.a1_in1k") == ("timm", "resnet18.a1_in1k")
    with pytest.raises(ValueError, match=r"'timm:resnet19': not a timm model"):
        hub.parse_hub_name("timm:resnet19")


def test_timm_cache_hit_is_loaded_and_its_blob_hash_checked(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    import huggingface_hub
    from safetensors.torch import save_file

    torch.manual_seed(0)
    library = timm.create_model("resnet10t", pretrained=False).eval()
    blob = tmp_path / "blobs" / ("0" * 64)  # the hub cache names a blob by its sha256
    blob.parent.mkdir()
    save_file(library.state_dict(), str(blob))
    snapshot = tmp_path / "snapshots" / "model.safetensors"
    snapshot.parent.mkdir()
    snapshot.symlink_to(blob)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo, filename: str(snapshot))
    with pytest.raises(ValueError, match=r"does not match its sha256 0{64}: a damaged"):
        hub.build_hub_model("timm:resnet10t", 1000)
    good = blob.with_name(hashlib.sha256(blob.read_bytes()).hexdigest())
    blob.rename(good)
    snapshot.unlink()
    snapshot.symlink_to(good)
    net = hub.build_hub_model("timm:resnet10t", 1000).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert_same_logits(net(x), library(x))
