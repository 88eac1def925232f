import atexit
import copy
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from transferlab.config.params import parse_params, read_params_file, write_params_files
from transferlab.config.presets import merge as deep_update

os.environ.setdefault("TRANSFERLAB_NO_PROGRESS", "1")
# Tests never write the user's store of trained results, and run here unless a test
# chooses otherwise (the stage scripts they start inherit this environment).
os.environ["TRANSFERLAB_STORE"] = tempfile.mkdtemp(prefix="transferlab-test-store-")
atexit.register(shutil.rmtree, os.environ["TRANSFERLAB_STORE"], ignore_errors=True)
for _where in ("TRANSFERLAB_EXECUTOR", "TRANSFERLAB_TORCHRUN", "RAY_ADDRESS"):
    os.environ.pop(_where, None)
# `make test` runs pytest-xdist workers, one per core: each worker, and every stage process
# it starts, computes on one thread. Two workers' two-thread torch on two cores would
# contend (tiny tensors then run about 10x slower), and one thread gives a test the same
# numbers on whichever worker it lands.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_threads] = "1"
    import torch

    torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
# The shipped params.yaml: the one place defaults live; tests change what they need.
SHIPPED = read_params_file(ROOT / "params.yaml")


def skip_without_hub(preset: dict) -> None:
    """Skip a test of a preset on a pretrained network (`arch: pretrained`, issue 22)
    while transferlab.models.hub, which builds it, is not in this tree; it runs once it is."""
    if preset.get("arch") == "pretrained":
        pytest.importorskip("transferlab.models.hub")


def complete(changes: dict) -> dict:
    """The shipped params with `changes` merged in (params.yaml must set every key)."""
    return deep_update(copy.deepcopy(SHIPPED), changes)

# A params tree small enough for unit tests: few steps, a narrow network.
TINY = complete({
    "subsample": 3,
    "model": {"convnet": {"width": 4, "hidden": 16}},
    "pretrain": {"epochs": 2, "batch_size": 64},
    "transfer": {"steps": 5, "batch_size": 16},
    "sweep": {"layers": [1, 3], "subsample": [1, 3], "seeds": [0]},
    "heads": {"cv_folds": 3, "svm": {"C": [0.1, 1]}, "logreg": {"C": [0.1, 1]},
              "lowshot": {"shots": [1, 2], "draws": 2},
              "random_forest": {"n_estimators": 8}},
    "report": {"layer": 3, "subsample": 3},
    "diagnostics": {"images_per_class": 3, "tsne_perplexity": 2.0, "tsne_iterations": 250,
                    "inversion_images_per_class": 1, "inversion_steps": 2, "decoder_epochs": 1,
                    "decoder_hidden": 0},
})


# apply_treatment's per-layer options at their shipped values (no per-layer rates).
PLAIN = {"layer_lr_mult": parse_params(TINY).transfer.layer_lr_mult,
         "frozen_dropout": parse_params(TINY).transfer.frozen_dropout}


def recipe(**changes):
    """A training recipe (the shipped transfer section) with `changes`."""
    return dataclasses.replace(parse_params(TINY).transfer, **changes)


@pytest.fixture
def tiny_raw():
    return complete(TINY)


@pytest.fixture
def tiny_params():
    return parse_params(complete(TINY))


@pytest.fixture(scope="session")
def digits_tasks():
    from transferlab.data.prepared import prepare_dataset

    source, target, meta = prepare_dataset("digits", "fixed", (0, 1, 2, 3, 4), (5, 6, 7, 8, 9),
                                           0.3, 0)
    return source, target, meta


def write_params(path, raw):
    """A complete params tree as the project's two files: params.yaml at `path` and
    recipe.yaml beside it."""
    assert path.name == "params.yaml", path
    write_params_files(raw, path.parent)


@pytest.fixture(scope="session")
def tiny_diagnostics(digits_tasks):
    """Real diagnostics results of a tiny random convnet on the digits (a few seconds)."""
    import torch

    from transferlab.diagnostics.probes import run_diagnostics
    from transferlab.models import build_model

    source, target, _ = digits_tasks
    torch.manual_seed(0)
    model = build_model("convnet", (1, 8, 8), 5, width=4, hidden=16)
    random_model = build_model("convnet", (1, 8, 8), 5, width=4, hidden=16)
    cfg = parse_params(complete({"diagnostics": {
        "images_per_class": 6, "tsne_perplexity": 5, "tsne_iterations": 250,
        "inversion_images_per_class": 2, "inversion_steps": 5, "decoder_epochs": 2}})).diagnostics
    return run_diagnostics(model, random_model, source, target, model.layer_names, cfg,
                           torch.device("cpu"), seed=0, progress=False)
