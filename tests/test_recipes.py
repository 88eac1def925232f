"""How a transfer run trains its groups of layers: Borthakur & Einhorn's AnB-ft (copy everything,
freeze a prefix), per-layer rates, per-group step decays, dropout and batch norm in
frozen layers, and a budget counted in epochs of the target."""

import dataclasses

import pytest
import torch

from transferlab.config.params import ParamsError, parse_params
from transferlab.models import build_model
from transferlab.models.surgery import apply_treatment
from transferlab.training.loop import Batches, fit, make_optimizer, make_scheduler

from .conftest import PLAIN, TINY, deep_update, recipe

NAMES = ["conv1", "conv2", "conv3", "conv4", "fc5"]
SGD = {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0}


def convnet(seed):
    torch.manual_seed(seed)
    return build_model("convnet", (1, 8, 8), 5, width=4, hidden=16)


def layer_of(param_name: str) -> str | None:
    for name in NAMES:
        if param_name.startswith(f"layers.{name}."):
            return name
    return None


def sgd_step(model, plan, lr):
    """One plain-SGD step; the gradients it used (None where none was asked for)."""
    opt = make_optimizer(plan.param_groups, recipe(lr=lr, **SGD))
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 5, (8,))
    model.train()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    grads = {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()}
    opt.step()
    return grads


# ---------------------------------------------------------------------------- AnB-ft


@pytest.mark.parametrize("n", [0, 2, 4])
def test_anb_ft_freezes_up_to_n_fine_tunes_the_copied_rest_and_renews_only_the_head(n):
    lr, mult = 0.5, 0.1
    source, fresh, model = convnet(1), convnet(2), convnet(2)
    plan = apply_treatment(model, "AnB-ft", n, {"A": source}, lr=lr, lr_mult=mult, **PLAIN)
    assert plan.copied == NAMES
    # Every layer is A's; only the head keeps the fresh initialisation.
    for k, v in model.state_dict().items():
        want = fresh.state_dict()[k] if k.startswith("head.") else source.state_dict()[k]
        assert torch.equal(v, want), k
    assert not torch.equal(model.head.weight, source.head.weight[:5])
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    grads = sgd_step(model, plan, lr)
    moved = set()
    for k, p in model.named_parameters():
        layer = layer_of(k)
        if layer in NAMES[:n]:  # frozen: unchanged, no gradient asked for
            assert torch.equal(p.detach(), before[k]) and grads[k] is None, k
            continue
        rate = lr if layer is None else lr * mult  # the head at the base rate
        # Plain SGD: the update is exactly -rate * gradient.
        torch.testing.assert_close(before[k] - p.detach(), rate * grads[k], msg=k)
        if not torch.equal(p.detach(), before[k]):
            moved.add(layer or "head")
    assert moved == set(NAMES[n:]) | {"head"}


def test_anb_ft_differs_from_anb_above_n():
    source = convnet(1)
    ft, anb = convnet(2), convnet(2)
    apply_treatment(ft, "AnB-ft", 2, {"A": source}, lr=0.1, lr_mult=0.1, **PLAIN)
    apply_treatment(anb, "AnB", 2, {"A": source}, lr=0.1, lr_mult=0.1, **PLAIN)
    assert torch.equal(ft.layers.conv3[0].weight, source.layers.conv3[0].weight)
    assert not torch.equal(anb.layers.conv3[0].weight, source.layers.conv3[0].weight)


# ---------------------------------------------------------------------------- per-layer rates


def test_layer_lr_mult_overrides_lr_mult_for_the_layers_it_names():
    lr = 0.5
    source, model = convnet(1), convnet(2)
    rates = {"fc5": 0.1, "conv3": 0.01}  # Hong's lecture: 1/10 top, 1/100 below
    plan = apply_treatment(model, "AnB+", 5, {"A": source}, lr=lr, lr_mult=0.01,
                           layer_lr_mult=rates, frozen_dropout=True)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    grads = sgd_step(model, plan, lr)
    for k, p in model.named_parameters():
        layer = layer_of(k)
        rate = lr if layer is None else lr * rates.get(layer, 0.01)
        torch.testing.assert_close(before[k] - p.detach(), rate * grads[k], msg=k)


