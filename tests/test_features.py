import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from transferlab.config.params import parse_params, read_params_file
from transferlab.config.presets import merge
from transferlab.data.prepared import TaskData
from transferlab.features.extract import (
    augmented_training_images,
    extract_target_features,
    own_model_features,
    run_batches,
    write_features,
)
from transferlab.features.store import load_split
from transferlab.heads.per_layer import fit_heads_per_layer
from transferlab.models.base import TransferableNet

SHIPPED = read_params_file(Path(__file__).resolve().parents[1] / "params.yaml")


def shipped_with(changes: dict):
    """The shipped params with `changes` merged in, parsed."""
    return parse_params(merge(SHIPPED, changes))


AUGMENT = shipped_with({}).features.augment  # copies 0, flip false, pad 0.125


class StandInFeedback(TransferableNet):
    """Four iterations; only iteration 2's head input carries the image (the others are noise)."""

    num_iterations = 4

    def __init__(self, in_dim=64):
        super().__init__({"flat": nn.Flatten(), "proj": nn.Linear(in_dim, 16)}, head_in=16,
                         num_classes=5)

    def iteration_embeddings(self, x):
        out = []
        for t in range(self.num_iterations):
            if t == 1:
                out.append(nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))
            else:
                gen = torch.Generator().manual_seed(t)
                out.append(torch.randn(len(x), 16, generator=gen))
        return out


def small_task(target: TaskData, per_class_train=30, n_test=100) -> TaskData:
    keep = np.concatenate([np.flatnonzero(target.y_train == c)[:per_class_train]
                           for c in range(target.num_classes)])
    return TaskData(target.classes, target.x_train[keep], target.y_train[keep],
                    target.x_test[:n_test], target.y_test[:n_test], target.pixel_max)


def test_augmented_copies_count_differ_and_repeat_by_seed(digits_tasks):
    images = digits_tasks[1].x_train[:40]
    cfg = replace(AUGMENT, copies=2)
    out, index, copy = augmented_training_images(images, cfg, seed=0)
    assert out.shape == (120, *images.shape[1:]) and out.dtype == np.uint8
    assert np.array_equal(out[:40], images)
    assert index.tolist() == list(range(40)) * 3 and copy.tolist() == [0] * 40 + [1] * 40 + [2] * 40
    changed = [not np.array_equal(out[40 + i], images[i % 40]) for i in range(80)]
    assert np.mean(changed) > 0.7
    again, _, _ = augmented_training_images(images, cfg, seed=0)
    other, _, _ = augmented_training_images(images, cfg, seed=1)
    assert np.array_equal(out, again) and not np.array_equal(out, other)
    assert len(augmented_training_images(images, replace(AUGMENT, copies=0), 0)[0]) == 40


def test_crops_keep_any_image_size_and_flip_only_when_asked():
    # Columns brighten left to right; a crop keeps that order, a mirror reverses it.
    ramp = np.tile(np.arange(10, 130, 10, dtype=np.uint8), (3, 6, 1))  # (3, 6, 12)
    images = np.repeat(ramp[None], 30, axis=0)

    def mirrored(cfg):
        out, _, copy = augmented_training_images(images, cfg, seed=3)
        centre = out[copy > 0][:, :, 1:5, 4:8].astype(int)
        assert out.shape[1:] == images.shape[1:]
        return int((np.diff(centre, axis=3) < 0).all(axis=(1, 2, 3)).sum())

    assert mirrored(replace(AUGMENT, copies=2, flip=False, pad=0.2)) == 0
    assert 10 < mirrored(replace(AUGMENT, copies=2, flip=True, pad=0.2)) < 50
    with pytest.raises(ValueError, match="features.augment.copies"):
        shipped_with({"features": {"augment": {"copies": -1}}})


