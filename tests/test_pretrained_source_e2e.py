"""A torchvision network as the source network, through the real `dvc exp run`.

A resnet18 built with weights=None (nothing can be downloaded here) and saved as a
state-dict file under data.root stands for the pretrained weights. The one documented
command switches a tiny digits study to it: the sweep runs over the network's own
layers, the report draws the curves, and the weights file is a dependency whose bytes
enter pretrain's status and its checkpoint key.

About 2 minutes on a 2-core machine: a real `dvc exp run` of every stage, each a
process paying the torch import; one run serves every check below. The same for a timm
network: tests/test_pretrained_timm_e2e.py.
"""

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks.pipeline_overhead import copy_checkout, tool_env
from transferlab.config.params import load_params
from transferlab.models.hub import hub_layer_names

from .conftest import TINY, deep_update, write_params

pytestmark = pytest.mark.e2e

NAME = "torchvision:resnet18"
WEIGHTS = "data/raw/weights/resnet18.pth"
# On top of tiny digits params (arch convnet, committed): what a user types.
COMMAND = ["-S", "arch=pretrained", "-S", f"model.pretrained.weights={WEIGHTS}",
           "-S", "recipe.yaml:data.normalise=pretrained", "-S", "recipe.yaml:data.image_size=32"]
BASE = deep_update(TINY, {
    "freeze": 2,
    "pretrain": {"epochs": 1},
    "transfer": {"steps": 3},
    "sweep": {"treatments": ["base", "AnB", "AnB+"], "layers": [1, 2], "subsample": [3]},
    "report": {"layer": 2, "subsample": 3},
    "heads": {"lowshot": {"shots": [1], "draws": 1}},
})


def run(repo: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=repo, env=tool_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def save_weights(path: Path, seed: int) -> None:
    from torchvision.models import resnet18

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(resnet18(weights=None).state_dict(), path)


def switched_repo(path: Path, name: str, weights: str, save, *extra: str) -> Path:
    """A copy of the checkout at `path` with tiny digits params (convnet) committed, then
    switched by `dvc exp run` to the network `name` (`*extra`: further -S pairs), the
    heads and low-shot curves on its first layers; `save(file)` writes the weights."""
    copy_checkout(path, None)
    layers = hub_layer_names(name)
    save(path / weights)
    write_params(path / "params.yaml", BASE)
    run(path, "git", "add", "-A")
    run(path, "git", "commit", "-qm", "tiny digits, convnet")
    features = "recipe.yaml:features.layers=[" + ",".join(layers[:2]) + "]"
    lowshot = f"recipe.yaml:heads.lowshot.layers=[{layers[1]}]"
    run(path, "dvc", "exp", "run", *COMMAND, *extra, "-S", features, "-S", lowshot)
    return path


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return switched_repo(tmp_path_factory.mktemp("pretrained"), NAME, WEIGHTS,
                         lambda file: save_weights(file, seed=0))


def test_the_sweep_runs_over_the_networks_own_layers_and_the_report_draws_them(repo):
    layers = hub_layer_names(NAME)
    variants = json.loads((repo / "results/sweep/seed-0.json").read_text())["variants"]
    copied = {(v["treatment"], v["n"]): v["copied_layers"] for v in variants}
    assert copied == {("base", 0): [], ("AnB", 1): list(layers[:1]),
                      ("AnB", 2): list(layers[:2]), ("AnB+", 1): list(layers[:1]),
                      ("AnB+", 2): list(layers[:2])}
    # Model A was loaded, not trained: its record names the file and its digest.
    a = json.loads((repo / "results/pretrain/A.json").read_text())
    assert a["trained"] is False and a["pretrained"]["layers"] == list(layers)
    digest = subprocess.run(["sha256sum", WEIGHTS], cwd=repo, capture_output=True,
                            text=True, check=True).stdout.split()[0]
    assert a["pretrained"]["sha256"] == digest
    # B, the selffer control, is read by no treatment of this grid: not trained.
    assert json.loads((repo / "results/pretrain/B.json").read_text())["trained"] is False
    # The curves: transferability per n, and the sweep's at report.layer.
    rows = (repo / "plots/transferability.csv").read_text().splitlines()
    assert rows[0].startswith("n,base,AnB,AnB+")
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]
    assert all(r.split(",")[2] for r in rows[2:])  # AnB has a value at n = 1 and 2
    assert (repo / "plots/transferability.png").read_bytes()[:4] == b"\x89PNG"
    assert "AnB" in (repo / "plots/curves/sweep.tsv").read_text().splitlines()[0]
    details = json.loads((repo / "metrics/details.json").read_text())
    assert set(details["sweep"]["k3"]["AnB"]) == {"n1", "n2"}
    assert details["pretrain"]["A"]["test_accuracy"] is None
    assert set(details["heads"]) == set(layers[:2])
    summary = (repo / "metrics/summary.md").read_text()
    assert f"Model A is {NAME}" in summary and ", ".join(layers) in summary


def test_the_weights_bytes_are_a_dependency_and_enter_the_checkpoint_key(repo, monkeypatch):
    from transferlab.keys import declared
    from transferlab.training.loop import pick_device
    from transferlab.training.pretrain import checkpoint_key

    monkeypatch.chdir(repo)

    def key() -> str:
        params = load_params(repo / "params.yaml")
        return checkpoint_key(params, declared("pretrain@A", params, repo / "dvc.yaml"), "A",
                              repo / "data/prepared/source.npz", pick_device())

    assert "pretrain" not in run(repo, "dvc", "status").stdout
    before = key()
    save_weights(repo / WEIGHTS, seed=1)
    status = run(repo, "dvc", "status").stdout
    assert re.search(r"^pretrain@A:", status, re.M), status
    assert key() != before