def test_layer_lr_mult_names_are_checked_against_the_arch():
    raw = deep_update(TINY, {"transfer": {"layer_lr_mult": {"fc7": 0.1}}})
    with pytest.raises(ParamsError, match=r"transfer.layer_lr_mult.fc7 = 0.1.*layers of arch "
                                          r"'convnet': conv1, conv2, conv3, conv4, fc5"):
        parse_params(raw)
    with pytest.raises(ParamsError, match=r"transfer.layer_lr_mult.fc5"):
        parse_params(deep_update(TINY, {"transfer": {"layer_lr_mult": {"fc5": 0}}}))
    ok = parse_params(deep_update(TINY, {"transfer": {"layer_lr_mult": {"fc5": 0.1}}}))
    assert ok.transfer.layer_lr_mult == {"fc5": 0.1}


# ---------------------------------------------------------------------------- step decays


def rates_per_step(cfg, steps=6, n=2):
    """The rate of every group before each of `steps` optimiser steps of an AnB+ run."""
    source, model = convnet(1), convnet(2)
    plan = apply_treatment(model, "AnB+", n, {"A": source}, lr=cfg.lr, lr_mult=0.1, **PLAIN)
    opt = make_optimizer(plan.param_groups, cfg)
    scheduler = make_scheduler(opt, cfg, 1)
    seen = []
    for _ in range(steps):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        scheduler.step()
    return seen


def test_copied_layers_decay_at_their_own_milestones():
    cfg = recipe(lr=0.1, lr_decay=0.1, milestones=(2, 4), copied_milestones=(4,), **SGD)
    copied, new = zip(*rates_per_step(cfg), strict=True)
    # Borthakur & Einhorn: copied layers stay at 0.01 until the second drop; the new ones
    # drop twice.
    assert copied == pytest.approx([0.01] * 4 + [0.001] * 2)
    assert new == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_an_empty_copied_schedule_keeps_the_copied_rate():
    cfg = recipe(lr=0.1, lr_decay=0.1, milestones=(2,), copied_milestones=(), **SGD)
    copied, new = zip(*rates_per_step(cfg, steps=4), strict=True)
    assert copied == pytest.approx([0.01] * 4)
    assert new == pytest.approx([0.1, 0.1, 0.01, 0.01])


def test_without_copied_milestones_every_group_decays_as_before():
    shared = recipe(lr=0.1, lr_decay=0.1, milestones=(2, 4), copied_milestones=None, **SGD)
    same = dataclasses.replace(shared, copied_milestones=(2, 4))
    # null: torch's MultiStepLR on every group; equal per-group milestones: the same
    # rates bit for bit (the chained products, not 0.1 ** k).
    assert rates_per_step(shared) == rates_per_step(same)
    assert [r[0] for r in rates_per_step(shared)] == pytest.approx(
        [0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001])


