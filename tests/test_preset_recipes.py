"""The presets' recipes hold the papers' schedules, and say where they depart.

Each paper's schedule is written here as the paper states it, and checked against
the preset's steps; a departure or an assumption must be stated in the preset's
comments, where a reader of the preset looks.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from transferlab.config.params import parse_params
from transferlab.config.presets import apply_preset

ROOT = Path(__file__).resolve().parent.parent


def _params(name: str):
    return parse_params(apply_preset(name, ROOT / "params.yaml", ROOT / "presets"))


def _text(name: str) -> str:
    return (ROOT / "presets" / f"{name}.yaml").read_text()


# Borthakur & Einhorn count epochs from 1 and name the epoch a rate starts at: A's
# "0.1, 0.01, and 0.001 at epochs 1, 126, and 151" is milestones [125, 150]; the
# fine-tuning's "drops at 26 and 36" (40 epochs) and "lr change at 51 and 76" (100).
# preset -> (target images, fine-tuning epochs, the epochs the new rates start at)
BORTHAKUR_EINHORN = {
    "borthakur-einhorn-densenet-cifar100": (50 * 60, 40, (26, 36)),
    "borthakur-einhorn-densenet-fig2": (50 * 500, 40, (26, 36)),
    "borthakur-einhorn-wrn-cifar100": (50 * 500, 100, (51, 76)),
}


@pytest.mark.parametrize("name", sorted(BORTHAKUR_EINHORN))
def test_borthakur_einhorn_schedules_count_epochs_as_the_paper(name):
    images, epochs, starts = BORTHAKUR_EINHORN[name]
    p = _params(name)
    t = p.transfer
    per_epoch = math.ceil(images / t.batch_size)
    assert t.budget(images) == epochs * per_epoch
    assert t.milestones == tuple((start - 1) * per_epoch for start in starts)
    # the copied layers keep 0.01 until the second drop
    assert t.copied_milestones == ((starts[-1] - 1) * per_epoch,)
    if name != "borthakur-einhorn-wrn-cifar100":  # DenseNet's A: their schedule
        assert p.pretrain.epochs == 175 and p.pretrain.milestones == (125, 150)
    assert "best epoch" in _text(name)  # the last-epoch departure is stated


def test_borthakur_einhorn_fig2_has_its_leftmost_point():
    """Fig. 2's "0 means no blocks were frozen": every layer copied and fine-tuned,
    only the FC layer reset: AnB+ at n = every layer."""
    p = _params("borthakur-einhorn-densenet-fig2")
    assert p.sweep.layers_of("AnB+") == (len(p.layer_names),)
    assert "AnB-ft" in p.sweep.treatments and "AnB+" in p.sweep.treatments
    rows = [n for n in p.paper.numbers if n["ours"] and n["ours"][2] == "AnB+"]
    assert rows and rows[0]["ours"][3] == f"n{len(p.layer_names)}"


def test_hong_cnnaug_heads_use_the_power_transform():
    p = _params("hong-alexnet-cifar100")
    assert p.features.augment.copies > 0 and p.heads.transform == "power"
    assert "0.5 (heads.power) is" in _text("hong-alexnet-cifar100")  # assumed exponent


@pytest.mark.parametrize("name", ["spero-feedback-cifar10-voc", "spero-feedback-cifar100-voc",
                                  "spero-feedback-cifar100-cifar10"])
def test_spero_assumptions_are_marked_where_they_are_set(name):
    """The paper gives Adam and 25 epochs; the rate, batch, dropout rate and
    initialisation are ours, and each line that sets one says so."""
    text = _text(name)
    tree = yaml.safe_load(text)
    assert tree["pretrain"]["optimizer"] == "adam" and tree["pretrain"]["epochs"] == 25
    lines = text.splitlines()
    for key in ("lr:", "batch_size:", "dropout:"):
        setting = [line for line in lines if line.strip().startswith(key)]
        assert setting and all("assumed" in line for line in setting), (name, key)
    assert "initialisation" in text


@pytest.mark.parametrize("name", ["soekhoe-alexnet-tinyimagenet", "soekhoe-alexnet-miniplaces"])
def test_soekhoe_states_its_caffe_departures(name):
    text = _text(name)
    for what in ("initialisation", "bias", "mean image"):
        assert what in text, (name, what)


# CIFAR-100's coarse label (superclass) of each fine label 0..99, as its train and test
# files pair them ("coarse_labels" beside "fine_labels"), and the superclasses that
# are man-made: food containers (3), household electrical devices (5), household
# furniture (6), large man-made outdoor things (9), vehicles 1 (18), vehicles 2 (19).
CIFAR100_COARSE = (4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
                   6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
                   5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
                   10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
                   16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13)
MANMADE = {3, 5, 6, 9, 18, 19}


def test_the_cifar100_manmade_natural_split_is_by_superclass():
    split = yaml.safe_load((ROOT / "splits" / "cifar100-manmade-natural.yaml").read_text())
    source, target = split["source"], split["target"]
    assert sorted(source + target) == list(range(100))  # every class once
    assert {CIFAR100_COARSE[c] for c in source} == MANMADE
    assert {CIFAR100_COARSE[c] for c in target} == set(range(20)) - MANMADE
    for superclass in range(20):  # whole superclasses, five classes each
        members = [c for c in range(100) if CIFAR100_COARSE[c] == superclass]
        assert len(members) == 5
        assert set(members) <= set(source) or set(members) <= set(target)
    # the Yosinski dissimilar preset and Hong's "different" run use it
    p = _params("yosinski-2014-cifar100-dissimilar")
    assert (p.dataset, p.data.split, p.data.classes_file) == (
        "cifar100", "file", "splits/cifar100-manmade-natural.yaml")
    assert "splits/cifar100-manmade-natural.yaml" in _text("hong-alexnet-cifar100")


ALEXNET_CIFAR = ["yosinski-2014-cifar100-similar", "yosinski-2014-cifar100-dissimilar",
                 "hong-alexnet-cifar100"]


@pytest.mark.parametrize("name", ALEXNET_CIFAR)
def test_every_conv_layer_of_the_alexnet_presets_sees_a_map_of_3x3_or_more(name):
    """At 32 px, AlexNet's conv1 (11x11/4) and two pools leave conv3-conv5 a 1x1 map: they
    would be fully connected layers called convolutions. Each conv layer's input is
    measured by running an image of the preset's input size through the network."""
    import torch

    from transferlab.models import build_model
    from transferlab.training.variant import input_shape

    params = parse_params(apply_preset(name, ROOT / "params.yaml", ROOT / "presets"))
    size = params.data.image_size
    shape = input_shape(params, (3, size, size))
    model = build_model(params.arch, shape, 10, **params.model_kwargs)
    seen = {}
    hooks = [model.layer(n).register_forward_pre_hook(
        lambda _m, args, n=n: seen.__setitem__(n, tuple(args[0].shape[-2:])))
        for n in model.layer_names if n.startswith("conv")]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    assert seen and all(min(hw) >= 3 for hw in seen.values()), seen
