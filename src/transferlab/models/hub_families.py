"""Each torchvision and timm model family cut into its ordered transferable layers.

`split(model)` takes a library classification model and returns its layers in
forward order, the classifier the new head replaces, and every library part
that is left out (the classifier, the auxiliary heads). The layers hold the
library's own submodules (the same parameter objects, not copies), so loading
the library's state dict before splitting puts its weights in the layers.

The unit of a layer is what a user freezes: a residual / inverted-residual /
transformer block, a dense layer, a stem, a downsampling step, an FC layer.
Naming: stages count from 1 (like torchvision's ResNet `layer1`..`layer4`),
blocks keep the library's index inside their stage (from 0, like its
`layer1.0`); where the library names its modules with identifiers (ResNet's
`layer1`, Inception's `Mixed_5b`, DenseNet's `denselayer1`) those names stay.
Pooling, flattening, the final norm and the dropout in front of the classifier
go into the last layer, so `TransferableNet.embed` returns the classifier's
input. docs/architectures.md lists every family's layers.

The family is found from the model's class, not from its name, so tests can
split tiny members built straight from the family's class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

# The ImageNet statistics that torchvision's googlenet and inception_v3 weights
# were converted with: their `transform_input` maps an ImageNet-normalised image
# to the [-1, 1] range those (TensorFlow-trained) weights expect.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Split:
    """A library model cut into layers.

    `classifier` is the final nn.Linear the new head replaces (its weights are
    copied into the head when the class counts agree), or None where the
    library's classifier is not one linear map (SqueezeNet's 1x1 conv, ReLU
    and pooling). `dropped` names (by library path) every part holding
    parameters that is in no layer: the classifier and the auxiliary heads.
    """

    layers: list[tuple[str, nn.Module]]
    head_in: int
    classifier: nn.Linear | None
    dropped: dict[str, nn.Module] = field(default_factory=dict)


class TransformInput(nn.Module):
    """googlenet / inception_v3 `transform_input=True`: ImageNet-normalised -> [-1, 1]."""

    def __init__(self):
        super().__init__()
        std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)
        mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        # x * std + mean undoes the normalisation, then (y - 0.5) / 0.5.
        self.register_buffer("scale", std / 0.5, persistent=False)
        self.register_buffer("shift", (mean - 0.5) / 0.5, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class DenseStep(nn.Module):
    """One DenseNet layer: its new feature maps concatenated to its input.

    torchvision's dense block concatenates every earlier output before each
    layer; running the layers one at a time on the growing tensor is the same
    computation, and makes each layer a unit of its own.
    """

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.layer(x)], 1)


class SpatialMean(nn.Module):
    """`x.mean([2, 3])`, the global pooling MNASNet and ShuffleNetV2 write inline."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean([2, 3])


class ClassToken(nn.Module):
    """The class token's output (token 0) of a (N, tokens, dim) sequence."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


class TorchvisionViTEmbed(nn.Module):
    """torchvision ViT up to the first encoder block: patches, class token, positions.

    Holds the model's `conv_proj`, `class_token` and `encoder.pos_embedding`
    (the same parameters) and the encoder's input dropout.
    """

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token
        self.pos_embedding = vit.encoder.pos_embedding
        self.dropout = vit.encoder.dropout
        self.image_size = vit.image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"this ViT takes {self.image_size}x{self.image_size} images "
                             f"(its position embedding is fixed), got {tuple(x.shape[-2:])}")
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.dropout(x + self.pos_embedding)


class TimmViTEmbed(nn.Module):
    """timm VisionTransformer up to the first block: patch embedding, class (and
    register) tokens, position embedding, then its patch dropout and pre-norm."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.patch_embed = vit.patch_embed
        self.cls_token = vit.cls_token
        self.reg_token = vit.reg_token
        self.pos_embed = vit.pos_embed
        self.no_embed_class = bool(vit.no_embed_class)
        self.pos_drop = vit.pos_drop
        self.patch_drop = vit.patch_drop
        self.norm_pre = vit.norm_pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.reg_token)
                  if t is not None]
        if self.pos_embed is None:
            # timm skips the position dropout too when there is no position embedding.
            x = torch.cat([*prefix, x], dim=1)
        elif self.no_embed_class:
            x = self.pos_drop(torch.cat([*prefix, x + self.pos_embed], dim=1))
        else:
            x = self.pos_drop(torch.cat([*prefix, x], dim=1) + self.pos_embed)
        return self.norm_pre(self.patch_drop(x))


