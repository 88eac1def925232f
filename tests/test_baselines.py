"""The fine-tuning baselines, each against a hand computation: linear probe (LP) and full
fine-tuning (FT), Kumar et al.'s LP-FT, Li, Grandvalet and Davoine's L2-SP and the
layer-wise rate decay; how the batched sweep treats them; their params checks; and that
at their shipped values (off) a run trains exactly as before they existed."""

import dataclasses

import pytest
import torch

from transferlab.config.params import ParamsError, parse_params
from transferlab.models import build_model
from transferlab.models.surgery import apply_treatment
from transferlab.training import batched
from transferlab.training import sweep as runs
from transferlab.training.loop import Batches, fit, make_optimizer
from transferlab.training.variant import Variant, l2sp_penalty, new_model, setup_variant

from .conftest import PLAIN, TINY, deep_update, recipe

CPU = torch.device("cpu")
NAMES = ["conv1", "conv2", "conv3", "conv4", "fc5"]
SGD = {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0, "milestones": ()}
FINE_TUNING = ["base", "AnB", "AnB+", "LP", "FT", "LP-FT"]


def convnet(seed):
    torch.manual_seed(seed)
    return build_model("convnet", (1, 8, 8), 5, width=4, hidden=16)


def data(n=24, seed=0, batch_size=None):
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, 8, 8, generator=gen), torch.randint(0, 5, (n,), generator=gen)
    return Batches(x, y, batch_size or n, seed)


