import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

from transferlab.config.spec import Spec
from transferlab.models import ARCHITECTURES, build_model, layer_names_of, model_kwargs_of
from transferlab.models.surgery import apply_treatment
from transferlab.training.loop import make_optimizer
from transferlab.training.losses import Objective

from .conftest import PLAIN, recipe

# Tiny instances for speed: the same code paths, narrow and shallow.
TINY = {
    "convnet": {"width": 4, "hidden": 16},
    "twoconv": {"channels": [3, 4], "hidden": 8},
    "alexnet": {"channels": [8, 16, 16, 16, 16], "fc": 32},
    "densenet_bc": {"depth": 10, "growth": 4},
    "wrn": {"depth": 10, "widen": 1},
    "feedback": {"iterations": 2, "width": 2, "hidden": 8},
}
SHAPES = {
    "convnet": [(1, 8, 8)],
    "twoconv": [(1, 28, 28), (1, 16, 16)],
    "alexnet": [(3, 32, 32), (3, 57, 57), (3, 64, 64)],
    "densenet_bc": [(3, 32, 32), (3, 64, 64)],
    "wrn": [(3, 32, 32), (3, 64, 64)],
    "feedback": [(3, 32, 32), (3, 64, 64)],
}
# Transfer depth for the freezing tests: somewhere in the middle of each layer list.
DEPTH = {"convnet": 3, "twoconv": 2, "alexnet": 4, "densenet_bc": 3, "wrn": 3, "feedback": 5}
CLASSES = 5


def tiny(arch, seed, shape=None):
    torch.manual_seed(seed)
    return build_model(arch, shape or SHAPES[arch][0], CLASSES, **TINY[arch])


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch,shape", [(a, s) for a in SHAPES for s in SHAPES[a]])
def test_forward_shapes_and_per_iteration_outputs(arch, shape):
    model = tiny(arch, 0, shape).eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        logits = model(x)
        outs = model.outputs(x)
        emb = model.embed(x)
        embs = model.iteration_embeddings(x)
    assert logits.shape == (3, CLASSES)
    assert emb.shape == (3, model.embed_dim)
    assert len(outs) == len(embs) == model.num_iterations
    assert all(o.shape == (3, CLASSES) for o in outs)
    torch.testing.assert_close(outs[-1], logits)
    torch.testing.assert_close(embs[-1], emb)


@pytest.mark.parametrize("arch", list(TINY))
def test_built_layers_equal_the_registry_names(arch):
    model = tiny(arch, 0)
    assert tuple(model.layer_names) == layer_names_of(arch, TINY[arch])
    # Every parameter belongs to exactly one layer or to the head.
    owned = [id(p) for name in model.layer_names for p in model.layer(name).parameters()]
    owned += [id(p) for p in model.head.parameters()]
    assert sorted(owned) == sorted(id(p) for p in model.parameters())
    for key in model.state_dict():
        assert key.startswith(("layers.", "head.")), key


def test_default_layer_lists():
    dense = layer_names_of("densenet_bc")
    assert len(dense) == 1 + 3 * 16 + 2 + 1
    assert dense[:2] == ("conv0", "block1.layer1") and dense[16:19] == (
        "block1.layer16", "trans1", "block2.layer1")
    assert "block2.layer9" in dense and dense[-2:] == ("block3.layer16", "final")
    assert layer_names_of("wrn") == ("conv1", *(f"block{b}.unit{i}" for b in (1, 2, 3)
                                                for i in range(1, 5)), "final")
    assert layer_names_of("feedback") == ("stem", *(f"lstm{i}" for i in range(1, 13)))
    assert layer_names_of("alexnet") == ("conv1", "conv2", "conv3", "conv4", "conv5",
                                         "fc6", "fc7")
    assert layer_names_of("convnet") == ("conv1", "conv2", "conv3", "conv4", "fc5")
    assert len(layer_names_of("densenet_bc", {"depth": 10})) == 1 + 3 + 2 + 1