class TimmTokenPool(nn.Module):
    """timm ViT's pooling of the token sequence (`global_pool`: token, avg, avgmax, max)."""

    def __init__(self, pool_type: str, num_prefix_tokens: int, include_prefix: bool):
        super().__init__()
        self.pool_type = pool_type
        self.num_prefix_tokens = num_prefix_tokens
        self.include_prefix = include_prefix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from timm.layers import global_pool_nlc

        return global_pool_nlc(x, pool_type=self.pool_type,
                               num_prefix_tokens=self.num_prefix_tokens,
                               reduce_include_prefix=self.include_prefix)


def _dropout(p: float) -> nn.Module:
    """timm's functional head dropout as a module (none when its rate is 0)."""
    return nn.Dropout(float(p)) if p else nn.Identity()


def _seq(*modules: nn.Module) -> nn.Module:
    parts = [m for m in modules if not isinstance(m, nn.Identity)]
    return parts[0] if len(parts) == 1 else nn.Sequential(*parts)


def _with_tail(layers: list[tuple[str, nn.Module]], *tail: nn.Module
               ) -> list[tuple[str, nn.Module]]:
    """The pooling/flatten/norm/dropout before the classifier joins the last layer."""
    name, last = layers[-1]
    return [*layers[:-1], (name, _seq(last, *tail))]


def _blocks(prefix: str, stage: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(f"{prefix}.block{j}", block) for j, block in enumerate(stage.children())]


def _linear(module: nn.Module) -> nn.Linear:
    if not isinstance(module, nn.Linear):
        raise TypeError(f"expected the classifier to be nn.Linear, got {type(module).__name__}")
    return module


def _split_linear_classifier(layers: list[tuple[str, nn.Module]], classifier: nn.Module,
                             path: str, **dropped: nn.Module) -> Split:
    fc = _linear(classifier)
    return Split(layers, fc.in_features, fc, {path: fc, **dropped})


# ----------------------------------------------------------------- torchvision


def _tv_resnet(m: nn.Module) -> Split:
    layers = [("stem", _seq(m.conv1, m.bn1, m.relu, m.maxpool))]
    for s in (1, 2, 3, 4):
        layers += _blocks(f"layer{s}", getattr(m, f"layer{s}"))
    return _split_linear_classifier(_with_tail(layers, m.avgpool, nn.Flatten(1)), m.fc, "fc")


def _conv_units(features: nn.Sequential) -> list[list[nn.Module]]:
    """A unit per convolution (or Fire module), with the ReLU / pooling after it."""
    units: list[list[nn.Module]] = []
    for module in features:
        if isinstance(module, nn.Conv2d) or type(module).__name__ == "Fire":
            units.append([module])
        else:
            units[-1].append(module)
    return units


def _tv_alexnet_vgg(m: nn.Module) -> Split:
    units = _conv_units(m.features)
    if type(m).__name__ == "AlexNet":
        names = [f"conv{i}" for i in range(1, len(units) + 1)]
    else:  # Caffe's VGG names: conv<block>_<index>, a block ending at each max pool
        names, block, index = [], 1, 1
        for unit in units:
            names.append(f"conv{block}_{index}")
            index += 1
            if isinstance(unit[-1], nn.MaxPool2d):
                block, index = block + 1, 1
    fc6 = nn.Sequential(m.avgpool, nn.Flatten(1), *m.classifier[0:3])
    layers = [(n, _seq(*u)) for n, u in zip(names, units, strict=True)]
    layers += [("fc6", fc6), ("fc7", nn.Sequential(*m.classifier[3:6]))]
    return _split_linear_classifier(layers, m.classifier[6], "classifier.6")


