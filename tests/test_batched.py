"""Batched training of sweep variants (transferlab.training.batched) against one at a time."""

import dataclasses
import math

import pytest
import torch

from transferlab.config.params import parse_params
from transferlab.training import batched
from transferlab.training import sweep as runs
from transferlab.training.loop import TrainingDiverged
from transferlab.training.variant import Variant, new_model, run_variant

from .conftest import TINY, deep_update

CPU = torch.device("cpu")
# A few more steps than TINY's, so that summation-order differences could grow.
PARAMS = parse_params(deep_update(TINY, {"transfer": {"steps": 20}}))


def _sources(params, target):
    return {name: new_model(params, target, seed, CPU) for name, seed in (("A", 11), ("B", 12))}


def _variants(params, subsample=1):
    return [v for v in runs.grid(params, seed=0) if v.subsample == subsample]


def _trained_batched(params, target, sources, variants, log=None):
    return batched.train_variants_batched(params, target, sources, variants, device=CPU,
                                          log=log or (lambda _: None))


@pytest.mark.parametrize("optimizer, epochs", [("adam", None), ("sgd", None), ("adam", 8)])
def test_batched_variants_agree_with_one_at_a_time(digits_tasks, optimizer, epochs):
    """With transfer.epochs the budget differs per target size (each group has one)."""
    _, target, _ = digits_tasks
    params = parse_params(deep_update(TINY, {"transfer": {
        "steps": 20, "optimizer": optimizer, "milestones": [8, 16], "epochs": epochs,
        "lr": 0.001 if optimizer == "adam" else 0.05, "batch_size": 4 if epochs else 16}}))
    if epochs:  # 2 steps an epoch at 1 image per class, 4 at 3: budgets 20 and 32
        assert [params.transfer.budget(5 * k) for k in (1, 3)] == [20, 32]
    sources = _sources(params, target)
    variants = _variants(params) + _variants(params, 3)[:3]
    notes = []
    together = _trained_batched(params, target, sources, variants, log=notes.append)
    assert notes == []  # every variant of the default recipe batches
    for v in variants:
        alone = run_variant(params, target, sources, v, device=CPU)
        got = together[v.key]
        assert set(got) == set(alone)
        assert abs(got["test_accuracy"] - alone["test_accuracy"]) <= batched.ACCURACY_TOLERANCE
        # Float sums in another order: the losses agree to about float32 precision.
        assert math.isclose(got["final_train_loss"], alone["final_train_loss"],
                            rel_tol=1e-4, abs_tol=1e-5), v.key
        assert math.isclose(got["test_loss"], alone["test_loss"], rel_tol=1e-4), v.key
        assert got["copied_layers"] == alone["copied_layers"]
        # sweep.curves off (the shipped value): no curve is tested or stored in either mode.
        assert not params.sweep.curves and "curve" not in got and "curve" not in alone


def test_frozen_layers_stay_exactly_the_source_layers(digits_tasks):
    _, target, _ = digits_tasks
    sources = _sources(PARAMS, target)
    group = batched._Member(PARAMS, target, sources, Variant("AnB", 3, 3, 0), CPU)
    batched._train_stacked(PARAMS, [group], CPU)
    model = group.setup.model
    for name in ("conv1", "conv2", "conv3"):
        for (key, p), q in zip(model.layer(name).state_dict().items(),
                               sources["A"].layer(name).state_dict().values(), strict=True):
            assert torch.equal(p, q), (name, key)
    fresh = new_model(PARAMS, target.subsampled(3, 0), 0, CPU)
    assert not torch.equal(model.layer("conv4")[0].weight, fresh.layer("conv4")[0].weight)


def test_batched_mode_is_deterministic_and_independent_of_its_group(digits_tasks):
    _, target, _ = digits_tasks
    sources = _sources(PARAMS, target)
    variants = _variants(PARAMS)
    first = _trained_batched(PARAMS, target, sources, variants)
    second = _trained_batched(PARAMS, target, sources, variants)
    assert first == second
    # A variant's result must not depend on which others were pending with it.
    for chosen in ([variants[0]], [variants[3]], [variants[-1]], variants[:4]):
        got = _trained_batched(PARAMS, target, sources, chosen)
        assert got == {v.key: first[v.key] for v in chosen}


def test_an_architecture_that_cannot_batch_trains_one_at_a_time_and_says_so_once(
        digits_tasks):
    _, target, _ = digits_tasks
    params = parse_params(deep_update(TINY, {"arch": "wrn", "model": {"wrn": {
        "depth": 10, "widen": 1, "dropout": 0.0}}, "sweep": {"layers": [1]},
        "features": {"layers": ["conv1"]}, "report": {"layer": 1},
        "heads": {"lowshot": {"layers": None}}}))
    variants = _variants(params)[:3]
    sources = _sources(params, target)
    notes = []
    got = _trained_batched(params, target, sources, variants, log=notes.append)
    assert len(notes) == 1 and "BatchNorm2d" in notes[0] and "3 of 3" in notes[0], notes
    for v in variants:
        assert got[v.key] == run_variant(params, target, sources, v, device=CPU)


