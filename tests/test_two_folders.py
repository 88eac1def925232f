"""Cross-dataset transfer between two image folders: each side its own folder, classes
and test part (data.source_path / data.target_path)."""

import pytest

from tests import dataset_fixtures as fx
from transferlab.config.params import ParamsError, parse_params
from transferlab.data.prepared import prepare_tasks

from .conftest import TINY, complete


def _params(tmp_path, **data):
    return parse_params(complete({**TINY, "dataset": "imagefolder", "data": {
        "split": "fixed", "source_dataset": "imagefolder", "target_dataset": "imagefolder",
        "source_classes": "all", "target_classes": "all", "test_fraction": 0.25,
        "root": str(tmp_path), **data}}))


def test_each_folder_gives_its_side_its_classes_and_test_part(tmp_path):
    mine = fx.write_image_folder(tmp_path / "mine", n_classes=4, n_per_class=8, seed=0)
    theirs = fx.write_image_folder(tmp_path / "theirs", n_classes=3, n_per_class=12,
                                   size=(20, 20), seed=1)
    params = _params(tmp_path, source_path=str(mine), target_path=str(theirs))
    source, target, meta = prepare_tasks(params.dataset, params.data, params.seed,
                                         progress=False)
    assert source.num_classes == 4 and target.num_classes == 3
    assert meta["target_class_names"] == ["class_0", "class_1", "class_2"]
    # a quarter of each class of each folder is its test part: 2 of 8, 3 of 12
    assert len(source.y_test) == 4 * 2 and len(source.y_train) == 4 * 6
    assert len(target.y_test) == 3 * 3 and len(target.y_train) == 3 * 9
    # the target takes the source's image format (16 px)
    assert target.image_shape == source.image_shape == (3, 16, 16)


def test_one_folder_is_still_data_path_and_a_missing_side_is_named(tmp_path):
    folder = fx.write_image_folder(tmp_path / "one", n_classes=4, n_per_class=8)
    params = parse_params(complete({**TINY, "dataset": "imagefolder", "data": {
        "root": str(tmp_path), "path": str(folder), "source_classes": [0, 1],
        "target_classes": [2, 3]}}))
    source, target, _ = prepare_tasks(params.dataset, params.data, params.seed,
                                      progress=False)
    assert source.num_classes == target.num_classes == 2
    with pytest.raises(ParamsError, match="data.target_path = None"):
        _params(tmp_path, source_path=str(folder))
    with pytest.raises(ParamsError, match="data.source_path = .* null unless the source"):
        parse_params(complete({**TINY, "data": {"source_path": str(folder)}}))