def _tv_squeezenet(m: nn.Module) -> Split:
    units = _conv_units(m.features)
    names = ["conv1", *(f"fire{i}" for i in range(2, len(units) + 1))]
    layers = [(n, _seq(*u)) for n, u in zip(names, units, strict=True)]
    # The library's classifier is dropout, a 1x1 conv to the classes, ReLU and
    # average pooling: not a linear map of one vector, so nothing is copied and
    # the new head reads the pooled last Fire module (512 values).
    layers = _with_tail(layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), m.classifier[0])
    final_conv = m.classifier[1]
    return Split(layers, final_conv.in_channels, None, {"classifier": m.classifier})


def _tv_inception(m: nn.Module, aux: tuple[str, ...], tail: list[nn.Module]) -> Split:
    units: list[tuple[str, list[nn.Module]]] = []
    for name, child in m.named_children():
        if name in aux or name in ("avgpool", "dropout", "fc"):
            continue
        if isinstance(child, nn.MaxPool2d):
            units[-1][1].append(child)
        else:
            units.append((name, [child]))
    if m.transform_input:
        units[0][1].insert(0, TransformInput())
    layers = _with_tail([(n, _seq(*u)) for n, u in units], *tail)
    dropped = {a: getattr(m, a) for a in aux if getattr(m, a, None) is not None}
    return _split_linear_classifier(layers, m.fc, "fc", **dropped)


def _tv_googlenet(m: nn.Module) -> Split:
    # Auxiliary heads dropped: they serve only ImageNet training (torchvision
    # deletes them from its pretrained googlenet too).
    return _tv_inception(m, ("aux1", "aux2"), [m.avgpool, nn.Flatten(1), m.dropout])


def _tv_inception3(m: nn.Module) -> Split:
    return _tv_inception(m, ("AuxLogits",), [m.avgpool, m.dropout, nn.Flatten(1)])


def _tv_densenet(m: nn.Module) -> Split:
    f = m.features
    layers = [("conv0", _seq(f.conv0, f.norm0, f.relu0, f.pool0))]
    for name, child in f.named_children():
        if name.startswith("denseblock"):
            b = name.removeprefix("denseblock")
            layers += [(f"block{b}.{lname.replace('denselayer', 'layer')}", DenseStep(layer))
                       for lname, layer in child.named_children()]
        elif name.startswith("transition"):
            layers.append((f"trans{name.removeprefix('transition')}", child))
    layers.append(("final", nn.Sequential(f.norm5, nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                          nn.Flatten(1))))
    return _split_linear_classifier(layers, m.classifier, "classifier")


def _features_blocks(m: nn.Module) -> list[tuple[str, nn.Module]]:
    """MobileNetV2/V3: features[0] the stem, then one block each, features[-1] the last conv."""
    f = list(m.features)
    return [("stem", f[0]), *((f"block{i}", b) for i, b in enumerate(f[1:-1], 1)),
            ("final", f[-1])]


def _tv_mobilenet_v2(m: nn.Module) -> Split:
    layers = _with_tail(_features_blocks(m), nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                        m.classifier[0])
    return _split_linear_classifier(layers, m.classifier[1], "classifier.1")


def _tv_mobilenet_v3(m: nn.Module) -> Split:
    layers = _with_tail(_features_blocks(m), m.avgpool, nn.Flatten(1))
    layers.append(("pre_logits", nn.Sequential(*m.classifier[0:3])))
    return _split_linear_classifier(layers, m.classifier[3], "classifier.3")


def _tv_efficientnet(m: nn.Module) -> Split:
    f = list(m.features)
    layers = [("stem", f[0])]
    for s, stage in enumerate(f[1:-1], 1):
        layers += _blocks(f"stage{s}", stage)
    layers = _with_tail([*layers, ("final", f[-1])], m.avgpool, nn.Flatten(1), m.classifier[0])
    return _split_linear_classifier(layers, m.classifier[1], "classifier.1")