@pytest.mark.parametrize("changes, reason", [
    ({"data": {"flip": True}}, "augmentation"),
    ({"arch": "feedback", "model": {"feedback": {"iterations": 2, "width": 4, "hidden": 8}},
      "sweep": {"layers": [1]}, "features": {"layers": ["stem"]}, "report": {"layer": 1},
      "heads": {"lowshot": {"layers": None}}},
     "feedback"),
    ({"transfer": {"compile": True}}, "compile"),
    ({"sweep": {"batched": False}}, "sweep.batched: false"),
])
def test_unsupported_recipes_fall_back(changes, reason):
    params = parse_params(deep_update(TINY, changes))
    why = batched.problems(params, _variants(params), multilabel=False)
    assert all(reason in (problem or "") for problem in why.values()), why
    assert batched.problems(PARAMS, _variants(PARAMS), multilabel=True)["base/n0/k1/s0"]


def test_a_transfer_option_it_does_not_know_falls_back(digits_tasks):
    """A new recipe option (another issue's, say) must not be silently ignored."""
    _, target, _ = digits_tasks
    cfg = PARAMS.transfer
    with_option = dataclasses.make_dataclass(
        "TransferWithOption", [("warmup_steps", int, dataclasses.field(default=5))],
        bases=(type(cfg),), frozen=True, kw_only=True)
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}  # sections kept
    params = dataclasses.replace(PARAMS, transfer=with_option(**fields))
    notes = []
    v = Variant("base", 0, 1, 0)
    got = _trained_batched(params, target, {}, [v], log=notes.append)
    assert len(notes) == 1 and "warmup_steps" in notes[0]
    assert got[v.key] == run_variant(params, target, {}, v, device=CPU)
    # A known option it does not reproduce batches only at its neutral value.
    changed = dataclasses.replace(PARAMS, transfer=dataclasses.replace(
        cfg, copied_milestones=(10,)))
    assert "copied_milestones" in batched.recipe_problem(changed, v)
    assert batched.recipe_problem(PARAMS, v) is None
    # An epoch budget batches (a group's members share their data size, so their budget).
    by_epochs = dataclasses.replace(PARAMS, transfer=dataclasses.replace(cfg, epochs=3))
    assert batched.recipe_problem(by_epochs, v) is None
    # A treatment it does not list falls back too.
    assert "treatment" in batched.recipe_problem(PARAMS, Variant("AnB-ft", 1, 1, 0))


def test_a_diverging_variant_stops_the_batched_run_naming_it(digits_tasks):
    _, target, _ = digits_tasks
    sources = _sources(PARAMS, target)
    with torch.no_grad():
        sources["B"].layer("conv1")[0].weight.fill_(math.nan)
    variants = [Variant("AnB", 2, 1, 0), Variant("BnB", 2, 1, 0)]
    with pytest.raises(TrainingDiverged, match=r"BnB/n2/k1/s0: loss became nan in epoch 1"):
        _trained_batched(PARAMS, target, sources, variants)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batched_on_cuda_agrees_with_one_at_a_time_there(digits_tasks):
    _, target, _ = digits_tasks
    gpu = torch.device("cuda")
    sources = {k: v.to(gpu) for k, v in _sources(PARAMS, target).items()}
    variants = _variants(PARAMS)
    together = batched.train_variants_batched(PARAMS, target, sources, variants, device=gpu,
                                              log=lambda _: None)
    for v in variants:
        alone = run_variant(PARAMS, target, sources, v, device=gpu)
        # bfloat16 autocast on both sides: a looser bound than on CPU.
        assert abs(together[v.key]["test_accuracy"] - alone["test_accuracy"]) <= 0.05


def _curves_params(steps):
    return parse_params(deep_update(TINY, {"transfer": {"steps": steps},
                                           "sweep": {"curves": True}}))