def test_stand_in_feedback_net_gives_per_iteration_features_and_table(digits_tasks, tmp_path):
    task = small_task(digits_tasks[1])
    torch.manual_seed(0)
    model = StandInFeedback()
    # The stand-in's layers are not a convnet's, so the section is changed after parsing.
    cfg = replace(shipped_with({}).features, layers=("flat", "proj"), batch_size=64,
                  augment=replace(AUGMENT, copies=1))
    fn = own_model_features(model, task.pixel_max, list(cfg.layers), iterations=True)
    meta = write_features(task, fn, cfg, 0, tmp_path / "features")
    n, n_test = len(task.y_train), len(task.y_test)
    assert meta["iterations"] == 4 and meta["train_rows"] == 2 * n and meta["layers"] == [
        "flat", "proj"]
    saved = json.loads((tmp_path / "features" / "meta.json").read_text())
    assert saved == meta
    for name in ("flat", "proj", "iter1", "iter2", "iter3", "iter4"):
        train = load_split(tmp_path / "features" / name / "train.npz")
        test = load_split(tmp_path / "features" / name / "test.npz")
        assert len(train.y) == 2 * n and len(test.y) == n_test
        assert np.array_equal(train.y[:n], task.y_train) and np.array_equal(test.y, task.y_test)
    # Test features are those of the raw test images; copies differ from the originals.
    direct = run_batches(own_model_features(model, task.pixel_max, ["proj"], iterations=False),
                         task.x_test, 32, "flatten")["proj"]
    test = load_split(tmp_path / "features" / "proj" / "test.npz")
    assert np.allclose(test.x, direct, atol=1e-6) and test.copy.max() == 0
    flat = load_split(tmp_path / "features" / "flat" / "train.npz")
    assert np.allclose(flat.x[:n], (task.x_train.reshape(n, -1) / 16 - 0.5) / 0.5)
    assert np.mean(np.any(flat.x[n:] != flat.x[:n], axis=1)) > 0.7

    heads_cfg = shipped_with({"heads": {
        "heads": ["logreg", "svm"], "svm": {"C": [1.0]}, "logreg": {"C": [0.1, 1.0]},
        "cv_folds": 3, "lowshot": {"shots": [1, 2], "draws": 2, "heads": ["logreg"],
                                   "layers": None}}}).heads
    out = tmp_path / "heads.json"
    result = fit_heads_per_layer(heads_cfg, layers=("proj",), subsample=10, seed=0,
                                 features_dir=tmp_path / "features", out=out,
                                 lowshot_out=tmp_path / "lowshot.json",
                                 iterations_out=tmp_path / "iterations.json")
    per_layer = json.loads(out.read_text())
    assert set(per_layer) == {"proj"} and per_layer["proj"]["logreg"]["train_rows"] == 100
    assert 0 <= per_layer["proj"]["svm"]["test_accuracy"] <= 1
    low = json.loads((tmp_path / "lowshot.json").read_text())
    assert set(low["layers"]["proj"]["logreg"]) == {"1", "2"}
    assert len(low["layers"]["proj"]["logreg"]["2"]["scores"]) == 2
    table = json.loads((tmp_path / "iterations.json").read_text())
    assert table == result["iterations"]
    acc = np.array(table["accuracy"])
    assert acc.shape == (5, 4) and np.all((acc >= 0) & (acc <= 1))
    assert acc[1, 1] > 0.8 and max(acc[0, 0], acc[2, 2], acc[3, 3]) < 0.5


def test_ordinary_net_has_no_iteration_features_and_whole_train_part_is_extracted(
        digits_tasks, tiny_params, tmp_path):
    from transferlab.training.variant import new_model, save_model

    task = small_task(digits_tasks[1], per_class_train=12, n_test=40)
    task.save(tmp_path / "prepared" / "target.npz")
    model = new_model(tiny_params, task, 0, torch.device("cpu"))
    save_model(model, tmp_path / "A.pt", {})
    meta = extract_target_features(tiny_params, prepared=tmp_path / "prepared",
                                   model_path=tmp_path / "A.pt", out_dir=tmp_path / "features")
    assert meta["iterations"] == 0 and meta["layers"] == list(tiny_params.features.layers)
    assert not (tmp_path / "features" / "iter1").exists()
    # tiny_params.subsample is 3, yet every training image is there for the heads to draw from.
    train = load_split(tmp_path / "features" / "conv3" / "train.npz")
    assert len(train.y) == len(task.y_train) == 60
    want = run_batches(own_model_features(model, task.pixel_max, ["conv3"], iterations=True),
                       task.x_train, 16, "flatten")
    assert np.allclose(train.x, want["conv3"], atol=1e-5)


def _line_angles(images: np.ndarray) -> np.ndarray:
    """Angle in degrees (counter-clockwise as drawn) of the bright line in each image,
    from the principal axis of the pixel brightness."""
    n, _, h, w = images.shape
    rows, cols = np.mgrid[0:h, 0:w]
    out = []
    for img in images[:, 0].astype(float):
        m = img / img.sum()
        r0, c0 = (m * rows).sum(), (m * cols).sum()
        crr, ccc = (m * (rows - r0) ** 2).sum(), (m * (cols - c0) ** 2).sum()
        crc = (m * (rows - r0) * (cols - c0)).sum()
        # Rows grow downwards: a line rising to the right has a negative row slope.
        out.append(np.degrees(0.5 * np.arctan2(-2 * crc, ccc - crr)))
    return np.array(out)


def test_cnnaug_rotations_stay_within_the_limit_and_differ_per_copy():
    images = np.zeros((20, 1, 33, 33), np.uint8)
    images[:, :, 16, 4:29] = 200  # a horizontal line through the centre
    rotated = replace(AUGMENT, copies=2, pad=0.01, rotate=30.0)
    out, _, copy = augmented_training_images(images, rotated, seed=5)
    assert np.array_equal(out[copy == 0], images) and out.dtype == np.uint8
    angles = _line_angles(out[copy > 0])
    assert np.abs(angles).max() <= 30.5 and np.abs(angles).max() > 10
    assert np.ptp(angles) > 10  # each copy its own angle
    plain, _, _ = augmented_training_images(images, replace(rotated, rotate=0.0), seed=5)
    assert np.abs(_line_angles(plain[copy > 0])).max() < 0.5
    # The crops are drawn first, so the same seed crops alike with or without rotation.
    again, _, _ = augmented_training_images(images, rotated, seed=5)
    assert np.array_equal(out, again)
