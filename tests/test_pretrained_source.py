"""Arch pretrained's pieces, offline and in seconds: its params checks, its weights (a
file under data.root, or the library cache with the URL and hash when it is empty),
model A written from them, the treatments over the derived layers, prepare's input for
the weights and the keys the weights' bytes enter."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch

from transferlab.config.params import ParamsError, parse_params
from transferlab.models import build_model, layer_names_of
from transferlab.models.hub import build_hub_model, hub_layer_names, weights_origin
from transferlab.models.pretrained import WeightsUnavailable, load_source

from .conftest import TINY, deep_update

NAME = "torchvision:resnet18"
LAYERS = hub_layer_names(NAME)


def pretrained(tmp_path: Path | None = None, **changes) -> dict:
    """TINY params switched to arch pretrained (weights under data.root when given)."""
    weights = None if tmp_path is None else str(tmp_path / "raw" / "weights" / "r18.pth")
    raw = deep_update(TINY, {
        "arch": "pretrained", "freeze": 2,
        "model": {"pretrained": {"name": NAME, "weights": weights}},
        "data": {"normalise": "pretrained", "image_size": 16,
                 "root": str(tmp_path / "raw") if tmp_path else "data/raw"},
        "sweep": {"layers": [1, 2]}, "report": {"layer": 2},
        "features": {"layers": list(LAYERS[:2])}, "heads": {"lowshot": {"layers": None}},
    })
    return deep_update(raw, changes)


def save_weights(path: Path, seed: int = 0) -> Path:
    from torchvision.models import resnet18

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(resnet18(weights=None).state_dict(), path)
    return path


# ---------------------------------------------------------------------------- params


def test_the_layers_are_the_networks_own_and_every_n_up_to_their_count_validates():
    assert layer_names_of("pretrained", {"name": NAME, "weights": None}) == LAYERS
    n = len(LAYERS)
    p = parse_params(pretrained(sweep={"layers": list(range(1, n + 1))},
                                freeze=LAYERS[-1],
                                transfer={"layer_lr_mult": {LAYERS[0]: 0.1}}))
    assert p.layer_names == LAYERS and p.freeze == n
    with pytest.raises(ParamsError, match=rf"sweep.layers\[0\] = {n + 1} .* from 1 to {n} "
                                          r"\(the \d+ layers of arch 'pretrained'\)"):
        parse_params(pretrained(sweep={"layers": [n + 1]}))
    with pytest.raises(ParamsError, match="transfer.layer_lr_mult.conv9 .* layers of arch "
                                          "'pretrained'"):
        parse_params(pretrained(transfer={"layer_lr_mult": {"conv9": 0.1}}))


@pytest.mark.parametrize("name", ["resnet18", "keras:resnet18", "torchvision:", 7])
def test_a_name_not_in_library_form_is_refused_naming_the_key(name):
    with pytest.raises(ParamsError, match=r"model.pretrained.name = .* expected "
                                          r"\"torchvision:<model>\" or \"timm:<model>\""):
        parse_params(pretrained(model={"pretrained": {"name": name}}))


def test_a_model_the_library_does_not_have_is_refused_naming_the_key():
    with pytest.raises(ParamsError, match="model.pretrained.name = 'torchvision:no_such_net'"):
        parse_params(pretrained(model={"pretrained": {"name": "torchvision:no_such_net"}}))


def test_a_weights_file_outside_data_root_is_refused(tmp_path):
    parse_params(pretrained(tmp_path))  # under data.root: fine
    outside = str(tmp_path / "elsewhere" / "r18.pth")
    with pytest.raises(ParamsError, match=r"model.pretrained.weights = .*elsewhere.* a path "
                                          r"under data.root"):
        parse_params(pretrained(tmp_path, model={"pretrained": {"weights": outside}}))


def test_the_inputs_must_be_the_weights_own_and_only_for_arch_pretrained():
    with pytest.raises(ParamsError, match="data.normalise = 'half' .* pretrained when arch "
                                          "is pretrained"):
        parse_params(pretrained(data={"normalise": "half"}))
    with pytest.raises(ParamsError, match="data.normalise = 'pretrained' .* unless arch is "
                                          "pretrained"):
        parse_params(deep_update(TINY, {"data": {"normalise": "pretrained"}}))
    with pytest.raises(ParamsError, match="pretrain.binary_aux.in_model_A = True"):
        parse_params(pretrained(pretrain={"binary_aux": {"heads": 1, "in_model_A": True}}))


# ---------------------------------------------------------------------------- weights


def test_a_missing_file_names_the_key_the_url_and_the_hash(tmp_path):
    url, digest = weights_origin(NAME)
    with pytest.raises(WeightsUnavailable) as err:
        load_source(NAME, tmp_path / "nothing.pth", 5)
    text = str(err.value)
    assert "model.pretrained.weights" in text and url in text and digest in text


def test_offline_with_an_empty_library_cache_the_error_gives_url_and_hash(tmp_path,
                                                                         monkeypatch):
    """weights null: the library looks in its cache (empty here), then tries the network,
    which this test cuts as an offline machine's is."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # set_dir() would win over TORCH_HOME

    def offline(*_args, **_kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(socket.socket, "connect", offline)
    monkeypatch.setattr(socket, "getaddrinfo", offline)
    url, digest = weights_origin(NAME)
    assert url and digest
    with pytest.raises(Exception) as err:
        load_source(NAME, None, 5)
    text = str(err.value)
    assert url in text and digest in text, text


def test_model_a_holds_the_file_weights_in_the_projects_format(tmp_path, tiny_raw):
    from transferlab.data.prepared import TaskData
    from transferlab.keys import file_digest
    from transferlab.training.pretrain import write_pretrained_source
    from transferlab.training.variant import load_model

    weights = save_weights(tmp_path / "raw" / "weights" / "r18.pth")
    params = parse_params(pretrained(tmp_path))
    x = torch.zeros(4, 3, 16, 16, dtype=torch.uint8).numpy()
    task = TaskData([0, 1], x, torch.tensor([0, 1, 0, 1]).numpy(), x,
                    torch.tensor([0, 1, 0, 1]).numpy(), 255)
    metrics = write_pretrained_source(params, task, model_out=tmp_path / "A.pt",
                                      metrics_out=tmp_path / "A.json",
                                      live_dir=tmp_path / "live")
    record = json.loads((tmp_path / "A.json").read_text())
    assert record == metrics and record["trained"] is False and "test_score" not in record
    assert record["pretrained"] == {"name": NAME, "weights": str(weights),
                                    "sha256": file_digest(weights), "origin": None,
                                    "layers": list(LAYERS)}
    # Loaded as any model A (three target classes: the head is not transferred) ...
    a = load_model(tmp_path / "A.pt", params, (3, 16, 16), 3, torch.device("cpu"))
    # ... its layers are the file's, parameter for parameter and buffer for buffer.
    reference = build_hub_model(NAME, 2, weights).state_dict()
    got = a.state_dict()
    layer_keys = [k for k in reference if not k.startswith("head.")]
    assert layer_keys and all(torch.equal(got[k], reference[k]) for k in layer_keys)
    assert set(got) == set(reference)


def test_everything_else_builds_the_network_untrained_and_rgb_only():
    a = build_model("pretrained", (3, 16, 16), 4, name=NAME, weights=None)
    assert a.layer_names == list(LAYERS) and a.num_classes == 4
    with pytest.raises(ValueError, match="3-channel images, got 1: .*data.normalise="
                                         "pretrained"):
        build_model("pretrained", (1, 16, 16), 4, name=NAME, weights=None)


def test_the_treatments_copy_and_freeze_the_derived_layers(tmp_path):
    from transferlab.models.surgery import apply_treatment

    source = build_model("pretrained", (3, 16, 16), 5, name=NAME, weights=None)
    torch.manual_seed(1)
    fresh = build_model("pretrained", (3, 16, 16), 3, name=NAME, weights=None)
    plan = apply_treatment(fresh, "AnB+", 2, {"A": source}, 0.01, 1.0,
                           layer_lr_mult={LAYERS[0]: 0.1}, frozen_dropout=True)
    assert plan.copied == list(LAYERS[:2])
    for i, name in enumerate(LAYERS):
        same = all(torch.equal(p, q) for p, q in zip(
            fresh.layer(name).state_dict().values(), source.layer(name).state_dict().values(),
            strict=True))
        assert same == (i < 2), name
    rates = {id(p): g["lr"] for g in plan.param_groups for p in g["params"]}
    assert {rates[id(p)] for p in fresh.layer(LAYERS[0]).parameters()} == {0.01 * 0.1}
    assert {rates[id(p)] for p in fresh.layer(LAYERS[1]).parameters()} == {0.01}
    frozen = apply_treatment(build_model("pretrained", (3, 16, 16), 3, name=NAME,
                                         weights=None), "AnB", 2, {"A": source}, 0.01, 1.0,
                             layer_lr_mult={}, frozen_dropout=True)
    assert frozen.copied == list(LAYERS[:2])


# ---------------------------------------------------------------------------- prepare, keys


def test_prepare_gives_the_weights_input_and_leaves_other_arches_as_they_were(tiny_raw):
    from transferlab.data.prepared import prepare_tasks, weights_preprocessing
    from transferlab.models.hub import hub_preprocessing

    plain = parse_params(tiny_raw)
    assert weights_preprocessing(plain) is None
    source, target, meta = prepare_tasks("digits", plain.data, 0, progress=False,
                                         preprocessing=weights_preprocessing(plain))
    assert source.image_shape == (1, 8, 8) and "pretrained_input" not in meta
    assert source.mean == (0.5,)

    params = parse_params(pretrained())
    source, target, meta = prepare_tasks("digits", params.data, 0, progress=False,
                                         preprocessing=weights_preprocessing(params))
    weights = hub_preprocessing(NAME)
    assert source.image_shape == target.image_shape == (3, 16, 16)
    assert source.mean == tuple(weights.mean) and target.std == tuple(weights.std)
    # grey repeated: the three channels are equal
    assert (source.x_train[:, 0] == source.x_train[:, 2]).all()
    assert meta["pretrained_input"]["size"] == 16
    assert str(weights.crop) in meta["pretrained_input"]["departure"]
    unset = parse_params(pretrained(data={"image_size": None}))
    assert "departure" not in prepare_tasks(
        "digits", unset.data, 0, progress=False,
        preprocessing=weights_preprocessing(unset))[2]["pretrained_input"]


def test_the_weights_bytes_enter_the_keys_and_other_arches_keys_do_not_change(tmp_path,
                                                                            tiny_raw):
    from transferlab.keys import Declared, file_digest, pretrained_weights
    from transferlab.training.pretrain import checkpoint_key
    from transferlab.training.sweep import variant_context

    task = tmp_path / "task.npz"
    task.write_bytes(b"prepared")
    plain = parse_params(tiny_raw)
    assert pretrained_weights(plain) == {}
    context = variant_context(plain, Declared((), "code"), direction="AB", target_file=task,
                              device=torch.device("cpu"))
    assert "weights" not in context

    weights = save_weights(tmp_path / "raw" / "weights" / "r18.pth")
    params = parse_params(pretrained(tmp_path))
    declared = Declared(("arch", "model.pretrained"), "code")

    def keys():
        return (checkpoint_key(params, declared, "A", task, torch.device("cpu")),
                checkpoint_key(params, declared, "B", task, torch.device("cpu")),
                json.dumps(variant_context(params, declared, direction="AB", target_file=task,
                                           device=torch.device("cpu"))))

    before = keys()
    assert pretrained_weights(params) == {"weights": file_digest(weights)}
    save_weights(weights, seed=1)  # same path, other bytes
    after = keys()
    assert all(b != a for b, a in zip(before, after, strict=True))
    url, digest = weights_origin(NAME)
    cached = parse_params(pretrained())
    assert url in pretrained_weights(cached)["weights"]
    assert digest in pretrained_weights(cached)["weights"]


def test_the_report_copies_an_untrained_model_a_as_a_curve_without_rows(tmp_path):
    from transferlab.report.curves import PRETRAIN_COLUMNS, copy_curves

    live = tmp_path / "live"
    for name in ("pretrain-B", "transfer"):
        (live / name / "plots" / "metrics").mkdir(parents=True)
        (live / name / "plots" / "metrics" / "train_loss.tsv").write_text(
            "timestamp\tstep\ttrain_loss\n1\t0\t0.5\n")
    copy_curves(live, tmp_path / "out", frozenset({"pretrain-A"}))
    assert (tmp_path / "out" / "pretrain-A.tsv").read_text() == \
        "\t".join(("step", *PRETRAIN_COLUMNS)) + "\n"
    assert (tmp_path / "out" / "pretrain-B.tsv").read_text().count("\n") == 2
    with pytest.raises(FileNotFoundError, match="pretrain-A"):
        copy_curves(live, tmp_path / "out")