def layer_state(model, names):
    return {f"{name}.{k}": v.clone() for name in names
            for k, v in model.layer(name).state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def train(model, plan, steps, cfg, **kwargs):
    return fit(model, data(batch_size=8), cfg, param_groups=plan.param_groups,
               frozen=plan.frozen, steps=steps, progress=False, head_first=plan.head_first,
               **kwargs)


# ---------------------------------------------------------------------------- LP and FT


def test_linear_probe_trains_the_head_alone_and_full_fine_tuning_every_layer():
    source = convnet(1)
    lp, ft = convnet(2), convnet(2)
    lp_plan = apply_treatment(lp, "LP", 5, {"A": source}, lr=0.01, lr_mult=0.1, **PLAIN)
    ft_plan = apply_treatment(ft, "FT", 5, {"A": source}, lr=0.01, lr_mult=0.1, **PLAIN)
    assert lp_plan.copied == ft_plan.copied == NAMES
    head = {k: v.clone() for k, v in lp.head.state_dict().items()}
    cfg = recipe(lr=0.01)
    train(lp, lp_plan, 4, cfg)
    train(ft, ft_plan, 4, cfg)
    assert same(layer_state(lp, NAMES), layer_state(source, NAMES))  # every layer frozen
    assert not torch.equal(lp.head.weight, head["weight"])  # the head trained
    for name in NAMES:  # every copied layer fine-tuned
        assert not same(layer_state(ft, [name]), layer_state(source, [name])), name
    assert not torch.equal(ft.head.weight, head["weight"])
    # FT's copied layers at lr * lr_mult, its head at lr; LP only the head, at lr
    assert [g["lr"] for g in ft_plan.param_groups] == [0.01 * 0.1, 0.01]
    assert [g["lr"] for g in lp_plan.param_groups if g["params"]] == [0.01]


def test_lp_ft_and_lp_ft_copy_every_layer_whatever_n_is_asked():
    with pytest.raises(ValueError, match="LP copies every layer: n = 3, but the model has 5"):
        apply_treatment(convnet(2), "LP", 3, {"A": convnet(1)}, lr=0.1, lr_mult=1.0, **PLAIN)
    with pytest.raises(ValueError, match="head_steps = 0 must be at least 1"):
        apply_treatment(convnet(2), "LP-FT", 5, {"A": convnet(1)}, lr=0.1, lr_mult=1.0,
                        **PLAIN)


def test_the_sweep_runs_the_baselines_once_per_size_at_every_layer():
    params = parse_params(deep_update(TINY, {"sweep": {"treatments": FINE_TUNING}}))
    grid = runs.grid(params, seed=0)
    for name in ("LP", "FT", "LP-FT"):
        assert [(v.n, v.subsample) for v in grid if v.treatment == name] == [(5, 1), (5, 3)]
    with pytest.raises(ParamsError, match=r"sweep.treatment_layers.LP = \[2\].*AnB, AnB\+"):
        parse_params(deep_update(TINY, {"sweep": {"treatments": FINE_TUNING,
                                                  "treatment_layers": {"LP": [2]}}}))


# ---------------------------------------------------------------------------- LP-FT


def tiny_densenet(seed):
    torch.manual_seed(seed)
    return build_model("densenet_bc", (1, 8, 8), 5, depth=10, growth=4, compression=0.5)


@pytest.mark.parametrize("build", [convnet, tiny_densenet])
def test_lp_ft_holds_the_copied_layers_for_its_first_phase_then_trains_everything(build):
    lr, mult, head_steps, steps = 0.05, 0.1, 3, 7
    source = build(1)
    names = source.layer_names

    def run(n_steps, hooks=False):
        model = build(2)
        plan = apply_treatment(model, "LP-FT", len(names), {"A": source}, lr=lr, lr_mult=mult,
                               head_steps=head_steps, **PLAIN)
        counts = {"copied": 0, "head": 0}
        if hooks:  # one gradient per step a parameter trains in
            def count(kind):
                def hook(grad):
                    counts[kind] += 1
                return hook
            next(iter(model.layer(names[0]).parameters())).register_hook(count("copied"))
            model.head.weight.register_hook(count("head"))
        head = model.head.weight.detach().clone()
        train(model, plan, n_steps, recipe(lr=lr, **SGD))
        return model, plan, head, counts

    # After phase 1 the copied layers (batch-norm statistics included) are the source's
    # byte for byte, and the head has trained.
    model, plan, head, _ = run(head_steps)
    assert same(layer_state(model, names), layer_state(source, names))
    assert not torch.equal(model.head.weight, head)
    assert plan.head_first.steps == head_steps
    # One step into phase 2, every copied layer has moved.
    model, *_ = run(head_steps + 1)
    for name in names:
        assert not same(layer_state(model, [name]), layer_state(source, [name])), name
    # Whole budget: the head trains every step, the copied layers in the last steps - 3.
    model, plan, _, counts = run(steps, hooks=True)
    assert counts == {"copied": steps - head_steps, "head": steps}
    assert all(p.requires_grad for p in model.parameters())  # released for good
    # Phase 2's rates: copied layers at lr * (LP-FT's multiplier), the head at lr.
    rates = [g["lr"] for g in make_optimizer(plan.param_groups, recipe(lr=lr)).param_groups]
    assert rates == [lr * mult, lr]


def test_lp_ft_phase_two_is_one_plain_sgd_step_at_its_rates_from_the_trained_head():
    lr, mult = 0.05, 0.1
    source = convnet(1)
    model = convnet(2)
    plan = apply_treatment(model, "LP-FT", 5, {"A": source}, lr=lr, lr_mult=mult,
                           head_steps=2, **PLAIN)
    batches = data(n=8)  # one batch per step, the whole set: step 3's gradient by hand
    # With momentum: phase 2 starts from a fresh optimiser state, so its first step is
    # -rate x gradient even for the head, whose momentum buffer phase 1 had filled.
    cfg = recipe(lr=lr, **dict(SGD, momentum=0.9))
    fit(model, batches, cfg, param_groups=plan.param_groups, frozen=plan.frozen, steps=2,
        progress=False, head_first=plan.head_first)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(batches.x), batches.y)
    grads = dict(zip(before, torch.autograd.grad(loss, list(model.parameters())), strict=True))
    # The same model, trained three steps from scratch: the third is phase 2's first.
    again = convnet(2)
    plan = apply_treatment(again, "LP-FT", 5, {"A": source}, lr=lr, lr_mult=mult,
                           head_steps=2, **PLAIN)
    fit(again, batches, cfg, param_groups=plan.param_groups, frozen=plan.frozen, steps=3,
        progress=False, head_first=plan.head_first)
    for k, p in again.named_parameters():
        rate = lr if k.startswith("head.") else lr * mult
        torch.testing.assert_close(p.detach(), before[k] - rate * grads[k], msg=k)


def test_lp_ft_variant_takes_its_share_and_multiplier_from_the_recipe(digits_tasks):
    _, target, _ = digits_tasks
    params = parse_params(deep_update(TINY, {
        "transfer": {"steps": 10, "lp_ft": {"head_share": 0.35, "lr_mult": 0.2}},
        "sweep": {"treatments": FINE_TUNING}}))
    sources = {"A": new_model(params, target, 11, CPU)}
    s = setup_variant(params, target, sources, Variant("LP-FT", 5, 1, 0), CPU)
    assert s.plan.head_first.steps == 3 and s.steps == 10  # floor(0.35 x 10)
    lr = params.transfer.lr
    assert [g["lr"] for g in s.plan.param_groups] == [lr * 0.2, lr]
    ft = setup_variant(params, target, sources, Variant("FT", 5, 1, 0), CPU)
    assert ft.plan.head_first is None
    assert [g["lr"] for g in ft.plan.param_groups] == [lr * params.transfer.lr_mult, lr]


