"""Paper-size features: float32 storage, pooling to features.max_dim, the memory budget,
the dry-run estimates of the WRN and AlexNet presets, and the default layers unchanged."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from transferlab.config.params import parse_params, read_params_file
from transferlab.config.presets import apply_preset, merge
from transferlab.config.spec import ParamsError
from transferlab.data.prepared import TaskData
from transferlab.features import budget
from transferlab.features.dryrun import dry_run
from transferlab.features.extract import extract_target_features
from transferlab.features.store import load_split, split_shape
from transferlab.heads.per_layer import fit_heads_per_layer

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = read_params_file(ROOT / "params.yaml")
GIB = 2 ** 30


def shipped_with(changes: dict):
    return parse_params(merge(SHIPPED, changes))


def preset(name: str):
    return parse_params(apply_preset(name, ROOT / "params.yaml", ROOT / "presets"))


def small_task(target: TaskData, per_class=8, n_test=30) -> TaskData:
    keep = np.concatenate([np.flatnonzero(target.y_train == c)[:per_class]
                           for c in range(target.num_classes)])
    return TaskData(target.classes, target.x_train[keep], target.y_train[keep],
                    target.x_test[:n_test], target.y_test[:n_test], target.pixel_max)


def extract(params, task, tmp_path):
    from transferlab.training.variant import new_model, save_model

    task.save(tmp_path / "prepared" / "target.npz")
    torch.manual_seed(0)
    save_model(new_model(params, task, 0, torch.device("cpu")), tmp_path / "A.pt", {})
    return extract_target_features(params, prepared=tmp_path / "prepared",
                                   model_path=tmp_path / "A.pt", out_dir=tmp_path / "features")


# ---------------------------------------------------------------------------- pooling rule


def test_pooled_size_is_the_largest_square_within_the_bound():
    assert budget.pooled_hw((32, 8, 8), 9216) is None  # 2,048 dims: kept
    assert budget.pooled_hw((160, 32, 32), 9216) == (7, 7)  # 7,840 <= 9,216 < 160 x 8 x 8
    assert budget.pooled_hw((256, 13, 13), 9216) == (6, 6)  # AlexNet pool5's 256 x 6 x 6
    assert budget.pooled_hw((2048, 7, 7), 9216) == (2, 2)  # ResNet res5: 8,192 (VISSL)
    assert budget.pooled_hw((20_000, 2, 2), 9216) == (1, 1)  # C alone is above: 1 x 1
    assert budget.pooled_hw((4096,), 100) is None  # a flat layer stays
    assert budget.stored_shape((64, 4, 4), 9216, "avg") == (64,)


def test_the_default_is_above_every_default_layer():
    """features.max_dim's default leaves the digits' layers as they were (no pooling)."""
    params = shipped_with({})
    result = dry_run(params, (1, 8, 8), train_images=10, test_images=10, classes=5)
    assert params.features.max_dim == 9216
    for name, info in result["layers"].items():
        assert info["stored"] == info["map"], name
    assert result["layers"]["conv1"]["dim"] == 2048


# ---------------------------------------------------------------------------- the stage


def test_features_are_float32_pooled_to_the_bound_and_the_dim_is_recorded(
        digits_tasks, tmp_path):
    params = shipped_with({"features": {"max_dim": 600}})  # conv1 32 x 8 x 8 = 2,048 dims
    task = small_task(digits_tasks[1])
    meta = extract(params, task, tmp_path)
    # conv1 -> 32 x 4 x 4 = 512; conv3 64 x 4 x 4 = 1,024 -> 64 x 3 x 3 = 576; the others stay
    assert meta["maps"]["conv1"] == [32, 8, 8] and meta["stored"]["conv1"] == [32, 4, 4]
    assert meta["stored"]["conv3"] == [64, 3, 3]
    assert meta["stored"]["conv2"] == meta["maps"]["conv2"] == [32, 4, 4]
    assert meta["dims"] == {"conv1": 512, "conv2": 512, "conv3": 576, "conv4": 256, "fc5": 128}
    assert json.loads((tmp_path / "features" / "meta.json").read_text())["max_dim"] == 600
    for layer, dim in meta["dims"].items():
        for split in ("train", "test"):
            x = load_split(tmp_path / "features" / layer / f"{split}.npz").x
            assert x.dtype == np.float32 and x.shape[1] == dim <= 600
            assert split_shape(tmp_path / "features", layer, split) == x.shape
    # the pooled rows are the conv map's adaptive average
    from transferlab.features.extract import own_model_features
    from transferlab.training.variant import load_model

    model = load_model(tmp_path / "A.pt", params, task.image_shape, task.num_classes,
                       torch.device("cpu"))
    fn = own_model_features(model, task.pixel_max, ["conv1"], iterations=False)
    with torch.no_grad():
        act = fn(task.x_test[:4])["conv1"]
    want = torch.nn.functional.adaptive_avg_pool2d(act, 4).flatten(1).numpy()
    got = load_split(tmp_path / "features" / "conv1" / "test.npz").x[:4]
    assert np.allclose(got, want, atol=1e-6)

    cfg = shipped_with({"heads": {"heads": ["logreg"], "lowshot": {"shots": []}}}).heads
    out = fit_heads_per_layer(cfg, layers=["conv1", "fc5"], subsample=0, seed=0,
                              features_dir=tmp_path / "features", out=tmp_path / "heads.json")
    assert out["layers"]["conv1"]["logreg"]["dim"] == 512
    assert out["layers"]["fc5"]["logreg"]["dim"] == 128


def test_a_store_above_the_budget_is_refused_before_any_work_naming_the_keys(
        digits_tasks, tmp_path):
    params = shipped_with({"features": {"memory_gb": 1e-6}})  # about 1 kB
    with pytest.raises(ParamsError) as err:
        extract(params, small_task(digits_tasks[1]), tmp_path)
    message = str(err.value)
    assert "features.max_dim" in message and "features.memory_gb" in message
    assert "features:" in message
    assert not (tmp_path / "features").exists()


def test_heads_refuse_a_layer_above_the_budget_before_fitting(digits_tasks, tmp_path):
    params = shipped_with({})
    extract(params, small_task(digits_tasks[1]), tmp_path)
    with pytest.raises(ParamsError, match=r"heads: .*conv1 .*features\.max_dim"):
        fit_heads_per_layer(params.heads, layers=["fc5", "conv1"], subsample=0, seed=0,
                            features_dir=tmp_path / "features", out=tmp_path / "heads.json",
                            memory_gb=1e-3)  # 1 MiB: fc5 fits, conv1 does not
    assert not (tmp_path / "heads.json").exists()


def test_the_budget_falls_back_to_the_machine_and_to_no_check(monkeypatch):
    assert budget.budget_bytes(2.0)[0] == 2 * GIB
    monkeypatch.setattr(budget, "machine_memory", lambda: None)
    assert budget.budget_bytes(None)[0] is None
    budget.check_budget("heads", {"conv1": 10 ** 15}, None)  # unknown: not refused

    def no_sysconf(name):
        raise ValueError(name)

    monkeypatch.undo()
    monkeypatch.setattr("os.sysconf", no_sysconf)
    assert budget.machine_memory() is None


# ---------------------------------------------------------------------------- dry runs


def test_dry_run_of_the_wrn_preset():
    """Borthakur & Einhorn's WRN-28-10: block1.unit4 is 160 x 32 x 32 = 163,840 dims on
    25,000 CIFAR-100 images; pooled to 160 x 7 x 7 = 7,840 at the default max_dim."""
    params = preset("borthakur-einhorn-wrn-cifar100")
    shape = dict(train_images=25_000, test_images=5_000, classes=50)
    result = dry_run(params, (3, 32, 32), **shape)
    layers, peaks = result["layers"], result["peaks"]
    assert layers["block1.unit4"] == {"map": [160, 32, 32], "stored": [160, 7, 7], "dim": 7840}
    assert layers["block2.unit4"] == {"map": [320, 16, 16], "stored": [320, 5, 5], "dim": 8000}
    assert layers["final"]["dim"] == 640
    assert peaks["heads"]["block1.unit4"] == 7840 * (25_000 * 24 + 5_000 * 16)
    assert round(peaks["heads"]["block1.unit4"] / GIB, 2) == 4.97
    assert round(peaks["transferability"]["block1.unit4"] / GIB, 2) == 10.14
    assert round(peaks["features"]["all layers"] / GIB, 2) == 2.31
    # unpooled (the largest max_dim allowed), the same layer is 104 GiB for the heads
    raw = parse_params(merge(apply_preset("borthakur-einhorn-wrn-cifar100", ROOT / "params.yaml",
                                          ROOT / "presets"), {"features": {"max_dim": 16_777_216}}))
    flat = dry_run(raw, (3, 32, 32), **shape)
    assert flat["layers"]["block1.unit4"]["dim"] == 163_840
    assert round(flat["peaks"]["heads"]["block1.unit4"] / GIB, 1) == 103.8
    with pytest.raises(ParamsError, match="features.max_dim"):
        budget.check_budget("heads", flat["peaks"]["heads"], 24.0)
    budget.check_budget("heads", peaks["heads"], 24.0)  # pooled: fits a 24 GiB machine


def test_dry_run_of_the_soekhoe_alexnet_preset():
    """Soekhoe's AlexNet on Tiny-ImageNet 57 px crops: no map above 9,216 dims (conv1 is
    96 x 6 x 6 after its pooling), fc6 / fc7 4,096; 50,000 target images of 100 classes."""
    params = preset("soekhoe-alexnet-tinyimagenet")
    result = dry_run(params, (3, 64, 64), train_images=50_000, test_images=5_000, classes=100)
    dims = {n: i["dim"] for n, i in result["layers"].items()}
    assert dims == {"conv1": 3456, "conv2": 2304, "conv3": 3456, "conv4": 3456, "conv5": 256,
                    "fc6": 4096, "fc7": 4096}
    assert all(i["stored"] == i["map"] for i in result["layers"].values())
    assert round(result["peaks"]["heads"]["fc7"] / GIB, 2) == 4.88
    assert round(result["peaks"]["transferability"]["fc7"] / GIB, 2) == 9.53
    assert round(result["peaks"]["features"]["all layers"] / GIB, 2) == 4.37


def test_source_accuracy_is_batched_on_the_stored_reduction(digits_tasks):
    """The per-layer source accuracy reads each layer as the store holds it (pooled to
    features.max_dim) and, batch by batch, equals the nearest class mean on whole parts."""
    from transferlab.features.extract import reduce_activation
    from transferlab.models import build_model
    from transferlab.training.loop import to_tensor
    from transferlab.transferability.compute import source_layer_accuracy

    source = digits_tasks[0]
    torch.manual_seed(0)
    model = build_model("convnet", (1, 8, 8), 5, width=32, hidden=16).eval()
    layers = ["conv1", "fc5"]
    got = source_layer_accuracy(model, source, layers, 0, 0, torch.device("cpu"),
                                max_dim=600)
    with torch.no_grad():
        acts = {}
        for part, images in (("train", source.x_train), ("test", source.x_test)):
            x = to_tensor(images, source.pixel_max, torch.device("cpu"), source.mean,
                          source.std)
            out = model.activations(x, layers)
            acts[part] = {la: reduce_activation(out[la], "flatten", 600).double()
                          for la in layers}
    assert acts["train"]["conv1"].shape[1] == 512  # 32 x 8 x 8 pooled to 32 x 4 x 4
    y = torch.as_tensor(source.y_train)
    for la in layers:
        means = torch.stack([acts["train"][la][y == c].mean(0) for c in range(5)])
        pred = torch.cdist(acts["test"][la], means).argmin(1).numpy()
        assert got[la] == pytest.approx(float(np.mean(pred == source.y_test)), abs=1e-12)


class _Terminal:
    """A stderr that says it is a terminal, keeping what is written."""

    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_long_head_loops_show_a_bar_with_an_eta_on_a_terminal_only(monkeypatch):
    from transferlab.heads.fit import fit_heads

    params = shipped_with({})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    y = np.repeat(np.arange(3), 20)
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    monkeypatch.delenv("TRANSFERLAB_NO_PROGRESS", raising=False)
    fit_heads(x, y, x, y, params.heads, seed=0, heads=("svm", "logreg"))
    assert "heads: per-class CV" in term.text and "heads: logreg CV over C" in term.text
    assert "<" in term.text  # tqdm's elapsed<remaining
    quiet = _Terminal()
    monkeypatch.setattr("sys.stderr", quiet)
    monkeypatch.setenv("TRANSFERLAB_NO_PROGRESS", "1")
    fit_heads(x, y, x, y, params.heads, seed=0, heads=("svm",))
    assert quiet.text == ""


def test_each_cv_worker_adds_its_own_float64_fold_to_the_heads_estimate():
    from transferlab.features.budget import F64, heads_peak

    one = heads_peak(1000, 5000, 500, ("svm",), fit_rows=400)
    three = heads_peak(1000, 5000, 500, ("svm",), fit_rows=400, workers=3)
    assert three - one == 2 * 1000 * 400 * 2 * F64
    # the forest alone runs in this process: workers add nothing
    assert heads_peak(1000, 5000, 500, ("random_forest",), 400, workers=3) == heads_peak(
        1000, 5000, 500, ("random_forest",), 400)