def _tv_mnasnet(m: nn.Module) -> Split:
    f = list(m.layers)
    if len(f) != 17:
        raise ValueError(f"MNASNet with {len(f)} top modules; this split knows the 17 of "
                         "torchvision's (stem, separable conv, 6 stages, final conv)")
    layers = [("stem", nn.Sequential(*f[0:3])), ("sep_conv", nn.Sequential(*f[3:8]))]
    for s, stage in enumerate(f[8:14], 1):
        layers += _blocks(f"stage{s}", stage)
    layers = _with_tail([*layers, ("final", nn.Sequential(*f[14:17]))], SpatialMean(),
                        m.classifier[0])
    return _split_linear_classifier(layers, m.classifier[1], "classifier.1")


def _tv_shufflenet(m: nn.Module) -> Split:
    layers = [("conv1", _seq(m.conv1, m.maxpool))]
    for s in (2, 3, 4):
        layers += _blocks(f"stage{s}", getattr(m, f"stage{s}"))
    layers = _with_tail([*layers, ("conv5", m.conv5)], SpatialMean())
    return _split_linear_classifier(layers, m.fc, "fc")


def _tv_regnet(m: nn.Module) -> Split:
    layers = [("stem", m.stem)]
    for s, stage in enumerate(m.trunk_output.children(), 1):
        layers += _blocks(f"stage{s}", stage)
    return _split_linear_classifier(_with_tail(layers, m.avgpool, nn.Flatten(1)), m.fc, "fc")


def _stages_with_downsampling(first: str, modules: list[nn.Module],
                              is_stage: Callable[[nn.Module], bool]
                              ) -> list[tuple[str, nn.Module]]:
    """ConvNeXt / Swin `features`: a stem, then stages of blocks with a downsampling
    step (ConvNeXt's norm + strided conv, Swin's patch merging) before stages 2..4."""
    layers = [(first, modules[0])]
    stage = 1
    for module in modules[1:]:
        if is_stage(module):
            layers += _blocks(f"stage{stage}", module)
            stage += 1
        else:
            layers.append((f"stage{stage}.downsample", module))
    return layers


def _tv_convnext(m: nn.Module) -> Split:
    from torchvision.models.convnext import CNBlock

    layers = _stages_with_downsampling(
        "stem", list(m.features), lambda s: all(isinstance(b, CNBlock) for b in s))
    layers = _with_tail(layers, m.avgpool, m.classifier[0], m.classifier[1])
    return _split_linear_classifier(layers, m.classifier[2], "classifier.2")


def _tv_swin(m: nn.Module) -> Split:
    layers = _stages_with_downsampling(
        "patch_embed", list(m.features), lambda s: isinstance(s, nn.Sequential))
    layers = _with_tail(layers, m.norm, m.permute, m.avgpool, m.flatten)
    return _split_linear_classifier(layers, m.head, "head")


def _tv_maxvit(m: nn.Module) -> Split:
    layers = [("stem", m.stem)]
    for s, block in enumerate(m.blocks, 1):
        layers += _blocks(f"stage{s}", block.layers)
    # Pooling, norm, then a Linear + Tanh before the classifier: a transferable
    # FC layer of its own. The classifier has no bias; the new head's is zero
    # when its weights are copied.
    layers.append(("pre_logits", nn.Sequential(*m.classifier[0:5])))
    return _split_linear_classifier(layers, m.classifier[5], "classifier.5")


def _tv_vit(m: nn.Module) -> Split:
    layers = [("embed", TorchvisionViTEmbed(m))]
    layers += [(f"block{i}", b) for i, b in enumerate(m.encoder.layers)]
    heads = list(m.heads)
    # A ViT built with representation_size has pre_logits Linear + Tanh before the head.
    layers = _with_tail(layers, m.encoder.ln, ClassToken(), *heads[:-1])
    return _split_linear_classifier(layers, heads[-1], "heads.head")


# ------------------------------------------------------------------------ timm


def _timm_resnet(m: nn.Module) -> Split:
    layers = [("stem", _seq(m.conv1, m.bn1, m.act1, m.maxpool))]
    for s in (1, 2, 3, 4):
        layers += _blocks(f"layer{s}", getattr(m, f"layer{s}"))
    layers = _with_tail(layers, m.global_pool, _dropout(m.drop_rate))
    return _split_linear_classifier(layers, m.fc, "fc")