# ---------------------------------------------------------------------------- L2-SP


def l2sp_setup(alpha, beta, n=2):
    source, model = convnet(1), convnet(2)
    plan = apply_treatment(model, "AnB+", n, {"A": source}, lr=0.1, lr_mult=0.5, **PLAIN)
    penalty = l2sp_penalty(plan, alpha, beta)
    # Move the copied layers off the source's weights, so alpha's term is not zero.
    torch.manual_seed(5)
    with torch.no_grad():
        for name in NAMES[:n]:
            for p in model.layer(name).parameters():
                p.add_(0.1 * torch.randn_like(p))
    return source, model, plan, penalty


def plain_ce_grads(model, batches):
    loss = torch.nn.functional.cross_entropy(model(batches.x), batches.y)
    names = [k for k, _ in model.named_parameters()]
    return dict(zip(names, torch.autograd.grad(loss, list(model.parameters())), strict=True))


def test_l2sp_step_is_the_hand_computed_sgd_step():
    alpha, beta, lr, mult = 0.3, 0.05, 0.1, 0.5
    source, model, plan, penalty = l2sp_setup(alpha, beta)
    batches = data(n=16)  # one batch: the whole set
    w = {k: p.detach().clone() for k, p in model.named_parameters()}
    w0 = {k: p.detach().clone() for k, p in source.named_parameters()}
    grad_ce = plain_ce_grads(model, batches)
    fit(model, batches, recipe(lr=lr, **SGD), param_groups=plan.param_groups,
        frozen=plan.frozen, steps=1, progress=False, penalty=penalty)
    for k, p in model.named_parameters():
        layer = k.split(".")[1] if k.startswith("layers.") else "head"
        if layer in NAMES[:2]:  # copied, fine-tuned at lr * lr_mult, pulled to the source
            want = w[k] - lr * mult * (grad_ce[k] + alpha * (w[k] - w0[k]))
        else:  # new (conv3.., fc5, head) at lr, pulled to zero
            want = w[k] - lr * (grad_ce[k] + beta * w[k])
        torch.testing.assert_close(p.detach(), want, msg=k)
    assert penalty.start[0].data_ptr() != w0["layers.conv1.0.weight"].data_ptr()


def test_l2sp_goes_through_adam_as_a_term_of_the_loss():
    """Adam's first step of the total gradient (not a decoupled decay of the weights)."""
    alpha, beta, lr = 0.3, 0.05, 0.01
    source, model, plan, penalty = l2sp_setup(alpha, beta)
    batches = data(n=16)
    w0 = {k: p.detach().clone() for k, p in source.named_parameters()}
    twin = convnet(0)
    twin.load_state_dict(model.state_dict())
    grad_ce = plain_ce_grads(twin, batches)
    groups = []
    for g in plan.param_groups:
        ids = {id(p) for p in g["params"]}
        groups.append({"params": [q for (k, q), p in zip(twin.named_parameters(),
                                                          model.parameters(), strict=True)
                                  if id(p) in ids], "lr": g["lr"], "copied": g["copied"]})
    names = {id(q): k for k, q in twin.named_parameters()}
    for g in groups:
        for q in g["params"]:
            k = names[id(q)]
            q.grad = grad_ce[k] + (alpha * (q.detach() - w0[k]) if g["copied"]
                                   else beta * q.detach())
    cfg = recipe(lr=lr, optimizer="adam", weight_decay=0.0, milestones=())
    make_optimizer(groups, cfg).step()
    fit(model, batches, cfg, param_groups=plan.param_groups, frozen=plan.frozen, steps=1,
        progress=False, penalty=penalty)
    for (k, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), msg=k)


def test_l2sp_applies_only_where_copied_layers_are_fine_tuned():
    source = convnet(1)
    for name, n in (("base", 0), ("AnB", 3), ("LP", 5)):
        plan = apply_treatment(convnet(2), name, n, {"A": source}, lr=0.1, lr_mult=1.0,
                               **PLAIN)
        assert l2sp_penalty(plan, 0.1, 0.01) is None, name
    for name, n in (("AnB+", 3), ("FT", 5), ("AnB-ft", 2)):
        plan = apply_treatment(convnet(2), name, n, {"A": source}, lr=0.1, lr_mult=1.0,
                               **PLAIN)
        assert l2sp_penalty(plan, 0.1, 0.01) is not None, name
        assert l2sp_penalty(plan, 0.0, 0.0) is None, name  # off


