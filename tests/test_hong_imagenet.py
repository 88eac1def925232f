"""Hong's ImageNet-source presets (DeCAF, Oquab, fine-tuning "more", CNNaug-SVM on
Pascal VOC 2007): each validates over the shipped params, names only layers that
torchvision's AlexNet really has, and sets the lecture's rates and VOC 2007's AP.

They build on `arch: pretrained` and transferlab.models.hub (issue 22), merged from
other branches: until both are in the tree, this module is skipped as a whole."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from transferlab.config.params import parse_params
from transferlab.config.presets import apply_preset, exp_args

hub = pytest.importorskip("transferlab.models.hub")

ROOT = Path(__file__).resolve().parent.parent
HUB_PRESETS = ("hong-decaf-alexnet-voc2007", "hong-oquab-alexnet-voc2007",
               "hong-finetune-alexnet-voc2007", "hong-cnnaug-alexnet-voc2007")
# What the presets assume hub_layer_names derives from torchvision's AlexNet: one layer per
# conv block of `features` (its ReLU and pooling with it), one per FC block of the
# classifier; the last Linear (ImageNet's classes) is the head the target replaces.
ALEXNET_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")


def _params(name: str):
    return parse_params(apply_preset(name, ROOT / "params.yaml", ROOT / "presets"))


def test_the_presets_are_the_hong_imagenet_ones():
    found = {p.stem for p in (ROOT / "presets").glob("hong-*.yaml")
             if yaml.safe_load(p.read_text())["arch"] == "pretrained"}
    assert found == set(HUB_PRESETS)


def test_torchvision_alexnet_has_the_layers_the_presets_name():
    assert tuple(hub.hub_layer_names("torchvision:alexnet")) == ALEXNET_LAYERS


@pytest.mark.parametrize("name", HUB_PRESETS)
def test_each_preset_validates_on_torchvisions_alexnet_and_voc2007(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    params = _params(name)
    assert (params.dataset, params.arch) == ("voc2007", "pretrained")
    assert params.model_kwargs["name"] == "torchvision:alexnet"
    # torchvision's own file name (its sha256 prefix), under data.root as DVC tracks it
    weights = Path(params.model_kwargs["weights"])
    assert weights.name == "alexnet-owt-7be5be79.pth"
    assert weights.resolve().is_relative_to(Path(params.data.root).resolve())
    assert tuple(params.layer_names) == ALEXNET_LAYERS
    assert params.data.target_dataset == "voc2007" and params.data.target_classes == "all"
    assert params.data.normalise == "pretrained" and params.heads.ap == "voc07"
    assert set(params.features.layers) <= set(ALEXNET_LAYERS)
    args = exp_args(yaml.safe_load((ROOT / "presets" / f"{name}.yaml").read_text()))
    assert "arch=\"pretrained\"" in args and "dataset=\"voc2007\"" in args


def test_decaf_heads_sit_on_layers_5_6_7():
    params = _params("hong-decaf-alexnet-voc2007")
    assert tuple(params.features.layers) == ("conv5", "fc6", "fc7")
    assert set(params.heads.heads) == {"logreg", "svm"}


def test_oquab_freezes_l1_to_l7_and_adds_fca_fcb():
    params = _params("hong-oquab-alexnet-voc2007")
    # AnB-2fc at n = 7: every derived layer copied and frozen, one new FC and the head
    assert "AnB-2fc" in params.sweep.treatments and params.sweep.layers == (7,)
    assert len(ALEXNET_LAYERS) == 7


def test_fine_tuning_more_rates_are_a_tenth_on_top_and_a_hundredth_below():
    params = _params("hong-finetune-alexnet-voc2007")
    t = params.transfer
    assert "AnB+" in params.sweep.treatments and params.sweep.layers == (7,)
    # at n = 7 the top copied layer is fc7, the last derived layer
    assert dict(t.layer_lr_mult) == {ALEXNET_LAYERS[-1]: 0.1} and t.lr_mult == 0.01


def test_cnnaug_svm_is_the_power_transform_with_augmented_copies():
    params = _params("hong-cnnaug-alexnet-voc2007")
    assert params.heads.transform == "power" and params.heads.heads == ("svm",)
    assert params.features.augment.copies > 0 and params.features.augment.rotate > 0
    assert "fc6" in params.features.layers