def _timm_efficientnet(m: nn.Module) -> Split:
    layers = [("stem", nn.Sequential(m.conv_stem, m.bn1))]
    for s, stage in enumerate(m.blocks, 1):
        layers += _blocks(f"stage{s}", stage)
    layers.append(("final", nn.Sequential(m.conv_head, m.bn2)))
    layers = _with_tail(layers, m.global_pool, _dropout(m.drop_rate))
    return _split_linear_classifier(layers, m.classifier, "classifier")


def _timm_convnext(m: nn.Module) -> Split:
    from timm.layers import NormMlpClassifierHead

    if not isinstance(m.head, NormMlpClassifierHead):
        raise ValueError(f"timm ConvNeXt with a {type(m.head).__name__} head "
                         "(head_norm_first); only NormMlpClassifierHead is split")
    layers = [("stem", m.stem)]
    for s, stage in enumerate(m.stages, 1):
        if not isinstance(stage.downsample, nn.Identity):
            layers.append((f"stage{s}.downsample", stage.downsample))
        layers += _blocks(f"stage{s}", stage.blocks)
    h = m.head
    layers = _with_tail(layers, m.norm_pre, h.global_pool, h.norm, h.flatten, h.pre_logits,
                        h.drop)
    return _split_linear_classifier(layers, h.fc, "head.fc")


def _timm_vit(m: nn.Module) -> Split:
    unsupported = [what for what, bad in (
        ("dynamic_img_size", m.dynamic_img_size),
        ("an attention pool", m.attn_pool is not None),
        ("global_pool=''", not m.global_pool)) if bad]
    if unsupported:
        raise ValueError(f"timm VisionTransformer with {', '.join(unsupported)}: not split "
                         "(the supported ViTs pool a class token or average their tokens)")
    layers = [("embed", TimmViTEmbed(m))]
    layers += [(f"block{i}", b) for i, b in enumerate(m.blocks)]
    pool = TimmTokenPool(m.global_pool, m.num_prefix_tokens, bool(m.pool_include_prefix))
    layers = _with_tail(layers, m.norm, pool, m.fc_norm, m.head_drop)
    return _split_linear_classifier(layers, m.head, "head")


def _splitters() -> dict[type, Callable[[nn.Module], Split]]:
    from torchvision import models as tv
    from torchvision.models import maxvit, mnasnet, regnet, shufflenetv2, squeezenet

    table: dict[type, Callable[[nn.Module], Split]] = {
        tv.ResNet: _tv_resnet, tv.AlexNet: _tv_alexnet_vgg, tv.VGG: _tv_alexnet_vgg,
        squeezenet.SqueezeNet: _tv_squeezenet, tv.GoogLeNet: _tv_googlenet,
        tv.Inception3: _tv_inception3, tv.DenseNet: _tv_densenet,
        tv.MobileNetV2: _tv_mobilenet_v2, tv.MobileNetV3: _tv_mobilenet_v3,
        tv.EfficientNet: _tv_efficientnet, mnasnet.MNASNet: _tv_mnasnet,
        shufflenetv2.ShuffleNetV2: _tv_shufflenet, regnet.RegNet: _tv_regnet,
        tv.ConvNeXt: _tv_convnext, tv.SwinTransformer: _tv_swin, maxvit.MaxVit: _tv_maxvit,
        tv.VisionTransformer: _tv_vit,
    }
    try:
        from timm.models import convnext, efficientnet, resnet, vision_transformer
    except ImportError:  # timm is an optional extra; its families are then unknown
        return table
    table.update({resnet.ResNet: _timm_resnet, efficientnet.EfficientNet: _timm_efficientnet,
                  convnext.ConvNeXt: _timm_convnext,
                  vision_transformer.VisionTransformer: _timm_vit})
    return table


def split(model: nn.Module) -> Split:
    """`model` (a torchvision or timm classification model) cut into its layers."""
    table = _splitters()
    splitter = table.get(type(model))
    if splitter is None:
        known = sorted(f"{t.__module__.split('.')[0]}.{t.__name__}" for t in table)
        raise ValueError(f"no layer split for {type(model).__module__}.{type(model).__name__}; "
                         f"the families split are: {', '.join(known)}")
    return splitter(model)
