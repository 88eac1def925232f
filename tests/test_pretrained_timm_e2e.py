"""A timm network as the source network, through the real `dvc exp run`: the command of
tests/test_pretrained_source_e2e.py with `timm:resnet10t` (built with
`timm.create_model(..., pretrained=False)` and saved as the weights file) runs the same
sweep over timm's own layers. About 2 minutes on a 2-core machine (its own repository, so
the two files can run side by side).
"""

import json

import pytest
import torch

from transferlab.models.hub import hub_layer_names

from .test_pretrained_source_e2e import run, switched_repo

pytestmark = pytest.mark.e2e

TIMM_NAME = "timm:resnet10t"
TIMM_WEIGHTS = "data/raw/weights/resnet10t.pth"


def save_timm_weights(file) -> None:
    import timm

    torch.manual_seed(0)
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(timm.create_model(TIMM_NAME.split(":")[1], pretrained=False).state_dict(), file)


@pytest.fixture(scope="module")
def timm_repo(tmp_path_factory):
    pytest.importorskip("timm")
    # COMMAND names the torchvision test's weights file; these -S pairs come after it
    return switched_repo(tmp_path_factory.mktemp("pretrained-timm"), TIMM_NAME, TIMM_WEIGHTS,
                         save_timm_weights, "-S", f"model.pretrained.name={TIMM_NAME}",
                         "-S", f"model.pretrained.weights={TIMM_WEIGHTS}")


def test_a_timm_network_runs_the_same_sweep_over_its_own_layers(timm_repo):
    repo = timm_repo
    layers = hub_layer_names(TIMM_NAME)
    assert layers[:2] == ("stem", "layer1.block0")
    variants = json.loads((repo / "results/sweep/seed-0.json").read_text())["variants"]
    assert {(v["treatment"], v["n"]): v["copied_layers"] for v in variants} == {
        ("base", 0): [], ("AnB", 1): list(layers[:1]), ("AnB", 2): list(layers[:2]),
        ("AnB+", 1): list(layers[:1]), ("AnB+", 2): list(layers[:2])}
    a = json.loads((repo / "results/pretrain/A.json").read_text())
    assert a["trained"] is False and a["pretrained"]["name"] == TIMM_NAME
    assert a["pretrained"]["layers"] == list(layers)
    details = json.loads((repo / "metrics/details.json").read_text())
    assert set(details["sweep"]["k3"]["AnB"]) == {"n1", "n2"}
    assert set(details["heads"]) == set(layers[:2])
    assert f"Model A is {TIMM_NAME}" in (repo / "metrics/summary.md").read_text()
    assert "pretrain" not in run(repo, "dvc", "status").stdout
