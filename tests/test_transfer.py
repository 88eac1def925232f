import pytest
import torch

from transferlab.models import build_model
from transferlab.models.surgery import apply_treatment, copy_first_layers
from transferlab.models.treatments import treatment_name
from transferlab.training.loop import Batches, fit, make_optimizer

from .conftest import PLAIN, recipe

NAMES = ["conv1", "conv2", "conv3", "conv4", "fc5"]


def make(seed, classes=5):
    torch.manual_seed(seed)
    return build_model("convnet", (1, 8, 8), classes, width=4, hidden=16)


def layer_equal(a, b, name):
    sa, sb = a.layers[name].state_dict(), b.layers[name].state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def one_step(model, plan, lr=0.1):
    cfg = recipe(batch_size=8, optimizer="sgd", lr=lr, momentum=0.0)
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 5, (8,))
    fit(model, Batches(x, y, 8, 0), cfg, param_groups=plan.param_groups, frozen=plan.frozen,
        steps=1, progress=False)


def test_layer_list_is_ordered_and_the_head_is_separate():
    model = make(0)
    assert model.layer_names == NAMES
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 5)
    assert not any(k.startswith("head") for name in NAMES
                   for k in model.layers[name].state_dict())


@pytest.mark.parametrize("n", [0, 1, 3, 5])
def test_copy_first_n_layers_equal_the_source_and_the_rest_stay_fresh(n):
    source, fresh, target = make(1), make(2), make(2)
    apply_treatment(target, "AnB", n, {"A": source}, lr=0.1, lr_mult=0.1, **PLAIN)
    for i, name in enumerate(NAMES):
        if i < n:
            assert layer_equal(target, source, name), name
        else:
            # Above n: the fresh initialisation of this seed, not the source's weights.
            assert layer_equal(target, fresh, name), name
            assert not layer_equal(target, source, name), name
    assert torch.equal(target.head.weight, fresh.head.weight)


def test_frozen_layers_do_not_change_after_an_optimiser_step():
    source, target = make(1), make(2)
    plan = apply_treatment(target, "AnB", 3, {"A": source}, lr=0.1, lr_mult=0.1, **PLAIN)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    one_step(target, plan)
    after = target.state_dict()
    for k in before:
        changed = not torch.equal(before[k], after[k])
        frozen = any(k.startswith(f"layers.{n}.") for n in NAMES[:3])
        assert changed != frozen, k
    assert all(not p.requires_grad for n in NAMES[:3] for p in target.layers[n].parameters())


def test_fine_tuned_layers_move_at_lr_mult_of_the_base_rate():
    lr, mult = 0.5, 0.1
    source = make(1)
    tuned = make(2)
    plan = apply_treatment(tuned, "AnB+", 2, {"A": source}, lr=lr, lr_mult=mult, **PLAIN)
    assert [g["lr"] for g in plan.param_groups] == [lr * mult, lr]
    # Plain SGD: the update is exactly -rate * gradient, so compare with the gradient.
    cfg = recipe(batch_size=8, optimizer="sgd", lr=lr, momentum=0.0)
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 5, (8,))
    opt = make_optimizer(plan.param_groups, cfg)
    before = {n: p.detach().clone() for n, p in tuned.named_parameters()}
    loss = torch.nn.functional.cross_entropy(tuned(x), y)
    opt.zero_grad()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in tuned.named_parameters()}
    opt.step()
    for name, p in tuned.named_parameters():
        rate = lr * mult if name.startswith(("layers.conv1.", "layers.conv2.")) else lr
        torch.testing.assert_close(before[name] - p.detach(), rate * grads[name])


def test_copied_layers_come_from_the_named_source():
    a, b, target = make(1), make(3), make(2)
    apply_treatment(target, "BnB", 2, {"A": a, "B": b}, lr=0.1, lr_mult=0.1, **PLAIN)
    assert layer_equal(target, b, "conv2") and not layer_equal(target, a, "conv2")


def test_base_copies_nothing_and_trains_everything():
    target = make(2)
    plan = apply_treatment(target, "base", 3, {}, lr=0.1, lr_mult=0.1, **PLAIN)
    assert plan.copied == [] and plan.frozen == []
    assert sum(len(g["params"]) for g in plan.param_groups) == len(list(target.parameters()))


def test_copy_refuses_more_layers_than_the_model_has():
    with pytest.raises(ValueError, match="only 5 layers"):
        copy_first_layers(make(0), make(1), 6)


def test_treatment_names_follow_yosinski():
    assert treatment_name("A", 0, True) == "base"
    assert treatment_name("A", 3, False) == "AnB"
    assert treatment_name("A", 3, True) == "AnB+"
    assert treatment_name("B", 2, False) == "BnB"
    assert treatment_name("B", 2, True) == "BnB+"


# ---------------------------------------------------------------- which models are read


@pytest.mark.parametrize(("treatments", "source", "freeze", "swap", "arch", "used"), [
    (["base", "AnB", "AnB+"], "A", 3, False, "convnet", False),
    (["base", "AnB-ft", "AnB+"], "A", 3, False, "densenet_bc", False),
    (["base", "AnB", "BnB+"], "A", 3, False, "convnet", True),
    (["base", "AnB"], "B", 2, False, "convnet", True),   # the transfer stage copies from B
    (["base", "AnB"], "B", 0, False, "convnet", False),  # freeze 0 is base: nothing copied
    (["base", "AnB"], "A", 3, True, "alexnet", True),     # the swapped direction reads B
    (["base", "AnB"], "A", 3, False, "feedback", True),   # the gain over model B (Spero)
])
def test_model_b_is_used_only_where_a_stage_reads_it(treatments, source, freeze, swap, arch,
                                                      used):
    from transferlab.models.treatments import model_b_uses

    uses = model_b_uses(treatments=treatments, source=source, freeze=freeze, swap=swap,
                        arch=arch)
    assert bool(uses) is used, uses


def test_an_unused_model_file_says_why_and_cannot_be_loaded(tmp_path, capsys):
    from transferlab.config.params import parse_params
    from transferlab.training.pretrain import write_unused_model
    from transferlab.training.variant import load_model

    from .conftest import TINY

    paths = {"model_out": tmp_path / "B.pt", "metrics_out": tmp_path / "B.json",
             "live_dir": tmp_path / "live"}
    metrics = write_unused_model("B", **paths)
    assert metrics["trained"] is False and "no stage reads it" in metrics["note"]
    assert (tmp_path / "live" / "not-trained.json").exists()
    with pytest.raises(ValueError, match="B.pt: model B is not trained: no stage reads it"):
        load_model(paths["model_out"], parse_params(TINY), (1, 8, 8), 5, torch.device("cpu"))