# ---------------------------------------------------------------------------- layer decay


def test_layer_decay_rates_are_the_hand_formula_and_an_explicit_rate_wins():
    lr, mult, d = 0.2, 0.5, 0.6
    source, model = convnet(1), convnet(2)
    plan = apply_treatment(model, "AnB+", 4, {"A": source}, lr=lr, lr_mult=mult,
                           layer_lr_mult={"conv2": 0.03}, frozen_dropout=True, layer_decay=d)
    opt = make_optimizer(plan.param_groups, recipe(lr=lr))
    rates = {g.get("layer", "new"): g["lr"] for g in opt.param_groups}
    L = 4  # conv1..conv4 copied and fine-tuned; layer i at lr * mult * d^(L - i)
    assert rates == pytest.approx({"conv1": lr * mult * d ** (L - 1), "conv2": lr * 0.03,
                                   "conv3": lr * mult * d ** (L - 3), "conv4": lr * mult,
                                   "new": lr}, rel=1e-15)
    assert [g["layer"] for g in opt.param_groups[:4]] == NAMES[:4]
    assert all(g["copied"] for g in opt.param_groups[:4])
    # AnB-ft at n = 2: the fine-tuned copied layers are conv3..fc5, so L = 3 from conv3
    plan = apply_treatment(convnet(2), "AnB-ft", 2, {"A": source}, lr=lr, lr_mult=mult,
                           layer_decay=d, **PLAIN)
    assert {g.get("layer", "head"): g["lr"] for g in plan.param_groups} == pytest.approx(
        {"conv3": lr * mult * d ** 2, "conv4": lr * mult * d, "fc5": lr * mult, "head": lr})


def test_layer_decay_batches_like_any_per_layer_rate():
    params = parse_params(deep_update(TINY, {"transfer": {"layer_decay": 0.5}}))
    variants = [Variant("AnB+", 3, 1, 0), Variant("FT", 5, 1, 0), Variant("LP", 5, 1, 0)]
    assert set(batched.problems(params, variants, False).values()) == {None}


# ---------------------------------------------------------------------------- batched sweep


def test_the_batched_sweep_trains_lp_ft_and_l2sp_variants_one_at_a_time(digits_tasks):
    _, target, _ = digits_tasks
    params = parse_params(deep_update(TINY, {"transfer": {"l2sp": {"alpha": 0.1, "beta": 0.01}},
                                             "sweep": {"treatments": FINE_TUNING}}))
    variants = [Variant("LP-FT", 5, 1, 0), Variant("AnB+", 3, 1, 0), Variant("FT", 5, 1, 0),
                Variant("AnB", 3, 1, 0), Variant("LP", 5, 1, 0), Variant("base", 0, 1, 0)]
    why = batched.problems(params, variants, False)
    assert why["LP-FT/n5/k1/s0"] == "treatment 'LP-FT' not supported batched"
    assert why["AnB+/n3/k1/s0"] == why["FT/n5/k1/s0"] == \
        "transfer.l2sp (L2-SP's loss term) not supported batched"
    # No fine-tuned copied layer, no L2-SP term: these still batch.
    assert why["AnB/n3/k1/s0"] is why["LP/n5/k1/s0"] is why["base/n0/k1/s0"] is None
    sources = {name: new_model(params, target, seed, CPU) for name, seed in (("A", 11),)}
    notes = []
    results = batched.train_variants_batched(params, target, sources, variants[:2] + [variants[3]],
                                             device=CPU, log=notes.append)
    assert len(results) == 3 and all(r["steps"] == params.transfer.budget(r["train_images"])
                                     for r in results.values())
    assert any("1 of 3 variants one at a time: treatment 'LP-FT'" in n for n in notes)
    assert any("1 of 3 variants one at a time: transfer.l2sp" in n for n in notes)
    # train_group refuses what problems would have kept out
    with pytest.raises(RuntimeError, match="cannot batch after all"):
        batched.train_group(params, target, sources, [variants[1]], device=CPU)


def test_lp_and_ft_batched_agree_with_one_at_a_time(digits_tasks):
    from transferlab.training.variant import run_variant

    _, target, _ = digits_tasks
    params = parse_params(deep_update(TINY, {"transfer": {"steps": 12},
                                             "sweep": {"treatments": FINE_TUNING}}))
    sources = {"A": new_model(params, target, 11, CPU)}
    variants = [Variant("LP", 5, 3, 0), Variant("FT", 5, 3, 0)]
    together = batched.train_group(params, target, sources, variants, device=CPU)
    for v in variants:
        alone = run_variant(params, target, sources, v, device=CPU)
        got = together[v.key]
        assert abs(got["test_accuracy"] - alone["test_accuracy"]) \
            <= batched.ACCURACY_TOLERANCE, v.key
        assert got["final_train_loss"] == pytest.approx(alone["final_train_loss"], rel=1e-4)


