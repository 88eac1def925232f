import json
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from transferlab.config.params import parse_params, read_params_file
from transferlab.config.presets import merge
from transferlab.diagnostics.probes import (
    ConvDecoder,
    cpu_threads,
    invert,
    per_image_mse,
    run_diagnostics,
    spread_ratios,
    train_decoder,
)
from transferlab.models import build_model
from transferlab.models.base import TransferableNet
from transferlab.report.diagnostics import diagnostics_tables_markdown, draw_tsne_grid
from transferlab.report.transferability import (
    held_out_markdown,
    held_out_rows,
    probe_verdicts,
)
from transferlab.training.loop import to_tensor
from transferlab.transferability import scoring as ts

SHIPPED = read_params_file(Path(__file__).resolve().parents[1] / "params.yaml")


def diagnostics_params(**changes):
    """The shipped `diagnostics` section with `changes` merged in."""
    return parse_params(merge(SHIPPED, {"diagnostics": changes})).diagnostics


class Mask(nn.Module):
    """Keeps the left half of each image and zeroes the right half."""

    def forward(self, x):
        mask = torch.zeros_like(x)
        mask[..., : x.shape[-1] // 2] = 1
        return x * mask


def net(first: nn.Module) -> TransferableNet:
    return TransferableNet(OrderedDict(l1=first, l2=nn.Flatten()), 64, 2)


def images(task, count):
    return to_tensor(task.x_test[:count], task.pixel_max, torch.device("cpu"))


TINY = diagnostics_params(images_per_class=6, tsne_perplexity=5, tsne_iterations=250,
                          inversion_images_per_class=2, inversion_steps=5, decoder_epochs=2,
                          decoder_hidden=8)


def test_inversion_through_identity_is_exact_and_a_zeroed_half_stays_lost(digits_tasks):
    x = images(digits_tasks[0], 20)
    identity = invert(net(nn.Identity()), "l1", x, steps=150, lr=0.05, seed=0, init_std=0.1)
    assert per_image_mse(identity, x).mean() < 1e-3

    masked = invert(net(Mask()), "l1", x, steps=150, lr=0.05, seed=0, init_std=0.1)
    left, right = slice(0, 4), slice(4, 8)
    assert per_image_mse(masked[..., left], x[..., left]).mean() < 1e-3
    # Nothing reaches the right half, so it keeps its noise: digits there are far from it.
    assert per_image_mse(masked[..., right], x[..., right]).mean() > 0.1


def test_inversion_leaves_model_weights_without_gradients(digits_tasks):
    model = build_model("convnet", (1, 8, 8), 5, width=4, hidden=16)
    model.train()
    invert(model, "conv2", images(digits_tasks[0], 4), steps=3, lr=0.1, seed=0, init_std=0.1)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_decoder_reconstructs_worse_from_an_information_dropping_layer(digits_tasks):
    source = digits_tasks[0]
    x_train = to_tensor(source.x_train, source.pixel_max, torch.device("cpu"))
    x_test = images(source, 100)
    errors = {}
    for name, layer in {"identity": nn.Identity(), "mask": Mask()}.items():
        with torch.no_grad():
            train_acts, test_acts = layer(x_train), layer(x_test)
        decoder = train_decoder(train_acts, x_train, kind="mlp", hidden=0, channels=1,
                                epochs=60, lr=0.01, batch_size=128, seed=0)
        with torch.no_grad():
            errors[name] = per_image_mse(decoder(test_acts), x_test).mean()
    assert errors["identity"] < 0.02
    assert errors["mask"] > 3 * errors["identity"]


@pytest.mark.parametrize(("map_shape", "image_shape", "doublings"), [
    ((10, 12, 12), (1, 28, 28), 1),  # twoconv's conv1 on MNIST: 12 -> 24, resized to 28
    ((20, 4, 4), (1, 28, 28), 2),    # twoconv's conv2: 4 -> 8 -> 16, resized to 28
    ((1, 8, 8), (1, 8, 8), 0),       # the input itself
    ((6, 3, 5), (3, 16, 20), 2),     # colour, not square: 3x5 -> 12x20, resized to 16x20
])
def test_conv_decoder_maps_a_layer_map_to_the_image_shape(map_shape, image_shape, doublings):
    gen = torch.Generator().manual_seed(0)
    acts = torch.rand((5, *map_shape), generator=gen)
    images = torch.rand((5, *image_shape), generator=gen) * 2 - 1
    decoder = train_decoder(acts, images, kind="conv", hidden=0, channels=4, epochs=1,
                            lr=0.01, batch_size=4, seed=0)
    assert isinstance(decoder, ConvDecoder)
    with torch.no_grad():
        assert decoder(acts).shape == images.shape
    transposed = [m for m in decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(transposed) == doublings


def conv_layer_maps(task):
    """A fixed random strided conv layer's (4, 4, 4) maps of the task's 8x8 training digits."""
    x = to_tensor(task.x_train, task.pixel_max, torch.device("cpu"))
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU())
    with torch.no_grad():
        return layer(x), x


def test_conv_decoder_learns_to_rebuild_digits_from_a_conv_layer(digits_tasks):
    acts, x = conv_layer_maps(digits_tasks[0])
    with cpu_threads(1):  # tiny convolutions: a second thread only waits
        decoder = train_decoder(acts, x, kind="conv", hidden=0, channels=8, epochs=20,
                                lr=0.01, batch_size=64, seed=0)
    with torch.no_grad():
        mse = per_image_mse(decoder(acts), x).mean()
    # the error of always answering the mean image: what a decoder that learnt nothing gets
    variance = (x - x.mean(0)).pow(2).mean().item()
    assert mse < 0.15 * variance


def test_conv_decoder_is_deterministic_for_a_seed(digits_tasks):
    acts, x = conv_layer_maps(digits_tasks[0])
    acts, x = acts[:96], x[:96]

    def fit(seed):
        decoder = train_decoder(acts, x, kind="conv", hidden=0, channels=4, epochs=2, lr=0.01,
                                batch_size=32, seed=seed)
        with torch.no_grad():
            return decoder(acts)

    state = torch.random.get_rng_state()
    first = fit(0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    assert torch.equal(fit(0), first)
    assert not torch.equal(fit(1), first)


def test_conv_decoder_needs_maps_and_a_known_kind():
    flat = torch.zeros(4, 12)
    images = torch.zeros(4, 1, 8, 8)
    with pytest.raises(ValueError, match=r"conv decoder maps \(N, C, h, w\).*\(4, 12\)"):
        train_decoder(flat, images, kind="conv", hidden=0, channels=4, epochs=1, lr=0.01,
                      batch_size=4, seed=0)
    with pytest.raises(ValueError, match="decoder kind 'deconv'; allowed: mlp, conv"):
        train_decoder(flat, images, kind="deconv", hidden=0, channels=4, epochs=1, lr=0.01,
                      batch_size=4, seed=0)
    with pytest.raises(ValueError, match="diagnostics.decoder"):
        diagnostics_params(decoder="deconv")


def test_spread_ratio_is_larger_for_a_scattered_class_and_scale_free():
    rng = np.random.default_rng(0)
    dims = 20
    acts = np.concatenate([rng.normal(0, 1, (40, dims)), rng.normal(5, 1, (40, dims)),
                           rng.normal(-5, 0.2, (40, dims)), rng.normal(10, 3, (40, dims))])
    labels = ["a"] * 40 + ["b"] * 40 + ["tight"] * 40 + ["wide"] * 40
    ratios = spread_ratios(acts, labels, ["a", "b"])
    assert ratios["tight"] < 0.3 < 0.8 < ratios["a"] < 1.2 < 2.5 < ratios["wide"]
    assert ratios["a"] + ratios["b"] == pytest.approx(2.0)
    scaled = spread_ratios(acts * 10, labels, ["a", "b"])
    assert scaled == pytest.approx(ratios)


def probe_units(best_by_seed, *, base=0.5, plus_gain=0.0, k=5, layers=(1, 2, 3, 4)):
    """One split, a unit per seed: AnB peaks at the seed's best n, the decoder gap
    (negated, as the report ranks it) crosses 0.05 right after it; `noise` scores at random."""
    rng = np.random.default_rng(0)
    units = []
    for seed, best in enumerate(best_by_seed):
        gaps = [0.01 * m if m <= best else 0.06 + 0.01 * m for m in layers]
        anb = {m: 0.9 - 0.03 * abs(m - best) for m in layers}
        units.append({"id": ("this run", k, seed), "base": base, "AnB": anb,
                      "AnB+": {m: a + plus_gain for m, a in anb.items()},
                      "scores": {"decoder gap": {m: -g for m, g in zip(layers, gaps, strict=True)},
                                 "noise": {m: float(rng.normal()) for m in layers}}})
    return units


POSITIONS = {"conv1": 1, "conv2": 2, "conv3": 3, "conv4": 4}


def test_verdicts_per_layer_are_the_fitted_rules_choice():
    """The verdicts follow the sweep the rule was fitted on, not a constant: a copied
    prefix frozen (or fine-tuned when AnB+ pays), the layers above retrained, every layer
    retrained when base beats every transfer."""
    units = probe_units([2, 2, 3, 2])
    rule = ts.held_out_rule(units, ["decoder gap", "noise"], tolerance=0.01)
    verdicts = probe_verdicts(rule, units, 5, POSITIONS)
    assert verdicts["option"] == ts.FREEZE and verdicts["choice_rule"]["estimator"] == \
        "decoder gap"
    # the mean unit's decoder gap crosses the fitted bar after layer 2
    assert verdicts["layers"] == {"conv1": "freeze", "conv2": "freeze", "conv3": "retrain",
                                  "conv4": "retrain"}
    assert verdicts["fitted_on"] == [0, 1, 2, 3] and verdicts["held_out_by"].startswith("seed")

    tuned = ts.held_out_rule(probe_units([2, 2, 3, 2], plus_gain=0.05), ["decoder gap"], 0.01)
    assert set(probe_verdicts(tuned, units, 5, POSITIONS)["layers"].values()) == {
        "fine-tune", "retrain"}
    worse = probe_units([2, 2, 3, 2], base=0.99)
    none = probe_verdicts(ts.held_out_rule(worse, ["decoder gap"], 0.01), worse, 5, POSITIONS)
    assert none["option"] == ts.NO_TRANSFER
    assert set(none["layers"].values()) == {"retrain"}
    # no rule fitted at that size: no verdicts, and the reason
    assert probe_verdicts(rule, units, 20, POSITIONS)["layers"] == {}
    assert probe_verdicts(None, units, 5, POSITIONS)["layers"] == {}


def test_held_out_rows_are_judged_by_rules_that_never_saw_them():
    units = probe_units([1, 2, 3, 4])
    rule = ts.held_out_rule(units, ["decoder gap"], tolerance=0.02)
    rows = held_out_rows(rule)
    assert sorted(r["id"][2] for r in rows) == [0, 1, 2, 3]  # each seed held out once
    for r in rows:
        assert r["id"][2] not in r["fitted_on"]
        assert r["agree"] == (r["regret"] <= 0.02)
        assert r["regret"] == pytest.approx(r["best_accuracy"] - r["accuracy"])
    assert sum(r["agree"] for r in rows) == pytest.approx(
        rule["held_out_agreement"] * len(rows))
    assert "| 5 | 0 | [1, 2, 3] |" in held_out_markdown(rows)
    by_seed = {r["id"][2]: r for r in rows}
    # the decoder gap tells each seed's best n, and the bar fitted on the others holds ...
    for seed in (0, 1, 2):
        assert (by_seed[seed]["option"], by_seed[seed]["n"], by_seed[seed]["regret"]) == (
            ts.FREEZE, seed + 1, 0.0)
    # ... except where the held-out seed needs a bar no fitting seed showed (gap 0.04 at
    # its best n = 4): held out, the rule copies 3 layers and says so
    assert (by_seed[3]["n"], by_seed[3]["best_n"], by_seed[3]["agree"]) == (3, 4, False)


def test_config_rejects_bad_values_by_name():
    with pytest.raises(ValueError, match="diagnostics.images_per_class = 1"):
        diagnostics_params(images_per_class=1)
    with pytest.raises(ValueError, match="diagnostics.decoder_lr"):
        diagnostics_params(decoder_lr=float("nan"))
    # the hand-set thresholds are gone: the verdicts come from the fitted rule
    with pytest.raises(ValueError, match="max_decoder_gap"):
        diagnostics_params(max_decoder_gap=0.05)


def test_cpu_threads_restores_the_thread_count():
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def tiny_nets(seed: int):
    torch.manual_seed(seed)
    model = build_model("convnet", (1, 8, 8), 5, width=4, hidden=16)
    random_model = build_model("convnet", (1, 8, 8), 5, width=4, hidden=16)
    return model, random_model


def test_run_diagnostics_on_digits(digits_tasks, tmp_path):
    source, target, _ = digits_tasks
    model, random_model = tiny_nets(0)
    layers = model.layer_names
    device = torch.device("cpu")
    results = run_diagnostics(model, random_model, source, target, layers, TINY, device,
                              seed=0, progress=False)
    text = json.dumps(results, allow_nan=False)
    assert "recommendation" not in results  # verdicts are the report's fitted rule's
    classes = [str(c) for c in range(10)]
    assert results["known_classes"] + results["unknown_classes"] == classes
    assert results["inversion_images_per_class"] == 2
    assert results["decoder_train_images"] == len(source.y_train)
    assert results["layers"] == layers
    for layer in layers:
        assert sorted(results["spread"][layer]) == sorted(classes)
        assert sorted(results["decoder"][layer]) == sorted(classes)
        for net_name in ("trained", "random"):
            assert sorted(results["inversion"][net_name][layer]) == sorted(classes)
        assert np.asarray(results["tsne"]["coords"][layer]).shape == (60, 2)
    assert sorted(results["decoder"]["input"]) == sorted(classes)
    assert len(results["tsne"]["labels"]) == 60
    # the default decoder: an MLP everywhere, one baseline
    assert set(results["decoder_kinds"].values()) == {"mlp"}
    assert set(results["decoder_baseline"].values()) == {"input"}

    # Same seed, same numbers; another seed, other probe images.
    again = run_diagnostics(model, random_model, source, target, layers, TINY, device,
                            seed=0, progress=False)
    assert json.dumps(again, allow_nan=False) == text
    other = run_diagnostics(model, random_model, source, target, layers, TINY, device,
                            seed=1, progress=False)
    assert other["decoder"]["conv1"] != results["decoder"]["conv1"]

    md = diagnostics_tables_markdown(results, {"conv1": "freeze"})
    for heading in ("Gradient inversion", "Decoder", "Spread", "Per layer"):
        assert heading in md
    assert "| 1 | conv1 |" in md and "**freeze**" in md
    assert "| 9 (unknown) |" in md and "conv4 (random)" in md

    png = tmp_path / "plots" / "tsne.png"
    draw_tsne_grid(results, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in png.parent.iterdir()] == ["tsne.png"]


def test_conv_decoders_decode_maps_and_each_gap_has_its_own_kind_of_baseline(digits_tasks):
    source, target, _ = digits_tasks
    model, random_model = tiny_nets(0)
    layers = ["conv1", "conv4", "fc5"]
    cfg = replace(TINY, decoder="conv", decoder_channels=4)
    results = run_diagnostics(model, random_model, source, target, layers, cfg, "cpu",
                              seed=0, progress=False)
    assert results["decoder_kinds"] == {"input": "conv", "input_mlp": "mlp", "conv1": "conv",
                                        "conv4": "conv", "fc5": "mlp"}
    assert results["decoder_baseline"] == {"conv1": "input", "conv4": "input",
                                           "fc5": "input_mlp"}
    assert results["measures"]["decoder"].startswith("decoder: for a layer with a (C, h, w) map")
    known, unknown = results["known_classes"], results["unknown_classes"]

    def gap(key):
        errors = results["decoder"][key]
        return np.mean([errors[c] for c in unknown]) - np.mean([errors[c] for c in known])

    for layer in layers:
        baseline = results["decoder_baseline"][layer]
        assert results["summary"][layer]["decoder_gap"] == pytest.approx(
            gap(layer) - gap(baseline))
    # the same seed, the same numbers; the MLP baseline is the default run's "input"
    again = run_diagnostics(model, random_model, source, target, layers, cfg, "cpu",
                            seed=0, progress=False)
    assert json.dumps(again, allow_nan=False) == json.dumps(results, allow_nan=False)
    mlp = run_diagnostics(model, random_model, source, target, ["fc5"], TINY, "cpu",
                          seed=0, progress=False)
    assert results["decoder"]["input_mlp"] == mlp["decoder"]["input"]
    assert results["decoder"]["fc5"] == mlp["decoder"]["fc5"]
    assert "input_mlp" not in mlp["decoder"]
    md = diagnostics_tables_markdown(results)
    assert "| class | input (conv) | input (mlp) | conv1 (conv) | conv4 (conv) | fc5 (mlp) |" in md
    assert "| class | input | fc5 |" in diagnostics_tables_markdown(mlp)


def test_run_diagnostics_rejects_bad_requests(digits_tasks):
    source, target, _ = digits_tasks
    model, random_model = tiny_nets(0)
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="images_per_class = 1000"):
        run_diagnostics(model, random_model, source, target, ["conv1"],
                        replace(TINY, images_per_class=1000), cpu, seed=0, progress=False)
    with pytest.raises(ValueError, match="network order"):
        run_diagnostics(model, random_model, source, target, ["conv2", "conv1"], TINY, cpu,
                        seed=0, progress=False)
    with pytest.raises(ValueError, match="not layers"):
        run_diagnostics(model, random_model, source, target, ["conv9"], TINY, cpu,
                        seed=0, progress=False)
    with pytest.raises(ValueError, match="overlap"):
        run_diagnostics(model, random_model, source, source, ["conv1"], TINY, cpu,
                        seed=0, progress=False)


def test_the_rule_module_imports_no_torch():
    """The report renders diagnostics through the rule module; it must not pull in torch."""
    import subprocess
    import sys

    code = ("import sys, transferlab.report.diagnostics; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