def test_registry_declares_option_specs_and_names_need_no_torch():
    for spec in ARCHITECTURES.values():
        assert spec.options and all(isinstance(s, Spec) for s in spec.options.values())
    # Arch pretrained derives its names from the library's network (torch), by design:
    # only runs that choose it pay the import.
    code = ("import sys; from transferlab.models import layer_names_of, ARCHITECTURES\n"
            "for a in ARCHITECTURES: a == 'pretrained' or layer_names_of(a)\n"
            "layer_names_of('wrn', {'depth': 40})\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_model_kwargs_are_named():
    with pytest.raises(ValueError, match=r"\['widthh'\].*allowed: width, hidden"):
        model_kwargs_of("convnet", {"widthh": 3})
    with pytest.raises(ValueError, match=r"model.densenet_bc.depth = 99"):
        layer_names_of("densenet_bc", {"depth": 99})
    with pytest.raises(ValueError, match=r"arch = 'resnet'"):
        layer_names_of("resnet")


def test_convnet_state_dict_keys_are_unchanged():
    keys = list(tiny("convnet", 0).state_dict())
    assert keys[:2] == ["layers.conv1.0.weight", "layers.conv1.0.bias"]
    assert keys[-2:] == ["head.weight", "head.bias"]


def test_dotted_layer_names_live_under_their_path():
    model = tiny("densenet_bc", 0)
    assert any(k.startswith("layers.block2.layer1.") for k in model.state_dict())
    assert model.layer("block2.layer1") is model.layers["block2"]["layer1"]
    with pytest.raises(KeyError, match="unknown layer 'block2'"):
        model.layer("block2")


def alexnet_params(c, fc, classes, groups=2, in_ch=3):
    """The Caffe reference AlexNet's parameter count, from its layer table."""
    c1, c2, c3, c4, c5 = c
    convs = [(in_ch, c1, 11, 1), (c1, c2, 5, groups), (c2, c3, 3, 1), (c3, c4, 3, groups),
             (c4, c5, 3, groups)]
    total = sum(cin // g * cout * k * k + cout for cin, cout, k, g in convs)
    # pool5 leaves 1x1 maps at 57x57 inputs: fc6 sees c5 values.
    return total + (c5 * fc + fc) + (fc * fc + fc) + (fc * classes + classes)


def feedback_params(classes, w=16):
    stem = 3 * w * 9 + w + 2 * w  # conv + BN
    plan = [(1, 1)] * 3 + [(1, 2), (2, 2), (2, 2), (2, 4)] + [(4, 4)] * 5
    # Per gate: a 3x3 conv of the input (with the gate's bias) and one of the hidden state.
    lstm = sum(4 * (i * w * o * w * 9 + o * w + o * w * o * w * 9) for i, o in plan)
    return stem + lstm + (256 * 256 + 256) + (256 * classes + classes)


def test_parameter_counts_of_the_papers_models():
    alex = build_model("alexnet", (3, 57, 57), 100)
    expected = alexnet_params([96, 256, 384, 384, 256], 4096, 100)
    assert expected == 20_577_764
    assert abs(count(alex) - expected) <= 0.05 * expected
    # Borthakur & Einhorn's nets; their papers give 0.8 M and 36.5 M parameters.
    assert abs(count(build_model("densenet_bc", (3, 32, 32), 100)) - 0.8e6) <= 0.05 * 0.8e6
    assert abs(count(build_model("wrn", (3, 32, 32), 100)) - 36.5e6) <= 0.05 * 36.5e6
    fb = build_model("feedback", (3, 32, 32), 10)
    assert fb.embed_dim == 256 and fb.num_iterations == 4
    assert abs(count(fb) - feedback_params(10)) <= 0.05 * feedback_params(10)


def test_alexnet_pools_round_up_like_caffe():
    model = tiny("alexnet", 0).eval()
    for size, after_conv1 in ((57, 6), (64, 7), (32, 3)):
        acts = model.activations(torch.randn(1, 3, size, size), ["conv1", "conv5"])
        assert acts["conv1"].shape[-2:] == (after_conv1, after_conv1)
        assert acts["conv5"].shape == (1, 16, 1, 1)


def test_densenet_layers_append_growth_channels_and_transitions_compress():
    model = tiny("densenet_bc", 0).eval()
    acts = model.activations(torch.randn(2, 3, 32, 32), ["conv0", "block1.layer1", "trans1",
                                                         "block2.layer1", "final"])
    assert acts["conv0"].shape == (2, 8, 32, 32)
    assert acts["block1.layer1"].shape == (2, 12, 32, 32)
    torch.testing.assert_close(acts["block1.layer1"][:, :8], acts["conv0"])
    assert acts["trans1"].shape == (2, 6, 16, 16)
    assert acts["block2.layer1"].shape == (2, 10, 16, 16)
    assert acts["final"].shape == (2, model.embed_dim)


def test_feedback_strides_and_carried_state():
    model = tiny("feedback", 0).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        acts = model.activations(x, ["lstm3", "lstm4", "lstm7", "lstm12"])
        embs = model.iteration_embeddings(x)
        # By hand: the stem output enters every iteration; each layer keeps its state.
        stem = model.layer("stem")(x)
        states = [None] * 12
        by_hand = []
        for _ in range(model.num_iterations):
            h = stem
            for k in range(12):
                h, states[k] = model.layer(f"lstm{k + 1}")(h, states[k])
            by_hand.append(F.adaptive_avg_pool2d(h, 2).flatten(1))
    assert acts["lstm3"].shape == (2, 2, 32, 32) and acts["lstm4"].shape == (2, 4, 16, 16)
    assert acts["lstm7"].shape == (2, 8, 8, 8) and acts["lstm12"].shape == (2, 8, 8, 8)
    for got, want in zip(embs, by_hand, strict=True):
        torch.testing.assert_close(got, want)
    # The last layer's activation is the last iteration's, before the readout pool.
    torch.testing.assert_close(F.avg_pool2d(acts["lstm12"], 4).flatten(1), embs[-1])
    assert not torch.allclose(embs[0], embs[1])


@pytest.mark.parametrize("arch", list(TINY))
def test_activations_of_the_last_layer_are_the_embedding(arch):
    model = tiny(arch, 0).eval()
    x = torch.randn(2, *SHAPES[arch][0])
    last = model.layer_names[-1]
    with torch.no_grad():
        acts = model.activations(x, [model.layer_names[0], last])
        emb = model.embed(x)
    assert set(acts) == {model.layer_names[0], last}
    if arch != "feedback":  # the feedback net pools its last map into the embedding
        torch.testing.assert_close(acts[last].flatten(1), emb)


def layer_state(model, name):
    return {k: v.clone() for k, v in model.layer(name).state_dict().items()}


def one_sgd_step(model, plan, arch, lr):
    cfg = recipe(batch_size=4, optimizer="sgd", lr=lr, momentum=0.0)
    opt = make_optimizer(plan.param_groups, cfg)
    model.train()
    for module in plan.frozen:
        module.eval()
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(4, *SHAPES[arch][0], generator=gen)
    y = torch.arange(4) % CLASSES
    loss, _ = Objective(gamma=1.2)(model, x, y)
    opt.zero_grad()
    loss.backward()
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    return grads


@pytest.mark.parametrize("arch", list(TINY))
def test_anb_copies_and_freezes_exactly_the_first_n_layers(arch):
    n = DEPTH[arch]
    source, target = tiny(arch, 1), tiny(arch, 2)
    plan = apply_treatment(target, "AnB", n, {"A": source}, lr=0.1, lr_mult=0.1, **PLAIN)
    names = target.layer_names
    assert plan.copied == names[:n]
    before = {name: layer_state(target, name) for name in names}
    head_before = {k: v.clone() for k, v in target.head.state_dict().items()}
    for name in names[:n]:
        src = source.layer(name).state_dict()
        assert all(torch.equal(v, src[k]) for k, v in before[name].items()), name
    one_sgd_step(target, plan, arch, lr=0.1)
    for i, name in enumerate(names):
        after = target.layer(name).state_dict()
        params = dict(target.layer(name).named_parameters())
        if i < n:
            # Frozen: weights and batch-norm statistics untouched, no gradients asked for.
            assert all(torch.equal(v, after[k]) for k, v in before[name].items()), name
            assert all(not p.requires_grad for p in params.values()), name
        else:
            for k, p in params.items():
                assert not torch.equal(before[name][k], p.detach()), f"{name}.{k} did not train"
    for k, p in target.head.named_parameters():
        assert not torch.equal(head_before[k], p.detach()), f"head.{k} did not train"


@pytest.mark.parametrize("arch", list(TINY))
def test_anb_plus_trains_the_copied_layers_at_the_lower_rate(arch):
    n, lr, mult = DEPTH[arch], 0.5, 0.1
    source, target = tiny(arch, 1), tiny(arch, 2)
    plan = apply_treatment(target, "AnB+", n, {"A": source}, lr=lr, lr_mult=mult, **PLAIN)
    before = {k: p.detach().clone() for k, p in target.named_parameters()}
    grads = one_sgd_step(target, plan, arch, lr)
    copied = tuple(f"layers.{name}." for name in target.layer_names[:n])
    moved_copied = 0
    for k, p in target.named_parameters():
        rate = lr * mult if k.startswith(copied) else lr
        # Plain SGD: the update is exactly -rate * gradient.
        torch.testing.assert_close(before[k] - p.detach(), rate * grads[k], msg=k)
        moved_copied += k.startswith(copied) and not torch.equal(before[k], p.detach())
    assert moved_copied > 0


def test_twoconv_has_seed_002s_three_layers_and_refuses_tiny_inputs():
    assert layer_names_of("twoconv") == ("conv1", "conv2", "fc3")
    model = build_model("twoconv", (1, 28, 28), 5)  # the default sizes: 10, 20 channels, 50
    assert model.layer("fc3")[1].in_features == 20 * 4 * 4
    assert model.embed_dim == 50
    with pytest.raises(ValueError, match="at least 16x16"):
        build_model("twoconv", (1, 8, 8), 5)