# ---------------------------------------------------------------------------- params


@pytest.mark.parametrize("change, match", [
    ({"transfer": {"l2sp": {"alpha": -0.1}}}, r"transfer.l2sp.alpha = -0.1 .*>= 0.0"),
    ({"transfer": {"l2sp": {"beta": 1000}}}, r"transfer.l2sp.beta = 1000 .*<= 100.0"),
    ({"transfer": {"layer_decay": 0}}, r"transfer.layer_decay = 0 .*> 0.0 and <= 1.0"),
    ({"transfer": {"layer_decay": 1.5}}, r"transfer.layer_decay = 1.5 "),
    ({"transfer": {"lp_ft": {"head_share": 1.0}}}, r"transfer.lp_ft.head_share = 1.0 .*< 1.0"),
    ({"transfer": {"lp_ft": {"lr_mult": 0}}}, r"transfer.lp_ft.lr_mult = 0 "),
    ({"transfer": {"lp_ft": {"head_step": 3}}}, r"head_step"),
    # 5 steps: a share of 0.1 leaves LP-FT's head no step of its own
    ({"transfer": {"lp_ft": {"head_share": 0.1}}, "sweep": {"treatments": FINE_TUNING}},
     r"transfer.lp_ft.head_share = 0.1 .*\[0.2, 1\) with LP-FT in sweep.treatments"),
    # nothing fine-tunes copied layers: the option would change nothing
    ({"transfer": {"l2sp": {"alpha": 0.1}}, "sweep": {"treatments": ["base", "AnB", "LP"]}},
     r"transfer.l2sp.alpha = 0.1 .*expected 0.0 \(the default unless some run fine-tunes"),
    ({"transfer": {"layer_decay": 0.7}}, None),
])
def test_the_new_keys_are_checked(change, match):
    raw = deep_update(TINY, {"sweep": {"treatments": ["base", "AnB", "AnB+"]}})
    raw = deep_update(raw, change)
    if match is None:
        assert parse_params(raw).transfer.layer_decay == 0.7
        return
    with pytest.raises(ParamsError, match=match):
        parse_params(raw)


def test_without_lp_ft_in_the_sweep_its_share_is_not_tied_to_the_budget():
    raw = deep_update(TINY, {"transfer": {"lp_ft": {"head_share": 0.1}}})
    assert parse_params(raw).transfer.lp_ft.head_share == 0.1


# ---------------------------------------------------------------------------- defaults unchanged


def test_at_the_shipped_values_the_plans_and_steps_are_those_of_before(digits_tasks):
    """layer_decay 1.0: one shared group of copied layers (and one per explicit rate), as
    before; alpha = beta = 0: no penalty term, so fit's step is the old step; no treatment
    of the default sweep has an LP-FT phase."""
    _, target, _ = digits_tasks
    params = parse_params(TINY)
    cfg = params.transfer
    assert (cfg.layer_decay, cfg.l2sp.alpha, cfg.l2sp.beta) == (1.0, 0.0, 0.0)
    sources = {"A": new_model(params, target, 11, CPU), "B": new_model(params, target, 12, CPU)}
    for v in runs.grid(params, seed=0):
        s = setup_variant(params, target, sources, v, CPU)
        assert s.penalty is None and s.plan.head_first is None, v.key
        # the groups the code before these options built: copied layers in one group at
        # lr * lr_mult (when fine-tuned), everything else in one group at lr
        expected = [(cfg.lr * cfg.lr_mult, True)] if v.treatment in ("AnB+", "BnB+") else []
        assert [(g["lr"], g["copied"]) for g in s.plan.param_groups] == \
            expected + [(cfg.lr, False)], v.key
        assert all(set(g) == {"params", "lr", "copied"} for g in s.plan.param_groups), v.key
    assert set(batched.problems(params, runs.grid(params, 0), False).values()) == {None}


def test_treatment_fields_default_off_for_the_old_treatments():
    from transferlab.models.treatments import TREATMENTS

    for name in ("base", "AnB", "AnB+", "BnB", "BnB+", "AnB-2fc", "AnB-ft"):
        t = TREATMENTS[name]
        assert not t.all_layers and not t.head_first, name
    assert dataclasses.asdict(TREATMENTS["LP"])["finetune"] is False