def test_curves_batched_and_one_at_a_time_have_the_same_points_and_close_values(
        digits_tasks):
    _, target, _ = digits_tasks
    params = _curves_params(20)
    sources = _sources(params, target)
    variants = [Variant("base", 0, 1, 0), Variant("AnB", 3, 1, 0), Variant("AnB+", 1, 1, 0),
                Variant("BnB+", 3, 3, 0)]
    notes = []
    together = _trained_batched(params, target, sources, variants, log=notes.append)
    assert notes == []
    for v in variants:
        alone = run_variant(params, target, sources, v, device=CPU, curves=True)
        got = together[v.key]
        assert set(got) == set(alone)
        mine, theirs = got["curve"], alone["curve"]
        # 20 epochs of one step each: every epoch is a point, in both modes.
        assert [p["epoch"] for p in mine] == [p["epoch"] for p in theirs] == list(range(1, 21))
        assert [p["step"] for p in mine] == [p["step"] for p in theirs]
        for a, b in zip(mine, theirs, strict=True):
            assert set(a) == set(b)
            assert abs(a["test_score"] - b["test_score"]) <= batched.ACCURACY_TOLERANCE, v.key
            assert math.isclose(a["train_loss"], b["train_loss"], rel_tol=1e-4,
                                abs_tol=1e-5), (v.key, a["epoch"])
        # The last point is the stored final model's test score, exactly, in each mode.
        for result in (got, alone):
            assert result["curve"][-1]["test_score"] == result["test_score"]
            assert result["curve"][-1]["test_loss"] == result["test_loss"]
            assert result["curve"][-1]["train_loss"] == result["final_train_loss"]
        # The curve moves: a trained network is not tested once and copied.
        assert len({p["test_loss"] for p in mine}) > 1


def test_long_runs_get_about_30_points_and_the_last_epoch(digits_tasks):
    _, target, _ = digits_tasks
    params = _curves_params(62)  # 62 epochs of one step: every 2nd epoch is a point
    v = Variant("AnB", 3, 1, 0)
    sources = _sources(params, target)
    together = _trained_batched(params, target, sources, [v])[v.key]
    alone = run_variant(params, target, sources, v, device=CPU, curves=True)
    for result in (together, alone):
        assert [p["epoch"] for p in result["curve"]] == list(range(2, 63, 2))


@pytest.mark.parametrize("arch, in_shape, kwargs", [
    ("convnet", (1, 8, 8), {"width": 4, "hidden": 8}),
    ("twoconv", (1, 16, 16), {"channels": (3, 5), "hidden": 6}),
])
@pytest.mark.parametrize("start", [0, 1])
def test_the_stacked_network_computes_each_variants_own_forward_and_gradient(
        arch, in_shape, kwargs, start):
    from transferlab.models import build_model

    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(build_model(arch, in_shape, 4, **kwargs))
    suffixes = [batched._Suffix(m, start) for m in models]
    # The suffix's own weights (the frozen prefix's stay out of the computation).
    used = tuple(f"net.layers.{name}." for name in suffixes[0].names) + ("net.head.",)
    names = [name for name, _ in suffixes[0].named_parameters() if name.startswith(used)]
    weights = {name: torch.stack([dict(s.named_parameters())[name].detach()
                                  for s in suffixes]).requires_grad_() for name in names}
    torch.manual_seed(5)
    x = torch.randn(3, 6, *in_shape)
    with torch.no_grad():  # each variant's own layer inputs (its frozen prefix)
        inputs = torch.stack([m.activations(x[i], m.layer_names[:start])[m.layer_names[start - 1]]
                              if start else x[i] for i, m in enumerate(models)])
    y = torch.randint(0, 4, (3, 6))
    logits = batched._StackedNet(suffixes[0])(weights, inputs)
    losses = torch.nn.functional.cross_entropy(logits.reshape(-1, 4), y.reshape(-1),
                                               reduction="none").view(3, 6).mean(1)
    grads = torch.autograd.grad(losses.sum(), [weights[n] for n in names])
    for i, suffix in enumerate(suffixes):
        alone = suffix(inputs[i])
        torch.testing.assert_close(logits[i], alone, rtol=1e-5, atol=1e-6)
        own = torch.autograd.grad(torch.nn.functional.cross_entropy(alone, y[i]),
                                  [dict(suffix.named_parameters())[n] for n in names])
        for name, got, want in zip(names, grads, own, strict=True):
            torch.testing.assert_close(got[i], want, rtol=1e-4, atol=1e-6, msg=name)


def test_a_layer_order_the_stacked_network_cannot_lay_out_is_refused_before_training():
    from torch import nn

    from transferlab.models import build_model
    from transferlab.models.base import TransferableNet

    # A linear layer applied to convolution maps (no Flatten before it).
    odd = TransferableNet({"conv1": nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU()),
                           "fc2": nn.Linear(8, 4)}, 4, 3)
    assert "linear layers batch on flat features only" in batched._stacking_problem(
        "odd", odd, (1, 8, 8))
    assert batched._stacking_problem("twoconv", build_model("twoconv", (1, 16, 16), 3),
                                     (1, 16, 16)) is None
    assert batched.architecture_problem(PARAMS) is None