def test_fit_with_equal_per_group_milestones_trains_the_same_weights():
    x = torch.randn(24, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.arange(24) % 5
    out = []
    for copied in (None, (3,)):
        cfg = recipe(lr=0.05, batch_size=8, milestones=(3,), copied_milestones=copied, **SGD)
        source, model = convnet(1), convnet(2)
        plan = apply_treatment(model, "AnB+", 3, {"A": source}, lr=cfg.lr, lr_mult=0.1,
                               **PLAIN)
        fit(model, Batches(x, y, 8, 0), cfg, param_groups=plan.param_groups,
            frozen=plan.frozen, steps=6, progress=False)
        out.append(model.state_dict())
    assert all(torch.equal(v, out[1][k]) for k, v in out[0].items())


def test_copied_milestones_are_checked_like_milestones():
    with pytest.raises(ParamsError, match=r"transfer.copied_milestones\[0\] = 9"):
        parse_params(deep_update(TINY, {"transfer": {"copied_milestones": [9],
                                                     "epochs": None}}))
    # With a budget in epochs the steps are only its minimum: later milestones are fine.
    later = {"epochs": 40, "milestones": [26, 36], "copied_milestones": [36]}
    assert parse_params(deep_update(TINY, {"transfer": later})).transfer.milestones == (26, 36)


# ---------------------------------------------------------------------------- frozen layers


def wrn(seed):
    torch.manual_seed(seed)
    return build_model("wrn", (3, 8, 8), 5, depth=10, widen=1, dropout=0.3)


def norm_buffers(module):
    return {k: v.clone() for k, v in module.named_buffers()}


@pytest.mark.parametrize("frozen_dropout", [True, False])
def test_frozen_layers_keep_batch_norm_statistics_and_dropout_follows_the_choice(
        frozen_dropout):
    n = 3  # conv1, block1.unit1, block2.unit1 frozen; block3.unit1 and final trained
    source, model = wrn(1), wrn(2)
    plan = apply_treatment(model, "AnB", n, {"A": source}, lr=0.05, lr_mult=1.0,
                           layer_lr_mult={}, frozen_dropout=frozen_dropout)
    names = model.layer_names
    frozen_names, trained_names = names[:n], names[n:]
    before = {name: norm_buffers(model.layer(name)) for name in names}
    dropout_modes = {name: [] for name in ("block2.unit1", "block3.unit1")}
    for name, modes in dropout_modes.items():
        drop = next(m for m in model.layer(name).modules() if isinstance(m, torch.nn.Dropout))
        drop.register_forward_hook(lambda m, i, o, modes=modes: modes.append(m.training))
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    y = torch.arange(16) % 5
    fit(model, Batches(x, y, 8, 0), recipe(lr=0.05, batch_size=8, **SGD),
        param_groups=plan.param_groups, frozen=plan.frozen, steps=4, progress=False)
    for name in frozen_names:
        after = norm_buffers(model.layer(name))
        assert all(torch.equal(v, after[k]) for k, v in before[name].items()), name
    for name in trained_names[:-1]:  # the trained units' statistics did move
        after = norm_buffers(model.layer(name))
        assert any(not torch.equal(v, after[k]) for k, v in before[name].items()), name
    # Dropout in a frozen unit: on as under a Caffe lr_mult 0 freeze, or off.
    assert dropout_modes["block2.unit1"] == [frozen_dropout] * 4
    assert dropout_modes["block3.unit1"] == [True] * 4


# ---------------------------------------------------------------------------- budget


@pytest.mark.parametrize(("epochs", "images", "expected"), [
    (None, 500, 100),  # steps only
    (2, 100, 100),     # 2 epochs of 4 batches = 8 < 100: the minimum
    (10, 500, 160),    # 10 epochs of ceil(500 / 32) = 16 batches
    (3, 20, 100),      # fewer images than a batch: one step per epoch
])
def test_transfer_budget_is_steps_or_epochs_of_the_target(epochs, images, expected):
    cfg = recipe(steps=100, batch_size=32, epochs=epochs)
    assert cfg.budget(images) == expected


# ---------------------------------------------------------------------------- binary heads


@pytest.fixture
def prepared(tmp_path, digits_tasks):
    from transferlab.data.prepared import write_prepared

    write_prepared(tmp_path / "prepared", *digits_tasks)
    return tmp_path / "prepared"


@pytest.mark.parametrize("in_model_a", [False, True])
def test_model_a_trains_with_the_binary_heads_only_when_asked(tmp_path, prepared, in_model_a):
    from transferlab.training.pretrain import pretrain

    params = parse_params(deep_update(TINY, {"pretrain": {"epochs": 1, "binary_aux": {
        "heads": 2, "in_model_A": in_model_a, "compare": False}}}))
    for side in ("A", "B"):
        metrics = pretrain(params, side, prepared=prepared, model_out=tmp_path / f"{side}.pt",
                           metrics_out=tmp_path / f"{side}.json", progress=False)
        assert metrics["binary_aux_heads"] == (2 if in_model_a and side == "A" else 0)


def test_the_paired_comparison_runs_only_when_asked(tmp_path, prepared):
    from transferlab.training.pretrain import compare_binary_aux

    off = parse_params(deep_update(TINY, {"pretrain": {"binary_aux": {
        "heads": 1, "in_model_A": True, "compare": False}}}))
    assert compare_binary_aux(off, prepared=prepared, out=tmp_path / "off.json",
                              progress=False) == {"enabled": False}
    on = parse_params(deep_update(TINY, {"pretrain": {"epochs": 1, "binary_aux": {
        "heads": 1, "in_model_A": False, "compare": True, "seeds": [0], "subsample": 2}}}))
    result = compare_binary_aux(on, prepared=prepared, out=tmp_path / "on.json", progress=False)
    assert result["enabled"] and result["heads"] == 1 and len(result["pairs"]) == 1
