from pathlib import Path

import numpy as np
import pytest
import torch

from transferlab.config.params import parse_params, read_params_file
from transferlab.config.presets import merge
from transferlab.data.prepared import TaskData
from transferlab.features.extract import extract_target_features
from transferlab.features.pretrained import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TorchvisionFeatures,
    build_torchvision_model,
    prepare_input,
)
from transferlab.features.store import load_split

SIZE = 64  # small input keeps resnet18 fast on the CPU
SHIPPED = read_params_file(Path(__file__).resolve().parents[1] / "params.yaml")


def torchvision_params(**features):
    """The shipped params with a torchvision source and these `features` keys (low-shot
    heads on every layer: the shipped low-shot layer is one of model A's); data.root is
    the weights file's folder, as a weights file must lie under it."""
    weights = features.get("weights")
    data = {"data": {"root": str(Path(weights).parent)}} if weights else {}
    return parse_params(merge(SHIPPED, {
        **data, "features": {"source_model": "torchvision:resnet18", **features},
        "heads": {"lowshot": {"layers": None}}}))


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    from torchvision.models import get_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(get_model("resnet18", weights=None).state_dict(), path)
    return path


def digits(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 17, size=(n, 1, 8, 8), dtype=np.uint8)


def test_two_named_nodes_give_the_expected_shapes_from_the_saved_weights(resnet_file):
    from torchvision.models import get_model
    from torchvision.models.feature_extraction import create_feature_extractor

    images = digits()
    fn = TorchvisionFeatures("resnet18", resnet_file, ["layer1", "avgpool"], input_size=SIZE,
                             pixel_max=16)
    out = fn(images)
    assert out["layer1"].shape == (6, 64, SIZE // 4, SIZE // 4)
    assert out["avgpool"].shape == (6, 512, 1, 1)

    loaded = get_model("resnet18", weights=None)
    loaded.load_state_dict(torch.load(resnet_file, weights_only=True))
    by_hand = create_feature_extractor(loaded.eval(), ["avgpool"])
    x = prepare_input(images, 16, SIZE)
    with torch.no_grad():
        assert torch.allclose(by_hand(x)["avgpool"], out["avgpool"], atol=1e-5)
        torch.manual_seed(1)
        fresh = create_feature_extractor(get_model("resnet18", weights=None).eval(), ["avgpool"])
        assert not torch.allclose(fresh(x)["avgpool"], out["avgpool"], atol=1e-3)


def test_input_is_resized_repeated_to_three_channels_and_imagenet_normalised():
    white = np.full((2, 1, 8, 8), 16, np.uint8)
    x = prepare_input(white, 16, 20)
    assert x.shape == (2, 3, 20, 20)
    want = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x[0, :, 5, 5], want, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(N, 1 or 3, H, W\)"):
        prepare_input(np.zeros((1, 2, 8, 8), np.uint8), 16, 20)


def test_missing_weights_file_says_why_and_where(tmp_path):
    path = tmp_path / "nowhere" / "resnet18.pth"
    with pytest.raises(FileNotFoundError) as err:
        build_torchvision_model("resnet18", path)
    text = str(err.value)
    assert str(path) in text and "cannot be downloaded" in text
    assert "https://download.pytorch.org/models/resnet18-" in text and "state_dict" in text


def test_bad_names_and_wrong_weights_are_refused(resnet_file, tmp_path):
    with pytest.raises(KeyError, match="layer9.*not nodes.*maxpool, layer1, layer2"):
        TorchvisionFeatures("resnet18", resnet_file, ["layer9"], input_size=SIZE)
    with pytest.raises(ValueError, match="not a torchvision classification model.*resnet18"):
        build_torchvision_model("resnet7", resnet_file)
    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="does not hold the weights of torchvision 'resnet18'"):
        build_torchvision_model("resnet18", other)


def test_features_stage_with_a_torchvision_source(resnet_file, tmp_path):
    x_train, x_test = digits(8, 1), digits(4, 2)
    task = TaskData([5, 6], x_train, np.array([0, 1] * 4), x_test, np.array([0, 1, 1, 0]), 16)
    task.save(tmp_path / "prepared" / "target.npz")
    params = torchvision_params(layers=["layer1", "avgpool"], weights=str(resnet_file),
                                input_size=SIZE, pool="avg", batch_size=5)
    meta = extract_target_features(params, prepared=tmp_path / "prepared", model_path=None,
                                   out_dir=tmp_path / "features")
    assert meta["dims"] == {"layer1": 64, "avgpool": 512} and meta["iterations"] == 0
    train = load_split(tmp_path / "features" / "layer1" / "train.npz")
    assert train.x.shape == (8, 64) and np.array_equal(train.y, task.y_train)
    flat = torchvision_params(layers=["avgpool"], weights=str(resnet_file), input_size=SIZE,
                              pool="flatten")
    extract_target_features(flat, prepared=tmp_path / "prepared", model_path=None,
                            out_dir=tmp_path / "flat")
    avg = load_split(tmp_path / "features" / "avgpool" / "test.npz").x
    assert np.allclose(load_split(tmp_path / "flat" / "avgpool" / "test.npz").x, avg, atol=1e-5)
    # No weights file: refused when the params are read, before any work.
    with pytest.raises(ValueError, match="features.weights"):
        torchvision_params(layers=["avgpool"], weights=None)
